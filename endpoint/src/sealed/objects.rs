//! What a sealed backup seals, as pure functions of the vault's keys and
//! what was read: chunks (whole or as patches, on every core), a file's
//! content (a small Merkle list of its chunks) and a snapshot's trees. Sealing is deterministic, so the same input gives
//! the same objects: what lets a backup tell what the relay holds already.

use std::collections::HashMap;

use anyhow::Result;
use ferry_protocol::compress::Method;
use ferry_protocol::delta;
use ferry_protocol::ids::TreeId;
use ferry_protocol::message::StorageId;
use ferry_protocol::sealed::{seal, SealedKind, SealingKeys};
use ferry_protocol::sealed_objects::{
    encode_chunk, encode_tree, group_ends, ChunkEntry, Patch, SealedContent, SignaturePatch,
    PART_CHUNKS,
};
use ferry_protocol::tree::Tree;

use crate::backup::DirNode;
use crate::cache::CachedChunk;

/// A sealed object: its storage id and bytes.
pub(super) type SealedObject = (StorageId, Vec<u8>);

/// A file's content sealed: its storage id, and every object of it,
/// children first. A file of more than [`PART_CHUNKS`] chunks is a
/// content of parts (of parts, for a large one) cut where the entries'
/// ids say, so a changed, added or removed chunk changes only the short
/// lists above it. Sealing is deterministic: the
/// same chunks give the same objects.
pub(super) fn content_objects(
    keys: &SealingKeys,
    chunks: &[CachedChunk],
) -> Result<(StorageId, Vec<SealedObject>)> {
    let entries: Vec<ChunkEntry> = chunks
        .iter()
        .map(|c| ChunkEntry {
            data: c.data,
            len: c.len,
            depth: c.depth,
        })
        .collect();
    let mut objects = Vec::new();
    let mut seal_one = |content: SealedContent| -> Result<(StorageId, u64)> {
        let (id, bytes) = seal(
            keys,
            SealedKind::Content,
            content.refs(),
            &content.encode()?,
        )?;
        objects.push((id, bytes));
        Ok((id, content.len()))
    };
    if entries.len() <= PART_CHUNKS {
        let (id, _) = seal_one(SealedContent {
            chunks: entries,
            parts: Vec::new(),
        })?;
        return Ok((id, objects));
    }
    let mut parts = in_groups(&entries, |c| c.data)
        .map(|group| {
            seal_one(SealedContent {
                chunks: group.to_vec(),
                parts: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    while parts.len() > PART_CHUNKS {
        parts = in_groups(&parts, |(id, _)| *id)
            .map(|group| {
                seal_one(SealedContent {
                    chunks: Vec::new(),
                    parts: group.to_vec(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
    }
    let (id, _) = seal_one(SealedContent {
        chunks: Vec::new(),
        parts,
    })?;
    Ok((id, objects))
}

/// `items` cut into parts where their ids say ([`group_ends`]).
fn in_groups<T>(items: &[T], id: impl Fn(&T) -> StorageId) -> impl Iterator<Item = &[T]> {
    let ends = group_ends(items.iter().map(id));
    let starts = std::iter::once(0).chain(ends.clone());
    starts.zip(ends).map(move |(start, end)| &items[start..end])
}

/// Seals `dir` and those below it into `out`, children first.
pub(super) fn seal_tree(
    keys: &SealingKeys,
    dir: DirNode,
    out: &mut Vec<SealedObject>,
) -> Result<StorageId> {
    let entries = dir.into_entries(|_, sub| Ok(TreeId(seal_tree(keys, sub, out)?.0)))?;
    let (refs, plain) = encode_tree(Tree { entries })?;
    let (id, bytes) = seal(keys, SealedKind::Tree, refs, &plain)?;
    out.push((id, bytes));
    Ok(id)
}

/// Bytes of chunks below which a batch is sealed on one thread (spawning
/// costs more than it saves for a small file's chunk or two).
const PARALLEL_FROM: usize = 1 << 20;

/// A chunk sealed: what the cache keeps of it, and its objects' bytes.
pub(super) struct SealedChunk {
    /// Its data object (a chunk or a patch), signature object, keyed id,
    /// length and depth.
    pub(super) cached: CachedChunk,
    /// The data object's bytes.
    pub(super) data: Vec<u8>,
    /// The signature object's bytes.
    pub(super) signature: Vec<u8>,
    /// The chunk's signature in full (what the files cache keeps).
    pub(super) full_signature: Vec<u8>,
}

/// Seals the chunks `fresh` names (each by its place in `batch`, with the
/// previous version's chunk at its offset when its signature is at hand),
/// spread over every core: each as a patch against that base when the
/// patch is under half the chunk (its signature then a patch of the
/// base's), else whole, compressed by `method`. In `fresh`'s order.
///
/// # Errors
/// Sealing past the limits (it cannot, for chunks).
pub(super) fn seal_chunks(
    keys: &SealingKeys,
    method: Method,
    batch: &[Vec<u8>],
    keyed: &[[u8; 32]],
    fresh: &[(usize, Option<CachedChunk>)],
    signatures: &HashMap<StorageId, Vec<u8>>,
) -> Result<Vec<SealedChunk>> {
    let seal_one = |(i, base): &(usize, Option<CachedChunk>)| {
        let old = base.and_then(|b| Some((b, signatures.get(&b.signature)?)));
        seal_chunk(keys, method, &batch[*i], keyed[*i], old)
    };
    // Threads for a batch worth them: a small file's chunk is sealed here.
    let bytes: usize = fresh.iter().map(|(i, _)| batch[*i].len()).sum();
    if bytes < PARALLEL_FROM {
        return fresh.iter().map(seal_one).collect();
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = fresh.len().div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = fresh
            .chunks(per)
            .map(|part| {
                let seal_one = &seal_one;
                scope.spawn(move || part.iter().map(seal_one).collect::<Result<Vec<_>>>())
            })
            .collect();
        let mut out = Vec::with_capacity(fresh.len());
        for handle in handles {
            out.extend(
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("sealing failed"))??,
            );
        }
        Ok(out)
    })
}

/// One chunk sealed (see [`seal_chunks`]).
fn seal_chunk(
    keys: &SealingKeys,
    method: Method,
    data: &[u8],
    keyed: [u8; 32],
    base: Option<(CachedChunk, &Vec<u8>)>,
) -> Result<SealedChunk> {
    let new_signature = delta::signature(data);
    let patched = base.and_then(|(base, old)| {
        let delta = delta::diff(old.clone(), data).ok()?;
        (delta.len() < data.len() / 2).then_some((base, delta, old))
    });
    let len = data.len() as u32;
    let Some((base, delta, old)) = patched else {
        let (signature, sig) = seal(keys, SealedKind::Signature, Vec::new(), &new_signature)?;
        let plain = encode_chunk(method, data);
        let (id, bytes) = seal(keys, SealedKind::Chunk, vec![signature], &plain)?;
        let cached = CachedChunk {
            data: id,
            signature,
            keyed,
            len,
            depth: 0,
        };
        return Ok(SealedChunk {
            cached,
            data: bytes,
            signature: sig,
            full_signature: new_signature,
        });
    };
    // A patched chunk's signature as a patch of its base's.
    let sig_patch = SignaturePatch::between(old, &new_signature);
    let (signature, sig) = seal(
        keys,
        SealedKind::Signature,
        vec![base.signature],
        &sig_patch.encode()?,
    )?;
    let patch = Patch {
        base: base.data,
        keyed,
        depth: base.depth + 1,
        delta,
    };
    let refs = vec![base.data, signature];
    let (id, bytes) = seal(keys, SealedKind::Patch, refs, &patch.encode(method)?)?;
    let cached = CachedChunk {
        data: id,
        signature,
        keyed,
        len,
        depth: patch.depth,
    };
    Ok(SealedChunk {
        cached,
        data: bytes,
        signature: sig,
        full_signature: new_signature,
    })
}
