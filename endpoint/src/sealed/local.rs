//! What the restore target already holds of a sealed file: its current
//! version, cut by the vault's keyed chunker and each chunk sealed as a
//! backup would seal it whole (under each compression a backup may have
//! used), so a chunk the snapshot names, or a patch's base, that the target
//! holds is read here instead of fetched. Sealing is deterministic: equal
//! ids mean equal bytes.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::Result;
use ferry_protocol::compress::{Method, ZSTD_LEVEL};
use ferry_protocol::delta;
use ferry_protocol::keyed_chunking::KeyedChunker;
use ferry_protocol::message::StorageId;

use super::objects::seal_whole;
use super::restore::Opening;

/// The compressions a backup picks from (see `crate::compression`): a
/// chunk sealed under another is fetched, not found here.
const METHODS: [Method; 3] = [Method::Zstd(ZSTD_LEVEL), Method::Lz4, Method::None];

/// Files larger than this are not read for chunks (the cost of sealing
/// them three ways is then more than fetching what changed).
const LARGEST: u64 = 1 << 30;

/// A target file's current version: where each chunk it holds lies, by the
/// storage ids the chunk would have.
pub(super) struct Held {
    file: File,
    /// Each chunk's place, length and the compression its id was made under.
    chunks: HashMap<StorageId, (u64, u32, usize)>,
}

impl Held {
    /// Reads `file` (the target's current version of a file being
    /// restored); `None` when it is too large or unreadable.
    pub(super) fn read(opening: &Opening<'_>, file: File) -> Option<Self> {
        if file.metadata().ok()?.len() > LARGEST {
            return None;
        }
        let mut chunks = HashMap::new();
        for chunk in KeyedChunker::new(&file, opening.keys) {
            let chunk = chunk.ok()?;
            for (i, id) in whole_ids(opening, &chunk.data)
                .ok()?
                .into_iter()
                .enumerate()
            {
                chunks.insert(id, (chunk.offset, chunk.data.len() as u32, i));
            }
        }
        Some(Held { file, chunks })
    }

    /// Whether it holds the chunk `id`.
    pub(super) fn has(&self, id: &StorageId) -> bool {
        self.chunks.contains_key(id)
    }

    /// The chunk `id`'s bytes, if it still holds it: read again and
    /// checked against `id` (the file may have changed since it was read).
    ///
    /// # Errors
    /// The file cannot be read.
    pub(super) fn chunk(&self, opening: &Opening<'_>, id: &StorageId) -> Result<Option<Vec<u8>>> {
        let Some(&(offset, len, method)) = self.chunks.get(id) else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; len as usize];
        self.file.read_exact_at(&mut bytes, offset)?;
        Ok((whole_ids(opening, &bytes)?[method] == *id).then_some(bytes))
    }
}

/// The storage ids a backup gives `data` sealed whole: under each of
/// [`METHODS`], and packed with the snapshot's dictionary.
fn whole_ids(opening: &Opening<'_>, data: &[u8]) -> Result<Vec<StorageId>> {
    let signature = delta::signature(data);
    let dictionary = opening.dictionary.as_ref();
    let packings = dictionary
        .map(|d| (Method::Zstd(ZSTD_LEVEL), Some(d)))
        .into_iter()
        .chain(METHODS.map(|method| (method, None)));
    packings
        .map(|packing| Ok(seal_whole(opening.keys, packing, data, &signature)?.chunk.0))
        .collect()
}
