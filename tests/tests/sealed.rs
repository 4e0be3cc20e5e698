//! Sealed mode through the real binaries: the relay stores nothing it can
//! read, deltas still cross the wire, restores are identical.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use ferry_tests::tree::{listing, random_bytes};
use ferry_tests::{arg, ok, Endpoint, Relay};

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
