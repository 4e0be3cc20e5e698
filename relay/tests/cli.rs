//! The relay's command line: usage errors and clear failures. (This file also
//! makes `cargo test --workspace` build the `ferry-relay` binary for the
//! end-to-end tests.)

use std::process::Command;

fn relay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry-relay"))
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1_with_one_line() {
    let out = relay().args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = relay()
        .args([
            "--data",
            "/nonexistent/ferry",
            "pair",
            "--name",
            "x",
            "--ttl",
            "soon",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = relay()
        .args(["--data", "/nonexistent/ferry", "clients", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("ferry-relay init"), "{err}");
}

#[test]
fn init_twice_is_refused_and_keeps_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = relay()
        .arg("--data")
        .arg(&data)
        .arg("init")
        .output()
        .unwrap();
    assert!(first.status.success());
    let key = std::fs::read(data.join("keys/relay.key")).unwrap();
    let second = relay()
        .arg("--data")
        .arg(&data)
        .arg("init")
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already holds a relay"));
    assert_eq!(std::fs::read(data.join("keys/relay.key")).unwrap(), key);
}
