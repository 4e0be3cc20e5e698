//! Token buckets in bytes (governor, one cell per byte) whose rate can be
//! changed while transfers wait on them, for the relay's global and
//! per-client limits and the endpoint's own upload limit.
//!
//! The burst is about 100 ms of the rate, so short bursts do not overshoot.
//! A transfer larger than the burst waits for it in burst-sized pieces. A
//! new rate takes effect for the next piece; `None` means unlimited.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Smallest burst, so tiny rates still pass a frame header at a time.
const MIN_BURST: u32 = 1024;

/// A byte-rate limiter whose rate can change at any time.
#[derive(Debug, Default)]
pub struct Throttle {
    limiter: Mutex<Option<(u64, Arc<DefaultDirectRateLimiter>)>>,
    through: AtomicU64,
}

impl Throttle {
    /// A throttle at `rate` bytes per second (`None`: unlimited).
    pub fn new(rate: Option<u64>) -> Self {
        let throttle = Throttle::default();
        throttle.set_rate(rate);
        throttle
    }

    /// Changes the rate; waits in progress finish their current piece first.
    pub fn set_rate(&self, rate: Option<u64>) {
        let mut slot = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        let rate = rate.filter(|r| *r < u64::from(u32::MAX));
        if slot.as_ref().map(|(r, _)| *r) == rate {
            return;
        }
        *slot = rate.and_then(|r| {
            let per_second = NonZeroU32::new(u32::try_from(r).ok()?)?;
            let burst = NonZeroU32::new((per_second.get() / 10).max(MIN_BURST))?;
            Some((
                r,
                Arc::new(RateLimiter::direct(
                    Quota::per_second(per_second).allow_burst(burst),
                )),
            ))
        });
    }

    /// The current rate.
    pub fn rate(&self) -> Option<u64> {
        self.limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(r, _)| *r)
    }

    /// Bytes that have passed so far (counted as each piece is let through,
    /// for measuring the actual rate).
    pub fn bytes_through(&self) -> u64 {
        self.through.load(Ordering::Relaxed)
    }

    /// Waits until `bytes` may pass. Never blocks a thread: it sleeps on timers.
    pub async fn consume(&self, bytes: usize) {
        let mut left = bytes as u64;
        while left > 0 {
            let current = self
                .limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let Some((rate, limiter)) = current else {
                self.through.fetch_add(left, Ordering::Relaxed);
                return;
            };
            let burst = (rate / 10).clamp(u64::from(MIN_BURST), u64::from(u32::MAX));
            let piece = left.min(burst);
            let cells = NonZeroU32::new(piece as u32).expect("piece > 0");
            // A piece never exceeds the burst, so this cannot fail; if it did,
            // passing the bytes unthrottled is the safe failure.
            let _ = limiter.until_n_ready(cells).await;
            self.through.fetch_add(piece, Ordering::Relaxed);
            left -= piece;
        }
    }
}

/// The local weekday (0 = Monday) and minute of the day, for schedules.
pub fn local_now() -> (u32, u32) {
    use chrono::{Datelike, Timelike};
    let now = chrono::Local::now();
    (
        now.weekday().num_days_from_monday(),
        now.hour() * 60 + now.minute(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn rate_is_enforced_and_can_be_lifted() {
        let throttle = Throttle::new(Some(200_000));
        let start = Instant::now();
        for _ in 0..10 {
            throttle.consume(30_000).await;
        }
        // 300 kB at 200 kB/s, less the initial 20 kB burst: about 1.4 s.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1200), "{took:?}");
        throttle.set_rate(None);
        let start = Instant::now();
        throttle.consume(10_000_000).await;
        assert!(start.elapsed() < Duration::from_millis(100));
        assert_eq!(throttle.bytes_through(), 10_300_000);
        assert_eq!(throttle.rate(), None);
    }
}
