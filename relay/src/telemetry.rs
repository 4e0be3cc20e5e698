//! What the relay counts while it serves, for `/metrics`, the status page
//! and the alerts: handshakes and backups by result, each client's bytes
//! in and out, failed backups waiting for the alerts. Counters live in
//! memory (Prometheus
//! expects counters to restart at zero with the process); everything a
//! restart must not forget (snapshots, storage, damage) is read from the
//! catalog when asked.

use std::sync::{Mutex, MutexGuard};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;

/// A metric's `result` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `accepted`, `refused`, … for handshakes; `committed`, `failed` for backups.
    pub result: &'static str,
}

/// A metric's `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why: `sign-in`, `bearer`, `host`, `action` for the web's refusals.
    pub reason: &'static str,
}

/// A metric's `client` label: the operator's name for the client.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabel {
    /// The client's name.
    pub client: String,
}

/// Something that went wrong, with when.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Event {
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// What happened, one line.
    pub message: String,
}

/// The relay's live counters (one per server, in `Shared`).
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Session handshakes by result.
    pub handshakes: Family<ResultLabel, Counter>,
    /// Backups by result: `committed`, or `failed` (a session that ended
    /// with an upload open and no commit).
    pub backups: Family<ResultLabel, Counter>,
    /// Bytes read from each client's sessions.
    pub received: Family<ClientLabel, Counter>,
    /// Bytes written to each client's sessions.
    pub sent: Family<ClientLabel, Counter>,
    /// Requests the web listener refused, by reason.
    pub web_refusals: Family<ReasonLabel, Counter>,
    events: Mutex<Events>,
}

#[derive(Debug, Default)]
struct Events {
    failed_backups: Vec<(String, Event)>,
}

impl Telemetry {
    fn events(&self) -> MutexGuard<'_, Events> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a handshake that ended as `result`.
    pub fn handshake(&self, result: &'static str) {
        self.handshakes.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts a request the web listener refused for `reason`.
    pub fn web_refused(&self, reason: &'static str) {
        self.web_refusals
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a committed backup.
    pub fn backup_committed(&self) {
        self.backups
            .get_or_create(&ResultLabel {
                result: "committed",
            })
            .inc();
    }

    /// Records why a session of `client` failed; `during_backup` when it
    /// had an upload open, which then counts as a failed backup (and is
    /// kept for the alerts to report once). Returns the event, for the
    /// catalog to keep as the client's last error.
    pub fn session_failed(&self, client: &str, message: &str, during_backup: bool) -> Event {
        let event = Event {
            at_ms: crate::clock::now_ms(),
            message: message.to_string(),
        };
        let mut events = self.events();
        if during_backup {
            self.backups
                .get_or_create(&ResultLabel { result: "failed" })
                .inc();
            // Bounded: the alerts take them every check; a relay without
            // alerts keeps the newest few.
            if events.failed_backups.len() >= MAX_PENDING_FAILURES {
                events.failed_backups.remove(0);
            }
            events
                .failed_backups
                .push((client.to_string(), event.clone()));
        }
        event
    }

    /// Failed backups since the last call, for the alerts.
    pub fn take_failed_backups(&self) -> Vec<(String, Event)> {
        std::mem::take(&mut self.events().failed_backups)
    }

    /// The counters of `client`'s bytes in and out (shared handles: a
    /// session adds to them as it goes).
    pub fn traffic(&self, client: &str) -> (Counter, Counter) {
        let label = ClientLabel {
            client: client.to_string(),
        };
        (
            self.received.get_or_create(&label).clone(),
            self.sent.get_or_create(&label).clone(),
        )
    }
}

/// Failed backups kept for the alerts between two checks.
const MAX_PENDING_FAILURES: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_during_backups_count_and_wait_for_the_alerts() {
        let t = Telemetry::default();
        t.session_failed("laptop", "idle timeout", false);
        let event = t.session_failed("laptop", "disk full", true);
        t.backup_committed();
        assert_eq!(event.message, "disk full");
        let failed = t.take_failed_backups();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, "laptop");
        assert!(t.take_failed_backups().is_empty(), "taken once");
        let label = |result| ResultLabel { result };
        assert_eq!(t.backups.get_or_create(&label("failed")).get(), 1);
        assert_eq!(t.backups.get_or_create(&label("committed")).get(), 1);
        let (received, _) = t.traffic("laptop");
        received.inc_by(10);
        assert_eq!(t.traffic("laptop").0.get(), 10, "one shared counter");
    }
}
