//! An established Noise channel: application messages in, frames out, and back.
//!
//! [`Transport::seal`] encodes a [`Message`], splits it into pieces
//! ([`crate::fragment`]), encrypts each as one Noise transport message and
//! appends it to the caller's buffer as a frame. [`Transport::open`] takes one
//! frame payload and returns a message once its last piece has arrived. The
//! first frame that fails to authenticate is an error, after which the caller
//! must close the connection (Noise nonces make recovery impossible anyway).
//!
//! Rekeying: both directions switch to a new key every [`REKEY_INTERVAL`]
//! Noise messages (`REKEY` from the Noise spec, §11.3). Both sides count the
//! same messages, so no signalling is needed, and the nonce budget of 2⁶⁴ is
//! never approached.

use crate::fragment::{self, Reassembler, MAX_PLAINTEXT};
use crate::frame::{HEADER_LEN, MAX_FRAME};
use crate::message::Message;
use crate::ProtocolError;

/// Noise messages per direction between two rekeys.
pub const REKEY_INTERVAL: u64 = 1 << 20;
/// Bytes a Noise message adds to its plaintext (the AEAD tag).
pub const TAG_LEN: usize = 16;

/// One side of an established session or pairing channel.
pub struct Transport {
    noise: snow::TransportState,
    reassembler: Reassembler,
    sent: u64,
    received: u64,
    rekey_interval: u64,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("sent", &self.sent)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

/// Bytes on the wire for an application message of `len` encoded bytes.
pub fn sealed_len(len: usize) -> usize {
    let pieces = len.div_ceil(fragment::MAX_FRAGMENT).max(1);
    len + pieces * (1 + TAG_LEN + HEADER_LEN)
}

impl Transport {
    /// Wraps a finished Noise handshake.
    pub fn new(noise: snow::TransportState) -> Self {
        Transport {
            noise,
            reassembler: Reassembler::default(),
            sent: 0,
            received: 0,
            rekey_interval: REKEY_INTERVAL,
        }
    }

    /// Overrides the rekey interval; tests use a small one to exercise rekeying.
    pub fn with_rekey_interval(mut self, interval: u64) -> Self {
        self.rekey_interval = interval.max(1);
        self
    }

    /// Encrypts `message` and appends its frames to `dst`.
    ///
    /// # Errors
    /// [`ProtocolError::TooLarge`] for oversized messages, [`ProtocolError::Crypto`]
    /// if encryption fails.
    pub fn seal(&mut self, message: &Message, dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        self.seal_bytes(message.encode()?, dst)
    }

    /// Encrypts already-encoded message bytes and appends their frames to `dst`.
    ///
    /// # Errors
    /// As [`Transport::seal`].
    pub fn seal_bytes(&mut self, bytes: Vec<u8>, dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let start = dst.len();
        dst.resize(start + sealed_len(bytes.len()), 0);
        let written = self.seal_into(bytes, &mut dst[start..])?;
        dst.truncate(start + written);
        Ok(())
    }

    /// Encrypts message bytes as frames into `out`, which must hold at least
    /// [`sealed_len`] bytes; returns the bytes written. Callers that keep one
    /// output buffer for a connection avoid clearing and refilling it per message.
    ///
    /// # Errors
    /// As [`Transport::seal`], and [`ProtocolError::TooLarge`] when `out` is short.
    pub fn seal_into(&mut self, bytes: Vec<u8>, out: &mut [u8]) -> Result<usize, ProtocolError> {
        let needed = sealed_len(bytes.len());
        if out.len() < needed {
            return Err(ProtocolError::TooLarge {
                what: "message for the output buffer",
                len: needed,
                max: out.len(),
            });
        }
        let mut at = 0;
        fragment::split(bytes, |plaintext| {
            debug_assert!(plaintext.len() <= MAX_PLAINTEXT);
            let body = &mut out[at + HEADER_LEN..];
            let len = self
                .noise
                .write_message(plaintext, body)
                .map_err(|_| ProtocolError::Crypto("encryption"))?;
            debug_assert!(len <= MAX_FRAME);
            out[at..at + HEADER_LEN].copy_from_slice(&(len as u16).to_be_bytes());
            at += HEADER_LEN + len;
            self.sent += 1;
            if self.sent % self.rekey_interval == 0 {
                self.noise.rekey_outgoing();
            }
            Ok(())
        })?;
        Ok(at)
    }

    /// Decrypts one frame payload; returns the message its last piece completes.
    ///
    /// # Errors
    /// [`ProtocolError::Crypto`] when the frame does not authenticate (tampered,
    /// replayed, reordered or from another session); decoding errors otherwise.
    pub fn open(&mut self, frame: &[u8]) -> Result<Option<Message>, ProtocolError> {
        match self.open_bytes(frame)? {
            Some(bytes) => Message::decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Whether a message of several frames is being joined (see
    /// [`Reassembler::joining`](crate::fragment::Reassembler::joining)).
    pub fn joining(&self) -> bool {
        self.reassembler.joining()
    }

    /// Room for the message being joined (see
    /// [`Reassembler::reserve_join`](crate::fragment::Reassembler::reserve_join)).
    pub fn reserve_join(&mut self) {
        self.reassembler.reserve_join();
    }

    /// Like [`Transport::open`], returning the raw message bytes.
    ///
    /// # Errors
    /// As [`Transport::open`].
    pub fn open_bytes(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, ProtocolError> {
        let noise = &mut self.noise;
        let joined = self.reassembler.push_with(frame.len(), |room| {
            noise
                .read_message(frame, room)
                .map_err(|_| ProtocolError::Crypto("decryption of a frame"))
        })?;
        self.received += 1;
        if self.received % self.rekey_interval == 0 {
            self.noise.rekey_incoming();
        }
        Ok(joined)
    }
}
