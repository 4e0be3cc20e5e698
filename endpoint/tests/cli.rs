//! The endpoint's command line: usage errors and clear failures. (This file
//! also makes `cargo test --workspace` build the `ferry` binary for the
//! end-to-end tests.)

use std::process::Command;

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(
        ferry().arg("frobnicate").output().unwrap().status.code(),
        Some(2)
    );
    let out = ferry()
        .args(["pair", "--relay", "127.0.0.1:1", "--code", "not-a-code"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn status_before_pairing_says_how_to_pair() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry()
        .arg("--state")
        .arg(dir.path())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("ferry pair"), "{err}");
}

#[test]
fn an_open_key_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("endpoint.key"), "00".repeat(32)).unwrap();
    std::fs::set_permissions(
        keys.join("endpoint.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("relay.toml"),
        "relay-key = \"0000000000000000000000000000000000000000000000000000000000000000\"\nrelay-fingerprint = \"x\"\nclient-id = 1\nclient-name = \"x\"\naddresses = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    let out = ferry()
        .arg("--state")
        .arg(dir.path())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}
