//! Who may open a connection now: a global cap, a cap per source address, and
//! a handshake rate per source address (the expensive Diffie-Hellman work
//! happens per handshake, so that is what a flood must not buy cheaply).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The global connection cap is reached.
    Full,
    /// This source already holds its share of connections.
    SourceFull,
    /// This source is handshaking faster than allowed.
    RateLimited,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Full => "the relay's connection limit is reached",
            Refusal::SourceFull => "this source's connection limit is reached",
            Refusal::RateLimited => "this source exceeds its handshake rate",
        })
    }
}

/// Connection admission for one listener set.
#[derive(Debug)]
pub struct Admission {
    global: Arc<Semaphore>,
    per_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_source_max: usize,
    handshakes: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// Held for the life of an admitted connection; frees its slots on drop.
#[derive(Debug)]
pub struct Ticket {
    _global: OwnedSemaphorePermit,
    per_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
    source: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut map = self.per_source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.source);
            }
        }
    }
}

impl Admission {
    /// Builds admission from the configured limits.
    pub fn new(limits: &Limits) -> Self {
        let handshakes = NonZeroU32::new(limits.handshakes_per_second_per_source).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 > 0"));
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Admission {
            global: Arc::new(Semaphore::new(limits.max_connections)),
            per_source: Arc::new(Mutex::new(HashMap::new())),
            per_source_max: limits.max_connections_per_source,
            handshakes,
        }
    }

    /// Admits a connection from `source`, or says why not.
    ///
    /// # Errors
    /// The [`Refusal`] reason.
    pub fn admit(&self, source: IpAddr) -> Result<Ticket, Refusal> {
        if let Some(limiter) = &self.handshakes {
            limiter
                .check_key(&source)
                .map_err(|_| Refusal::RateLimited)?;
        }
        let permit = Arc::clone(&self.global)
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        let mut map = self.per_source.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.entry(source).or_insert(0);
        if *count >= self.per_source_max {
            return Err(Refusal::SourceFull);
        }
        *count += 1;
        Ok(Ticket {
            _global: permit,
            per_source: Arc::clone(&self.per_source),
            source,
        })
    }

    /// Drops rate-limiter state of sources that have been quiet, bounding memory.
    pub fn prune(&self) {
        if let Some(limiter) = &self.handshakes {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(max: usize, per_source: usize, rate: u32) -> Limits {
        Limits {
            handshake_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_connections: max,
            max_connections_per_source: per_source,
            handshakes_per_second_per_source: rate,
        }
    }

    #[test]
    fn caps_and_release() {
        let a = Admission::new(&limits(3, 2, 0));
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let t1 = a.admit(one).unwrap();
        let _t2 = a.admit(one).unwrap();
        assert_eq!(a.admit(one).unwrap_err(), Refusal::SourceFull);
        let _t3 = a.admit(two).unwrap();
        assert_eq!(a.admit(two).unwrap_err(), Refusal::Full);
        drop(t1);
        assert!(a.admit(one).is_ok());
    }

    #[test]
    fn handshake_rate_per_source() {
        let a = Admission::new(&limits(1000, 1000, 5));
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let admitted = (0..50).filter(|_| a.admit(one).is_ok()).count();
        assert!((10..=12).contains(&admitted), "{admitted}");
        assert!(a.admit("10.0.0.2".parse().unwrap()).is_ok());
    }
}
