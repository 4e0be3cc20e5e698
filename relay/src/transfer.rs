//! Backup and restore requests inside an authenticated session.
//!
//! [`Transfer::handle`] takes one request and returns the reply, if the
//! request has one. It does blocking work (hashing, lz4, rsync, pack writes,
//! SQLite), so the session calls it on the blocking pool. Every lookup is
//! keyed by the session's client: asking for another client's blob gives the
//! same answer as asking for one that does not exist.
//!
//! Upload rules: a chunk counts only once its BLAKE3 matches its id (a delta
//! that does not rebuild it is reported back in `Synced.rejected`); blobs
//! become visible in the catalog at `Sync`, after the pack is fsynced; a
//! snapshot is committed only when everything new under its root is present.
//!
//! The rules live in `upload` (storing, `Sync`, `Commit`) and `closure`
//! (what a commit must reach); this file dispatches requests and reads.
//! Errors are a [`TransferError`], whose [`TransferError::refusal`] is the
//! code the endpoint is told.

mod closure;
mod serve;
mod upload;

use crate::catalog::ClientId;
use std::sync::Arc;

use ferry_protocol::chunking::MAX_CHUNK;
use ferry_protocol::compress::{compress, decompress, decompress_slice};
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::{ChunkId, TreeId};
use ferry_protocol::message::{
    set_missing, ChunkBatch, ChunkPut, Message, ObjectId, Refusal, SnapshotInfo, MAX_BATCH,
    MAX_SIGNATURES,
};
use ferry_protocol::units::format_size;
use ferry_protocol::{delta, ProtocolError};

use crate::catalog::{now_ms, BlobKind, BlobRow, BlobState, CatalogError};
use crate::repo::Repo;
use crate::store::StorageError;
use upload::Upload;

/// Why a request ends its session.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The endpoint broke the protocol's rules (a bug, or a hostile client).
    #[error("{0}")]
    Violation(String),
    /// Bytes from the endpoint that do not decode.
    #[error(transparent)]
    Decode(#[from] ProtocolError),
    /// Stored bytes that do not decode (a damaged blob).
    #[error("a stored blob is damaged: {0}")]
    Damaged(String),
    /// The blob store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The backup would pass the client's quota; what it sent is dropped.
    #[error("quota: {0}")]
    Quota(String),
    /// An fsync failed after this upload appended: what it sent since its
    /// last sync may be lost, so none of it is indexed.
    #[error("the relay's disk failed while this backup was being written (an fsync failed); nothing of it since the last sync was kept")]
    SyncLost,
    /// The upload was open longer than the relay's maximum upload age, and
    /// a collection no longer keeps what it sent.
    #[error("this backup was open longer than the relay allows (gc.max-upload-age), so collections no longer wait for it and it was ended; what it made durable is kept for the next run, which sends the rest")]
    Expired,
}

impl TransferError {
    /// The code the endpoint is told.
    pub fn refusal(&self) -> Refusal {
        match self {
            TransferError::Violation(_) | TransferError::Decode(_) => Refusal::ProtocolViolation,
            TransferError::Quota(_) => Refusal::QuotaExceeded,
            TransferError::Storage(StorageError::Full { .. })
            | TransferError::Catalog(CatalogError::DiskFull(_)) => Refusal::DiskFull,
            TransferError::Damaged(_)
            | TransferError::Storage(_)
            | TransferError::Catalog(_)
            | TransferError::SyncLost => Refusal::StorageFailed,
            // "Try again": the next run goes on where this one stopped.
            TransferError::Expired => Refusal::SetBusy,
        }
    }
}

/// What transfer operations return.
pub type Result<T, E = TransferError> = std::result::Result<T, E>;

/// A [`TransferError::Violation`] from a format string.
macro_rules! violation {
    ($($arg:tt)*) => {
        $crate::transfer::TransferError::Violation(format!($($arg)*))
    };
}

/// Fails with a [`TransferError::Violation`] unless `cond` holds.
macro_rules! check {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(violation!($($arg)*));
        }
    };
}
pub(crate) use {check, violation};

/// One session's transfer state.
#[derive(Debug)]
pub struct Transfer {
    repo: Arc<Repo>,
    client: ClientId,
    upload: Option<Upload>,
    policy: Option<InternetPolicy>,
    /// An open upload with nothing sent for it for this long is ended (see
    /// [`Transfer::ping`]).
    stall_limit: Option<std::time::Duration>,
    /// The relay's retention rules where the catalog stores none for the
    /// client or set (`relay.toml` `[retention]`).
    retention_defaults: ferry_protocol::keep::Rules,
    /// The relay's quotas (`relay.toml` `[quota]`).
    quotas: crate::config::Quotas,
    /// The session's signs of life (a silent one's upload may be taken over).
    life: Arc<crate::gate::Liveness>,
    /// When a backup is suspicious (`[alerts.suspicious]`).
    suspicion: crate::suspicion::Thresholds,
}

/// What a client may do when its session comes from the internet.
#[derive(Debug, Clone, Copy)]
pub struct InternetPolicy {
    /// Whether a set's first (full) backup may run now.
    pub full_backups: bool,
    /// The largest single file.
    pub max_file: Option<u64>,
}

fn object_key(id: &ObjectId) -> (BlobKind, [u8; 32]) {
    match id {
        ObjectId::Tree(t) => (BlobKind::Tree, t.0),
        ObjectId::Content(c) => (BlobKind::Content, c.0),
    }
}

impl Transfer {
    /// State for a session of `client`; `policy` applies when the session
    /// comes from the internet (`None` on the LAN).
    pub fn new(repo: Arc<Repo>, client: ClientId, policy: Option<InternetPolicy>) -> Self {
        Transfer {
            repo,
            client,
            upload: None,
            policy,
            stall_limit: None,
            retention_defaults: ferry_protocol::keep::Rules::default(),
            quotas: crate::config::Quotas::default(),
            life: Arc::default(),
            suspicion: crate::suspicion::Thresholds::default(),
        }
    }

    /// Judges committed backups by `thresholds` (see `crate::suspicion`).
    pub fn with_suspicion(mut self, thresholds: crate::suspicion::Thresholds) -> Self {
        self.suspicion = thresholds;
        self
    }

    /// Shares the session's signs of life with the uploads it opens.
    pub fn with_liveness(mut self, life: Arc<crate::gate::Liveness>) -> Self {
        self.life = life;
        self
    }

    /// Applies the relay's quotas (a client's own quota overrides them).
    pub fn with_quotas(mut self, quotas: crate::config::Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// The client's quota, if it has one.
    fn quota(&self) -> Result<Option<u64>> {
        let client = self.client;
        let own = self.catalog(|c| c.own_quota(client))?;
        Ok(self.quotas.of(own))
    }

    /// What the client stores now (a sum over its blob rows: asked only
    /// where it is needed).
    fn stored(&self) -> Result<u64> {
        let client = self.client;
        self.catalog(|c| c.client_stored_bytes(client))
    }

    /// Applies `defaults` where the catalog stores no retention rule.
    pub fn with_retention_defaults(mut self, defaults: ferry_protocol::keep::Rules) -> Self {
        self.retention_defaults = defaults;
        self
    }

    /// Ends an open upload that makes no progress for `limit` (while it is
    /// open, collections keep everything stored since it began).
    pub fn with_stall_limit(mut self, limit: std::time::Duration) -> Self {
        self.stall_limit = Some(limit);
        self
    }

    /// Answers a keep-alive. A client that keeps its session alive with
    /// pings while its open upload makes no progress is cut off here: the
    /// idle timeout alone would never end it.
    ///
    /// # Errors
    /// [`TransferError::Violation`] naming the stall.
    pub fn ping(&self) -> Result<()> {
        let stalled = self
            .stall_limit
            .zip(self.upload.as_ref())
            .filter(|(limit, upload)| upload.progress.elapsed() > *limit);
        match stalled {
            Some((limit, _)) => Err(violation!(
                "the upload made no progress for {limit:?}; it is ended so collections and other backups are not held"
            )),
            None => Ok(()),
        }
    }

    /// Ends the session's open upload, if any: what reached the relay is
    /// made durable and indexed (the next run need not send it again), so
    /// a session cut by shutdown or a dropped link leaves no torn tail.
    pub fn finish(&mut self) {
        if self.upload.is_none() {
            return;
        }
        match self.sync() {
            Ok(()) => tracing::info!(
                client = %self.client,
                "an unfinished upload's data was made durable for its next run"
            ),
            Err(e) => tracing::warn!(
                client = %self.client,
                "an unfinished upload's data could not be kept: {e:#}"
            ),
        }
        self.upload = None;
    }

    /// Handles one request; returns the reply, if it has one.
    ///
    /// # Errors
    /// A protocol violation or a storage failure: the session should report
    /// it and end.
    pub fn handle(&mut self, message: Message) -> Result<Option<Message>> {
        let progress = matches!(
            message,
            Message::QueryChunks { .. }
                | Message::GetSignatures { .. }
                | Message::GetBaseSignatures { .. }
                | Message::PutChunk { .. }
                | Message::PutDelta { .. }
                | Message::PutChunks { .. }
                | Message::QueryObjects { .. }
                | Message::PutObject { .. }
                | Message::PutObjectPatch { .. }
                | Message::Sync
        );
        let reply = self.dispatch(message)?;
        if let Some(upload) = self.upload.as_mut().filter(|_| progress) {
            upload.progress = std::time::Instant::now();
        }
        Ok(reply)
    }

    fn dispatch(&mut self, message: Message) -> Result<Option<Message>> {
        Ok(match message {
            Message::BackupBegin { set, retention } => {
                check_set_name(&set)?;
                let client = self.client;
                if self.policy.is_some_and(|p| !p.full_backups) {
                    let earlier = self.catalog(|c| c.list_snapshots(Some(client), Some(&set)))?;
                    if earlier.is_empty() {
                        return Ok(Some(Message::Refused {
                            code: Refusal::FullBackupNeedsLan,
                            message: format!(
                                "the first (full) backup of set {set:?} must run over the LAN: this relay lets this client send only incremental backups over the internet"
                            ),
                        }));
                    }
                }
                // A second BackupBegin replaces the open upload (and its permit).
                self.upload = None;
                if !self.repo.accepts_backups() {
                    return Ok(Some(Message::Refused {
                        code: Refusal::DiskFull,
                        message: "no space left on the relay's disk: it serves restores, and accepts backups again once its operator frees space".into(),
                    }));
                }
                let set_id = self.catalog(|c| c.ensure_set(client, &set))?;
                let set_id = set_id.ok_or_else(|| {
                    violation!(
                        "a backup set {set:?} would be this client's {}th; the limit is {}",
                        crate::catalog::MAX_SETS + 1,
                        crate::catalog::MAX_SETS
                    )
                })?;
                let Some(permit) = self.repo.enter_upload(client, set_id, &self.life) else {
                    return Ok(Some(Message::Refused {
                        code: Refusal::SetBusy,
                        message: format!(
                            "set {set:?} is being backed up by another session of this client; try again when it ends"
                        ),
                    }));
                };
                let mut upload = Upload::begin(&self.repo, permit, set_id, retention);
                // Summed only for a client that has a quota.
                if let Some(limit) = self.quota()? {
                    let appends = Arc::clone(upload.permit.client_appends());
                    let quota = upload::QuotaUse::start(limit, appends, || self.stored())?;
                    if quota.in_use() >= limit {
                        return Ok(Some(Message::Refused {
                            code: Refusal::QuotaExceeded,
                            message: format!(
                                "this client uses {} of its quota of {} (what it stores, and what backups that did not finish left until the next collection): nothing more fits; forget snapshots on the relay (`ferry-relay snapshots forget`) and let it collect, or ask its operator for a larger quota (`ferry-relay clients quota`)",
                                format_size(quota.in_use()),
                                format_size(limit)
                            ),
                        }));
                    }
                    upload.quota = Some(quota);
                }
                self.upload = Some(upload);
                Some(Message::BackupReady {
                    max_file: self.policy.and_then(|p| p.max_file),
                })
            }
            Message::QueryChunks { ids } => {
                check_batch(ids.len())?;
                let ids: Vec<[u8; 32]> = ids.iter().map(|id| id.0).collect();
                let mut missing = vec![0u8; ids.len().div_ceil(8)];
                for (i, found) in self.reuse(BlobKind::Chunk, &ids)?.into_iter().enumerate() {
                    if !found {
                        set_missing(&mut missing, i);
                    }
                }
                Some(Message::ChunksMissing { missing })
            }
            Message::GetSignatures { ids } => {
                check!(
                    ids.len() <= MAX_SIGNATURES,
                    "{} signatures asked for at once; the limit is {MAX_SIGNATURES}",
                    ids.len()
                );
                let distinct: std::collections::HashSet<&ChunkId> = ids.iter().collect();
                check!(
                    distinct.len() == ids.len(),
                    "the same chunk's signature asked for twice in one request"
                );
                let signatures = ids
                    .iter()
                    .map(|id| {
                        // Computed when asked, from the stored chunk: most
                        // chunks are never a delta base, so ingest skips it.
                        let chunk = self.load(BlobKind::Chunk, &id.0)?;
                        Ok(chunk.map(|raw| serde_bytes::ByteBuf::from(delta::signature(&raw))))
                    })
                    .collect::<Result<_>>()?;
                Some(Message::Signatures { signatures })
            }
            Message::GetBaseSignatures { bases } => {
                let chunks: usize = bases.iter().map(Vec::len).sum();
                check!(
                    chunks <= MAX_SIGNATURES,
                    "{chunks} chunks' signatures asked for at once; the limit is {MAX_SIGNATURES}"
                );
                check!(
                    bases
                        .iter()
                        .all(|b| (1..=delta::MAX_BASE_CHUNKS).contains(&b.len())),
                    "a base of no chunk or more than {}",
                    delta::MAX_BASE_CHUNKS
                );
                let signatures = bases
                    .iter()
                    .map(|base| {
                        let joined = self.joined_base(base)?;
                        Ok(joined.map(|raw| serde_bytes::ByteBuf::from(delta::signature(&raw))))
                    })
                    .collect::<Result<_>>()?;
                Some(Message::Signatures { signatures })
            }
            Message::PutChunk { id, codec, data } => {
                let raw = decompress_slice(codec, &data, MAX_CHUNK as usize)?;
                check!(
                    ChunkId::of(&raw) == id,
                    "chunk {} does not match its id",
                    id.short()
                );
                // Stored as it came (lz4 or zstd): no second compression.
                self.store_chunk(id, &raw, Some((codec, data)))?;
                None
            }
            Message::PutDelta {
                id,
                base,
                codec,
                delta: bytes,
            } => {
                let delta = decompress(codec, bytes, delta::MAX_DELTA)?;
                self.put_delta(id, &[base], &delta)?;
                None
            }
            Message::PutChunks { codec, data } => {
                let raw = decompress(codec, data, MAX_MESSAGE)?;
                for put in ChunkBatch::decode(&raw)?.0 {
                    match put {
                        ChunkPut::Whole(data) => {
                            check!(
                                data.len() <= MAX_CHUNK as usize,
                                "a chunk of {} bytes exceeds the largest chunk",
                                data.len()
                            );
                            self.store_chunk(ChunkId::of(&data), &data, None)?;
                        }
                        ChunkPut::Packed { codec, data } => {
                            let raw = decompress_slice(codec, &data, MAX_CHUNK as usize)?;
                            self.store_chunk(ChunkId::of(&raw), &raw, Some((codec, data)))?;
                        }
                        ChunkPut::Delta { id, base, delta } => {
                            check!(
                                delta.len() <= delta::MAX_DELTA,
                                "a delta of {} bytes exceeds the limit",
                                delta.len()
                            );
                            self.put_delta(id, &[base], &delta)?;
                        }
                        ChunkPut::DeltaOver { id, bases, delta } => {
                            check!(
                                delta.len() <= delta::MAX_DELTA,
                                "a delta of {} bytes exceeds the limit",
                                delta.len()
                            );
                            check!(
                                (1..=delta::MAX_BASE_CHUNKS).contains(&bases.len()),
                                "a delta over {} chunks; the limit is {}",
                                bases.len(),
                                delta::MAX_BASE_CHUNKS
                            );
                            self.put_delta(id, &bases, &delta)?;
                        }
                    }
                }
                None
            }
            Message::QueryObjects { ids } => {
                check_batch(ids.len())?;
                let mut missing = Vec::new();
                for kind in [BlobKind::Tree, BlobKind::Content] {
                    let asked: Vec<&ObjectId> =
                        ids.iter().filter(|id| object_key(id).0 == kind).collect();
                    let keys: Vec<[u8; 32]> = asked.iter().map(|id| object_key(id).1).collect();
                    let found = self.reuse(kind, &keys)?;
                    missing.extend(
                        asked
                            .into_iter()
                            .zip(found)
                            .filter(|(_, f)| !f)
                            .map(|(id, _)| *id),
                    );
                }
                // In the order asked.
                let order: std::collections::HashMap<ObjectId, usize> =
                    ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
                missing.sort_by_key(|id| order[id]);
                Some(Message::ObjectsMissing { ids: missing })
            }
            Message::PutObject { id, codec, data } => {
                let raw = decompress_slice(codec, &data, MAX_MESSAGE)?;
                self.put_object(id, &raw, codec, data)?;
                None
            }
            Message::PutObjectPatch { id, base, patch } => {
                self.put_object_patch(id, base, &patch)?;
                None
            }
            Message::Sync => {
                self.sync()?;
                let rejected = std::mem::take(&mut self.upload()?.rejected);
                Some(Message::Synced { rejected })
            }
            Message::Commit {
                root,
                files,
                bytes,
                started_ms,
            } => Some(self.commit(root, files, bytes, started_ms)?),
            Message::ListSnapshots { set } => {
                let client = self.client;
                let rows = self.catalog(move |c| c.list_snapshots(Some(client), set.as_deref()))?;
                let snapshots = rows
                    .into_iter()
                    .map(|r| SnapshotInfo {
                        id: r.id.0,
                        set: r.set,
                        root: TreeId(r.root_id),
                        started_ms: r.started_ms,
                        finished_ms: r.finished_ms,
                        files: r.files,
                        bytes: r.bytes,
                    })
                    .collect();
                Some(Message::SnapshotList { snapshots })
            }
            Message::GetObject { id } => Some(self.get_object(&id)?),
            Message::GetChunk { id, base_signature } => Some(self.get_chunk(&id, base_signature)?),
            Message::Fetch { items, codec } => Some(self.fetch_batch(items, codec)?),
            Message::GetKeptBy { set } => {
                let (client, defaults) = (self.client, self.retention_defaults);
                let decisions = self.catalog(|c| {
                    c.retention_decisions(
                        Some(client),
                        None,
                        &defaults,
                        crate::catalog::retention_now_ms(),
                    )
                })?;
                let snapshots = decisions
                    .into_iter()
                    .filter(|d| set.as_ref().is_none_or(|s| *s == d.set))
                    .flat_map(|d| d.decision.into_iter())
                    .map(|(id, why)| (id, why.iter().map(|k| k.name().to_string()).collect()))
                    .collect();
                Some(Message::KeptBy { snapshots })
            }
            Message::GetUsage => Some(Message::Usage {
                stored: self.stored()?,
                quota: self.quota()?,
                warn_percent: self.quotas.warn_percent,
            }),
            Message::GetDamage => {
                let client = self.client;
                let (damaged, healed) = self.catalog(|c| c.client_damage(client))?;
                Some(Message::Damage { damaged, healed })
            }
            other => return Err(violation!("unexpected message {}", other.name())),
        })
    }

    fn catalog<T>(
        &self,
        f: impl FnOnce(&mut crate::catalog::Catalog) -> crate::catalog::Result<T>,
    ) -> Result<T> {
        Ok(self.repo.catalog(f)?)
    }

    /// The blob's row: pending or staged in this upload, or committed.
    fn find(&self, kind: BlobKind, id: &[u8; 32]) -> Result<Option<BlobRow>> {
        if let Some(row) = self.sent_now(kind, id)? {
            return Ok(Some(row));
        }
        let client = self.client;
        self.catalog(|c| c.find_blob(client, kind, id))
    }

    /// The row of a blob this upload sent and the catalog does not index
    /// yet: pending (unsynced, or a content held for its chunks), or a
    /// tree staged for the commit.
    fn sent_now(&self, kind: BlobKind, id: &[u8; 32]) -> Result<Option<BlobRow>> {
        let Some(upload) = &self.upload else {
            return Ok(None);
        };
        if let Some(row) = upload.pending.get(&(kind, *id)) {
            return Ok(Some(*row));
        }
        if kind != BlobKind::Tree || !upload.staged {
            return Ok(None);
        }
        let upload_id = upload.id;
        self.catalog(|c| c.staged_tree(upload_id, id))
    }

    /// Whether `tree` was sent by this upload (so the commit checks it).
    fn is_new_tree(&self, tree: &TreeId) -> Result<bool> {
        Ok(self.sent_now(BlobKind::Tree, &tree.0)?.is_some())
    }

    /// Whether the client holds the blob whole, as uploads need it: a
    /// damaged or incomplete one counts as missing, so it is sent again.
    fn has(&self, kind: BlobKind, id: &[u8; 32]) -> Result<bool> {
        if self.sent_now(kind, id)?.is_some() {
            return Ok(true);
        }
        let client = self.client;
        let found = self.catalog(|c| c.find_blob_state(client, kind, id))?;
        Ok(found.is_some_and(|(_, state)| state == BlobState::Whole))
    }

    /// Which of the client's blobs `ids` are stored whole (as [`Self::has`]),
    /// for an upload that will name the ones that are: pending in this
    /// upload, or reused from the catalog and so kept by collections
    /// running beside it (`Catalog::reuse`).
    fn reuse(&mut self, kind: BlobKind, ids: &[[u8; 32]]) -> Result<Vec<bool>> {
        let Some(since) = self.upload.as_ref().map(Upload::since_ms) else {
            return ids.iter().map(|id| self.has(kind, id)).collect();
        };
        let mut found: Vec<bool> = ids
            .iter()
            .map(|id| Ok(self.sent_now(kind, id)?.is_some()))
            .collect::<Result<_>>()?;
        let lookups: Vec<[u8; 32]> = ids
            .iter()
            .zip(&found)
            .filter(|(_, pending)| !**pending)
            .map(|(id, _)| *id)
            .collect();
        if lookups.is_empty() {
            return Ok(found);
        }
        let client = self.client;
        let stored = self.catalog(|c| c.reuse(client, kind, &lookups, since, now_ms()))?;
        let mut stored = stored.into_iter();
        for f in found.iter_mut().filter(|f| !**f) {
            *f = stored.next().unwrap_or(false);
        }
        Ok(found)
    }

    /// [`Self::reuse`] of one blob.
    fn reuse_one(&mut self, kind: BlobKind, id: &[u8; 32]) -> Result<bool> {
        Ok(self.reuse(kind, std::slice::from_ref(id))?[0])
    }

    /// The blob's row and stored bytes. The lookup and the read happen
    /// under `pack_files`, so a collection cannot delete the pack between them.
    fn fetch(&self, kind: BlobKind, id: &[u8; 32]) -> Result<Option<(BlobRow, Vec<u8>)>> {
        let reading = self.repo.blobs().reading();
        let Some(row) = self.find(kind, id)? else {
            return Ok(None);
        };
        Ok(Some((row, reading.read(&row.at)?)))
    }

    /// The blob's bytes, decompressed.
    fn load(&self, kind: BlobKind, id: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let Some((row, stored)) = self.fetch(kind, id)? else {
            return Ok(None);
        };
        let limit = if kind == BlobKind::Chunk {
            MAX_CHUNK as usize
        } else {
            MAX_MESSAGE
        };
        decompress(row.codec, stored, limit).map(Some).map_err(|e| {
            TransferError::Damaged(format!("{kind:?} {}: {e}", crate::catalog::hex(&id[..8])))
        })
    }
}

fn check_batch(len: usize) -> Result<()> {
    check!(
        len <= MAX_BATCH,
        "batch of {len} ids exceeds the limit of {MAX_BATCH}"
    );
    Ok(())
}

fn check_set_name(set: &str) -> Result<()> {
    check!(
        !set.is_empty() && set.len() <= 64 && !set.chars().any(|c| c.is_control() || c == '/'),
        "invalid backup set name {set:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests;
