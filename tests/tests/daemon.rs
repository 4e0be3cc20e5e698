//! `ferry daemon`: scheduled sets, recovery from a lost relay, clean stop.

use std::fs;
use std::process::Stdio;

use ferry_tests::tree::{listing, random_bytes};
use ferry_tests::{ok, wait_for, Endpoint, Relay, DEADLINE};

fn start_daemon(endpoint: &Endpoint) -> std::process::Child {
    endpoint
        .command()
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `STATE/daemon.json`, once the daemon has written it.
fn daemon_state(endpoint: &Endpoint) -> Option<serde_json::Value> {
    serde_json::from_str(&fs::read_to_string(endpoint.state().join("daemon.json")).ok()?).ok()
}

#[test]
fn the_daemon_recovers_from_a_relay_killed_mid_backup_and_completes_the_set() {
    let mut relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    // Slow enough to be cut in the middle: 24 MiB at 4 MiB/s.
    ok(relay.admin(&["clients", "limit", "laptop", "4MiB/s"]));
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), random_bytes(24 << 20, 8)).unwrap();
    fs::write(src.join("small"), b"small").unwrap();
    fs::write(
        endpoint.state().join("endpoint.toml"),
        format!("[sets.default]\npaths = [{src:?}]\ninterval = \"1h\"\n"),
    )
    .unwrap();
    let mut daemon = start_daemon(&endpoint);
    let read_state = || daemon_state(&endpoint);
    // Live progress is published while the backup runs.
    wait_for("progress in daemon.json", DEADLINE, || {
        read_state()?["sets"]["default"]["running"]["bytes_scanned"]
            .as_u64()
            .filter(|b| *b > 4 << 20)
    });
    relay.kill_and_restart();
    let last = wait_for(
        "the set to complete after the relay came back",
        DEADLINE * 3,
        || {
            let last = read_state()?["sets"]["default"]["last"].clone();
            (last["ok"] == true).then_some(last)
        },
    );
    assert_eq!(last["snapshot"], 1, "{last}");
    let status = ok(endpoint.ferry(&["status"]));
    assert!(status.contains("set \"default\": last ok"), "{status}");

    let out = work.path().join("out");
    endpoint.restore_json(&[
        "--map-from",
        src.to_str().unwrap(),
        "--map-to",
        out.to_str().unwrap(),
    ]);
    assert_eq!(listing(&out), listing(&src));

    let pid = daemon.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let exit = wait_for("the daemon to stop", DEADLINE, || {
        daemon.try_wait().unwrap()
    });
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn a_daemon_without_scheduled_sets_says_so() {
    let relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let out = endpoint.ferry(&["daemon"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(ferry_tests::stderr(&out).contains("no set has an `interval`"));
}

#[test]
fn the_daemon_checks_the_newest_snapshot_end_to_end_on_its_verify_interval() {
    let relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..5 {
        fs::write(src.join(format!("f{i}")), random_bytes(100_000, i)).unwrap();
    }
    fs::write(
        endpoint.state().join("endpoint.toml"),
        format!("[sets.default]\npaths = [{src:?}]\ninterval = \"1h\"\nverify-interval = \"7d\"\n"),
    )
    .unwrap();
    let mut daemon = start_daemon(&endpoint);
    let verify = wait_for("the check after the first backup", DEADLINE, || {
        let verify = daemon_state(&endpoint)?["sets"]["default"]["verify"].clone();
        (!verify.is_null()).then_some(verify)
    });
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["snapshot"], 1, "{verify}");
    assert!(
        verify["message"]
            .as_str()
            .unwrap()
            .contains("5 files checked whole"),
        "{verify}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&ok(endpoint.ferry(&["status", "--json"]))).unwrap();
    assert_eq!(status["daemon_running"], true, "{status}");

    // Killed: its schedule is no longer shown as current.
    let _ = daemon.kill();
    let _ = daemon.wait();
    let status: serde_json::Value =
        serde_json::from_str(&ok(endpoint.ferry(&["status", "--json"]))).unwrap();
    assert_eq!(status["daemon_running"], false, "{status}");
    let shown = ok(endpoint.ferry(&["status"]));
    assert!(shown.contains("daemon: not running"), "{shown}");
    assert!(shown.contains("next run none (no daemon)"), "{shown}");
}
