//! What a client may do over the internet: refusals are clear messages.

use std::fs;

use ferry_tests::tree::random_bytes;
use ferry_tests::{ok, stderr, Endpoint, Relay};

#[test]
fn internet_policy_refuses_first_backups_and_big_files_clearly() {
    let mut relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("small"), b"small").unwrap();
    let path = src.to_str().unwrap();
    // The first backup of set "office" runs on the LAN.
    endpoint.backup_json(&["--set", "office", path]);

    // From now on loopback is not a LAN network: the laptop is on the road.
    relay.restart_with(|toml| {
        let start = toml.find("lan-networks").expect("lan-networks");
        let end = start + toml[start..].find(']').expect("end of list") + 1;
        format!(
            "{}lan-networks = [\"10.0.0.0/8\"]{}",
            &toml[..start],
            &toml[end..]
        )
    });
    ok(relay.admin(&[
        "clients",
        "policy",
        "laptop",
        "--internet-full-backups",
        "deny",
        "--internet-max-file",
        "1MiB",
    ]));

    fs::write(src.join("big"), random_bytes(2 << 20, 1)).unwrap();
    let out = endpoint.ferry(&["backup", "--set", "office", "--json", path]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("more than the relay accepts for a single file over the internet"),
        "{}",
        stderr(&out)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["snapshot"], 2);

    let out = endpoint.ferry(&["backup", "--set", "laptop-home", path]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("first (full) backup of set \"laptop-home\" must run over the LAN"),
        "{err}"
    );
    relay.wait_for_log("over the internet");
}
