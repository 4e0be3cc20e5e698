//! What sealed objects hold once opened: the plaintexts of chunks, patches,
//! signatures and contents (trees are [`crate::tree::Tree`]s and roots
//! [`crate::root::Root`]s, naming storage ids where open mode names
//! plaintext ids).
//!
//! - A **chunk** is a codec byte and the chunk's bytes as that codec packs
//!   them (compressed before sealing: ciphertext does not compress).
//! - A **signature** is the chunk's rsync signature ([`crate::delta`]).
//! - A **patch** rebuilds a chunk from the chunk its one ref names (itself
//!   a chunk or a patch): the rebuilt chunk's keyed id, the chain's depth,
//!   and the rsync delta.
//! - A **content** lists a file's chunks (each its data object, its
//!   signature object, keyed id, length and chain depth) or, for a large
//!   file, its parts (contents of up to [`PART_CHUNKS`] chunks each).
//!
//! Every decoder bounds what it reads before it allocates: these bytes
//! were authenticated, but by a key a stolen laptop also holds.

use serde::{Deserialize, Serialize};

use crate::chunking::MAX_CHUNK;
use crate::compress::{compress_with, decompress_slice, Codec, Method};
use crate::decoding::decode_exact;
use crate::delta::MAX_DELTA;
use crate::sealed::StorageId;
use crate::ProtocolError;

pub use crate::sealed::MAX_SEALED_OBJECT;

/// Most chunks (or parts) one content lists: with their signatures, under
/// [`crate::sealed::MAX_REFS`] refs and well under a message.
pub const PART_CHUNKS: usize = 8192;

/// The longest chain of patches a chunk may be rebuilt through.
pub const MAX_CHAIN: u8 = 8;

/// A chunk's plaintext: packed by `method` when that is smaller.
pub fn encode_chunk(method: Method, data: &[u8]) -> Vec<u8> {
    let (codec, packed) = compress_with(method, data);
    let mut out = Vec::with_capacity(1 + packed.len());
    out.push(codec.code());
    out.extend_from_slice(&packed);
    out
}

/// The chunk a chunk's plaintext holds.
///
/// # Errors
/// An unknown codec, bytes that do not unpack, more than a largest chunk.
pub fn decode_chunk(plain: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let (&code, packed) = plain
        .split_first()
        .ok_or(ProtocolError::Malformed("sealed chunk"))?;
    let codec = Codec::from_code(code).ok_or(ProtocolError::Malformed("sealed chunk codec"))?;
    decompress_slice(codec, packed, MAX_CHUNK as usize)
}

/// A chunk as a delta against its base (the patch's one ref).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patch {
    /// The rebuilt chunk's keyed id (checked after the rebuild).
    pub keyed: [u8; 32],
    /// Patches from here down to a whole chunk: 1 for a patch on a chunk.
    pub depth: u8,
    /// The rsync delta.
    #[serde(with = "serde_bytes")]
    pub delta: Vec<u8>,
}

impl Patch {
    /// The patch's plaintext.
    ///
    /// # Errors
    /// A depth outside 1..=[`MAX_CHAIN`] or a delta over [`MAX_DELTA`].
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        self.check()?;
        postcard::to_allocvec(self).map_err(|_| ProtocolError::Malformed("sealed patch"))
    }

    /// A patch read from its plaintext.
    ///
    /// # Errors
    /// As [`Patch::encode`], and bytes that are not exactly one patch.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let patch: Patch = decode_exact(bytes, "sealed patch")?;
        patch.check()?;
        Ok(patch)
    }

    fn check(&self) -> Result<(), ProtocolError> {
        if !(1..=MAX_CHAIN).contains(&self.depth) {
            return Err(ProtocolError::Malformed("sealed patch chain depth"));
        }
        if self.delta.len() > MAX_DELTA {
            return Err(ProtocolError::TooLarge {
                what: "sealed patch delta",
                len: self.delta.len(),
                max: MAX_DELTA,
            });
        }
        Ok(())
    }
}

/// One chunk of a sealed content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    /// The object holding its data: a chunk, or a patch.
    pub data: StorageId,
    /// Its signature object (what the next version's delta is made against).
    pub signature: StorageId,
    /// Its keyed id: what a rebuilt chunk is checked against.
    pub keyed: [u8; 32],
    /// Its length.
    pub len: u32,
    /// Patches between `data` and a whole chunk (0: `data` is one).
    pub depth: u8,
}

/// A file's data: its chunks, or the parts of a large file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedContent {
    /// The chunks, in order.
    pub chunks: Vec<ChunkEntry>,
    /// Or the parts (content objects) in order, each with its length.
    pub parts: Vec<(StorageId, u64)>,
}

impl SealedContent {
    /// The objects it names: what its header's refs must be.
    pub fn refs(&self) -> Vec<StorageId> {
        let mut refs: Vec<StorageId> = self
            .chunks
            .iter()
            .flat_map(|c| [c.data, c.signature])
            .chain(self.parts.iter().map(|(id, _)| *id))
            .collect();
        refs.sort_unstable();
        refs.dedup();
        refs
    }

    /// The file bytes it holds.
    pub fn len(&self) -> u64 {
        let chunks: u64 = self.chunks.iter().map(|c| u64::from(c.len)).sum();
        let parts: u64 = self.parts.iter().map(|(_, len)| *len).sum();
        chunks.saturating_add(parts)
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The content's plaintext.
    ///
    /// # Errors
    /// As [`SealedContent::decode`] would refuse it.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        self.check()?;
        postcard::to_allocvec(self).map_err(|_| ProtocolError::Malformed("sealed content"))
    }

    /// A content read from its plaintext, whose header named `refs`.
    ///
    /// # Errors
    /// Bytes that are not exactly one content; chunks and parts both, more
    /// than [`PART_CHUNKS`] of either, a chunk over the largest chunk or a
    /// chain past [`MAX_CHAIN`]; refs that are not the ones it names.
    pub fn decode(bytes: &[u8], refs: &[StorageId]) -> Result<Self, ProtocolError> {
        let content: SealedContent = decode_exact(bytes, "sealed content")?;
        content.check()?;
        if content.refs() != refs {
            return Err(ProtocolError::Malformed(
                "a sealed content whose header names other objects than it holds",
            ));
        }
        Ok(content)
    }

    fn check(&self) -> Result<(), ProtocolError> {
        let malformed = |what| Err(ProtocolError::Malformed(what));
        if !self.chunks.is_empty() && !self.parts.is_empty() {
            return malformed("a sealed content with both chunks and parts");
        }
        if self.chunks.len() > PART_CHUNKS || self.parts.len() > PART_CHUNKS {
            return Err(ProtocolError::TooLarge {
                what: "sealed content",
                len: self.chunks.len().max(self.parts.len()),
                max: PART_CHUNKS,
            });
        }
        if self
            .chunks
            .iter()
            .any(|c| c.len > MAX_CHUNK || c.depth > MAX_CHAIN)
        {
            return malformed("a sealed content's chunk");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_patches_and_contents_round_trip() {
        let data = vec![7u8; 100_000];
        let plain = encode_chunk(Method::Lz4, &data);
        assert!(plain.len() < 1000);
        assert_eq!(decode_chunk(&plain).unwrap(), data);
        let patch = Patch {
            keyed: [1; 32],
            depth: 2,
            delta: vec![1, 2, 3],
        };
        assert_eq!(Patch::decode(&patch.encode().unwrap()).unwrap(), patch);
        let entry = ChunkEntry {
            data: StorageId([2; 32]),
            signature: StorageId([3; 32]),
            keyed: [4; 32],
            len: 100,
            depth: 0,
        };
        let content = SealedContent {
            chunks: vec![entry, entry],
            parts: Vec::new(),
        };
        let bytes = content.encode().unwrap();
        assert_eq!(
            SealedContent::decode(&bytes, &content.refs()).unwrap(),
            content
        );
        assert_eq!(content.len(), 200);
    }

    #[test]
    fn lying_or_oversized_objects_do_not_decode() {
        let content = SealedContent {
            chunks: vec![ChunkEntry {
                data: StorageId([2; 32]),
                signature: StorageId([3; 32]),
                keyed: [4; 32],
                len: 100,
                depth: 0,
            }],
            parts: Vec::new(),
        };
        let bytes = content.encode().unwrap();
        assert!(SealedContent::decode(&bytes, &[StorageId([2; 32])]).is_err());
        let deep = Patch {
            keyed: [0; 32],
            depth: MAX_CHAIN + 1,
            delta: Vec::new(),
        };
        assert!(deep.encode().is_err());
        assert!(decode_chunk(&[9, 1, 2]).is_err());
        assert!(decode_chunk(&[]).is_err());
    }
}
