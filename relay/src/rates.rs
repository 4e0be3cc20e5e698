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
    /// Bytes per second measured over the last interval.
    pub rate: u64,
}

#[derive(Debug)]
struct Measured {
    throttle: Weak<Throttle>,
    last_bytes: u64,
    rate: u64,
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
    measured: Mutex<(Instant, u64, u64, u64, u64)>,
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
            measured: Mutex::new((Instant::now(), 0, 0, 0, 0)),
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
                last_bytes: 0,
                rate: 0,
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
        let mut measured = lock(&self.measured);
        let elapsed = measured.0.elapsed().as_secs_f64().max(1e-3);
        let mut clients = lock(&self.clients);
        clients.retain(|_, m| m.throttle.strong_count() > 0);
        let keys: Vec<(ClientId, PathKind)> = clients.keys().copied().collect();
        for key in keys {
            let rate = self.client_rate(key.0, key.1, now);
            let m = clients.get_mut(&key).expect("listed");
            if let Some(t) = m.throttle.upgrade() {
                t.set_rate(rate);
                let bytes = t.bytes_through();
                m.rate = ((bytes - m.last_bytes) as f64 / elapsed) as u64;
                m.last_bytes = bytes;
            }
        }
        let (lan_bytes, internet_bytes) = (self.lan.bytes_through(), self.internet.bytes_through());
        *measured = (
            Instant::now(),
            lan_bytes,
            internet_bytes,
            ((lan_bytes - measured.1) as f64 / elapsed) as u64,
            ((internet_bytes - measured.2) as f64 / elapsed) as u64,
        );
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
            flow.rate += m.rate;
        }
        RateReport {
            at_ms,
            lan: Flow {
                limit: self.lan.rate(),
                rate: measured.3,
            },
            internet: Flow {
                limit: self.internet.rate(),
                rate: measured.4,
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
}
