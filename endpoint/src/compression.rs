//! Which compression an upload uses: `--compression auto|lz4|zstd|none`.
//!
//! `auto` picks by the link. With an upload limit in force, its rate sets
//! the start ([`Method::for_rate`]); otherwise the [`Chooser`] starts with
//! zstd 3 (most links to a relay are slower than zstd). Either way it
//! watches, over windows of
//! [`WINDOW_BYTES`], two shares of the wall time: waiting for the socket,
//! and compressing. A sender that mostly waits is limited by the link, so
//! it steps up to stronger zstd; one that rarely waits and spends much of
//! its time compressing is limited by the compression, so it steps down
//! toward lz4. Otherwise (the reading, hashing or the relay set the pace)
//! compression is nearly free, and it stays.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use ferry_protocol::compress::{Method, ZSTD_LEVEL, ZSTD_SLOWEST_LEVEL, ZSTD_SLOW_LEVEL};
use serde::{Deserialize, Serialize};

/// Raw bytes between two decisions of `auto`.
pub const WINDOW_BYTES: u64 = 8 << 20;
/// Waiting on the socket less than this share of a window: not link-bound.
pub const CPU_BOUND: f64 = 0.15;
/// Compressing more than this share (and not link-bound): compression-bound.
pub const COMPRESSION_BOUND: f64 = 0.35;
/// Waiting more than this share: link-bound.
pub const LINK_BOUND: f64 = 0.6;

/// The user's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// By the link's configured or measured rate.
    #[default]
    Auto,
    /// Always lz4 (fast links).
    Lz4,
    /// Always zstd (slow links).
    Zstd,
    /// Never (data known not to compress).
    None,
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Compression::Auto),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            other => Err(format!(
                "unknown compression {other:?}: use auto, lz4, zstd or none"
            )),
        }
    }
}

/// A method's name in summaries: `lz4`, `zstd-3`, `none`.
pub fn method_name(method: Method) -> String {
    match method {
        Method::None => "none".into(),
        Method::Lz4 => "lz4".into(),
        Method::Zstd(level) => format!("zstd-{level}"),
    }
}

/// The steps `auto` moves between, cheapest first.
const LADDER: [Method; 4] = [
    Method::Lz4,
    Method::Zstd(ZSTD_LEVEL),
    Method::Zstd(ZSTD_SLOW_LEVEL),
    Method::Zstd(ZSTD_SLOWEST_LEVEL),
];

/// Picks the method for each chunk of one upload.
#[derive(Debug)]
pub struct Chooser {
    method: Method,
    adaptive: bool,
    window_start: Instant,
    window_wait: Duration,
    window_compressing: Duration,
    window_bytes: u64,
}

impl Chooser {
    /// For `compression`, on a link limited to `rate` bytes/s (`None`: unknown).
    pub fn new(compression: Compression, rate: Option<u64>) -> Self {
        let (method, adaptive) = match (compression, rate) {
            (Compression::Lz4, _) => (Method::Lz4, false),
            (Compression::Zstd, Some(rate)) => (
                match Method::for_rate(rate) {
                    Method::Lz4 => Method::Zstd(ZSTD_LEVEL),
                    slow => slow,
                },
                false,
            ),
            (Compression::Zstd, None) => (Method::Zstd(ZSTD_LEVEL), false),
            (Compression::None, _) => (Method::None, false),
            (Compression::Auto, Some(rate)) => (Method::for_rate(rate), true),
            (Compression::Auto, None) => (Method::Zstd(ZSTD_LEVEL), true),
        };
        Chooser {
            method,
            adaptive,
            window_start: Instant::now(),
            window_wait: Duration::ZERO,
            window_compressing: Duration::ZERO,
            window_bytes: 0,
        }
    }

    /// The method for the next chunk.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Records `raw` bytes compressed in `compressing`; `write_time` is the
    /// session's total time spent in socket writes so far. Every
    /// [`WINDOW_BYTES`] `auto` decides.
    pub fn observe(&mut self, raw: u64, compressing: Duration, write_time: Duration) {
        if !self.adaptive {
            return;
        }
        self.window_bytes += raw;
        self.window_compressing += compressing;
        if self.window_bytes < WINDOW_BYTES {
            return;
        }
        let elapsed = self.window_start.elapsed().as_secs_f64().max(1e-6);
        let waited = write_time.saturating_sub(self.window_wait).as_secs_f64();
        let compressing = self.window_compressing.as_secs_f64();
        self.method = step(self.method, waited / elapsed, compressing / elapsed);
        self.window_start = Instant::now();
        self.window_wait = write_time;
        self.window_compressing = Duration::ZERO;
        self.window_bytes = 0;
    }
}

/// The next method on the ladder for a window that waited `waiting` of its
/// time on the socket and spent `compressing` of it compressing.
fn step(method: Method, waiting: f64, compressing: f64) -> Method {
    let at = LADDER.iter().position(|m| *m == method).unwrap_or(1);
    let next = if waiting < CPU_BOUND && compressing > COMPRESSION_BOUND {
        at.saturating_sub(1)
    } else if waiting > LINK_BOUND {
        (at + 1).min(LADDER.len() - 1)
    } else {
        at
    };
    LADDER[next]
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Auto => "auto",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_configured_rate_and_the_measured_shares() {
        assert_eq!(
            Chooser::new(Compression::Auto, Some(2_000_000)).method(),
            Method::Zstd(ZSTD_SLOWEST_LEVEL)
        );
        assert_eq!(
            Chooser::new(Compression::Auto, Some(1 << 30)).method(),
            Method::Lz4
        );
        assert_eq!(
            Chooser::new(Compression::Zstd, Some(1 << 30)).method(),
            Method::Zstd(ZSTD_LEVEL)
        );
        assert_eq!(
            Chooser::new(Compression::Lz4, Some(1)).method(),
            Method::Lz4
        );
        let zstd = Method::Zstd(ZSTD_LEVEL);
        let strong = Method::Zstd(ZSTD_SLOW_LEVEL);
        assert_eq!(
            step(zstd, 0.05, 0.5),
            Method::Lz4,
            "compression-bound: cheaper"
        );
        assert_eq!(
            step(zstd, 0.05, 0.1),
            zstd,
            "something else sets the pace: stay"
        );
        assert_eq!(step(zstd, 0.9, 0.05), strong, "link-bound: stronger");
        assert_eq!(step(zstd, 0.3, 0.5), zstd, "in between: stay");
        assert_eq!(step(Method::Lz4, 0.01, 0.9), Method::Lz4);
        assert_eq!(step(strong, 0.99, 0.0), Method::Zstd(ZSTD_SLOWEST_LEVEL));
        let slowest = Method::Zstd(ZSTD_SLOWEST_LEVEL);
        assert_eq!(step(slowest, 0.99, 0.0), slowest, "the top stays");
        assert_eq!(
            step(slowest, 0.01, 0.95),
            strong,
            "a CPU too slow for it steps down"
        );
        assert_eq!("zstd".parse::<Compression>(), Ok(Compression::Zstd));
        assert!("gzip".parse::<Compression>().is_err());
    }

    #[test]
    fn a_fixed_choice_never_moves() {
        let mut chooser = Chooser::new(Compression::Lz4, None);
        chooser.observe(WINDOW_BYTES, Duration::ZERO, Duration::from_secs(100));
        assert_eq!(chooser.method(), Method::Lz4);
        let mut auto = Chooser::new(Compression::Auto, None);
        std::thread::sleep(Duration::from_millis(20));
        auto.observe(WINDOW_BYTES, Duration::from_millis(15), Duration::ZERO);
        assert_eq!(
            auto.method(),
            Method::Lz4,
            "never waited, mostly compressing"
        );
    }
}
