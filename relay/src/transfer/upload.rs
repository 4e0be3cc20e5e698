//! The upload rules: blobs are checked and appended as they come, indexed
//! at `Sync` once durable, and a snapshot committed once its closure holds.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ferry_protocol::compress::{compress, Codec};
use ferry_protocol::delta;
use ferry_protocol::ids::ChunkId;
use ferry_protocol::message::{ObjectId, MAX_PENDING_OBJECTS, MAX_UNSYNCED_CHUNKS};
use ferry_protocol::retention::Retention;
use ferry_protocol::units::format_size;

use super::lookup::object_key;
use super::{check, violation, Result, Transfer, TransferError};
use crate::catalog::{BlobKey, BlobKind, BlobRow, SetId};
use crate::gate::ClientAppends;
use crate::plaintext::OpenObjects;

/// An open backup: blobs written but not yet in the catalog, and its trees
/// staged there until the commit.
#[derive(Debug)]
pub(super) struct Upload {
    /// Tells collections what to keep for this upload until it ends.
    pub(super) permit: crate::gate::UploadPermit,
    /// Names its staged trees (`Catalog::stage_trees`).
    pub(super) id: u64,
    /// Where its staged trees are dropped if it ends without a commit.
    repo: std::sync::Arc<crate::repo::Repo>,
    /// Trees staged and not yet indexed by a commit.
    pub(super) staged: bool,
    /// Those trees' rows (as many as are kept in memory).
    pub(super) staged_trees: super::lookup::StagedTrees,
    pub(super) set_id: SetId,
    pub(super) retention: Retention,
    /// The store's epoch at the first append since the last sync (`None`:
    /// nothing unsynced): a failed fsync since then, of this session or
    /// another, means those blobs may be lost.
    pub(super) unsynced_since: Option<u64>,
    /// Chunks stored since the last sync (their rows wait for it).
    pub(super) unsynced_chunks: usize,
    /// Trees and contents pending (unsynced, or held for their chunks).
    pub(super) pending_objects: usize,
    /// A patch against a missing base was logged already.
    pub(super) told_missing_base: bool,
    /// When the client last sent something for this upload.
    pub(super) progress: std::time::Instant,
    pub(super) pending: HashMap<BlobKey, BlobRow>,
    /// The client's quota and its use, when it has one.
    pub(super) quota: Option<QuotaUse>,
    pub(super) rejected: Vec<ChunkId>,
    /// Bytes appended and not indexed yet (unsynced blobs, staged trees):
    /// if the upload ends without a commit, the client is charged for them
    /// until a collection reclaims them.
    pub(super) unindexed: u64,
    /// Bytes appended in all (new data: how much of the snapshot changed).
    pub(super) appended: u64,
    /// The snapshot's label (`SetLabel`), kept with it at the commit.
    pub(super) label: Option<Vec<u8>>,
    /// Sealed objects appended since the last sync that name others, in
    /// the order they came, with what they name (see `sealed`).
    pub(super) sealed_refs: Vec<([u8; 32], Vec<[u8; 32]>)>,
    /// The refs in `sealed_refs`, in all.
    pub(super) sealed_ref_count: usize,
    /// Blobs sent that the client has stored already, to be stamped as
    /// reused together (see `reused`).
    pub(super) reused: super::reused::HeldReuse,
    /// Blobs this upload was told are missing (a query's answer) and has
    /// not sent yet: one arriving is appended without another lookup.
    pub(super) told_missing: super::reused::ToldMissing,
    /// Patches whose bases are looked up together (see `patches`).
    pub(super) patches: super::patches::HeldPatches,
}

/// Most bytes an upload may hold appended and not indexed (unsynced
/// blobs, held contents, trees staged for the commit): above what an honest
/// endpoint reaches (it syncs every quarter of [`MAX_UNSYNCED_CHUNKS`]
/// chunks, 2 GiB at most), so one upload cannot hold the disk unaccounted.
pub const MAX_UNINDEXED: u64 = 3 << 30;

impl Upload {
    /// A backup of set `set_id` into `repo` that holds `permit` until it ends.
    pub(super) fn begin(
        repo: &std::sync::Arc<crate::repo::Repo>,
        permit: crate::gate::UploadPermit,
        set_id: SetId,
        retention: Retention,
    ) -> Self {
        Upload {
            permit,
            id: repo.next_upload_id(),
            repo: std::sync::Arc::clone(repo),
            staged: false,
            staged_trees: Default::default(),
            label: None,
            pending_objects: 0,
            set_id,
            retention,
            unsynced_since: None,
            unsynced_chunks: 0,
            told_missing_base: false,
            progress: std::time::Instant::now(),
            pending: HashMap::new(),
            rejected: Vec::new(),
            quota: None,
            unindexed: 0,
            appended: 0,
            sealed_refs: Vec::new(),
            sealed_ref_count: 0,
            reused: Default::default(),
            told_missing: Default::default(),
            patches: Default::default(),
        }
    }

    /// Runs `write` (catalog writes that index this upload's blobs) unless
    /// a collection expired the upload (see `crate::gate::UploadFence`).
    pub(super) fn indexing<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        self.permit
            .fence()
            .run(write)
            .unwrap_or_else(|| Err(TransferError::Expired))
    }
}

/// Chunks loaded together at most for several bases (256 KiB each at
/// most): a request's memory stays bounded whatever it names.
pub(super) const LOADED_TOGETHER: usize = 16;

/// The chunks `bases` joined one after another from `loaded`, when all are
/// there and they are at most [`delta::MAX_BASE`] bytes together (one to
/// [`delta::MAX_BASE_CHUNKS`] of them).
pub(super) fn joined(bases: &[ChunkId], loaded: &HashMap<[u8; 32], Vec<u8>>) -> Option<Vec<u8>> {
    if bases.is_empty() || bases.len() > delta::MAX_BASE_CHUNKS {
        return None;
    }
    let mut joined = Vec::new();
    for base in bases {
        let raw = loaded.get(&base.0)?;
        if joined.len() + raw.len() > delta::MAX_BASE {
            return None;
        }
        joined.extend_from_slice(raw);
    }
    Some(joined)
}

/// A client's quota as one upload uses it.
#[derive(Debug)]
pub(super) struct QuotaUse {
    /// The quota, in bytes.
    pub(super) limit: u64,
    /// What the client stored when the upload began.
    pub(super) stored: u64,
    /// The client's appends, shared by its uploads (`crate::gate`).
    pub(super) appends: Arc<ClientAppends>,
    /// `appends.retired` when this upload began, read before `stored`.
    pub(super) retired_at_start: u64,
    /// Bytes this upload appended (held in `appends.open` until it ends).
    pub(super) mine: u64,
}

impl QuotaUse {
    /// Starts counting for an upload: `stored` is read after the retired
    /// bytes, so an upload ending in between counts twice, never not at all.
    pub(super) fn start(
        limit: u64,
        appends: Arc<ClientAppends>,
        stored: impl FnOnce() -> Result<u64>,
    ) -> Result<Self> {
        let retired_at_start = appends.retired.load(Ordering::Acquire);
        Ok(QuotaUse {
            limit,
            stored: stored()?,
            appends,
            retired_at_start,
            mine: 0,
        })
    }

    fn in_use_with(&self, open: u64) -> u64 {
        let retired = self
            .appends
            .retired
            .load(Ordering::Acquire)
            .saturating_sub(self.retired_at_start);
        self.stored.saturating_add(retired).saturating_add(open)
    }

    /// What the client uses now, as far as this upload can tell.
    pub(super) fn in_use(&self) -> u64 {
        self.in_use_with(self.appends.open.load(Ordering::Acquire))
    }

    /// Reserves `bytes` for an append; `Err` with what is in use when they
    /// would pass the quota (then nothing is reserved). The reservation is
    /// one atomic step, so two uploads appending at once cannot both slip
    /// under the quota.
    pub(super) fn reserve(&mut self, bytes: u64) -> std::result::Result<(), u64> {
        let open = self.appends.open.fetch_add(bytes, Ordering::AcqRel);
        let in_use = self.in_use_with(open);
        if in_use.saturating_add(bytes) > self.limit {
            self.appends.open.fetch_sub(bytes, Ordering::AcqRel);
            return Err(in_use);
        }
        self.mine += bytes;
        Ok(())
    }
}

impl Drop for QuotaUse {
    /// The upload ended (committed or not): what it appended is now stored
    /// (or garbage until a collection), no longer held open.
    fn drop(&mut self) {
        self.appends.retired.fetch_add(self.mine, Ordering::AcqRel);
        self.appends.open.fetch_sub(self.mine, Ordering::AcqRel);
    }
}

impl Drop for Upload {
    /// An upload that ends without a commit leaves no staged tree behind,
    /// and its client is charged for what it appended and never indexed.
    fn drop(&mut self) {
        if self.unindexed > 0 {
            let (client, bytes) = (self.permit.client(), self.unindexed);
            let charged = self
                .repo
                .catalog(|c| c.charge_unindexed(client, bytes, crate::clock::now_ms()));
            match charged {
                Ok(()) => tracing::info!(
                    "client {client}: an upload ended with {} appended and never indexed; charged to its quota until the next collection",
                    format_size(bytes)
                ),
                Err(e) => tracing::warn!("cannot charge client {client} for an ended upload: {e:#}"),
            }
        }
        if self.staged {
            let id = self.id;
            if let Err(e) = self.repo.catalog(|c| c.drop_staged_trees(id)) {
                tracing::warn!("cannot drop the staged trees of an abandoned upload: {e:#}");
            }
        }
    }
}

impl Upload {
    /// The catalog time this upload began: what it reuses is stamped no
    /// older, so collections keep it.
    pub(super) fn since_ms(&self) -> i64 {
        self.permit.opened().since_ms
    }
}

impl Transfer {
    /// Checks a tree or content (the relay trusts no object it has not
    /// decoded) and stores it as `data`, which is `raw` compressed by `codec`.
    pub(super) fn put_object(
        &mut self,
        id: ObjectId,
        raw: &[u8],
        codec: Codec,
        data: Vec<u8>,
    ) -> Result<()> {
        let key = object_key(&id);
        let file_len = OpenObjects::check(key, raw)?;
        if let Some((len, max)) = file_len.zip(self.policy.and_then(|p| p.max_file)) {
            check!(
                len <= max,
                "a file of {len} bytes exceeds this client's limit of {max} bytes for single files over the internet"
            );
        }
        self.store_blob(key.kind, key.id, codec, data)
    }

    pub(super) fn upload(&mut self) -> Result<&mut Upload> {
        self.upload
            .as_mut()
            .ok_or_else(|| violation!("upload message outside a backup (no BackupBegin)"))
    }

    /// Appends a blob, already encoded as `codec` says, to the open upload,
    /// unless the client has it stored already.
    pub(super) fn store_blob(
        &mut self,
        kind: BlobKind,
        id: [u8; 32],
        codec: Codec,
        bytes: Vec<u8>,
    ) -> Result<()> {
        self.store_unless_stored(kind, id, codec, bytes, BlobRow::copies_of(kind))
    }

    /// Appends `copies` copies of a blob the client does not have stored.
    pub(super) fn append_copies(
        &mut self,
        kind: BlobKind,
        id: [u8; 32],
        codec: Codec,
        bytes: Vec<u8>,
        copies: u8,
    ) -> Result<()> {
        // Outside a backup nothing is appended: it could never be indexed.
        let upload = self.upload()?;
        if kind == BlobKind::Chunk {
            check!(
                upload.unsynced_chunks < MAX_UNSYNCED_CHUNKS,
                "more than {MAX_UNSYNCED_CHUNKS} chunks sent without a Sync"
            );
        } else {
            check!(
                upload.pending_objects < MAX_PENDING_OBJECTS,
                "more than {MAX_PENDING_OBJECTS} trees and contents sent without a Sync (or held for chunks never sent)"
            );
        }
        if upload.permit.fence().is_expired() {
            return Err(TransferError::Expired);
        }
        // What it takes on disk, every copy counted.
        let stored = bytes.len() as u64 * u64::from(copies);
        check!(
            upload.unindexed + stored <= MAX_UNINDEXED,
            "more than {} appended and not indexed (sent without a Sync, or held for a commit)",
            format_size(MAX_UNINDEXED)
        );
        if let Some(quota) = &mut upload.quota {
            if let Err(in_use) = quota.reserve(stored) {
                let message = format!(
                    "this backup would pass the client's quota of {}: {} is stored, and {} more did not fit; nothing of this backup was kept (what was stored before is untouched)",
                    format_size(quota.limit),
                    format_size(in_use),
                    format_size(bytes.len() as u64)
                );
                // Dropped, not made durable for a resume: it would not fit.
                self.upload = None;
                return Err(TransferError::Quota(message));
            }
        }
        // Trees and contents twice, one copy right after the other.
        let label = crate::store::BlobLabel {
            client: self.client.0,
            kind: kind as u8,
            codec: codec.code(),
            copies,
            id,
        };
        let (span, epoch) = if copies > 1 {
            self.repo
                .blobs()
                .append(&bytes.repeat(usize::from(copies)), &label)?
        } else {
            self.repo.blobs().append(&bytes, &label)?
        };
        let at = crate::store::BlobLocation {
            len: span.len / u32::from(copies),
            ..span
        };
        let row = BlobRow {
            kind,
            id,
            at,
            codec,
            copies,
        };
        let upload = self.upload()?;
        upload.unindexed += stored;
        upload.appended += bytes.len() as u64;
        upload.permit.note_appended(bytes.len() as u64);
        upload.unsynced_since.get_or_insert(epoch);
        upload.unsynced_chunks += usize::from(kind == BlobKind::Chunk);
        upload.pending_objects += usize::from(kind != BlobKind::Chunk);
        upload.pending.insert(BlobKey { kind, id }, row);
        Ok(())
    }

    /// Rebuilds chunk `id` from `delta` against `base` and stores it, or
    /// records it as rejected (the sender resends it whole).
    pub(super) fn put_delta(&mut self, id: ChunkId, bases: &[ChunkId], delta: &[u8]) -> Result<()> {
        self.put_delta_over(id, bases, delta, &HashMap::new())
    }

    /// [`Transfer::put_delta`], its bases taken from `loaded` when all are
    /// there (a batch's, loaded together), else looked up.
    pub(super) fn put_delta_over(
        &mut self,
        id: ChunkId,
        bases: &[ChunkId],
        delta: &[u8],
        loaded: &HashMap<[u8; 32], Vec<u8>>,
    ) -> Result<()> {
        let base = match joined(bases, loaded) {
            Some(base) => Some(base),
            None => self.joined_base(bases)?,
        };
        let rebuilt = match base {
            Some(base) => OpenObjects::rebuilt(&base, delta, &id),
            None => None,
        };
        match rebuilt {
            Some(raw) => self.store_chunk(id, &raw, None),
            None => {
                let upload = self.upload()?;
                check!(
                    upload.unsynced_chunks < MAX_UNSYNCED_CHUNKS,
                    "more than {MAX_UNSYNCED_CHUNKS} chunks sent without a Sync"
                );
                upload.unsynced_chunks += 1;
                upload.rejected.push(id);
                Ok(())
            }
        }
    }

    /// The chunks `bases` joined one after another, when this client has
    /// them all and they are at most [`delta::MAX_BASE`] bytes together
    /// (one to [`delta::MAX_BASE_CHUNKS`] of them).
    pub(super) fn joined_base(&self, bases: &[ChunkId]) -> Result<Option<Vec<u8>>> {
        if bases.is_empty() || bases.len() > delta::MAX_BASE_CHUNKS {
            return Ok(None);
        }
        let ids: Vec<[u8; 32]> = bases.iter().map(|b| b.0).collect();
        Ok(joined(bases, &self.load_among(BlobKind::Chunk, &ids)?))
    }

    /// Stores a verified chunk: as it came (`encoded`: the sender already
    /// chose and tried compression), else lz4'd here.
    pub(super) fn store_chunk(
        &mut self,
        id: ChunkId,
        raw: &[u8],
        encoded: Option<(Codec, Vec<u8>)>,
    ) -> Result<()> {
        if self.sent_now(BlobKind::Chunk, &id.0)?.is_some() {
            return Ok(());
        }
        let copies = BlobRow::copies_of(BlobKind::Chunk);
        if self.stored_already(BlobKind::Chunk, &id.0)? {
            // Held to be stamped, not compressed: appended as it came only
            // if a collection removed it meanwhile.
            let (codec, bytes) = encoded.unwrap_or_else(|| (Codec::None, raw.to_vec()));
            return self.hold_reused(BlobKind::Chunk, id.0, codec, bytes, copies);
        }
        let (codec, bytes) = encoded.unwrap_or_else(|| compress(raw));
        self.append_sent(BlobKind::Chunk, id.0, codec, bytes, copies)
    }
}
