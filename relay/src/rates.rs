//! The relay's bandwidth limits at run time.
//!
//! Token buckets ([`Throttle`], bytes as cells): one global bucket for LAN
//! sessions and one for internet sessions, and one per client and kind of
//! path, shared by that client's sessions. Every frame a session reads or
//! writes passes its client's bucket and then the global one. Rates come
//! from `relay.toml` (schedules by weekday and local time), replaced by the
//! overrides set with `ferry-relay limit` and `ferry-relay clients limit`,
//! which the server reloads when the catalog changes. [`Rates::refresh`]
//! re-evaluates schedules, applies rates to live buckets, drops buckets of
//! clients that left, and measures the rates actually flowing.

use crate::catalog::ClientId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use ferry_net::throttle::Throttle;
use ferry_protocol::schedule::Schedule;
use serde::{Deserialize, Serialize};

use crate::config::RateSchedules;

/// Which listener's networks a session came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// A source in the LAN networks.
    Lan,
    /// Any other source.
    Internet,
}

/// Limits and measured rates, as published in `run/rates.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RateReport {
    /// Milliseconds since the epoch when written.
    pub at_ms: i64,
    /// Global limit and measured rate, LAN.
    pub lan: Flow,
    /// Global limit and measured rate, internet.
    pub internet: Flow,
    /// Per client id (as text, for JSON): limit and measured rate.
    pub clients: HashMap<String, Flow>,
}

/// One bucket's limit and the rate through it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Flow {
    /// The limit in force, bytes per second (`None`: unlimited).
    pub limit: Option<u64>,
    /// Bytes per second over the last [`RATE_WINDOW`].
    pub rate: u64,
}

#[derive(Debug)]
struct Measured {
    throttle: Weak<Throttle>,
    window: RateWindow,
}

/// How far back a measured rate looks. A session counts its bytes a whole
/// message at a time (up to 4 MiB), so a slow client's bytes arrive in
/// bursts seconds apart: over a shorter window its rate would read 0, then
/// many times its real rate.
pub const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

/// Samples closer together than this are not kept.
const MIN_SAMPLE_GAP: std::time::Duration = std::time::Duration::from_millis(100);

/// A byte counter's samples over the last [`RATE_WINDOW`], and the rate
/// they give.
#[derive(Debug, Default)]
pub struct RateWindow {
    samples: std::collections::VecDeque<(Instant, u64)>,
    rate: u64,
}

impl RateWindow {
    /// Records the counter's value `bytes` at `now`; returns the rate since
    /// the newest sample at least [`RATE_WINDOW`] old (or the oldest kept).
    pub fn record(&mut self, now: Instant, bytes: u64) -> u64 {
        // Refreshes come with every session start too: samples closer than
        // this add nothing and would only grow the window.
        if self
            .samples
            .back()
            .is_some_and(|&(at, _)| now.duration_since(at) < MIN_SAMPLE_GAP)
        {
            return self.rate;
        }
        while self.samples.len() >= 2 && now.duration_since(self.samples[1].0) >= RATE_WINDOW {
            self.samples.pop_front();
        }
        self.rate = match self.samples.front() {
            Some(&(at, base)) if now > at => {
                (bytes.saturating_sub(base) as f64 / now.duration_since(at).as_secs_f64()) as u64
            }
            _ => 0,
        };
        self.samples.push_back((now, bytes));
        self.rate
    }

    /// The rate at the last [`RateWindow::record`].
    pub fn rate(&self) -> u64 {
        self.rate
    }
}

/// All buckets and what sets their rates.
#[derive(Debug)]
pub struct Rates {
    config: RateSchedules,
    global_override: Mutex<Option<Schedule>>,
    client_overrides: Mutex<HashMap<ClientId, Schedule>>,
    lan: Arc<Throttle>,
    internet: Arc<Throttle>,
    clients: Mutex<HashMap<(ClientId, PathKind), Measured>>,
    /// The global LAN and internet buckets' rates.
    measured: Mutex<(RateWindow, RateWindow)>,
}

impl Rates {
    /// Buckets for the configured schedules, all starting at their current rate.
    pub fn new(config: RateSchedules, now: (u32, u32)) -> Self {
        let rates = Rates {
            lan: Arc::new(Throttle::new(config.lan_global.rate_at(now.0, now.1))),
            internet: Arc::new(Throttle::new(config.internet_global.rate_at(now.0, now.1))),
            config,
            global_override: Mutex::new(None),
            client_overrides: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            measured: Mutex::new(Default::default()),
        };
        rates.refresh(now);
        rates
    }

    /// Replaces the overrides (from the catalog). Bad stored text is ignored
    /// with a log line: the admin command validates before storing.
    pub fn set_overrides(&self, global: Option<String>, clients: HashMap<ClientId, String>) {
        let parse = |what: &str, text: &str| match Schedule::parse(text) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("ignoring the stored {what} limit {text:?}: {e}");
                None
            }
        };
        *lock(&self.global_override) = global.and_then(|g| parse("global", &g));
        *lock(&self.client_overrides) = clients
            .into_iter()
            .filter_map(|(id, text)| parse("client", &text).map(|s| (id, s)))
            .collect();
    }

    /// Brings one client's own limit and the global override up to date with
    /// the catalog (read as its session starts) and applies them.
    pub fn session_starts(
        &self,
        client: ClientId,
        own: Option<String>,
        global: Option<String>,
        now: (u32, u32),
    ) {
        let parse = |text: Option<String>| text.and_then(|t| Schedule::parse(&t).ok());
        match parse(own) {
            Some(own) => lock(&self.client_overrides).insert(client, own),
            None => lock(&self.client_overrides).remove(&client),
        };
        *lock(&self.global_override) = parse(global);
        self.refresh(now);
    }

    /// The global bucket for sessions of `path`.
    pub fn global(&self, path: PathKind) -> Arc<Throttle> {
        match path {
            PathKind::Lan => Arc::clone(&self.lan),
            PathKind::Internet => Arc::clone(&self.internet),
        }
    }

    fn client_rate(&self, client: ClientId, path: PathKind, now: (u32, u32)) -> Option<u64> {
        if let Some(own) = lock(&self.client_overrides).get(&client) {
            return own.rate_at(now.0, now.1);
        }
        match path {
            PathKind::Lan => self.config.lan_client.rate_at(now.0, now.1),
            PathKind::Internet => self.config.internet_client.rate_at(now.0, now.1),
        }
    }

    /// The bucket shared by `client`'s sessions over `path`.
    pub fn client(&self, client: ClientId, path: PathKind, now: (u32, u32)) -> Arc<Throttle> {
        let mut clients = lock(&self.clients);
        if let Some(existing) = clients
            .get(&(client, path))
            .and_then(|m| m.throttle.upgrade())
        {
            return existing;
        }
        let throttle = Arc::new(Throttle::new(self.client_rate(client, path, now)));
        clients.insert(
            (client, path),
            Measured {
                throttle: Arc::downgrade(&throttle),
                window: RateWindow::default(),
            },
        );
        throttle
    }

    /// Applies the rates in force at `now` (local weekday, minute of day) to
    /// every bucket, forgets clients with no session left, and measures.
    pub fn refresh(&self, now: (u32, u32)) {
        let global = lock(&self.global_override).clone();
        let (lan, internet) = match &global {
            Some(g) => (g.rate_at(now.0, now.1), g.rate_at(now.0, now.1)),
            None => (
                self.config.lan_global.rate_at(now.0, now.1),
                self.config.internet_global.rate_at(now.0, now.1),
            ),
        };
        self.lan.set_rate(lan);
        self.internet.set_rate(internet);
        let now_instant = Instant::now();
        let mut clients = lock(&self.clients);
        clients.retain(|_, m| m.throttle.strong_count() > 0);
        let keys: Vec<(ClientId, PathKind)> = clients.keys().copied().collect();
        for key in keys {
            let rate = self.client_rate(key.0, key.1, now);
            let m = clients.get_mut(&key).expect("listed");
            if let Some(t) = m.throttle.upgrade() {
                t.set_rate(rate);
                m.window.record(now_instant, t.bytes_through());
            }
        }
        let mut measured = lock(&self.measured);
        measured.0.record(now_instant, self.lan.bytes_through());
        measured
            .1
            .record(now_instant, self.internet.bytes_through());
    }

    /// Limits in force and rates measured at the last refresh.
    pub fn report(&self, at_ms: i64) -> RateReport {
        let measured = lock(&self.measured);
        let mut clients: HashMap<String, Flow> = HashMap::new();
        for ((id, _), m) in lock(&self.clients).iter() {
            let Some(t) = m.throttle.upgrade() else {
                continue;
            };
            let flow = clients.entry(id.to_string()).or_default();
            flow.limit = t.rate();
            flow.rate += m.window.rate();
        }
        RateReport {
            at_ms,
            lan: Flow {
                limit: self.lan.rate(),
                rate: measured.0.rate(),
            },
            internet: Flow {
                limit: self.internet.rate(),
                rate: measured.1.rate(),
            },
            clients,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub use ferry_net::throttle::local_now;

#[cfg(test)]
mod tests {
    use super::*;

    fn schedules() -> RateSchedules {
        RateSchedules {
            lan_global: Schedule::constant(None),
            lan_client: Schedule::constant(None),
            internet_global: Schedule::parse("Mon-Fri 08:00-18:00=2MiB/s; default=8MiB/s").unwrap(),
            internet_client: Schedule::constant(Some(1 << 20)),
        }
    }

    #[test]
    fn schedules_overrides_and_pruning() {
        let monday_morning = (0, 9 * 60);
        let rates = Rates::new(schedules(), monday_morning);
        assert_eq!(rates.global(PathKind::Internet).rate(), Some(2 << 20));
        assert_eq!(rates.global(PathKind::Lan).rate(), None);
        let client = rates.client(ClientId(7), PathKind::Internet, monday_morning);
        assert_eq!(client.rate(), Some(1 << 20));
        rates.set_overrides(
            Some("unlimited".into()),
            HashMap::from([(ClientId(7), "3MiB/s".to_string())]),
        );
        rates.refresh((5, 0));
        assert_eq!(rates.global(PathKind::Internet).rate(), None);
        assert_eq!(client.rate(), Some(3 << 20));
        assert_eq!(rates.report(0).clients["7"].limit, Some(3 << 20));
        drop(client);
        rates.refresh((5, 0));
        assert!(
            rates.report(0).clients.is_empty(),
            "a client that left is pruned"
        );
    }

    #[test]
    fn a_client_whose_bytes_come_in_bursts_reads_its_average_rate() {
        let mut window = RateWindow::default();
        let start = Instant::now();
        let mut bytes = 0;
        let mut rates = Vec::new();
        // 1 MiB counted every 3.2 s (about 330 KB/s), sampled every 400 ms.
        for tick in 0..80u64 {
            if tick % 8 == 7 {
                bytes += 1 << 20;
            }
            let rate = window.record(start + std::time::Duration::from_millis(400 * tick), bytes);
            if tick >= 16 {
                rates.push(rate);
            }
        }
        assert!(
            rates.iter().all(|r| (150_000..=450_000).contains(r)),
            "never 0, never many times the average: {rates:?}"
        );
        assert!(window.samples.len() <= 14, "{}", window.samples.len());
        let same = start + std::time::Duration::from_millis(400 * 80);
        window.record(same, bytes);
        let before = window.samples.len();
        window.record(same + std::time::Duration::from_millis(10), bytes + 5);
        assert_eq!(
            window.samples.len(),
            before,
            "samples 10 ms apart are not kept"
        );
    }
}
