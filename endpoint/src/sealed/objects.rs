//! What a sealed backup seals, as pure functions of the vault's keys and
//! what was read: a file's content (a small Merkle list of its chunks) and
//! a snapshot's trees. Sealing is deterministic, so the same input gives
//! the same objects: what lets a backup tell what the relay holds already.

use anyhow::{Context, Result};
use ferry_protocol::ids::TreeId;
use ferry_protocol::message::StorageId;
use ferry_protocol::sealed::{seal, SealedKind, SealingKeys};
use ferry_protocol::sealed_objects::{ChunkEntry, SealedContent, MAX_PARTS, PART_CHUNKS};
use ferry_protocol::tree::{EntryKind, Tree};

use crate::backup::{DirNode, Node};
use crate::cache::CachedChunk;

/// A sealed object: its storage id and bytes.
pub(super) type SealedObject = (StorageId, Vec<u8>);

/// A file's content sealed: its storage id, and every object of it,
/// children first. A file of more than [`PART_CHUNKS`] chunks is a
/// content of parts (of parts, for a large one), so a changed chunk
/// changes only the short lists above it. Sealing is deterministic: the
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
    let mut parts = entries
        .chunks(PART_CHUNKS)
        .map(|part| {
            seal_one(SealedContent {
                chunks: part.to_vec(),
                parts: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    while parts.len() > MAX_PARTS {
        parts = parts
            .chunks(MAX_PARTS)
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

/// Seals `dir` and those below it into `out`, children first.
pub(super) fn seal_tree(
    keys: &SealingKeys,
    dir: DirNode,
    out: &mut Vec<SealedObject>,
) -> Result<StorageId> {
    let mut entries = Vec::with_capacity(dir.children.len());
    let mut refs = Vec::new();
    for (_, child) in dir.children {
        match child {
            Node::Leaf(entry) => {
                if let EntryKind::File { content, .. } = &entry.kind {
                    refs.push(StorageId(content.0));
                }
                entries.push(entry);
            }
            Node::Dir(mut sub) => {
                let mut entry = sub.entry.take().context("directory without metadata")?;
                let id = seal_tree(keys, sub, out)?;
                refs.push(id);
                entry.kind = EntryKind::Dir { tree: TreeId(id.0) };
                entries.push(entry);
            }
        }
    }
    let (_, plain) = Tree { entries }.encode()?;
    let (id, bytes) = seal(keys, SealedKind::Tree, refs, &plain)?;
    out.push((id, bytes));
    Ok(id)
}
