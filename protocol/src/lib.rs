//! Everything both sides of ferry must agree on, and nothing else.
//!
//! This crate is *sans-IO*: it opens no socket, reads no clock and touches no
//! disk. Callers pass bytes and the current time in (`handle_*`, `read_*`) and
//! take bytes to send out (`poll_*`, `write_*`), so every state machine here can
//! be unit-tested, property-tested and fuzzed without sockets. The IO edge
//! (the tokio channel, key files, token buckets, the local clock) is the
//! `ferry-net` crate beside it.
//!
//! Main types:
//! - [`keys::StaticKeypair`], [`keys::PublicKey`], [`keys::Fingerprint`]: X25519
//!   identities and the short strings humans compare.
//! - [`version::Preamble`]: the 8 cleartext bytes that open every connection and
//!   let a peer of another major version get a clear error instead of a hang.
//! - [`frame::FrameDecoder`]: the 2-byte length framing under Noise.
//! - [`noise`]: the Noise parameters both handshakes use.
//! - [`pairing`]: one-time short-code pairing (SPAKE2, then `Noise_XXpsk3`).
//! - [`session`]: the `Noise_IK` handshake with a replay-proof timestamp.
//! - [`walk`]: the one walk over a snapshot's trees and contents.
//! - [`transport::Transport`]: an established channel that seals application
//!   [`message::Message`]s into frames and opens them again.

#![forbid(unsafe_code)]

pub mod bitmap;
pub mod chunking;
pub mod compress;
pub mod decoding;
pub mod delta;
pub mod error;
pub mod fetch;
pub mod fragment;
pub mod frame;
pub mod fuzzing;
pub mod ids;
pub mod keep;
pub mod keyed_chunking;
pub mod keys;
pub mod label;
pub mod layout;
pub mod message;
pub mod noise;
pub mod pairing;
pub mod patch;
pub mod recovery;
pub mod refusal;
pub mod retention;
pub mod root;
pub mod schedule;
pub mod sealed;
pub mod sealed_dictionary;
pub mod sealed_objects;
pub mod session;
pub mod timestamp;
pub mod transport;
pub mod tree;
pub mod units;
pub mod vault;
pub mod version;
pub mod walk;

pub use error::ProtocolError;
