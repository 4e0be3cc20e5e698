//! Several relays, one service: three relays on loopback present one
//! identity and share one catalog (PostgreSQL, started by the test with
//! initdb/pg_ctl) and one bucket (moto's S3 server).
//! Endpoints back up at once, spread over them; one relay is killed with
//! -9 in the middle; every endpoint finishes (the failed runs once more,
//! as its daemon would, through the next address); a collection asked of
//! one relay meanwhile runs on exactly one; every snapshot then restores
//! identical through each relay, a collection that deletes loses nothing,
//! and verify is clean.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_relay::catalog::pg_server::PgServer;
use ferry_relay::store::moto::Moto;
use ferry_tests::tree::{listing, random_bytes};
use ferry_tests::{arg, http_get, ok, wait_for, Endpoint, Relay, RelayOptions};

const MIB: usize = 1 << 20;
/// As many as the scenario: twenty at once over three relays.
const ENDPOINTS: usize = 20;

/// The service in `work`'s catalog: a database of the tests' PostgreSQL,
/// made for its first relay.
fn service_catalog(work: &Path) -> String {
    let file = work.join("catalog.url");
    if let Ok(url) = fs::read_to_string(&file) {
        return url;
    }
    let url = PgServer::shared().database();
    fs::write(&file, &url).unwrap();
    url
}

/// A relay of the service in `work`: its catalog and bucket
/// `bucket` shared, presenting `identity` when given, with more relay.toml
/// `sections` (table, lines) and environment `env` (test hooks).
fn service_relay(
    work: &Path,
    bucket: &str,
    identity: Option<&Path>,
    more: &[(&str, &str)],
    env: Vec<(String, String)>,
) -> Relay {
    // The service's first relay (the one with a new identity) makes its bucket.
    if identity.is_none() {
        Moto::shared().bucket(bucket);
    }
    let keys = Moto::keys_file(work);
    let mut init_args = vec!["--catalog".to_string(), service_catalog(work)];
    if let Some(identity) = identity {
        init_args.extend(["--identity".to_string(), identity.display().to_string()]);
    }
    let storage = format!(
        "kind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{bucket}\"\ncredentials-file = \"{}\"",
        Moto::shared().endpoint,
        keys.display()
    );
    let mut sections = vec![("storage".to_string(), storage)];
    sections.extend(more.iter().map(|(t, l)| (t.to_string(), l.to_string())));
    Relay::start_with(RelayOptions {
        init_args,
        sections,
        env,
        ..RelayOptions::default()
    })
}

fn source(work: &Path, n: usize) -> PathBuf {
    let src = work.join(format!("src-{n}"));
    fs::create_dir_all(src.join("notes")).unwrap();
    fs::write(
        src.join("data.bin"),
        random_bytes((1 + n % 2) * MIB, n as u64),
    )
    .unwrap();
    for i in 0..10 {
        fs::write(
            src.join("notes").join(format!("{i}.txt")),
            format!("endpoint {n} note {i}\n"),
        )
        .unwrap();
    }
    src
}

#[test]
fn three_relays_share_one_catalog_and_bucket_and_survive_one_killed_mid_backup() {
    let work = tempfile::tempdir().unwrap();
    let web = [("web", "listen = \"127.0.0.1:0\"")];
    let first = service_relay(work.path(), "service", None, &web, vec![]);
    let identity = first.data().join("keys/relay.key");
    let mut relays = vec![first];
    for _ in 0..2 {
        relays.push(service_relay(
            work.path(),
            "service",
            Some(&identity),
            &[],
            vec![],
        ));
    }
    // Each says it is up, and each relay's /metrics shows them all.
    let up = |relays: &[Relay]| {
        let metrics = http_get(relays[0].web_addr(), "/metrics", None).body;
        metrics
            .lines()
            .filter(|l| l.starts_with("ferry_relay_up{") && l.ends_with(" 1"))
            .count()
    };
    wait_for(
        "three relays up",
        std::time::Duration::from_secs(60),
        || (up(&relays) == 3).then_some(()),
    );
    let ids: Vec<String> = relays
        .iter()
        .map(|r| fs::read_to_string(r.data().join("relay-id")).unwrap())
        .collect();
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
    assert!(
        relays
            .iter()
            .all(|r| r.fingerprint == relays[0].fingerprint),
        "one identity"
    );

    // Paired through the first; each then lists the three relays, starting
    // at its own, so the sessions spread.
    let addresses: Vec<String> = relays.iter().map(|r| r.session_addr.to_string()).collect();
    let endpoints: Vec<Endpoint> = (0..ENDPOINTS)
        .map(|n| {
            let endpoint = if n % 2 == 0 {
                Endpoint::new()
            } else {
                Endpoint::sealed()
            };
            endpoint.pair_with(&relays[0], &format!("laptop-{n}"));
            let mut list = addresses.clone();
            list.rotate_left(n % 3);
            endpoint.set_addresses(&list);
            endpoint
        })
        .collect();
    let sources: Vec<PathBuf> = (0..ENDPOINTS).map(|n| source(work.path(), n)).collect();

    let runs: Vec<_> = endpoints
        .iter()
        .zip(&sources)
        .map(|(endpoint, src)| {
            let mut command = endpoint.command();
            command.args(["backup", arg(src)]);
            command.spawn().unwrap()
        })
        .collect();
    // Killed with -9 as soon as it serves a session: mid-upload.
    wait_for(
        "a session on the second relay",
        std::time::Duration::from_secs(120),
        || relays[1].log().contains("session opened").then_some(()),
    );
    let status = Command::new("kill")
        .args(["-9", &relays[1].pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // A collection during the backups (the default grace: it deletes
    // nothing young), asked of one relay: the relays share the request,
    // and exactly one of them collects.
    let gc = relays[2]
        .command()
        .args(["gc", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut retried = 0;
    for ((run, endpoint), src) in runs.into_iter().zip(&endpoints).zip(&sources) {
        if !run.wait_with_output().unwrap().status.success() {
            retried += 1;
            endpoint.backup_json(&[arg(src)]);
        }
    }
    eprintln!("figure: {retried} of {ENDPOINTS} backups ran again after the relay was killed");
    assert!(gc.wait_with_output().unwrap().status.success());
    let collected = [&relays[0], &relays[2]]
        .iter()
        .filter(|r| r.log().contains("snapshots kept;"))
        .count();
    assert_eq!(collected, 1, "one relay collected");

    // Endpoint 0 changes a file; its first snapshot is forgotten and
    // collected at once (grace 0): only what nothing else names goes.
    fs::write(sources[0].join("data.bin"), random_bytes(MIB, 99)).unwrap();
    endpoints[0].backup_json(&[arg(&sources[0])]);
    let forgotten: serde_json::Value =
        serde_json::from_str(&ok(endpoints[0].ferry(&["snapshots", "--json"]))).unwrap();
    let first = forgotten[0]["id"].to_string();
    ok(relays[0].admin(&["snapshots", "forget", &first]));
    let report: serde_json::Value =
        serde_json::from_str(&ok(relays[0].admin(&["gc", "--grace", "0s", "--json"]))).unwrap();
    assert!(report["blobs_deleted"].as_u64().unwrap() > 0, "{report}");

    relays[1].start_again();
    for (n, (endpoint, src)) in endpoints.iter().zip(&sources).enumerate() {
        for (k, relay) in relays.iter().enumerate() {
            endpoint.set_addresses(&[relay.session_addr.to_string()]);
            let to = work.path().join(format!("restored-{n}-{k}"));
            endpoint.restore_json(&["--map-from", arg(src), "--map-to", arg(&to)]);
            assert_eq!(listing(&to), listing(src), "endpoint {n} through relay {k}");
        }
    }
    ok(relays[2].admin(&["verify"]));
    // Stopped cleanly, a relay says so: the others show it down at once.
    relays[2].terminate();
    assert_eq!(up(&relays), 2);
}

#[test]
fn a_lease_holder_frozen_past_its_lease_deletes_nothing_once_resumed() {
    let work = tempfile::tempdir().unwrap();
    // The first relay collects every second under a 2 s lease, and its
    // collection waits before the sweep while `hold` exists.
    let hold = work.path().join("hold");
    fs::write(&hold, "").unwrap();
    let env = vec![("FERRY_GC_HOLD".to_string(), hold.display().to_string())];
    let first = service_relay(
        work.path(),
        "frozen",
        None,
        &[("gc", "interval = \"1s\"\nlease = \"2s\"")],
        env,
    );
    let identity = first.data().join("keys/relay.key");
    // The second collects every second too, holding nothing back.
    let second = service_relay(
        work.path(),
        "frozen",
        Some(&identity),
        &[("gc", "interval = \"1s\"")],
        vec![],
    );
    let endpoint = Endpoint::new();
    endpoint.pair_with(&first, "laptop");
    endpoint.set_addresses(&[second.session_addr.to_string()]);
    let src = source(work.path(), 0);
    endpoint.backup_json(&[arg(&src)]);

    first.wait_for_log("gc: held before the sweep");
    // The first relay, holding the lease, is frozen whole (SIGSTOP) past
    // its 2 s lease — at a moment it is inside no catalog transaction,
    // else it would hold the writers' lock and every relay would wait for
    // it to go on (that is the lock's job, not the lease's).
    let pid = rustix::process::Pid::from_raw(first.pid() as i32).unwrap();
    loop {
        rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
        if !PgServer::shared().writer_lock_held(&service_catalog(work.path())) {
            break;
        }
        rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    }
    fs::remove_file(&hold).unwrap();
    // The second relay's collection waits out the lease, then runs under
    // a new token.
    second.wait_for_log("snapshots kept;");
    // Resumed, the first finds its token stale and deletes nothing.
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    let refused = first.wait_for_log("taken by another relay");
    assert!(refused.contains("deletes nothing more"), "{refused}");

    let to = work.path().join("restored");
    endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&to)]);
    assert_eq!(listing(&to), listing(&src));
    ok(second.admin(&["verify"]));
}
