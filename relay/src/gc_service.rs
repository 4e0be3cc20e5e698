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
use crate::gc::GcReport;
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

/// Collects in the running server (see [`crate::gc::collect_beside_uploads`]).
///
/// # Errors
/// Whatever the collection reports.
pub async fn collect_in_server(repo: &Arc<Repo>, grace: Duration) -> Result<GcReport> {
    let repo = Arc::clone(repo);
    tokio::task::spawn_blocking(move || crate::gc::collect_beside_uploads(&repo, grace, now_ms()))
        .await
        .context("collector failed")?
}

/// Runs a collection and logs what it did.
pub async fn collect_and_log(repo: &Arc<Repo>, grace: Duration) -> Result<GcReport> {
    let outcome = collect_in_server(repo, grace).await;
    match &outcome {
        Ok(r) => info!("gc: {}", r.summary()),
        Err(e) => error!("gc failed: {e:#}"),
    }
    outcome
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
        let _ = collect_and_log(&repo, grace).await;
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
    tracing::warn!("dropping a gc request left by a relay that stopped before collecting");
    let outcome = GcOutcome {
        request: request.id,
        report: None,
        error: Some("the relay restarted before collecting; run `ferry-relay gc` again".into()),
    };
    let text = serde_json::to_string(&outcome).unwrap_or_default();
    catalog.set_setting(RESULT_KEY, Some(&text))
}

/// Answers `request` in the server.
pub async fn serve_request(repo: Arc<Repo>, request: GcRequest) {
    info!("gc requested by `ferry-relay gc`");
    let outcome = collect_and_log(&repo, Duration::from_millis(request.grace_ms)).await;
    let outcome = match outcome {
        Ok(report) => GcOutcome {
            request: request.id,
            report: Some(report),
            error: None,
        },
        Err(e) => GcOutcome {
            request: request.id,
            report: None,
            error: Some(format!("{e:#}")),
        },
    };
    let text = serde_json::to_string(&outcome).unwrap_or_default();
    if let Err(e) = repo
        .db(move |c| c.set_setting(RESULT_KEY, Some(&text)))
        .await
    {
        error!("cannot record the gc result: {e:#}");
    }
}

/// `ferry-relay gc`: collects now, in the running server if there is one,
/// else here (holding the data directory's lock meanwhile).
///
/// # Errors
/// A failed collection, or a server that stopped before answering.
pub fn run_now(data: &DataDir, grace: Duration) -> Result<GcReport> {
    if let Some(_lock) = data.try_lock()? {
        let storage = data.storage(&data.config()?.storage)?;
        let repo = Repo::open(data.catalog()?, &data.catalog_path(), &storage)?;
        return crate::gc::collect_beside_uploads(&repo, grace, now_ms());
    }
    let mut catalog = data.catalog()?;
    let request = GcRequest {
        id: now_ms(),
        grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
    };
    catalog.set_setting(REQUEST_KEY, Some(&serde_json::to_string(&request)?))?;
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
