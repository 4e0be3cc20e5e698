//! Sealed mode through the real binaries: the relay stores nothing it can
//! read, deltas still cross the wire, restores are identical.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use ferry_tests::tree::{listing, random_bytes};
use ferry_tests::{arg, ok, stderr, Endpoint, Relay};

/// A 40-character marker no file of the system holds.
const MARKER: &str = "ferry-sealed-marker-7d1c9a0e5b3f2468aaaa";

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(listing) = fs::read_dir(dir) else {
        return found;
    };
    for item in listing.flatten() {
        let path = item.path();
        if path
            .as_os_str()
            .as_bytes()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if meta.is_file() {
            let bytes = fs::read(&path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

fn paired_sealed() -> (Relay, Endpoint) {
    let relay = Relay::start();
    let endpoint = Endpoint::sealed();
    let out = endpoint.pair_with(&relay, "laptop");
    assert!(out.contains("mode:                 sealed"), "{out}");
    (relay, endpoint)
}

#[test]
fn the_relay_keeps_no_name_and_no_byte_it_could_read() {
    let (relay, endpoint) = paired_sealed();
    let work = tempfile::tempdir().unwrap();
    // The path backed up names the marker too: the snapshot's label
    // (host and paths) is sealed, and the relay learns no path from it.
    let src = work.path().join(format!("src-{MARKER}"));
    let named = src.join(format!("dir-{MARKER}"));
    fs::create_dir_all(&named).unwrap();
    let mut text = Vec::new();
    for i in 0..2000 {
        text.extend_from_slice(format!("line {i}: {MARKER}\n").as_bytes());
    }
    fs::write(named.join(format!("{MARKER}.txt")), &text).unwrap();
    fs::write(src.join("random.bin"), random_bytes(700_000, 3)).unwrap();
    let first = endpoint.backup_json(&[arg(&src)]);
    assert_eq!(first["files_new"], 2, "{first}");
    // A second backup of a changed file: a patch, still sealed.
    text.extend_from_slice(MARKER.as_bytes());
    fs::write(named.join(format!("{MARKER}.txt")), &text).unwrap();
    endpoint.backup_json(&[arg(&src)]);

    let leaks = files_holding(&relay.data(), MARKER.as_bytes());
    assert!(
        leaks.is_empty(),
        "the relay's data directory names or holds the marker: {leaks:?}"
    );
    assert!(
        !relay.log().contains(MARKER),
        "the relay's log names the marker"
    );
    let list: serde_json::Value =
        serde_json::from_str(&ok(relay.admin(&["clients", "list", "--json"]))).unwrap();
    assert_eq!(list[0]["mode"], "sealed", "{list}");

    let out = work.path().join("out");
    endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&out)]);
    assert_eq!(listing(&out), listing(&src));
}

/// The bytes an incremental backup sends after a 1-byte edit in the middle
/// of a `len`-byte file, for a client paired sealed or open.
fn one_byte_edit_bytes_sent(sealed: bool, len: usize) -> (u64, serde_json::Value) {
    let relay = Relay::start();
    let endpoint = Endpoint::in_mode(sealed);
    endpoint.pair_with(&relay, "laptop");
    if sealed {
        // A fixed vault key: the keyed cuts, and so the figure, are the
        // same every run (with a new key each run a 1-byte edit in 16 MiB
        // cost 3.7-4.9 kB: where the cuts fall decides the patch).
        let key = endpoint.state().join("keys/vault.key");
        fs::write(&key, format!("{}\n", "5e".repeat(32))).unwrap();
        fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut data = random_bytes(len, 11);
    fs::write(src.join("big.bin"), &data).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    data[len / 2] ^= 0x5a;
    fs::write(src.join("big.bin"), &data).unwrap();
    let second = endpoint.backup_json(&[arg(&src)]);
    let out = work.path().join("out");
    endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&out)]);
    assert_eq!(fs::read(out.join("big.bin")).unwrap(), data);
    (second["bytes_sent"].as_u64().unwrap(), second)
}

#[test]
fn a_one_byte_edit_sealed_costs_about_what_it_costs_open() {
    let len = 16 << 20;
    let (open, _) = one_byte_edit_bytes_sent(false, len);
    let (sealed, summary) = one_byte_edit_bytes_sent(true, len);
    eprintln!("1-byte edit in {len} bytes: open sent {open} bytes, sealed {sealed}");
    assert_eq!(summary["chunks_delta"], 1, "{summary}");
    assert!(sealed * 10 <= open * 18, "sealed {sealed} vs open {open}");
    assert!(
        sealed < 64 * 1024,
        "sealed sent {sealed} bytes: more than a chunk"
    );
}

#[test]
fn the_lost_laptop_drill_restores_a_sealed_history_with_the_passphrase() {
    let (relay, lost) = paired_sealed();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::write(src.join("docs/thesis.txt"), random_bytes(200_000, 5)).unwrap();
    fs::write(src.join("notes"), b"remember the milk").unwrap();
    lost.backup_json(&[arg(&src)]);
    let (found, right) = take_over(&relay, &lost, work.path());

    // A wrong passphrase: one line, nothing written.
    let wrong = work.path().join("wrong");
    fs::write(&wrong, "river cobalt maple seventy-one").unwrap();
    let out_dir = work.path().join("out");
    let restore = |passphrase: &Path| restore_with(&found, passphrase, &src, &out_dir);
    let refused = restore(&wrong);
    assert_eq!(refused.status.code(), Some(1));
    let err = stderr(&refused);
    assert!(err.contains("passphrase does not open"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!out_dir.exists(), "a wrong passphrase wrote the target");
    assert!(!found.state().join("keys/vault.key").exists());

    let restored = restore(&right);
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert_eq!(listing(&out_dir), listing(&src));

    // The new machine goes on with the same history; the old key is refused.
    fs::write(src.join("notes"), b"remember the milk and the eggs").unwrap();
    found.backup_json(&[arg(&src)]);
    let old = lost.ferry(&["backup", arg(&src)]);
    assert_ne!(old.status.code(), Some(0));
    assert!(
        stderr(&old).contains("not paired") || stderr(&old).contains("refused"),
        "{}",
        stderr(&old)
    );
}

/// The lost-laptop takeover: `lost` sets a passphrase, the relay hands
/// its client to a new machine, which pairs. Returns the new machine and
/// the passphrase's file.
fn take_over(relay: &Relay, lost: &Endpoint, work: &Path) -> (Endpoint, std::path::PathBuf) {
    let passphrase = work.join("passphrase");
    fs::write(&passphrase, "river cobalt maple seventy\n").unwrap();
    ok(lost.ferry(&["key", "passphrase", "--passphrase-file", arg(&passphrase)]));
    let out = ok(relay.admin(&["pair", "--name", "laptop", "--replace", "--json"]));
    let code: serde_json::Value = serde_json::from_str(&out).unwrap();
    let found = Endpoint::sealed();
    ok(found.try_pair(relay, code["code"].as_str().unwrap()));
    (found, passphrase)
}

/// `ferry restore --map-from FROM --map-to TO` with the passphrase in
/// `FERRY_PASSPHRASE_FILE`.
fn restore_with(
    endpoint: &Endpoint,
    passphrase: &Path,
    from: &Path,
    to: &Path,
) -> std::process::Output {
    endpoint
        .command()
        .args(["restore", "--map-from", arg(from), "--map-to", arg(to)])
        .env("FERRY_PASSPHRASE_FILE", passphrase)
        .output()
        .unwrap()
}

/// `ferry-relay verify --json` and its exit code.
fn verify(relay: &Relay) -> (Option<i32>, serde_json::Value) {
    let out = relay.admin(&["verify", "--json"]);
    let report = serde_json::from_str(&ferry_tests::stdout(&out)).expect("verify --json");
    (out.status.code(), report)
}

/// The relay's pack files.
fn packs(relay: &Relay) -> Vec<std::path::PathBuf> {
    let mut packs: Vec<_> = fs::read_dir(relay.data().join("store/packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    packs.sort();
    packs
}

fn restore_into(endpoint: &Endpoint, snapshot: &str, from: &Path, to: &Path) {
    endpoint.restore_json(&["-b", snapshot, "--map-from", arg(from), "--map-to", arg(to)]);
}

#[test]
fn a_flipped_byte_in_a_sealed_pack_is_found_by_ids_alone_and_healed_by_the_next_backup() {
    let (relay, endpoint) = paired_sealed();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..20 {
        fs::write(
            src.join(format!("f{i}")),
            random_bytes(20_000 + i * 1000, i as u64),
        )
        .unwrap();
    }
    fs::write(src.join("big"), random_bytes(3 << 20, 99)).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    let (code, report) = verify(&relay);
    assert_eq!(code, Some(0), "{report}");

    let pack = packs(&relay).remove(0);
    let middle = fs::metadata(&pack).unwrap().len() / 2;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pack)
        .unwrap();
    let mut byte = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, middle).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 0x40], middle).unwrap();

    let (code, report) = verify(&relay);
    assert_eq!(code, Some(3), "{report}");
    assert_eq!(
        report["snapshots_damaged"],
        serde_json::json!([1]),
        "{report}"
    );
    assert!(
        !report.to_string().contains("/f"),
        "verify names no file: {report}"
    );

    // A restore over the damage refuses the altered object in one line.
    let out = work.path().join("damaged");
    let refused = endpoint.ferry(&["restore", "--map-from", arg(&src), "--map-to", arg(&out)]);
    assert_ne!(refused.status.code(), Some(0));
    assert_eq!(stderr(&refused).lines().count(), 1, "{}", stderr(&refused));

    // The next backup of the unchanged source sends the damaged object again.
    endpoint.backup_json(&[arg(&src)]);
    let (code, report) = verify(&relay);
    assert_eq!(code, Some(0), "healed: {report}");
    for snapshot in ["1", "2"] {
        let out = work.path().join(format!("healed{snapshot}"));
        restore_into(&endpoint, snapshot, &src, &out);
        assert_eq!(listing(&out), listing(&src), "snapshot {snapshot}");
    }
}

#[test]
fn sealed_snapshots_are_forgotten_by_the_relays_retention_and_collected_by_ids() {
    let (mut relay, endpoint) = paired_sealed();
    relay.keep_last_unlocked("laptop", 1, &[]);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("kept.bin"), random_bytes(1 << 20, 1)).unwrap();
    fs::write(src.join("changing.bin"), random_bytes(2 << 20, 2)).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    fs::write(src.join("changing.bin"), random_bytes(2 << 20, 3)).unwrap();
    let second = endpoint.backup_json(&[arg(&src)]);
    let list: serde_json::Value =
        serde_json::from_str(&ok(relay.admin(&["snapshots", "list", "--json"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    relay.kill_and_restart();
    let before = relay.pack_bytes();
    let out = ok(relay.admin(&["gc", "--grace", "0s", "--json"]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    eprintln!("figure: sealed gc after forgetting 2 MiB of 5 MiB: {report}");
    let unreferenced = report["bytes_unreferenced"].as_u64().unwrap();
    assert!(
        unreferenced >= 2 << 20,
        "the old version is garbage: {report}"
    );
    assert!(relay.pack_bytes() + (2 << 20) <= before, "{report}");
    let out = work.path().join("out");
    restore_into(&endpoint, &second["snapshot"].to_string(), &src, &out);
    assert_eq!(listing(&out), listing(&src));
}

/// A copy of directory `from` at `to` (the relay's data, an endpoint's state).
fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .args(["-a", arg(from), arg(to)])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_relay_that_rolls_a_set_back_or_forks_it_is_refused_in_one_line() {
    let (mut relay, endpoint) = paired_sealed();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"first").unwrap();
    endpoint.backup_json(&[arg(&src)]);
    let _ = relay.terminate();
    let first = work.path().join("relay-after-1");
    copy_dir(&relay.data(), &first);
    let twin = work.path().join("endpoint-after-1");
    copy_dir(&endpoint.state(), &twin);
    relay.start_again();
    fs::write(src.join("a"), b"second").unwrap();
    endpoint.backup_json(&[arg(&src)]);

    // The relay's disk put back as it was after the first backup.
    let _ = relay.terminate();
    fs::remove_dir_all(relay.data()).unwrap();
    copy_dir(&first, &relay.data());
    relay.start_again();
    let out = work.path().join("out");
    let refused = endpoint.ferry(&["restore", "--map-from", arg(&src), "--map-to", arg(&out)]);
    assert_ne!(refused.status.code(), Some(0));
    let err = stderr(&refused);
    assert!(err.contains("rollback"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!out.exists(), "nothing written");

    // Another history from the same point (the twin's second backup) is a fork.
    let forked = std::process::Command::new(ferry_tests::binary("ferry"))
        .args(["--state", arg(&twin), "backup", arg(&src)])
        .output()
        .unwrap();
    assert!(forked.status.success(), "{}", stderr(&forked));
    let refused = endpoint.ferry(&["backup", arg(&src)]);
    assert_ne!(refused.status.code(), Some(0));
    let err = stderr(&refused);
    assert!(err.contains("fork"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_relay_that_swaps_or_truncates_a_sealed_object_is_refused_and_nothing_is_written() {
    let (mut relay, endpoint) = paired_sealed();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("one"), random_bytes(50_000, 1)).unwrap();
    fs::write(src.join("two"), random_bytes(50_000, 2)).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    let _ = relay.terminate();
    let catalog = rusqlite::Connection::open(relay.data().join("catalog.sqlite")).unwrap();
    // The largest objects are the two files' chunks: one served for the other.
    let rows: Vec<(Vec<u8>, i64, i64, i64)> = catalog
        .prepare("SELECT id, pack, offset, length FROM blobs ORDER BY length DESC LIMIT 2")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let (a, b) = (&rows[0], &rows[1]);
    let point = |id: &[u8], at: &(Vec<u8>, i64, i64, i64)| {
        catalog
            .execute(
                "UPDATE blobs SET pack = ?2, offset = ?3, length = ?4 WHERE id = ?1",
                rusqlite::params![id, at.1, at.2, at.3],
            )
            .unwrap();
    };
    point(&a.0, b);
    relay.start_again();
    let out = work.path().join("swapped");
    refused_restore(&endpoint, &src, &out, "not the object asked for");

    // Two directories or file lists swapped: they now come ahead of the
    // walk (GetSealedBelow), and are checked as they are used.
    let _ = relay.terminate();
    point(&a.0, a);
    let meta: Vec<(Vec<u8>, i64, i64, i64)> = catalog
        .prepare("SELECT id, pack, offset, length FROM blobs WHERE copies = 2 ORDER BY length DESC LIMIT 2")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    point(&meta[0].0, &meta[1]);
    relay.start_again();
    let out = work.path().join("swapped-tree");
    refused_restore(&endpoint, &src, &out, "not the object asked for");
    let _ = relay.terminate();
    point(&meta[0].0, &meta[0]);

    // The same object cut short.
    point(&a.0, &(a.0.clone(), a.1, a.2, a.3 - 100));
    relay.start_again();
    let out = work.path().join("truncated");
    refused_restore(&endpoint, &src, &out, "");
}

/// A restore of `src` into `out` that the endpoint refuses in one line
/// holding `why`, having put nothing wrong under a final name.
fn refused_restore(endpoint: &Endpoint, src: &Path, out: &Path, why: &str) {
    let refused = endpoint.ferry(&["restore", "--map-from", arg(src), "--map-to", arg(out)]);
    assert_ne!(refused.status.code(), Some(0));
    let err = stderr(&refused);
    assert!(err.contains(why), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    nothing_wrong(out, src);
}

/// Every file the restore put under its final name is the source's.
fn nothing_wrong(out: &Path, src: &Path) {
    for name in ["one", "two"] {
        if let Ok(bytes) = fs::read(out.join(name)) {
            assert_eq!(bytes, fs::read(src.join(name)).unwrap(), "{name} is wrong");
        }
    }
}

#[test]
fn edits_in_many_files_cost_a_few_round_trips_not_one_per_file() {
    let (_relay, endpoint) = paired_sealed();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut files: Vec<Vec<u8>> = (0..30).map(|i| random_bytes(100_000, 40 + i)).collect();
    for (i, data) in files.iter().enumerate() {
        fs::write(src.join(format!("f{i}")), data).unwrap();
    }
    endpoint.backup_json(&[arg(&src)]);
    for (i, data) in files.iter_mut().enumerate() {
        data[50_000] ^= 1;
        fs::write(src.join(format!("f{i}")), &data).unwrap();
    }
    let second = endpoint.backup_json(&[arg(&src)]);
    assert_eq!(second["files_changed"], 30, "{second}");
    assert_eq!(second["chunks_delta"], 30, "{second}");
    // The bases' signatures come from the files cache: no fetch per file.
    let round_trips = second["round_trips"].as_u64().unwrap();
    assert!(round_trips <= 6, "{round_trips} round trips: {second}");
    // Nothing changed: the start and the set's listing in one round trip,
    // the commit in another, as for an open client.
    let unchanged = endpoint.backup_json(&[arg(&src)]);
    assert_eq!(unchanged["round_trips"], 2, "{unchanged}");
    let out = work.path().join("out");
    endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&out)]);
    assert_eq!(listing(&out), listing(&src));
}

#[test]
fn a_restore_onto_the_older_version_fetches_only_the_patches() {
    let (_relay, endpoint) = paired_sealed();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut data = random_bytes(4 << 20, 21);
    fs::write(src.join("big.bin"), &data).unwrap();
    let first = endpoint.backup_json(&[arg(&src)]);
    data[2 << 20] ^= 0x5a;
    fs::write(src.join("big.bin"), &data).unwrap();
    endpoint.backup_json(&[arg(&src)]);

    let out = work.path().join("out");
    restore_into(&endpoint, &first["snapshot"].to_string(), &src, &out);
    let onto = endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&out)]);
    assert_eq!(fs::read(out.join("big.bin")).unwrap(), data);
    assert_eq!(
        onto["files_changed"], 1,
        "written over the older version: {onto}"
    );
    assert_eq!(onto["files_new"], 0, "{onto}");
    let received = onto["bytes_received"].as_u64().unwrap();
    eprintln!("figure: sealed restore of a 1-byte edit onto the older 4 MiB version received {received} bytes");
    assert!(received < 64 * 1024, "received {received}: {onto}");
}

/// `count` small text files of a few kilobytes, words from a small
/// vocabulary (what a source tree or a mail folder looks like to zstd).
fn small_text_files(dir: &Path, count: usize) {
    const WORDS: [&str; 24] = [
        "ferry",
        "relay",
        "sealed",
        "chunk",
        "delta",
        "restore",
        "backup",
        "laptop",
        "office",
        "vault",
        "key",
        "tree",
        "root",
        "patch",
        "signature",
        "window",
        "link",
        "hotel",
        "road",
        "fn",
        "let",
        "match",
        "Ok",
        "Err",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..count {
        let sub = dir.join(format!("d{:02}", i / 100));
        fs::create_dir_all(&sub).unwrap();
        let mut text = String::new();
        while text.len() < 2_000 + (i % 7) * 500 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
            text.push(if state % 11 == 0 { '\n' } else { ' ' });
        }
        fs::write(sub.join(format!("f{i:04}.txt")), text).unwrap();
    }
}

#[test]
fn the_vaults_dictionary_packs_small_files_and_a_new_machine_finds_it_in_the_root() {
    let (relay, lost) = paired_sealed();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    // About 1.6 MB: past the samples a dictionary is trained on.
    small_text_files(&src, 600);
    let first = lost.backup_json(&[arg(&src)]);
    let dictionary = lost.state().join("sealed-dictionary");
    let mode = fs::metadata(&dictionary).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    // Another machine takes the client over: its restore unpacks the
    // chunks packed with the dictionary the root names.
    let (found, passphrase) = take_over(&relay, &lost, work.path());
    let out_dir = work.path().join("out");
    let restored = restore_with(&found, &passphrase, &src, &out_dir);
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert_eq!(listing(&out_dir), listing(&src));

    // Its first backup, with no files cache, packs with the same
    // dictionary (found in the newest root, where one trained on the files
    // now, a new one first among them, would differ): the same ids, so
    // the chunks are not sent again.
    fs::write(src.join("d00/a-new.txt"), random_bytes(16_384, 9)).unwrap();
    let again = found.backup_json(&[arg(&src)]);
    let (sent_first, sent_again) = (
        first["bytes_sent"].as_u64().unwrap(),
        again["bytes_sent"].as_u64().unwrap(),
    );
    assert!(
        sent_again * 10 < sent_first,
        "{sent_again} bytes sent again of {sent_first}"
    );
    assert!(found.state().join("sealed-dictionary").exists());
}
