//! Backup and restore through the real binaries: fidelity, deltas on the
//! wire, unchanged trees, restore with deltas, hostile targets, a killed relay.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ferry_protocol::compress::Codec;
use ferry_tests::tree::{listing, mkfifo, random_bytes, set_mtime, set_xattr};
use ferry_tests::{arg, ok, paired, paired_in, stderr, wait_for, Endpoint, Relay, DEADLINE};

/// A tree holding every case ferry must restore faithfully.
fn fidelity_tree(root: &Path) {
    fs::create_dir_all(root.join("dir/nested/deeper")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("dir/small.txt"), b"hello, ferry\n").unwrap();
    fs::write(root.join("dir/nested/random.bin"), random_bytes(300_000, 1)).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"caf\xe9-not-utf8")),
        b"bytes name",
    )
    .unwrap();
    fs::write(root.join("exec.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("exec.sh"), fs::Permissions::from_mode(0o754)).unwrap();
    fs::write(root.join("private"), b"secret").unwrap();
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("dir/small.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    fs::hard_link(root.join("dir/small.txt"), root.join("hardlink")).unwrap();
    mkfifo(&root.join("fifo"));
    let sparse = fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(20 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"data in the middle", 10 << 20).unwrap();
    drop(sparse);
    set_xattr(&root.join("dir/small.txt"), "user.color", b"blue");
    set_xattr(&root.join("dir"), "user.kind", b"\x00binary\xff");
    for (i, path) in [
        "dir/small.txt",
        "dir/nested/random.bin",
        "empty",
        "exec.sh",
        "link",
        "dangling",
        "fifo",
        "sparse",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(
            &root.join(path),
            1_000_000_000 + i as i64 * 1000,
            123_456_789 + i as i64,
        );
    }
    for (i, dir) in ["dir/nested/deeper", "dir/nested", "dir", "empty-dir"]
        .iter()
        .enumerate()
    {
        set_mtime(&root.join(dir), 1_100_000_000 + i as i64, 987_654_321);
    }
}

#[test]
fn every_kind_of_entry_restores_identical_and_old_snapshots_stay_restorable() {
    every_kind_of_entry_restores_identical(false);
}

#[test]
fn every_kind_of_entry_restores_identical_from_a_sealed_client() {
    every_kind_of_entry_restores_identical(true);
}

/// Modes, xattrs, hardlinks, sparse files, non-UTF-8 names, FIFOs: every
/// snapshot restores identical, whole or narrowed, in either mode.
fn every_kind_of_entry_restores_identical(sealed: bool) {
    let (relay, endpoint) = paired_in(sealed);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fidelity_tree(&src);
    let before = listing(&src);
    assert!(
        before[&b"sparse"[..]].sparse,
        "the test filesystem must support holes"
    );

    let first = endpoint.backup_json(&[arg(&src)]);
    assert_eq!(first["files_new"], 7, "{first}"); // the hard link is not a second file
    let out1 = work.path().join("out1");
    endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&out1)]);
    assert_eq!(listing(&out1), before);

    // Change the source and back it up again; snapshot 1 must still restore identical.
    fs::write(src.join("dir/small.txt"), b"changed").unwrap();
    fs::remove_file(src.join("empty")).unwrap();
    let second = endpoint.backup_json(&[arg(&src)]);
    assert_eq!(second["files_changed"], 1, "{second}");
    let snapshot1 = first["snapshot"].to_string();
    let out2 = work.path().join("out2");
    endpoint.restore_json(&[
        "-b",
        &snapshot1,
        "--map-from",
        arg(&src),
        "--map-to",
        arg(&out2),
    ]);
    assert_eq!(listing(&out2), before);

    // Without --map-from, absolute paths are recreated below the target.
    let out3 = work.path().join("out3");
    endpoint.restore_json(&["-b", &snapshot1, "--map-to", arg(&out3)]);
    assert_eq!(listing(&out3.join(src.strip_prefix("/").unwrap())), before);

    // A PATH narrows the restore.
    let out4 = work.path().join("out4");
    endpoint.restore_json(&[
        "--map-from",
        arg(&src),
        "--map-to",
        arg(&out4),
        arg(&src.join("dir/nested")),
    ]);
    let only: Vec<Vec<u8>> = listing(&out4).into_keys().collect();
    assert_eq!(only[0], b"dir");
    assert!(only.iter().all(|p| p.starts_with(b"dir")), "{only:?}");
    assert!(out4.join("dir/nested/random.bin").exists());
    assert!(!out4.join("dir/small.txt").exists());

    let list: serde_json::Value = serde_json::from_str(&ok(relay.admin(&[
        "snapshots",
        "list",
        "--client",
        "laptop",
        "--json",
    ])))
    .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let table = ok(relay.admin(&["snapshots", "list", "--client", "laptop"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].trim_start().starts_with("ID") && lines[0].contains("CLIENT"),
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[1].contains("laptop"), "{table}");
    let clients = ok(relay.admin(&["clients", "list"]));
    assert!(
        clients
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("laptop ")),
        "{clients}"
    );
    let mine: serde_json::Value =
        serde_json::from_str(&ok(endpoint.ferry(&["snapshots", "--json"]))).unwrap();
    assert_eq!(mine[1]["id"], second["snapshot"]);
}

#[test]
fn an_edit_that_moves_a_chunk_boundary_costs_about_its_size() {
    // 200 overwrites of 4 KiB in 8 MiB of random data: a tenth of them move
    // a chunk boundary, and a new chunk then spans two old ones. Its delta
    // is against both, joined (protocol 1.5), not against the first alone
    // with the rest sent as literals (1.56 MB on the wire that way; about
    // 800 KB of the upload is new random data that no delta can spare).
    let open = boundary_edits_wire(false);
    assert!(
        open < 1_300_000,
        "200 x 4 KiB overwrites moved {open} bytes"
    );
}

#[test]
fn an_edit_that_moves_a_chunk_boundary_costs_about_its_size_sealed() {
    // Sealed, a patch has one base: a new chunk over two old ones is cut
    // again where the second began, and each piece patched against its own
    // (without that, most of such a chunk went whole: 2.1x open's wire on
    // the benchmark's D1 -> D1m, 1.1x with it).
    let sealed = boundary_edits_wire(true);
    assert!(
        sealed < 1_100_000,
        "200 x 4 KiB overwrites moved {sealed} bytes sealed"
    );
}

/// Bytes on the wire for 200 overwrites of 4 KiB in 8 MiB, backed up in
/// either mode; the restore is checked identical.
fn boundary_edits_wire(sealed: bool) -> u64 {
    let (_relay, endpoint) = paired_in(sealed);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("disk.img");
    let mut data = random_bytes(8 << 20, 5);
    fs::write(&file, &data).unwrap();
    endpoint.backup_json(&[arg(&file)]);
    for i in 0..200u64 {
        let at = (i * 1_000_003 + 777) as usize % (data.len() - 4096);
        data[at..at + 4096].copy_from_slice(&random_bytes(4096, 1000 + i));
    }
    fs::write(&file, &data).unwrap();
    let edited = endpoint.backup_json(&[arg(&file)]);
    let wire = edited["bytes_sent"].as_u64().unwrap() + edited["bytes_received"].as_u64().unwrap();
    eprintln!(
        "figure: 200 x 4 KiB overwrites in 8 MiB (sealed: {sealed}): wire = {wire}, {edited}"
    );
    let out = work.path().join("out");
    endpoint.restore_json(&["--map-from", arg(work.path()), "--map-to", arg(&out)]);
    assert_eq!(fs::read(out.join("disk.img")).unwrap(), data);
    wire
}

#[test]
fn scattered_overwrites_and_an_insertion_move_little() {
    let (_relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("big.bin");
    let mut data = random_bytes(40 << 20, 2);
    fs::write(&file, &data).unwrap();
    endpoint.backup_json(&[arg(&file)]);

    for i in 0..20u64 {
        let at = (i * 2_000_003 + 12_345) as usize % (data.len() - 4096);
        data[at..at + 4096].copy_from_slice(&random_bytes(4096, 100 + i));
    }
    fs::write(&file, &data).unwrap();
    let overwrites = endpoint.backup_json(&[arg(&file)]);
    let sent = overwrites["bytes_sent"].as_u64().unwrap();
    eprintln!("figure: 20 x 4 KiB overwrites in 40 MiB: bytes_sent = {sent}");
    assert!(sent < 4 << 20, "20 x 4 KiB overwrites sent {sent} bytes");

    data.insert(data.len() / 2, 0x42);
    fs::write(&file, &data).unwrap();
    let insertion = endpoint.backup_json(&[arg(&file)]);
    let sent = insertion["bytes_sent"].as_u64().unwrap();
    eprintln!("figure: 1-byte insertion in 40 MiB: bytes_sent = {sent}");
    assert!(
        sent < data.len() as u64 / 20,
        "a 1-byte insertion sent {sent} bytes"
    );
    assert!(
        insertion["chunks_delta"].as_u64().unwrap() >= 1,
        "{insertion}"
    );

    let out = work.path().join("out");
    endpoint.restore_json(&["--map-from", arg(work.path()), "--map-to", arg(&out)]);
    assert_eq!(fs::read(out.join("big.bin")).unwrap(), data);
}

#[test]
fn an_unchanged_tree_of_10000_files_costs_a_few_hundred_bytes() {
    let (_relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("many");
    for d in 0..100 {
        let dir = src.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            fs::write(dir.join(format!("f{f:03}")), format!("file {d} {f}\n")).unwrap();
        }
    }
    let first = endpoint.backup_json(&[arg(&src)]);
    assert_eq!(first["files_new"], 10_000);
    let second = endpoint.backup_json(&[arg(&src)]);
    assert_eq!(second["files_unchanged"], 10_000);
    let sent = second["bytes_sent"].as_u64().unwrap();
    eprintln!("figure: unchanged 10,000 files: bytes_sent = {sent}");
    assert!(sent < 16 * 1024, "an unchanged backup sent {sent} bytes");
    assert_eq!(second["bytes_scanned"], 0);
    // Round trips, not directories, are what a slow link multiplies.
    let waits = second["round_trips"].as_u64().unwrap();
    eprintln!("figure: unchanged 10,000 files in 100 directories: round_trips = {waits}");
    // BackupBegin and Commit: nothing is asked about unchanged trees.
    assert!(waits <= 3, "an unchanged backup waited {waits} times");
    // A restore onto a copy that holds it all: the trees come ahead, in
    // windows, not one directory per round trip.
    let copy = work.path().join("copy");
    let out = std::process::Command::new("cp")
        .args(["-a", arg(&src), arg(&copy)])
        .output()
        .unwrap();
    assert!(out.status.success());
    let restored = endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&copy)]);
    let waits = restored["round_trips"].as_u64().unwrap();
    eprintln!(
        "figure: restore of 10,000 files in 100 directories onto a copy: round_trips = {waits}"
    );
    assert!(waits <= 5, "the restore waited {waits} times");

    // One file changed in each of 20 directories, one removed, one added:
    // each changed directory's tree goes as a patch against its previous
    // version, not as 100 entries again.
    for d in 0..20 {
        fs::write(src.join(format!("d{d:03}/f050")), format!("edited {d}\n")).unwrap();
    }
    fs::remove_file(src.join("d050/f000")).unwrap();
    fs::write(src.join("d051/new"), b"new file\n").unwrap();
    let third = endpoint.backup_json(&[arg(&src)]);
    assert_eq!(third["files_changed"], 20, "{third}");
    assert_eq!(third["files_new"], 1, "{third}");
    let patched = third["objects_patched"].as_u64().unwrap();
    assert!(patched >= 23, "22 directories and the root: {third}");
    let sent = third["bytes_sent"].as_u64().unwrap();
    eprintln!("figure: 22 changed directories of 100 files: bytes_sent = {sent}, objects patched = {patched}");
    assert!(sent < 40 * 1024, "22 changed directories sent {sent} bytes");
    let waits = third["round_trips"].as_u64().unwrap();
    eprintln!("figure: 22 changed directories: round_trips = {waits}");
    // Not one per directory nor per level: changed trees go unasked.
    assert!(waits <= 5, "22 changed directories waited {waits} times");
    let out = work.path().join("out");
    endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&out)]);
    assert_eq!(listing(&out), listing(&src));
}

#[test]
fn restoring_onto_the_previous_version_receives_little() {
    let (_relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut data = random_bytes(20 << 20, 3);
    fs::write(src.join("db.img"), &data).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    let target = work.path().join("target");
    endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&target)]);

    // Change 1% of the file: 50 scattered 4 KiB writes.
    for i in 0..50u64 {
        let at = (i * 410_009 + 777) as usize % (data.len() - 4096);
        data[at..at + 4096].copy_from_slice(&random_bytes(4096, 500 + i));
    }
    fs::write(src.join("db.img"), &data).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    let summary = endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&target)]);
    let received = summary["bytes_received"].as_u64().unwrap();
    eprintln!("figure: restore of a 1% change onto 20 MiB: bytes_received = {received}");
    assert!(
        received < data.len() as u64 / 10,
        "restore received {received} bytes: {summary}"
    );
    assert_eq!(fs::read(target.join("db.img")).unwrap(), data);
    // Again: the target already holds it, nothing but metadata moves.
    let again = endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&target)]);
    assert_eq!(again["files_unchanged"], 1, "{again}");

    // Same size and mtime, other bytes: the quick check (as rsync's) trusts
    // the file; --checksum compares content and repairs it.
    let restored = target.join("db.img");
    let mtime = fs::metadata(&restored).unwrap().modified().unwrap();
    let mut damaged = data.clone();
    damaged[1000] ^= 0xff;
    fs::write(&restored, &damaged).unwrap();
    fs::File::options()
        .write(true)
        .open(&restored)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let quick = endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&target)]);
    assert_eq!(quick["files_unchanged"], 1, "{quick}");
    assert_eq!(fs::read(&restored).unwrap(), damaged);
    let checked = endpoint.restore_json(&[
        "--checksum",
        "--map-from",
        arg(&src),
        "--map-to",
        arg(&target),
    ]);
    assert_eq!(checked["files_changed"], 1, "{checked}");
    assert_eq!(fs::read(&restored).unwrap(), data);
    let received = checked["bytes_received"].as_u64().unwrap();
    assert!(received < 200_000, "one damaged chunk: {checked}");
}

#[test]
fn a_restore_of_many_small_files_mixes_chunks_asked_ahead_with_deltas_in_order() {
    let (_relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("m/sub")).unwrap();
    // 300 files, pairs with the same content (one chunk asked once), a
    // subdirectory in the middle of the run, one file of 40 chunks.
    for i in 0..300u64 {
        let name = if i == 150 {
            "m/sub/inner".to_string()
        } else {
            format!("m/f{i:03}")
        };
        fs::write(
            src.join(name),
            random_bytes(2000 + (i as usize % 7) * 300, i / 2),
        )
        .unwrap();
    }
    fs::write(src.join("m/f200"), random_bytes(3 << 20, 7)).unwrap();
    endpoint.backup_json(&[arg(&src)]);

    // The target already holds older versions of some files: those come as
    // deltas among the chunks asked ahead for the others.
    let target = work.path().join("target");
    fs::create_dir_all(target.join("m")).unwrap();
    for i in (5..300u64).step_by(10) {
        let mut old = fs::read(src.join(format!("m/f{i:03}"))).unwrap();
        old[0] ^= 1;
        fs::write(target.join(format!("m/f{i:03}")), old).unwrap();
    }
    // Written after the backup, they are newer: replaced only when asked.
    let summary = endpoint.restore_json(&[
        "--map-from",
        arg(&src),
        "--map-to",
        arg(&target),
        "--overwrite",
        "if-changed",
    ]);
    assert_eq!(summary["errors"], 0, "{summary}");
    let (restored, original) = (listing(&target), listing(&src));
    let differing: Vec<String> = original
        .iter()
        .filter(|(path, item)| restored.get(*path) != Some(item))
        .map(|(path, item)| {
            format!(
                "{}: {item:?} vs {:?}",
                String::from_utf8_lossy(path),
                restored.get(path)
            )
        })
        .collect();
    assert!(differing.is_empty(), "{differing:#?}");
    assert_eq!(restored.len(), original.len());
    assert!(summary["chunks_delta"].as_u64().unwrap() > 0, "{summary}");
}

#[test]
fn a_symlink_planted_in_the_target_is_never_followed() {
    let (_relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/file"), b"payload").unwrap();
    endpoint.backup_json(&[arg(&src)]);
    let outside = work.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let target = work.path().join("target");
    fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("sub")).unwrap();
    let out = endpoint.ferry(&["restore", "--map-from", arg(&src), "--map-to", arg(&target)]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("sub"), "{}", stderr(&out));
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside the target"
    );
}

#[test]
fn unreadable_files_are_named_and_exit_3_with_a_snapshot() {
    let (_relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("fine"), b"ok").unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(src.join("socket")).unwrap();
    let out = endpoint.ferry(&["backup", "--json", arg(&src)]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("socket"), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["files_unreadable"], 1);
    let named = summary["unreadable"][0].as_str().unwrap();
    assert!(named.contains("socket"), "{summary}");
    assert!(summary["snapshot"].as_u64().unwrap() >= 1);
}

#[test]
fn a_relay_killed_mid_backup_keeps_every_snapshot_and_takes_the_next_backup() {
    a_relay_killed_mid_backup_keeps_every_snapshot(false);
}

#[test]
fn a_relay_killed_mid_sealed_backup_keeps_every_snapshot_and_takes_the_next_backup() {
    a_relay_killed_mid_backup_keeps_every_snapshot(true);
}

fn a_relay_killed_mid_backup_keeps_every_snapshot(sealed: bool) {
    let (mut relay, endpoint) = paired_in(sealed);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("small"), b"committed before the crash").unwrap();
    endpoint.backup_json(&[arg(&src)]);
    let committed = listing(&src);

    fs::write(src.join("big"), random_bytes(120 << 20, 4)).unwrap();
    let mut backup = endpoint
        .command()
        .args(["backup", arg(&src)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = relay.pack_bytes();
    wait_for("the relay to be receiving", DEADLINE, || {
        (relay.pack_bytes() > start + (8 << 20)).then_some(())
    });
    relay.kill_and_restart();
    let status = wait_for("the backup to fail", DEADLINE, || {
        backup.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(1));

    let catalog = rusqlite::Connection::open(relay.data().join("catalog.sqlite")).unwrap();
    let check: String = catalog
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let out = work.path().join("out");
    endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&out)]);
    assert_eq!(listing(&out), committed);

    let next = endpoint.backup_json(&[arg(&src)]);
    assert_eq!(next["snapshot"], 2);
    let out2 = work.path().join("out2");
    endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&out2)]);
    assert_eq!(listing(&out2), listing(&src));
}

#[test]
fn a_commands_output_is_backed_up_with_deltas() {
    let (_relay, endpoint) = paired();
    commands_output_is_backed_up_with_deltas(&endpoint);
}

#[test]
fn a_commands_output_is_backed_up_sealed_with_deltas() {
    let relay = Relay::start();
    let endpoint = Endpoint::sealed();
    endpoint.pair_with(&relay, "laptop");
    commands_output_is_backed_up_with_deltas(&endpoint);
}

fn commands_output_is_backed_up_with_deltas(endpoint: &Endpoint) {
    let work = tempfile::tempdir().unwrap();
    let dump = work.path().join("dump-source");
    let mut data = random_bytes(3 << 20, 5);
    fs::write(&dump, &data).unwrap();
    let command = format!("cat {}", arg(&dump));
    let first = endpoint.backup_json(&["--set", "db", "--command", &command, "--name", "dump.sql"]);
    assert!(first["bytes_sent"].as_u64().unwrap() > 3 << 20);
    data[1_000_000..1_000_100].fill(7);
    fs::write(&dump, &data).unwrap();
    let second =
        endpoint.backup_json(&["--set", "db", "--command", &command, "--name", "dump.sql"]);
    assert!(
        second["bytes_sent"].as_u64().unwrap() < 64 << 10,
        "{second}"
    );
    let out = work.path().join("out");
    endpoint.restore_json(&["--set", "db", "--map-to", arg(&out)]);
    assert_eq!(fs::read(out.join("dump.sql")).unwrap(), data);

    let failing = endpoint.ferry(&[
        "backup",
        "--set",
        "db",
        "--command",
        "exit 7",
        "--name",
        "x",
    ]);
    assert_eq!(failing.status.code(), Some(1));
    assert!(stderr(&failing).contains("exit"), "{}", stderr(&failing));
}

#[test]
fn a_hostile_delta_or_a_decompression_bomb_is_rejected_and_the_relay_stays_up() {
    use ferry_protocol::ids::ChunkId;
    use ferry_protocol::message::Message;
    use ferry_tests::RawSession;

    let (mut relay, endpoint) = paired();
    let mut session = RawSession::open(&relay, &endpoint);
    session.send(&Message::BackupBegin {
        set: "default".into(),
        retention: Default::default(),
    });
    assert_eq!(
        session.recv(),
        Some(Message::BackupReady { max_file: None })
    );
    let base = random_bytes(10_000, 9);
    session.send(&Message::PutChunk {
        id: ChunkId::of(&base),
        codec: Codec::None,
        data: base.clone(),
    });
    // A librsync delta whose COPY reaches far past the base.
    let mut delta = vec![0x72, 0x73, 0x02, 0x36, 0x4f];
    delta.extend_from_slice(&1_000_000u32.to_be_bytes());
    delta.extend_from_slice(&100u32.to_be_bytes());
    delta.push(0);
    let wanted = ChunkId::of(b"whatever the attacker claims");
    session.send(&Message::PutDelta {
        id: wanted,
        base: ChunkId::of(&base),
        codec: Codec::None,
        delta,
    });
    session.send(&Message::Sync);
    assert_eq!(
        session.recv(),
        Some(Message::Synced {
            rejected: vec![wanted]
        })
    );

    // An lz4 payload declaring 4 GiB: refused before allocating, session ended.
    let mut bomb = u32::MAX.to_le_bytes().to_vec();
    bomb.extend_from_slice(&[0x1f, 0, 0, 0]);
    session.send(&Message::PutChunk {
        id: ChunkId::of(b"x"),
        codec: Codec::Lz4,
        data: bomb,
    });
    match session.recv() {
        Some(Message::Failed { message }) => {
            assert!(message.contains("exceeds the limit"), "{message}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(session.recv(), None);
    assert!(relay.is_running());
    relay.wait_for_log("exceeds the limit");
    assert_eq!(endpoint.status_json()["path"], "lan");
}

/// Starts `ferry backup SRC` and returns it once the relay's packs hold
/// `bytes`.
fn backup_until_the_relay_holds(
    relay: &ferry_tests::Relay,
    endpoint: &ferry_tests::Endpoint,
    src: &Path,
    bytes: u64,
) -> std::process::Child {
    let backup = endpoint
        .command()
        .args(["backup", arg(src)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the relay to receive the backup", DEADLINE, || {
        (relay.pack_bytes() > bytes).then_some(())
    });
    backup
}

#[test]
fn a_backup_cut_off_by_a_killed_relay_resumes_without_resending_everything() {
    let (mut relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let size = 160usize << 20;
    fs::write(src.join("big"), random_bytes(size, 6)).unwrap();
    let mut backup = backup_until_the_relay_holds(&relay, &endpoint, &src, size as u64 / 2);
    relay.kill_and_restart();
    wait_for("the backup to fail", DEADLINE, || {
        backup.try_wait().unwrap()
    });

    let resumed = endpoint.backup_json(&[arg(&src)]);
    let sent = resumed["bytes_sent"].as_u64().unwrap();
    eprintln!("figure: resumed 160 MiB backup after a SIGKILL at half: bytes_sent = {sent}");
    assert!(
        sent < (size as u64) * 3 / 4,
        "the resumed backup sent {sent} of {size} bytes"
    );
    let out = work.path().join("out");
    endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&out)]);
    assert_eq!(listing(&out), listing(&src));
}

#[test]
fn an_interrupted_restore_resumes_from_what_it_wrote() {
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let size = 40u64 << 20;
    fs::write(src.join("big"), random_bytes(size as usize, 10)).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    ok(relay.admin(&["clients", "limit", "laptop", "4MiB/s"]));
    let target = work.path().join("target");
    let mut restore = endpoint
        .command()
        .args(["restore", "--map-from", arg(&src), "--map-to", arg(&target)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let written = || -> u64 {
        fs::read_dir(&target).map_or(0, |d| {
            d.map(|e| e.unwrap())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                .map(|e| e.metadata().unwrap().len())
                .sum()
        })
    };
    wait_for("half of the file to be restored", DEADLINE, || {
        (written() > size / 2).then_some(())
    });
    restore.kill().unwrap();
    restore.wait().unwrap();
    ok(relay.admin(&["clients", "limit", "laptop", "unlimited"]));
    let resumed = endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&target)]);
    let received = resumed["bytes_received"].as_u64().unwrap();
    eprintln!(
        "figure: restore resumed after a kill at half of 40 MiB: bytes_received = {received}"
    );
    assert!(
        received < size * 3 / 4,
        "the resumed restore received {received} of {size} bytes"
    );
    assert_eq!(listing(&target), listing(&src));
}

#[test]
fn restoring_a_path_the_snapshot_does_not_hold_is_an_error() {
    let (_relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    endpoint.backup_json(&[arg(&src)]);
    let out = endpoint.ferry(&[
        "restore",
        "--map-from",
        "/no/such/dir",
        "--map-to",
        arg(&work.path().join("t")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("holds nothing at /no/such/dir"),
        "{}",
        stderr(&out)
    );
    let out = endpoint.ferry(&[
        "restore",
        "-b",
        "99",
        "--map-to",
        arg(&work.path().join("t")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no snapshot 99"), "{}", stderr(&out));
}

#[test]
fn a_file_that_keeps_changing_while_read_is_reported_not_stored_torn() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let (_relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("steady"), b"steady").unwrap();
    let busy = src.join("busy.log");
    fs::write(&busy, random_bytes(16 << 20, 11)).unwrap();
    // A writer appends to the file all the time the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, busy) = (Arc::clone(&stop), busy.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&busy).unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.write_all(b"log line\n").unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let out = endpoint.ferry(&["backup", "--json", arg(&src)]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("changed while being read"),
        "{}",
        stderr(&out)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["files_unreadable"], 1);
    // The snapshot holds the steady file and no torn copy of the busy one.
    let target = work.path().join("out");
    endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&target)]);
    assert!(target.join("steady").exists());
    assert!(!target.join("busy.log").exists());
}

#[test]
fn a_restore_killed_twice_keeps_what_the_first_run_wrote() {
    use std::os::unix::fs::MetadataExt;
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let size = 24u64 << 20;
    fs::write(src.join("big"), random_bytes(size as usize, 12)).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    ok(relay.admin(&["clients", "limit", "laptop", "4MiB/s"]));
    let target = work.path().join("target");
    let temp = || -> Option<fs::Metadata> {
        fs::read_dir(&target)
            .ok()?
            .map(|e| e.unwrap())
            .find(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .map(|e| e.metadata().unwrap())
    };
    let start = || {
        endpoint
            .command()
            .args(["restore", "--map-from", arg(&src), "--map-to", arg(&target)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = start();
    let reached = wait_for("half of the file to be restored", DEADLINE, || {
        temp().filter(|m| m.len() > size / 2)
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let before = temp().unwrap();
    // The second run is killed as soon as it has touched the file: it must
    // complete the same temporary file, not start a new one from zero.
    let mut second = start();
    let touched = wait_for("the second run to touch the file", DEADLINE, || {
        temp().filter(|m| m.ino() != before.ino() || m.len() > before.len())
    });
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(
        touched.ino(),
        reached.ino(),
        "the temporary file was replaced"
    );
    assert!(temp().unwrap().len() >= before.len());
    ok(relay.admin(&["clients", "limit", "laptop", "unlimited"]));
    let resumed = endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&target)]);
    let received = resumed["bytes_received"].as_u64().unwrap();
    assert!(
        received < size / 2,
        "the third run received {received} of {size} bytes"
    );
    assert_eq!(listing(&target), listing(&src));
}

#[test]
fn a_relay_stopped_by_sigterm_mid_backup_keeps_what_arrived_and_leaves_no_torn_tail() {
    let (mut relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let size = 64usize << 20;
    fs::write(src.join("big"), random_bytes(size, 13)).unwrap();
    let mut backup = backup_until_the_relay_holds(&relay, &endpoint, &src, size as u64 / 3);
    assert!(relay.terminate().success());
    let status = wait_for("the backup to fail", DEADLINE, || {
        backup.try_wait().unwrap()
    });
    assert!(!status.success());
    let held = relay.pack_bytes();
    relay.start_again();
    let log = relay.log();
    assert!(
        log.contains("made durable for its next run"),
        "the upload's data was kept: {log}"
    );
    assert!(!log.contains("torn tail"), "{log}");
    let resumed = endpoint.backup_json(&[arg(&src)]);
    let sent = resumed["bytes_sent"].as_u64().unwrap();
    assert!(
        sent < (size as u64).saturating_sub(held) + (2 << 20),
        "the resumed backup sent {sent} bytes with {held} of {size} already held"
    );
    let out = work.path().join("out");
    endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&out)]);
    assert_eq!(listing(&out), listing(&src));
}
