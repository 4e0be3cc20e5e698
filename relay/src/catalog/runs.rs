//! The last collection and the last verification, wherever they ran (the
//! server on its schedule, `ferry-relay gc`, `ferry-relay verify`), kept in
//! the catalog's settings so the status page, `/metrics` and a restarted
//! relay know them.

use serde::{Deserialize, Serialize};

use super::sql::args;
use super::{Catalog, Result};

/// A finished collection or verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// When it ended (ms since the epoch).
    pub at_ms: i64,
    /// Whether it ran to its end without an error (found damage is not one).
    pub ok: bool,
    /// What it did or found, one line.
    pub summary: String,
    /// Damaged blobs it found (verification only).
    pub damaged: u64,
}

/// Which kind of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// A garbage collection.
    Gc,
    /// A verification of the store.
    Verify,
}

impl RunKind {
    fn key(self) -> &'static str {
        match self {
            RunKind::Gc => "last_gc_run",
            RunKind::Verify => "last_verify_run",
        }
    }
}

impl Catalog {
    /// Records `run` as the last of its kind.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn record_run(&mut self, kind: RunKind, run: &Run) -> Result<()> {
        let text = serde_json::to_string(run).unwrap_or_default();
        self.set_setting(kind.key(), Some(&text))
    }

    /// The last run of `kind`, if one was recorded (a damaged record reads
    /// as none).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn last_run(&self, kind: RunKind) -> Result<Option<Run>> {
        Ok(self
            .setting(kind.key())?
            .and_then(|text| serde_json::from_str(&text).ok()))
    }
}

/// The settings keys of clients' recent session errors: this, then the id.
/// The value is a JSON list, newest first (a relay before the list kept
/// one object: it reads as a list of one).
const ERROR_KEY: &str = "last_error/";

/// Errors kept per client: enough to see a pattern (every night at 2, or
/// only over the hotel link), few enough that a client failing every
/// minute cannot grow the catalog.
pub const ERRORS_KEPT: usize = 10;

/// A stored list of errors, newest first; an unreadable one is empty.
fn parse_errors(text: &str) -> Vec<crate::telemetry::Event> {
    serde_json::from_str::<Vec<crate::telemetry::Event>>(text)
        .or_else(|_| serde_json::from_str(text).map(|one| vec![one]))
        .unwrap_or_default()
}

impl Catalog {
    /// Keeps `event` as the newest error of `client`'s sessions, with the
    /// [`ERRORS_KEPT`] - 1 before it.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn record_client_error(
        &mut self,
        client: super::ClientId,
        event: &crate::telemetry::Event,
    ) -> Result<()> {
        let key = format!("{ERROR_KEY}{client}");
        let mut errors = vec![event.clone()];
        errors.extend(
            self.setting(&key)?
                .map(|text| parse_errors(&text))
                .unwrap_or_default()
                .into_iter()
                .take(ERRORS_KEPT - 1),
        );
        let text = serde_json::to_string(&errors).unwrap_or_default();
        self.set_setting(&key, Some(&text))
    }

    /// `client`'s recent session errors, newest first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn client_error_history(
        &self,
        client: super::ClientId,
    ) -> Result<Vec<crate::telemetry::Event>> {
        Ok(self
            .setting(&format!("{ERROR_KEY}{client}"))?
            .map(|text| parse_errors(&text))
            .unwrap_or_default())
    }

    /// The last error of each client's sessions that has one (one query;
    /// an unreadable record is left out).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn client_errors(
        &self,
    ) -> Result<std::collections::HashMap<super::ClientId, crate::telemetry::Event>> {
        let rows = self.db.rows(
            "SELECT substr(key, CAST(?2 AS INTEGER)), value FROM settings
             WHERE substr(key, 1, CAST(?3 AS INTEGER)) = ?1",
            args![
                ERROR_KEY,
                ERROR_KEY.len() as u64 + 1,
                ERROR_KEY.len() as u64
            ],
            |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
        )?;
        let mut found = std::collections::HashMap::new();
        for (id, text) in rows {
            let newest = parse_errors(&text).into_iter().next();
            if let (Ok(id), Some(event)) = (id.parse::<u64>(), newest) {
                found.insert(super::ClientId(id), event);
            }
        }
        Ok(found)
    }
}

/// Records the outcome of a run, for the status page: best effort (a
/// failure to record is logged, never the run's failure).
pub fn record<T>(
    catalog: &mut Catalog,
    kind: RunKind,
    outcome: &anyhow::Result<T>,
    describe: impl FnOnce(&T) -> (String, u64),
) {
    let (ok, summary, damaged) = match outcome {
        Ok(report) => {
            let (summary, damaged) = describe(report);
            (true, summary, damaged)
        }
        Err(e) => (false, format!("failed: {e:#}"), 0),
    };
    let run = Run {
        at_ms: crate::clock::now_ms(),
        ok,
        summary,
        damaged,
    };
    if let Err(e) = catalog.record_run(kind, &run) {
        tracing::error!("cannot record the last {kind:?} run: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_run_of_each_kind_is_kept() {
        for (at, _dir) in crate::catalog::test_catalogs() {
            let mut catalog = Catalog::open_at(&at).unwrap();
            assert_eq!(catalog.last_run(RunKind::Gc).unwrap(), None);
            let failed: anyhow::Result<u64> = Err(anyhow::anyhow!("disk gone"));
            record(&mut catalog, RunKind::Gc, &failed, |_| (String::new(), 0));
            record(&mut catalog, RunKind::Verify, &Ok(3u64), |n| {
                (format!("{n} damaged"), *n)
            });
            let gc = catalog.last_run(RunKind::Gc).unwrap().unwrap();
            assert!(!gc.ok && gc.summary.contains("disk gone"), "{gc:?}");
            let verify = catalog.last_run(RunKind::Verify).unwrap().unwrap();
            assert!(verify.ok);
            assert_eq!((verify.summary.as_str(), verify.damaged), ("3 damaged", 3));
        }
    }

    #[test]
    fn each_clients_last_error_is_kept() {
        for (at, _dir) in crate::catalog::test_catalogs() {
            let mut catalog = Catalog::open_at(&at).unwrap();
            let event = |m: &str| crate::telemetry::Event {
                at_ms: 1,
                message: m.into(),
            };
            use super::super::ClientId;
            catalog
                .record_client_error(ClientId(7), &event("first"))
                .unwrap();
            catalog
                .record_client_error(ClientId(7), &event("idle timeout"))
                .unwrap();
            catalog
                .record_client_error(ClientId(12), &event("disk full"))
                .unwrap();
            catalog.set_setting("last_error/junk", Some("{}")).unwrap();
            let errors = catalog.client_errors().unwrap();
            assert_eq!(errors.len(), 2, "{errors:?}");
            assert_eq!(errors[&ClientId(7)].message, "idle timeout");
            assert_eq!(errors[&ClientId(12)].message, "disk full");
            let history = catalog.client_error_history(ClientId(7)).unwrap();
            let messages: Vec<&str> = history.iter().map(|e| e.message.as_str()).collect();
            assert_eq!(messages, ["idle timeout", "first"]);
        }
    }

    #[test]
    fn a_clients_error_history_is_bounded_and_reads_the_older_single_record() {
        use super::super::ClientId;
        for (at, _dir) in crate::catalog::test_catalogs() {
            let mut catalog = Catalog::open_at(&at).unwrap();
            // As a relay before the history wrote it: one object.
            catalog
                .set_setting("last_error/3", Some(r#"{"at_ms":5,"message":"old"}"#))
                .unwrap();
            assert_eq!(
                catalog.client_errors().unwrap()[&ClientId(3)].message,
                "old"
            );
            for i in 0..2 * ERRORS_KEPT {
                let event = crate::telemetry::Event {
                    at_ms: 10 + i as i64,
                    message: format!("error {i}"),
                };
                catalog.record_client_error(ClientId(3), &event).unwrap();
            }
            let history = catalog.client_error_history(ClientId(3)).unwrap();
            assert_eq!(history.len(), ERRORS_KEPT);
            assert_eq!(history[0].message, format!("error {}", 2 * ERRORS_KEPT - 1));
            assert!(history.windows(2).all(|w| w[0].at_ms > w[1].at_ms));
            assert!(catalog
                .client_error_history(ClientId(4))
                .unwrap()
                .is_empty());
        }
    }
}
