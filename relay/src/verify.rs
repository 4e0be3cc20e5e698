//! `ferry-relay verify`: finds damage before a restore does, and sets the
//! store up to heal it.
//!
//! 1. **Catalog**: `PRAGMA integrity_check`.
//! 2. **Blobs**: pack by pack, least recently verified first, every row's
//!    bytes are read sequentially, decompressed and hashed (BLAKE3) against
//!    its id; a row past the end of its pack, or in a pack that is gone, is
//!    damaged too. Two workers each read and hash whole packs (in 2 MiB
//!    segments) while the calling thread records results. Each blob found whole
//!    records when (`verified_at`), so a run bounded by `--max-duration` or
//!    `--subset` resumes where the last one stopped.
//! 3. **Closure**: every snapshot's tree is walked; a damaged or missing blob
//!    is reported with the client, snapshots and paths that reach it, and
//!    every tree and content above it is marked incomplete.
//!
//! A damaged blob counts as missing from then on, and an incomplete one as
//! missing to uploads: the next backup that still holds the data sends it
//! again (see `Catalog::insert_blobs`), which heals every snapshot that
//! named it. Verify only reads packs and writes catalog rows, so it runs
//! beside a serving relay; a row that a collection moved while it was being
//! read is not reported as damage (it is checked where it went next time).

mod closure;
mod packs;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use crate::catalog::{hex, kind_name, Catalog, CatalogAt, DamageRecord, SnapshotId};
use crate::clock::now_ms;
use crate::store::BlobReader;

/// Blobs healed within this long are listed in the report.
const HEALED_SHOWN_MS: i64 = 7 * 24 * 3600 * 1000;

/// What a run checks.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Stop reading blobs after this long (the closure check still runs).
    pub max_duration: Option<Duration>,
    /// Read only this percentage of the bytes due this run.
    pub subset_percent: Option<f64>,
    /// Skip blobs verified more recently than this.
    pub since_verified: Option<Duration>,
    /// Read at most this many bytes per second (beside uploads).
    pub rate: Option<u64>,
}

/// One damaged (or missing) blob, with what reaches it.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    /// The client whose blob it is.
    pub client: String,
    /// `chunk`, `tree`, `content`.
    pub kind: &'static str,
    /// Its id, hex.
    pub blob: String,
    /// Its pack, offset and stored length (absent when no row names it).
    pub pack: Option<crate::store::PackId>,
    /// Offset in the pack.
    pub offset: Option<u64>,
    /// Stored length.
    pub length: Option<u32>,
    /// What is wrong.
    pub reason: String,
    /// Snapshots that reach it.
    pub snapshots: Vec<SnapshotId>,
    /// Some of the paths that reach it (as backed up).
    pub paths: Vec<String>,
}

/// A rotten copy of a blob this run wrote over from its good copy.
#[derive(Debug, Clone, Serialize)]
pub struct RepairedCopy {
    /// `tree` or `content`.
    pub kind: &'static str,
    /// The blob id, hex.
    pub blob: String,
    /// Its pack.
    pub pack: crate::store::PackId,
    /// Where the rotten copy was.
    pub offset: u64,
    /// Its length.
    pub length: u32,
}

/// What a run found; `ferry-relay verify --json` prints it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `PRAGMA integrity_check`'s first line ("ok" when clean).
    pub catalog: String,
    /// Packs read.
    pub packs: u64,
    /// Blobs read and hashed.
    pub blobs_checked: u64,
    /// Their stored bytes.
    pub bytes_checked: u64,
    /// Blobs due that this run left for the next (time box or subset).
    pub blobs_left: u64,
    /// Bytes at the end of packs that no row names (a torn tail, or an
    /// upload that never synced): not damage, cut at the next start.
    pub unindexed_tail_bytes: u64,
    /// Pack files no row names at all (an interrupted collection): not
    /// damage, deleted at the next start.
    pub packs_unnamed: u64,
    /// Snapshots walked.
    pub snapshots: u64,
    /// Damage found (newly or still unhealed).
    pub damaged: Vec<Damage>,
    /// Snapshots that reach damage.
    pub snapshots_damaged: Vec<SnapshotId>,
    /// Blobs found damaged earlier and sent again by a backup in the last
    /// seven days.
    pub healed: Vec<DamageRecord>,
    /// Rotten copies of trees and contents written over from their good
    /// copy by this run (not damage: nothing was lost).
    pub repaired: Vec<RepairedCopy>,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
}

impl Report {
    /// Whether anything is damaged (exit code 3).
    pub fn is_damaged(&self) -> bool {
        self.catalog != "ok" || !self.damaged.is_empty() || !self.snapshots_damaged.is_empty()
    }

    /// One line for logs and the status page.
    pub fn summary(&self) -> String {
        if self.is_damaged() {
            format!(
                "damage found: catalog {}; {} damaged blobs; snapshots {:?}",
                self.catalog,
                self.damaged.len(),
                self.snapshots_damaged
            )
        } else {
            format!(
                "clean: {} blobs ({} bytes) checked, {} left for the next run, {} rotten copies repaired from their twins, in {} ms",
                self.blobs_checked,
                self.bytes_checked,
                self.blobs_left,
                self.repaired.len(),
                self.duration_ms
            )
        }
    }
}

/// Verifies the blobs in `store` against the catalog `at`.
///
/// # Errors
/// When the catalog cannot be opened or queried, or a pack cannot be listed.
pub fn run(at: impl Into<CatalogAt>, store: &dyn BlobReader, options: &Options) -> Result<Report> {
    let mut catalog = Catalog::open_at(&at.into())?;
    let outcome = run_unrecorded(&mut catalog, store, options);
    crate::catalog::runs::record(
        &mut catalog,
        crate::catalog::runs::RunKind::Verify,
        &outcome,
        |r| (r.summary(), r.damaged.len() as u64),
    );
    outcome
}

fn run_unrecorded(
    catalog: &mut Catalog,
    store: &dyn BlobReader,
    options: &Options,
) -> Result<Report> {
    let started = Instant::now();
    let mut report = Report {
        catalog: catalog.integrity_check()?,
        ..Report::default()
    };
    if report.catalog != "ok" {
        tracing::error!("verify: the catalog is damaged: {}", report.catalog);
    }
    packs::check_structure(catalog, store, &mut report)?;
    let mut found = Vec::new();
    packs::check_blobs(catalog, store, options, started, &mut report, &mut found)?;
    let mut walk = closure::Walk::new(catalog, store, HashMap::new());
    for (client, row, reason) in found {
        walk.found.insert(
            (client, row.kind, row.id),
            closure::Finding::new(Some(&row), reason),
        );
    }
    walk.snapshots(&mut report)?;
    let closure::Walk { found, .. } = walk;
    for ((client, kind, id), finding) in found {
        let snapshots: Vec<SnapshotId> = finding.snapshots.iter().copied().collect();
        catalog.set_damage_snapshots(client, kind, &id, &snapshots)?;
        report.damaged.push(Damage {
            client: catalog.client_name(client)?,
            kind: kind_name(kind),
            blob: hex(&id),
            pack: finding.at.map(|a| a.0),
            offset: finding.at.map(|a| a.1),
            length: finding.at.map(|a| a.2),
            reason: finding.reason,
            snapshots: finding.snapshots.into_iter().collect(),
            paths: finding.paths,
        });
    }
    report.damaged.sort_by_key(|d| (d.pack, d.offset));
    report.healed = catalog.damage_records(Some(now_ms() - HEALED_SHOWN_MS))?;
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// Verifies every `interval` in the server (beside uploads, at the
/// configured rate), logging what it found, until `shutdown`.
pub async fn periodic(
    at: CatalogAt,
    store: std::sync::Arc<dyn crate::store::BlobReader>,
    options: Options,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let (catalog, store, options) = (at.clone(), store.clone(), options.clone());
        let outcome =
            tokio::task::spawn_blocking(move || run(&catalog, store.as_ref(), &options)).await;
        match outcome {
            Ok(Ok(report)) if report.is_damaged() => tracing::error!(
                "verify: {} (run `ferry-relay verify` for details)",
                report.summary()
            ),
            Ok(Ok(report)) => tracing::info!("verify: {}", report.summary()),
            Ok(Err(e)) => tracing::error!("verify failed: {e:#}"),
            Err(e) => tracing::error!("verify failed: {e}"),
        }
    }
}
