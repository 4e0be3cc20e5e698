//! Which relays of a service are up: each relay writes the time into its
//! row of the catalog's `relays` every [`HEARTBEAT`], and 0 when it stops
//! cleanly; one counts as up while its last word is younger than
//! [`UP_WITHIN`]. Every relay's status page and `/metrics` show them all.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::repo::Repo;

/// How often a relay says it is up.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// A relay counts as up while its last word is younger than this.
pub const UP_WITHIN: Duration = Duration::from_secs(20);

/// Says relay `relay` is up every [`HEARTBEAT`] until `shutdown`, then
/// that it stopped.
pub async fn heartbeat(repo: Arc<Repo>, relay: u16, shutdown: CancellationToken) {
    loop {
        if let Err(e) = repo.db(move |c| c.relay_seen(relay, now_ms())).await {
            tracing::warn!("cannot record that this relay is up: {e:#}");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
    let _ = repo.db(move |c| c.relay_seen(relay, 0)).await;
}

/// Whether a relay last seen at `seen_at` is up at `now`.
pub fn is_up(seen_at: i64, now: i64) -> bool {
    let window = i64::try_from(UP_WITHIN.as_millis()).unwrap_or(i64::MAX);
    seen_at > 0 && now - seen_at < window
}
