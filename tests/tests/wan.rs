//! Over an emulated internet link (100 ms round trip): what a round trip
//! costs is counted, not timed. A restore of 2,000 files in 200 directories
//! is a stream, not a conversation per directory or file; so is a verify.

use std::fs;

use ferry_tests::link::Link;
use ferry_tests::tree::{listing, random_bytes};
use ferry_tests::{arg, paired, Endpoint, Relay, RelayOptions};

/// 2,000 small files (text and a few binary) in 200 directories of 20
/// groups.
fn make_tree(root: &std::path::Path) {
    for g in 0..20 {
        for d in 0..10 {
            let dir = root.join(format!("g{g:02}/d{d}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..10 {
                let path = dir.join(format!("f{f}.txt"));
                if f == 9 {
                    let seed = (g * 100 + d * 10 + f) as u64;
                    fs::write(path, random_bytes(600 + d * 10, seed)).unwrap();
                } else {
                    fs::write(path, format!("group {g} dir {d} file {f}\n").repeat(f + 1)).unwrap();
                }
            }
        }
    }
}

#[test]
fn a_restore_of_2000_files_over_a_100ms_link_waits_only_a_few_round_trips() {
    let behind = BehindLink::backed_up(false);
    let (relay, endpoint, work, src) = (&behind.relay, &behind.endpoint, &behind.work, &behind.src);

    // Into an empty directory.
    let out = work.path().join("out");
    let restored = restore_in_few_round_trips(endpoint, src, &out, "into an empty directory", 20);
    assert_eq!(restored["files_new"], 2000, "{restored}");

    // ferry verify reads the same snapshot back: runs of files across
    // directories, not a run per directory (it waited 400 round trips).
    let verified = endpoint.ferry(&["verify", "--json"]);
    let verified: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(verified["files_checked"], 2000, "{verified}");
    let waits = verified["round_trips"].as_u64().unwrap();
    eprintln!(
        "figure: verify of 2,000 files in 200 directories over 100 ms: round_trips = {waits}"
    );
    assert!(waits < 20, "verify waited {waits} round trips: {verified}");

    // Onto the previous version: 30 files edited in 30 directories, 10 new;
    // the rest is found in place.
    for i in 0..30 {
        let path = src.join(format!("g{:02}/d{}/f3.txt", i % 20, i / 20 * 3));
        fs::write(&path, format!("edited {i}\n")).unwrap();
    }
    for i in 0..10 {
        fs::write(
            src.join(format!("g{i:02}/d5/new.txt")),
            format!("new {i}\n"),
        )
        .unwrap();
    }
    endpoint.set_addresses(&[relay.session_addr.to_string()]);
    endpoint.backup_json(&[arg(src)]);
    endpoint.set_addresses(&[behind.link.addr.to_string()]);
    let what = "onto the previous version";
    let restored = restore_in_few_round_trips(endpoint, src, &out, what, 20);
    assert_eq!(restored["files_new"], 10, "{restored}");
    assert_eq!(restored["files_changed"], 30, "{restored}");
}

#[test]
fn a_sealed_restore_of_2000_files_over_a_100ms_link_waits_only_a_few_round_trips() {
    // The relay cannot read a sealed client's trees, but it can follow
    // their headers' refs: it sends the trees and contents below the
    // restored directory in one reply, not a level per round trip.
    // Level by level it waited 12 round trips; 6 with the trees sent ahead;
    // 4 with one listing for the snapshot and the newest-root check and
    // small files named by their chunk; 3, as open mode, with the trees
    // below the root last seen asked for with the listing.
    let behind = BehindLink::backed_up(true);
    let out = behind.work.path().join("out");
    let what = "sealed, into an empty directory";
    let restored = restore_in_few_round_trips(&behind.endpoint, &behind.src, &out, what, 4);
    assert_eq!(restored["files_new"], 2000, "{restored}");
}

/// A relay and an endpoint (open or sealed) that backed up [`make_tree`],
/// the endpoint then talking to the relay through a 100 ms link.
struct BehindLink {
    relay: Relay,
    endpoint: Endpoint,
    work: tempfile::TempDir,
    src: std::path::PathBuf,
    link: Link,
}

impl BehindLink {
    fn backed_up(sealed: bool) -> Self {
        let (relay, endpoint) = ferry_tests::paired_in(sealed);
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        make_tree(&src);
        endpoint.backup_json(&[arg(&src)]);
        let link = Link::start(relay.session_addr, "100ms", "10Mbit", "50Mbit");
        endpoint.set_addresses(&[link.addr.to_string()]);
        BehindLink {
            relay,
            endpoint,
            work,
            src,
            link,
        }
    }
}

/// Restores `src` onto `out`, checks it is identical and that the restore
/// waited fewer than `most` round trips; returns its summary.
fn restore_in_few_round_trips(
    endpoint: &Endpoint,
    src: &std::path::Path,
    out: &std::path::Path,
    what: &str,
    most: u64,
) -> serde_json::Value {
    let restored = endpoint.restore_json(&["--map-from", arg(src), "--map-to", arg(out)]);
    assert_eq!(listing(out), listing(src));
    let waits = restored["round_trips"].as_u64().unwrap();
    eprintln!(
        "figure: restore of 2,000 files in 200 directories {what} over 100 ms: round_trips = {waits}, {:.2} s",
        restored["duration_s"].as_f64().unwrap()
    );
    assert!(
        waits < most,
        "the restore waited {waits} round trips: {restored}"
    );
    restored
}

#[test]
fn a_restore_fetches_in_compressed_batches_and_still_works_with_an_older_relay() {
    // Today's relay, and one that says it speaks protocol 1.4 (before
    // batched fetches): the endpoint asks it for each object and chunk on
    // its own, as before.
    let (_relay, endpoint) = paired();
    let older = Relay::start_with(RelayOptions {
        env: vec![("FERRY_ANNOUNCE_MINOR".into(), "4".into())],
        ..RelayOptions::default()
    });
    let older_endpoint = Endpoint::new();
    older_endpoint.pair_with(&older, "laptop");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src);
    endpoint.backup_json(&[arg(&src)]);
    older_endpoint.backup_json(&[arg(&src)]);

    let out = work.path().join("out");
    let batched = endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&out)]);
    assert_eq!(listing(&out), listing(&src));
    let older_out = work.path().join("older");
    let one_by_one =
        older_endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&older_out)]);
    assert_eq!(listing(&older_out), listing(&src));
    assert_eq!(one_by_one["files_new"], 2000, "{one_by_one}");
    let (batched_bytes, single_bytes) = (
        batched["bytes_received"].as_u64().unwrap(),
        one_by_one["bytes_received"].as_u64().unwrap(),
    );
    eprintln!(
        "figure: restore of 2,000 small files received {batched_bytes} bytes in batches, {single_bytes} one by one"
    );
    // Replies compressed together (zstd across small files) against each
    // compressed alone (lz4, as stored) with its own message.
    assert!(
        batched_bytes * 10 < single_bytes * 7,
        "batched {batched_bytes} bytes, one by one {single_bytes}"
    );
}
