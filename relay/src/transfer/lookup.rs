//! Where a session finds a client's blobs: pending in its open upload,
//! staged for the commit, or committed in the catalog; and their bytes.

use std::collections::HashMap;

use ferry_protocol::chunking::MAX_CHUNK;
use ferry_protocol::compress::decompress;
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::TreeId;
use ferry_protocol::message::ObjectId;

use super::upload::Upload;
use super::{Result, Transfer, TransferError};
use crate::catalog::BlobIndex;
use crate::catalog::{BlobKey, BlobKind, BlobRow, BlobState};
use crate::clock::now_ms;

/// The catalog's key of a tree or content.
pub(super) fn object_key(id: &ObjectId) -> BlobKey {
    match id {
        ObjectId::Tree(t) => BlobKey::tree(t.0),
        ObjectId::Content(c) => BlobKey {
            kind: BlobKind::Content,
            id: c.0,
        },
    }
}

/// Trees an upload staged, kept at most this many in memory (about 100
/// bytes each): past it, the upload asks the catalog about trees.
const STAGED_IN_MEMORY: usize = 1 << 16;

/// The rows of the trees an upload staged for its commit (the catalog's
/// `staged_trees` holds them too, for collections and for an upload that
/// ends): asked about for every tree that arrives and at every step of the
/// commit's walk, answered here without a round trip to the catalog while
/// they fit in memory.
#[derive(Debug, Default)]
pub(super) struct StagedTrees {
    rows: std::collections::HashMap<[u8; 32], BlobRow>,
    /// More were staged than are kept here.
    overflowed: bool,
}

impl StagedTrees {
    /// Remembers trees just staged, while there is room.
    pub(super) fn remember(&mut self, rows: &[BlobRow]) {
        for row in rows {
            if self.rows.len() >= STAGED_IN_MEMORY {
                self.overflowed = true;
                return;
            }
            self.rows.insert(row.id, *row);
        }
    }

    /// Tree `id`'s row if it is staged (`Some(None)`: it is not), or
    /// `None` when only the catalog can tell.
    fn known(&self, id: &[u8; 32]) -> Option<Option<BlobRow>> {
        match self.rows.get(id) {
            Some(row) => Some(Some(*row)),
            None if self.overflowed => None,
            None => Some(None),
        }
    }
}

impl Transfer {
    pub(super) fn catalog<T>(
        &self,
        f: impl FnOnce(&mut crate::catalog::Catalog) -> crate::catalog::Result<T>,
    ) -> Result<T> {
        Ok(self.repo.catalog(f)?)
    }

    /// The blob's row: pending or staged in this upload, or committed.
    pub(super) fn find(&self, kind: BlobKind, id: &[u8; 32]) -> Result<Option<BlobRow>> {
        if let Some(row) = self.sent_now(kind, id)? {
            return Ok(Some(row));
        }
        let client = self.client;
        self.catalog(|c| c.find_blob(client, kind, id))
    }

    /// The row of a blob this upload sent and the catalog does not index
    /// yet: pending (unsynced, or a content held for its chunks), or a
    /// tree staged for the commit.
    pub(super) fn sent_now(&self, kind: BlobKind, id: &[u8; 32]) -> Result<Option<BlobRow>> {
        let Some(upload) = &self.upload else {
            return Ok(None);
        };
        if let Some(row) = upload.pending.get(&BlobKey { kind, id: *id }) {
            return Ok(Some(*row));
        }
        if kind != BlobKind::Tree || !upload.staged {
            return Ok(None);
        }
        if let Some(known) = upload.staged_trees.known(id) {
            return Ok(known);
        }
        let upload_id = upload.id;
        self.catalog(|c| c.staged_tree(upload_id, id))
    }

    /// Whether `tree` was sent by this upload (so the commit checks it).
    pub(super) fn is_new_tree(&self, tree: &TreeId) -> Result<bool> {
        Ok(self.sent_now(BlobKind::Tree, &tree.0)?.is_some())
    }

    /// Whether the client holds the blob whole, as uploads need it: a
    /// damaged or incomplete one counts as missing, so it is sent again.
    pub(super) fn has(&self, kind: BlobKind, id: &[u8; 32]) -> Result<bool> {
        if self.sent_now(kind, id)?.is_some() {
            return Ok(true);
        }
        let client = self.client;
        let found = self.catalog(|c| c.find_blob_state(client, kind, id))?;
        Ok(found.is_some_and(|(_, state)| state == BlobState::Whole))
    }

    /// Which of `ids` the client holds whole, as [`Self::has`] says of
    /// each: sent by this upload, or found in one catalog lookup.
    pub(super) fn whole_among(
        &self,
        kind: BlobKind,
        ids: &[[u8; 32]],
    ) -> Result<std::collections::HashSet<[u8; 32]>> {
        let mut whole = std::collections::HashSet::new();
        let mut ask = Vec::new();
        for id in ids {
            if self.sent_now(kind, id)?.is_some() {
                whole.insert(*id);
            } else {
                ask.push(*id);
            }
        }
        let client = self.client;
        whole.extend(self.catalog(|c| c.whole_among(client, kind, &ask))?);
        Ok(whole)
    }

    /// Which of the client's blobs `ids` are stored whole (as [`Self::has`]),
    /// for an upload that will name the ones that are: pending in this
    /// upload, or reused from the catalog and so kept by collections
    /// running beside it (`Catalog::reuse`).
    pub(super) fn reuse(&mut self, kind: BlobKind, ids: &[[u8; 32]]) -> Result<Vec<bool>> {
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

    /// The blob's row and stored bytes. The lookup and the read happen
    /// under `pack_files`, so a collection cannot delete the pack between them.
    pub(super) fn fetch(
        &self,
        kind: BlobKind,
        id: &[u8; 32],
    ) -> Result<Option<(BlobRow, Vec<u8>)>> {
        let reading = self.repo.blobs().reading();
        let Some(row) = self.find(kind, id)? else {
            return Ok(None);
        };
        Ok(Some((row, reading.read(&row.at)?)))
    }

    /// The blob's bytes, decompressed.
    pub(super) fn load(&self, kind: BlobKind, id: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let Some((row, stored)) = self.fetch(kind, id)? else {
            return Ok(None);
        };
        opened(&row, stored).map(Some)
    }

    /// The bytes of those of `ids` the client has, decompressed: the rows
    /// the catalog holds looked up together, read under one `reading`.
    pub(super) fn load_among(
        &self,
        kind: BlobKind,
        ids: &[[u8; 32]],
    ) -> Result<HashMap<[u8; 32], Vec<u8>>> {
        let reading = self.repo.blobs().reading();
        let mut rows = HashMap::new();
        let mut ask = Vec::new();
        for id in ids {
            match self.sent_now(kind, id)? {
                Some(row) => {
                    rows.insert(*id, row);
                }
                None => ask.push(*id),
            }
        }
        let client = self.client;
        rows.extend(self.catalog(|c| c.find_blobs(client, kind, &ask))?);
        rows.into_iter()
            .map(|(id, row)| Ok((id, opened(&row, reading.read(&row.at)?)?)))
            .collect()
    }
}

/// A blob's stored bytes, decompressed (within the bounds of its kind).
fn opened(row: &BlobRow, stored: Vec<u8>) -> Result<Vec<u8>> {
    let limit = if row.kind == BlobKind::Chunk {
        MAX_CHUNK as usize
    } else {
        MAX_MESSAGE
    };
    decompress(row.codec, stored, limit).map_err(|e| {
        TransferError::Damaged(format!(
            "{:?} {}: {e}",
            row.kind,
            crate::catalog::hex(&row.id[..8])
        ))
    })
}
