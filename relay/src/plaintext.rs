//! Where the relay reads what open-mode objects say: the one module whose
//! code decodes a client's trees and contents for the rules (the commit's
//! closure, the collector's mark). A sealed client's objects carry their
//! references in a clear header and never come here.

use ferry_protocol::ids::{ContentId, TreeId};
use ferry_protocol::tree::{Content, EntryKind, Tree};
use ferry_protocol::ProtocolError;

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
            BlobKind::Chunk | BlobKind::Signature => Ok(Vec::new()),
        }
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
