//! Where the relay reads what open-mode clients store: the one module whose
//! code looks inside a client's trees, contents and chunks. The rules call
//! it for what only plaintext can give: the references the walks follow,
//! an object checked before it is stored, an object or chunk rebuilt from
//! a patch or a delta, a chunk's signature, a chunk answered as a delta,
//! the subtrees of a batched tree fetch, and verify's check of an object's
//! id. A sealed client's objects carry their references in a clear header,
//! and its endpoint does the diffing: sealed mode never comes here.

use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::{ChunkId, ContentId, TreeId};
use ferry_protocol::tree::{Content, EntryKind, Tree};
use ferry_protocol::{delta, patch, ProtocolError};

use crate::catalog::{BlobKey, BlobKind};
use crate::objects::References;

/// References read from decoded trees and contents, whose decoders also
/// check that the bytes hash to the id.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenObjects;

impl References for OpenObjects {
    fn references(&self, key: BlobKey, raw: &[u8]) -> Result<Vec<BlobKey>, ProtocolError> {
        let named = |kind, id| BlobKey { kind, id };
        match key.kind {
            BlobKind::Tree => Ok(Tree::decode(&TreeId(key.id), raw)?
                .entries
                .into_iter()
                .filter_map(|entry| match entry.kind {
                    EntryKind::Dir { tree } => Some(named(BlobKind::Tree, tree.0)),
                    EntryKind::File { content, .. } => Some(named(BlobKind::Content, content.0)),
                    _ => None,
                })
                .collect()),
            BlobKind::Content => {
                let content = Content::decode(&ContentId(key.id), raw)?;
                let chunks = content
                    .chunks
                    .iter()
                    .map(|c| named(BlobKind::Chunk, c.id.0));
                let parts = content
                    .parts
                    .iter()
                    .map(|p| named(BlobKind::Content, p.id.0));
                Ok(chunks.chain(parts).collect())
            }
            BlobKind::Chunk | BlobKind::Signature | BlobKind::Sealed => Ok(Vec::new()),
        }
    }
}

impl OpenObjects {
    /// Checks a tree or content before it is stored (the relay trusts no
    /// object it has not decoded): it decodes as what its id names. Returns
    /// a content's file length (the per-file limit applies to it).
    ///
    /// # Errors
    /// It does not decode, or hashes to another id.
    pub fn check(key: BlobKey, raw: &[u8]) -> Result<Option<u64>, ProtocolError> {
        match key.kind {
            BlobKind::Tree => Tree::decode(&TreeId(key.id), raw).map(|_| None),
            BlobKind::Content => Ok(Some(Content::decode(&ContentId(key.id), raw)?.len())),
            BlobKind::Chunk | BlobKind::Signature | BlobKind::Sealed => {
                Err(ProtocolError::Malformed("object kind"))
            }
        }
    }

    /// Whether `raw` is the blob `key` names (verify's check).
    pub fn is_whole(key: BlobKey, raw: &[u8]) -> bool {
        match key.kind {
            BlobKind::Chunk => ChunkId::of(raw).0 == key.id,
            BlobKind::Tree | BlobKind::Content => OpenObjects.references(key, raw).is_ok(),
            // Left by earlier versions, never read, collected as garbage.
            BlobKind::Signature => true,
            // Not an open-mode object: `crate::stored_objects::is_whole` checks it.
            BlobKind::Sealed => false,
        }
    }

    /// A tree or content rebuilt from a patch against its previous version.
    ///
    /// # Errors
    /// A patch that does not apply within [`MAX_MESSAGE`].
    pub fn patched(base: &[u8], patch: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        patch::apply(base, patch, MAX_MESSAGE)
    }

    /// The rsync signature of a stored chunk, computed when asked.
    pub fn signature(raw: &[u8]) -> Vec<u8> {
        delta::signature(raw)
    }

    /// Chunk `id` rebuilt from an rsync delta against `base`, if it rebuilds
    /// and hashes to `id`.
    pub fn rebuilt(base: &[u8], delta: &[u8], id: &ChunkId) -> Option<Vec<u8>> {
        delta::apply(base, delta, id).ok()
    }

    /// A stored chunk as a delta against the endpoint's signature of the
    /// chunk it holds at that place.
    ///
    /// # Errors
    /// A signature that does not decode.
    pub fn delta_for(signature: Vec<u8>, raw: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        delta::diff(signature, raw)
    }

    /// The directories a tree names, for a batched tree fetch; none when it
    /// does not decode.
    pub fn subtrees(id: TreeId, raw: &[u8]) -> Vec<TreeId> {
        OpenObjects
            .references(BlobKey::tree(id.0), raw)
            .unwrap_or_default()
            .into_iter()
            .filter(|named| named.kind == BlobKind::Tree)
            .map(|named| TreeId(named.id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_protocol::ids::ChunkId;
    use ferry_protocol::tree::{ChunkRef, ContentPart, Entry};

    fn key_of(content: &Content) -> (BlobKey, Vec<u8>) {
        let (id, raw) = content.encode();
        let key = BlobKey {
            kind: BlobKind::Content,
            id: id.0,
        };
        (key, raw)
    }

    #[test]
    fn a_content_names_its_chunks_in_order_or_its_parts() {
        let chunk = |b: u8| ChunkRef {
            id: ChunkId([b; 32]),
            len: 10,
        };
        let (key, raw) = key_of(&Content {
            chunks: vec![chunk(1), chunk(2)],
            parts: Vec::new(),
        });
        let named: Vec<_> = OpenObjects.references(key, &raw).unwrap();
        assert_eq!(
            named.iter().map(|k| (k.kind, k.id[0])).collect::<Vec<_>>(),
            vec![(BlobKind::Chunk, 1), (BlobKind::Chunk, 2)]
        );
        let part = |b: u8| ContentPart {
            id: ContentId([b; 32]),
            len: 99,
        };
        let (key, raw) = key_of(&Content {
            chunks: Vec::new(),
            parts: vec![part(7), part(8)],
        });
        let named: Vec<_> = OpenObjects.references(key, &raw).unwrap();
        assert_eq!(
            named.iter().map(|k| (k.kind, k.id[0])).collect::<Vec<_>>(),
            vec![(BlobKind::Content, 7), (BlobKind::Content, 8)]
        );
    }

    #[test]
    fn bytes_that_hash_to_another_id_name_nothing() {
        let tree = Tree {
            entries: vec![Entry {
                name: b"d".to_vec(),
                kind: EntryKind::Dir {
                    tree: TreeId([3; 32]),
                },
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime_ns: 0,
                xattrs: Vec::new(),
            }],
        };
        let (id, raw) = tree.encode().unwrap();
        let wrong = BlobKey::tree([0; 32]);
        assert!(OpenObjects.references(wrong, &raw).is_err());
        let right = BlobKey::tree(id.0);
        assert_eq!(OpenObjects.references(right, &raw).unwrap().len(), 1);
    }
}
