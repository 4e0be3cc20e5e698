//! Nothing committed is ever unrestorable, with the real binaries: a full
//! disk is reported and never corrupts the store, damage in packs is found
//! by `ferry-relay verify` and healed by the next backup, a restore over
//! damage restores everything else, snapshot ids are never reused, and an
//! fsync error is never acknowledged.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use ferry_tests::tree::{listing, random_bytes};
use ferry_tests::{arg, ok, paired, stderr, stdout, Endpoint, Relay, RelayOptions, Unmount};

const MIB: usize = 1 << 20;

/// A source tree of `files` files of 64 KiB and one of `big` MiB.
fn source(root: &Path, files: usize, big: usize, seed: u64) -> PathBuf {
    let src = root.join("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    for i in 0..files {
        let data = random_bytes(64 * 1024, seed * 1000 + i as u64);
        fs::write(src.join("docs").join(format!("f{i:03}.bin")), data).unwrap();
    }
    fs::write(src.join("big.bin"), random_bytes(big * MIB, seed)).unwrap();
    src
}

fn restore(endpoint: &Endpoint, snapshot: &str, from: &Path, to: &Path) -> Output {
    endpoint.ferry(&[
        "restore",
        "-b",
        snapshot,
        "--map-from",
        arg(from),
        "--map-to",
        arg(to),
    ])
}

fn verify(relay: &Relay) -> (Option<i32>, serde_json::Value) {
    let out = relay.admin(&["verify", "--json"]);
    let report = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("verify --json: {e}: {}", stderr(&out)));
    (out.status.code(), report)
}

/// The packs, largest first.
fn packs(relay: &Relay) -> Vec<PathBuf> {
    let mut packs: Vec<PathBuf> = fs::read_dir(relay.data().join("store/packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    packs.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    packs
}

fn flip_byte(path: &Path, offset: u64) {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], offset).unwrap();
}

#[test]
fn a_flipped_byte_is_named_by_verify_healed_by_the_next_backup_and_restores_identical() {
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = source(work.path(), 40, 2, 1);
    endpoint.backup_json(&[arg(&src)]);
    let (code, report) = verify(&relay);
    assert_eq!(code, Some(0), "a fresh store is clean: {report}");
    assert!(report["blobs_checked"].as_u64().unwrap() > 40, "{report}");
    assert_eq!(report["unindexed_tail_bytes"], 0, "{report}");
    // A pack nothing names (an interrupted collection) is not damage.
    let orphan = relay.data().join("store/packs/00009999.pack");
    fs::write(&orphan, b"left by an interrupted collection").unwrap();
    let (code, report) = verify(&relay);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["packs_unnamed"], 1, "{report}");
    fs::remove_file(&orphan).unwrap();

    // One byte in the middle of the pack (file data, with 3.5 MiB of it).
    let pack = packs(&relay).remove(0);
    let middle = fs::metadata(&pack).unwrap().len() / 2;
    flip_byte(&pack, middle);

    // A restore over the damage restores every other file, names the
    // damaged one, exits 3, and puts nothing wrong under a final name.
    let out = work.path().join("out1");
    let restored = restore(&endpoint, "1", &src, &out);
    let message = stderr(&restored);
    assert_eq!(restored.status.code(), Some(3), "{message}");
    let damaged_file = message
        .lines()
        .find_map(|l| l.split("cannot restore ").nth(1)?.split(": damaged").next())
        .unwrap_or_else(|| panic!("the damaged file is named: {message}"))
        .to_string();
    let (got, want) = (listing(&out), listing(&src));
    assert_eq!(got.len(), want.len() - 1, "every file but the damaged one");
    for (path, item) in &got {
        assert_eq!(
            Some(item),
            want.get(path),
            "{}",
            String::from_utf8_lossy(path)
        );
    }

    let (code, report) = verify(&relay);
    assert_eq!(code, Some(3), "{report}");
    let damaged = &report["damaged"][0];
    assert_eq!(damaged["client"], "laptop", "{report}");
    assert_eq!(
        damaged["pack"].as_u64(),
        Some(pack_number(&pack)),
        "{report}"
    );
    let offset = damaged["offset"].as_u64().unwrap();
    let length = damaged["length"].as_u64().unwrap();
    assert!((offset..offset + length).contains(&middle), "{report}");
    assert!(
        damaged["paths"].to_string().contains(&damaged_file),
        "the path that reaches it is named: {report}"
    );
    assert_eq!(
        report["snapshots_damaged"],
        serde_json::json!([1]),
        "{report}"
    );
    let status = endpoint.status_json();
    assert_eq!(
        status["snapshots_damaged"],
        serde_json::json!([1]),
        "{status}"
    );

    // The next backup of the unchanged source sends the damaged data again.
    let summary = endpoint.backup_json(&[arg(&src)]);
    eprintln!("figure: healing backup: {summary}");
    let (code, report) = verify(&relay);
    assert_eq!(code, Some(0), "healed: {report}");
    assert_eq!(report["healed"].as_array().unwrap().len(), 1, "{report}");
    let status = endpoint.status_json();
    assert_eq!(
        status["snapshots_damaged"],
        serde_json::json!([]),
        "{status}"
    );
    assert_eq!(
        status["snapshots_healed"],
        serde_json::json!([1]),
        "{status}"
    );
    for snapshot in ["1", "2"] {
        let out = work.path().join(format!("healed{snapshot}"));
        ok(restore(&endpoint, snapshot, &src, &out));
        assert_eq!(
            listing(&out),
            listing(&src),
            "snapshot {snapshot} after healing"
        );
    }
}

fn pack_number(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

#[test]
fn a_truncated_pack_is_found_and_healed() {
    let (mut relay, endpoint) = paired();
    // Not under /tmp: the truncation takes the snapshot's root tree, and
    // only a backup with the same root heals it; the root holds every
    // ancestor's metadata, and a busy machine (other tests) changes /tmp's
    // between the two backups. A directory of this test's own instead.
    let quiet = Path::new(env!("CARGO_TARGET_TMPDIR")).join("integrity-quiet");
    fs::create_dir_all(&quiet).unwrap();
    let work = tempfile::tempdir_in(&quiet).unwrap();
    let src = source(work.path(), 10, 1, 2);
    endpoint.backup_json(&[arg(&src)]);
    relay.terminate();
    let pack = packs(&relay).remove(0);
    let len = fs::metadata(&pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len - 100_000)
        .unwrap();
    relay.start_again();
    let (code, report) = verify(&relay);
    assert_eq!(code, Some(3), "{report}");
    assert!(
        report["damaged"]
            .to_string()
            .contains("past the end of its pack"),
        "{report}"
    );
    endpoint.backup_json(&[arg(&src)]);
    let (code, report) = verify(&relay);
    assert_eq!(code, Some(0), "{report}");
    let out = work.path().join("out");
    ok(restore(&endpoint, "1", &src, &out));
    assert_eq!(listing(&out), listing(&src));
}

#[test]
fn snapshot_ids_are_never_reused() {
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("a"), b"one").unwrap();
    assert_eq!(endpoint.backup_json(&[arg(work.path())])["snapshot"], 1);
    fs::write(work.path().join("a"), b"two").unwrap();
    assert_eq!(endpoint.backup_json(&[arg(work.path())])["snapshot"], 2);
    ok(relay.admin(&["snapshots", "forget", "2"]));
    fs::write(work.path().join("a"), b"three").unwrap();
    assert_eq!(
        endpoint.backup_json(&[arg(work.path())])["snapshot"],
        3,
        "a forgotten snapshot's number is never given again"
    );
}

#[test]
fn forgetting_the_newest_snapshot_then_collecting_does_not_fail_the_next_backup() {
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = source(work.path(), 5, 1, 3);
    endpoint.backup_json(&[arg(&src)]);
    fs::write(src.join("docs/f000.bin"), random_bytes(70_000, 99)).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    ok(relay.admin(&["snapshots", "forget", "2"]));
    ok(relay.admin(&["gc", "--grace", "0s"]));
    // The endpoint's cache names snapshot 2's trees as bases; they are gone.
    fs::write(src.join("docs/f001.bin"), random_bytes(70_000, 98)).unwrap();
    let summary = endpoint.backup_json(&[arg(&src)]);
    assert_eq!(summary["snapshot"], 3, "{summary}");
    let out = work.path().join("out");
    ok(restore(&endpoint, "3", &src, &out));
    assert_eq!(listing(&out), listing(&src));
}

#[test]
fn an_injected_fsync_error_is_never_acknowledged() {
    let work = tempfile::tempdir().unwrap();
    let trigger = work.path().join("fail-next-fsync");
    let relay = Relay::start_with(RelayOptions {
        env: vec![("FERRY_FAIL_FSYNC".into(), trigger.to_str().unwrap().into())],
        ..RelayOptions::default()
    });
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let src = source(work.path(), 5, 3, 4);
    fs::write(&trigger, b"").unwrap();
    let failed = endpoint.ferry(&["backup", arg(&src)]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        stderr(&failed).contains("the relay's disk failed"),
        "{}",
        stderr(&failed)
    );
    assert!(!trigger.exists(), "the hook fired");
    relay.wait_for_log("an fsync failed");
    let listed = ok(relay.admin(&["snapshots", "list", "--json"]));
    assert_eq!(listed.trim(), "[]", "nothing was committed");
    // The relay goes on serving; the next backup works and restores.
    let summary = endpoint.backup_json(&[arg(&src)]);
    let out = work.path().join("out");
    ok(restore(
        &endpoint,
        &summary["snapshot"].to_string(),
        &src,
        &out,
    ));
    assert_eq!(listing(&out), listing(&src));
    let (code, report) = verify(&relay);
    assert_eq!(code, Some(0), "{report}");
}

#[test]
fn a_full_disk_is_named_and_every_acknowledged_snapshot_restores_identical() {
    let relay = Relay::start_with(RelayOptions {
        tmpfs: Some("24m".into()),
        ..RelayOptions::default()
    });
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let work = tempfile::tempdir().unwrap();
    let small = source(&work.path().join("small"), 10, 6, 5);
    let large = source(&work.path().join("large"), 20, 40, 6);

    assert_eq!(endpoint.backup_json(&[arg(&small)])["snapshot"], 1);
    let failed = endpoint.ferry(&["backup", arg(&large)]);
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    let message = stderr(&failed);
    assert!(
        message.contains("no space left on the relay's disk"),
        "the user is told the relay's disk is full: {message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");

    // Space is freed; the same backup works, without restarting the relay.
    relay.resize_tmpfs("200m");
    let summary = endpoint.backup_json(&[arg(&large)]);
    assert_eq!(summary["snapshot"], 2, "{summary}");
    for (snapshot, src) in [("1", &small), ("2", &large)] {
        let out = work.path().join(format!("out{snapshot}"));
        ok(restore(&endpoint, snapshot, src, &out));
        assert_eq!(listing(&out), listing(src), "snapshot {snapshot}");
    }
    let (code, report) = verify(&relay);
    assert_eq!(code, Some(0), "{report}");
}

#[test]
fn a_damaged_catalog_page_gets_a_clear_message_and_a_repair() {
    let (mut relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = source(work.path(), 30, 1, 7);
    endpoint.backup_json(&[arg(&src)]);
    relay.terminate();

    // Overwrite the first page of an index with garbage.
    let path = relay.data().join("catalog.sqlite");
    let (page_size, root): (u64, u64) = {
        let db = rusqlite::Connection::open(&path).unwrap();
        let page_size = db.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        let root = db
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 'blobs_by_pack'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (page_size, root)
    };
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&vec![0xA5; page_size as usize], (root - 1) * page_size)
        .unwrap();
    drop(file);

    let refused = relay.admin(&["serve"]);
    assert_eq!(refused.status.code(), Some(1));
    let message = stderr(&refused);
    assert!(
        message.contains("damaged") && message.contains("ferry-relay verify --repair-catalog"),
        "{message}"
    );
    let repaired = relay.admin(&["verify", "--repair-catalog"]);
    assert_eq!(repaired.status.code(), Some(0), "{}", stderr(&repaired));
    assert!(
        stderr(&repaired).contains("catalog repaired"),
        "{}",
        stderr(&repaired)
    );
    relay.start_again();
    let out = work.path().join("out");
    ok(restore(&endpoint, "1", &src, &out));
    assert_eq!(listing(&out), listing(&src));
}

#[test]
fn ferry_verify_checks_a_snapshot_end_to_end_and_against_local_files() {
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = source(work.path(), 12, 1, 8);
    endpoint.backup_json(&[arg(&src)]);
    let check = |args: &[&str]| {
        let mut all = vec!["verify", "--json"];
        all.extend_from_slice(args);
        let out = endpoint.ferry(&all);
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("verify --json: {e}: {}", stderr(&out)));
        (out.status.code(), summary, stderr(&out))
    };
    let (code, summary, _) = check(&["--against", "/"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["files_checked"], 13, "{summary}");
    assert_eq!(summary["complete"], true, "{summary}");
    // Trees as subtrees, files a run at a time: not a round trip per file.
    let waits = summary["round_trips"].as_u64().unwrap();
    assert!(waits <= 8, "verify waited {waits} round trips: {summary}");

    // A local change is named as a difference.
    fs::write(src.join("docs/f004.bin"), b"changed").unwrap();
    let (code, summary, message) = check(&["--against", "/"]);
    assert_eq!(code, Some(3), "{summary}");
    assert_eq!(summary["files_differ"], 1, "{summary}");
    assert!(message.contains("f004.bin: differs"), "{message}");

    // Damage on the relay is named, nothing is written, the rest is checked.
    let pack = packs(&relay).remove(0);
    flip_byte(&pack, fs::metadata(&pack).unwrap().len() / 3);
    let (code, summary, message) = check(&[]);
    assert_eq!(code, Some(3), "{summary}");
    assert_eq!(summary["files_damaged"], 1, "{summary}");
    assert_eq!(summary["files_checked"], 12, "{summary}");
    assert!(message.contains("damaged on the relay"), "{message}");

    // Time-boxed: a run that stops at once resumes where it stopped.
    let (_, summary, _) = check(&["--max-duration", "0s"]);
    assert_eq!(summary["complete"], false, "{summary}");
    assert_eq!(summary["files_checked"], 0, "{summary}");
}

/// Unmounts a tmpfs when dropped.
/// Restores the newest snapshot of `src` with `--json` onto a new tmpfs of
/// `size` at `target` (unmounted when the returned guard goes).
fn restore_onto_tmpfs(
    endpoint: &Endpoint,
    src: &Path,
    target: &Path,
    size: &str,
) -> (Output, PathBuf, Unmount) {
    ferry_tests::mount_tmpfs(target, size);
    let unmount = Unmount(target.to_path_buf());
    let out = endpoint.ferry(&[
        "restore",
        "--json",
        "--map-from",
        arg(src),
        "--map-to",
        arg(target),
    ]);
    (out, target.to_path_buf(), unmount)
}

#[test]
fn a_restore_onto_a_full_disk_names_what_did_not_fit_and_leaves_the_rest_whole() {
    // Four 3 MiB files into an 8 MiB filesystem: the stream writes several
    // files at once, and those that run out of room must fail alone, in one
    // line with their count, their temporary files gone; the others restore
    // identical.
    let (_relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4u64 {
        fs::write(src.join(format!("f{i}.bin")), random_bytes(3 << 20, 40 + i)).unwrap();
    }
    endpoint.backup_json(&[arg(&src)]);
    let (out, target, _unmount) =
        restore_onto_tmpfs(&endpoint, &src, &work.path().join("small"), "8m");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let summary: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let failed = summary["errors"].as_u64().unwrap();
    // One line for all that did not fit, with the count; nothing else.
    assert_eq!(summary["did_not_fit"].as_u64(), Some(failed), "{summary}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{failed} file(s): the target's disk is full")),
        "{err}"
    );
    let mut whole = 0;
    for entry in fs::read_dir(&target).unwrap() {
        let name = entry.unwrap().file_name();
        let restored = fs::read(target.join(&name)).unwrap();
        assert_eq!(
            restored,
            fs::read(src.join(&name)).unwrap_or_default(),
            "{name:?} is not a whole restored file (a temporary file left behind?)"
        );
        whole += 1;
    }
    eprintln!("figure: 4 x 3 MiB onto an 8 MiB disk: {whole} restored whole, {failed} named");
    assert!(
        whole >= 1 && failed >= 1,
        "{whole} whole, {failed} failed: {err}"
    );
    assert_eq!(whole + failed, 4, "{err}");
}

#[test]
fn a_restore_onto_a_full_disk_stops_asking_for_what_cannot_fit() {
    // 480 files of 64 KiB (30 MiB) into a 2 MiB filesystem: at most the
    // stream's window (16 MiB) is asked for past the first that fails.
    let (_relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..480u64 {
        fs::write(
            src.join(format!("f{i:03}.bin")),
            random_bytes(64 << 10, 500 + i),
        )
        .unwrap();
    }
    endpoint.backup_json(&[arg(&src)]);
    let (out, _target, _unmount) =
        restore_onto_tmpfs(&endpoint, &src, &work.path().join("tiny"), "2m");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let received = summary["bytes_received"].as_u64().unwrap();
    eprintln!("figure: 30 MiB onto a 2 MiB disk: {received} bytes received; {err}");
    assert!(
        received < 22 << 20,
        "{received} bytes fetched for a 2 MiB disk: it did not stop"
    );
}

#[test]
fn a_relay_stopped_on_a_full_disk_starts_again_and_serves_restores() {
    let mut relay = Relay::start_with(RelayOptions {
        tmpfs: Some("24m".into()),
        ..RelayOptions::default()
    });
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let work = tempfile::tempdir().unwrap();
    let src = source(&work.path().join("src"), 10, 2, 8);
    endpoint.backup_json(&[arg(&src)]);
    // Its addresses pinned in relay.toml (while there is room to write).
    relay.kill_and_restart();
    relay.terminate();
    // Something else fills the disk to the last byte.
    {
        use std::io::Write;
        let mut filler = fs::File::create(relay.data().join("filler")).unwrap();
        let block = vec![0x5a; 64 << 10];
        while filler.write_all(&block).is_ok() {}
        let _ = filler.sync_all();
    }
    let log = work.path().join("relay.log");
    let mut serve = relay.command();
    serve
        .arg("serve")
        .env("RUST_LOG", "info")
        .stderr(fs::File::create(&log).unwrap());
    let mut child = Killed(serve.spawn().unwrap());
    ferry_tests::wait_for("the relay to listen", ferry_tests::DEADLINE, || {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!(
                "the relay exited ({status}) on a full disk:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening:")
            .then_some(())
    });
    // Restores work; a backup is told the disk is full, in one line.
    let out = work.path().join("out");
    ok(restore(&endpoint, "1", &src, &out));
    assert_eq!(listing(&out), listing(&src));
    fs::write(src.join("new.bin"), random_bytes(MIB, 9)).unwrap();
    let refused = endpoint.ferry(&["backup", arg(&src)]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("no space left on the relay's disk"),
        "{}",
        stderr(&refused)
    );
    drop(child);
}

/// A process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
