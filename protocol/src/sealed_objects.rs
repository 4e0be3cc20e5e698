//! What sealed objects hold once opened: the plaintexts of chunks, patches,
//! signatures and contents (trees are [`crate::tree::Tree`]s and roots
//! [`crate::root::Root`]s, naming storage ids where open mode names
//! plaintext ids).
//!
//! - A **chunk** is a codec byte and the chunk's bytes as that codec packs
//!   them (compressed before sealing: ciphertext does not compress). Its
//!   one ref is its signature, so what keeps the chunk keeps the signature
//!   its next version's patch is made against; a chunk shorter than the
//!   smallest cut has none (the endpoint's files cache alone keeps it).
//! - A **signature** is the chunk's rsync signature ([`crate::delta`]),
//!   or, for a patched chunk, a [`SignaturePatch`] against its base's
//!   signature (its one ref).
//! - A **patch** rebuilds a chunk from its base (a chunk or a patch): the
//!   base, the rebuilt chunk's keyed id, the chain's depth and the rsync
//!   delta, compressed as chunks are (an edit's literals are mostly the
//!   file's own text); its refs are the base and the rebuilt chunk's
//!   signature (the base alone for a chunk without one).
//! - A **tree** is a directory ([`crate::tree::Tree`]) whose children (a
//!   file's content, a subdirectory's tree) are named by their place among
//!   the header's refs rather than again in full, compressed with zstd at a
//!   fixed level (so the same directory seals the same): a changed
//!   directory re-sends its names and metadata, not its ids twice.
//!   A directory of more than [`PART_ENTRIES`] entries is a tree of parts
//!   (trees of runs of its entries, cut where their names' keyed hashes
//!   say), so one changed file re-sends a part and the list of parts.
//! - A **content** lists a file's chunks (each its data object, length and
//!   chain depth) or, for a file of more than [`PART_CHUNKS`] chunks, its
//!   parts (contents themselves, [`MAX_PARTS`] at most per level): a small
//!   Merkle tree, so a changed chunk re-sends a few short lists.
//!
//! Every decoder bounds what it reads before it allocates: these bytes
//! were authenticated, but by a key a stolen laptop also holds.

use serde::{Deserialize, Serialize};

use crate::chunking::{MAX_CHUNK, MIN_CHUNK};
use crate::compress::{compress_with, decompress_slice, Codec, Method, ZSTD_LEVEL};
use crate::decoding::decode_exact;
use crate::delta::MAX_DELTA;
use crate::ids::{ContentId, TreeId};
use crate::sealed::StorageId;
use crate::sealed::MAX_PLAINTEXT;
use crate::sealed_dictionary::{pack, unpack, Dictionary};
use crate::tree::{EntryKind, Tree};
use crate::ProtocolError;

pub use crate::sealed::MAX_SEALED_OBJECT;

/// Most chunks a file may have and still be one content: a changed chunk
/// re-sends the content that lists it (about 40 bytes per chunk, and its
/// id in the header), so files of more chunks are contents of parts.
pub const PART_CHUNKS: usize = 8;

/// Most entries (chunks or parts) one content lists. Parts are cut where
/// an entry's storage id says so ([`group_ends`]), not every so many
/// entries, so a chunk added or removed changes the parts around it, not
/// every part after it.
pub const MAX_PARTS: usize = 32;

/// Fewest entries a part is cut after (the last part of a list may hold
/// fewer): each level of parts is at most a quarter of the one below.
pub const MIN_PARTS: usize = 4;

/// Where a list of entries named by `ids` is cut into parts: after an
/// entry whose id's last byte is a multiple of 8 once a part holds
/// [`MIN_PARTS`], and at [`MAX_PARTS`] (about 8 per part). Returns each
/// part's end.
pub fn group_ends(ids: impl Iterator<Item = StorageId>) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (i, id) in ids.enumerate() {
        count = i + 1;
        let len = count - start;
        if len >= MAX_PARTS || (len >= MIN_PARTS && id.0[31] % 8 == 0) {
            ends.push(count);
            start = count;
        }
    }
    if start < count {
        ends.push(count);
    }
    ends
}

/// The longest chain of patches a chunk may be rebuilt through.
pub const MAX_CHAIN: u8 = 8;

/// Levels of parts a content may nest (at least 4¹⁶ chunks, 64 TiB of
/// the smallest: far past any file; about 8 per level in practice).
pub const MAX_CONTENT_LEVELS: usize = 16;

/// A chunk's plaintext: packed by `method` (with the vault's `dictionary`
/// when there is one and `method` is zstd) when that is smaller.
pub fn encode_chunk(method: Method, dictionary: Option<&Dictionary>, data: &[u8]) -> Vec<u8> {
    let (code, packed) = pack(method, dictionary, data);
    let mut out = Vec::with_capacity(1 + packed.len());
    out.push(code);
    out.extend_from_slice(&packed);
    out
}

/// The chunk a chunk's plaintext holds.
///
/// # Errors
/// An unknown codec, a dictionary's codec without the dictionary, bytes
/// that do not unpack, more than a largest chunk.
pub fn decode_chunk(
    plain: &[u8],
    dictionary: Option<&Dictionary>,
) -> Result<Vec<u8>, ProtocolError> {
    let (&code, packed) = plain
        .split_first()
        .ok_or(ProtocolError::Malformed("sealed chunk"))?;
    unpack(code, dictionary, packed, MAX_CHUNK as usize)
}

/// A chunk as a delta against its base (the patch's one ref).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    /// The chunk (or patch) the delta applies to; one of the refs.
    pub base: StorageId,
    /// The rebuilt chunk's keyed id (checked after the rebuild).
    pub keyed: [u8; 32],
    /// Patches from here down to a whole chunk: 1 for a patch on a chunk.
    pub depth: u8,
    /// The rsync delta.
    pub delta: Vec<u8>,
}

/// A patch as its plaintext holds it: the delta packed by a codec.
#[derive(Serialize, Deserialize)]
struct PackedPatch {
    base: StorageId,
    keyed: [u8; 32],
    depth: u8,
    codec: u8,
    #[serde(with = "serde_bytes")]
    delta: Vec<u8>,
}

impl Patch {
    /// The patch's plaintext, its delta compressed by `method` (kept as is
    /// when that is not smaller).
    ///
    /// # Errors
    /// A depth outside 1..=[`MAX_CHAIN`] or a delta over [`MAX_DELTA`].
    pub fn encode(&self, method: Method) -> Result<Vec<u8>, ProtocolError> {
        self.check()?;
        let (codec, delta) = compress_with(method, &self.delta);
        let packed = PackedPatch {
            base: self.base,
            keyed: self.keyed,
            depth: self.depth,
            codec: codec.code(),
            delta,
        };
        postcard::to_allocvec(&packed).map_err(|_| ProtocolError::Malformed("sealed patch"))
    }

    /// A patch read from its plaintext, whose header named `refs`.
    ///
    /// # Errors
    /// As [`Patch::encode`], bytes that are not exactly one patch, a delta
    /// that does not unpack within [`MAX_DELTA`], and a base its header
    /// does not name.
    pub fn decode(bytes: &[u8], refs: &[StorageId]) -> Result<Self, ProtocolError> {
        let packed: PackedPatch = decode_exact(bytes, "sealed patch")?;
        let codec =
            Codec::from_code(packed.codec).ok_or(ProtocolError::Malformed("sealed patch codec"))?;
        let patch = Patch {
            base: packed.base,
            keyed: packed.keyed,
            depth: packed.depth,
            delta: decompress_slice(codec, &packed.delta, MAX_DELTA)?,
        };
        patch.check()?;
        // Its base and, for a chunk long enough to be signed, its signature.
        if !(1..=2).contains(&refs.len()) || !refs.contains(&patch.base) {
            return Err(ProtocolError::Malformed(
                "a sealed patch whose header does not name its base",
            ));
        }
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

/// A chunk's signature as a patch against its base's (the signature
/// object's one ref): the blocks whose entries differ. A 1-byte edit
/// changes one block's entry, so a patched chunk's signature costs tens of
/// bytes, not one entry per block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignaturePatch {
    /// Blocks of the new signature.
    pub blocks: u32,
    /// The entries that differ from the base's (or that it lacks), by
    /// block, in increasing order.
    pub changed: Vec<(u32, [u8; SIGNATURE_ENTRY])>,
}

/// Bytes of one block's entry in a signature.
pub const SIGNATURE_ENTRY: usize = 12;
/// Bytes of a signature's header.
const SIGNATURE_HEAD: usize = 12;

impl SignaturePatch {
    /// What turns signature `old` into `new` (both as [`crate::delta::signature`] makes them).
    pub fn between(old: &[u8], new: &[u8]) -> Self {
        let entry = |sig: &[u8], i: usize| {
            sig.get(
                SIGNATURE_HEAD + i * SIGNATURE_ENTRY..SIGNATURE_HEAD + (i + 1) * SIGNATURE_ENTRY,
            )
            .map(|e| <[u8; SIGNATURE_ENTRY]>::try_from(e).expect("an entry"))
        };
        let blocks = new.len().saturating_sub(SIGNATURE_HEAD) / SIGNATURE_ENTRY;
        let changed = (0..blocks)
            .filter_map(|i| {
                let now = entry(new, i)?;
                (entry(old, i) != Some(now)).then_some((i as u32, now))
            })
            .collect();
        SignaturePatch {
            blocks: blocks as u32,
            changed,
        }
    }

    /// The signature this patch makes of `old`.
    ///
    /// # Errors
    /// More blocks than a largest chunk has, entries out of order or past
    /// the blocks, or a block neither patched nor in `old`.
    pub fn apply(&self, old: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        let blocks = self.blocks as usize;
        if blocks > MAX_CHUNK.div_ceil(crate::delta::BLOCK_SIZE) as usize
            || self.changed.windows(2).any(|w| w[0].0 >= w[1].0)
            || self
                .changed
                .last()
                .is_some_and(|(i, _)| *i as usize >= blocks)
            || old.len() < SIGNATURE_HEAD
        {
            return Err(ProtocolError::Malformed("signature patch"));
        }
        let mut out = old[..SIGNATURE_HEAD].to_vec();
        let mut changed = self.changed.iter().peekable();
        for i in 0..blocks {
            match changed.next_if(|(at, _)| *at as usize == i) {
                Some((_, entry)) => out.extend_from_slice(entry),
                None => out.extend_from_slice(
                    old.get(
                        SIGNATURE_HEAD + i * SIGNATURE_ENTRY
                            ..SIGNATURE_HEAD + (i + 1) * SIGNATURE_ENTRY,
                    )
                    .ok_or(ProtocolError::Malformed("signature patch past its base"))?,
                ),
            }
        }
        crate::delta::check_signature(&out)?;
        Ok(out)
    }

    /// The patch's plaintext.
    ///
    /// # Errors
    /// Never in practice.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        postcard::to_allocvec(self).map_err(|_| ProtocolError::Malformed("signature patch"))
    }

    /// A patch read from its plaintext (checked when applied).
    ///
    /// # Errors
    /// Bytes that are not exactly one patch.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        decode_exact(bytes, "signature patch")
    }
}

/// One chunk of a sealed content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    /// The object holding its data: a chunk, or a patch.
    pub data: StorageId,
    /// Its length.
    pub len: u32,
    /// Patches between `data` and a whole chunk (0: `data` is one).
    pub depth: u8,
}

/// A content as its plaintext holds it: places among the header's refs.
#[derive(Serialize, Deserialize)]
struct CompactContent {
    chunks: Vec<(u16, u32, u8)>,
    parts: Vec<(u16, u64)>,
}

/// A file's data: its chunks, or the parts of a large file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
            .map(|c| c.data)
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

    /// The content's plaintext: each object it names is written as its
    /// place among the header's refs (two bytes, not the 32 of its id,
    /// which the header holds already).
    ///
    /// # Errors
    /// As [`SealedContent::decode`] would refuse it.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        self.check()?;
        let refs = self.refs();
        let place = |id: &StorageId| refs.binary_search(id).map(|i| i as u16).unwrap_or(0);
        let compact = CompactContent {
            chunks: self
                .chunks
                .iter()
                .map(|c| (place(&c.data), c.len, c.depth))
                .collect(),
            parts: self
                .parts
                .iter()
                .map(|(id, len)| (place(id), *len))
                .collect(),
        };
        postcard::to_allocvec(&compact).map_err(|_| ProtocolError::Malformed("sealed content"))
    }

    /// A content read from its plaintext, whose header named `refs`.
    ///
    /// # Errors
    /// Bytes that are not exactly one content; chunks and parts both, more
    /// than [`MAX_PARTS`] chunks or parts, a chunk over the
    /// largest chunk or a chain past [`MAX_CHAIN`]; a place past the refs,
    /// or refs it does not name.
    pub fn decode(bytes: &[u8], refs: &[StorageId]) -> Result<Self, ProtocolError> {
        let compact: CompactContent = decode_exact(bytes, "sealed content")?;
        if compact.chunks.len() > MAX_PARTS || compact.parts.len() > MAX_PARTS {
            return Err(ProtocolError::Malformed("sealed content too long"));
        }
        let named = |place: u16| {
            refs.get(usize::from(place))
                .copied()
                .ok_or(ProtocolError::Malformed(
                    "a sealed content's place past its refs",
                ))
        };
        let content = SealedContent {
            chunks: compact
                .chunks
                .into_iter()
                .map(|(place, len, depth)| {
                    Ok(ChunkEntry {
                        data: named(place)?,
                        len,
                        depth,
                    })
                })
                .collect::<Result<_, ProtocolError>>()?,
            parts: compact
                .parts
                .into_iter()
                .map(|(place, len)| Ok((named(place)?, len)))
                .collect::<Result<_, ProtocolError>>()?,
        };
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
        if self.chunks.len() > MAX_PARTS || self.parts.len() > MAX_PARTS {
            return Err(ProtocolError::TooLarge {
                what: "sealed content",
                len: self.chunks.len().max(self.parts.len()),
                max: MAX_PARTS,
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

/// A child of a tree: the id its entry names, if it names one.
fn child_mut(kind: &mut EntryKind) -> Option<&mut [u8; 32]> {
    match kind {
        EntryKind::File {
            content: ContentId(id),
            ..
        }
        | EntryKind::Dir { tree: TreeId(id) } => Some(id),
        _ => None,
    }
}

/// The place `place` written where an id goes: its first four bytes, the
/// rest zero (compressed away).
fn place_id(place: usize) -> [u8; 32] {
    let mut id = [0; 32];
    id[..4].copy_from_slice(&(place as u32).to_le_bytes());
    id
}

/// Whether a file of `data` bytes (its length without holes) is named in
/// its tree by its one chunk's data object (a chunk or a patch) rather
/// than by a content: a file shorter than the smallest cut is one chunk,
/// and a content listing it would cost an object (about 90 bytes) per
/// small file. Empty files keep an (empty) content.
pub fn names_its_chunk(data: u64) -> bool {
    (1..u64::from(MIN_CHUNK)).contains(&data)
}

/// The bytes of a file's data: its size less its holes.
pub fn data_len(size: u64, sparse: Option<&[crate::tree::Extent]>) -> u64 {
    sparse.map_or(size, |extents| extents.iter().map(|e| e.len).sum())
}

/// Set in a tree's codec byte: its small files name their chunks
/// ([`names_its_chunk`]). Trees sealed before that named a content for
/// every file, and are read so still.
const NAMES_CHUNKS: u8 = 0x40;

/// A sealed tree's refs (what its entries name, sorted, each once) and
/// its plaintext: `tree` sorted and checked, each child named by its place
/// among the refs, compressed; small files name their chunks
/// ([`names_its_chunk`]).
///
/// # Errors
/// As [`Tree::encode`].
pub fn encode_tree(mut tree: Tree) -> Result<(Vec<StorageId>, Vec<u8>), ProtocolError> {
    let mut refs: Vec<StorageId> = tree
        .entries
        .iter_mut()
        .filter_map(|e| child_mut(&mut e.kind).map(|id| StorageId(*id)))
        .collect();
    refs.sort_unstable();
    refs.dedup();
    for entry in &mut tree.entries {
        if let Some(id) = child_mut(&mut entry.kind) {
            let place = refs.binary_search(&StorageId(*id)).unwrap_or_default();
            *id = place_id(place);
        }
    }
    let (_, plain) = tree.encode()?;
    let (codec, packed) = compress_with(Method::Zstd(ZSTD_LEVEL), &plain);
    let mut out = Vec::with_capacity(1 + packed.len());
    out.push(codec.code() | NAMES_CHUNKS);
    out.extend_from_slice(&packed);
    Ok((refs, out))
}

/// A tree read from its plaintext, whose header named `refs`: every
/// child's place must be one of the refs, and every ref named by a child.
/// Returns it, and whether its small files name their chunks.
///
/// # Errors
/// Bytes that do not unpack or decode, a tree that breaks
/// [`Tree::check`], a place past the refs, and refs no child names.
pub fn decode_tree(plain: &[u8], refs: &[StorageId]) -> Result<(Tree, bool), ProtocolError> {
    let (&code, packed) = plain
        .split_first()
        .ok_or(ProtocolError::Malformed("sealed tree"))?;
    let names_chunks = code & NAMES_CHUNKS != 0;
    let codec = Codec::from_code(code & !NAMES_CHUNKS)
        .ok_or(ProtocolError::Malformed("sealed tree codec"))?;
    let mut tree = Tree::decode_opened(&decompress_slice(codec, packed, MAX_PLAINTEXT)?)?;
    let mut named = vec![false; refs.len()];
    for entry in &mut tree.entries {
        if let Some(id) = child_mut(&mut entry.kind) {
            let place = u32::from_le_bytes([id[0], id[1], id[2], id[3]]) as usize;
            if id[4..].iter().any(|b| *b != 0) || place >= refs.len() {
                return Err(ProtocolError::Malformed(
                    "a sealed tree child that is not one of its refs",
                ));
            }
            named[place] = true;
            *id = refs[place].0;
        }
    }
    if named.contains(&false) {
        return Err(ProtocolError::Malformed(
            "a sealed tree whose header names what its entries do not",
        ));
    }
    Ok((tree, names_chunks))
}

/// Most entries a directory may have and still be one tree: a larger one
/// is a tree of parts ([`SealedTree::Parts`]), each a tree of a run of its
/// entries cut where their names say, so a changed file re-sends a part
/// and the short list of parts, not every entry's id.
pub const PART_ENTRIES: usize = 16;

/// The whole plaintext of a tree of parts (a tree's plaintext otherwise
/// starts with a codec's code).
const PARTS_CODE: u8 = 0xFF;

/// What a sealed tree holds once opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedTree {
    /// The directory's entries, and whether its small files name their
    /// chunks ([`names_its_chunk`]).
    Entries(Tree, bool),
    /// Trees whose entries, together, are the directory's: its refs.
    Parts(Vec<StorageId>),
}

/// The plaintext of a tree of parts (its refs name the parts).
pub fn encode_parts() -> Vec<u8> {
    vec![PARTS_CODE]
}

/// A sealed tree read from its plaintext, whose header named `refs`: a
/// directory's entries ([`decode_tree`]) or its parts.
///
/// # Errors
/// As [`decode_tree`], and a tree of parts that names none.
pub fn decode_sealed_tree(plain: &[u8], refs: &[StorageId]) -> Result<SealedTree, ProtocolError> {
    if plain != [PARTS_CODE] {
        return decode_tree(plain, refs).map(|(tree, names)| SealedTree::Entries(tree, names));
    }
    if refs.is_empty() {
        return Err(ProtocolError::Malformed("a sealed tree of no parts"));
    }
    Ok(SealedTree::Parts(refs.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_patches_and_contents_round_trip() {
        let data = vec![7u8; 100_000];
        let plain = encode_chunk(Method::Lz4, None, &data);
        assert!(plain.len() < 1000);
        assert_eq!(decode_chunk(&plain, None).unwrap(), data);
        let patch = Patch {
            base: StorageId([9; 32]),
            keyed: [1; 32],
            depth: 2,
            delta: vec![1, 2, 3],
        };
        let refs = [StorageId([3; 32]), StorageId([9; 32])];
        assert_eq!(
            Patch::decode(&patch.encode(Method::Zstd(3)).unwrap(), &refs).unwrap(),
            patch
        );
        assert!(Patch::decode(&patch.encode(Method::None).unwrap(), &refs[..1]).is_err());
        // An edit's literals are compressed: text shrinks, and comes back.
        let wordy = Patch {
            delta: b"the quick brown fox jumps over the lazy dog. ".repeat(200),
            ..patch
        };
        let plain = wordy.encode(Method::Zstd(3)).unwrap();
        assert!(plain.len() < wordy.delta.len() / 10, "{}", plain.len());
        assert_eq!(Patch::decode(&plain, &refs).unwrap(), wordy);
        let entry = ChunkEntry {
            data: StorageId([2; 32]),
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

    fn entry(name: &str, kind: EntryKind) -> crate::tree::Entry {
        crate::tree::Entry {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime_ns: 1_700_000_000_000_000_000,
            xattrs: Vec::new(),
        }
    }

    /// A directory of 50 files (two sharing a content), a subdirectory and
    /// a symlink.
    fn directory() -> Tree {
        let mut entries: Vec<_> = (0..50u8)
            .map(|i| {
                let kind = EntryKind::File {
                    size: 1000 + u64::from(i),
                    content: ContentId([i.max(1).wrapping_mul(37); 32]),
                    sparse: None,
                };
                entry(&format!("f{i:05}.txt"), kind)
            })
            .collect();
        entries.push(entry(
            "sub",
            EntryKind::Dir {
                tree: TreeId([201; 32]),
            },
        ));
        let target = b"f00001.txt".to_vec();
        entries.push(entry("link", EntryKind::Symlink { target }));
        Tree { entries }
    }

    #[test]
    fn a_sealed_tree_names_its_children_once_and_comes_back_whole() {
        let tree = directory();
        let (refs, plain) = encode_tree(tree.clone()).unwrap();
        assert_eq!(refs.len(), 50, "49 distinct contents and the subdirectory");
        let (_, whole) = tree.clone().encode().unwrap();
        assert!(
            plain.len() * 3 < whole.len(),
            "{} vs {}",
            plain.len(),
            whole.len()
        );
        let mut sorted = tree.clone();
        sorted.entries.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(decode_tree(&plain, &refs).unwrap(), (sorted, true));
        // The same directory seals the same.
        assert_eq!(encode_tree(tree).unwrap(), (refs, plain));
    }

    #[test]
    fn a_sealed_tree_whose_refs_lie_is_refused() {
        let (refs, plain) = encode_tree(directory()).unwrap();
        // A ref no child names, or one missing; other refs name other
        // children (the storage id the endpoint asked for decides them).
        let mut more = refs.clone();
        more.push(StorageId([255; 32]));
        assert!(decode_tree(&plain, &more).is_err());
        assert!(decode_tree(&plain, &refs[1..]).is_err());
        let other: Vec<StorageId> = refs.iter().map(|r| StorageId([r.0[0] ^ 1; 32])).collect();
        let reopened = decode_tree(&plain, &other).unwrap();
        assert_ne!(reopened, decode_tree(&plain, &refs).unwrap());
        // A child whose id is not a place among the refs.
        let mut lying = directory();
        lying.entries.truncate(1);
        let (_, plain) = encode_tree(lying.clone()).unwrap();
        assert!(decode_tree(&plain, &[]).is_err());
        let (_, raw) = lying.encode().unwrap();
        let mut packed = vec![Codec::None.code()];
        packed.extend_from_slice(&raw);
        let one = [StorageId([1; 32])];
        assert!(
            decode_tree(&packed, &one).is_err(),
            "a full id, not a place"
        );
        assert!(decode_tree(&[], &one).is_err());
        assert!(decode_tree(&[9, 1, 2], &one).is_err());
    }

    #[test]
    fn parts_are_cut_by_ids_so_a_removed_chunk_moves_only_its_own_part() {
        let ids: Vec<StorageId> = (0..2000u32)
            .map(|i| StorageId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        let ends = group_ends(ids.iter().copied());
        assert_eq!(*ends.last().unwrap(), ids.len());
        let lens: Vec<usize> = std::iter::once(0)
            .chain(ends.iter().copied())
            .zip(&ends)
            .map(|(start, end)| end - start)
            .collect();
        assert!(lens.iter().all(|len| *len <= MAX_PARTS));
        assert!(lens[..lens.len() - 1].iter().all(|len| *len >= MIN_PARTS));
        let mean = ids.len() / lens.len();
        assert!((6..=14).contains(&mean), "{mean} per part");
        // One entry removed near the start: the parts after its own (and
        // perhaps the next) are the same lists, shifted by one.
        let mut fewer = ids.clone();
        fewer.remove(100);
        let after: Vec<usize> = group_ends(fewer.iter().copied())
            .into_iter()
            .filter(|end| *end > 140)
            .map(|end| end + 1)
            .collect();
        let before: Vec<usize> = ends.into_iter().filter(|end| *end > 141).collect();
        assert_eq!(after, before);
    }

    #[test]
    fn a_signature_patch_rebuilds_the_new_signature() {
        let old_chunk: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut new_chunk = old_chunk.clone();
        new_chunk[35_000] ^= 1;
        new_chunk.extend_from_slice(&[9; 3000]);
        let (old, new) = (
            crate::delta::signature(&old_chunk),
            crate::delta::signature(&new_chunk),
        );
        let patch = SignaturePatch::between(&old, &new);
        assert!(patch.changed.len() <= 5, "{}", patch.changed.len());
        let decoded = SignaturePatch::decode(&patch.encode().unwrap()).unwrap();
        assert_eq!(decoded.apply(&old).unwrap(), new);
        let mut lying = patch.clone();
        lying.blocks += 400;
        assert!(lying.apply(&old).is_err());
    }

    #[test]
    fn small_files_name_their_chunk_in_new_trees_and_a_content_in_older_ones() {
        assert!(!names_its_chunk(0));
        assert!(names_its_chunk(1));
        assert!(names_its_chunk(u64::from(MIN_CHUNK) - 1));
        assert!(!names_its_chunk(u64::from(MIN_CHUNK)));
        let holes = [crate::tree::Extent {
            offset: 0,
            len: 100,
        }];
        assert_eq!(data_len(1 << 30, Some(&holes)), 100);
        assert_eq!(data_len(5000, None), 5000);
        let (refs, mut plain) = encode_tree(directory()).unwrap();
        assert!(decode_tree(&plain, &refs).unwrap().1);
        // A tree sealed before small files named their chunks.
        plain[0] &= !NAMES_CHUNKS;
        let (tree, names) = decode_tree(&plain, &refs).unwrap();
        assert!(!names);
        assert_eq!(tree.entries.len(), directory().entries.len());
    }

    #[test]
    fn a_tree_of_parts_names_its_parts_and_nothing_else() {
        let parts = vec![StorageId([1; 32]), StorageId([2; 32])];
        assert_eq!(
            decode_sealed_tree(&encode_parts(), &parts).unwrap(),
            SealedTree::Parts(parts.clone())
        );
        assert!(decode_sealed_tree(&encode_parts(), &[]).is_err());
        let (refs, plain) = encode_tree(directory()).unwrap();
        assert!(matches!(
            decode_sealed_tree(&plain, &refs).unwrap(),
            SealedTree::Entries(_, true)
        ));
        assert!(decode_sealed_tree(&[PARTS_CODE, 0], &parts).is_err());
    }

    #[test]
    fn lying_or_oversized_objects_do_not_decode() {
        let content = SealedContent {
            chunks: vec![ChunkEntry {
                data: StorageId([2; 32]),
                len: 100,
                depth: 0,
            }],
            parts: Vec::new(),
        };
        let bytes = content.encode().unwrap();
        // A header naming more than the content holds, or fewer.
        let more = [StorageId([2; 32]), StorageId([3; 32])];
        assert!(SealedContent::decode(&bytes, &more).is_err());
        assert!(SealedContent::decode(&bytes, &[]).is_err());
        let deep = Patch {
            base: StorageId([0; 32]),
            keyed: [0; 32],
            depth: MAX_CHAIN + 1,
            delta: Vec::new(),
        };
        assert!(deep.encode(Method::None).is_err());
        assert!(decode_chunk(&[9, 1, 2], None).is_err());
        assert!(decode_chunk(&[], None).is_err());
    }
}
