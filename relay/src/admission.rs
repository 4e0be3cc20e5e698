//! Who may open a connection now: a global cap, a cap per source address, and
//! a handshake rate per source address (the expensive Diffie-Hellman work
//! happens per handshake, so that is what a flood must not buy cheaply).
//! Past a global handshake rate the relay is *under load*, and the session
//! handshake drops first messages without the MAC only holders of the
//! relay's key can make (see `ferry_protocol::session`).
//!
//! The per-source cap counts only connections still in their handshake: an
//! office of a hundred paired laptops behind one NAT address holds a
//! hundred sessions, while a stranger there can hold at most the cap of
//! handshakes it cannot finish.
//!
//! Connections that have not finished their handshake have a budget of
//! their own, a quarter of the global cap: when it is full, or the global
//! cap is, the oldest of them is evicted and its slot given to the
//! newcomer. Idle connections from anywhere can then hold at most that
//! quarter, and a paired client, which authenticates in one round trip,
//! always gets through.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::{Limits, SourcePrefixes};

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

/// The group a source address is counted in: its first `prefixes` bits.
/// By default an IPv4 address is its own (a /32) and an IPv6 address
/// counts as its /64, which one subscriber holds whole, so it cannot pass
/// for 2⁶⁴ sources. An IPv4-mapped IPv6 address counts as IPv4.
pub fn source_group(ip: IpAddr, prefixes: SourcePrefixes) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefixes.v4))
                .unwrap_or(0);
            IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => source_group(IpAddr::V4(v4), prefixes),
            None => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefixes.v6))
                    .unwrap_or(0);
                IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

/// Connection admission for one listener set.
#[derive(Debug)]
pub struct Admission {
    global: Arc<Semaphore>,
    per_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_source_max: usize,
    handshakes: Option<DefaultKeyedRateLimiter<IpAddr>>,
    all_handshakes: Option<Arc<DefaultDirectRateLimiter>>,
    prefixes: SourcePrefixes,
    unauthenticated: Arc<Mutex<Unauthenticated>>,
    unauthenticated_max: usize,
}

/// The connections still in their handshake, oldest first; each holds its
/// global slot here, so evicting it frees the slot at once.
#[derive(Debug, Default)]
struct Unauthenticated {
    next: u64,
    waiting: VecDeque<Waiting>,
}

#[derive(Debug)]
struct Waiting {
    id: u64,
    evicted: CancellationToken,
    slot: OwnedSemaphorePermit,
}

impl Unauthenticated {
    /// Takes connection `id` out (with its slot), if it is still waiting.
    fn remove(&mut self, id: u64) -> Option<Waiting> {
        let at = self.waiting.iter().position(|w| w.id == id)?;
        self.waiting.remove(at)
    }

    /// Evicts the oldest waiting connection; returns its slot.
    fn evict_oldest(&mut self) -> Option<OwnedSemaphorePermit> {
        let oldest = self.waiting.pop_front()?;
        oldest.evicted.cancel();
        Some(oldest.slot)
    }
}

/// Held for the life of an admitted connection; frees its slots on drop.
#[derive(Debug)]
pub struct Ticket {
    /// The global slot, once authenticated (until then it is in the queue).
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    per_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
    source: IpAddr,
    unauthenticated: Arc<Mutex<Unauthenticated>>,
    id: u64,
    evicted: CancellationToken,
    all_handshakes: Option<Arc<DefaultDirectRateLimiter>>,
    /// Whether it still counts against its source (until authenticated).
    counts_for_source: std::sync::atomic::AtomicBool,
}

impl Ticket {
    /// Counts this connection's handshake against the global rate; false
    /// when the relay is under load (past it).
    pub fn handshake_within_rate(&self) -> bool {
        self.all_handshakes
            .as_ref()
            .is_none_or(|limiter| limiter.check().is_ok())
    }

    /// Resolves when newer connections evicted this one from the budget of
    /// connections still in their handshake: the caller drops it then.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await;
    }

    /// The handshake succeeded: the connection leaves the budget of those
    /// still in their handshake and can no longer be evicted. False when it
    /// was evicted meanwhile (its slot is gone: the caller drops it).
    pub fn authenticated(&self) -> bool {
        match lock(&self.unauthenticated).remove(self.id) {
            Some(waiting) => {
                *lock(&self.slot) = Some(waiting.slot);
                self.leave_source();
                true
            }
            None => false,
        }
    }

    /// Stops counting against its source's cap (once).
    fn leave_source(&self) {
        if self
            .counts_for_source
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            release_source(&self.per_source, self.source);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Gives back one of `source`'s connections.
fn release_source(per_source: &Mutex<HashMap<IpAddr, usize>>, source: IpAddr) {
    let mut map = lock(per_source);
    if let Some(n) = map.get_mut(&source) {
        *n -= 1;
        if *n == 0 {
            map.remove(&source);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.unauthenticated).remove(self.id);
        self.leave_source();
    }
}

impl Admission {
    /// Builds admission from the configured limits.
    pub fn new(limits: &Limits) -> Self {
        let quota = |rate: u32| {
            NonZeroU32::new(rate).map(|rate| {
                let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 > 0"));
                Quota::per_second(rate).allow_burst(burst)
            })
        };
        let handshakes = quota(limits.handshakes_per_second_per_source).map(RateLimiter::keyed);
        let all_handshakes =
            quota(limits.handshakes_per_second).map(|q| Arc::new(RateLimiter::direct(q)));
        Admission {
            global: Arc::new(Semaphore::new(limits.max_connections)),
            per_source: Arc::new(Mutex::new(HashMap::new())),
            per_source_max: limits.max_connections_per_source,
            handshakes,
            all_handshakes,
            prefixes: limits.source_prefixes,
            unauthenticated: Arc::default(),
            unauthenticated_max: (limits.max_connections / 4).max(1),
        }
    }

    /// Admits a connection from `source`, or says why not. Sources are
    /// counted by [`source_group`]: by default one IPv6 /64 is one source.
    ///
    /// # Errors
    /// The [`Refusal`] reason.
    pub fn admit(&self, source: IpAddr) -> Result<Ticket, Refusal> {
        let source = source_group(source, self.prefixes);
        if let Some(limiter) = &self.handshakes {
            limiter
                .check_key(&source)
                .map_err(|_| Refusal::RateLimited)?;
        }
        // The source's share first: a connection refused for its source
        // must not have evicted another on its way.
        {
            let mut map = lock(&self.per_source);
            let count = map.entry(source).or_insert(0);
            if *count >= self.per_source_max {
                return Err(Refusal::SourceFull);
            }
            *count += 1;
        }
        let slot = match Arc::clone(&self.global).try_acquire_owned() {
            Ok(slot) => Some(slot),
            // Full: the oldest connection still in its handshake makes room.
            Err(_) => lock(&self.unauthenticated).evict_oldest(),
        };
        let Some(slot) = slot else {
            release_source(&self.per_source, source);
            return Err(Refusal::Full);
        };
        let evicted = CancellationToken::new();
        let id = {
            let mut pending = lock(&self.unauthenticated);
            if pending.waiting.len() >= self.unauthenticated_max {
                pending.evict_oldest();
            }
            pending.next += 1;
            let id = pending.next;
            pending.waiting.push_back(Waiting {
                id,
                evicted: evicted.clone(),
                slot,
            });
            id
        };
        Ok(Ticket {
            slot: Mutex::new(None),
            per_source: Arc::clone(&self.per_source),
            source,
            unauthenticated: Arc::clone(&self.unauthenticated),
            id,
            evicted,
            all_handshakes: self.all_handshakes.clone(),
            counts_for_source: std::sync::atomic::AtomicBool::new(true),
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
            max_sessions_per_client: 8,
            handshakes_per_second_per_source: rate,
            handshakes_per_second: 0,
            source_prefixes: SourcePrefixes::default(),
        }
    }

    #[test]
    fn caps_and_release() {
        let a = Admission::new(&limits(8, 2, 0));
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        // A source holds at most 2 connections in their handshake.
        let t1 = a.admit(one).unwrap();
        let t2 = a.admit(one).unwrap();
        assert_eq!(a.admit(one).unwrap_err(), Refusal::SourceFull);
        // Authenticated ones no longer count for it (an office behind one
        // NAT address): two more may handshake.
        assert!(t1.authenticated() && t2.authenticated());
        let t3 = a.admit(one).unwrap();
        let t4 = a.admit(one).unwrap();
        assert_eq!(a.admit(one).unwrap_err(), Refusal::SourceFull);
        // One that ends gives its place back.
        drop(t4);
        assert!(a.admit(one).is_ok());
        drop((t1, t2, t3));
    }

    #[test]
    fn handshake_rate_per_source() {
        let a = Admission::new(&limits(1000, 1000, 5));
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let admitted = (0..50).filter(|_| a.admit(one).is_ok()).count();
        assert!((10..=12).contains(&admitted), "{admitted}");
        assert!(a.admit("10.0.0.2".parse().unwrap()).is_ok());
    }

    #[tokio::test]
    async fn the_oldest_unauthenticated_connection_makes_room_never_an_authenticated_one() {
        // 8 connections: 2 may be in their handshake at once.
        let a = Admission::new(&limits(8, 8, 0));
        let source: IpAddr = "10.0.0.1".parse().unwrap();
        let first = a.admit(source).unwrap();
        assert!(first.authenticated());
        let second = a.admit(source).unwrap();
        let third = a.admit(source).unwrap();
        let fourth = a.admit(source).unwrap();
        // The fourth evicted the second (the oldest still handshaking).
        tokio::time::timeout(Duration::from_secs(1), second.evicted())
            .await
            .expect("evicted");
        for kept in [&first, &third, &fourth] {
            assert!(
                tokio::time::timeout(Duration::from_millis(50), kept.evicted())
                    .await
                    .is_err()
            );
        }
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let a = Admission::new(&limits(100, 2, 0));
        let mut tickets = Vec::new();
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::ffff:1"] {
            tickets.push(a.admit(host.parse().unwrap()).unwrap());
        }
        let same_64 = "2001:db8:1:2:abcd::9".parse().unwrap();
        assert_eq!(a.admit(same_64).unwrap_err(), Refusal::SourceFull);
        assert!(a.admit("2001:db8:1:3::1".parse().unwrap()).is_ok());
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let prefixes = SourcePrefixes::default();
        assert_eq!(
            source_group(mapped, prefixes),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn source_prefixes_are_configurable() {
        let group = |ip: &str, v4, v6| {
            source_group(ip.parse().unwrap(), SourcePrefixes { v4, v6 }).to_string()
        };
        assert_eq!(group("192.0.2.77", 24, 64), "192.0.2.0");
        assert_eq!(group("192.0.2.77", 32, 64), "192.0.2.77");
        assert_eq!(group("2001:db8:1:2:3::9", 32, 48), "2001:db8:1::");
        assert_eq!(group("2001:db8:1:2:3::9", 32, 128), "2001:db8:1:2:3::9");
        assert_eq!(group("::ffff:192.0.2.77", 16, 64), "192.0.0.0");
        let mut limits = limits(100, 1, 0);
        limits.source_prefixes.v4 = 24;
        let a = Admission::new(&limits);
        let _first = a.admit("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(
            a.admit("192.0.2.200".parse().unwrap()).unwrap_err(),
            Refusal::SourceFull
        );
        assert!(a.admit("192.0.3.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn past_the_global_handshake_rate_the_relay_is_under_load() {
        let mut limits = limits(1000, 1000, 0);
        limits.handshakes_per_second = 5;
        let a = Admission::new(&limits);
        let within = (0..50)
            .filter(|n| {
                a.admit(format!("10.0.{n}.1").parse().unwrap())
                    .unwrap()
                    .handshake_within_rate()
            })
            .count();
        assert!((10..=12).contains(&within), "{within}");
    }

    #[tokio::test]
    async fn a_connection_refused_for_its_source_evicts_nobody() {
        // A cap of 4: three sessions, one connection still handshaking.
        let a = Admission::new(&limits(4, 1, 0));
        let sessions: Vec<Ticket> = (1..=3)
            .map(|n| {
                let ticket = a.admit(format!("10.0.0.{n}").parse().unwrap()).unwrap();
                assert!(ticket.authenticated());
                ticket
            })
            .collect();
        let pending = a.admit("10.0.0.9".parse().unwrap()).unwrap();
        // A source at its share (of handshakes) is refused, and the cap
        // being full does not make it evict the handshaking connection first.
        assert_eq!(
            a.admit("10.0.0.9".parse().unwrap()).unwrap_err(),
            Refusal::SourceFull
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(50), pending.evicted())
                .await
                .is_err()
        );
        drop(sessions);
    }
}
