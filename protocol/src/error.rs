//! Errors of the protocol layer.
//!
//! Policy: one enum for the whole crate, because every caller reacts the same
//! way to all of them (log, tell the user one line, drop the connection). Each
//! variant says what was wrong with the bytes, never echoes secret material,
//! and is small enough to cross threads.

use thiserror::Error;

/// Why a protocol operation failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// A length read from the network is larger than this protocol allows.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// What carried the length.
        what: &'static str,
        /// The length that was announced or accumulated.
        len: usize,
        /// The largest accepted length.
        max: usize,
    },
    /// Bytes that do not decode as the expected structure.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The connection did not start with ferry's preamble.
    #[error("the peer does not speak the ferry protocol")]
    NotFerry,
    /// The relay is at its connection limits and turned us away.
    #[error("the relay is busy (at its connection limits); try again later")]
    Busy,
    /// The peer speaks another major version of the protocol.
    #[error(
        "{peer_role} speaks ferry protocol {peer}, this {our_role} speaks ferry protocol {ours}"
    )]
    VersionMismatch {
        /// Which side the peer is ("relay" or "endpoint").
        peer_role: &'static str,
        /// The peer's major version.
        peer: u16,
        /// Which side we are.
        our_role: &'static str,
        /// Our major version.
        ours: u16,
    },
    /// A Noise operation failed: a handshake or frame did not authenticate.
    #[error("cryptographic check failed during {0}")]
    Crypto(&'static str),
    /// A handshake timestamp not newer than the last one accepted for this key.
    #[error("replayed or stale handshake")]
    Replay,
    /// A handshake timestamp further ahead of the relay's clock than
    /// [`crate::timestamp::MAX_AHEAD_SECS`].
    #[error("the handshake's time is {ahead_secs} s ahead of the relay's clock")]
    ClockAhead {
        /// How far ahead, in seconds.
        ahead_secs: u64,
    },
    /// A message arrived that the state machine does not expect now.
    #[error("unexpected {0}")]
    Unexpected(&'static str),
}
