//! A relay whose packs live in an S3-compatible object store (moto's
//! server, started here): backups and restores through the real binaries,
//! nothing kept on the relay's disk but its cache, every snapshot read back
//! from the bucket after a restart, verify and gc over the store.

use std::fs;
use std::path::Path;

use ferry_relay::store::moto::Moto;
use ferry_tests::tree::{listing, random_bytes};
use ferry_tests::{arg, ok, Endpoint, Relay, RelayOptions};

const MIB: usize = 1 << 20;

/// A relay over a fresh bucket `name`, its keys in a 0600 file in `work`.
fn relay_over_bucket(work: &Path, name: &str, cache: &str) -> Relay {
    let moto = Moto::shared();
    moto.bucket(name);
    let keys = work.join(format!("{name}.keys"));
    fs::write(
        &keys,
        "access-key-id = \"testing\"\nsecret-access-key = \"testing\"\n",
    )
    .unwrap();
    fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    Relay::start_with(RelayOptions {
        sections: vec![(
            "storage".into(),
            format!(
                "kind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{name}\"\ncredentials-file = \"{}\"\ncache-size = \"{cache}\"",
                moto.endpoint,
                keys.display()
            ),
        )],
        ..RelayOptions::default()
    })
}

/// The packs in bucket `name`: how many, how many bytes.
fn packs_in(name: &str) -> (usize, u64) {
    let objects = Moto::shared().objects(name);
    let packs: Vec<_> = objects
        .iter()
        .filter(|(key, _)| key.starts_with("packs/"))
        .collect();
    (packs.len(), packs.iter().map(|(_, size)| size).sum())
}

fn restore_into(endpoint: &Endpoint, snapshot: &str, from: &Path, to: &Path) {
    endpoint.restore_json(&["-b", snapshot, "--map-from", arg(from), "--map-to", arg(to)]);
}

#[test]
fn snapshots_in_an_object_store_restore_identical_after_a_restart_and_a_gc() {
    let work = tempfile::tempdir().unwrap();
    let mut relay = relay_over_bucket(work.path(), "snapshots", "8MiB");
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let src = work.path().join("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::write(src.join("kept.bin"), random_bytes(3 * MIB, 1)).unwrap();
    fs::write(src.join("changing.bin"), random_bytes(2 * MIB, 2)).unwrap();
    for i in 0..40 {
        fs::write(
            src.join("docs").join(format!("note-{i}.txt")),
            format!("note {i}\n").repeat(i + 1),
        )
        .unwrap();
    }
    endpoint.backup_json(&[arg(&src)]);
    let first = listing(&src);
    fs::write(src.join("changing.bin"), random_bytes(2 * MIB, 3)).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    let second = listing(&src);

    let (packs, bytes) = packs_in("snapshots");
    assert!(packs >= 2, "each backup's commit uploads its pack: {packs}");
    assert!(
        bytes >= 7 * MIB as u64,
        "the bucket holds the data: {bytes} bytes"
    );
    assert_eq!(relay.pack_bytes(), 0, "no pack file on the relay's disk");

    // Restarted, the relay's cache is empty: every read is a ranged GET.
    relay.kill_and_restart();
    for (snapshot, expected) in [("1", &first), ("2", &second)] {
        let to = work.path().join(format!("restored-{snapshot}"));
        restore_into(&endpoint, snapshot, &src, &to);
        assert_eq!(&listing(&to), expected, "snapshot {snapshot}");
    }
    // Clean: exit 0.
    ok(relay.admin(&["verify"]));

    // Forgotten, the first version's chunks are collected out of the bucket.
    ok(relay.admin(&["snapshots", "forget", "1"]));
    let report: serde_json::Value =
        serde_json::from_str(&ok(relay.admin(&["gc", "--grace", "0s", "--json"]))).unwrap();
    let (_, after) = packs_in("snapshots");
    assert!(
        bytes.saturating_sub(after) >= 2 * MIB as u64,
        "the bucket went from {bytes} to {after} bytes: {report}"
    );
    let to = work.path().join("after-gc");
    restore_into(&endpoint, "2", &src, &to);
    assert_eq!(listing(&to), second);
}
