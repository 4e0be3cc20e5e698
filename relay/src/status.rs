//! The relay's state at a glance: every client with its sets, when each
//! last backed up and whether that is too long ago, its storage, its live
//! sessions and rate, its last error; the store, the last collection and
//! verification. One [`Status`] feeds the page, `/api/status`, `/metrics`
//! and the alerts, so they never disagree.

use std::collections::HashMap;

use anyhow::Result;
use ferry_protocol::units::format_rfc3339;
use serde::Serialize;

use crate::catalog::runs::{Run, RunKind};
use crate::catalog::{ClientId, ClientRecord, SetSummary};
use crate::clock::now_ms;
use crate::config::Alerts;
use crate::config::Quotas;
use crate::rates::RateReport;
use crate::rates::Rates;
use crate::registry::Registry;
use crate::repo::Repo;
use crate::telemetry::Event;
use crate::telemetry::Telemetry;
use std::sync::Arc;

/// Everything the status page shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// When this was read (RFC 3339).
    pub generated_at: String,
    /// The same, ms since the epoch.
    pub generated_ms: i64,
    /// The relay's key fingerprint.
    pub fingerprint: String,
    /// Its software version.
    pub version: &'static str,
    /// Sessions open now.
    pub sessions_open: usize,
    /// Bytes of every blob stored, all clients together.
    pub store_bytes: u64,
    /// Damaged blobs found by verification and not yet sent again.
    pub damage_open: u64,
    /// The object store's counters, when the packs are in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_store: Option<crate::store::StoreCounters>,
    /// The relays sharing this catalog, this one among them.
    pub relays: Vec<RelayStatus>,
    /// The last collection, wherever it ran.
    pub gc: Option<Run>,
    /// The last verification, wherever it ran.
    pub verify: Option<Run>,
    /// Every paired client, by name.
    pub clients: Vec<ClientStatus>,
}

/// One relay of the service.
#[derive(Debug, Clone, Serialize)]
pub struct RelayStatus {
    /// Its id.
    pub id: u16,
    /// Its host and data directory.
    pub holder: String,
    /// Whether it said it was up lately (`crate::presence`).
    pub up: bool,
    /// When it last did (ms since the epoch; 0: it stopped cleanly).
    pub seen_ms: i64,
}

/// One client.
#[derive(Debug, Clone, Serialize)]
pub struct ClientStatus {
    /// The operator's name for it.
    pub name: String,
    /// The host name it reported when pairing.
    pub hostname: String,
    /// Its key's fingerprint.
    pub fingerprint: String,
    /// `sealed` (the relay cannot read its data) or `open`.
    pub mode: &'static str,
    /// When it last opened a session (RFC 3339).
    pub last_seen_at: Option<String>,
    /// From where.
    pub last_address: Option<String>,
    /// Bytes it stores (after dedup and compression).
    pub stored_bytes: u64,
    /// Its quota, bytes (`None`: unlimited).
    pub quota: Option<u64>,
    /// Whether its storage is past `quota.warn-percent` of the quota.
    pub quota_warning: bool,
    /// Its damaged blobs not yet sent again.
    pub damage_open: u64,
    /// Sessions it has open now.
    pub sessions: usize,
    /// Bytes per second through its sessions now.
    pub rate: u64,
    /// The limit on them now (`None`: unlimited or no session).
    pub limit: Option<u64>,
    /// Bytes received from it since the relay started.
    pub received_bytes: u64,
    /// Bytes sent to it since the relay started.
    pub sent_bytes: u64,
    /// The last error of its sessions (kept in the catalog).
    pub last_error: Option<Event>,
    /// Whether any of its sets is stale.
    pub stale: bool,
    /// Its backup sets.
    pub sets: Vec<SetStatus>,
}

/// One backup set.
#[derive(Debug, Clone, Serialize)]
pub struct SetStatus {
    /// Its name.
    pub name: String,
    /// Snapshots it holds.
    pub snapshots: u64,
    /// When its newest snapshot was committed (RFC 3339).
    pub last_success_at: Option<String>,
    /// The same, ms since the epoch.
    pub last_success_ms: Option<i64>,
    /// Seconds since then.
    pub age_s: Option<u64>,
    /// How long it may go without a snapshot, seconds.
    pub stale_after_s: u64,
    /// Whether it went longer (or never had one).
    pub stale: bool,
    /// When its backup running now began (RFC 3339), if one is.
    pub backing_up_since: Option<String>,
    /// The same, ms since the epoch.
    pub backing_up_since_ms: Option<i64>,
    /// New bytes that backup has stored so far (after dedup and
    /// compression; 0 when none runs).
    pub backing_up_bytes: u64,
}

/// How long the storage sums stay in [`StorageSums`]: they read the whole
/// blob index, so a status page reloading and Prometheus scraping every
/// few seconds must not make the relay do that each time.
pub const SUMS_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Bytes stored per client.
type Sums = Arc<HashMap<ClientId, u64>>;

/// The bytes each client stores, as last summed, and when.
#[derive(Debug, Default)]
pub struct StorageSums {
    last: tokio::sync::Mutex<Option<(std::time::Instant, Sums)>>,
}

impl StorageSums {
    /// The sums, read again when older than [`SUMS_TTL`] (requests at once
    /// wait for one reading).
    async fn get(&self, repo: &Arc<Repo>) -> Result<Sums> {
        let mut last = self.last.lock().await;
        if let Some((at, sums)) = last.as_ref() {
            if at.elapsed() < SUMS_TTL {
                return Ok(Arc::clone(sums));
            }
        }
        let sums = Arc::new(repo.db(|c| c.stored_bytes_by_client()).await?);
        *last = Some((std::time::Instant::now(), Arc::clone(&sums)));
        Ok(sums)
    }
}

/// What the catalog says, read in one call.
struct Stored {
    clients: Vec<ClientRecord>,
    sets: Vec<SetSummary>,
    damage: HashMap<String, u64>,
    errors: HashMap<ClientId, Event>,
    gc: Option<Run>,
    verify: Option<Run>,
    relays: Vec<crate::catalog::RelayRow>,
}

/// Everything a client's status is made of, read once per status.
struct Sources<'a> {
    stored: Stored,
    sums: &'a HashMap<ClientId, u64>,
    sessions: HashMap<ClientId, usize>,
    uploads: HashMap<(ClientId, crate::catalog::SetId), crate::gate::InFlight>,
    rates: RateReport,
    of: &'a StatusSources,
    now: i64,
}

/// What the status is read from: the relay's parts the page, the metrics
/// and the alerts look at, built once by `server::run`.
#[derive(Debug)]
pub struct StatusSources {
    /// The catalog and the store.
    pub repo: Arc<Repo>,
    /// Open sessions.
    pub registry: Arc<Registry>,
    /// Bandwidth buckets.
    pub rates: Arc<Rates>,
    /// Counters since start.
    pub telemetry: Arc<Telemetry>,
    /// The relay key's fingerprint.
    pub fingerprint: String,
    /// `[alerts]`, resolved.
    pub alerts: Alerts,
    /// `[quota]`, resolved.
    pub quotas: Quotas,
    /// The storage sums, cached briefly.
    sums: StorageSums,
}

impl StatusSources {
    /// Sources over these parts.
    pub fn new(
        repo: Arc<Repo>,
        registry: Arc<Registry>,
        rates: Arc<Rates>,
        telemetry: Arc<Telemetry>,
        fingerprint: String,
        (alerts, quotas): (Alerts, Quotas),
    ) -> Self {
        StatusSources {
            repo,
            registry,
            rates,
            telemetry,
            fingerprint,
            alerts,
            quotas,
            sums: StorageSums::default(),
        }
    }

    /// Reads the status now.
    ///
    /// # Errors
    /// Catalog errors.
    pub async fn read(&self) -> Result<Status> {
        read(self).await
    }
}

async fn read(of: &StatusSources) -> Result<Status> {
    let sums = of.sums.get(&of.repo).await?;
    let stored = of
        .repo
        .db(|c| {
            Ok(Stored {
                clients: c.list_clients()?,
                sets: c.set_summaries()?,
                damage: c.open_damage_by_client()?,
                errors: c.client_errors()?,
                gc: c.last_run(RunKind::Gc)?,
                verify: c.last_run(RunKind::Verify)?,
                relays: c.relays()?,
            })
        })
        .await?;
    let now = now_ms();
    let from = Sources {
        stored,
        sums: &sums,
        sessions: of.registry.open_by_client(),
        uploads: of.repo.uploads().in_flight(),
        rates: of.rates.report(now),
        of,
        now,
    };
    let clients = from
        .stored
        .clients
        .iter()
        .map(|client| client_status(client, &from))
        .collect();
    Ok(Status {
        generated_at: format_rfc3339(now),
        generated_ms: now,
        fingerprint: of.fingerprint.clone(),
        version: env!("CARGO_PKG_VERSION"),
        sessions_open: of.registry.len(),
        store_bytes: sums.values().sum(),
        damage_open: from.stored.damage.values().sum(),
        object_store: of.repo.blobs().store().counters(),
        relays: from
            .stored
            .relays
            .iter()
            .cloned()
            .map(|r| RelayStatus {
                up: crate::presence::is_up(r.seen_at, now),
                id: r.id,
                holder: r.holder,
                seen_ms: r.seen_at,
            })
            .collect(),
        gc: from.stored.gc.clone(),
        verify: from.stored.verify.clone(),
        clients,
    })
}

fn client_status(client: &ClientRecord, from: &Sources<'_>) -> ClientStatus {
    let (alerts, quotas) = (&from.of.alerts, &from.of.quotas);
    let sets: Vec<SetStatus> = from
        .stored
        .sets
        .iter()
        .filter(|s| s.client == client.id)
        .map(|s| {
            let mut set = set_status(s, &client.name, client.paired_ms, alerts, from.now);
            if let Some(flight) = from.uploads.get(&(client.id, s.id)) {
                set.backing_up_since_ms = Some(flight.since_ms);
                set.backing_up_since = Some(format_rfc3339(flight.since_ms));
                set.backing_up_bytes = flight.appended;
            }
            set
        })
        .collect();
    // A client paired that long ago with no set at all never backed up.
    let never_backed_up = sets.is_empty()
        && older_than(
            client.paired_ms,
            alerts.stale_after(&client.name, ""),
            from.now,
        );
    let flow = from.rates.clients.get(&client.id.to_string());
    let quota = quotas.of(client.own_quota);
    let stored_bytes = from.sums.get(&client.id).copied().unwrap_or(0);
    let (received, sent) = from.of.telemetry.traffic(&client.name);
    ClientStatus {
        name: client.name.clone(),
        hostname: client.hostname.clone(),
        fingerprint: client.fingerprint.clone(),
        mode: client.mode,
        last_seen_at: client.last_seen_at.clone(),
        last_address: client.last_address.clone(),
        stored_bytes,
        quota,
        quota_warning: ferry_protocol::units::past_warning(
            stored_bytes,
            quota,
            quotas.warn_percent,
        ),
        damage_open: from.stored.damage.get(&client.name).copied().unwrap_or(0),
        sessions: from.sessions.get(&client.id).copied().unwrap_or(0),
        rate: flow.map_or(0, |f| f.rate),
        limit: flow.and_then(|f| f.limit),
        received_bytes: received.get(),
        sent_bytes: sent.get(),
        last_error: from.stored.errors.get(&client.id).cloned(),
        stale: never_backed_up || sets.iter().any(|s| s.stale),
        sets,
    }
}

impl ClientStatus {
    /// When its newest snapshot of any set was committed (RFC 3339), or
    /// `never`.
    pub fn last_success(&self) -> String {
        self.sets
            .iter()
            .filter_map(|s| s.last_success_at.clone())
            .max()
            .unwrap_or_else(|| "never".into())
    }
}

/// Whether more than `limit` passed from `since` (ms) to `now` (ms).
fn older_than(since: i64, limit: std::time::Duration, now: i64) -> bool {
    (now - since).max(0) as u128 > limit.as_millis()
}

/// A set's status at `now` (ms). A set without a snapshot is judged from
/// its client's pairing: its first backup has had that long to succeed.
pub fn set_status(
    summary: &SetSummary,
    client: &str,
    paired_ms: i64,
    alerts: &Alerts,
    now: i64,
) -> SetStatus {
    let stale_after = alerts.stale_after(client, &summary.set);
    let age_ms = summary.last_success_ms.map(|at| (now - at).max(0));
    // Without a snapshot, its first backup has had since the pairing.
    let since = summary.last_success_ms.unwrap_or(paired_ms);
    SetStatus {
        name: summary.set.clone(),
        snapshots: summary.snapshots,
        last_success_at: summary.last_success_ms.map(format_rfc3339),
        last_success_ms: summary.last_success_ms,
        age_s: age_ms.map(|ms| ms as u64 / 1000),
        stale_after_s: stale_after.as_secs(),
        stale: older_than(since, stale_after, now),
        backing_up_since: None,
        backing_up_since_ms: None,
        backing_up_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ClientId;
    use crate::config::AlertsConfig;

    #[test]
    fn a_set_is_stale_past_its_own_limit_or_without_a_snapshot() {
        let mut config = AlertsConfig::default();
        config
            .stale_after_for
            .insert("laptop/photos".into(), "7d".into());
        config.stale_after_for.insert("nas".into(), "1h".into());
        let alerts = config.resolve().unwrap();
        let day = 86_400_000;
        let summary = |set: &str, last| SetSummary {
            client: ClientId(1),
            set: set.into(),
            snapshots: 1,
            last_success_ms: last,
            id: crate::catalog::SetId(1),
        };
        let now = 100 * day;
        let paired = now - 10 * day;
        let status =
            |set, last, client| set_status(&summary(set, last), client, paired, &alerts, now);
        let home = status("home", Some(now - 3 * day), "laptop");
        assert!(home.stale, "3 days against the default 2");
        assert_eq!(home.age_s, Some(3 * 86_400));
        assert!(
            !status("photos", Some(now - 3 * day), "laptop").stale,
            "its own 7 days"
        );
        assert!(
            status("home", Some(now - 2 * 3_600_000), "nas").stale,
            "the client's own hour"
        );
        assert!(
            status("new", None, "laptop").stale,
            "paired 10 days ago, never backed up"
        );
        let fresh = set_status(&summary("new", None), "laptop", now - 1000, &alerts, now);
        assert!(!fresh.stale, "just paired: its first backup has time");
    }
}
