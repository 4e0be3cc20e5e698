//! What a sealed backup seals, as pure functions of the vault's keys and
//! what was read: chunks (whole or as patches, on every core), a file's
//! content (a small Merkle list of its chunks) and a snapshot's trees. Sealing is deterministic, so the same input gives
//! the same objects: what lets a backup tell what the relay holds already.

use std::collections::HashMap;

use anyhow::{bail, Result};
use ferry_protocol::chunking::MIN_CHUNK;
use ferry_protocol::compress::Method;
use ferry_protocol::delta;
use ferry_protocol::ids::TreeId;
use ferry_protocol::message::StorageId;
use ferry_protocol::sealed::{seal, SealedKind, SealingKeys};
use ferry_protocol::sealed_dictionary::Dictionary;
use ferry_protocol::sealed_objects::{
    encode_chunk, encode_parts, encode_tree, group_ends, names_its_chunk, ChunkEntry, Patch,
    SealedContent, SignaturePatch, PART_CHUNKS, PART_ENTRIES,
};
use ferry_protocol::tree::{Entry, Tree};

use crate::backup::DirNode;
use crate::cache::CachedChunk;

/// A sealed object: its storage id and bytes.
pub(super) type SealedObject = (StorageId, Vec<u8>);

/// A file's content sealed: its storage id, and every object of it,
/// children first. A file shorter than the smallest cut
/// ([`names_its_chunk`]) is named by its one chunk's data object, with no
/// content object. A file of more than [`PART_CHUNKS`] chunks is a
/// content of parts (of parts, for a large one) cut where the entries'
/// ids say, so a changed, added or removed chunk changes only the short
/// lists above it. Sealing is deterministic: the
/// same chunks give the same objects.
pub(super) fn content_objects(
    keys: &SealingKeys,
    chunks: &[CachedChunk],
) -> Result<(StorageId, Vec<SealedObject>)> {
    let data: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
    if names_its_chunk(data) {
        let [chunk] = chunks else {
            bail!("a file of {data} bytes cut into {} chunks", chunks.len());
        };
        return Ok((chunk.data, Vec::new()));
    }
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

/// Seals `dir` and those below it into `out`, children first: a
/// directory of more than [`PART_ENTRIES`] entries as a tree of parts, cut
/// where the keyed hashes of its names say ([`group_ends`]), so an added,
/// removed or changed entry changes only its part and the list of parts.
pub(super) fn seal_tree(
    keys: &SealingKeys,
    dir: DirNode,
    out: &mut Vec<SealedObject>,
) -> Result<StorageId> {
    let entries = dir.into_entries(|_, sub| Ok(TreeId(seal_tree(keys, sub, out)?.0)))?;
    let mut seal_entries = |entries: Vec<Entry>| -> Result<StorageId> {
        let (refs, plain) = encode_tree(Tree { entries })?;
        let (id, bytes) = seal(keys, SealedKind::Tree, refs, &plain)?;
        out.push((id, bytes));
        Ok(id)
    };
    if entries.len() <= PART_ENTRIES {
        return seal_entries(entries);
    }
    let mut parts = in_groups(&entries, |e| StorageId(keys.keyed_id(&e.name)))
        .map(|group| seal_entries(group.to_vec()))
        .collect::<Result<Vec<_>>>()?;
    parts.sort_unstable();
    parts.dedup();
    let (id, bytes) = seal(keys, SealedKind::Tree, parts, &encode_parts())?;
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
    /// The signature object's bytes; `None` for a chunk too short to be
    /// [`signed`] (its signature lives only in the files cache).
    pub(super) signature: Option<Vec<u8>>,
    /// The chunk's signature in full (what the files cache keeps).
    pub(super) full_signature: Vec<u8>,
}

/// Seals the chunks `fresh` names (each by its place in `batch`, with the
/// previous version's chunk at its offset when its signature is at hand),
/// spread over every core: each as a patch against that base when the
/// patch is under half the chunk (its signature then a patch of the
/// base's), else whole, packed by `packing` (a method and the vault's
/// dictionary, if any). In `fresh`'s order.
///
/// # Errors
/// Sealing past the limits (it cannot, for chunks).
pub(super) fn seal_chunks(
    keys: &SealingKeys,
    packing: (Method, Option<&Dictionary>),
    batch: &[Vec<u8>],
    keyed: &[[u8; 32]],
    fresh: &[(usize, Option<CachedChunk>)],
    signatures: &HashMap<StorageId, Vec<u8>>,
) -> Result<Vec<SealedChunk>> {
    let seal_one = |(i, base): &(usize, Option<CachedChunk>)| {
        let old = base.and_then(|b| Some((b, signatures.get(&b.signature)?)));
        seal_chunk(keys, packing, &batch[*i], keyed[*i], old)
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

/// Chunks shorter than this (a file smaller than the smallest cut, or a
/// file's last chunk) have no signature object on the relay: its header,
/// nonce and tag (about 60 bytes) and 1.2 % of the chunk would be paid on
/// every such chunk for a patch only a backup without its files cache
/// could want, and such a backup has no previous version to patch against.
/// Their signatures live in the files cache alone.
pub(super) const SIGNED_FROM: usize = MIN_CHUNK as usize;

/// Whether a chunk of `len` bytes has its signature on the relay.
pub(super) fn signed(len: usize) -> bool {
    len >= SIGNED_FROM
}

/// A chunk sealed whole (a chunk object naming its signature object when
/// [`signed`]).
pub(super) struct Whole {
    /// The chunk object's storage id and bytes.
    pub(super) chunk: SealedObject,
    /// The signature object's storage id (what the files cache keys the
    /// signature by) and, when [`signed`], its bytes.
    pub(super) signature: (StorageId, Option<Vec<u8>>),
}

/// `data` sealed whole, packed by `method` (and the vault's dictionary,
/// when there is one), its rsync signature being
/// `full_signature`.
///
/// # Errors
/// Sealing past the limits (it cannot, for chunks).
pub(super) fn seal_whole(
    keys: &SealingKeys,
    (method, dictionary): (Method, Option<&Dictionary>),
    data: &[u8],
    full_signature: &[u8],
) -> Result<Whole> {
    let (signature, sig) = seal(keys, SealedKind::Signature, Vec::new(), full_signature)?;
    let is_signed = signed(data.len());
    let refs = if is_signed {
        vec![signature]
    } else {
        Vec::new()
    };
    let chunk = seal(
        keys,
        SealedKind::Chunk,
        refs,
        &encode_chunk(method, dictionary, data),
    )?;
    Ok(Whole {
        chunk,
        signature: (signature, is_signed.then_some(sig)),
    })
}

/// One chunk sealed (see [`seal_chunks`]).
fn seal_chunk(
    keys: &SealingKeys,
    (method, dictionary): (Method, Option<&Dictionary>),
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
        let whole = seal_whole(keys, (method, dictionary), data, &new_signature)?;
        let ((id, bytes), (signature, sig)) = (whole.chunk, whole.signature);
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
    // A patched chunk's signature as a patch of its base's when the relay
    // holds that, else in full; on the relay only when the chunk is signed.
    let (signature, sig) = if signed(base.len as usize) && signed(data.len()) {
        let sig_patch = SignaturePatch::between(old, &new_signature);
        seal(
            keys,
            SealedKind::Signature,
            vec![base.signature],
            &sig_patch.encode()?,
        )?
    } else {
        seal(keys, SealedKind::Signature, Vec::new(), &new_signature)?
    };
    let patch = Patch {
        base: base.data,
        keyed,
        depth: base.depth + 1,
        delta,
    };
    let (refs, sig) = if signed(data.len()) {
        (vec![base.data, signature], Some(sig))
    } else {
        (vec![base.data], None)
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_protocol::fuzzing::fixed_sealing_keys;
    use ferry_protocol::sealed::Header;
    use ferry_protocol::sealed_objects::MAX_PARTS;

    fn refs(bytes: &[u8]) -> Vec<StorageId> {
        Header::read(bytes).unwrap().0.refs
    }

    fn sealed(
        keys: &SealingKeys,
        data: &[u8],
        base: Option<(CachedChunk, &Vec<u8>)>,
    ) -> SealedChunk {
        let keyed = keys.keyed_id(data);
        seal_chunk(keys, (Method::Zstd(3), None), data, keyed, base).unwrap()
    }

    /// A directory of `count` files, file `changed` naming other content.
    fn directory(count: usize, changed: Option<usize>) -> DirNode {
        let mut dir = DirNode::default();
        for i in 0..count {
            let name = format!("file-{i:04}.txt").into_bytes();
            let content = [if Some(i) == changed { 0xee } else { i as u8 }; 32];
            let entry = Entry {
                name: name.clone(),
                kind: ferry_protocol::tree::EntryKind::File {
                    size: 10,
                    content: ferry_protocol::ids::ContentId(content),
                    sparse: None,
                },
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime_ns: 0,
                xattrs: Vec::new(),
            };
            dir.children.insert(name, crate::backup::Node::Leaf(entry));
        }
        dir
    }

    #[test]
    fn a_changed_file_in_a_large_directory_reseals_its_part_and_the_list_of_parts() {
        let keys = fixed_sealing_keys();
        let mut before = Vec::new();
        seal_tree(&keys, directory(200, None), &mut before).unwrap();
        let mut after = Vec::new();
        seal_tree(&keys, directory(200, Some(77)), &mut after).unwrap();
        assert!(before.len() > 200 / MAX_PARTS, "{} parts", before.len() - 1);
        let old: std::collections::HashSet<_> = before.iter().map(|(id, _)| *id).collect();
        let new: Vec<_> = after.iter().filter(|(id, _)| !old.contains(id)).collect();
        assert_eq!(new.len(), 2, "a part and the list of parts");
        let resent: usize = new.iter().map(|(_, bytes)| bytes.len()).sum();
        let whole: usize = before.iter().map(|(_, bytes)| bytes.len()).sum();
        assert!(resent * 4 < whole, "{resent} of {whole} bytes");
        // A small directory stays one tree.
        let mut small = Vec::new();
        seal_tree(&keys, directory(PART_ENTRIES, None), &mut small).unwrap();
        assert_eq!(small.len(), 1);
    }

    #[test]
    fn a_chunk_shorter_than_the_smallest_cut_keeps_its_signature_here_only() {
        let keys = fixed_sealing_keys();
        let small: Vec<u8> = (0..3_000u32)
            .flat_map(|i| (i * 7919).to_le_bytes())
            .collect();
        let large: Vec<u8> = (0..20_000u32)
            .flat_map(|i| (i * 7919).to_le_bytes())
            .collect();
        for (data, expect_signed) in [(&small, false), (&large, true)] {
            let whole = sealed(&keys, data, None);
            assert_eq!(whole.signature.is_some(), expect_signed);
            let named = refs(&whole.data);
            assert_eq!(named == vec![whole.cached.signature], expect_signed);
            assert_eq!(named.is_empty(), !expect_signed);
            // Its next version is a patch naming its base, and its
            // signature only when signed.
            let mut edited = data.clone();
            edited[100] ^= 1;
            let patch = sealed(&keys, &edited, Some((whole.cached, &whole.full_signature)));
            assert_eq!(patch.cached.depth, 1);
            assert_eq!(patch.signature.is_some(), expect_signed);
            let named = refs(&patch.data);
            assert!(named.contains(&whole.cached.data));
            assert_eq!(named.len(), if expect_signed { 2 } else { 1 });
            let plain = ferry_protocol::sealed::open(
                &keys,
                &patch.cached.data,
                &patch.data,
                SealedKind::Patch,
            )
            .unwrap()
            .1;
            assert!(Patch::decode(&plain, &named).is_ok());
        }
    }
}
