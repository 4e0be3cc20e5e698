//! A sealed client's uploads and fetches: objects the relay names by their
//! hash and links by their clear headers, never opens.
//!
//! An object is appended as it comes (after its header parses and its
//! length is bounded) and indexed at the next `Sync` only when everything
//! its header names is stored: in the catalog already, or accepted earlier
//! in the same sync (the endpoint sends what an object names before it).
//! So a sealed object in the catalog always has what it names, and a
//! commit need only find its root (see `closure`).

use std::collections::{HashSet, VecDeque};

use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::message::{set_missing, Message, StorageId, MAX_BATCH, MAX_UNSYNCED_REFS};
use ferry_protocol::sealed::{Header, SealedKind};
use ferry_protocol::sealed_objects::MAX_SEALED_OBJECT;

use super::{check, violation, Result, Transfer};
use crate::catalog::BlobKind;

/// Room left in a `SealedObjects` reply for its framing.
const REPLY_ROOM: usize = MAX_MESSAGE - 16 * 1024;

/// Ids a `GetSealedBelow` holds waiting to be looked at, at most (2 MiB).
const MAX_BELOW_QUEUE: usize = 1 << 16;

impl Transfer {
    /// Which of `ids` the client lacks (a bit each); those it holds are
    /// stamped as reused, so a collection beside this upload keeps them.
    pub(super) fn query_sealed(&mut self, ids: &[StorageId]) -> Result<Message> {
        check!(
            ids.len() <= MAX_BATCH,
            "batch of {} ids exceeds the limit of {MAX_BATCH}",
            ids.len()
        );
        let keys: Vec<[u8; 32]> = ids.iter().map(|id| id.0).collect();
        let mut missing = vec![0u8; ids.len().div_ceil(8)];
        for (i, found) in self.reuse(BlobKind::Sealed, &keys)?.into_iter().enumerate() {
            if !found {
                set_missing(&mut missing, i);
            }
        }
        Ok(Message::ChunksMissing { missing })
    }

    /// Appends sealed objects: each named by its hash, its header read and
    /// its refs remembered for the sync. Metadata (contents, trees, roots:
    /// objects that name others but are no patch) is kept twice, as open
    /// mode keeps trees and contents.
    pub(super) fn put_sealed(&mut self, objects: Vec<serde_bytes::ByteBuf>) -> Result<()> {
        check!(
            objects.len() <= MAX_BATCH,
            "{} sealed objects in one message; the limit is {MAX_BATCH}",
            objects.len()
        );
        for object in objects {
            let bytes = object.into_vec();
            check!(
                bytes.len() <= MAX_SEALED_OBJECT,
                "a sealed object of {} bytes exceeds the limit of {MAX_SEALED_OBJECT}",
                bytes.len()
            );
            let (header, _) = Header::read(&bytes)?;
            let id = StorageId::of(&bytes).0;
            let copies = sealed_copies(&header);
            self.store_unless_stored(
                BlobKind::Sealed,
                id,
                ferry_protocol::compress::Codec::None,
                bytes,
                copies,
            )?;
        }
        Ok(())
    }

    /// Appends a sealed object the client lacks, remembering what it names
    /// for the sync.
    pub(super) fn append_sealed(&mut self, id: [u8; 32], bytes: Vec<u8>, copies: u8) -> Result<()> {
        let refs: Vec<[u8; 32]> = Header::read(&bytes)?.0.refs.iter().map(|r| r.0).collect();
        self.append_copies(
            BlobKind::Sealed,
            id,
            ferry_protocol::compress::Codec::None,
            bytes,
            copies,
        )?;
        if !refs.is_empty() {
            let upload = self.upload()?;
            upload.sealed_ref_count += refs.len();
            check!(
                upload.sealed_ref_count <= MAX_UNSYNCED_REFS,
                "sealed objects naming more than {MAX_UNSYNCED_REFS} objects sent without a Sync"
            );
            upload.sealed_refs.push((id, refs));
        }
        Ok(())
    }

    /// The sealed objects asked for, in order, as many as fit one reply.
    pub(super) fn get_sealed(&self, ids: &[StorageId]) -> Result<Message> {
        check!(
            ids.len() <= MAX_BATCH,
            "batch of {} ids exceeds the limit of {MAX_BATCH}",
            ids.len()
        );
        let mut objects = Vec::with_capacity(ids.len());
        let mut room = REPLY_ROOM;
        for id in ids {
            let found = self.fetch(BlobKind::Sealed, &id.0)?;
            let len = found.as_ref().map_or(0, |(_, bytes)| bytes.len() + 8);
            if len > room {
                break;
            }
            room -= len + 1;
            objects.push(found.map(|(_, bytes)| serde_bytes::ByteBuf::from(bytes)));
        }
        Ok(Message::SealedObjects { objects })
    }

    /// The roots, trees and (if `contents`) contents at and below `roots`
    /// (not the vault's dictionary: the endpoint that made it keeps it),
    /// breadth-first, each once, as many as fit `room` bytes and one
    /// reply. An object is followed only when its row says it is stored
    /// twice (trees, contents, roots and dictionaries are; chunks, patches
    /// and signatures once), so the walk never reads file data; only
    /// roots, trees and contents are sent, and at most
    /// [`MAX_BELOW_QUEUE`] ids wait to be looked at (past that, what an
    /// object names is not followed: the endpoint asks for it).
    pub(super) fn get_sealed_below(
        &self,
        roots: &[StorageId],
        room: usize,
        contents: bool,
    ) -> Result<Message> {
        check!(
            roots.len() <= MAX_BATCH,
            "batch of {} ids exceeds the limit of {MAX_BATCH}",
            roots.len()
        );
        let mut queue: VecDeque<StorageId> = roots.iter().copied().collect();
        let mut seen: HashSet<StorageId> = queue.iter().copied().collect();
        let mut objects = Vec::new();
        let mut room = room.min(REPLY_ROOM);
        let reading = self.repo.blobs().reading();
        while let Some(id) = queue.pop_front() {
            let Some(row) = self.find(BlobKind::Sealed, &id.0)? else {
                continue;
            };
            if row.copies < 2 {
                continue;
            }
            // Full: the walk ends (what is left is asked for again).
            let need = row.at.len as usize + 48;
            if need > room {
                break;
            }
            let bytes = reading.read(&row.at)?;
            let Ok((header, _)) = Header::read(&bytes) else {
                continue;
            };
            let wanted = match header.kind {
                SealedKind::Root | SealedKind::Tree => true,
                SealedKind::Content => contents,
                _ => false,
            };
            if !wanted {
                continue;
            }
            for r in &header.refs {
                if queue.len() < MAX_BELOW_QUEUE && seen.insert(*r) {
                    queue.push_back(*r);
                }
            }
            room -= need;
            objects.push((id, serde_bytes::ByteBuf::from(bytes)));
        }
        Ok(Message::SealedBelow { objects })
    }

    /// At a sync: the pending sealed objects that name something not
    /// stored, in the order they came (each may name only what is stored
    /// or was accepted before it). These are not indexed; the commit then
    /// finds its root missing and the endpoint sends everything again.
    pub(super) fn sealed_not_whole(&mut self) -> Result<HashSet<[u8; 32]>> {
        let Some(upload) = self.upload.as_mut() else {
            return Ok(HashSet::new());
        };
        let named = std::mem::take(&mut upload.sealed_refs);
        upload.sealed_ref_count = 0;
        let mut refused = HashSet::new();
        for (id, refs) in named {
            let mut whole = true;
            for r in &refs {
                if refused.contains(r) || !self.has(BlobKind::Sealed, r)? {
                    whole = false;
                    break;
                }
            }
            if !whole {
                refused.insert(id);
            }
        }
        if !refused.is_empty() {
            tracing::warn!(
                client = %self.client,
                "{} sealed object(s) named objects the relay does not hold and were dropped (the commit will refuse the snapshot as incomplete)",
                refused.len()
            );
        }
        Ok(refused)
    }
}

/// Copies kept of a sealed object: two of the small objects that name
/// others (contents, trees, roots) and of the vault's dictionary (every
/// chunk packed with it needs it), one of chunks, signatures and patches.
fn sealed_copies(header: &Header) -> u8 {
    use ferry_protocol::sealed::SealedKind;
    match header.kind {
        SealedKind::Content | SealedKind::Tree | SealedKind::Root | SealedKind::Dictionary => 2,
        SealedKind::Chunk | SealedKind::Patch | SealedKind::Signature | SealedKind::Label => 1,
    }
}
