//! A paired client turned hostile, through the real relay binary and a raw
//! protocol client: each attack gets a clear refusal, and the relay goes
//! on serving everyone else.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_protocol::ids::ChunkId;
use ferry_protocol::message::{Message, Refusal};
use ferry_tests::fake_relay::zero_block_signature;
use ferry_tests::{arg, paired, Endpoint, RawSession};

/// Restores the newest snapshot of `source` and checks `name` holds `bytes`.
fn assert_restores(endpoint: &Endpoint, source: &Path, name: &str, bytes: &[u8]) {
    let restored = tempfile::tempdir().unwrap();
    endpoint.restore_json(&["--map-from", arg(source), "--map-to", arg(restored.path())]);
    assert_eq!(std::fs::read(restored.path().join(name)).unwrap(), bytes);
}

#[test]
fn a_crafted_rsync_signature_is_refused_within_a_second_and_the_relay_serves_on() {
    let (mut relay, endpoint) = paired();
    let source = tempfile::tempdir().unwrap();
    // Smaller than the smallest chunk: the file is one chunk, named by its hash.
    let data: Vec<u8> = (0..1500u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(source.path().join("small.bin"), &data).unwrap();
    endpoint.backup_json(&[arg(source.path())]);
    for crc in [0, 1] {
        let mut raw = RawSession::open_as(&relay, &endpoint, 3);
        let started = Instant::now();
        raw.send(&Message::GetChunk {
            id: ChunkId::of(&data),
            base_signature: Some(zero_block_signature(crc)),
        });
        match raw.recv() {
            Some(Message::Refused { code, message }) => {
                assert_eq!(code, Refusal::ProtocolViolation);
                assert!(message.contains("rsync signature"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "answered in {:?}",
            started.elapsed()
        );
    }
    // The relay still serves, and still stops when asked.
    assert!(endpoint.status_json()["rtt_ms"].is_number());
    assert_restores(&endpoint, source.path(), "small.bin", &data);
    let stopping = Instant::now();
    assert!(relay.terminate().success());
    assert!(stopping.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_commit_naming_a_missing_object_is_refused_and_gc_still_runs() {
    use ferry_protocol::compress::Codec;
    use ferry_protocol::ids::ContentId;
    use ferry_protocol::message::ObjectId;
    use ferry_protocol::retention::Retention;
    use ferry_protocol::tree::{EntryKind, Tree};

    let (relay, endpoint) = paired();
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("kept.txt"), b"an honest backup").unwrap();
    endpoint.backup_json(&[arg(source.path())]);
    let (root, tree) = Tree {
        entries: vec![ferry_tests::tree::entry(
            b"ghost",
            EntryKind::File {
                size: 5,
                content: ContentId([7; 32]),
                sparse: None,
            },
        )],
    }
    .encode()
    .unwrap();
    let mut raw = RawSession::open_as(&relay, &endpoint, 3);
    for _ in 0..2 {
        raw.send(&Message::BackupBegin {
            set: "default".into(),
            retention: Retention::default(),
        });
        assert!(matches!(raw.recv(), Some(Message::BackupReady { .. })));
        raw.send(&Message::PutObject {
            id: ObjectId::Tree(root),
            codec: Codec::None,
            data: tree.clone(),
        });
        raw.send(&Message::Commit {
            root,
            files: 1,
            bytes: 5,
            started_ms: 0,
        });
        match raw.recv() {
            Some(Message::Refused { code, message }) => {
                assert_eq!(code, Refusal::IncompleteSnapshot);
                assert!(message.contains("is missing"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    let gc: serde_json::Value = serde_json::from_str(&ferry_tests::ok(
        relay.admin(&["gc", "--grace", "0s", "--json"]),
    ))
    .unwrap();
    assert_eq!(gc["snapshots"], 1);
    assert_eq!(gc["snapshots_damaged"], serde_json::json!([]));
    assert_restores(&endpoint, source.path(), "kept.txt", b"an honest backup");
}

#[test]
fn what_the_relay_and_the_endpoint_write_only_their_user_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    // A data directory made beforehand with the usual 0755.
    let existing = tempfile::tempdir().unwrap();
    let data = existing.path().join("relay");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut init = std::process::Command::new(ferry_tests::binary("ferry-relay"));
    init.args([
        "--data",
        arg(&data),
        "init",
        "--listen",
        "127.0.0.1:0",
        "--pair-listen",
        "127.0.0.1:0",
    ]);
    ferry_tests::ok(ferry_tests::run(init));
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("catalog.sqlite")), 0o600);

    let (relay, endpoint) = paired();
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("private.txt"), b"payroll").unwrap();
    endpoint.backup_json(&[arg(source.path())]);
    let packs = relay.data().join("store/packs");
    assert_eq!(mode(&relay.data().join("store")), 0o700);
    assert_eq!(mode(&packs), 0o700);
    for pack in std::fs::read_dir(&packs).unwrap() {
        assert_eq!(mode(&pack.unwrap().path()), 0o600);
    }
    assert_eq!(mode(&endpoint.state()), 0o700);
    assert_eq!(mode(&endpoint.state().join("cache.sqlite")), 0o600);
}

#[test]
fn configuration_and_scripts_others_can_write_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"a").unwrap();
    let script = work.path().join("snap.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"SNAPSHOT=$2\"\n").unwrap();
    chmod(&script, 0o755);
    let cfg = work.path().join("snapshot.cfg");
    std::fs::write(
        &cfg,
        format!(
            "create_filesystem_snapshot={0}\nremove_filesystem_snapshot={0}\n",
            script.display()
        ),
    )
    .unwrap();
    let config = endpoint.state().join("endpoint.toml");
    std::fs::write(
        &config,
        format!(
            "snapshot-config = {cfg:?}\n\n[sets.vm]\npaths = [{data:?}]\nrequire-snapshot = true\n"
        ),
    )
    .unwrap();
    endpoint.backup_json(&["--set", "vm"]);

    for (file, mode) in [(&config, 0o666), (&cfg, 0o664), (&script, 0o777)] {
        chmod(file, mode);
        let out = endpoint.ferry(&["backup", "--set", "vm"]);
        assert_eq!(out.status.code(), Some(1), "{}", file.display());
        let said = ferry_tests::stderr(&out);
        assert!(
            said.contains("refusing") && said.contains("can be written by others"),
            "{said}"
        );
        chmod(file, if file == &script { 0o755 } else { 0o644 });
    }
    endpoint.backup_json(&["--set", "vm"]);

    let relay_toml = relay.data().join("relay.toml");
    chmod(&relay_toml, 0o666);
    let out = relay.admin(&["gc"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(ferry_tests::stderr(&out).contains("can be written by others"));
}

#[test]
fn a_client_that_stops_reading_is_cut_off_and_the_others_go_on() {
    use ferry_tests::{Relay, RelayOptions};
    let relay = Relay::start_with(RelayOptions {
        limits: Some(ferry_tests::limits("10s", "2s", 64, 64)),
        ..RelayOptions::default()
    });
    let endpoint = ferry_tests::Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let source = tempfile::tempdir().unwrap();
    // One chunk (under the smallest chunk size) that does not compress.
    let data: Vec<u8> = (0..15_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(source.path().join("one-chunk.bin"), &data).unwrap();
    endpoint.backup_json(&[arg(source.path())]);
    let mut raw = RawSession::open_as(&relay, &endpoint, 3);
    let started = Instant::now();
    for _ in 0..2000 {
        raw.send(&Message::GetChunk {
            id: ChunkId::of(&data),
            base_signature: None,
        });
    }
    relay.wait_for_log("the peer stopped reading");
    assert!(started.elapsed() < Duration::from_secs(90));
    assert!(endpoint.status_json()["rtt_ms"].is_number());
}

#[test]
fn a_second_backup_of_the_same_set_is_refused_not_queued() {
    use ferry_protocol::retention::Retention;
    let (relay, endpoint) = paired();
    let begin = |raw: &mut RawSession, set: &str| {
        raw.send(&Message::BackupBegin {
            set: set.into(),
            retention: Retention::default(),
        });
        raw.recv()
    };
    let mut first = RawSession::open_as(&relay, &endpoint, 3);
    assert!(matches!(
        begin(&mut first, "default"),
        Some(Message::BackupReady { .. })
    ));
    let mut second = RawSession::open_as(&relay, &endpoint, 3);
    let started = Instant::now();
    match begin(&mut second, "default") {
        Some(Message::Refused { code, message }) => {
            assert_eq!(code, Refusal::SetBusy);
            assert!(message.contains("another session"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "refused at once"
    );
    // Another set goes on meanwhile; once the first session ends, so does this one.
    assert!(matches!(
        begin(&mut second, "other"),
        Some(Message::BackupReady { .. })
    ));
    drop(first);
    ferry_tests::wait_for("the first upload to end", ferry_tests::DEADLINE, || {
        let mut third = RawSession::open_as(&relay, &endpoint, 3);
        matches!(
            begin(&mut third, "default"),
            Some(Message::BackupReady { .. })
        )
        .then_some(())
    });
}

#[test]
fn a_root_restore_elsewhere_than_slash_leaves_out_privileges_unless_asked() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    assert!(
        rustix::process::geteuid().is_root(),
        "this test restores as root (device nodes, setuid bits): run the suite as root, as CI does"
    );
    let (_relay, endpoint) = paired();
    let source = tempfile::tempdir().unwrap();
    let tool = source.path().join("tool");
    std::fs::write(&tool, b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o4755)).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        source.path().join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    endpoint.backup_json(&[arg(source.path())]);
    let restore = |extra: &[&str]| {
        let out = tempfile::tempdir().unwrap();
        let mut args = vec![
            "restore",
            "--map-from",
            arg(source.path()),
            "--map-to",
            arg(out.path()),
        ];
        args.extend_from_slice(extra);
        let result = endpoint.ferry(&args);
        (out, result)
    };
    let (plain, result) = restore(&[]);
    let said = ferry_tests::stderr(&result);
    assert!(said.contains("--preserve-privileges"), "{said}");
    let mode = std::fs::metadata(plain.path().join("tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "no setuid bit");
    assert!(!plain.path().join("null").exists());
    let (asked, result) = restore(&["--preserve-privileges"]);
    assert!(result.status.success(), "{}", ferry_tests::stderr(&result));
    let mode = std::fs::metadata(asked.path().join("tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o4755);
    let node = std::fs::symlink_metadata(asked.path().join("null")).unwrap();
    assert!(node.file_type().is_char_device());
}

#[test]
fn a_paired_endpoint_gets_in_while_two_thousand_idle_connections_are_held() {
    use ferry_tests::{Relay, RelayOptions};
    // 2,000 sockets here and up to the relay's cap there: raise the soft
    // descriptor limit to the hard one (the relay inherits it).
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = 4096u64;
    if limit.current.is_some_and(|c| c < wanted) {
        let raised = limit.maximum.map_or(wanted, |m| m.min(wanted));
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(raised),
                maximum: limit.maximum,
            },
        )
        .unwrap();
        assert!(
            raised >= wanted,
            "this test holds 2,000 connections: the hard limit on open files ({raised}) is too low"
        );
    }
    // A generous handshake timeout, so the flood is still held when the
    // endpoint comes (an attacker reconnects as often as it must).
    let relay = Relay::start_with(RelayOptions {
        limits: Some(ferry_tests::limits("60s", "5m", 1024, 64)),
        ..RelayOptions::default()
    });
    let endpoint = ferry_tests::Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    // 2,000 connections that never say a word, from 50 other addresses
    // (each within the per-source cap and handshake rate).
    let mut idle = Vec::new();

    for source in 0..50u8 {
        for _ in 0..40 {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            let from: std::net::SocketAddr = format!("127.0.1.{}:0", source + 1).parse().unwrap();
            socket.bind(&from.into()).unwrap();
            if socket.connect(&relay.session_addr.into()).is_ok() {
                idle.push(socket);
            }
        }
    }
    assert!(idle.len() >= 1900, "only {} connected", idle.len());
    let started = Instant::now();
    let status = endpoint.ferry(&["status", "--json"]);
    assert!(status.status.success(), "{}", ferry_tests::stderr(&status));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    drop(idle);
}

#[test]
fn an_open_upload_kept_alive_by_pings_alone_is_ended_and_gc_runs() {
    use ferry_protocol::retention::Retention;
    use ferry_tests::{Relay, RelayOptions};
    let relay = Relay::start_with(RelayOptions {
        limits: Some(ferry_tests::limits("10s", "2s", 64, 64)),
        ..RelayOptions::default()
    });
    let endpoint = ferry_tests::Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let mut raw = RawSession::open_as(&relay, &endpoint, 3);
    raw.send(&Message::BackupBegin {
        set: "default".into(),
        retention: Retention::default(),
    });
    assert!(matches!(raw.recv(), Some(Message::BackupReady { .. })));
    let started = Instant::now();
    // A collection asked for now runs beside the open upload.
    let gc = std::thread::spawn({
        let mut command = relay.command();
        command.args(["gc", "--grace", "0s", "--json"]);
        move || ferry_tests::run(command)
    });
    let ended = loop {
        raw.send(&Message::Ping { nonce: 1 });
        match raw.recv() {
            Some(Message::Pong { .. }) => std::thread::sleep(Duration::from_millis(300)),
            other => break other,
        }
        assert!(started.elapsed() < Duration::from_secs(90), "never ended");
    };
    match ended {
        Some(Message::Refused { code, message }) => {
            assert_eq!(code, Refusal::ProtocolViolation);
            assert!(message.contains("made no progress"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let gc = gc.join().unwrap();
    assert!(gc.status.success(), "{}", ferry_tests::stderr(&gc));
    assert!(started.elapsed() < Duration::from_secs(90));
}

#[test]
fn a_backup_beside_a_slow_upload_and_a_collection_waits_for_neither() {
    use ferry_tests::tree::random_bytes;
    use ferry_tests::{ok, wait_for, DEADLINE};
    let (relay, slow) = paired();
    let fast = Endpoint::new();
    fast.pair_with(&relay, "desk");
    let work = tempfile::tempdir().unwrap();
    let (slow_dir, fast_dir) = (work.path().join("slow"), work.path().join("fast"));
    std::fs::create_dir_all(&slow_dir).unwrap();
    std::fs::create_dir_all(&fast_dir).unwrap();
    // 512 KiB at 64 KiB/s: an upload open for well over ten seconds.
    let (slow_data, fast_data) = (random_bytes(512 << 10, 61), random_bytes(1 << 20, 62));
    std::fs::write(slow_dir.join("big"), &slow_data).unwrap();
    std::fs::write(fast_dir.join("doc"), &fast_data).unwrap();
    ok(relay.admin(&["clients", "limit", "laptop", "64KiB/s"]));
    let mut upload = slow
        .command()
        .args(["backup", arg(&slow_dir)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the slow upload to flow", DEADLINE, || {
        let list: serde_json::Value =
            serde_json::from_str(&ok(relay.admin(&["clients", "list", "--json"]))).ok()?;
        let laptop = list.as_array()?.iter().find(|c| c["name"] == "laptop")?;
        laptop["rate"].as_u64().filter(|r| *r > 0)
    });
    let started = Instant::now();
    let gc = std::thread::spawn({
        let mut command = relay.command();
        command.args(["gc", "--grace", "0s", "--json"]);
        move || ferry_tests::run(command)
    });
    fast.backup_json(&[arg(&fast_dir)]);
    let backed_up = started.elapsed();
    let gc = gc.join().unwrap();
    assert!(gc.status.success(), "{}", ferry_tests::stderr(&gc));
    let collected = started.elapsed();
    assert!(
        backed_up < Duration::from_secs(60),
        "the 1 MiB backup took {backed_up:?} beside the slow upload and the collection"
    );
    assert!(
        collected < Duration::from_secs(60),
        "the collection took {collected:?}: it waited for the slow upload"
    );
    assert!(
        upload.try_wait().unwrap().is_none(),
        "the slow upload should still be running"
    );
    let status = wait_for("the slow upload to end", Duration::from_secs(60), || {
        upload.try_wait().unwrap()
    });
    assert!(status.success(), "the slow upload failed");
    // A second collection after both, then each restores identical.
    ok(relay.admin(&["gc", "--grace", "0s"]));
    assert_restores(&slow, &slow_dir, "big", &slow_data);
    assert_restores(&fast, &fast_dir, "doc", &fast_data);
}

#[test]
fn a_client_cannot_open_sessions_without_end() {
    use ferry_tests::{Relay, RelayOptions};
    let relay = Relay::start_with(RelayOptions {
        limits: Some(ferry_tests::limits("10s", "5m", 64, 64) + "max-sessions-per-client = 2\n"),
        ..RelayOptions::default()
    });
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let first = RawSession::open_as(&relay, &endpoint, 4);
    let _second = RawSession::open_as(&relay, &endpoint, 4);
    let mut third = RawSession::open_as(&relay, &endpoint, 4);
    match third.recv() {
        Some(Message::Close { reason }) => {
            assert!(reason.contains("2 sessions open already"), "{reason}")
        }
        other => panic!("expected Close, got {other:?}"),
    }
    let out = endpoint.ferry(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = ferry_tests::stderr(&out);
    assert!(err.contains("max-sessions-per-client"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // One ends: the next gets in.
    drop(first);
    ferry_tests::wait_for("a session slot", ferry_tests::DEADLINE, || {
        endpoint.ferry(&["status"]).status.success().then_some(())
    });
}
