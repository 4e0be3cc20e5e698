//! Sessions through the real binaries: refusals, revocation, replay,
//! tampering and version mismatch, with the relay staying up throughout.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ferry_protocol::keys::StaticKeypair;
use ferry_protocol::version::{ConnectionKind, Preamble};
use ferry_tests::proxy::{Direction, Flip, Proxy};
use ferry_tests::{stderr, wait_for, Endpoint, RawSession, Relay, DEADLINE};

/// An endpoint that knows the relay but whose key the relay never paired.
fn stranger(paired: &Endpoint) -> Endpoint {
    let other = Endpoint::new();
    std::fs::create_dir_all(other.state().join("keys")).unwrap();
    std::fs::copy(
        paired.state().join("relay.toml"),
        other.state().join("relay.toml"),
    )
    .unwrap();
    let keys = StaticKeypair::generate().unwrap();
    ferry_net::io::keyfile::write_private(
        &other.state().join("keys/endpoint.key"),
        keys.secret_hex().as_bytes(),
    )
    .unwrap();
    other
}

/// Reads until EOF; returns what arrived.
fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).unwrap();
    got
}

#[test]
fn an_unpaired_key_is_refused_and_the_relay_stays_up() {
    let relay = Relay::start();
    let paired = Endpoint::new();
    paired.pair_with(&relay, "laptop");
    let other = stranger(&paired);
    let out = other.ferry(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("refused the handshake"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    relay.wait_for_log("is not a paired client");
    assert_eq!(paired.status_json()["path"], "lan");
}

#[test]
fn removing_a_client_ends_its_session_within_2s_and_refuses_it_after() {
    let mut relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let (mut watch, _lines) = endpoint.watching();

    let removed_at = Instant::now();
    assert!(relay
        .admin(&["clients", "remove", "laptop"])
        .status
        .success());
    let status = wait_for("the watching session to end", DEADLINE, || {
        watch.try_wait().unwrap()
    });
    let took = removed_at.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "session ended after {took:?}"
    );
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    watch
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("key was removed"), "{err}");

    let out = endpoint.ferry(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refused the handshake"),
        "{}",
        stderr(&out)
    );
    assert!(relay.is_running());
    assert!(relay.admin(&["clients", "show", "laptop"]).status.code() == Some(1));
}

#[test]
fn a_replayed_first_handshake_message_opens_no_session() {
    let relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let proxy = Proxy::start(relay.session_addr, None);
    endpoint.set_addresses(&[proxy.addr.to_string()]);
    assert_eq!(
        endpoint.status_json()["address"],
        proxy.addr.to_string().as_str()
    );

    // Preamble + the first frame (the Noise_IK first message), as recorded.
    let sent = proxy.sent_to_relay();
    let first_len = 8 + 2 + usize::from(u16::from_be_bytes([sent[8], sent[9]]));
    let mut replay = TcpStream::connect(relay.session_addr).unwrap();
    replay.write_all(&sent[..first_len]).unwrap();
    assert!(
        read_to_eof(&mut replay).is_empty(),
        "the relay answered a replay"
    );
    relay.wait_for_log("replayed or stale handshake");
    assert_eq!(relay.log().matches("session opened").count(), 1);
}

#[test]
fn a_handshake_dropped_without_a_word_is_tried_again_before_blaming_the_key() {
    let relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    // An overloaded relay drops two connections, then answers.
    let proxy = Proxy::start_dropping(relay.session_addr, None, 2);
    endpoint.set_addresses(&[proxy.addr.to_string()]);
    assert!(endpoint.status_json()["rtt_ms"].is_number());
    // One that drops every connection: the message names both causes.
    let proxy = Proxy::start_dropping(relay.session_addr, None, usize::MAX);
    endpoint.set_addresses(&[proxy.addr.to_string()]);
    let out = endpoint.ferry(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let said = stderr(&out);
    assert!(
        said.contains("refused the handshake 3 times") && said.contains("overloaded"),
        "{said}"
    );
}

#[test]
fn a_first_message_replayed_after_the_relay_restarts_opens_no_session() {
    let mut relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let proxy = Proxy::start(relay.session_addr, None);
    endpoint.set_addresses(&[proxy.addr.to_string()]);
    assert!(endpoint.status_json()["rtt_ms"].is_number());
    let sent = proxy.sent_to_relay();
    let first = sent[..8 + 2 + usize::from(u16::from_be_bytes([sent[8], sent[9]]))].to_vec();
    let replay_gets_no_answer = |relay: &Relay| {
        let mut replay = TcpStream::connect(relay.session_addr).unwrap();
        replay.write_all(&first).unwrap();
        read_to_eof(&mut replay).is_empty()
    };
    // Killed with no warning, once the watcher saved the time (it does
    // within a watch interval); then stopped cleanly.
    let catalog = relay.data().join("catalog.sqlite");
    wait_for("the handshake time saved", DEADLINE, || {
        let db = rusqlite::Connection::open(&catalog).ok()?;
        let saved: i64 = db
            .query_row("SELECT COUNT(*) FROM handshakes", [], |r| r.get(0))
            .ok()?;
        (saved == 1).then_some(())
    });
    relay.kill_and_restart();
    assert!(replay_gets_no_answer(&relay), "answered after kill -9");
    relay.terminate();
    relay.start_again();
    assert!(replay_gets_no_answer(&relay), "answered after a restart");
    relay.wait_for_log("replayed or stale handshake");
    // The endpoint itself, with a fresh timestamp, still gets in.
    endpoint.set_addresses(&[relay.session_addr.to_string()]);
    assert!(endpoint.status_json()["rtt_ms"].is_number());
}

#[test]
fn a_flipped_byte_in_any_frame_ends_the_session_and_the_relay_stays_up() {
    let mut relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    // Frames of `ferry status`: to the relay: IK message, Hello, Ping, Close;
    // to the endpoint: IK answer, Hello, Pong.
    let cases = [
        (Direction::ToRelay, 0),
        (Direction::ToRelay, 1),
        (Direction::ToRelay, 2),
        (Direction::ToEndpoint, 0),
        (Direction::ToEndpoint, 1),
        (Direction::ToEndpoint, 2),
    ];
    for (direction, frame) in cases {
        let proxy = Proxy::start(relay.session_addr, Some(Flip { direction, frame }));
        endpoint.set_addresses(&[proxy.addr.to_string()]);
        let out = endpoint.ferry(&["status"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{direction:?} frame {frame} was accepted"
        );
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
        assert!(relay.is_running());
    }
    relay.wait_for_log("decryption of a frame");
    relay.wait_for_log("first handshake message rejected");
    endpoint.set_addresses(&[relay.session_addr.to_string()]);
    assert_eq!(endpoint.status_json()["path"], "lan");
}

#[test]
fn an_endpoint_of_another_version_is_told_both_versions() {
    let relay = Relay::start();
    let mut stream = TcpStream::connect(relay.session_addr).unwrap();
    let future = Preamble {
        kind: ConnectionKind::Session,
        major: 99,
    };
    stream.write_all(&future.encode()).unwrap();
    let answer = read_to_eof(&mut stream);
    let relay_preamble =
        Preamble::decode(answer[..8].try_into().unwrap(), ConnectionKind::Session).unwrap();
    assert_eq!(relay_preamble.major, 1);
    relay.wait_for_log("endpoint speaks ferry protocol 99, this relay speaks ferry protocol 1");
}

#[test]
fn a_relay_of_another_version_gives_a_one_line_error_naming_both() {
    let relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    // A stand-in for a future relay: answers any session with major version 2.
    let future = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = future.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = future.accept() {
            let mut preamble = [0u8; 8];
            let _ = conn.read_exact(&mut preamble);
            let _ = conn.write_all(
                &Preamble {
                    kind: ConnectionKind::Session,
                    major: 2,
                }
                .encode(),
            );
        }
    });
    endpoint.set_addresses(&[addr.to_string()]);
    let out = endpoint.ferry(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("relay speaks ferry protocol 2, this endpoint speaks ferry protocol 1"),
        "{err}"
    );
}

#[test]
fn lan_address_first_then_internet_fallback() {
    let relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    // A LAN address that refuses connections, then the real one as "internet".
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    endpoint.set_addresses(&[dead.to_string(), relay.session_addr.to_string()]);
    let status = endpoint.status_json();
    assert_eq!(status["path"], "internet");
    assert_eq!(status["address"], relay.session_addr.to_string().as_str());
    // With both reachable, the LAN address wins.
    let proxy = Proxy::start(relay.session_addr, None);
    endpoint.set_addresses(&[proxy.addr.to_string(), relay.session_addr.to_string()]);
    let status = endpoint.status_json();
    assert_eq!(status["path"], "lan");
    assert_eq!(status["address"], proxy.addr.to_string().as_str());
}

#[test]
fn sigterm_stops_the_relay_cleanly() {
    let mut relay = Relay::start();
    let status = relay.terminate();
    assert!(status.success(), "{status:?}");
    assert!(relay.log().contains("relay stopped"));
    assert!(!relay.data().join("run/listen.json").exists());
}

fn limits(handshake_timeout: &str, max_connections: usize) -> String {
    ferry_tests::limits(handshake_timeout, "5m", max_connections, 64)
}

#[test]
fn a_silent_connection_is_closed_at_the_handshake_timeout() {
    let relay = Relay::start_with(ferry_tests::RelayOptions {
        limits: Some(limits("1s", 100)),
        ..Default::default()
    });
    let mut silent = TcpStream::connect(relay.session_addr).unwrap();
    let opened = Instant::now();
    assert!(read_to_eof(&mut silent).is_empty());
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(30),
        "{took:?}"
    );
    relay.wait_for_log("timed out");
}

#[test]
fn the_global_connection_cap_refuses_extra_connections_and_frees_slots() {
    let relay = Relay::start_with(ferry_tests::RelayOptions {
        limits: Some(limits("10s", 2)),
        ..Default::default()
    });
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    // Idle connections that never authenticate cannot fill the cap: each
    // new one evicts the oldest (a quarter of the cap may be handshaking).
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(relay.session_addr).unwrap())
        .collect();
    assert!(endpoint.status_json()["rtt_ms"].is_number());
    drop(idle);
    // Two authenticated sessions can: then a session is refused, and told why.
    let held: Vec<RawSession> = (0..2)
        .map(|_| RawSession::open(&relay, &endpoint))
        .collect();
    let err = wait_for("the cap to bite", DEADLINE, || {
        let out = endpoint.ferry(&["status"]);
        (!out.status.success()).then(|| stderr(&out))
    });
    assert!(err.contains("is busy"), "{err}");
    relay.wait_for_log("refused connection from 127.0.0.1");
    relay.wait_for_log("the relay's connection limit is reached");
    drop(held);
    wait_for("a slot to free up", DEADLINE, || {
        endpoint.ferry(&["status"]).status.success().then_some(())
    });
}

#[test]
fn an_idle_session_is_closed_with_a_reason() {
    let relay = Relay::start_with(ferry_tests::RelayOptions {
        limits: Some(ferry_tests::limits("10s", "1s", 10, 10)),
        ..Default::default()
    });
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let RawSession {
        mut stream,
        mut transport,
    } = RawSession::open(&relay, &endpoint);
    let opened = Instant::now();
    let rest = read_to_eof(&mut stream);
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(30),
        "{took:?}"
    );
    let (payload, _) = ferry_protocol::frame::parse_frame(&rest).unwrap().unwrap();
    let close = transport.open(payload).unwrap();
    assert_eq!(
        close,
        Some(ferry_protocol::message::Message::Close {
            reason: "idle timeout".into()
        })
    );
    relay.wait_for_log("session closed: client laptop from 127.0.0.1");
}

#[test]
fn refusals_are_coded_for_current_endpoints_and_text_for_older_ones() {
    use ferry_protocol::ids::TreeId;
    use ferry_protocol::message::{Message, ObjectId, Refusal};
    let relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let ask = Message::GetObject {
        id: ObjectId::Tree(TreeId([7; 32])),
    };
    let mut current = RawSession::open_as(&relay, &endpoint, 2);
    current.send(&ask);
    match current.recv() {
        Some(Message::Refused { code, message }) => {
            assert_eq!(code, Refusal::NoSuchObject);
            assert!(message.contains("no such object"), "{message}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    let mut older = RawSession::open_as(&relay, &endpoint, 1);
    older.send(&ask);
    match older.recv() {
        Some(Message::Failed { message }) => {
            assert!(message.contains("no such object"), "{message}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    // A request that breaks the rules ends the session with a code that
    // 1.3 introduced: 1.2 endpoints get it as text.
    let upload_outside_a_backup = Message::Sync;
    let mut current = RawSession::open_as(&relay, &endpoint, 3);
    current.send(&upload_outside_a_backup);
    match current.recv() {
        Some(Message::Refused { code, message }) => {
            assert_eq!(code, Refusal::ProtocolViolation);
            assert!(message.contains("sync outside a backup"), "{message}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    let mut older = RawSession::open_as(&relay, &endpoint, 2);
    older.send(&upload_outside_a_backup);
    match older.recv() {
        Some(Message::Failed { message }) => {
            assert!(message.contains("sync outside a backup"), "{message}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// The preamble and the first handshake frame of `endpoint`, its MAC as
/// `mac` says: made with the relay's key, `Some(bytes)` in its place, or
/// none (an endpoint older than 1.4).
fn first_frame(endpoint: &Endpoint, mac: Option<Option<[u8; 32]>>) -> Vec<u8> {
    use ferry_protocol::session::{Initiator, MAC_LEN};
    use ferry_protocol::timestamp::Timestamp;
    let (keys, relay_key) = endpoint.session_keys();
    let now = Timestamp::from_unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap(),
    );
    let mut first = Vec::new();
    match mac {
        None => drop(Initiator::start_without_mac(&keys, &relay_key, now, &mut first).unwrap()),
        Some(given) => {
            drop(Initiator::start(&keys, &relay_key, now, &mut first).unwrap());
            if let Some(bytes) = given {
                let at = first.len() - MAC_LEN;
                first[at..].copy_from_slice(&bytes);
            }
        }
    }
    let mut out = Preamble::current(ConnectionKind::Session).encode().to_vec();
    ferry_protocol::frame::encode_frame(&first, &mut out).unwrap();
    out
}

/// Sends `frame` as a new connection; true when the relay answers it.
fn answered(relay: &Relay, frame: &[u8]) -> bool {
    let mut stream = TcpStream::connect(relay.session_addr).unwrap();
    stream.write_all(frame).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut preamble = [0u8; 8];
    stream.read_exact(&mut preamble).is_ok()
}

#[test]
fn a_first_message_whose_mac_is_not_made_with_the_relays_key_is_dropped_before_key_agreement() {
    let relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    assert!(!answered(
        &relay,
        &first_frame(&endpoint, Some(Some([7; 32])))
    ));
    relay.wait_for_log("MAC was not made with this relay's key; dropped before any key agreement");
    // The same message with its true MAC, and without one, are answered.
    assert!(answered(&relay, &first_frame(&endpoint, Some(None))));
    assert!(answered(&relay, &first_frame(&endpoint, None)));
}

#[test]
fn under_load_first_messages_without_a_mac_are_dropped_and_current_endpoints_get_in() {
    let relay = Relay::start_with(ferry_tests::RelayOptions {
        limits: Some(limits("10s", 64) + "handshakes-per-second = 1\n"),
        ..ferry_tests::RelayOptions::default()
    });
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    // A burst of two, then one a second: most of these are past the rate.
    let legacy = (0..6)
        .filter(|_| answered(&relay, &first_frame(&endpoint, None)))
        .count();
    assert!((1..=3).contains(&legacy), "{legacy} of 6 answered");
    relay.wait_for_log("under load (past limits.handshakes-per-second)");
    // Handshakes with the MAC are answered whatever the load.
    for _ in 0..4 {
        assert!(answered(&relay, &first_frame(&endpoint, Some(None))));
    }
    assert_eq!(endpoint.status_json()["path"], "lan");
}

/// A relay whose idle timeout (12 s) is longer than the 10 s working tick.
fn relay_idling_after_12s() -> Relay {
    Relay::start_with(ferry_tests::RelayOptions {
        limits: Some(ferry_tests::limits("10s", "12s", 64, 64)),
        ..ferry_tests::RelayOptions::default()
    })
}

#[test]
fn a_silent_session_is_closed_at_the_idle_timeout_whatever_ticks_pass() {
    let relay = relay_idling_after_12s();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let mut raw = RawSession::open_as(&relay, &endpoint, 4);
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(180)))
        .unwrap();
    let started = Instant::now();
    // The relay says why, then closes: nothing else comes first.
    match raw.recv() {
        Some(ferry_protocol::message::Message::Close { reason }) => {
            assert!(reason.contains("idle timeout"), "{reason}")
        }
        other => panic!("expected Close, got {other:?}"),
    }
    assert!(raw.recv().is_none());
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    relay.wait_for_log("idle timeout");
}

#[test]
fn a_backup_dropped_without_a_word_does_not_hold_its_set_from_the_next_one() {
    use ferry_protocol::message::Message;
    let relay = relay_idling_after_12s();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("note"), b"after the roam").unwrap();
    std::fs::write(
        endpoint.state().join("endpoint.toml"),
        format!("[sets.docs]\npaths = [{src:?}]\n"),
    )
    .unwrap();
    // The laptop's Wi-Fi drops mid-backup: the connection stays open, silent.
    let mut roamed = RawSession::open_as(&relay, &endpoint, 4);
    roamed.send(&Message::BackupBegin {
        set: "docs".into(),
        retention: ferry_protocol::retention::Retention::default(),
    });
    assert!(matches!(roamed.recv(), Some(Message::BackupReady { .. })));
    // Back online, the same laptop backs up the set: refused while the
    // silent session may still be alive, then it takes the set over.
    let done = wait_for("a backup of the set", Duration::from_secs(150), || {
        let out = endpoint.ferry(&["backup", "--set", "docs", "--json"]);
        out.status.success().then_some(out)
    });
    let report: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert!(report["snapshot"].as_u64().is_some(), "{report}");
    relay.wait_for_log("taken over by a newer session");
    // The silent session is told why and closed.
    roamed
        .stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    match roamed.recv() {
        Some(Message::Close { reason }) => assert!(reason.contains("took over"), "{reason}"),
        other => panic!("expected Close, got {other:?}"),
    }
}

/// The relay's answer to a raw session made with the clock `ahead` (or,
/// negative, behind) of the real one: `Ok` when it answers a request,
/// `Err` with the reason it closed.
fn handshake_with_clock(relay: &Relay, endpoint: &Endpoint, ahead: i64) -> Result<(), String> {
    use ferry_protocol::message::Message;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let at = if ahead >= 0 {
        now + Duration::from_secs(ahead.unsigned_abs())
    } else {
        now - Duration::from_secs(ahead.unsigned_abs())
    };
    let mut raw = RawSession::handshake_at(relay, endpoint, 4, at);
    assert!(matches!(raw.recv(), Some(Message::Hello(_))));
    raw.send(&Message::GetUsage);
    match raw.recv() {
        Some(Message::Usage { .. }) => Ok(()),
        Some(Message::Close { reason }) => Err(reason),
        other => panic!("expected Usage or Close, got {other:?}"),
    }
}

#[test]
fn an_endpoint_clock_once_ahead_is_told_so_and_is_not_locked_out_until_it_catches_up() {
    let relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    // A dead RTC battery puts the laptop a year ahead: refused, and told why.
    let year = 365 * 86_400;
    let refused = handshake_with_clock(&relay, &endpoint, year).unwrap_err();
    assert!(
        refused.contains("clock is") && refused.contains("ahead of the relay's"),
        "{refused}"
    );
    // Its clock set right, it gets in at once: the year was never recorded.
    let status = endpoint.ferry(&["snapshots"]);
    assert!(status.status.success(), "{}", stderr(&status));
    // Ahead by less than the allowance is accepted; a clock then set back
    // is told the truth (not to pair again) and gets in once it passes.
    // 20 s ahead: told so while more than 5 s behind (racing handshakes
    // closer than that are dropped and retried), room for a busy machine.
    handshake_with_clock(&relay, &endpoint, 20).unwrap();
    let behind = endpoint.ferry(&["snapshots"]);
    let err = stderr(&behind);
    assert!(!behind.status.success());
    assert!(err.contains("behind a handshake it made before"), "{err}");
    assert!(!err.contains("pair"), "{err}");
    wait_for(
        "the clock to pass its old handshake",
        Duration::from_secs(120),
        || {
            endpoint
                .ferry(&["snapshots"])
                .status
                .success()
                .then_some(())
        },
    );
    let log = relay.log();
    assert!(log.contains("refused session of client laptop"), "{log}");
}

#[test]
fn an_endpoints_close_reason_is_kept_escaped_and_short() {
    use ferry_protocol::message::Message;
    let relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let mut raw = RawSession::open_as(&relay, &endpoint, 4);
    // A forged log line, a NUL for the alert command, and 100 KiB more.
    let reason = format!(
        "bye\n2026-01-01T00:00:00Z  INFO session closed: client admin\0{}",
        "x".repeat(100 << 10)
    );
    raw.send(&Message::Close { reason });
    let log = relay.wait_for_log("the endpoint closed: bye");
    let line = log
        .lines()
        .find(|l| l.contains("the endpoint closed: bye"))
        .unwrap();
    assert!(line.contains("bye\\n2026"), "{line}");
    assert!(!log.contains("\0"));
    assert!(line.len() < 2_000, "{} bytes", line.len());
    assert!(!log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")));
}

#[test]
fn an_office_behind_one_address_holds_more_sessions_than_the_per_source_cap() {
    // Four connections per source, counting only those still handshaking.
    let relay = Relay::start_with(ferry_tests::RelayOptions {
        limits: Some(ferry_tests::limits("10s", "5m", 64, 4)),
        ..ferry_tests::RelayOptions::default()
    });
    let laptops: Vec<Endpoint> = (0..12)
        .map(|i| {
            let laptop = Endpoint::new();
            laptop.pair_with(&relay, &format!("laptop{i}"));
            laptop
        })
        .collect();
    // Twelve sessions from 127.0.0.1 open at once.
    let sessions: Vec<RawSession> = laptops
        .iter()
        .map(|laptop| RawSession::open_as(&relay, laptop, 4))
        .collect();
    assert_eq!(sessions.len(), 12);
    let log = relay.log();
    assert!(!log.contains("connection limit is reached"), "{log}");
}

/// The endpoint's handshake deadline covers the key exchange and the
/// Hellos, never the relay's bookkeeping: with the catalog's write lock
/// held elsewhere for a while (a busy disk, a slow PostgreSQL), a session
/// opens within a 2 s handshake timeout and is answered once the catalog
/// frees; and while that session's catalog write waits, another
/// endpoint's handshake (its key looked up on a connection of its own)
/// still finishes in time.
#[test]
fn a_catalog_busy_writing_does_not_fail_handshakes() {
    let relay = Relay::start();
    let endpoints = [Endpoint::new(), Endpoint::new()];
    for (i, endpoint) in endpoints.iter().enumerate() {
        endpoint.pair_with(&relay, &format!("laptop-{i}"));
        std::fs::write(
            endpoint.state().join("endpoint.toml"),
            "[connect]\nhandshake-timeout = \"2s\"\n",
        )
        .unwrap();
    }
    // Another process holds the write lock for 8 s (the relay waits up
    // to 10 s for it), far longer than the endpoints' 2 s handshake timeout.
    let mut holder = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN IMMEDIATE')\n\
             print('locked', flush=True)\n\
             time.sleep(8)\n\
             c.execute('ROLLBACK')\n",
        )
        .arg(relay.data().join("catalog.sqlite"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    // The first greets, then waits on the catalog to record its session.
    let mut first = endpoints[0]
        .command()
        .arg("status")
        .env("RUST_LOG", "ferry_endpoint=debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = std::io::BufReader::new(first.stderr.take().unwrap());
    let mut heard = String::new();
    while !heard.contains("session open with") {
        heard.clear();
        let n = std::io::BufRead::read_line(&mut said, &mut heard).unwrap();
        assert!(n > 0, "the first status ended before its session opened");
    }
    let second = endpoints[1].ferry(&["status"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let first = first.wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    assert!(holder.wait().unwrap().success());
}
