//! Bandwidth limits through the real binaries (loose bounds; precise figures
//! are in bench/).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_tests::tree::random_bytes;
use ferry_tests::{arg, ok, paired, stderr, wait_for, DEADLINE};

fn file(dir: &Path, name: &str, mib: usize, seed: u64) -> String {
    let path = dir.join(name);
    fs::write(&path, random_bytes(mib << 20, seed)).unwrap();
    arg(&path).to_string()
}

#[test]
fn a_client_limited_to_1_mib_s_takes_its_time() {
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let out = ok(relay.admin(&["clients", "limit", "laptop", "1MiB/s"]));
    assert!(out.contains("1.0MiB/s"), "{out}");
    let path = file(work.path(), "four", 4, 1);
    let started = Instant::now();
    endpoint.backup_json(&[&path]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(3500),
        "4 MiB at 1 MiB/s took {took:?}"
    );
}

#[test]
fn lifting_a_limit_during_a_transfer_speeds_it_up_without_error() {
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    ok(relay.admin(&["clients", "limit", "laptop", "1MiB/s"]));
    let path = file(work.path(), "sixteen", 16, 2);
    let started = Instant::now();
    let mut backup = endpoint
        .command()
        .args(["backup", &path])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The relay reports the client's limit and its measured rate while it runs.
    let flowing = wait_for("a measured rate", DEADLINE, || {
        let list: serde_json::Value =
            serde_json::from_str(&ok(relay.admin(&["clients", "list", "--json"]))).ok()?;
        let rate = list[0]["rate"].as_u64().filter(|r| *r > 0)?;
        Some((rate, list[0]["limit_in_force"].as_u64()))
    });
    assert_eq!(flowing.1, Some(1 << 20));
    assert!(
        flowing.0 < 2 << 20,
        "measured {} B/s under a 1 MiB/s limit",
        flowing.0
    );
    ok(relay.admin(&["clients", "limit", "laptop", "unlimited"]));
    let status = wait_for("the backup to finish", DEADLINE, || {
        backup.try_wait().unwrap()
    });
    assert!(status.success());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "16 MiB took {took:?} after the limit was lifted"
    );
}

#[test]
fn the_global_limit_and_the_endpoints_own_limit_apply() {
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let path = file(work.path(), "three", 3, 3);
    ok(relay.admin(&["limit", "--global", "1MiB/s"]));
    let started = Instant::now();
    endpoint.backup_json(&[&path]);
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    ok(relay.admin(&["limit", "--reset"]));

    let other = file(work.path(), "other", 3, 4);
    let started = Instant::now();
    endpoint.backup_json(&["--limit", "1MiB/s", &other]);
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );

    let bad = endpoint.ferry(&["backup", "--limit", "Mon-Fry 08:00-18:00=1MiB/s", &other]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("Mon-Fry"), "{}", stderr(&bad));
    let bad = relay.admin(&["clients", "limit", "laptop", "fast"]);
    assert_eq!(bad.status.code(), Some(2));
}
