//! The endpoint's pipelines through the pair harness (`pair/`): backup,
//! restore, verify, the uploader and the fetcher against the relay's real
//! session service over an in-process pipe, no socket and no process.

mod pair;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ferry_endpoint::client::ClientError;
use ferry_endpoint::fetcher::Fetcher;
use ferry_endpoint::restore::Selector;
use ferry_protocol::fetch::{FetchItem, FetchReply};
use ferry_protocol::ids::ChunkId;
use ferry_protocol::message::{Message, Refusal};
use ferry_protocol::retention::Retention;
use ferry_relay::catalog::{BlobKind, SnapshotId};
use ferry_relay::config::Quotas;

use pair::{noise, same_files, write_tree, Pair};

/// A tree of a few small files and one larger one.
fn sample(pair: &Pair, name: &str) -> std::path::PathBuf {
    let src = pair.path(name);
    write_tree(
        &src,
        &[
            ("a.txt", b"hello".to_vec()),
            ("d/b.bin", noise(1, 300_000)),
            ("d/e/c.txt", b"deep".to_vec()),
        ],
    );
    src
}

/// The refusal code a failed pipeline ended with, if it was one.
fn refusal(error: &anyhow::Error) -> Option<Refusal> {
    match error.downcast_ref::<ClientError>()? {
        ClientError::Refused(refused) => refused.code,
        _ => None,
    }
}

/// Restores the newest snapshot of `set` (taken of `src`) into a fresh
/// directory `name` in its own session; returns the directory and summary.
async fn restored(
    pair: &Pair,
    set: &str,
    src: &Path,
    name: &str,
) -> (std::path::PathBuf, ferry_endpoint::restore::Summary) {
    let out = pair.path(name);
    let mut client = pair.connect().await;
    let summary = pair.restore(&mut client, set, src, &out).await.unwrap();
    (out, summary)
}

/// Opens an upload of set `docs` by hand.
async fn begin(client: &mut ferry_endpoint::client::RelayClient) {
    let answer = client
        .request(&Message::BackupBegin {
            set: "docs".into(),
            retention: Retention::default(),
        })
        .await
        .unwrap();
    assert!(matches!(answer, Message::BackupReady { .. }), "{answer:?}");
}

/// A chunk of `data` sent whole, uncompressed.
fn put_chunk(id: ChunkId, data: &[u8]) -> Message {
    Message::PutChunk {
        id,
        codec: ferry_protocol::compress::Codec::None,
        data: data.to_vec(),
    }
}

// --- backup -------------------------------------------------------------

#[tokio::test]
async fn a_backup_and_its_restore_are_identical() {
    let pair = Pair::new();
    let src = sample(&pair, "src");
    let summary = pair.backup_once("docs", &[&src]).await;
    assert_eq!(summary.files, 3);
    assert_eq!(summary.totals.files_new, 3);
    let (out, restored) = restored(&pair, "docs", &src, "out").await;
    assert!(same_files(&src, &out));
    assert_eq!(restored.errors, 0);
}

#[tokio::test]
async fn an_unchanged_second_backup_sends_no_chunk() {
    let pair = Pair::new();
    let src = sample(&pair, "src");
    let first = pair.backup_once("docs", &[&src]).await;
    let second = pair.backup_once("docs", &[&src]).await;
    assert!(first.chunks_sent > 0);
    assert_eq!(second.chunks_sent, 0);
    assert_eq!(second.totals.files_unchanged, 3);
    assert!(second.totals.bytes_sent < first.totals.bytes_sent / 10);
}

#[tokio::test]
async fn an_edit_inside_a_large_file_crosses_as_a_delta() {
    let pair = Pair::new();
    let src = pair.path("src");
    let mut data = noise(2, 2_000_000);
    write_tree(&src, &[("big.bin", data.clone())]);
    pair.backup_once("docs", &[&src]).await;
    data[1_000_000..1_000_010].copy_from_slice(b"0123456789");
    write_tree(&src, &[("big.bin", data)]);
    let second = pair.backup_once("docs", &[&src]).await;
    assert_eq!(second.totals.files_changed, 1);
    assert!(second.chunks_delta >= 1, "{second:?}");
    assert!(
        second.totals.bytes_sent < 100_000,
        "{}",
        second.totals.bytes_sent
    );
    let (out, _) = restored(&pair, "docs", &src, "out").await;
    assert!(same_files(&src, &out));
}

#[tokio::test]
async fn a_second_set_over_the_same_files_sends_no_chunk() {
    let pair = Pair::new();
    let src = sample(&pair, "src");
    pair.backup_once("docs", &[&src]).await;
    let other = pair.backup_once("again", &[&src]).await;
    assert_eq!(other.chunks_sent, 0, "the relay holds every chunk already");
    let (out, _) = restored(&pair, "again", &src, "out").await;
    assert!(same_files(&src, &out));
}

#[tokio::test]
async fn a_backup_of_many_files_waits_for_few_round_trips() {
    let pair = Pair::new();
    let src = pair.path("src");
    let files: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("d{}/f{i}.txt", i % 7), noise(i, 2_000)))
        .collect();
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    write_tree(&src, &files);
    let summary = pair.backup_once("many", &[&src]).await;
    assert_eq!(summary.files, 300);
    assert!(
        summary.totals.round_trips <= 12,
        "{} round trips for 300 files",
        summary.totals.round_trips
    );
}

#[tokio::test]
async fn a_file_removed_between_backups_is_not_restored() {
    let pair = Pair::new();
    let src = sample(&pair, "src");
    pair.backup_once("docs", &[&src]).await;
    std::fs::remove_file(src.join("a.txt")).unwrap();
    pair.backup_once("docs", &[&src]).await;
    let (out, _) = restored(&pair, "docs", &src, "out").await;
    assert!(!out.join("a.txt").exists());
    assert!(same_files(&src, &out));
}

#[tokio::test]
async fn empty_files_and_directories_come_back() {
    let pair = Pair::new();
    let src = pair.path("src");
    write_tree(&src, &[("empty", Vec::new())]);
    std::fs::create_dir_all(src.join("hollow/inner")).unwrap();
    pair.backup_once("docs", &[&src]).await;
    let (out, _) = restored(&pair, "docs", &src, "out").await;
    assert_eq!(std::fs::read(out.join("empty")).unwrap(), b"");
    assert!(out.join("hollow/inner").is_dir());
}

#[tokio::test]
async fn symlinks_and_modes_come_back_as_they_were() {
    let pair = Pair::new();
    let src = pair.path("src");
    write_tree(&src, &[("run.sh", b"#!/bin/sh\n".to_vec())]);
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("run.sh", src.join("link")).unwrap();
    pair.backup_once("docs", &[&src]).await;
    let (out, _) = restored(&pair, "docs", &src, "out").await;
    let mode = std::fs::metadata(out.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o750);
    assert_eq!(
        std::fs::read_link(out.join("link")).unwrap(),
        Path::new("run.sh")
    );
}

#[tokio::test]
async fn modification_times_come_back() {
    let pair = Pair::new();
    let src = pair.path("src");
    write_tree(&src, &[("old.txt", b"old".to_vec())]);
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let file = std::fs::File::options()
        .write(true)
        .open(src.join("old.txt"))
        .unwrap();
    file.set_modified(when).unwrap();
    drop(file);
    pair.backup_once("docs", &[&src]).await;
    let (out, _) = restored(&pair, "docs", &src, "out").await;
    let restored = std::fs::metadata(out.join("old.txt"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(restored, when);
}

#[tokio::test]
async fn a_spent_quota_refuses_the_backup_with_its_code() {
    let pair = Pair::with_quotas(Quotas {
        per_client: Some(100_000),
        warn_percent: 80,
    });
    let src = pair.path("src");
    write_tree(&src, &[("big.bin", noise(3, 1_000_000))]);
    let mut client = pair.connect().await;
    let error = pair.backup(&mut client, "docs", &[&src]).await.unwrap_err();
    assert_eq!(refusal(&error), Some(Refusal::QuotaExceeded), "{error:#}");
    let snapshots = pair.repo.catalog(|c| c.list_snapshots(None, None)).unwrap();
    assert!(snapshots.is_empty(), "nothing committed");
}

#[tokio::test]
async fn a_set_being_backed_up_refuses_a_second_session() {
    let pair = Pair::new();
    let mut first = pair.connect().await;
    let begin = Message::BackupBegin {
        set: "docs".into(),
        retention: Retention::default(),
    };
    assert!(matches!(
        first.request(&begin).await.unwrap(),
        Message::BackupReady { .. }
    ));
    let mut second = pair.connect().await;
    match second.request(&begin).await {
        Err(ClientError::Refused(r)) => assert_eq!(r.code, Some(Refusal::SetBusy)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_cache_that_names_collected_data_is_cleared_and_the_next_backup_whole() {
    let pair = Pair::new();
    let src = sample(&pair, "src");
    pair.backup_once("docs", &[&src]).await;
    // The relay loses the chunks the cache remembers (forgotten, collected).
    let ids: Vec<SnapshotId> = pair
        .repo
        .catalog(|c| c.list_snapshots(None, None))
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    pair.repo.catalog(|c| c.forget_snapshots(&ids)).unwrap();
    ferry_relay::gc_service::collect_leased(
        &pair.repo,
        std::time::Duration::ZERO,
        ferry_relay::clock::now_ms() + 1,
        None,
    )
    .unwrap()
    .expect("no lease to wait for");
    let mut client = pair.connect().await;
    let error = pair.backup(&mut client, "docs", &[&src]).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("files cache was cleared"),
        "{error:#}"
    );
    let again = pair.backup_once("docs", &[&src]).await;
    assert!(again.chunks_sent > 0);
    let (out, _) = restored(&pair, "docs", &src, "out").await;
    assert!(same_files(&src, &out));
}

// --- the client: positional answers, round trips, refusals -----------------

#[tokio::test]
async fn pipelined_answers_come_in_the_order_asked() {
    let pair = Pair::new();
    let mut client = pair.connect().await;
    client.ask(&Message::GetUsage).await.unwrap();
    client
        .ask(&Message::ListSnapshots { set: None })
        .await
        .unwrap();
    client.ask(&Message::Ping { nonce: 7 }).await.unwrap();
    client.ask(&Message::GetDamage).await.unwrap();
    assert_eq!(client.awaited(), 4);
    assert!(matches!(
        client.answer().await.unwrap(),
        Message::Usage { .. }
    ));
    assert!(matches!(
        client.answer().await.unwrap(),
        Message::SnapshotList { .. }
    ));
    assert_eq!(client.answer().await.unwrap(), Message::Pong { nonce: 7 });
    assert!(matches!(
        client.answer().await.unwrap(),
        Message::Damage { .. }
    ));
    assert_eq!(client.awaited(), 0);
}

#[tokio::test]
async fn a_flight_of_requests_costs_one_round_trip() {
    let pair = Pair::new();
    let mut client = pair.connect().await;
    for nonce in 0..5 {
        client.ask(&Message::Ping { nonce }).await.unwrap();
    }
    for _ in 0..5 {
        client.answer().await.unwrap();
    }
    assert_eq!(client.round_trips(), 1);
    for nonce in 0..3 {
        client.request(&Message::Ping { nonce }).await.unwrap();
    }
    assert_eq!(client.round_trips(), 4, "one each when asked one at a time");
}

#[tokio::test]
async fn a_sync_later_is_answered_in_passing() {
    let pair = Pair::new();
    let mut client = pair.connect().await;
    begin(&mut client).await;
    client.sync_later().await.unwrap();
    client.ask(&Message::Ping { nonce: 9 }).await.unwrap();
    assert_eq!(client.answer().await.unwrap(), Message::Pong { nonce: 9 });
    assert!(client.take_rejected().is_empty());
}

#[tokio::test]
async fn a_violation_mid_flight_is_refused_with_its_code_and_ends_the_session() {
    let pair = Pair::new();
    let mut client = pair.connect().await;
    client.ask(&Message::Ping { nonce: 1 }).await.unwrap();
    // No BackupBegin: storing a chunk breaks the protocol's rules.
    client
        .send(&put_chunk(ChunkId::of(b"x"), b"x"))
        .await
        .unwrap();
    client.ask(&Message::Ping { nonce: 2 }).await.unwrap();
    assert_eq!(client.answer().await.unwrap(), Message::Pong { nonce: 1 });
    match client.answer().await {
        Err(ClientError::Refused(r)) => {
            assert_eq!(r.code, Some(Refusal::ProtocolViolation));
            assert!(r.message.contains("outside a backup"), "{}", r.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(client.request(&Message::Ping { nonce: 3 }).await.is_err());
}

#[tokio::test]
async fn a_chunk_that_does_not_match_its_id_is_refused() {
    let pair = Pair::new();
    let mut client = pair.connect().await;
    begin(&mut client).await;
    client
        .send(&put_chunk(ChunkId::of(b"what it claims"), b"what it is"))
        .await
        .unwrap();
    match client.request(&Message::Sync).await {
        Err(ClientError::Refused(r)) => {
            assert_eq!(r.code, Some(Refusal::ProtocolViolation));
            assert!(r.message.contains("does not match its id"), "{}", r.message);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_commit_of_a_root_the_relay_lacks_is_refused_as_incomplete() {
    let pair = Pair::new();
    let mut client = pair.connect().await;
    begin(&mut client).await;
    let commit = Message::Commit {
        root: ferry_protocol::ids::TreeId([9; 32]),
        files: 0,
        bytes: 0,
        started_ms: 0,
    };
    match client.request(&commit).await {
        Err(ClientError::Refused(r)) => assert_eq!(r.code, Some(Refusal::IncompleteSnapshot)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_relay_answers_what_the_client_stores() {
    let pair = Pair::new();
    let src = sample(&pair, "src");
    pair.backup_once("docs", &[&src]).await;
    let mut client = pair.connect().await;
    match client.request(&Message::GetUsage).await.unwrap() {
        Message::Usage { stored, quota, .. } => {
            assert!(stored > 0);
            assert_eq!(quota, None);
        }
        other => panic!("{other:?}"),
    }
    match client
        .request(&Message::ListSnapshots { set: None })
        .await
        .unwrap()
    {
        Message::SnapshotList { snapshots } => {
            assert_eq!(snapshots.len(), 1);
            assert_eq!(snapshots[0].set, "docs");
            assert_eq!(snapshots[0].files, 3);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn every_snapshot_says_why_it_is_kept() {
    let pair = Pair::new();
    let src = sample(&pair, "src");
    pair.backup_once("docs", &[&src]).await;
    pair.backup_once("docs", &[&src]).await;
    let mut client = pair.connect().await;
    match client
        .request(&Message::GetKeptBy {
            set: Some("docs".into()),
        })
        .await
        .unwrap()
    {
        Message::KeptBy { snapshots } => {
            assert_eq!(snapshots.len(), 2);
            assert!(snapshots.iter().all(|(_, why)| !why.is_empty()));
        }
        other => panic!("{other:?}"),
    }
}

// --- restore ----------------------------------------------------------------

#[tokio::test]
async fn a_chosen_snapshot_restores_its_own_version() {
    let pair = Pair::new();
    let src = pair.path("src");
    write_tree(&src, &[("f.txt", b"first".to_vec())]);
    let first = pair.backup_once("docs", &[&src]).await;
    write_tree(&src, &[("f.txt", b"second".to_vec())]);
    pair.backup_once("docs", &[&src]).await;
    let out = pair.path("out");
    let mut request = pair.restore_request("docs", &src, &out);
    request.snapshot = Selector::Id(first.totals.snapshot);
    let mut client = pair.connect().await;
    ferry_endpoint::restore::run(&mut client, &request, &Default::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("f.txt")).unwrap(), b"first");
}

#[tokio::test]
async fn restoring_onto_the_previous_version_receives_little() {
    let pair = Pair::new();
    let src = pair.path("src");
    let mut data = noise(4, 2_000_000);
    write_tree(&src, &[("big.bin", data.clone())]);
    pair.backup_once("docs", &[&src]).await;
    let (out, _) = restored(&pair, "docs", &src, "out").await;
    data[500_000..500_004].copy_from_slice(b"edit");
    write_tree(&src, &[("big.bin", data)]);
    pair.backup_once("docs", &[&src]).await;
    let mut client = pair.connect().await;
    let summary = pair.restore(&mut client, "docs", &src, &out).await.unwrap();
    assert!(same_files(&src, &out));
    assert!(summary.chunks_local > 0, "{summary:?}");
    assert!(summary.totals.bytes_received < 200_000, "{summary:?}");
}

#[tokio::test]
async fn a_restore_of_many_files_waits_for_few_round_trips() {
    let pair = Pair::new();
    let src = pair.path("src");
    let files: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("d{}/f{i}.txt", i % 9), noise(100 + i, 1_500)))
        .collect();
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    write_tree(&src, &files);
    pair.backup_once("many", &[&src]).await;
    let (out, summary) = restored(&pair, "many", &src, "out").await;
    assert!(same_files(&src, &out));
    assert!(
        summary.totals.round_trips <= 12,
        "{} round trips for 300 files",
        summary.totals.round_trips
    );
}

#[tokio::test]
async fn a_damaged_chunk_names_its_file_and_the_rest_restores() {
    let pair = Pair::new();
    let src = pair.path("src");
    write_tree(
        &src,
        &[
            ("good.txt", b"fine".to_vec()),
            ("bad.bin", noise(5, 50_000)),
        ],
    );
    pair.backup_once("docs", &[&src]).await;
    let bad = ChunkId::of(&noise(5, 50_000));
    assert_eq!(pair.damage(BlobKind::Chunk, |id| *id == bad.0), 1);
    let out = pair.path("out");
    let mut client = pair.connect().await;
    let summary = pair.restore(&mut client, "docs", &src, &out).await.unwrap();
    assert_eq!(summary.errors, 1, "{:?}", summary.messages);
    assert!(
        summary.messages.iter().any(|m| m.contains("bad.bin")),
        "{:?}",
        summary.messages
    );
    assert!(!out.join("bad.bin").exists(), "no damaged file is written");
    assert_eq!(std::fs::read(out.join("good.txt")).unwrap(), b"fine");
}

#[tokio::test]
async fn a_damaged_content_names_its_file() {
    let pair = Pair::new();
    let src = pair.path("src");
    write_tree(&src, &[("only.bin", noise(6, 80_000))]);
    pair.backup_once("docs", &[&src]).await;
    assert!(pair.damage(BlobKind::Content, |_| true) >= 1);
    let out = pair.path("out");
    let mut client = pair.connect().await;
    let summary = pair.restore(&mut client, "docs", &src, &out).await.unwrap();
    assert_eq!(summary.errors, 1, "{:?}", summary.messages);
    assert!(
        summary.messages.iter().any(|m| m.contains("only.bin")),
        "{:?}",
        summary.messages
    );
}

#[tokio::test]
async fn only_the_paths_asked_for_are_restored() {
    let pair = Pair::new();
    let src = sample(&pair, "src");
    pair.backup_once("docs", &[&src]).await;
    let out = pair.path("out");
    let mut request = pair.restore_request("docs", &src, &out);
    request.paths = vec![src.join("d/e")];
    let mut client = pair.connect().await;
    ferry_endpoint::restore::run(&mut client, &request, &Default::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("d/e/c.txt")).unwrap(), b"deep");
    assert!(!out.join("a.txt").exists());
    assert!(!out.join("d/b.bin").exists());
}

#[tokio::test]
async fn checksum_finds_a_change_that_kept_size_and_time() {
    let pair = Pair::new();
    let src = pair.path("src");
    write_tree(&src, &[("f.txt", b"aaaa".to_vec())]);
    pair.backup_once("docs", &[&src]).await;
    let (out, _) = restored(&pair, "docs", &src, "out").await;
    let target = out.join("f.txt");
    let mtime = std::fs::metadata(&target).unwrap().modified().unwrap();
    std::fs::write(&target, b"bbbb").unwrap();
    let file = std::fs::File::options().write(true).open(&target).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    let mut request = pair.restore_request("docs", &src, &out);
    let mut client = pair.connect().await;
    ferry_endpoint::restore::run(&mut client, &request, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"bbbb",
        "same size and time: skipped"
    );
    request.checksum = true;
    ferry_endpoint::restore::run(&mut client, &request, &Default::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"aaaa");
}

#[tokio::test]
async fn a_restore_of_a_set_with_no_snapshot_says_so() {
    let pair = Pair::new();
    let src = pair.path("src");
    let out = pair.path("out");
    let mut client = pair.connect().await;
    let error = pair
        .restore(&mut client, "nothing", &src, &out)
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("nothing"), "{error:#}");
}

// --- verify -----------------------------------------------------------------

fn verify_request(pair: &Pair, against: Option<&Path>) -> ferry_endpoint::verify::Request {
    ferry_endpoint::verify::Request {
        set: Some("docs".into()),
        snapshot: Selector::Last,
        against: against.map(Path::to_path_buf),
        max_duration: None,
        progress: pair.dir.path().join("verify-progress.json"),
    }
}

#[tokio::test]
async fn verify_finds_an_intact_snapshot_whole() {
    let pair = Pair::new();
    let src = sample(&pair, "src");
    pair.backup_once("docs", &[&src]).await;
    let mut client = pair.connect().await;
    let summary = ferry_endpoint::verify::run(&mut client, &verify_request(&pair, None))
        .await
        .unwrap();
    assert_eq!(summary.files_checked, 3);
    assert_eq!(summary.files_damaged, 0);
    assert!(summary.complete);
}

#[tokio::test]
async fn verify_names_a_file_whose_chunk_rotted() {
    let pair = Pair::new();
    let src = sample(&pair, "src");
    pair.backup_once("docs", &[&src]).await;
    let rotten = ChunkId::of(b"hello");
    assert_eq!(pair.damage(BlobKind::Chunk, |id| *id == rotten.0), 1);
    let mut client = pair.connect().await;
    let summary = ferry_endpoint::verify::run(&mut client, &verify_request(&pair, None))
        .await
        .unwrap();
    assert_eq!(summary.files_damaged, 1, "{:?}", summary.messages);
    assert!(
        summary.messages.iter().any(|m| m.contains("a.txt")),
        "{:?}",
        summary.messages
    );
}

#[tokio::test]
async fn verify_against_local_files_names_the_one_that_differs() {
    let pair = Pair::new();
    let src = sample(&pair, "src");
    pair.backup_once("docs", &[&src]).await;
    write_tree(&src, &[("a.txt", b"HELLO".to_vec())]);
    let mut client = pair.connect().await;
    let root = Path::new("/");
    let summary = ferry_endpoint::verify::run(&mut client, &verify_request(&pair, Some(root)))
        .await
        .unwrap();
    assert_eq!(summary.files_differ, 1, "{:?}", summary.messages);
    assert!(
        summary.messages.iter().any(|m| m.contains("a.txt")),
        "{:?}",
        summary.messages
    );
}

// --- the fetcher --------------------------------------------------------------

#[tokio::test]
async fn the_fetcher_batches_asks_and_answers_them_in_order() {
    let pair = Pair::new();
    let src = pair.path("src");
    let datas: Vec<Vec<u8>> = (0..5).map(|i| noise(200 + i, 10_000)).collect();
    for (i, data) in datas.iter().enumerate() {
        write_tree(&src, &[(format!("f{i}").as_str(), data.clone())]);
    }
    pair.backup_once("docs", &[&src]).await;
    let mut client = pair.connect().await;
    let mut fetcher = Fetcher::default();
    for data in &datas {
        let item = FetchItem::Chunk {
            id: ChunkId::of(data),
            base_signature: None,
        };
        fetcher.add(&mut client, item, 10_000).await.unwrap();
    }
    let mut got = Vec::new();
    while let Some(replies) = fetcher.next(&mut client).await.unwrap() {
        got.extend(replies);
    }
    assert_eq!(got.len(), 5);
    for (reply, data) in got.into_iter().zip(&datas) {
        match reply {
            FetchReply::Data { codec, data: bytes } => {
                let raw = ferry_protocol::compress::decompress(codec, bytes, 1 << 20).unwrap();
                assert_eq!(&raw, data);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(client.round_trips(), 1, "one batch, one wait");
}

#[tokio::test]
async fn the_fetcher_reports_what_the_client_does_not_hold() {
    let pair = Pair::new();
    let mut client = pair.connect().await;
    let mut fetcher = Fetcher::default();
    let item = FetchItem::Chunk {
        id: ChunkId::of(b"never stored"),
        base_signature: None,
    };
    fetcher.add(&mut client, item, 100).await.unwrap();
    let replies = fetcher.next(&mut client).await.unwrap().unwrap();
    assert!(
        matches!(
            replies[..],
            [FetchReply::Refused {
                code: Refusal::NoSuchObject,
                ..
            }]
        ),
        "{replies:?}"
    );
}

#[tokio::test]
async fn the_uploaders_sync_returns_no_rejection_for_whole_chunks() {
    let pair = Pair::new();
    let mut client = pair.connect().await;
    begin(&mut client).await;
    let data = noise(9, 5_000);
    client
        .send(&put_chunk(ChunkId::of(&data), &data))
        .await
        .unwrap();
    let rejected = ferry_endpoint::uploader::sync(&mut client).await.unwrap();
    assert!(rejected.is_empty());
    match client
        .request(&Message::QueryChunks {
            ids: vec![ChunkId::of(&data)],
        })
        .await
        .unwrap()
    {
        Message::ChunksMissing { missing } => {
            assert!(!ferry_protocol::message::is_missing(&missing, 0))
        }
        other => panic!("{other:?}"),
    }
}
