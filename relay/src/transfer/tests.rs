//! The upload and restore rules, one `Transfer` per client over a real
//! temporary catalog and an in-memory store, no socket.

use super::*;
use crate::catalog::{Catalog, CatalogAt, SnapshotId};
use crate::clock::now_ms;
use crate::store::MemoryStore;
use ferry_protocol::compress::{decompress, Codec};
use ferry_protocol::ids::{ChunkId, ContentId, TreeId};
use ferry_protocol::keys::PublicKey;
use ferry_protocol::message::MAX_UNSYNCED_CHUNKS;
use ferry_protocol::message::{ChunkBatch, ChunkPut, ObjectId, Refusal, MAX_BATCH};
use ferry_protocol::retention::Retention;
use ferry_protocol::tree::{ChunkRef, Entry};
use ferry_protocol::tree::{Content, EntryKind, Tree};
use ferry_protocol::{delta, patch};

/// Runs the named tests of the module it stands in once more, with
/// [`relay_with`] putting the catalog in PostgreSQL (the tests' cluster,
/// `catalog::pg_server`) instead of an SQLite file: the upload, restore
/// and collection rules hold on both engines.
macro_rules! again_on_postgres {
    ($($test:ident),* $(,)?) => {
        mod on_postgres {
            $(
                #[test]
                fn $test() {
                    crate::transfer::tests::ON_POSTGRES.with(|on| on.set(true));
                    super::$test();
                }
            )*
        }
    };
}

mod sealed;
mod storage;

std::thread_local! {
    /// Whether [`relay_with`] puts this test's catalog in PostgreSQL.
    static ON_POSTGRES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A relay's repo: a temporary catalog with clients a and b, and `store`.
fn relay_with(
    dir: &std::path::Path,
    store: impl crate::store::BlobStore + 'static,
) -> (Arc<Repo>, ClientId, ClientId) {
    let at = if ON_POSTGRES.with(std::cell::Cell::get) {
        CatalogAt::Postgres(crate::catalog::pg_server::PgServer::shared().database())
    } else {
        CatalogAt::File(dir.join("catalog.sqlite"))
    };
    let mut catalog = Catalog::open_at(&at).unwrap();
    let mut clients = Vec::new();
    for (name, key) in [("a", 1u8), ("b", 2u8)] {
        let (id, _) = catalog
            .create_pairing(name, 0, i64::MAX, u64::from(key))
            .unwrap()
            .unwrap();
        let crate::catalog::PairOutcome::Paired(client) = catalog
            .complete_pairing(id, &PublicKey([key; 32]), "host", false, 1)
            .unwrap()
        else {
            panic!("pairing")
        };
        clients.push(client.id);
    }
    (
        Arc::new(Repo::new(catalog, at, store)),
        clients[0],
        clients[1],
    )
}

/// [`relay_with`] an empty in-memory store.
fn relay(dir: &std::path::Path) -> (Arc<Repo>, ClientId, ClientId) {
    relay_with(dir, MemoryStore::default())
}

fn begin(t: &mut Transfer) {
    let ready = t
        .handle(Message::BackupBegin {
            set: "default".into(),
            retention: Retention::default(),
        })
        .unwrap();
    assert!(matches!(ready, Some(Message::BackupReady { .. })));
}

fn missing_chunks(t: &mut Transfer, ids: &[ChunkId]) -> Vec<bool> {
    let Some(Message::ChunksMissing { missing }) = t
        .handle(Message::QueryChunks { ids: ids.to_vec() })
        .unwrap()
    else {
        panic!("ChunksMissing")
    };
    (0..ids.len())
        .map(|i| missing[i / 8] & (1 << (i % 8)) != 0)
        .collect()
}

fn missing_objects(t: &mut Transfer, ids: Vec<ObjectId>) -> Vec<ObjectId> {
    let Some(Message::ObjectsMissing { ids }) = t.handle(Message::QueryObjects { ids }).unwrap()
    else {
        panic!("ObjectsMissing")
    };
    ids
}

fn put_chunk(t: &mut Transfer, data: &[u8]) -> ChunkId {
    let id = ChunkId::of(data);
    t.handle(Message::PutChunk {
        id,
        codec: Codec::None,
        data: data.to_vec(),
    })
    .unwrap();
    id
}

fn synced(t: &mut Transfer) -> Vec<ChunkId> {
    let Some(Message::Synced { rejected }) = t.handle(Message::Sync).unwrap() else {
        panic!("Synced")
    };
    rejected
}

/// A content of `chunks` and a root tree with one file of it.
fn file_tree(chunks: &[(ChunkId, usize)]) -> (ContentId, Vec<u8>, TreeId, Vec<u8>) {
    let content = Content {
        chunks: chunks
            .iter()
            .map(|(id, len)| ChunkRef {
                id: *id,
                len: *len as u32,
            })
            .collect(),
        parts: Vec::new(),
    };
    let (content_id, content_bytes) = content.encode();
    let size = chunks.iter().map(|(_, len)| *len as u64).sum();
    let tree = Tree {
        entries: vec![Entry {
            name: b"f".to_vec(),
            kind: EntryKind::File {
                size,
                content: content_id,
                sparse: None,
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            xattrs: Vec::new(),
        }],
    };
    let (tree_id, tree_bytes) = tree.encode().unwrap();
    (content_id, content_bytes, tree_id, tree_bytes)
}

fn put_object(t: &mut Transfer, id: ObjectId, bytes: &[u8]) {
    t.handle(Message::PutObject {
        id,
        codec: Codec::None,
        data: bytes.to_vec(),
    })
    .unwrap();
}

fn commit(t: &mut Transfer, root: TreeId) -> Message {
    t.handle(Message::Commit {
        root,
        files: 1,
        bytes: 1,
        started_ms: 0,
    })
    .unwrap()
    .unwrap()
}

/// Backs up one file of `data` as client `t`; returns the snapshot's ids.
fn backup_one(t: &mut Transfer, data: &[u8]) -> (ChunkId, ContentId, TreeId, SnapshotId) {
    begin(t);
    let chunk = put_chunk(t, data);
    let (content, content_bytes, root, tree_bytes) = file_tree(&[(chunk, data.len())]);
    put_object(t, ObjectId::Content(content), &content_bytes);
    put_object(t, ObjectId::Tree(root), &tree_bytes);
    let Message::Committed { snapshot } = commit(t, root) else {
        panic!("Committed")
    };
    (chunk, content, root, SnapshotId(snapshot))
}

#[test]
fn a_chunk_is_known_once_stored_and_a_wrong_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    begin(&mut t);
    let id = ChunkId::of(b"hello");
    assert_eq!(missing_chunks(&mut t, &[id]), vec![true]);
    put_chunk(&mut t, b"hello");
    assert_eq!(missing_chunks(&mut t, &[id]), vec![false]);
    assert!(synced(&mut t).is_empty());
    let forged = t.handle(Message::PutChunk {
        id: ChunkId::of(b"other"),
        codec: Codec::None,
        data: b"hello".to_vec(),
    });
    assert!(forged.is_err(), "a chunk whose bytes are not its id");
}

#[test]
fn uploads_outside_a_backup_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    let outside = t.handle(Message::PutChunk {
        id: ChunkId::of(b"x"),
        codec: Codec::None,
        data: b"x".to_vec(),
    });
    assert!(outside.is_err());
    assert!(t.handle(Message::Sync).is_err());
}

#[test]
fn a_delta_rebuilds_against_the_base_and_one_that_does_not_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    begin(&mut t);
    let base: Vec<u8> = (0..8192u32).flat_map(|i| i.to_le_bytes()).collect();
    let base_id = put_chunk(&mut t, &base);
    let mut new = base.clone();
    new[100] ^= 1;
    let new_id = ChunkId::of(&new);
    let signature = delta::signature(&base);
    let good = delta::diff(signature, &new).unwrap();
    t.handle(Message::PutDelta {
        id: new_id,
        base: base_id,
        codec: Codec::None,
        delta: good,
    })
    .unwrap();
    assert_eq!(missing_chunks(&mut t, &[new_id]), vec![false]);
    // A delta naming an id its result does not have is reported back.
    let liar = ChunkId::of(b"not what the delta builds");
    let wrong = delta::diff(delta::signature(&base), &new).unwrap();
    t.handle(Message::PutDelta {
        id: liar,
        base: base_id,
        codec: Codec::None,
        delta: wrong,
    })
    .unwrap();
    assert_eq!(synced(&mut t), vec![liar]);
    assert_eq!(missing_chunks(&mut t, &[liar]), vec![true]);
}

#[test]
fn a_commit_whose_closure_is_incomplete_is_refused_and_its_trees_are_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    begin(&mut t);
    // The tree names a content never sent.
    let chunk = put_chunk(&mut t, b"data");
    let (_, _, root, tree_bytes) = file_tree(&[(chunk, 4)]);
    put_object(&mut t, ObjectId::Tree(root), &tree_bytes);
    match commit(&mut t, root) {
        Message::Refused { code, message } => {
            assert_eq!(code, Refusal::IncompleteSnapshot);
            assert!(message.contains("is missing"), "{message}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    // The refused commit's tree was never indexed: the next backup is
    // told it is missing, so it sends it (and what is under it) again.
    begin(&mut t);
    let ids = missing_objects(&mut t, vec![ObjectId::Tree(root)]);
    assert_eq!(ids, vec![ObjectId::Tree(root)]);
}

#[test]
fn a_whole_snapshot_commits_and_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    let (_, _, root, snapshot) = backup_one(&mut t, b"some file data");
    let Some(Message::SnapshotList { snapshots }) =
        t.handle(Message::ListSnapshots { set: None }).unwrap()
    else {
        panic!("SnapshotList")
    };
    assert_eq!(snapshots.len(), 1);
    assert_eq!((snapshots[0].id, snapshots[0].root), (snapshot.0, root));
}

#[test]
fn a_patch_against_a_base_the_relay_lacks_is_dropped_and_the_commit_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    begin(&mut t);
    let chunk = put_chunk(&mut t, b"data");
    let (content, content_bytes, root, tree_bytes) = file_tree(&[(chunk, 4)]);
    put_object(&mut t, ObjectId::Content(content), &content_bytes);
    let base = TreeId([9; 32]);
    t.handle(Message::PutObjectPatch {
        id: ObjectId::Tree(root),
        base: ObjectId::Tree(base),
        patch: patch::diff(b"whatever", &tree_bytes),
    })
    .unwrap();
    assert!(matches!(
        commit(&mut t, root),
        Message::Refused {
            code: Refusal::IncompleteSnapshot,
            ..
        }
    ));
}

#[test]
fn a_client_asking_for_anothers_data_gets_what_it_gets_for_none() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, b) = relay(dir.path());
    let mut ta = Transfer::new(Arc::clone(&repo), a, None);
    let (chunk, content, root, snapshot) = backup_one(&mut ta, b"a's secret");
    let mut tb = Transfer::new(repo, b, None);
    begin(&mut tb);
    let unknown = ChunkId::of(b"nobody has this");
    assert_eq!(missing_chunks(&mut tb, &[chunk, unknown]), vec![true, true]);
    let answer =
        |tb: &mut Transfer, id: ObjectId| match tb.handle(Message::GetObject { id }).unwrap() {
            Some(Message::Refused { code, .. }) => code,
            other => panic!("expected Refused, got {other:?}"),
        };
    assert_eq!(
        answer(&mut tb, ObjectId::Tree(root)),
        answer(&mut tb, ObjectId::Tree(TreeId([3; 32])))
    );
    assert_eq!(
        answer(&mut tb, ObjectId::Content(content)),
        Refusal::NoSuchObject
    );
    let got = tb
        .handle(Message::GetChunk {
            id: chunk,
            base_signature: None,
        })
        .unwrap();
    assert!(matches!(
        got,
        Some(Message::Refused {
            code: Refusal::NoSuchObject,
            ..
        })
    ));
    let Some(Message::SnapshotList { snapshots }) =
        tb.handle(Message::ListSnapshots { set: None }).unwrap()
    else {
        panic!("SnapshotList")
    };
    assert!(snapshots.iter().all(|s| s.id != snapshot.0));
    // B's own copy of the same bytes is B's: it is stored for B.
    put_chunk(&mut tb, b"a's secret");
    assert_eq!(missing_chunks(&mut tb, &[chunk]), vec![false]);
}

#[test]
fn a_restore_gets_a_chunk_whole_or_as_a_delta_against_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    let data: Vec<u8> = (0..16384u32).flat_map(|i| i.to_le_bytes()).collect();
    let (chunk, _, _, _) = backup_one(&mut t, &data);
    let whole = t
        .handle(Message::GetChunk {
            id: chunk,
            base_signature: None,
        })
        .unwrap();
    assert!(matches!(whole, Some(Message::ChunkData { .. })));
    let mut near = data.clone();
    near[5] ^= 1;
    let as_delta = t
        .handle(Message::GetChunk {
            id: chunk,
            base_signature: Some(delta::signature(&near)),
        })
        .unwrap();
    let Some(Message::ChunkDelta { codec, delta: d }) = as_delta else {
        panic!("a delta is smaller than the chunk")
    };
    let d = decompress(codec, d, delta::MAX_DELTA).unwrap();
    assert_eq!(delta::apply(&near, &d, &chunk).unwrap(), data);
}

/// The object `id` as a GetObject answers it, decompressed.
fn get_object(t: &mut Transfer, id: ObjectId) -> Option<Vec<u8>> {
    match t.handle(Message::GetObject { id }).unwrap() {
        Some(Message::Object { codec, data }) => Some(decompress(codec, data, 1 << 20).unwrap()),
        Some(Message::Refused { .. }) => None,
        other => panic!("expected Object, got {other:?}"),
    }
}

#[test]
fn objects_sent_without_asking_are_known_at_once_though_looked_up_together() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    begin(&mut t);
    let chunk = put_chunk(&mut t, b"data");
    let (content, content_bytes, root, tree_bytes) = file_tree(&[(chunk, 4)]);
    put_object(&mut t, ObjectId::Content(content), &content_bytes);
    // Held to be looked up with others, yet read back and known at once.
    assert_eq!(
        get_object(&mut t, ObjectId::Content(content)),
        Some(content_bytes.clone())
    );
    put_object(&mut t, ObjectId::Tree(root), &tree_bytes);
    assert!(missing_objects(&mut t, vec![ObjectId::Tree(root)]).is_empty());
    // A patch against a tree sent a moment ago, and the same tree twice.
    let mut renamed = Tree::decode(&root, &tree_bytes).unwrap();
    renamed.entries[0].name = b"g".to_vec();
    let (renamed_id, renamed_bytes) = renamed.encode().unwrap();
    put_object(&mut t, ObjectId::Tree(root), &tree_bytes);
    t.handle(Message::PutObjectPatch {
        id: ObjectId::Tree(renamed_id),
        base: ObjectId::Tree(root),
        patch: patch::diff(&tree_bytes, &renamed_bytes),
    })
    .unwrap();
    // And one against what that patch makes: both wait to be applied.
    let mut again = Tree::decode(&renamed_id, &renamed_bytes).unwrap();
    again.entries[0].name = b"h".to_vec();
    let (again_id, again_bytes) = again.encode().unwrap();
    t.handle(Message::PutObjectPatch {
        id: ObjectId::Tree(again_id),
        base: ObjectId::Tree(renamed_id),
        patch: patch::diff(&renamed_bytes, &again_bytes),
    })
    .unwrap();
    assert_eq!(
        get_object(&mut t, ObjectId::Tree(renamed_id)),
        Some(renamed_bytes)
    );
    assert!(matches!(
        commit(&mut t, again_id),
        Message::Committed { .. }
    ));
    assert_eq!(
        get_object(&mut t, ObjectId::Tree(again_id)),
        Some(again_bytes)
    );
}

#[test]
fn a_content_waits_for_its_chunks_before_it_is_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    begin(&mut t);
    let data = b"late chunk";
    let chunk = ChunkId::of(data);
    let (content, content_bytes, root, tree_bytes) = file_tree(&[(chunk, data.len())]);
    put_object(&mut t, ObjectId::Content(content), &content_bytes);
    synced(&mut t);
    // Held: a commit now would name a content whose chunk is not stored.
    assert!(t
        .handle(Message::Commit {
            root,
            files: 1,
            bytes: 1,
            started_ms: 0
        })
        .is_err());
    begin(&mut t);
    put_chunk(&mut t, data);
    put_object(&mut t, ObjectId::Content(content), &content_bytes);
    put_object(&mut t, ObjectId::Tree(root), &tree_bytes);
    assert!(matches!(commit(&mut t, root), Message::Committed { .. }));
}

/// Backs up `n` versions of one file with the endpoint hinting
/// `keep_last`, under the relay's `rules`; returns the ids listed after.
fn after_backups(n: usize, hint_last: u32, rules: ferry_protocol::keep::Rules) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None).with_retention_defaults(rules);
    for i in 0..n {
        t.handle(Message::BackupBegin {
            set: "default".into(),
            retention: Retention {
                keep_last: Some(hint_last),
                ..Retention::default()
            },
        })
        .unwrap();
        let data = format!("version {i}");
        let chunk = put_chunk(&mut t, data.as_bytes());
        let (content, content_bytes, root, tree_bytes) = file_tree(&[(chunk, data.len())]);
        put_object(&mut t, ObjectId::Content(content), &content_bytes);
        put_object(&mut t, ObjectId::Tree(root), &tree_bytes);
        assert!(matches!(commit(&mut t, root), Message::Committed { .. }));
    }
    let Some(Message::SnapshotList { snapshots }) =
        t.handle(Message::ListSnapshots { set: None }).unwrap()
    else {
        panic!("SnapshotList")
    };
    snapshots.iter().map(|s| s.id).collect()
}

#[test]
fn the_relays_rules_decide_and_the_endpoints_hints_only_keep_more() {
    use ferry_protocol::keep::{Period, Rules};
    let last = |n| Rules {
        keep_last: Some(n),
        lock: Some(Period::Millis(0)),
        ..Rules::default()
    };
    // No rule on the relay: the endpoint cannot forget anything.
    assert_eq!(after_backups(3, 1, Rules::default()), vec![1, 2, 3]);
    // The relay keeps 3 whatever the endpoint asks; asking for more keeps more.
    assert_eq!(after_backups(5, 1, last(3)), vec![3, 4, 5]);
    assert_eq!(after_backups(5, 4, last(3)), vec![2, 3, 4, 5]);
    // Unless the operator turns it off, the lock keeps every recent one.
    let locked = Rules {
        lock: None,
        ..last(3)
    };
    assert_eq!(after_backups(5, 1, locked), vec![1, 2, 3, 4, 5]);
}

#[test]
fn set_names_that_are_not_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    for bad in ["", "a/b", "tab\there", &"x".repeat(65)] {
        let begun = t.handle(Message::BackupBegin {
            set: bad.into(),
            retention: Retention::default(),
        });
        assert!(begun.is_err(), "{bad:?}");
    }
}

#[test]
fn over_the_internet_a_first_backup_can_be_refused_and_large_files_too() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let policy = InternetPolicy {
        full_backups: false,
        max_file: Some(8),
    };
    let mut t = Transfer::new(Arc::clone(&repo), a, Some(policy));
    let begun = t
        .handle(Message::BackupBegin {
            set: "default".into(),
            retention: Retention::default(),
        })
        .unwrap();
    assert!(matches!(
        begun,
        Some(Message::Refused {
            code: Refusal::FullBackupNeedsLan,
            ..
        })
    ));
    // Once a first backup ran on the LAN, incrementals may come from anywhere.
    backup_one(&mut Transfer::new(Arc::clone(&repo), a, None), b"small");
    let mut t = Transfer::new(repo, a, Some(policy));
    begin(&mut t);
    let chunk = put_chunk(&mut t, b"more than eight bytes");
    let (content, content_bytes, _, _) = file_tree(&[(chunk, 21)]);
    let too_large = t.handle(Message::PutObject {
        id: ObjectId::Content(content),
        codec: Codec::None,
        data: content_bytes,
    });
    assert!(too_large.is_err());
}

#[test]
fn a_second_backup_begin_drops_what_the_first_left_unsynced() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    begin(&mut t);
    let id = put_chunk(&mut t, b"abandoned");
    begin(&mut t);
    assert_eq!(missing_chunks(&mut t, &[id]), vec![true]);
}

#[test]
fn batches_over_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    begin(&mut t);
    let ids = vec![ChunkId::of(b"x"); MAX_BATCH + 1];
    assert!(t.handle(Message::QueryChunks { ids }).is_err());
}

#[test]
fn signatures_are_given_for_stored_chunks_only() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    let (chunk, _, _, _) = backup_one(&mut t, &[7u8; 4096]);
    let Some(Message::Signatures { signatures }) = t
        .handle(Message::GetSignatures {
            ids: vec![chunk, ChunkId::of(b"absent")],
        })
        .unwrap()
    else {
        panic!("Signatures")
    };
    assert!(signatures[0].is_some() && signatures[1].is_none());
}

#[test]
fn a_message_the_relay_never_expects_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    let error = t
        .handle(Message::Committed { snapshot: 1 })
        .unwrap_err()
        .to_string();
    assert!(error.contains("unexpected message Committed"), "{error}");
}

#[test]
fn a_tree_left_by_an_abandoned_upload_cannot_be_committed_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    begin(&mut t);
    // A tree naming a content that was never sent.
    let (content, _, root, tree_bytes) = file_tree(&[(ChunkId::of(b"never sent"), 10)]);
    put_object(&mut t, ObjectId::Tree(root), &tree_bytes);
    assert!(synced(&mut t).is_empty());
    for _ in 0..2 {
        let refused = commit(&mut t, root);
        assert!(
            matches!(
                refused,
                Message::Refused {
                    code: Refusal::IncompleteSnapshot,
                    ..
                }
            ),
            "{refused:?}"
        );
        // A second BackupBegin starts from nothing the first left.
        begin(&mut t);
    }
    let ids = missing_objects(
        &mut t,
        vec![ObjectId::Tree(root), ObjectId::Content(content)],
    );
    assert_eq!(ids.len(), 2, "neither was kept");
}

#[test]
fn chunks_without_a_sync_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    begin(&mut t);
    let batch = |from: usize, count: usize| {
        let puts = (from..from + count)
            .map(|i| ChunkPut::Whole(i.to_le_bytes().to_vec()))
            .collect();
        let data = ChunkBatch(puts).encode().unwrap();
        Message::PutChunks {
            codec: Codec::None,
            data,
        }
    };
    for start in (0..MAX_UNSYNCED_CHUNKS).step_by(MAX_BATCH) {
        t.handle(batch(start, MAX_BATCH)).unwrap();
    }
    let refused = t.handle(batch(MAX_UNSYNCED_CHUNKS, 1)).unwrap_err();
    assert!(matches!(refused, TransferError::Violation(_)), "{refused}");
    assert!(refused.to_string().contains("without a Sync"), "{refused}");
    // A sender that syncs in time is never refused.
    let repo = Arc::clone(&t.repo);
    drop(t);
    let mut t = Transfer::new(repo, a, None);
    begin(&mut t);
    for (n, start) in (0..MAX_UNSYNCED_CHUNKS + 2 * MAX_BATCH)
        .step_by(MAX_BATCH)
        .enumerate()
    {
        t.handle(batch(start, MAX_BATCH)).unwrap();
        if n % 4 == 3 {
            assert!(synced(&mut t).is_empty());
        }
    }
}

#[test]
fn a_client_cannot_make_backup_sets_without_end() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, b) = relay(dir.path());
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    let begin_set = |t: &mut Transfer, set: String| {
        t.handle(Message::BackupBegin {
            set,
            retention: Retention::default(),
        })
    };
    for i in 0..crate::catalog::MAX_SETS {
        begin_set(&mut t, format!("set-{i}")).unwrap();
    }
    let refused = begin_set(&mut t, "one more".into()).unwrap_err();
    assert!(
        refused.to_string().contains("the limit is 256"),
        "{refused}"
    );
    // Its existing sets go on, and other clients are not affected.
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    begin_set(&mut t, "set-7".into()).unwrap();
    let mut other = Transfer::new(repo, b, None);
    begin_set(&mut other, "one more".into()).unwrap();
}

#[test]
fn signature_requests_are_bounded_and_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    let (chunk, _, _, _) = backup_one(&mut t, &[9u8; 8192]);
    let twice = t.handle(Message::GetSignatures {
        ids: vec![chunk; 2],
    });
    assert!(twice.unwrap_err().to_string().contains("asked for twice"));
    let many = (0..=ferry_protocol::message::MAX_SIGNATURES as u32)
        .map(|i| ChunkId::of(&i.to_le_bytes()))
        .collect();
    assert!(t.handle(Message::GetSignatures { ids: many }).is_err());
}

#[test]
fn an_uploads_trees_wait_on_disk_not_in_memory_until_its_commit_indexes_them() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    begin(&mut t);
    let data = b"a file in a tree";
    let chunk = put_chunk(&mut t, data);
    let (content, content_bytes, root, tree_bytes) = file_tree(&[(chunk, data.len())]);
    put_object(&mut t, ObjectId::Content(content), &content_bytes);
    put_object(&mut t, ObjectId::Tree(root), &tree_bytes);
    assert!(synced(&mut t).is_empty());
    let upload = t.upload.as_ref().unwrap();
    assert!(
        upload.pending.is_empty(),
        "nothing held in memory after a sync"
    );
    let staged_as = upload.id;
    assert!(repo
        .catalog(|c| c.staged_tree(staged_as, &root.0))
        .unwrap()
        .is_some());
    // Not indexed: another session of the client is told it is missing.
    let mut other = Transfer::new(Arc::clone(&repo), a, None);
    assert_eq!(
        missing_objects(&mut other, vec![ObjectId::Tree(root)]),
        vec![ObjectId::Tree(root)]
    );
    assert!(matches!(commit(&mut t, root), Message::Committed { .. }));
    assert!(missing_objects(&mut other, vec![ObjectId::Tree(root)]).is_empty());
    assert!(repo
        .catalog(|c| c.staged_tree(staged_as, &root.0))
        .unwrap()
        .is_none());
}

#[test]
fn an_upload_that_ends_without_a_commit_leaves_no_staged_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    begin(&mut t);
    let (_, _, root, tree_bytes) = file_tree(&[]);
    put_object(&mut t, ObjectId::Tree(root), &tree_bytes);
    assert!(synced(&mut t).is_empty());
    let staged_as = t.upload.as_ref().unwrap().id;
    // A second BackupBegin ends the first upload; so would a dropped link.
    begin(&mut t);
    assert!(repo
        .catalog(|c| c.staged_tree(staged_as, &root.0))
        .unwrap()
        .is_none());
    assert_eq!(
        missing_objects(&mut t, vec![ObjectId::Tree(root)]),
        vec![ObjectId::Tree(root)]
    );
}

/// Sends a `Fetch` and decodes its replies.
fn fetch(
    t: &mut Transfer,
    items: Vec<ferry_protocol::fetch::FetchItem>,
) -> Vec<ferry_protocol::fetch::FetchReply> {
    let Some(Message::Fetched { codec, data }) = t
        .handle(Message::Fetch {
            items,
            codec: Codec::Zstd,
        })
        .unwrap()
    else {
        panic!("Fetched")
    };
    let raw = decompress(codec, data, MAX_MESSAGE).unwrap();
    ferry_protocol::fetch::FetchReplies::decode(&raw).unwrap().0
}

#[test]
fn a_fetch_answers_in_order_and_puts_off_what_passes_a_message() {
    use ferry_protocol::fetch::{FetchItem, FetchReply, MAX_FETCH};
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, b) = relay(dir.path());
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    begin(&mut t);
    // 24 incompressible chunks of 200 KiB: 4.7 MiB, more than a message.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let chunks: Vec<Vec<u8>> = (0..24)
        .map(|_| {
            (0..200 * 1024)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        })
        .collect();
    let ids: Vec<ChunkId> = chunks.iter().map(|c| put_chunk(&mut t, c)).collect();
    synced(&mut t);
    let ask = |ids: &[ChunkId]| -> Vec<FetchItem> {
        ids.iter()
            .map(|id| FetchItem::Chunk {
                id: *id,
                base_signature: None,
            })
            .collect()
    };
    let replies = fetch(&mut t, ask(&ids));
    assert_eq!(replies.len(), ids.len());
    let answered = replies
        .iter()
        .take_while(|r| **r != FetchReply::Later)
        .count();
    assert!((15..24).contains(&answered), "{answered} answered");
    assert!(replies[answered..].iter().all(|r| *r == FetchReply::Later));
    for (reply, chunk) in replies.iter().zip(&chunks).take(answered) {
        let FetchReply::Data { codec, data } = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(
            &decompress(*codec, data.clone(), MAX_CHUNK as usize).unwrap(),
            chunk
        );
    }
    // What was put off comes when asked again.
    let again = fetch(&mut t, ask(&ids[answered..]));
    assert!(matches!(again[0], FetchReply::Data { .. }));

    // A snapshot's trees come with the root's, breadth-first.
    let (_, _, below, _) = backup_one(&mut t, b"in a directory");
    begin(&mut t);
    let parent = Tree {
        entries: vec![Entry {
            name: b"d".to_vec(),
            kind: EntryKind::Dir { tree: below },
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            xattrs: Vec::new(),
        }],
    };
    let (root, root_bytes) = parent.encode().unwrap();
    put_object(&mut t, ObjectId::Tree(root), &root_bytes);
    synced(&mut t);
    let replies = fetch(
        &mut t,
        vec![FetchItem::Trees(root), FetchItem::Trees(TreeId([9; 32]))],
    );
    let FetchReply::Trees(trees) = &replies[0] else {
        panic!("{:?}", replies[0])
    };
    let named: Vec<TreeId> = trees.iter().map(|t| TreeId::of(t)).collect();
    assert_eq!(named, vec![root, below]);
    assert!(matches!(
        replies[1],
        FetchReply::Refused {
            code: Refusal::NoSuchObject,
            ..
        }
    ));

    // Another client's chunk is refused in its place, as alone.
    let mut other = Transfer::new(repo, b, None);
    let replies = fetch(&mut other, ask(&ids[..2]));
    assert!(replies.iter().all(|r| matches!(
        r,
        FetchReply::Refused {
            code: Refusal::NoSuchObject,
            ..
        }
    )));
    // More items than allowed end the session as a violation.
    let too_many = vec![FetchItem::Object(ObjectId::Tree(TreeId([1; 32]))); MAX_FETCH + 1];
    assert!(other
        .handle(Message::Fetch {
            items: too_many,
            codec: Codec::None
        })
        .is_err());
}

#[test]
fn a_delta_over_joined_chunks_rebuilds_and_bounds_hold() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(repo, a, None);
    begin(&mut t);
    let first: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let second: Vec<u8> = (0..30_000u32).map(|i| (i * 13 % 241) as u8).collect();
    let (x, y) = (put_chunk(&mut t, &first), put_chunk(&mut t, &second));
    synced(&mut t);
    let signatures = |t: &mut Transfer, bases: Vec<Vec<ChunkId>>| match t
        .handle(Message::GetBaseSignatures { bases })
        .unwrap()
    {
        Some(Message::Signatures { signatures }) => signatures,
        other => panic!("{other:?}"),
    };
    let unknown = ChunkId::of(b"unknown");
    let got = signatures(&mut t, vec![vec![x, y], vec![x, unknown]]);
    assert!(
        got[0].is_some() && got[1].is_none(),
        "a base it lacks has none"
    );
    // A chunk whose boundaries moved: the end of the first and the start
    // of the second, with an edit.
    let mut new = first[15_000..].to_vec();
    new.extend_from_slice(&second[..10_000]);
    new[7_000..7_100].fill(9);
    let delta = delta::diff_over(got[0].clone().unwrap().into_vec(), &new).unwrap();
    assert!(delta.len() < 2_000, "{} bytes", delta.len());
    let id = ChunkId::of(&new);
    let batch = ChunkBatch(vec![ChunkPut::DeltaOver {
        id,
        bases: vec![x, y],
        delta,
    }]);
    t.handle(Message::PutChunks {
        codec: Codec::None,
        data: batch.encode().unwrap(),
    })
    .unwrap();
    assert!(synced(&mut t).is_empty());
    assert_eq!(missing_chunks(&mut t, &[id]), vec![false]);
    // More chunks in a base than allowed end the session.
    assert!(t
        .handle(Message::GetBaseSignatures {
            bases: vec![vec![x; delta::MAX_BASE_CHUNKS + 1]]
        })
        .is_err());
}

/// A paired client holds up to eight sessions, each may back up another of
/// its sets: the quota must hold for all of them together, not for each.
#[test]
fn concurrent_uploads_of_one_client_share_its_quota() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, b) = relay(dir.path());
    let quotas = crate::config::Quotas {
        per_client: Some(100_000),
        warn_percent: 90,
    };
    let session = |client| Transfer::new(Arc::clone(&repo), client, None).with_quotas(quotas);
    let (mut home, mut photos, mut other) = (session(a), session(a), session(b));
    for (t, set) in [
        (&mut home, "home"),
        (&mut photos, "photos"),
        (&mut other, "home"),
    ] {
        begin_set(t, set);
    }
    // Incompressible, 60 kB each: one fits the quota, two do not.
    put_chunk(&mut home, &noise(1));
    refused_for_quota(&mut photos, noise(2));
    put_chunk(&mut other, &noise(3));
    assert!(
        synced(&mut other).is_empty(),
        "another client's quota is its own"
    );

    // What an upload appended and never indexed is charged once it ends:
    // an upload that begins later sees it.
    drop((home, photos));
    let mut after = session(a);
    begin_set(&mut after, "after");
    refused_for_quota(&mut after, noise(8));
    drop(after);

    // An upload that ended after another began still counts for it, and
    // one that begins while another holds unsynced bytes sees them.
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let session = |client| Transfer::new(Arc::clone(&repo), client, None).with_quotas(quotas);
    let mut early = session(a);
    begin_set(&mut early, "early");
    let mut late = session(a);
    begin_set(&mut late, "late");
    put_chunk(&mut late, &noise(4));
    drop(late);
    refused_for_quota(&mut early, noise(5));
    drop(early);

    // Bytes another upload holds unsynced when this one begins count too
    // (the catalog does not know them yet).
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let session = |client| Transfer::new(Arc::clone(&repo), client, None).with_quotas(quotas);
    let mut first = session(a);
    begin_set(&mut first, "first");
    put_chunk(&mut first, &noise(6));
    let mut then = session(a);
    begin_set(&mut then, "then");
    refused_for_quota(&mut then, noise(7));
}

/// Incompressible bytes: what a chunk of them costs is its length.
fn noise(seed: u64) -> Vec<u8> {
    let mut bytes = vec![0; 60_000];
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.finalize_xof().fill(&mut bytes);
    bytes
}

/// Sends `data` as a chunk and asserts the quota refuses it.
fn refused_for_quota(t: &mut Transfer, data: Vec<u8>) {
    let refused = t.handle(Message::PutChunk {
        id: ChunkId::of(&data),
        codec: Codec::None,
        data,
    });
    assert!(
        matches!(refused, Err(TransferError::Quota(_))),
        "this upload must count the client's other uploads: {refused:?}"
    );
}

fn begin_set(t: &mut Transfer, set: &str) {
    let ready = t
        .handle(Message::BackupBegin {
            set: set.into(),
            retention: Retention::default(),
        })
        .unwrap();
    assert!(
        matches!(ready, Some(Message::BackupReady { .. })),
        "{ready:?}"
    );
}

again_on_postgres!(
    a_chunk_is_known_once_stored_and_a_wrong_id_is_refused,
    uploads_outside_a_backup_are_refused,
    a_delta_rebuilds_against_the_base_and_one_that_does_not_is_rejected,
    a_commit_whose_closure_is_incomplete_is_refused_and_its_trees_are_not_kept,
    a_whole_snapshot_commits_and_is_listed,
    a_patch_against_a_base_the_relay_lacks_is_dropped_and_the_commit_refused,
    a_client_asking_for_anothers_data_gets_what_it_gets_for_none,
    a_restore_gets_a_chunk_whole_or_as_a_delta_against_its_own,
    a_content_waits_for_its_chunks_before_it_is_indexed,
    objects_sent_without_asking_are_known_at_once_though_looked_up_together,
    the_relays_rules_decide_and_the_endpoints_hints_only_keep_more,
    set_names_that_are_not_names_are_refused,
    over_the_internet_a_first_backup_can_be_refused_and_large_files_too,
    a_second_backup_begin_drops_what_the_first_left_unsynced,
    batches_over_the_limit_are_refused,
    signatures_are_given_for_stored_chunks_only,
    a_message_the_relay_never_expects_is_named_in_the_error,
    a_tree_left_by_an_abandoned_upload_cannot_be_committed_by_the_next,
    chunks_without_a_sync_are_bounded,
    a_client_cannot_make_backup_sets_without_end,
    signature_requests_are_bounded_and_distinct,
    an_uploads_trees_wait_on_disk_not_in_memory_until_its_commit_indexes_them,
    an_upload_that_ends_without_a_commit_leaves_no_staged_tree,
    a_fetch_answers_in_order_and_puts_off_what_passes_a_message,
    a_delta_over_joined_chunks_rebuilds_and_bounds_hold,
    concurrent_uploads_of_one_client_share_its_quota,
);
