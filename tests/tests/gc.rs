//! Garbage collection with the real binaries: forgotten snapshots' data is
//! deleted and its space given back, everything still referenced restores
//! identical, young data waits out its grace period, and an endpoint whose
//! files cache names collected data recovers.

use std::fs;
use std::path::Path;

use ferry_tests::tree::{listing, random_bytes};
use ferry_tests::{arg, ok, paired, stderr, Endpoint, Relay};

const MIB: usize = 1 << 20;

fn gc(relay: &Relay, grace: &str) -> serde_json::Value {
    let out = ok(relay.admin(&["gc", "--grace", grace, "--json"]));
    serde_json::from_str(&out).expect("gc --json")
}

fn restore_into(endpoint: &Endpoint, snapshot: &str, from: &Path, to: &Path) {
    endpoint.restore_json(&["-b", snapshot, "--map-from", arg(from), "--map-to", arg(to)]);
}

#[test]
fn forgotten_snapshots_are_collected_and_the_rest_restores_identical() {
    let (mut relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("kept.bin"), random_bytes(MIB, 1)).unwrap();
    fs::write(src.join("changing.bin"), random_bytes(2 * MIB, 2)).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    fs::write(src.join("changing.bin"), random_bytes(2 * MIB, 3)).unwrap();
    endpoint.backup_json(&[arg(&src)]);

    // Nothing is garbage while both snapshots exist.
    let report = gc(&relay, "0s");
    assert_eq!(report["snapshots"], 2);
    assert_eq!(report["blobs_deleted"], 0, "{report}");

    ok(relay.admin(&["snapshots", "forget", "1"]));
    // Restarted, the relay appends to a new pack: the old one is sealed and
    // may be rewritten.
    relay.kill_and_restart();
    let before = relay.pack_bytes();
    let report = gc(&relay, "0s");
    eprintln!("figure: gc after forgetting 2 MiB of 5 MiB: {report}");
    assert_eq!(report["snapshots"], 1);
    let unreferenced = report["bytes_unreferenced"].as_u64().unwrap();
    assert!(
        (2 * MIB as u64..2 * MIB as u64 + 200_000).contains(&unreferenced),
        "the old version's chunks and signatures are garbage: {report}"
    );
    assert_eq!(report["packs_repacked"], 1, "{report}");
    let after = relay.pack_bytes();
    assert!(
        before - after >= 2 * MIB as u64,
        "packs went from {before} to {after} bytes"
    );
    assert_eq!(
        report["bytes_freed"].as_u64().unwrap(),
        before - after,
        "{report}"
    );
    relay.wait_for_log("gc: rewrote pack");

    let out = work.path().join("out");
    restore_into(&endpoint, "2", &src, &out);
    assert_eq!(listing(&out), listing(&src), "snapshot 2 after gc");
    let refused = endpoint.ferry(&[
        "restore",
        "-b",
        "1",
        "--map-from",
        arg(&src),
        "--map-to",
        arg(&out),
    ]);
    assert!(!refused.status.success());

    // A second collection finds nothing; backups go on from the files cache.
    assert_eq!(gc(&relay, "0s")["blobs_deleted"], 0);
    let summary = endpoint.backup_json(&[arg(&src)]);
    assert_eq!(summary["files_unchanged"], 2, "{summary}");

    // Offline: with the relay stopped, `gc` runs in place.
    relay.terminate();
    let report = gc(&relay, "0s");
    assert_eq!(report["snapshots"], 2);
    relay.kill_and_restart();
    let out = work.path().join("out3");
    restore_into(&endpoint, "3", &src, &out);
    assert_eq!(
        listing(&out),
        listing(&src),
        "snapshot 3 after an offline gc"
    );
}

#[test]
fn young_garbage_waits_for_its_grace_period() {
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("a.bin"), random_bytes(MIB, 7)).unwrap();
    endpoint.backup_json(&[arg(work.path())]);
    ok(relay.admin(&["snapshots", "forget", "1"]));
    let report = gc(&relay, "1h");
    assert_eq!(report["blobs_deleted"], 0, "{report}");
    assert!(report["blobs_in_grace"].as_u64().unwrap() >= 16, "{report}");
    let report = gc(&relay, "0s");
    assert_eq!(report["blobs_in_grace"], 0, "{report}");
    assert!(report["blobs_deleted"].as_u64().unwrap() >= 16, "{report}");
}

#[test]
fn a_files_cache_naming_collected_data_is_dropped_and_the_backup_recovers_in_the_same_run() {
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), random_bytes(MIB, 11)).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    ok(relay.admin(&["snapshots", "forget", "1"]));
    gc(&relay, "0s");

    // The cache still says a.bin is stored; the relay no longer has it: the
    // commit is refused, the cache cleared, and the backup runs again at once.
    let backup = endpoint.ferry(&["backup", "--json", arg(&src)]);
    let message = stderr(&backup);
    assert!(backup.status.success(), "{message}");
    assert!(
        message.contains("snapshot incomplete")
            && message.contains("files cache was cleared")
            && message.contains("backing up again"),
        "{message}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&backup.stdout).unwrap();
    assert_eq!(summary["files_new"], 1, "{summary}");
    let out = work.path().join("out");
    restore_into(&endpoint, "last", &src, &out);
    assert_eq!(listing(&out), listing(&src));
}

#[test]
fn a_second_server_on_the_same_data_is_refused() {
    let relay = Relay::start();
    let second = relay.admin(&["serve"]);
    assert!(!second.status.success());
    assert!(
        stderr(&second).contains("another ferry-relay is serving"),
        "{}",
        stderr(&second)
    );
}

#[test]
fn a_gc_request_does_not_outlive_the_relay_it_was_made_to() {
    let (mut relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("a.bin"), random_bytes(MIB, 21)).unwrap();
    endpoint.backup_json(&[arg(work.path())]);
    ok(relay.admin(&["snapshots", "forget", "1"]));
    // The relay is frozen, so it cannot answer; then it is killed.
    let pid = relay.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let mut asked = relay.command();
    asked
        .args(["gc", "--grace", "0s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let asked = asked.spawn().unwrap();
    let catalog = relay.data().join("catalog.sqlite");
    ferry_tests::wait_for("the gc request", ferry_tests::DEADLINE, || {
        let db = rusqlite::Connection::open(&catalog).ok()?;
        db.query_row(
            "SELECT 1 FROM settings WHERE key = 'gc_request'",
            [],
            |_| Ok(()),
        )
        .ok()
    });
    relay.kill_and_restart();
    let asked = asked.wait_with_output().unwrap();
    assert!(!asked.status.success());
    assert!(
        stderr(&asked).contains("run `ferry-relay gc` again"),
        "{}",
        stderr(&asked)
    );
    // Nothing was collected unasked: snapshot 1's data is still there.
    relay.wait_for_log("dropping a gc request");
    assert!(!relay.log().contains("gc requested by"), "{}", relay.log());
    let report = gc(&relay, "0s");
    assert!(report["blobs_deleted"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn what_a_young_unreferenced_tree_names_is_kept_with_it() {
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/old.bin"), random_bytes(MIB, 31)).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    // Backup 1's data grows older than the grace period used below.
    let first = std::time::Instant::now();
    ferry_tests::wait_for("a second to pass", ferry_tests::DEADLINE, || {
        (first.elapsed() >= std::time::Duration::from_millis(1500)).then_some(())
    });
    // Backup 2: a new tree for d naming old.bin's (old) content.
    fs::write(src.join("d/new.bin"), random_bytes(1000, 32)).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    ok(relay.admin(&["snapshots", "forget", "1", "2"]));
    ok(relay.admin(&["gc", "--grace", "1s"]));
    // The young tree still exists; what it names must too.
    let summary = endpoint.backup_json(&[arg(&src)]);
    let out = work.path().join("out");
    restore_into(&endpoint, &summary["snapshot"].to_string(), &src, &out);
    assert_eq!(listing(&out), listing(&src));
}

#[test]
fn a_trickling_upload_held_open_does_not_stop_a_collection_from_freeing_dead_bytes() {
    let mut relay = Relay::start_with(ferry_tests::RelayOptions {
        sections: vec![("gc".into(), "max-upload-age = \"3s\"\n".into())],
        ..ferry_tests::RelayOptions::default()
    });
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let work = tempfile::tempdir().unwrap();
    // A stock backup throttled to 2 KiB/s: its 1 MiB would take minutes.
    let slow = work.path().join("slow");
    fs::create_dir_all(&slow).unwrap();
    fs::write(slow.join("trickle.bin"), random_bytes(MIB, 42)).unwrap();
    let trickle = endpoint
        .command()
        .args(["backup", "--set", "slow", "--limit", "2KiB/s", arg(&slow)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    relay.wait_for_log("session opened");
    // Beside it, 3 MiB backed up and forgotten: dead bytes stored after
    // the trickle began, which a collection used to keep for it.
    let old = work.path().join("old");
    fs::create_dir_all(&old).unwrap();
    fs::write(old.join("gone.bin"), random_bytes(3 * MIB, 41)).unwrap();
    let gone = endpoint.backup_json(&["--set", "docs", arg(&old)])["snapshot"]
        .as_u64()
        .unwrap();
    ok(relay.admin(&["snapshots", "forget", &gone.to_string()]));
    // Once the trickle has been open longer than gc.max-upload-age, a
    // collection sweeps them and gives their space back (hang guard:
    // minutes).
    let before = relay.pack_bytes();
    let freed = ferry_tests::wait_for(
        "a collection that frees the dead bytes",
        std::time::Duration::from_secs(180),
        || {
            let report = gc(&relay, "0s");
            let freed = report["bytes_freed"].as_u64().unwrap();
            (freed >= 3 * MIB as u64).then_some(report)
        },
    );
    eprintln!("figure: gc beside a trickling upload: {freed}");
    assert!(before - relay.pack_bytes() >= 3 * MIB as u64);
    relay.wait_for_log("longer than gc.max-upload-age");
    // The trickling backup is ended with one line that says why.
    let out = trickle.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("open longer than the relay allows"), "{err}");
    assert!(relay.is_running());
}
