//! Reaching the relay: addresses in order (LAN first, short timeout), the
//! `Noise_IK` handshake, and the `Hello` exchange.
//!
//! A relay that does not know our key closes the connection without a word
//! (it must not help scanners); we turn that silence into
//! [`ConnectError::Refused`]. Failing to *reach* an address moves on to the
//! next one; a refusal or a protocol error does not, since another path to
//! the same relay would answer the same.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_net::io::{BoxStream, Channel, ChannelError, FramedIo};
use ferry_protocol::frame::encode_frame;
use ferry_protocol::keys::{PublicKey, StaticKeypair};
use ferry_protocol::message::{Hello, Message};
use ferry_protocol::session::Initiator;
use ferry_protocol::timestamp::Timestamp;
use ferry_protocol::version::{ConnectionKind, Preamble, PROTOCOL_MAJOR, PROTOCOL_MINOR};
use ferry_protocol::ProtocolError;
use tokio::net::TcpStream;
use tracing::debug;

use crate::config::ConnectTimeouts;

/// A write the relay does not take within this long (one message, at most
/// a few MiB) ends the session: a relay that stops reading must not hang a
/// backup for ever.
pub const WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(300);

/// Handshakes tried on an address that closes without a word before
/// concluding it refuses this key (an overloaded relay drops some). The
/// last one goes without the first message's MAC, as relays older than
/// protocol 1.4 expect it.
pub const HANDSHAKE_TRIES: u32 = 3;

/// The software string sent in `Hello`.
pub const SOFTWARE: &str = concat!("ferry ", env!("CARGO_PKG_VERSION"));

/// Why no session could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No address answered.
    #[error("cannot reach the relay: {0}")]
    Unreachable(String),
    /// The relay closed the connection at the handshake, every time it
    /// was asked: what it does for a key it does not know, and what an
    /// overloaded relay may do too.
    #[error("the relay at {address} refused the handshake {HANDSHAKE_TRIES} times without a word: either this endpoint's key is not paired with it (or was removed), and `ferry pair` pairs it again, or the relay is overloaded and dropping connections, and a later try succeeds")]
    Refused {
        /// The address that refused.
        address: String,
    },
    /// The relay's answer did not come from the key we paired with.
    #[error("the relay at {address} could not prove it holds the key paired as {expected}: is this the right relay?")]
    WrongRelay {
        /// The address that answered.
        address: String,
        /// The fingerprint we expected.
        expected: String,
    },
    /// Another protocol problem, e.g. another major version.
    #[error("{address}: {source}")]
    Protocol {
        /// The address that answered.
        address: String,
        /// What went wrong.
        source: ChannelError,
    },
    /// The relay is at its connection limits.
    #[error("the relay at {0} is busy (at its connection limits); try again later")]
    Busy(String),
    /// The handshake did not finish in time.
    #[error("the relay at {address} did not finish the handshake in time ({limit:?}): {stage}")]
    Timeout {
        /// The address that went silent.
        address: String,
        /// The handshake timeout.
        limit: Duration,
        /// How far the handshake got.
        stage: Stage,
    },
}

/// How far a handshake got: said when it times out, since "no answer to
/// the first message" (a dropped packet, a relay that cannot keep up with
/// handshakes) and "no greeting after the key exchange" (a relay whose
/// catalog is stuck) are different troubles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Our first message is being sent.
    Sending,
    /// Sent; the relay has not answered it.
    AwaitingAnswer,
    /// The key exchange is done; the relay's `Hello` has not come.
    AwaitingHello,
}

impl Stage {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Stage::Sending,
            1 => Stage::AwaitingAnswer,
            _ => Stage::AwaitingHello,
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Sending => "our first message could not be sent",
            Stage::AwaitingAnswer => "it did not answer our first message",
            Stage::AwaitingHello => {
                "it finished the key exchange but did not greet (a relay too busy to serve the session)"
            }
        })
    }
}

/// Which kind of address a session went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The first address: the relay's LAN address.
    Lan,
    /// Any later address: a public one.
    Internet,
}

impl Path {
    /// `"lan"` or `"internet"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Lan => "lan",
            Path::Internet => "internet",
        }
    }
}

/// An open session with the relay.
#[derive(Debug)]
pub struct Session {
    /// The encrypted channel.
    pub channel: Channel<BoxStream>,
    /// The address that answered.
    pub address: String,
    /// LAN or internet.
    pub path: Path,
    /// The relay's greeting.
    pub relay_hello: Hello,
    /// How long the relay may be silent while a request waits (see
    /// `ConnectTimeouts::silence`).
    pub silence: Duration,
}

/// Opens a session: tries `addresses` in order (the first with the LAN
/// timeout), handshakes with the first that answers.
///
/// # Errors
/// [`ConnectError`], one clear reason.
pub async fn connect(
    keys: &StaticKeypair,
    relay: &PublicKey,
    addresses: &[String],
    timeouts: ConnectTimeouts,
) -> Result<Session, ConnectError> {
    let mut failures = Vec::new();
    for (i, address) in addresses.iter().enumerate() {
        let (path, limit) = if i == 0 {
            (Path::Lan, timeouts.lan)
        } else {
            (Path::Internet, timeouts.internet)
        };
        debug!("trying {address} ({})", path.as_str());
        let stream = match tokio::time::timeout(limit, TcpStream::connect(address.as_str())).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                failures.push(format!("{address}: {e}"));
                continue;
            }
            Err(_) => {
                failures.push(format!("{address}: no answer within {limit:?}"));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut stream = Some(stream);
        let mut tried = 0;
        loop {
            tried += 1;
            let stream = match stream.take() {
                Some(stream) => stream,
                None => match TcpStream::connect(address.as_str()).await {
                    Ok(stream) => stream,
                    Err(e) => return Err(ConnectError::Unreachable(format!("{address}: {e}"))),
                },
            };
            let first = if tried < HANDSHAKE_TRIES {
                FirstMessage::WithMac
            } else {
                FirstMessage::WithoutMac
            };
            let stage = AtomicU8::new(Stage::Sending as u8);
            let attempt = handshake(Box::new(stream), keys, relay, address, first, &stage);
            match tokio::time::timeout(timeouts.handshake, attempt).await {
                Ok(Ok((channel, relay_hello))) => {
                    debug!(
                        "session open with {address} ({}): {}",
                        path.as_str(),
                        relay_hello.software
                    );
                    return Ok(Session {
                        channel,
                        address: address.clone(),
                        path,
                        relay_hello,
                        silence: timeouts.silence,
                    });
                }
                Ok(Err(ConnectError::Refused { .. })) if tried < HANDSHAKE_TRIES => {
                    debug!("{address} closed at the handshake; trying again");
                    tokio::time::sleep(Duration::from_millis(300 * u64::from(tried))).await;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(ConnectError::Timeout {
                        address: address.clone(),
                        limit: timeouts.handshake,
                        stage: Stage::from_u8(stage.load(Ordering::Relaxed)),
                    })
                }
            }
        }
    }
    Err(ConnectError::Unreachable(if failures.is_empty() {
        "no relay addresses are known".into()
    } else {
        failures.join("; ")
    }))
}

/// Opens a session over `stream`, already connected to the relay (an
/// in-process pipe in the tests' pair harness): the handshake and the
/// `Hello`s, as [`connect`] does over TCP.
///
/// # Errors
/// [`ConnectError`], one clear reason.
pub async fn over(
    stream: BoxStream,
    keys: &StaticKeypair,
    relay: &PublicKey,
    silence: Duration,
) -> Result<Session, ConnectError> {
    let address = "in-process";
    let stage = AtomicU8::new(Stage::Sending as u8);
    let (channel, relay_hello) =
        handshake(stream, keys, relay, address, FirstMessage::WithMac, &stage).await?;
    Ok(Session {
        channel,
        address: address.into(),
        path: Path::Lan,
        relay_hello,
        silence,
    })
}

/// The wall clock as a handshake timestamp.
fn now() -> Timestamp {
    Timestamp::from_unix(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO),
    )
}

/// The form of the first handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstMessage {
    /// With the MAC made with the relay's key (protocol 1.4 on).
    WithMac,
    /// Without it, for relays older than 1.4.
    WithoutMac,
}

async fn handshake(
    stream: BoxStream,
    keys: &StaticKeypair,
    relay: &PublicKey,
    address: &str,
    form: FirstMessage,
    stage: &AtomicU8,
) -> Result<(Channel<BoxStream>, Hello), ConnectError> {
    let protocol = |source: ChannelError| ConnectError::Protocol {
        address: address.to_string(),
        source,
    };
    // Closed or reset before the handshake's answer: the relay dropped
    // the connection (a reset when it closed with our first message
    // unread, as an overloaded relay does).
    let refused_on_eof = |e: ChannelError| match e {
        ChannelError::Closed => ConnectError::Refused {
            address: address.to_string(),
        },
        ChannelError::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            ConnectError::Refused {
                address: address.to_string(),
            }
        }
        other => protocol(other),
    };
    let mut io = FramedIo::new(stream);
    let mut first = Vec::new();
    let initiator = match form {
        FirstMessage::WithMac => Initiator::start(keys, relay, now(), &mut first),
        FirstMessage::WithoutMac => Initiator::start_without_mac(keys, relay, now(), &mut first),
    }
    .map_err(|e| protocol(e.into()))?;
    let mut out = Preamble::current(ConnectionKind::Session).encode().to_vec();
    encode_frame(&first, &mut out).map_err(|e| protocol(e.into()))?;
    io.write_raw(&out).await.map_err(refused_on_eof)?;
    stage.store(Stage::AwaitingAnswer as u8, Ordering::Relaxed);

    let preamble = io.read_preamble().await.map_err(refused_on_eof)?;
    let preamble = Preamble::decode(&preamble, ConnectionKind::Session).map_err(|e| match e {
        ProtocolError::Busy => ConnectError::Busy(address.to_string()),
        other => protocol(other.into()),
    })?;
    preamble
        .check_version("relay", "endpoint")
        .map_err(|e| protocol(e.into()))?;
    let answer = io.read_frame().await.map_err(refused_on_eof)?;
    let transport = initiator
        .finish(&answer)
        .map_err(|_| ConnectError::WrongRelay {
            address: address.to_string(),
            expected: relay.fingerprint().to_string(),
        })?;
    stage.store(Stage::AwaitingHello as u8, Ordering::Relaxed);
    io.set_write_timeout(Some(WRITE_STALL));
    let mut channel = Channel::new(io, transport);
    channel
        .send(&Message::Hello(Hello {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
            software: SOFTWARE.into(),
        }))
        .await
        .map_err(protocol)?;
    match channel.recv().await.map_err(protocol)? {
        Message::Hello(hello) if hello.major == PROTOCOL_MAJOR => Ok((channel, hello)),
        Message::Hello(hello) => Err(protocol(
            ProtocolError::VersionMismatch {
                peer_role: "relay",
                peer: hello.major,
                our_role: "endpoint",
                ours: PROTOCOL_MAJOR,
            }
            .into(),
        )),
        Message::Close { reason } => Err(protocol(ChannelError::Io(std::io::Error::other(
            format!("the relay closed the session: {reason}"),
        )))),
        _ => Err(protocol(
            ProtocolError::Unexpected("message before the relay's Hello").into(),
        )),
    }
}
