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
use ferry_protocol::sealed_dictionary::Dictionary;

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
    /// Each chunk's place, length and the packing its id was made under
    /// (its place in [`packings`]).
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
            let signature = delta::signature(&chunk.data);
            for (i, packing) in packings(opening).into_iter().enumerate() {
                let id = whole_id(opening, packing, &chunk.data, &signature).ok()?;
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
        let Some(&(offset, len, packing)) = self.chunks.get(id) else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; len as usize];
        self.file.read_exact_at(&mut bytes, offset)?;
        // Sealed again only as the id was made (not every way).
        let packing = packings(opening)[packing];
        let again = whole_id(opening, packing, &bytes, &delta::signature(&bytes))?;
        Ok((again == *id).then_some(bytes))
    }
}

/// The ways a backup may have packed a chunk sealed whole: with the
/// snapshot's dictionary, then each of [`METHODS`].
fn packings<'o>(opening: &'o Opening<'_>) -> Vec<(Method, Option<&'o Dictionary>)> {
    let dictionary = opening.dictionary.as_ref();
    dictionary
        .map(|d| (Method::Zstd(ZSTD_LEVEL), Some(d)))
        .into_iter()
        .chain(METHODS.map(|method| (method, None)))
        .collect()
}

/// The storage id a backup gives `data` (whose rsync signature is
/// `signature`) sealed whole, packed as `packing` says.
fn whole_id(
    opening: &Opening<'_>,
    packing: (Method, Option<&Dictionary>),
    data: &[u8],
    signature: &[u8],
) -> Result<StorageId> {
    Ok(seal_whole(opening.keys, packing, data, signature)?.chunk.0)
}
