//! A sealed client's uploads: objects indexed only once what they name is
//! stored, commits by root, fetches bounded, other clients' objects unseen.

use super::*;
use ferry_protocol::message::{StorageId, MAX_UNSYNCED_REFS};
use ferry_protocol::sealed::{seal, SealedKind, SealingKeys, VaultKey};

fn keys() -> SealingKeys {
    SealingKeys::derive(&VaultKey::from_bytes([3; 32]))
}

fn put(t: &mut Transfer, objects: &[&Vec<u8>]) {
    let objects = objects
        .iter()
        .map(|o| serde_bytes::ByteBuf::from(o.to_vec()))
        .collect();
    assert_eq!(t.handle(Message::PutSealed { objects }).unwrap(), None);
}

fn commit(t: &mut Transfer, root: StorageId) -> Message {
    t.handle(Message::CommitSealed {
        root,
        files: 1,
        bytes: 5,
        started_ms: now_ms(),
    })
    .unwrap()
    .unwrap()
}

fn missing(t: &mut Transfer, ids: &[StorageId]) -> Vec<bool> {
    match t
        .handle(Message::QuerySealed { ids: ids.to_vec() })
        .unwrap()
    {
        Some(Message::ChunksMissing { missing }) => (0..ids.len())
            .map(|i| ferry_protocol::message::is_missing(&missing, i))
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_sealed_snapshot_commits_once_everything_its_root_names_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, b) = relay(dir.path());
    let keys = keys();
    let (chunk, chunk_bytes) = seal(&keys, SealedKind::Chunk, vec![], b"hello").unwrap();
    let (tree, tree_bytes) = seal(&keys, SealedKind::Tree, vec![chunk], b"tree").unwrap();
    let (root, root_bytes) = seal(&keys, SealedKind::Root, vec![tree], b"root").unwrap();

    // The tree and root without the chunk they reach: not indexed, refused.
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    begin(&mut t);
    put(&mut t, &[&tree_bytes, &root_bytes]);
    match commit(&mut t, root) {
        Message::Refused { code, .. } => assert_eq!(code, Refusal::IncompleteSnapshot),
        other => panic!("{other:?}"),
    }
    assert_eq!(missing(&mut t, &[chunk, tree, root]), [true, true, true]);

    // Children first: committed, and held.
    begin(&mut t);
    put(&mut t, &[&chunk_bytes, &tree_bytes, &root_bytes]);
    assert!(matches!(commit(&mut t, root), Message::Committed { .. }));
    assert_eq!(missing(&mut t, &[chunk, tree, root]), [false, false, false]);
    match t
        .handle(Message::GetSealed {
            ids: vec![root, chunk],
        })
        .unwrap()
    {
        Some(Message::SealedObjects { objects }) => {
            assert_eq!(objects[0].as_deref(), Some(&root_bytes));
            assert_eq!(objects[1].as_deref(), Some(&chunk_bytes));
        }
        other => panic!("{other:?}"),
    }

    // Another client sees none of it.
    let mut other = Transfer::new(Arc::clone(&repo), b, None);
    match other
        .handle(Message::GetSealed { ids: vec![root] })
        .unwrap()
    {
        Some(Message::SealedObjects { objects }) => assert_eq!(objects, vec![None]),
        other => panic!("{other:?}"),
    }
    begin(&mut other);
    assert_eq!(missing(&mut other, &[chunk]), [true]);
}

#[test]
fn a_sealed_object_that_is_not_one_or_names_too_much_ends_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    begin(&mut t);
    let garbage = serde_bytes::ByteBuf::from(vec![9u8; 100]);
    let err = t
        .handle(Message::PutSealed {
            objects: vec![garbage],
        })
        .unwrap_err();
    assert_eq!(err.refusal(), Refusal::ProtocolViolation);
    drop(t);

    // Trees naming 65,536 objects each, unsynced: past the relay's bound.
    let keys = keys();
    let refs: Vec<StorageId> = (0..65_536u32)
        .map(|i| StorageId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
        .collect();
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    begin(&mut t);
    let mut refused = None;
    for n in 0..(MAX_UNSYNCED_REFS / refs.len() + 1) {
        let (_, tree) = seal(&keys, SealedKind::Tree, refs.clone(), &n.to_le_bytes()).unwrap();
        let objects = vec![serde_bytes::ByteBuf::from(tree)];
        if let Err(e) = t.handle(Message::PutSealed { objects }) {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("refused past the bound");
    assert!(refused.to_string().contains("without a Sync"), "{refused}");
}

fn below(t: &mut Transfer, roots: &[StorageId], room: u32) -> Vec<StorageId> {
    below_with(t, roots, room, true)
}

fn below_with(t: &mut Transfer, roots: &[StorageId], room: u32, contents: bool) -> Vec<StorageId> {
    match t
        .handle(Message::GetSealedBelow {
            roots: roots.to_vec(),
            room,
            contents,
        })
        .unwrap()
    {
        Some(Message::SealedBelow { objects }) => objects.into_iter().map(|(id, _)| id).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_trees_and_contents_below_a_root_come_in_one_reply_without_file_data() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, b) = relay(dir.path());
    let keys = keys();
    let (chunk, chunk_bytes) = seal(&keys, SealedKind::Chunk, vec![], b"data").unwrap();
    let (content, content_bytes) = seal(&keys, SealedKind::Content, vec![chunk], b"c").unwrap();
    let (sub, sub_bytes) = seal(&keys, SealedKind::Tree, vec![content], b"sub").unwrap();
    let (tree, tree_bytes) = seal(&keys, SealedKind::Tree, vec![sub, content], b"t").unwrap();
    let (root, root_bytes) = seal(&keys, SealedKind::Root, vec![tree], b"root").unwrap();
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    begin(&mut t);
    put(
        &mut t,
        &[
            &chunk_bytes,
            &content_bytes,
            &sub_bytes,
            &tree_bytes,
            &root_bytes,
        ],
    );
    assert!(matches!(commit(&mut t, root), Message::Committed { .. }));

    // Breadth first (a tree's refs in their sorted order), each once, the
    // chunk passed over.
    let all = below(&mut t, &[root], u32::MAX);
    assert_eq!(all[..2], [root, tree]);
    let mut rest = all[2..].to_vec();
    rest.sort_unstable();
    let mut expected = vec![sub, content];
    expected.sort_unstable();
    assert_eq!(rest, expected);
    assert_eq!(below(&mut t, &[sub], u32::MAX), [sub, content]);
    // Trees only: the contents neither sent nor followed.
    assert_eq!(below_with(&mut t, &[sub], u32::MAX, false), [sub]);
    assert_eq!(below(&mut t, &[chunk], u32::MAX), Vec::<StorageId>::new());
    // Within the room asked for: the root alone, then nothing.
    let one = root_bytes.len() as u32 + 48;
    assert_eq!(below(&mut t, &[root], one), [root]);
    assert_eq!(below(&mut t, &[root], 10), Vec::<StorageId>::new());
    // Another client reaches nothing; too many roots end the session.
    let mut other = Transfer::new(Arc::clone(&repo), b, None);
    assert_eq!(
        below(&mut other, &[root], u32::MAX),
        Vec::<StorageId>::new()
    );
    let err = other
        .handle(Message::GetSealedBelow {
            roots: vec![root; ferry_protocol::message::MAX_BATCH + 1],
            room: 1,
            contents: true,
        })
        .unwrap_err();
    assert_eq!(err.refusal(), Refusal::ProtocolViolation);
}
