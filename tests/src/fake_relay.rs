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
use ferry_protocol::version::{
    ConnectionKind, Preamble, PREAMBLE_LEN, PROTOCOL_MAJOR, PROTOCOL_MINOR,
};

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
    /// directory), each run by `script` after the `Hello`s (it says this
    /// build's protocol version, and `software` for its name).
    ///
    /// # Panics
    /// When the key cannot be read or the port bound.
    pub fn start(
        relay_data: &Path,
        software: &str,
        script: impl Fn(&mut RawSession) + Send + 'static,
    ) -> Self {
        let software = software.to_string();
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
                    major: PROTOCOL_MAJOR,
                    minor: PROTOCOL_MINOR,
                    software: software.clone(),
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

/// A script that answers every request as an agreeable relay would (all
/// chunks and objects missing, every sync clean, every commit taken), but
/// with `signature` for every signature asked for.
pub fn answer_with_signature(signature: Vec<u8>) -> impl Fn(&mut RawSession) + Send + 'static {
    move |session| {
        while let Some(request) = session.recv() {
            let reply = match request {
                Message::BackupBegin { .. } => Message::BackupReady { max_file: None },
                Message::QueryChunks { ids } => Message::ChunksMissing {
                    missing: vec![0xff; ids.len().div_ceil(8)],
                },
                Message::GetSignatures { ids } => Message::Signatures {
                    signatures: ids
                        .iter()
                        .map(|_| Some(serde_bytes::ByteBuf::from(signature.clone())))
                        .collect(),
                },
                Message::GetBaseSignatures { bases } => Message::Signatures {
                    signatures: bases
                        .iter()
                        .map(|_| Some(serde_bytes::ByteBuf::from(signature.clone())))
                        .collect(),
                },
                Message::QueryObjects { ids } => Message::ObjectsMissing { ids },
                Message::Sync => Message::Synced {
                    rejected: Vec::new(),
                },
                Message::Commit { .. } => Message::Committed { snapshot: 99 },
                Message::ListSnapshots { .. } => Message::SnapshotList {
                    snapshots: Vec::new(),
                },
                Message::Ping { nonce } => Message::Pong { nonce },
                Message::GetUsage => Message::Usage {
                    stored: 0,
                    quota: None,
                    warn_percent: 90,
                },
                Message::GetDamage => Message::Damage {
                    damaged: Vec::new(),
                    healed: Vec::new(),
                },
                _ => continue,
            };
            session.send(&reply);
        }
    }
}

/// An rsync signature header with block size 0 and hash size 0, and one
/// block of CRC `crc`: fast_rsync loops forever on CRC 0 and overflows on
/// CRC 1, so both sides must refuse it before it gets there.
pub fn zero_block_signature(crc: u32) -> Vec<u8> {
    let mut signature = 0x7273_0136u32.to_be_bytes().to_vec();
    signature.extend_from_slice(&[0; 8]);
    signature.extend_from_slice(&crc.to_be_bytes());
    signature
}

/// The `Fetched` answer of one reply per item, each made by `reply`.
///
/// # Panics
/// When the replies do not encode (they always do).
pub fn fetched_each(
    items: &[ferry_protocol::fetch::FetchItem],
    reply: impl Fn(&ferry_protocol::fetch::FetchItem) -> ferry_protocol::fetch::FetchReply,
) -> Message {
    fetched(items.iter().map(reply).collect())
}

/// A `Fetched` message carrying `replies`, as a relay of protocol 1.5 on
/// answers a `Fetch` (uncompressed).
///
/// # Panics
/// When the replies do not encode (they always do).
pub fn fetched(replies: Vec<ferry_protocol::fetch::FetchReply>) -> Message {
    Message::Fetched {
        codec: ferry_protocol::compress::Codec::None,
        data: ferry_protocol::fetch::FetchReplies(replies)
            .encode()
            .expect("replies encode"),
    }
}
