//! A relay that follows a script: what a hostile, broken or stalled relay
//! sends, for tests of the endpoint. It holds a real relay's key (the
//! endpoint paired with that relay, which is then stopped), does the real
//! handshake and `Hello`s, and hands each session to the script.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::thread::JoinHandle;

use ferry_protocol::frame::encode_frame;
use ferry_protocol::message::{Hello, Message};
use ferry_protocol::session::{check_first_mac, FirstMac, Responder};
use ferry_protocol::version::{ConnectionKind, Preamble, PREAMBLE_LEN};

use crate::{RawSession, DEADLINE};

/// A scripted relay on loopback; it serves sessions until the test ends.
#[derive(Debug)]
pub struct FakeRelay {
    /// Where it listens.
    pub addr: SocketAddr,
    _thread: JoinHandle<()>,
}

impl FakeRelay {
    /// Serves sessions with the key in `relay_data` (a relay data
    /// directory), each run by `script` after the `Hello`s (it says
    /// protocol 1.`minor`).
    ///
    /// # Panics
    /// When the key cannot be read or the port bound.
    pub fn start(
        relay_data: &Path,
        minor: u16,
        script: impl Fn(&mut RawSession) + Send + 'static,
    ) -> Self {
        let keys =
            ferry_net::io::keyfile::load(&relay_data.join("keys/relay.key")).expect("relay key");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
                let mut preamble = [0u8; PREAMBLE_LEN];
                let mut header = [0u8; 2];
                if stream.read_exact(&mut preamble).is_err()
                    || stream.read_exact(&mut header).is_err()
                {
                    continue;
                }
                let mut frame = vec![0u8; usize::from(u16::from_be_bytes(header))];
                stream.read_exact(&mut frame).expect("first frame");
                let (first, mac) = check_first_mac(&keys.public, &frame);
                assert_ne!(mac, FirstMac::Invalid, "the endpoint's MAC");
                let responder = Responder::read_first(&keys, first).expect("first message");
                let mut answer = Vec::new();
                let transport = responder.accept(&mut answer).expect("accept");
                let mut out = Preamble::current(ConnectionKind::Session).encode().to_vec();
                encode_frame(&answer, &mut out).expect("frame");
                stream.write_all(&out).expect("answer");
                let mut session = RawSession { stream, transport };
                assert!(matches!(session.recv(), Some(Message::Hello(_))));
                session.send(&Message::Hello(Hello {
                    major: 1,
                    minor,
                    software: "fake relay".into(),
                }));
                script(&mut session);
            }
        });
        FakeRelay {
            addr,
            _thread: thread,
        }
    }
}
