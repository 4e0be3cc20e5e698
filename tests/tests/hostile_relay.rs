//! A relay turned hostile, broken or stalled, played by a scripted fake
//! with the real relay's key: the endpoint ends what it cannot trust with
//! one clear line, and never hangs.

use std::time::{Duration, Instant};

use ferry_protocol::message::Message;
use ferry_tests::fake_relay::{answer_with_signature, zero_block_signature, FakeRelay};
use ferry_tests::{arg, paired, stderr, Endpoint};

/// An endpoint paired with a real relay, now stopped, whose key `script`
/// answers with (as protocol 1.4); its silence timeout is `silence`.
fn against_fake(
    silence: &str,
    script: impl Fn(&mut ferry_tests::RawSession) + Send + 'static,
) -> (Endpoint, FakeRelay, tempfile::TempDir) {
    let (mut relay, endpoint) = paired();
    relay.terminate();
    let fake = FakeRelay::start(&relay.data(), "fake relay", script);
    endpoint.set_addresses(&[fake.addr.to_string()]);
    std::fs::write(
        endpoint.state().join("endpoint.toml"),
        format!("[connect]\nsilence-timeout = {silence:?}\n"),
    )
    .unwrap();
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("file"), b"some data").unwrap();
    (endpoint, fake, source)
}

#[test]
fn a_relay_that_goes_silent_ends_the_backup_after_the_silence_timeout() {
    let (endpoint, _fake, source) = against_fake("2s", |session| {
        // Takes every request, answers none.
        while session.recv().is_some() {}
    });
    let started = Instant::now();
    let out = endpoint.ferry(&["backup", arg(source.path())]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("sent nothing for 2s"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(took < Duration::from_secs(60), "gave up after {took:?}");
    // `ferry status` too.
    let out = endpoint.ferry(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("sent nothing for 2s"), "{err}");
}

#[test]
fn a_relay_that_says_it_is_working_is_waited_for() {
    let (endpoint, _fake, source) = against_fake("2s", |session| {
        assert!(matches!(session.recv(), Some(Message::BackupBegin { .. })));
        // Four seconds of work, said every second: longer than the silence
        // timeout, never silent for it.
        for _ in 0..4 {
            std::thread::sleep(Duration::from_secs(1));
            session.send(&Message::Working);
        }
        session.send(&Message::Close {
            reason: "the fake relay is done".into(),
        });
    });
    let out = endpoint.ferry(&["backup", arg(source.path())]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("the fake relay is done"), "{err}");
}

#[test]
fn a_crafted_signature_from_the_relay_ends_the_backup_at_once_with_one_line() {
    let (mut relay, endpoint) = paired();
    let source = tempfile::tempdir().unwrap();
    let path = source.path().join("big");
    let mut data = ferry_tests::tree::random_bytes(512 << 10, 131);
    std::fs::write(&path, &data).unwrap();
    endpoint.backup_json(&[arg(source.path())]);
    // An edit in the middle: the changed chunk has a predecessor, whose
    // signature the endpoint asks the relay for.
    data[200_000..200_100].fill(7);
    std::fs::write(&path, &data).unwrap();
    relay.terminate();
    let fake = FakeRelay::start(
        &relay.data(),
        "fake relay",
        answer_with_signature(zero_block_signature(0)),
    );
    endpoint.set_addresses(&[fake.addr.to_string()]);
    let started = Instant::now();
    let out = endpoint.ferry(&["backup", arg(source.path())]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("signature"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn control_characters_in_what_the_relay_says_reach_no_terminal() {
    let (mut relay, endpoint) = paired();
    relay.terminate();
    let fake = FakeRelay::start(
        &relay.data(),
        "evil\x1b]0;pwned\x07\x1b[2Jrelay",
        answer_with_signature(Vec::new()),
    );
    endpoint.set_addresses(&[fake.addr.to_string()]);
    let out = endpoint.ferry(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("evil"), "{shown}");
    assert!(
        !shown.contains('\x1b') && !shown.contains('\x07'),
        "{shown:?}"
    );
}

/// A snapshot of `depth` directories each inside the last, as a relay
/// could make up: (root id, every tree by id).
fn chain_of_directories(
    depth: usize,
) -> (
    ferry_protocol::ids::TreeId,
    std::collections::HashMap<ferry_protocol::ids::TreeId, Vec<u8>>,
) {
    use ferry_protocol::tree::{EntryKind, Tree};
    let mut trees = std::collections::HashMap::new();
    let (mut id, bytes) = Tree {
        entries: Vec::new(),
    }
    .encode()
    .unwrap();
    trees.insert(id, bytes);
    for _ in 0..depth {
        let (parent, bytes) = Tree {
            entries: vec![ferry_tests::tree::entry(b"d", EntryKind::Dir { tree: id })],
        }
        .encode()
        .unwrap();
        trees.insert(parent, bytes);
        id = parent;
    }
    (id, trees)
}

#[test]
fn a_snapshot_deeper_than_any_path_ends_the_restore_with_one_line_not_a_crash() {
    use ferry_protocol::fetch::{FetchItem, FetchReply};
    use ferry_protocol::message::ObjectId;
    use ferry_tests::fake_relay::fetched_each;
    let (root, trees) = chain_of_directories(100_000);
    let (out, took, _target) = restore_from_fake(move |request| {
        Some(match request {
            Message::ListSnapshots { .. } => one_snapshot(root),
            Message::GetObject {
                id: ObjectId::Tree(tree),
            } => Message::Object {
                codec: ferry_protocol::compress::Codec::None,
                data: trees[&tree].clone(),
            },
            Message::Fetch { items, .. } => fetched_each(&items, |item| match item {
                FetchItem::Object(ObjectId::Tree(tree)) => FetchReply::Data {
                    codec: ferry_protocol::compress::Codec::None,
                    data: trees[tree].clone(),
                },
                // One level at a time, as a relay with little room would.
                FetchItem::Trees(tree) => FetchReply::Trees(vec![trees[tree].clone().into()]),
                _ => FetchReply::Refused {
                    code: ferry_protocol::message::Refusal::NoSuchObject,
                    message: "no such object".into(),
                },
            }),
            _ => return None,
        })
    });
    let err = stderr(&out);
    assert!(
        out.status.code() == Some(1) || out.status.code() == Some(3),
        "{:?}: {err}",
        out.status
    );
    assert!(err.contains("deeper than"), "{err}");
    assert!(took < Duration::from_secs(90));
}

/// A restore into an empty directory from a fake relay that answers each
/// request with `answer` (none: no answer); what it printed, how long it
/// took, and the target.
fn restore_from_fake(
    answer: impl Fn(Message) -> Option<Message> + Send + 'static,
) -> (std::process::Output, Duration, tempfile::TempDir) {
    run_against_fake(answer, |target| vec!["restore", "--map-to", arg(target)])
}

/// `ferry ARGS` (made from a scratch directory) against a fake relay that
/// answers each request with `answer`.
fn run_against_fake(
    answer: impl Fn(Message) -> Option<Message> + Send + 'static,
    args: impl Fn(&std::path::Path) -> Vec<&str>,
) -> (std::process::Output, Duration, tempfile::TempDir) {
    let (endpoint, _fake, _source) = against_fake("60s", move |session| {
        while let Some(request) = session.recv() {
            if let Some(reply) = answer(request) {
                session.send(&reply);
            }
        }
    });
    let target = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = endpoint.ferry(&args(target.path()));
    (out, started.elapsed(), target)
}

/// The answer to `ListSnapshots` of a relay holding one snapshot, of `root`.
fn one_snapshot(root: ferry_protocol::ids::TreeId) -> Message {
    Message::SnapshotList {
        snapshots: vec![ferry_protocol::message::SnapshotInfo {
            id: 1,
            set: "default".into(),
            root,
            started_ms: 0,
            finished_ms: 0,
            files: 0,
            bytes: 0,
        }],
    }
}

/// A relay that answers a restore's batched fetches with `replies(n)` for
/// a fetch of `n` items: the restore ends at once with `expected` on one
/// line, nothing written.
fn fetches_answered_with(
    replies: impl Fn(usize) -> Vec<ferry_protocol::fetch::FetchReply> + Send + 'static,
    expected: &str,
) {
    use ferry_protocol::ids::TreeId;
    use ferry_tests::fake_relay::fetched;
    let (out, took, target) = restore_from_fake(move |request| match request {
        Message::ListSnapshots { .. } => Some(one_snapshot(TreeId([7; 32]))),
        Message::Fetch { items, .. } => Some(fetched(replies(items.len()))),
        _ => None,
    });
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(expected), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(took < Duration::from_secs(90));
    assert_eq!(std::fs::read_dir(target.path()).unwrap().count(), 0);
}

#[test]
fn a_fetch_answered_with_too_few_replies_ends_the_restore_with_one_line() {
    fetches_answered_with(|_| Vec::new(), "sent 0 replies to a fetch of 1");
}

#[test]
fn a_relay_that_puts_off_every_fetch_ends_the_restore_rather_than_looping() {
    fetches_answered_with(
        |n| vec![ferry_protocol::fetch::FetchReply::Later; n],
        "put off the first item",
    );
}

#[test]
fn a_file_list_longer_than_its_size_allows_is_damage_not_memory() {
    // A 100-byte file whose content has one part listing 16,384 chunks: a
    // relay could make a stream of such files hold gigabytes of chunk
    // lists. The file is named damaged; the restore goes on.
    use ferry_protocol::fetch::{FetchItem, FetchReply};
    use ferry_protocol::ids::ChunkId;
    use ferry_protocol::message::ObjectId;
    use ferry_protocol::tree::{ChunkRef, Content, ContentPart, EntryKind, Tree};
    use ferry_tests::fake_relay::fetched_each;
    let (part, part_bytes) = Content {
        chunks: vec![
            ChunkRef {
                id: ChunkId([1; 32]),
                len: 0,
            };
            16_384
        ],
        parts: Vec::new(),
    }
    .encode();
    let (content, content_bytes) = Content {
        chunks: Vec::new(),
        parts: vec![ContentPart { id: part, len: 100 }],
    }
    .encode();
    let file = |name: &[u8]| {
        ferry_tests::tree::entry(
            name,
            EntryKind::File {
                size: 100,
                content,
                sparse: None,
            },
        )
    };
    let (root, root_bytes) = Tree {
        entries: vec![file(b"a"), file(b"b")],
    }
    .encode()
    .unwrap();
    let answer = move |request: Message| {
        let data = |bytes: &Vec<u8>| FetchReply::Data {
            codec: ferry_protocol::compress::Codec::None,
            data: bytes.clone(),
        };
        Some(match request {
            Message::ListSnapshots { .. } => one_snapshot(root),
            Message::Fetch { items, .. } => fetched_each(&items, |item| match item {
                FetchItem::Trees(_) => FetchReply::Trees(vec![root_bytes.clone().into()]),
                FetchItem::Object(ObjectId::Content(id)) if *id == content => data(&content_bytes),
                _ => data(&part_bytes),
            }),
            _ => return None,
        })
    };
    // A restore, and a check that writes nothing, name both files.
    let (restored, took, _target) = restore_from_fake(answer.clone());
    let (checked, _, _) = run_against_fake(answer, |_| vec!["verify"]);
    for out in [restored, checked] {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains("does not fit a file of 100 bytes"), "{err}");
        assert_eq!(err.matches("does not fit").count(), 2, "{err}");
    }
    assert!(took < Duration::from_secs(90));
}

#[test]
fn junk_and_unasked_trees_from_the_relay_are_not_trusted_or_hoarded() {
    // Asked for a snapshot's trees, the relay sends bytes that are no tree,
    // and a pile of valid trees nobody asked for; asked for the root as an
    // object, it refuses. Nothing may be written, the trees sent must not
    // stand in for the root, and the restore must end at once, saying so.
    use ferry_protocol::fetch::{FetchItem, FetchReply};
    use ferry_protocol::ids::TreeId;
    use ferry_protocol::tree::{EntryKind, Tree};
    use ferry_tests::fake_relay::fetched_each;
    let unasked: Vec<Vec<u8>> = (0..2_000u32)
        .map(|i| {
            let name = format!("planted-{i}");
            Tree {
                entries: vec![ferry_tests::tree::entry(
                    name.as_bytes(),
                    EntryKind::Symlink {
                        target: b"/etc/shadow".to_vec(),
                    },
                )],
            }
            .encode()
            .unwrap()
            .1
        })
        .collect();
    let root = TreeId([9; 32]);
    let answer = move |request: Message| {
        Some(match request {
            Message::ListSnapshots { .. } => one_snapshot(root),
            Message::Fetch { items, .. } => fetched_each(&items, |item| match item {
                FetchItem::Trees(_) => {
                    let mut came = vec![b"\\xffnot a tree at all".to_vec().into()];
                    came.extend(unasked.iter().map(|t| t.clone().into()));
                    FetchReply::Trees(came)
                }
                _ => FetchReply::Refused {
                    code: ferry_protocol::message::Refusal::NoSuchObject,
                    message: "no such object".into(),
                },
            }),
            // The root asked for alone: no such tree.
            Message::GetObject { .. } => Message::Refused {
                code: ferry_protocol::message::Refusal::NoSuchObject,
                message: "no such object".into(),
            },
            _ => return None,
        })
    };
    let (out, took, target) = restore_from_fake(answer);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("nothing of snapshot 1 could be restored: /:"),
        "the damaged root is the news: {err}"
    );
    assert!(took < Duration::from_secs(90), "{took:?}");
    assert_eq!(
        std::fs::read_dir(target.path()).unwrap().count(),
        0,
        "a planted tree was restored: {err}"
    );
}

#[test]
fn a_delta_that_does_not_rebuild_is_asked_for_whole_before_the_file_is_called_damaged() {
    // The target holds an older version of the file: the chunk is asked
    // for as a delta against it. The delta does not rebuild the chunk (a
    // relay's fault, or the user changed the file meanwhile): the chunk is
    // asked for whole, and the file is restored, not named damaged.
    use ferry_protocol::compress::Codec;
    use ferry_protocol::fetch::{FetchItem, FetchReply};
    use ferry_protocol::ids::ChunkId;
    use ferry_protocol::message::ObjectId;
    use ferry_protocol::tree::{ChunkRef, Content, EntryKind, Tree};
    use ferry_tests::fake_relay::fetched_each;
    let chunk: Vec<u8> = b"the new version of the file\n".repeat(700);
    let id = ChunkId::of(&chunk);
    let (content, content_bytes) = Content {
        chunks: vec![ChunkRef {
            id,
            len: chunk.len() as u32,
        }],
        parts: Vec::new(),
    }
    .encode();
    let (root, root_bytes) = Tree {
        entries: vec![ferry_tests::tree::entry(
            b"f",
            EntryKind::File {
                size: chunk.len() as u64,
                content,
                sparse: None,
            },
        )],
    }
    .encode()
    .unwrap();
    let whole_asks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&whole_asks);
    let answer = move |request: Message| {
        let data = |bytes: &[u8]| FetchReply::Data {
            codec: Codec::None,
            data: bytes.to_vec(),
        };
        Some(match request {
            Message::ListSnapshots { .. } => one_snapshot(root),
            Message::Fetch { items, .. } => fetched_each(&items, |item| match item {
                FetchItem::Trees(_) => FetchReply::Trees(vec![root_bytes.clone().into()]),
                FetchItem::Object(ObjectId::Content(_)) => data(&content_bytes),
                FetchItem::Chunk {
                    base_signature: Some(_),
                    ..
                } => FetchReply::Delta {
                    codec: Codec::None,
                    delta: b"rs\x026 not a delta that rebuilds anything".to_vec(),
                },
                _ => {
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    data(&chunk)
                }
            }),
            _ => return None,
        })
    };
    let wanted = b"the new version of the file\n".repeat(700);
    let (out, _, target) = run_against_fake(answer, |target| {
        std::fs::write(
            target.join("f"),
            b"the old version of the file\n".repeat(700),
        )
        .unwrap();
        // Written now, newer than the snapshot's: replaced only when asked.
        vec![
            "restore",
            "--map-to",
            arg(target),
            "--overwrite",
            "if-changed",
        ]
    });
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(std::fs::read(target.path().join("f")).unwrap(), wanted);
    assert_eq!(
        whole_asks.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "asked for whole once, after the delta failed"
    );
}

#[test]
fn a_relay_that_never_answers_the_handshake_is_named_with_how_far_it_got() {
    let (_relay, endpoint) = paired();
    // Takes the connection, reads what comes, says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept() {
            held.push(conn);
        }
    });
    endpoint.set_addresses(&[addr.to_string()]);
    std::fs::write(
        endpoint.state().join("endpoint.toml"),
        "[connect]\nhandshake-timeout = \"1s\"\n",
    )
    .unwrap();
    let out = endpoint.ferry(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "the relay at {addr} did not finish the handshake in time (1s): it did not answer our first message"
        )),
        "{err}"
    );
}
