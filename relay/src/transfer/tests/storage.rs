//! The rules where storage shows through: garbage collection, verify
//! finding and healing damage, a failed fsync.

use super::*;
use crate::catalog::BlobIndex;
use crate::store::BlobReader;

/// A collection of `repo` at `now_ms`, as a relay alone runs it.
fn collect(
    repo: &Repo,
    grace: std::time::Duration,
    now_ms: i64,
) -> anyhow::Result<crate::gc::GcReport> {
    let report = crate::gc_service::collect_leased(repo, grace, now_ms, None)?;
    Ok(report.expect("no lease to wait for"))
}

#[test]
fn gc_collects_what_only_a_forgotten_snapshot_reached() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    let (old_chunk, _, _, first) = backup_one(&mut t, b"first version");
    let (new_chunk, _, _, _) = backup_one(&mut t, b"second version");
    drop(t);
    repo.catalog(|c| c.forget_snapshots(&[first])).unwrap();
    let report = collect(&repo, std::time::Duration::ZERO, now_ms() + 1).unwrap();
    assert_eq!(report.snapshots, 1);
    assert_eq!(report.blobs_deleted, 3, "{report:?}");
    let mut t = Transfer::new(repo, a, None);
    begin(&mut t);
    assert_eq!(
        missing_chunks(&mut t, &[old_chunk, new_chunk]),
        vec![true, false]
    );
}

#[test]
fn gc_deletes_dead_packs_and_rewrites_mostly_dead_ones() {
    let dir = tempfile::tempdir().unwrap();
    // Packs of about one backup each.
    let store = MemoryStore::with_pack_target(256);
    let (repo, a, _) = relay_with(dir.path(), store.clone());
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    let noise = |seed: u8| -> Vec<u8> {
        (0..600u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
            .collect()
    };
    let (_, _, _, first) = backup_one(&mut t, &noise(1));
    let (kept, _, _, _) = backup_one(&mut t, &noise(2));
    drop(t);
    repo.blobs().seal().unwrap();
    let before = store.packs().unwrap().len();
    repo.catalog(|c| c.forget_snapshots(&[first])).unwrap();
    let report = collect(&repo, std::time::Duration::ZERO, now_ms() + 1).unwrap();
    assert!(
        report.packs_deleted + report.packs_repacked >= 1,
        "{report:?}"
    );
    assert!(report.bytes_freed > 0, "{report:?}");
    assert!(store.packs().unwrap().len() <= before);
    let mut t = Transfer::new(repo, a, None);
    let Some(Message::ChunkData { codec, data }) = t
        .handle(Message::GetChunk {
            id: kept,
            base_signature: None,
        })
        .unwrap()
    else {
        panic!("ChunkData")
    };
    assert_eq!(
        decompress(codec, data, MAX_CHUNK as usize).unwrap(),
        noise(2)
    );
}

#[test]
fn verify_finds_a_flipped_byte_and_the_next_upload_heals_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::default();
    let (repo, a, _) = relay_with(dir.path(), store.clone());
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    let data = vec![42u8; 10_000];
    let (chunk, _, _, _) = backup_one(&mut t, &data);
    let at = repo
        .catalog(|c| c.find_blob(a, BlobKind::Chunk, &chunk.0))
        .unwrap()
        .unwrap()
        .at;
    store.flip(&at, 5);
    let catalog = repo.catalog_at().clone();
    let report = crate::verify::run(&catalog, &store, &Default::default()).unwrap();
    assert!(report.is_damaged());
    assert_eq!(report.damaged[0].kind, "chunk");
    begin(&mut t);
    assert_eq!(missing_chunks(&mut t, &[chunk]), vec![true]);
    backup_one(&mut t, &data);
    let report = crate::verify::run(&catalog, &store, &Default::default()).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    assert_eq!(report.healed.len(), 1);
}

#[test]
fn a_failed_fsync_fails_every_upload_with_data_before_it_and_none_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::default();
    let (repo, a, b) = relay_with(dir.path(), store.clone());
    let mut ta = Transfer::new(Arc::clone(&repo), a, None);
    let mut tb = Transfer::new(Arc::clone(&repo), b, None);
    begin(&mut ta);
    begin(&mut tb);
    let lost = put_chunk(&mut ta, b"appended before the failure");
    put_chunk(&mut tb, b"b's data");
    store.fail_next_sync();
    assert!(tb.handle(Message::Sync).is_err(), "b's own fsync failed");
    // A's data shared the pack whose fsync failed: never acknowledged.
    let error = ta.handle(Message::Sync).unwrap_err().to_string();
    assert!(error.contains("an fsync failed"), "{error}");
    // An upload that appends only after the failure is unaffected (the
    // failed one's session is over: one upload per set at a time).
    drop(ta);
    let mut tc = Transfer::new(repo, a, None);
    begin(&mut tc);
    let kept = put_chunk(&mut tc, b"appended after the failure");
    assert!(synced(&mut tc).is_empty());
    assert_eq!(missing_chunks(&mut tc, &[lost, kept]), vec![true, false]);
}

#[test]
fn verify_names_every_snapshot_and_path_that_reach_a_damaged_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::default();
    let (repo, a, _) = relay_with(dir.path(), store.clone());
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    let (_, content, _, first) = backup_one(&mut t, b"the same file twice");
    let (_, _, _, second) = backup_one(&mut t, b"the same file twice");
    let at = repo
        .catalog(|c| c.find_blob(a, BlobKind::Content, &content.0))
        .unwrap()
        .unwrap()
        .at;
    store.flip(&at, 0);
    let catalog = repo.catalog_at().clone();
    let report = crate::verify::run(&catalog, &store, &Default::default()).unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    let damaged = &report.damaged[0];
    assert_eq!(damaged.kind, "content");
    assert_eq!(damaged.snapshots, vec![first, second]);
    assert_eq!(damaged.paths, vec!["/f".to_string()]);
    assert_eq!(report.snapshots_damaged, vec![first, second]);
    // The next backup is told the content is missing, so sends it again.
    begin(&mut t);
    let ids = missing_objects(&mut t, vec![ObjectId::Content(content)]);
    assert_eq!(ids, vec![ObjectId::Content(content)]);
}

#[test]
fn gc_reports_a_snapshot_naming_a_missing_blob_and_collects_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    let (old_chunk, _, _, first) = backup_one(&mut t, b"first version");
    let (_, content, _, second) = backup_one(&mut t, b"second version");
    let (_, _, _, third) = backup_one(&mut t, b"third version");
    drop(t);
    repo.catalog(|c| c.forget_snapshots(&[first])).unwrap();
    // The second snapshot's content row goes (a catalog that lost it).
    rusqlite::Connection::open(dir.path().join("catalog.sqlite"))
        .unwrap()
        .execute("DELETE FROM blobs WHERE id = ?1", [&content.0[..]])
        .unwrap();
    let report = collect(&repo, std::time::Duration::ZERO, now_ms() + 1).unwrap();
    assert_eq!(report.snapshots_damaged, vec![second.0], "{report:?}");
    assert!(
        report.blobs_deleted >= 3,
        "the first snapshot's went: {report:?}"
    );
    let mut t = Transfer::new(repo, a, None);
    begin(&mut t);
    assert_eq!(missing_chunks(&mut t, &[old_chunk]), vec![true]);
    let Some(Message::SnapshotList { snapshots }) =
        t.handle(Message::ListSnapshots { set: None }).unwrap()
    else {
        panic!("SnapshotList")
    };
    let ids: Vec<u64> = snapshots.iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![second.0, third.0]);
}

/// What an open upload was told exists survives a collection that runs
/// beside it (neither waits), and the collection still takes the rest.
#[test]
fn gc_beside_an_open_upload_keeps_what_it_reused_and_collects_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    let (reused, _, root, first) = backup_one(&mut t, b"a file the laptop still has");
    let (dropped, _, _, second) = backup_one(&mut t, b"a file the laptop deleted");
    repo.catalog(|c| c.forget_snapshots(&[first, second]))
        .unwrap();
    repo.catalog(|c| c.age_blobs(60_000)).unwrap();
    // The next backup names the first file again: its tree and chunk exist.
    begin(&mut t);
    let ids = missing_objects(&mut t, vec![ObjectId::Tree(root)]);
    assert!(ids.is_empty(), "the old tree is there to reuse");
    assert_eq!(missing_chunks(&mut t, &[reused]), vec![false]);
    // A collection now (a grace of zero, a minute on) runs at once.
    let report = collect(&repo, std::time::Duration::ZERO, now_ms() + 60_000).unwrap();
    assert_eq!(report.snapshots, 0);
    assert!(
        report.blobs_deleted >= 3,
        "the deleted file's blobs go: {report:?}"
    );
    assert!(matches!(commit(&mut t, root), Message::Committed { .. }));
    // Once committed, the reused blobs are the new snapshot's: kept for good.
    let report = collect(&repo, std::time::Duration::ZERO, now_ms() + 3_600_000).unwrap();
    assert_eq!(
        (report.snapshots, report.blobs_deleted),
        (1, 0),
        "{report:?}"
    );
    begin(&mut t);
    assert_eq!(
        missing_chunks(&mut t, &[reused, dropped]),
        vec![false, true]
    );
}

/// Blobs an open upload appended and has not indexed (trees wait for the
/// commit) sit in a pack no row names; a collection must not delete it.
#[test]
fn gc_beside_an_open_upload_leaves_the_packs_it_writes_to() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::with_pack_target(64);
    let (repo, a, _) = relay_with(dir.path(), store.clone());
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    begin(&mut t);
    let data = vec![7u8; 200];
    let chunk = put_chunk(&mut t, &data);
    let (content, content_bytes, root, tree_bytes) = file_tree(&[(chunk, data.len())]);
    put_object(&mut t, ObjectId::Content(content), &content_bytes);
    put_object(&mut t, ObjectId::Tree(root), &tree_bytes);
    assert!(synced(&mut t).is_empty());
    // The tree's pack is sealed and no row names it yet.
    repo.blobs().seal().unwrap();
    let report = collect(&repo, std::time::Duration::ZERO, now_ms() + 60_000).unwrap();
    assert_eq!(report.packs_deleted, 0, "{report:?}");
    assert!(matches!(commit(&mut t, root), Message::Committed { .. }));
    let Some(Message::Object { .. }) = t
        .handle(Message::GetObject {
            id: ObjectId::Tree(root),
        })
        .unwrap()
    else {
        panic!("the committed tree is readable")
    };
}

/// Blobs sent again that the client has stored are stamped as reused in
/// batches, not one by one; one a collection removes before its batch is
/// stamped is appended from the bytes sent, so the commit still holds.
#[test]
fn blobs_sent_again_and_collected_before_their_stamp_are_kept_from_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    let data = b"a file sent again by a laptop that lost its files cache";
    let (_, content, root, first) = backup_one(&mut t, data);
    repo.catalog(|c| c.forget_snapshots(&[first])).unwrap();
    repo.catalog(|c| c.age_blobs(60_000)).unwrap();
    begin(&mut t);
    put_chunk(&mut t, data);
    let (_, content_bytes, _, tree_bytes) = file_tree(&[(ChunkId::of(data), data.len())]);
    put_object(&mut t, ObjectId::Content(content), &content_bytes);
    put_object(&mut t, ObjectId::Tree(root), &tree_bytes);
    // Held, not stamped yet: a collection now removes all three.
    let report = collect(&repo, std::time::Duration::ZERO, now_ms() + 60_000).unwrap();
    assert_eq!(report.blobs_deleted, 3, "{report:?}");
    assert!(matches!(commit(&mut t, root), Message::Committed { .. }));
    let Some(Message::ChunkData { data: stored, .. }) = t
        .handle(Message::GetChunk {
            id: ChunkId::of(data),
            base_signature: None,
        })
        .unwrap()
    else {
        panic!("the chunk sent again is stored")
    };
    assert_eq!(stored, data);
}

#[test]
fn relays_sharing_a_catalog_collect_in_turn_and_a_stale_lease_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = relay(dir.path());
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    let (_, _, _, first) = backup_one(&mut t, b"first version");
    backup_one(&mut t, b"second version");
    drop(t);
    repo.catalog(|c| c.forget_snapshots(&[first])).unwrap();
    let grace = std::time::Duration::ZERO;
    let lease = std::time::Duration::from_secs(60);
    repo.set_relay(3, lease);
    // Relay 7 holds the lease: relay 3 leaves the collection to it.
    let held = repo
        .catalog(|c| c.take_lease(crate::gc::GC_LEASE, 7, now_ms(), 60_000))
        .unwrap()
        .unwrap();
    let waited = crate::gc_service::collect_leased(&repo, grace, now_ms() + 1, None).unwrap();
    assert_eq!(waited, None, "left to relay 7");
    // A holder whose lease was taken over (it was stopped past it) is
    // fenced off: its collection fails before deleting a row.
    repo.catalog(|c| c.release_lease(crate::gc::GC_LEASE, &held))
        .unwrap();
    let mut catalog = crate::catalog::Catalog::open_at(repo.catalog_at()).unwrap();
    let stale = crate::gc::Fence::take(&mut catalog, 7, lease)
        .unwrap()
        .unwrap();
    // Two minutes on, its lease long expired, relay 3 takes the lease.
    let other = repo
        .catalog(|c| c.take_lease(crate::gc::GC_LEASE, 3, now_ms() + 120_000, 60_000))
        .unwrap()
        .unwrap();
    assert!(other.token > held.token);
    let refused = crate::gc::collect(
        &mut catalog,
        repo.blobs(),
        repo.uploads(),
        grace,
        now_ms() + 1,
        &stale,
    )
    .unwrap_err();
    assert!(
        format!("{refused:#}").contains("taken by another relay"),
        "{refused:#}"
    );
    repo.catalog(|c| c.release_lease(crate::gc::GC_LEASE, &other))
        .unwrap();
    let report = crate::gc_service::collect_leased(&repo, grace, now_ms() + 1, None)
        .unwrap()
        .unwrap();
    assert_eq!(
        report.blobs_deleted, 3,
        "nothing was deleted before: {report:?}"
    );
    assert_eq!(
        repo.catalog(|c| c.lease(crate::gc::GC_LEASE, now_ms()))
            .unwrap(),
        None,
        "given back"
    );
}

#[test]
fn a_shared_store_deletes_an_emptied_pack_only_a_grace_period_later() {
    let dir = tempfile::tempdir().unwrap();
    let settings = crate::store::moto::Moto::shared().settings("condemned", 0);
    let store = crate::store::S3Store::open(&settings, &dir.path().join("s3"), 1).unwrap();
    let (repo, a, _) = relay_with(dir.path(), store);
    let mut t = Transfer::new(Arc::clone(&repo), a, None);
    let (_, _, _, first) = backup_one(&mut t, b"first version, alone in its pack");
    let (kept, _, _, _) = backup_one(&mut t, b"second version");
    drop(t);
    repo.catalog(|c| c.forget_snapshots(&[first])).unwrap();
    let packs = || repo.blobs().store().packs().unwrap().len();
    let before = packs();
    let hour = 3_600_000;
    let grace = std::time::Duration::from_millis(hour as u64);
    // Two hours on, the first snapshot's blobs are swept and its pack is
    // emptied: condemned, not deleted (a relay may still be reading it).
    let later = now_ms() + 2 * hour;
    let report = collect(&repo, grace, later).unwrap();
    assert!(report.blobs_deleted > 0, "{report:?}");
    assert_eq!(report.packs_deleted, 0, "{report:?}");
    assert_eq!(packs(), before);
    // A grace period after it was condemned, it goes.
    let report = collect(&repo, grace, later + 2 * hour).unwrap();
    assert!(report.packs_deleted >= 1, "{report:?}");
    assert!(packs() < before);
    let mut t = Transfer::new(repo, a, None);
    begin(&mut t);
    assert_eq!(
        missing_chunks(&mut t, &[kept]),
        vec![false],
        "the rest is kept"
    );
}

// (Not gc_reports_a_snapshot_naming_a_missing_blob_and_collects_the_rest:
// it deletes a row through the SQLite file itself.)
again_on_postgres!(
    gc_collects_what_only_a_forgotten_snapshot_reached,
    gc_deletes_dead_packs_and_rewrites_mostly_dead_ones,
    verify_finds_a_flipped_byte_and_the_next_upload_heals_it,
    a_failed_fsync_fails_every_upload_with_data_before_it_and_none_after,
    verify_names_every_snapshot_and_path_that_reach_a_damaged_content,
    gc_beside_an_open_upload_keeps_what_it_reused_and_collects_the_rest,
    gc_beside_an_open_upload_leaves_the_packs_it_writes_to,
    blobs_sent_again_and_collected_before_their_stamp_are_kept_from_what_was_sent,
    relays_sharing_a_catalog_collect_in_turn_and_a_stale_lease_deletes_nothing,
    a_shared_store_deletes_an_emptied_pack_only_a_grace_period_later,
);
