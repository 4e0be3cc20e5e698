//! A relay whose packs live in an S3-compatible object store (moto's
//! server, started here): backups and restores through the real binaries,
//! nothing kept on the relay's disk but its cache, every snapshot read back
//! from the bucket after a restart, verify and gc over the store.

use std::fs;
use std::path::Path;

use ferry_relay::catalog::pg_server::PgServer;
use ferry_relay::store::moto::Moto;
use ferry_tests::faults::{Fault, FaultProxy};
use ferry_tests::tree::{listing, random_bytes};

/// A tree as `listing` reads it.
type Listing = std::collections::BTreeMap<Vec<u8>, ferry_tests::tree::Item>;
use ferry_tests::{arg, http_get, ok, stderr, Endpoint, Relay, RelayOptions};

const MIB: usize = 1 << 20;

/// A relay over a fresh bucket `name`, its keys in a 0600 file in `work`,
/// reaching the store at `endpoint` (moto's, or a proxy in front of it).
fn relay_over_bucket(work: &Path, name: &str, cache: &str, endpoint: &str) -> Relay {
    let moto = Moto::shared();
    moto.bucket(name);
    let keys = Moto::keys_file(work);
    Relay::start_with(RelayOptions {
        sections: vec![
            ("web".into(), "listen = \"127.0.0.1:0\"".into()),
            (
            "storage".into(),
            format!(
                "kind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{name}\"\ncredentials-file = \"{}\"\ncache-size = \"{cache}\"",
                endpoint,
                keys.display()
            ),
        ),
        ],
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

/// Three backups of `src` by `endpoint`, a file changed and one added
/// before each; what each held. `after_each` runs after each backup.
fn three_versions(
    endpoint: &Endpoint,
    src: &Path,
    mut after_each: impl FnMut(u64),
) -> Vec<Listing> {
    fs::create_dir_all(src).unwrap();
    let mut versions = Vec::new();
    for n in 0..3u64 {
        fs::write(src.join("changing.bin"), random_bytes(MIB, n)).unwrap();
        fs::write(src.join(format!("added-{n}.txt")), format!("version {n}\n")).unwrap();
        endpoint.backup_json(&[arg(src)]);
        versions.push(listing(src));
        after_each(n);
    }
    versions
}

fn restore_into(endpoint: &Endpoint, snapshot: &str, from: &Path, to: &Path) {
    endpoint.restore_json(&["-b", snapshot, "--map-from", arg(from), "--map-to", arg(to)]);
}

#[test]
fn snapshots_in_an_object_store_restore_identical_after_a_restart_and_a_gc() {
    let work = tempfile::tempdir().unwrap();
    let mut relay = relay_over_bucket(work.path(), "snapshots", "8MiB", &Moto::shared().endpoint);
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
    let metrics = http_get(relay.web_addr(), "/metrics", None).body;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}_total ")))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics:\n{metrics}"))
    };
    assert!(
        value("ferry_store_cache_misses") > 0,
        "cold reads asked the store"
    );
    assert!(
        value("ferry_store_cache_hits") > 0,
        "a 4 MiB block serves the blobs beside"
    );
    assert_eq!(value("ferry_store_request_errors"), 0);

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

#[test]
fn a_failing_object_store_gets_retries_then_one_clear_refusal_and_nothing_is_acknowledged() {
    let work = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(&Moto::shared().endpoint);
    let relay = relay_over_bucket(work.path(), "faults", "8MiB", &proxy.endpoint);
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), random_bytes(MIB, 1)).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    let first = listing(&src);

    let objects = Moto::shared().objects("faults");
    // 500s, resets, and uploads cut in half (after 64 KiB of a 1 MiB pack).
    let faults = [Fault::Status500, Fault::Reset, Fault::CutAfter(64 << 10)];
    for (n, fault) in faults.into_iter().enumerate() {
        proxy.set(fault);
        let refused = proxy.refused();
        fs::write(src.join("b.bin"), random_bytes(MIB, 10 + n as u64)).unwrap();
        let failed = endpoint.ferry(&["backup", arg(&src)]);
        assert_eq!(
            failed.status.code(),
            Some(1),
            "{fault:?}: {}",
            stderr(&failed)
        );
        let told = stderr(&failed);
        assert!(
            told.contains("the relay's object store failed") && !told.contains(&proxy.endpoint),
            "{fault:?}: one line naming the store, not its address: {told}"
        );
        assert!(
            proxy.refused() - refused >= 3,
            "{fault:?}: retried before refusing ({} requests refused)",
            proxy.refused() - refused
        );
        proxy.set(Fault::None);
    }
    assert!(
        relay.log().contains("its upload failed"),
        "the operator sees it"
    );
    assert_eq!(
        Moto::shared().objects("faults"),
        objects,
        "no failed upload left an object, whole or cut"
    );
    let snapshots: serde_json::Value =
        serde_json::from_str(&ok(endpoint.ferry(&["snapshots", "--json"]))).unwrap();
    assert_eq!(
        snapshots.as_array().unwrap().len(),
        1,
        "nothing acknowledged: {snapshots}"
    );

    // Healed but slow (each connection 300 ms late), the next backup
    // sends what the failed ones lost.
    proxy.set(Fault::Slow(std::time::Duration::from_millis(300)));
    endpoint.backup_json(&[arg(&src)]);
    proxy.set(Fault::None);
    let second = listing(&src);
    for (snapshot, expected) in [("1", &first), ("2", &second)] {
        let to = work.path().join(format!("restored-{snapshot}"));
        restore_into(&endpoint, snapshot, &src, &to);
        assert_eq!(&listing(&to), expected, "snapshot {snapshot}");
    }
}

#[test]
fn a_relay_with_history_migrates_to_an_object_store_and_postgres_and_every_snapshot_restores_identical(
) {
    let work = tempfile::tempdir().unwrap();
    let mut relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let src = work.path().join("src");
    let versions = three_versions(&endpoint, &src, |_| {});
    let local = relay.pack_bytes();
    Moto::shared().bucket("migrated");
    let keys = Moto::keys_file(work.path());
    let catalog = PgServer::shared().database();
    let migrate = [
        "migrate",
        "--to-storage",
        "s3://migrated/ferry",
        "--endpoint",
        &Moto::shared().endpoint,
        "--credentials-file",
        arg(&keys),
        "--to-catalog",
        &catalog,
    ];
    let refused = relay.admin(&migrate);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("stop it first"),
        "{}",
        stderr(&refused)
    );

    relay.terminate();
    let said = ok(relay.admin(&migrate));
    assert!(said.contains("read back identical"), "{said}");
    assert!(said.contains("read back the same"), "{said}");
    let objects = Moto::shared().objects("migrated");
    let stored: u64 = objects
        .iter()
        .filter(|(key, _)| key.starts_with("ferry/packs/"))
        .map(|(_, size)| size)
        .sum();
    assert!(
        stored > local,
        "every pack byte is in the bucket, each pack with its trailer: {stored} of {local} bytes, {objects:?}"
    );
    assert_eq!(relay.pack_bytes(), 0, "the pack files were moved aside");
    assert!(relay.data().join("store/packs.migrated").is_dir());

    relay.start_again();
    // A second relay of the same service: the same identity, catalog and
    // bucket. Every old snapshot restores identical through each.
    let storage = format!(
        "kind = \"s3\"\nendpoint = \"{}\"\nbucket = \"migrated\"\nprefix = \"ferry\"\ncredentials-file = \"{}\"",
        Moto::shared().endpoint,
        keys.display()
    );
    let second = Relay::start_with(RelayOptions {
        init_args: vec![
            "--catalog".into(),
            catalog.clone(),
            "--identity".into(),
            relay.data().join("keys/relay.key").display().to_string(),
        ],
        sections: vec![("storage".into(), storage)],
        ..RelayOptions::default()
    });
    for (through, address) in [
        ("migrated", relay.session_addr),
        ("second", second.session_addr),
    ] {
        endpoint.set_addresses(&[address.to_string()]);
        for (n, expected) in versions.iter().enumerate() {
            let snapshot = (n + 1).to_string();
            let to = work.path().join(format!("restored-{through}-{snapshot}"));
            restore_into(&endpoint, &snapshot, &src, &to);
            assert_eq!(
                &listing(&to),
                expected,
                "snapshot {snapshot} through {through}"
            );
        }
    }
    endpoint.set_addresses(&[relay.session_addr.to_string()]);
    ok(relay.admin(&["verify"]));
    // The endpoint goes on as before; its next backup lands in the bucket.
    fs::write(src.join("after.txt"), "after the move\n").unwrap();
    endpoint.backup_json(&[arg(&src)]);
    let to = work.path().join("restored-after");
    restore_into(&endpoint, "4", &src, &to);
    assert_eq!(listing(&to), listing(&src));
}

#[test]
fn a_catalog_lost_with_its_postgresql_is_rebuilt_from_the_object_store_alone() {
    let work = tempfile::tempdir().unwrap();
    Moto::shared().bucket("rebuilt");
    let keys = Moto::keys_file(work.path());
    let lost = PgServer::shared().database();
    let mut relay = Relay::start_with(RelayOptions {
        init_args: vec!["--catalog".into(), lost.clone()],
        sections: vec![(
            "storage".into(),
            format!(
                "kind = \"s3\"\nendpoint = \"{}\"\nbucket = \"rebuilt\"\ncredentials-file = \"{}\"",
                Moto::shared().endpoint,
                keys.display()
            ),
        )],
        ..RelayOptions::default()
    });
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let src = work.path().join("src");
    let copies = || {
        Moto::shared()
            .objects("rebuilt")
            .into_iter()
            .filter(|(key, _)| key.starts_with("catalog/"))
            .count()
    };
    let versions = three_versions(&endpoint, &src, |n| {
        if n == 0 {
            // Every collection keeps a copy of the catalog too.
            ok(relay.admin(&["gc"]));
            assert_eq!(copies(), 1);
        }
        if n == 1 {
            // A copy of the catalog, beside the serving relay, after the
            // second snapshot: the third is committed after it.
            let kept = ok(relay.admin(&["catalog", "dump"]));
            assert!(kept.contains("1 client(s), 2 snapshot(s)"), "{kept}");
        }
    });
    relay.terminate();
    // The PostgreSQL database is lost; an empty one takes its place.
    let config = relay.data().join("relay.toml");
    let text = fs::read_to_string(&config).unwrap();
    let fresh = PgServer::shared().database();
    fs::write(&config, text.replace(&lost, &fresh)).unwrap();
    let said = ok(relay.admin(&["catalog", "rebuild"]));
    assert!(said.contains("1 client(s), 2 snapshot(s)"), "{said}");
    assert!(said.contains("blob(s) indexed"), "{said}");
    assert!(!said.contains("without a trailer"), "{said}");
    // Not twice: the catalog holds something now.
    let again = relay.admin(&["catalog", "rebuild"]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));

    relay.start_again();
    for (n, expected) in versions.iter().take(2).enumerate() {
        let snapshot = (n + 1).to_string();
        let to = work.path().join(format!("restored-{snapshot}"));
        restore_into(&endpoint, &snapshot, &src, &to);
        assert_eq!(&listing(&to), expected, "snapshot {snapshot}");
    }
    ok(relay.admin(&["verify"]));
    // The third snapshot came after the copy; its data did not: the next
    // backup commits it again and sends almost nothing.
    let next = endpoint.backup_json(&[arg(&src)]);
    assert!(
        next["bytes_sent"].as_u64().unwrap() < MIB as u64 / 4,
        "{next}"
    );
    let to = work.path().join("restored-next");
    restore_into(&endpoint, &next["snapshot"].to_string(), &src, &to);
    assert_eq!(listing(&to), versions[2]);
}
