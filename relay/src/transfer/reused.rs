//! Blobs an upload sends that the client has stored already (a second set
//! over the same files, a lost files cache, a reinstalled laptop): each is
//! held, bytes and all, and stamped as reused with the others in one
//! catalog transaction (`Catalog::reuse`: one fsync) when enough are held
//! and at every sync, instead of one write transaction per blob. A blob a
//! collection removed in between is appended from the bytes held, so
//! nothing the upload sent is lost.
//!
//! Trees and contents the upload was not told are missing (the endpoint
//! sends them without asking) are held the same way before anyone looks
//! them up: the stamp asks for all of them at once, and appends those the
//! client lacks. One lookup per batch, not per object, which is what a
//! catalog across the network (PostgreSQL) needs. A held object is not
//! yet in the upload's rows, so whatever may read one (every request but
//! those that only send or ask about chunks, see [`reads_held`]) stamps
//! them first.

use ferry_protocol::compress::Codec;
use ferry_protocol::message::Message;

use super::{Result, Transfer};
use crate::catalog::{BlobKey, BlobKind};

/// Blobs held at most before they are stamped.
const HELD_BLOBS: usize = 1024;

/// Bytes held at most before the same (per upload: a relay serving many
/// sessions holds this for each).
const HELD_BYTES: usize = 1 << 20;

/// Blobs an upload remembers it was told are missing, at most: past
/// this (an endpoint that asks far ahead of what it sends, or asks and
/// never sends), an arriving blob is looked up as it comes.
const TOLD_MISSING: usize = 8192;

/// The blobs an upload was told are missing and has not sent yet. An
/// answer is a moment old when the blob arrives: if another session of
/// the client stored it in between, this one is appended again and its
/// bytes are garbage for the next collection (its row keeps the first).
#[derive(Debug, Default)]
pub(super) struct ToldMissing(std::collections::HashSet<crate::catalog::BlobKey>);

impl ToldMissing {
    /// Remembers that `key` was told missing (while there is room).
    pub(super) fn told(&mut self, key: crate::catalog::BlobKey) {
        if self.0.len() < TOLD_MISSING {
            self.0.insert(key);
        }
    }

    /// Whether `key` was told missing; forgets it (it arrived).
    fn arrived(&mut self, key: &crate::catalog::BlobKey) -> bool {
        self.0.remove(key)
    }
}

/// One blob sent again, as it came.
#[derive(Debug)]
struct HeldBlob {
    kind: BlobKind,
    id: [u8; 32],
    codec: Codec,
    bytes: Vec<u8>,
    copies: u8,
}

/// The blobs an upload holds until they are stamped.
#[derive(Debug, Default)]
pub(super) struct HeldReuse {
    blobs: Vec<HeldBlob>,
    bytes: usize,
}

impl HeldReuse {
    /// Holds a blob; whether enough are held to stamp them now.
    fn hold(&mut self, blob: HeldBlob) -> bool {
        self.bytes += blob.bytes.len();
        self.blobs.push(blob);
        self.blobs.len() >= HELD_BLOBS || self.bytes >= HELD_BYTES
    }

    /// Whether `key` is among the held blobs.
    pub(super) fn holds(&self, key: &BlobKey) -> bool {
        self.blobs
            .iter()
            .any(|b| b.kind == key.kind && b.id == key.id)
    }
}

/// Whether handling `message` may read, or answer about, a tree or content
/// an upload holds unstamped or as a patch (so they are settled before
/// it). Only the requests that send objects or chunks, or ask about
/// chunks, cannot (a held patch whose base is held settles them itself).
pub(super) fn reads_held(message: &Message) -> bool {
    !matches!(
        message,
        Message::PutChunk { .. }
            | Message::PutDelta { .. }
            | Message::PutChunks { .. }
            | Message::PutObject { .. }
            | Message::PutObjectPatch { .. }
            | Message::QueryChunks { .. }
            | Message::GetSignatures { .. }
            | Message::GetBaseSignatures { .. }
    )
}

impl Transfer {
    /// Stores a blob the upload sent, as `copies` copies encoded by
    /// `codec`: appended unless the client has it whole already, in which
    /// case it is held to be stamped as reused with others.
    pub(super) fn store_unless_stored(
        &mut self,
        kind: BlobKind,
        id: [u8; 32],
        codec: Codec,
        bytes: Vec<u8>,
        copies: u8,
    ) -> Result<()> {
        if self.sent_now(kind, &id)?.is_some() {
            return Ok(());
        }
        // A tree or content is looked up with the others held, at the stamp.
        let missing = if matches!(kind, BlobKind::Tree | BlobKind::Content) {
            self.upload()?.told_missing.arrived(&BlobKey { kind, id })
        } else {
            !self.stored_already(kind, &id)?
        };
        if missing {
            return self.append_sent(kind, id, codec, bytes, copies);
        }
        self.hold_reused(kind, id, codec, bytes, copies)
    }

    /// Applies the held patches and stamps the held blobs before `message`
    /// when it may read one of them.
    pub(super) fn stamp_before(&mut self, message: &Message) -> Result<()> {
        if self.upload.is_none() || !reads_held(message) {
            return Ok(());
        }
        self.settle_held()
    }

    /// Applies the held patches (`patches`), then stamps the held blobs.
    pub(super) fn settle_held(&mut self) -> Result<()> {
        self.apply_patches()?;
        if self
            .upload
            .as_ref()
            .is_some_and(|u| !u.reused.blobs.is_empty())
        {
            self.stamp_reused()?;
        }
        Ok(())
    }

    /// Holds a blob the client has stored to be stamped as reused with
    /// others (appended then only if a collection removed it meanwhile).
    pub(super) fn hold_reused(
        &mut self,
        kind: BlobKind,
        id: [u8; 32],
        codec: Codec,
        bytes: Vec<u8>,
        copies: u8,
    ) -> Result<()> {
        let blob = HeldBlob {
            kind,
            id,
            codec,
            bytes,
            copies,
        };
        if self.upload()?.reused.hold(blob) {
            self.stamp_reused()?;
        }
        Ok(())
    }

    /// Whether the client has an arriving blob stored whole: not when this
    /// upload was just told it is missing (no lookup then), else as
    /// [`Transfer::has`] finds.
    pub(super) fn stored_already(&mut self, kind: BlobKind, id: &[u8; 32]) -> Result<bool> {
        let key = BlobKey { kind, id: *id };
        if self.upload()?.told_missing.arrived(&key) {
            return Ok(false);
        }
        self.has(kind, id)
    }

    /// Stamps the held blobs as reused, a transaction per kind; appends
    /// any a collection removed since they were looked up.
    pub(super) fn stamp_reused(&mut self) -> Result<()> {
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        let mut held = std::mem::take(&mut upload.reused).blobs;
        for kind in [
            BlobKind::Chunk,
            BlobKind::Tree,
            BlobKind::Content,
            BlobKind::Sealed,
        ] {
            let of_kind: Vec<HeldBlob>;
            (of_kind, held) = held.into_iter().partition(|b| b.kind == kind);
            if of_kind.is_empty() {
                continue;
            }
            let ids: Vec<[u8; 32]> = of_kind.iter().map(|b| b.id).collect();
            let found = self.reuse(kind, &ids)?;
            for (blob, found) in of_kind.into_iter().zip(found) {
                if !found && self.sent_now(kind, &blob.id)?.is_none() {
                    self.append_sent(kind, blob.id, blob.codec, blob.bytes, blob.copies)?;
                }
            }
        }
        Ok(())
    }

    /// Appends a blob the upload sent and the client lacks: a sealed
    /// object with what it names remembered for the sync.
    pub(super) fn append_sent(
        &mut self,
        kind: BlobKind,
        id: [u8; 32],
        codec: Codec,
        bytes: Vec<u8>,
        copies: u8,
    ) -> Result<()> {
        if kind == BlobKind::Sealed {
            self.append_sealed(id, bytes, copies)
        } else {
            self.append_copies(kind, id, codec, bytes, copies)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ToldMissing, TOLD_MISSING};
    use crate::catalog::BlobKey;

    #[test]
    fn what_was_told_missing_is_remembered_once_and_within_a_bound() {
        let key = |n: usize| BlobKey::tree(blake3::hash(&n.to_le_bytes()).into());
        let mut told = ToldMissing::default();
        for n in 0..TOLD_MISSING + 100 {
            told.told(key(n));
        }
        assert!(told.arrived(&key(0)));
        assert!(!told.arrived(&key(0)), "forgotten once it arrived");
        assert!(
            !told.arrived(&key(TOLD_MISSING + 50)),
            "past the bound nothing more is remembered (a lookup decides)"
        );
    }
}
