//! A relay over a PostgreSQL catalog (a cluster of its own, made by the
//! test with initdb/pg_ctl): PostgreSQL restarted in the middle of a
//! backup. The backup either finishes or fails with one clear line; the
//! next one finishes; every snapshot acknowledged restores identical and
//! verify is clean — nothing was acknowledged that the catalog lost.

use std::fs;
use std::time::Duration;

use ferry_relay::catalog::pg_server::PgServer;
use ferry_tests::tree::{listing, random_bytes};
use ferry_tests::{arg, ok, wait_for, Endpoint, Relay, RelayOptions};

const MIB: usize = 1 << 20;

#[test]
fn postgres_restarted_mid_backup_loses_nothing_acknowledged() {
    let postgres = PgServer::start();
    let relay = Relay::start_with(RelayOptions {
        init_args: vec!["--catalog".into(), postgres.database()],
        ..RelayOptions::default()
    });
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("first.bin"), random_bytes(MIB, 1)).unwrap();
    let first = endpoint.backup_json(&[arg(&src)]);
    let first_listing = listing(&src);

    // A second backup, slowed to about three seconds, with PostgreSQL
    // restarted once its session is open.
    fs::write(src.join("second.bin"), random_bytes(6 * MIB, 2)).unwrap();
    let sessions = relay.log().matches("session opened").count();
    let backup = endpoint
        .command()
        .args(["backup", "--json", "--limit", "2MiB/s", arg(&src)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the second backup's session",
        Duration::from_secs(120),
        || (relay.log().matches("session opened").count() > sessions).then_some(()),
    );
    postgres.restart();
    let out = backup.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("backup across the restart: {:?}\n{stderr}", out.status);
    if !out.status.success() {
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("ferry: error"))
            .collect();
        assert_eq!(lines.len(), 1, "one clear line: {stderr}");
        assert!(
            lines[0].contains("the relay's catalog (PostgreSQL) cannot be reached"),
            "{stderr}"
        );
    }
    // The next backup finishes, over a catalog connection made again.
    let second = endpoint.backup_json(&[arg(&src)]);
    assert_ne!(second["snapshot"], first["snapshot"]);

    for (snapshot, expected) in [(&first, &first_listing), (&second, &listing(&src))] {
        let to = work
            .path()
            .join(format!("restored-{}", snapshot["snapshot"]));
        let id = snapshot["snapshot"].to_string();
        endpoint.restore_json(&["-b", &id, "--map-from", arg(&src), "--map-to", arg(&to)]);
        assert_eq!(&listing(&to), expected, "snapshot {id}");
    }
    ok(relay.admin(&["verify"]));
}
