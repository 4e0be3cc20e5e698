//! When collections run: periodically in the server, on request from
//! `ferry-relay gc`, or offline when no server holds the data directory.
//!
//! A running server owns the pack store, so `ferry-relay gc` does not touch
//! it: it writes a request into the catalog's settings (`gc_request`), the
//! server notices it with its other admin changes, collects, and writes the
//! outcome (`gc_result`) for the command to print.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use crate::catalog::Catalog;
use crate::clock::now_ms;
use crate::data_dir::DataDir;
use crate::gc::{Fence, GcReport};
use crate::repo::Repo;
use tokio_util::sync::CancellationToken;

const REQUEST_KEY: &str = "gc_request";
const RESULT_KEY: &str = "gc_result";

/// A collection asked of the running server.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcRequest {
    /// Unique per request (a millisecond timestamp).
    pub id: i64,
    /// The grace period to use.
    pub grace_ms: u64,
}

/// The server's answer to a [`GcRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcOutcome {
    /// The request's id.
    pub request: i64,
    /// What was done, on success.
    pub report: Option<GcReport>,
    /// Why not, on failure.
    pub error: Option<String>,
}

/// Collects in the running server, answering `request` if it is one:
/// `None` when another relay sharing the catalog collects (or answered).
///
/// # Errors
/// Whatever the collection reports.
pub async fn collect_in_server(
    repo: &Arc<Repo>,
    grace: Duration,
    request: Option<GcRequest>,
) -> Result<Option<GcReport>> {
    let repo = Arc::clone(repo);
    tokio::task::spawn_blocking(move || collect_leased(&repo, grace, now_ms(), request))
        .await
        .context("collector failed")?
}

/// Collects holding the catalog's `gc` lease (relays sharing a catalog
/// collect one at a time, see `crate::gc::Fence`), and answers `request`
/// before giving the lease back, so no other relay answers it again.
/// `None`: another relay holds the lease, or answered `request` already.
/// Blocking.
///
/// # Errors
/// Whatever the collection reports, or the lease lost meanwhile.
pub fn collect_leased(
    repo: &Repo,
    grace: Duration,
    now_ms: i64,
    request: Option<GcRequest>,
) -> Result<Option<GcReport>> {
    let mut catalog = Catalog::open_at(repo.catalog_at())?;
    let fence = match repo.relay() {
        None => Fence::unshared(),
        Some((relay, lease)) => match Fence::take(&mut catalog, relay, lease)? {
            Some(fence) => fence,
            None => {
                tracing::debug!(
                    "gc: another relay holds the collection lease; this relay leaves it"
                );
                return Ok(None);
            }
        },
    };
    if request.is_some() && pending_request(&catalog)? != request {
        fence.release(&mut catalog);
        return Ok(None);
    }
    let outcome = crate::gc::collect(
        &mut catalog,
        repo.blobs(),
        repo.uploads(),
        grace,
        now_ms,
        &fence,
    );
    match &outcome {
        Ok(report) => info!("gc: {}", report.summary()),
        Err(e) => error!("gc failed: {e:#}"),
    }
    if outcome.is_ok() {
        keep_catalog_copy(repo, &catalog);
    }
    if let Some(request) = request {
        let answer = GcOutcome {
            request: request.id,
            report: outcome.as_ref().ok().cloned(),
            error: outcome.as_ref().err().map(|e| format!("{e:#}")),
        };
        let text = serde_json::to_string(&answer).unwrap_or_default();
        if let Err(e) = catalog.set_setting(RESULT_KEY, Some(&text)) {
            error!("cannot record the gc result: {e:#}");
        }
    }
    fence.release(&mut catalog);
    outcome.map(Some)
}

/// After a collection, on a store that keeps them, a copy of the catalog
/// (`crate::catalog_copies`): failures are logged, never fail the
/// collection.
fn keep_catalog_copy(repo: &Repo, catalog: &Catalog) {
    let Some(shelf) = repo.blobs().store().copy_shelf() else {
        return;
    };
    let relay = repo.relay().map_or(0, |(relay, _)| relay);
    match crate::catalog_copies::keep(catalog, shelf, relay) {
        Ok(kept) => info!(
            "gc: kept a copy of the catalog in the object store: {} ({})",
            kept.name,
            crate::catalog_copies::describe(&kept.copied)
        ),
        Err(e) => error!("gc: cannot keep a copy of the catalog in the object store: {e:#}"),
    }
}

/// Collects every `interval` until shutdown.
pub async fn periodic(
    repo: Arc<Repo>,
    interval: Duration,
    grace: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        // Failures are logged; the next interval tries again.
        if let Ok(None) = collect_in_server(&repo, grace, None).await {
            info!(
                "gc: another relay sharing the catalog is collecting; this relay skips this round"
            );
        }
    }
}

/// A request not yet answered, if any (checked on each catalog change).
///
/// # Errors
/// SQLite errors.
pub fn pending_request(catalog: &Catalog) -> crate::catalog::Result<Option<GcRequest>> {
    let Some(request) = catalog
        .setting(REQUEST_KEY)?
        .and_then(|text| serde_json::from_str::<GcRequest>(&text).ok())
    else {
        return Ok(None);
    };
    let answered = catalog
        .setting(RESULT_KEY)?
        .and_then(|text| serde_json::from_str::<GcOutcome>(&text).ok())
        .is_some_and(|o| o.request == request.id);
    Ok((!answered).then_some(request))
}

/// Answers, as not done, a request left by a relay that stopped before
/// collecting: a `ferry-relay gc` whose relay was killed has already told
/// its user to ask again, so the next start must not collect unasked.
///
/// # Errors
/// SQLite errors.
pub fn drop_stale_request(catalog: &mut Catalog) -> crate::catalog::Result<()> {
    let Some(request) = pending_request(catalog)? else {
        return Ok(());
    };
    // Another relay sharing the catalog is collecting: it answers.
    if catalog.lease(crate::gc::GC_LEASE, now_ms())?.is_some() {
        return Ok(());
    }
    tracing::warn!("dropping a gc request left by a relay that stopped before collecting");
    let outcome = GcOutcome {
        request: request.id,
        report: None,
        error: Some("the relay restarted before collecting; run `ferry-relay gc` again".into()),
    };
    let text = serde_json::to_string(&outcome).unwrap_or_default();
    catalog.set_setting(RESULT_KEY, Some(&text))
}

/// Answers `request` in the server, unless another relay sharing the
/// catalog does: while one holds the lease this relay waits, and takes
/// the request over if the holder never answers it (stopped past its
/// lease).
pub async fn serve_request(repo: Arc<Repo>, request: GcRequest) {
    info!("gc requested by `ferry-relay gc`");
    let grace = Duration::from_millis(request.grace_ms);
    for round in 0.. {
        if !matches!(
            collect_in_server(&repo, grace, Some(request)).await,
            Ok(None)
        ) {
            return;
        }
        let pending = repo.db(|c| pending_request(c)).await;
        if !matches!(pending, Ok(Some(still)) if still == request) {
            return;
        }
        if round == 0 {
            info!("gc: another relay sharing the catalog is collecting; this relay waits, and answers if it does not");
        }
        tokio::time::sleep(LEASE_POLL).await;
    }
}

/// How often a relay waiting for another's collection looks again.
const LEASE_POLL: Duration = Duration::from_millis(500);

/// Asks the running server for a collection with `grace` (it notices the
/// request with its other catalog changes); returns the request.
///
/// # Errors
/// Catalog errors.
pub fn ask(catalog: &mut Catalog, grace: Duration) -> Result<GcRequest> {
    let request = GcRequest {
        id: now_ms(),
        grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
    };
    catalog.set_setting(REQUEST_KEY, Some(&serde_json::to_string(&request)?))?;
    Ok(request)
}

/// `ferry-relay gc`: collects now, in the running server if there is one,
/// else here (holding the data directory's lock meanwhile).
///
/// # Errors
/// A failed collection, or a server that stopped before answering.
pub fn run_now(data: &DataDir, grace: Duration) -> Result<GcReport> {
    if let Some(_lock) = data.try_lock()? {
        let config = data.config()?;
        let storage = data.storage(&config.storage)?;
        let repo = Repo::open(data.catalog()?, data.catalog_at(), &storage)?;
        // Other relays may share the catalog: collect under the lease
        // (this relay's own, left by a process of it killed, given back).
        let relay = data.relay_id()?;
        repo.catalog(|c| c.release_leases_of(relay))?;
        repo.set_relay(relay, config.gc.resolve()?.lease);
        return match collect_leased(&repo, grace, now_ms(), None)? {
            Some(report) => Ok(report),
            None => {
                bail!("another relay sharing the catalog is collecting now; try again after it")
            }
        };
    }
    let mut catalog = data.catalog()?;
    let request = ask(&mut catalog, grace)?;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let outcome = catalog
            .setting(RESULT_KEY)?
            .and_then(|text| serde_json::from_str::<GcOutcome>(&text).ok())
            .filter(|o| o.request == request.id);
        if let Some(outcome) = outcome {
            return match (outcome.report, outcome.error) {
                (Some(report), _) => Ok(report),
                (None, error) => bail!(
                    "garbage collection failed: {}",
                    error.unwrap_or_else(|| "no reason given".into())
                ),
            };
        }
        if data.try_lock()?.is_some() {
            bail!("the relay stopped before collecting; run `ferry-relay gc` again");
        }
    }
}
