//! Garbage collection: drop what no snapshot reaches, reclaim its space.
//!
//! Three phases, each safe to interrupt at any instant:
//!
//! 1. **Mark**: walk every snapshot's tree (trees, contents, their parts,
//!    chunks) into a mark set. Signatures stored by earlier versions (they
//!    are now computed when asked) are never marked, so they go. A blob a
//!    snapshot names but the store lacks (or that does not decode) is that
//!    snapshot's problem: it is reported (`snapshots_damaged`), everything
//!    else the snapshot reaches is kept, and the collection goes on, so one
//!    client cannot switch collection off for all. A blob `verify` found
//!    damaged is marked (its row waits for a backup to heal it) but not
//!    walked.
//!    Trees and contents stored or reused within the grace period are
//!    walked too (an upload told they exist may name them).
//! 2. **Sweep**: delete the rows of unmarked blobs stored or reused before
//!    the cutoff, in one transaction holding the catalog's write lock,
//!    after marking what was committed or reused since the mark began.
//!    The cutoff is the grace period, or the start of the oldest open
//!    upload if earlier: younger blobs belong to an upload that is open or
//!    may yet resume (a laptop that lost its link) and are kept.
//! 3. **Compact**: the current pack is sealed (appends go on in a new one);
//!    among sealed packs below every open upload's first pack,
//!    delete those no row names; rewrite sealed packs at
//!    least [`REPACK_DEAD_PERCENT`] dead by copying their live blobs to the
//!    current pack, fsyncing, pointing the rows at the copies (one
//!    transaction), then deleting the old pack. A crash before the rows move
//!    leaves an unnamed tail (cut at the next start, kept in
//!    `store/quarantine/`); after, an unnamed pack (moved there). In a
//!    store relays share (`BlobStore::deletes_later`: the object store's),
//!    an emptied pack is condemned instead, and deleted by the first
//!    collection a grace period later: another relay may still be reading
//!    it from a row it looked up before the move.
//!
//! An upload open longer than `gc.max-upload-age` holds none of this
//! back: it is expired first (`crate::gate::UploadFence`) and fails.
//!
//! Uploads go on while this runs and never wait for it, nor it for them
//! (see `crate::gate` for what keeps their blobs). Readers take
//! `pack_files` shared around each lookup and read; only the deletion of a
//! pack file takes it exclusively, so restores continue too.

mod fence;

pub use fence::{Fence, GC_LEASE};

use crate::catalog::BlobIndex;
use crate::catalog::ClientId;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferry_protocol::compress::decompress;
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ProtocolError;
use serde::{Deserialize, Serialize};

use crate::catalog::{BlobKey, BlobKind, BlobRow, BlobState, Catalog};
use crate::gate::OpenUploads;
use crate::objects::Reach;
use crate::repo::Blobs;
use crate::store::PackId;
use crate::stored_objects::StoredObjects;

/// A sealed pack with at least this share of dead bytes is rewritten.
pub const REPACK_DEAD_PERCENT: u64 = 20;

/// What a collection did; printed by `ferry-relay gc` (also as `--json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcReport {
    /// Snapshots whose data was kept.
    pub snapshots: u64,
    /// Unreferenced blobs whose rows were deleted.
    pub blobs_deleted: u64,
    /// Their stored bytes.
    pub bytes_unreferenced: u64,
    /// Unreferenced blobs kept for the grace period: younger than it, or
    /// below a tree or content that is.
    pub blobs_in_grace: u64,
    /// Pack files deleted whole.
    pub packs_deleted: u64,
    /// Pack files rewritten without their dead blobs.
    pub packs_repacked: u64,
    /// Live bytes copied while rewriting.
    pub bytes_moved: u64,
    /// Disk space given back: packs' lengths before minus after.
    pub bytes_freed: u64,
    /// Wall time of the whole collection, in milliseconds.
    pub duration_ms: u64,
    /// Snapshots that name a blob the store lacks or that does not decode:
    /// kept, and what they reach that exists is kept; `ferry-relay verify`
    /// names what is missing.
    #[serde(default)]
    pub snapshots_damaged: Vec<u64>,
    /// Uploads open longer than `gc.max-upload-age`, ended so that nothing
    /// is kept for them.
    #[serde(default)]
    pub uploads_expired: u64,
}

impl GcReport {
    /// One line for logs and the status page.
    pub fn summary(&self) -> String {
        format!(
            "{} snapshots kept; {} unreferenced blobs ({} bytes) deleted, {} in their grace period; {} packs deleted, {} rewritten; {} bytes freed in {} ms",
            self.snapshots,
            self.blobs_deleted,
            self.bytes_unreferenced,
            self.blobs_in_grace,
            self.packs_deleted,
            self.packs_repacked,
            self.bytes_freed,
            self.duration_ms
        )
    }
}

/// Young trees and contents marked in one pass below which marking stops
/// before the sweep (the rest is marked holding the write lock).
const SETTLED: u64 = 1_000;

/// Collects garbage: see the module documentation.
///
/// # Errors
/// SQLite or I/O errors (what was done so far is consistent).
pub fn collect(
    catalog: &mut Catalog,
    blobs: &Blobs,
    uploads: &OpenUploads,
    grace: Duration,
    now_ms: i64,
    fence: &Fence,
) -> Result<GcReport> {
    let outcome = collect_unrecorded(catalog, blobs, uploads, grace, now_ms, fence);
    crate::catalog::runs::record(catalog, crate::catalog::runs::RunKind::Gc, &outcome, |r| {
        (r.summary(), 0)
    });
    outcome
}

fn collect_unrecorded(
    catalog: &mut Catalog,
    blobs: &Blobs,
    uploads: &OpenUploads,
    grace: Duration,
    now_ms: i64,
    fence: &Fence,
) -> Result<GcReport> {
    let started = Instant::now();
    // Uploads open too long are ended first: nothing is kept for them.
    let mut report = GcReport {
        uploads_expired: uploads.expire_overdue(now_ms) as u64,
        ..GcReport::default()
    };
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    // Nothing an open upload reused or stored is older than its start.
    let cutoff = || {
        let oldest = uploads.oldest().map_or(i64::MAX, |o| o.since_ms);
        now_ms.saturating_sub(grace_ms).min(oldest)
    };
    catalog.begin_mark()?;
    Marker::new(catalog, blobs).snapshots(&mut report)?;
    // Blobs kept only for the grace period (or an open upload).
    let mut in_grace = 0;
    // A young tree or content no snapshot reaches is kept for its grace
    // period, and so is everything below it: an upload told it exists may
    // name it without sending what is under it. Uploads go on meanwhile,
    // so this repeats until few new ones turn up.
    for _ in 0..3 {
        let young = Marker::new(catalog, blobs).young(cutoff())?;
        in_grace += young;
        if young < SETTLED {
            break;
        }
    }
    crate::test_hooks::hold_collection();
    // Last marks and the sweep under the write lock: what was committed or
    // reused since is marked before anything is deleted.
    let (deleted, bytes, young) = catalog.write_locked(|catalog| -> Result<_> {
        let cutoff = cutoff();
        Marker::new(catalog, blobs).snapshots(&mut report)?;
        in_grace += Marker::new(catalog, blobs).young(cutoff)?;
        // In the sweep's own transaction: a stale holder deletes no row.
        fence.check(catalog)?;
        Ok(catalog.sweep(cutoff)?)
    })?;
    catalog.end_mark()?;
    report.snapshots = catalog.snapshot_roots()?.len() as u64;
    report.blobs_deleted = deleted;
    report.bytes_unreferenced = bytes;
    report.blobs_in_grace = in_grace + young;
    let young = Young {
        since_ms: now_ms.saturating_sub(grace_ms),
        now_ms,
    };
    compact(catalog, blobs, uploads, young, fence, &mut report)?;
    // What ended uploads left unindexed before this run is reclaimed now
    // (or sits in a pack under the rewrite threshold): charged no more.
    catalog.clear_unindexed_before(now_ms)?;
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// Walks snapshots into the catalog's mark set.
struct Marker<'c, 'p> {
    catalog: &'c mut Catalog,
    blobs: &'p Blobs,
    /// Whose snapshot is walked.
    client: ClientId,
    /// Blobs marked so far.
    marked: u64,
    /// What the current walk found missing or undecodable.
    gaps: Vec<String>,
}

impl<'c, 'p> Marker<'c, 'p> {
    fn new(catalog: &'c mut Catalog, blobs: &'p Blobs) -> Self {
        Marker {
            catalog,
            blobs,
            client: ClientId(0),
            marked: 0,
            gaps: Vec::new(),
        }
    }

    /// Marks every snapshot not marked yet and what it reaches; reports the
    /// damaged ones.
    fn snapshots(mut self, report: &mut GcReport) -> Result<()> {
        for (client, snapshot, root) in self.catalog.snapshot_roots()? {
            self.walk(client, root)?;
            if let Some(gap) = self.gaps.first() {
                tracing::warn!(
                    "gc: snapshot {snapshot} is damaged ({gap}{}); what it reaches that exists is kept",
                    if self.gaps.len() > 1 { ", and more" } else { "" }
                );
                report.snapshots_damaged.push(snapshot.0);
            }
        }
        Ok(())
    }

    /// Marks the trees and contents stored or reused at or after `cutoff`
    /// that are not marked yet, and what they reach; returns how many
    /// blobs that marked.
    fn young(mut self, cutoff: i64) -> Result<u64> {
        for (client, kind, id) in self.catalog.young_unmarked_objects(cutoff)? {
            self.walk(client, BlobKey { kind, id })?;
            if let Some(gap) = self.gaps.first() {
                tracing::warn!("gc: an unreferenced young {kind:?} is not whole: {gap}");
            }
        }
        Ok(self.marked)
    }

    /// Marks a blob; true when it was not marked before.
    fn mark(&mut self, kind: BlobKind, id: &[u8; 32]) -> Result<bool> {
        let new = self.catalog.mark(self.client, kind, id)?;
        self.marked += u64::from(new);
        Ok(new)
    }

    /// Marks `root` of `client` and everything below it.
    fn walk(&mut self, client: ClientId, root: BlobKey) -> Result<()> {
        self.client = client;
        self.gaps.clear();
        crate::objects::walk(root, &StoredObjects, self)
    }
}

impl Reach for Marker<'_, '_> {
    type Error = anyhow::Error;

    /// Walked below only the first time it is marked.
    fn enter(&mut self, key: BlobKey) -> Result<bool> {
        self.mark(key.kind, &key.id)
    }

    /// `None` for a blob `verify` found damaged (kept, marked, not walked:
    /// a backup may yet send it again), or one the store lacks (a gap).
    fn load(&mut self, key: BlobKey) -> Result<Option<Vec<u8>>> {
        let Some((row, state)) = self
            .catalog
            .find_blob_state(self.client, key.kind, &key.id)?
        else {
            self.gaps
                .push(format!("it names a {} the store lacks", key.short()));
            return Ok(None);
        };
        if state == BlobState::Damaged {
            return Ok(None);
        }
        let stored = self.blobs.read(&row.at)?;
        match decompress(row.codec, stored, MAX_MESSAGE) {
            Ok(raw) => Ok(Some(raw)),
            Err(e) => {
                self.undecodable(key, e)?;
                Ok(None)
            }
        }
    }

    fn undecodable(&mut self, key: BlobKey, error: ProtocolError) -> Result<()> {
        self.gaps
            .push(format!("its {} does not decode ({error})", key.short()));
        Ok(())
    }
}

/// Phase 3: delete dead packs, rewrite mostly dead ones.
/// What counts as young in this collection: since when, and now.
#[derive(Debug, Clone, Copy)]
struct Young {
    since_ms: i64,
    now_ms: i64,
}

fn compact(
    catalog: &mut Catalog,
    blobs: &Blobs,
    uploads: &OpenUploads,
    young: Young,
    fence: &Fence,
    report: &mut GcReport,
) -> Result<()> {
    // The pack being appended to is sealed first, so what was swept from
    // it is reclaimed now, not left unnamed for the next start. In this
    // order: an upload opened after the listing appends only to packs
    // above every pack listed; one closed before the open uploads are read
    // has indexed all it wrote before the usage is counted.
    blobs.seal()?;
    let sealed = blobs.sealed_packs()?;
    let held_from = uploads.oldest().map_or(PackId(u64::MAX), |o| o.first_pack);
    let usage = catalog.pack_usage()?;
    // A pack started within the grace period may belong to another relay's
    // upload that has not indexed it yet (relays sharing a store): kept.
    let settled = |pack: &PackId| {
        blobs
            .store()
            .pack_started_ms(*pack)
            .is_none_or(|started| started < young.since_ms)
    };
    for (pack, len) in sealed
        .into_iter()
        .filter(|(pack, _)| *pack < held_from && settled(pack))
    {
        let live = usage.get(&pack).copied().unwrap_or_default();
        // The trailer's entries for live blobs are live too: a rewritten
        // pack is not rewritten again for them.
        let live_bytes = live.bytes + blobs.store().trailer_bytes(live.blobs);
        if live.blobs == 0 {
            fence.check(catalog)?;
            if delete_emptied(catalog, blobs, pack, young)? {
                report.packs_deleted += 1;
                report.bytes_freed += len;
            }
        } else if len.saturating_sub(live_bytes) * 100 >= len * REPACK_DEAD_PERCENT {
            let moved = repack(catalog, blobs, pack, fence)?;
            report.packs_repacked += 1;
            report.bytes_moved += moved;
            if delete_emptied(catalog, blobs, pack, young)? {
                report.bytes_freed += len.saturating_sub(moved);
            }
        }
    }
    Ok(())
}

/// Deletes `pack`, which no row names any more, unless its store deletes
/// later (`BlobStore::deletes_later`) and it was condemned within the
/// grace period: then it waits for a later collection. True when deleted.
fn delete_emptied(catalog: &Catalog, blobs: &Blobs, pack: PackId, young: Young) -> Result<bool> {
    if blobs.store().deletes_later() && catalog.condemn_pack(pack, young.now_ms)? > young.since_ms {
        return Ok(false);
    }
    blobs
        .remove(pack)
        .with_context(|| format!("cannot delete pack {pack:08}"))?;
    catalog.forget_condemned_pack(pack)?;
    Ok(true)
}

/// Copies `pack`'s live blobs to the current pack and moves their rows
/// (the caller deletes `pack`); returns the bytes copied.
fn repack(catalog: &mut Catalog, blobs: &Blobs, pack: PackId, fence: &Fence) -> Result<u64> {
    let live = catalog.blobs_in_pack(pack)?;
    let mut moved = Vec::with_capacity(live.len());
    let mut bytes = 0;
    for (client, row) in live {
        // Every copy moves with it.
        let span = blobs.copy(&row.span(), &row.label(client))?;
        bytes += u64::from(span.len);
        let at = crate::store::BlobLocation {
            len: row.at.len,
            ..span
        };
        moved.push((client, BlobRow { at, ..row }));
    }
    blobs.sync()?;
    fence.check(catalog)?;
    catalog.relocate(pack, &moved)?;
    tracing::info!(
        "gc: rewrote pack {pack:08}: {} live blobs, {bytes} bytes moved",
        moved.len()
    );
    Ok(bytes)
}
