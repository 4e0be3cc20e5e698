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

mod begin;
mod closure;
mod commit;
mod ingest;
mod lookup;
mod patches;
mod query;
mod reused;
mod sealed;
mod serve;
mod upload;

use crate::catalog::ClientId;
use std::sync::Arc;

use ferry_protocol::chunking::MAX_CHUNK;
use ferry_protocol::compress::{compress, decompress_slice};
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::message::{Message, Refusal};
use ferry_protocol::ProtocolError;

use crate::catalog::{BlobKey, BlobKind, CatalogError};
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
    /// The line the endpoint is told: the error, but for the object
    /// store's, whose details (addresses, names in the bucket) are the
    /// operator's, and are in the relay's log.
    pub fn told(&self) -> String {
        match self {
            TransferError::Storage(StorageError::Remote { doing, .. }) => format!(
                "the relay's object store failed ({doing}); its operator finds the details in the relay's log"
            ),
            other => other.to_string(),
        }
    }

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
    /// The organisation's recovery recipient (`[sealed]`), given to
    /// endpoints to wrap their vault keys to.
    recovery_recipient: Option<[u8; 32]>,
}

/// What a client may do when its session comes from the internet.
#[derive(Debug, Clone, Copy)]
pub struct InternetPolicy {
    /// Whether a set's first (full) backup may run now.
    pub full_backups: bool,
    /// The largest single file.
    pub max_file: Option<u64>,
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
            recovery_recipient: None,
        }
    }

    /// Gives endpoints `recipient` to wrap their vault keys to.
    pub fn with_recovery_recipient(mut self, recipient: Option<[u8; 32]>) -> Self {
        self.recovery_recipient = recipient;
        self
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
                | Message::QuerySealed { .. }
                | Message::PutSealed { .. }
                | Message::Sync
        );
        let reply = match self
            .stamp_before(&message)
            .and_then(|()| self.dispatch(message))
        {
            Ok(reply) => reply,
            Err(e @ (TransferError::Storage(_) | TransferError::SyncLost)) => {
                // Ended here, not synced again on the way out: a store
                // that just failed is not asked once more (an object store
                // retries for seconds), and the set is free for the next
                // run at once.
                self.upload = None;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if let Some(upload) = self.upload.as_mut().filter(|_| progress) {
            upload.progress = std::time::Instant::now();
        }
        Ok(reply)
    }

    /// Routes a request to the rule that answers it: the upload's
    /// (`begin`, `ingest`, `upload`), the restore's (`serve`) or the
    /// questions about what the client has (`query`).
    fn dispatch(&mut self, message: Message) -> Result<Option<Message>> {
        let stored = |()| None;
        match message {
            Message::BackupBegin { set, retention } => self.begin(&set, retention).map(Some),
            Message::QueryChunks { ids } => self.query_chunks(&ids).map(Some),
            Message::GetSignatures { ids } => self.signatures(&ids).map(Some),
            Message::GetBaseSignatures { bases } => self.base_signatures(&bases).map(Some),
            Message::PutChunk { id, codec, data } => self.put_chunk(id, codec, data).map(stored),
            Message::PutDelta {
                id,
                base,
                codec,
                delta,
            } => self.put_delta_message(id, base, codec, delta).map(stored),
            Message::PutChunks { codec, data } => self.put_chunks(codec, data).map(stored),
            Message::QueryObjects { ids } => self.query_objects(&ids).map(Some),
            Message::PutObject { id, codec, data } => {
                let raw = decompress_slice(codec, &data, MAX_MESSAGE)?;
                self.put_object(id, &raw, codec, data).map(stored)
            }
            Message::PutObjectPatch { id, base, patch } => {
                self.put_object_patch(id, base, patch).map(stored)
            }
            Message::Sync => {
                self.sync()?;
                let rejected = std::mem::take(&mut self.upload()?.rejected);
                Ok(Some(Message::Synced { rejected }))
            }
            Message::Commit {
                root,
                files,
                bytes,
                started_ms,
            } => self
                .commit(BlobKey::tree(root.0), files, bytes, started_ms)
                .map(Some),
            Message::CommitSealed {
                root,
                files,
                bytes,
                started_ms,
            } => {
                let root = BlobKey {
                    kind: BlobKind::Sealed,
                    id: root.0,
                };
                self.commit(root, files, bytes, started_ms).map(Some)
            }
            Message::QuerySealed { ids } => self.query_sealed(&ids).map(Some),
            Message::PutSealed { objects } => self.put_sealed(objects).map(stored),
            Message::GetSealed { ids } => self.get_sealed(&ids).map(Some),
            Message::GetSealedBelow {
                roots,
                room,
                contents,
            } => self
                .get_sealed_below(&roots, room as usize, contents)
                .map(Some),
            Message::ListSnapshots { set } => self.snapshots(set.as_deref()).map(Some),
            Message::GetObject { id } => self.get_object(&id).map(Some),
            Message::GetChunk { id, base_signature } => {
                self.get_chunk(&id, base_signature).map(Some)
            }
            Message::Fetch { items, codec } => self.fetch_batch(items, codec).map(Some),
            Message::GetKeptBy { set } => self.kept_by(set.as_deref()).map(Some),
            Message::SetLabel { label } => self.set_label(label).map(Some),
            Message::GetLabels { snapshots } => self.labels(&snapshots).map(Some),
            Message::GetUsage => self.usage().map(Some),
            Message::GetDamage => self.damage().map(Some),
            Message::SetKeyWrap { wrapped } => self.set_key_wrap(false, wrapped).map(Some),
            Message::SetRecoveryWrap { wrapped } => self.set_key_wrap(true, wrapped).map(Some),
            Message::GetKeyWrap => self.key_wrap().map(Some),
            other => Err(violation!("unexpected message {}", other.name())),
        }
    }
}

#[cfg(test)]
mod tests;
