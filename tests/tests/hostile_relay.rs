//! A relay turned hostile, broken or stalled, played by a scripted fake
//! with the real relay's key: the endpoint ends what it cannot trust with
//! one clear line, and never hangs.

use std::time::{Duration, Instant};

use ferry_protocol::message::Message;
use ferry_tests::fake_relay::FakeRelay;
use ferry_tests::{arg, paired, stderr, Endpoint};

/// An endpoint paired with a real relay, now stopped, whose key `script`
/// answers with (as protocol 1.4); its silence timeout is `silence`.
fn against_fake(
    silence: &str,
    script: impl Fn(&mut ferry_tests::RawSession) + Send + 'static,
) -> (Endpoint, FakeRelay, tempfile::TempDir) {
    let (mut relay, endpoint) = paired();
    relay.terminate();
    let fake = FakeRelay::start(&relay.data(), 4, script);
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
    assert!(took < Duration::from_secs(10), "gave up after {took:?}");
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
