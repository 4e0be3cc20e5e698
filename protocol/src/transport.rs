//! An established Noise channel: application messages in, frames out, and back.
//!
//! [`Transport::seal`] encodes a [`Message`], splits it into fragments
//! ([`crate::fragment`]), encrypts each as one Noise transport message and
//! appends it to the caller's buffer as a frame. [`Transport::open`] takes one
//! frame payload and returns a message once its last fragment has arrived.
//! The first frame that fails to authenticate is an error, after which the
//! caller must close the connection (Noise nonces make recovery impossible
//! anyway).
//!
//! Rekeying: both directions switch to a new key every [`REKEY_INTERVAL`]
//! Noise messages (`REKEY` from the Noise spec, §11.3). Both sides count the
//! same messages, so no signalling is needed, and the nonce budget of 2⁶⁴ is
//! never approached.

use crate::fragment::{self, Reassembler, MAX_PLAINTEXT};
use crate::frame::{encode_frame, MAX_FRAME};
use crate::message::Message;
use crate::ProtocolError;

/// Noise messages per direction between two rekeys.
pub const REKEY_INTERVAL: u64 = 1 << 20;

/// One side of an established session or pairing channel.
pub struct Transport {
    noise: snow::TransportState,
    reassembler: Reassembler,
    sent: u64,
    received: u64,
    rekey_interval: u64,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("sent", &self.sent)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
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
            scratch: vec![0u8; MAX_FRAME],
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
        self.seal_bytes(&message.encode()?, dst)
    }

    /// Encrypts already-encoded message bytes and appends their frames to `dst`.
    ///
    /// # Errors
    /// As [`Transport::seal`].
    pub fn seal_bytes(&mut self, bytes: &[u8], dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        fragment::split(bytes, |plaintext| {
            debug_assert!(plaintext.len() <= MAX_PLAINTEXT);
            let len = self
                .noise
                .write_message(plaintext, &mut self.scratch)
                .map_err(|_| ProtocolError::Crypto("encryption"))?;
            encode_frame(&self.scratch[..len], dst)?;
            self.sent += 1;
            if self.sent % self.rekey_interval == 0 {
                self.noise.rekey_outgoing();
            }
            Ok(())
        })
    }

    /// Decrypts one frame payload; returns the message its last fragment completes.
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

    /// Like [`Transport::open`], returning the raw message bytes.
    ///
    /// # Errors
    /// As [`Transport::open`].
    pub fn open_bytes(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, ProtocolError> {
        let len = self
            .noise
            .read_message(frame, &mut self.scratch)
            .map_err(|_| ProtocolError::Crypto("decryption of a frame"))?;
        self.received += 1;
        if self.received % self.rekey_interval == 0 {
            self.noise.rekey_incoming();
        }
        self.reassembler.handle_plaintext(&self.scratch[..len])
    }
}
