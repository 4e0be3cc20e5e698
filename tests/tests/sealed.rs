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
    let src = work.path().join("src");
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
    let right = work.path().join("passphrase");
    fs::write(&right, "river cobalt maple seventy\n").unwrap();
    ok(lost.ferry(&["key", "passphrase", "--passphrase-file", arg(&right)]));

    let out = ok(relay.admin(&["pair", "--name", "laptop", "--replace", "--json"]));
    let code: serde_json::Value = serde_json::from_str(&out).unwrap();
    let found = Endpoint::sealed();
    ok(found.try_pair(&relay, code["code"].as_str().unwrap()));

    // A wrong passphrase: one line, nothing written.
    let wrong = work.path().join("wrong");
    fs::write(&wrong, "river cobalt maple seventy-one").unwrap();
    let out_dir = work.path().join("out");
    let restore = |passphrase: &Path| {
        found
            .command()
            .args([
                "restore",
                "--map-from",
                arg(&src),
                "--map-to",
                arg(&out_dir),
            ])
            .env("FERRY_PASSPHRASE_FILE", passphrase)
            .output()
            .unwrap()
    };
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
