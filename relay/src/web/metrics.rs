//! `/metrics`: the relay in the Prometheus (OpenMetrics) text format,
//! through `prometheus-client`. Counters are the live ones of
//! [`Telemetry`](crate::telemetry::Telemetry) (as counters, their samples
//! end in `_total`); gauges are filled from one [`Status`] per scrape, in a
//! registry made for that scrape, so a removed client's series go with it.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::status::Status;
use crate::telemetry::{ClientLabel, Telemetry};

/// The labels of a per-set series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SetLabels {
    client: String,
    set: String,
}

/// The labels of a per-relay series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RelayLabels {
    relay: String,
    holder: String,
}

type IntGauges<L> = Family<L, Gauge>;
type FloatGauges<L> = Family<L, Gauge<f64, AtomicU64>>;

/// The text of one scrape.
///
/// # Errors
/// Never in practice (formatting into a `String`).
pub fn render(status: &Status, telemetry: &Telemetry) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register(
        "ferry_handshakes",
        "Session handshakes by result",
        telemetry.handshakes.clone(),
    );
    registry.register(
        "ferry_backups",
        "Backups by result (failed: the session ended with an upload open)",
        telemetry.backups.clone(),
    );
    registry.register(
        "ferry_web_refusals",
        "Requests the web listener refused, by reason (sign-in, bearer, host, action)",
        telemetry.web_refusals.clone(),
    );
    registry.register_with_unit(
        "ferry_client_received",
        "Bytes received from the client's sessions since the relay started",
        Unit::Bytes,
        telemetry.received.clone(),
    );
    registry.register_with_unit(
        "ferry_client_sent",
        "Bytes sent to the client's sessions since the relay started",
        Unit::Bytes,
        telemetry.sent.clone(),
    );

    let sessions = Gauge::<i64>::default();
    sessions.set(count(status.sessions_open as u64));
    registry.register("ferry_sessions_open", "Sessions open now", sessions);
    let store = Gauge::<i64>::default();
    store.set(count(status.store_bytes));
    registry.register_with_unit(
        "ferry_store",
        "Bytes of every stored blob, all clients",
        Unit::Bytes,
        store,
    );
    if let Some(counters) = status.object_store {
        for (name, help, value) in [
            (
                "ferry_store_cache_hits",
                "Reads of the object store served by the local cache",
                counters.cache_hits,
            ),
            (
                "ferry_store_cache_misses",
                "Reads that asked the object store",
                counters.cache_misses,
            ),
            (
                "ferry_store_request_errors",
                "Object store requests that failed after their retries",
                counters.request_errors,
            ),
        ] {
            let counter = Counter::<u64>::default();
            counter.inc_by(value);
            registry.register(name, help, counter);
        }
    }
    let relays = IntGauges::<RelayLabels>::default();
    for relay in &status.relays {
        let labels = RelayLabels {
            relay: relay.id.to_string(),
            holder: relay.holder.clone(),
        };
        relays.get_or_create(&labels).set(i64::from(relay.up));
    }
    registry.register(
        "ferry_relay_up",
        "Whether each relay sharing this catalog said it was up in the last 20 s",
        relays,
    );
    let damage = Gauge::<i64>::default();
    damage.set(count(status.damage_open));
    registry.register(
        "ferry_damaged_blobs",
        "Damaged blobs found by verification and not yet sent again",
        damage,
    );
    for (name, help, run) in [
        (
            "ferry_gc_last_run_timestamp_seconds",
            "When the last collection ended",
            &status.gc,
        ),
        (
            "ferry_verify_last_run_timestamp_seconds",
            "When the last verification ended",
            &status.verify,
        ),
    ] {
        if let Some(run) = run {
            let at = Gauge::<f64, AtomicU64>::default();
            at.set(run.at_ms as f64 / 1000.0);
            registry.register(name, help, at);
        }
    }

    let last_success = FloatGauges::<SetLabels>::default();
    let stale = IntGauges::<SetLabels>::default();
    let stored = IntGauges::<ClientLabel>::default();
    let quota = IntGauges::<ClientLabel>::default();
    let rate = IntGauges::<ClientLabel>::default();
    let open = IntGauges::<ClientLabel>::default();
    for client in &status.clients {
        let label = ClientLabel {
            client: client.name.clone(),
        };
        stored.get_or_create(&label).set(count(client.stored_bytes));
        rate.get_or_create(&label).set(count(client.rate));
        open.get_or_create(&label)
            .set(count(client.sessions as u64));
        if let Some(q) = client.quota {
            quota.get_or_create(&label).set(count(q));
        }
        for set in &client.sets {
            let labels = SetLabels {
                client: client.name.clone(),
                set: set.name.clone(),
            };
            if let Some(ms) = set.last_success_ms {
                last_success.get_or_create(&labels).set(ms as f64 / 1000.0);
            }
            stale.get_or_create(&labels).set(i64::from(set.stale));
        }
    }
    registry.register(
        "ferry_client_last_success_timestamp_seconds",
        "When the set's newest snapshot was committed",
        last_success,
    );
    registry.register(
        "ferry_client_stale",
        "1 when the set has gone longer than its stale-after without a snapshot",
        stale,
    );
    registry.register_with_unit(
        "ferry_client_stored",
        "Bytes the client stores (after dedup and compression)",
        Unit::Bytes,
        stored,
    );
    registry.register_with_unit(
        "ferry_client_quota",
        "The client's quota (absent: unlimited)",
        Unit::Bytes,
        quota,
    );
    registry.register(
        "ferry_client_rate_bytes_per_second",
        "Bytes per second through the client's sessions now",
        rate,
    );
    registry.register("ferry_client_sessions", "The client's open sessions", open);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// A count as a gauge's value (saturating: gauges are signed).
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
