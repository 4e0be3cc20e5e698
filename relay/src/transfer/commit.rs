//! The end of an upload: `Sync` makes what it sent durable and indexes
//! it; `Commit` checks the snapshot's closure, indexes its trees, records
//! it, judges whether it looks like an emptied or encrypted set, and lets
//! retention decide what is forgotten.

use std::collections::HashSet;
use std::sync::Arc;

use ferry_protocol::keep::DEFAULT_LOCK;
use ferry_protocol::message::{Message, Refusal, INCOMPLETE_SNAPSHOT};

use super::closure::Gap;
use super::upload::Upload;
use super::{violation, Result, Transfer, TransferError};
use crate::catalog::BlobIndex;
use crate::catalog::{BlobKey, BlobKind, BlobRow, SetId, SnapshotId};
use crate::objects::References;
use crate::stored_objects::StoredObjects;
use crate::suspicion::Size;

impl Transfer {
    /// Pack data durable first, then the catalog rows that name it. A
    /// content whose chunks are not all stored yet (a rejected delta is being
    /// resent) stays pending, so a content in the catalog always has its chunks.
    pub(super) fn sync(&mut self) -> Result<()> {
        self.settle_held()?;
        let refused = self.sealed_not_whole()?;
        if !refused.is_empty() {
            self.upload()?
                .pending
                .retain(|key, _| key.kind != BlobKind::Sealed || !refused.contains(&key.id));
        }
        let held = self.held_contents()?;
        let is_held =
            |kind: BlobKind, id: &[u8; 32]| kind == BlobKind::Content && held.contains(id);
        // Trees wait for the commit, staged on disk: a tree in the catalog
        // is one whose closure was checked, so a later backup may trust it
        // (and skip what is under it) when told it exists.
        let (trees, rows): (Vec<BlobRow>, Vec<BlobRow>) = self
            .upload()?
            .pending
            .values()
            .filter(|r| !is_held(r.kind, &r.id))
            .copied()
            .partition(|r| r.kind == BlobKind::Tree);
        let unsynced_since = self.upload()?.unsynced_since;
        if rows.is_empty() && trees.is_empty() && unsynced_since.is_none() {
            return Ok(());
        }
        let epoch = self.repo.blobs().sync()?;
        // Appended before a failed fsync (this session's or another's):
        // the bytes may be gone even though this fsync succeeded.
        if unsynced_since.is_some_and(|since| since != epoch) {
            return Err(TransferError::SyncLost);
        }
        let (client, repo) = (self.client, Arc::clone(&self.repo));
        let upload = self.upload()?;
        let upload_id = upload.id;
        if !trees.is_empty() {
            upload.staged = true;
        }
        upload.indexing(|| {
            repo.catalog(|c| {
                if !trees.is_empty() {
                    c.stage_trees(upload_id, client, &trees)?;
                }
                c.insert_blobs(client, &rows)
            })
            .map_err(TransferError::from)
        })?;
        upload.staged_trees.remember(&trees);
        let indexed: u64 = rows.iter().map(|r| u64::from(r.span().len)).sum();
        upload.unindexed = upload.unindexed.saturating_sub(indexed);
        upload.unsynced_since = None;
        upload.unsynced_chunks = 0;
        upload.pending.retain(|key, _| is_held(key.kind, &key.id));
        upload.pending_objects = upload.pending.len();
        Ok(())
    }

    /// The pending contents that must wait: a chunk they name is not stored
    /// yet, or (a large file's) a part they name is not or waits too. Read
    /// through the contents' references, as the walks read them.
    fn held_contents(&self) -> Result<HashSet<[u8; 32]>> {
        let upload = self
            .upload
            .as_ref()
            .ok_or_else(|| violation!("sync outside a backup"))?;
        let contents: Vec<[u8; 32]> = upload
            .pending
            .keys()
            .filter(|key| key.kind == BlobKind::Content)
            .map(|key| key.id)
            .collect();
        let mut held = HashSet::new();
        let mut parted = Vec::new();
        let mut named = Vec::new();
        for id in contents {
            let key = BlobKey {
                kind: BlobKind::Content,
                id,
            };
            let raw = self
                .load(key.kind, &id)?
                .ok_or_else(|| TransferError::Damaged("a pending content vanished".into()))?;
            let (chunks, parts): (Vec<BlobKey>, Vec<BlobKey>) = StoredObjects
                .references(key, &raw)?
                .into_iter()
                .partition(|named| named.kind == BlobKind::Chunk);
            named.push((id, chunks));
            if !parts.is_empty() {
                parted.push((id, parts));
            }
        }
        // Every chunk they name, looked up at once.
        let all: Vec<[u8; 32]> = named
            .iter()
            .flat_map(|(_, chunks)| chunks.iter().map(|c| c.id))
            .collect();
        let stored = self.whole_among(BlobKind::Chunk, &all)?;
        for (id, chunks) in named {
            if chunks.iter().any(|c| !stored.contains(&c.id)) {
                held.insert(id);
            }
        }
        // A large file's content waits for its parts (parts hold only chunks).
        for (id, parts) in parted {
            for part in parts {
                if held.contains(&part.id) || !self.has(part.kind, &part.id)? {
                    held.insert(id);
                    break;
                }
            }
        }
        Ok(held)
    }

    /// Commits the open upload as a snapshot of `root`, or refuses it with
    /// what its closure lacks.
    pub(super) fn commit(
        &mut self,
        root: BlobKey,
        files: u64,
        bytes: u64,
        started_ms: i64,
    ) -> Result<Message> {
        self.sync()?;
        let upload = self.upload()?;
        if !upload.rejected.is_empty() || !upload.pending.is_empty() {
            return Err(violation!("commit before every rejected chunk was resent"));
        }
        let closure = self.check_closure(root);
        // Taken either way: a refused commit's trees are never indexed (they
        // are dropped with it).
        let mut upload = self
            .upload
            .take()
            .ok_or_else(|| violation!("commit outside a backup"))?;
        match closure {
            Ok(()) => {}
            Err(Gap::Missing(gap)) => {
                return Ok(Message::Refused {
                    code: Refusal::IncompleteSnapshot,
                    message: format!("{INCOMPLETE_SNAPSHOT}: {gap}"),
                })
            }
            Err(Gap::Failed(e)) => return Err(e),
        }
        let snapshot = self.record_snapshot(&mut upload, root, (files, bytes), started_ms)?;
        self.judge(
            upload.set_id,
            snapshot,
            Size { files, bytes },
            upload.appended,
        )?;
        self.apply_retention(&upload)?;
        Ok(Message::Committed {
            snapshot: snapshot.0,
        })
    }

    /// Indexes the upload's staged trees and records the snapshot, in one
    /// catalog transaction.
    fn record_snapshot(
        &self,
        upload: &mut Upload,
        root: BlobKey,
        (files, bytes): (u64, u64),
        started_ms: i64,
    ) -> Result<SnapshotId> {
        let client = self.client;
        let (upload_id, staged, set_id) = (upload.id, upload.staged, upload.set_id);
        let label = upload.label.take();
        let repo = Arc::clone(&self.repo);
        let snapshot = upload.indexing(|| {
            repo.catalog(|c| {
                if staged {
                    c.index_staged_trees(upload_id)?;
                }
                let snapshot = c.insert_snapshot(
                    client,
                    set_id,
                    root,
                    started_ms,
                    crate::clock::retention_now_ms(),
                    files,
                    bytes,
                )?;
                if let Some(label) = &label {
                    c.set_snapshot_label(snapshot, label)?;
                }
                Ok(snapshot)
            })
            .map_err(TransferError::from)
        })?;
        upload.staged = false;
        upload.staged_trees = Default::default();
        upload.unindexed = 0;
        tracing::info!(
            "client {client}: committed snapshot {snapshot} ({files} files, {bytes} bytes)"
        );
        Ok(snapshot)
    }

    /// Lets the relay's rules decide what the set keeps (the hints just
    /// sent can only keep more), and warns of a quota nearly used.
    fn apply_retention(&self, upload: &Upload) -> Result<()> {
        let client = self.client;
        let (set_id, hints, defaults) = (upload.set_id, upload.retention, self.retention_defaults);
        let forgotten = self.catalog(|c| {
            c.save_hints(set_id, &hints)?;
            let decisions = c.retention_decisions(
                Some(client),
                Some(set_id),
                &defaults,
                crate::clock::retention_now_ms(),
            )?;
            c.apply_decisions(&decisions)
        })?;
        if let Some(quota) = &upload.quota {
            let (used, limit) = (quota.in_use(), Some(quota.limit));
            if ferry_protocol::units::past_warning(used, limit, self.quotas.warn_percent) {
                tracing::warn!(
                    "client {client} uses {} of its quota",
                    ferry_protocol::units::format_usage(used, limit)
                );
            }
        }
        if !forgotten.is_empty() {
            tracing::info!(
                "client {client}: retention forgot {} older snapshot(s) of set {set_id}",
                forgotten.len()
            );
        }
        Ok(())
    }

    /// Holds the snapshot before `snapshot` and keeps a `suspicious` alert
    /// when `snapshot` (of size `now`, its upload having appended
    /// `appended` bytes) looks like an emptied or encrypted set.
    fn judge(&self, set_id: SetId, snapshot: SnapshotId, now: Size, appended: u64) -> Result<()> {
        let (client, defaults, limits) = (self.client, self.retention_defaults, self.suspicion);
        self.catalog(|c| {
            let Some((before, size)) = c.snapshot_before(set_id, snapshot)? else {
                return Ok(());
            };
            let Some(why) = crate::suspicion::judge(size, now, appended, &limits) else {
                return Ok(());
            };
            // The lock's length, and never less than the default lock's
            // (an operator who turned the lock off still gets this).
            let lock = c.lock_of(client, set_id, &defaults)?;
            let lock = if lock.as_millis() < DEFAULT_LOCK.as_millis() {
                DEFAULT_LOCK
            } else {
                lock
            };
            let until = crate::clock::retention_now_ms()
                .saturating_add(i64::try_from(lock.as_millis()).unwrap_or(i64::MAX));
            c.hold_snapshot(before, until)?;
            let message = format!(
                "snapshot {snapshot} is suspicious: {why}; snapshot {before} is held for {lock} whatever retention says"
            );
            tracing::warn!("client {client}: {message}");
            c.record_suspicious(client, set_id, snapshot, before, &message)
        })
    }
}
