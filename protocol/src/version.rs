//! Protocol versions and the cleartext preamble.
//!
//! Every connection starts with an 8-byte [`Preamble`]: `b"FERRY"`, a byte for
//! the connection kind, and the sender's major version (big-endian `u16`). The
//! Noise prologue binds the same bytes, so a tampered preamble fails the
//! handshake; a peer with another major version gets
//! [`ProtocolError::VersionMismatch`] naming both versions rather than an opaque
//! decryption failure.

use crate::ProtocolError;

/// The major version: peers must agree on it exactly.
pub const PROTOCOL_MAJOR: u16 = 1;
/// The minor version: additive changes; exchanged in `Hello`.
pub const PROTOCOL_MINOR: u16 = 8;
/// The protocol's name, bound into every Noise prologue.
pub const PROTOCOL_NAME: &[u8] = b"ferry";
/// Length of the preamble on the wire.
pub const PREAMBLE_LEN: usize = 8;

const MAGIC: &[u8; 5] = b"FERRY";
const BUSY: u8 = b'B';

/// What a connection is for; the relay serves each on its own listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    /// One-time pairing over the LAN (SPAKE2 + `Noise_XXpsk3`).
    Pairing,
    /// An authenticated session (`Noise_IK`).
    Session,
}

impl ConnectionKind {
    fn byte(self) -> u8 {
        match self {
            ConnectionKind::Pairing => b'P',
            ConnectionKind::Session => b'S',
        }
    }
}

/// The 8 cleartext bytes that open each direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// What the connection is for.
    pub kind: ConnectionKind,
    /// The sender's major protocol version.
    pub major: u16,
}

impl Preamble {
    /// The preamble this build sends.
    pub fn current(kind: ConnectionKind) -> Self {
        Preamble {
            kind,
            major: PROTOCOL_MAJOR,
        }
    }

    /// The wire form.
    pub fn encode(&self) -> [u8; PREAMBLE_LEN] {
        let mut out = [0u8; PREAMBLE_LEN];
        out[..5].copy_from_slice(MAGIC);
        out[5] = self.kind.byte();
        out[6..].copy_from_slice(&self.major.to_be_bytes());
        out
    }

    /// What a relay at its connection limits sends before closing, so the
    /// endpoint can say "busy" rather than guess.
    pub fn busy() -> [u8; PREAMBLE_LEN] {
        let mut out = Preamble::current(ConnectionKind::Session).encode();
        out[5] = BUSY;
        out
    }

    /// Parses a preamble of the expected kind.
    ///
    /// # Errors
    /// [`ProtocolError::Busy`] for the busy preamble, [`ProtocolError::NotFerry`]
    /// when the magic or kind is wrong; the version is returned as is and
    /// checked by [`Preamble::check_version`].
    pub fn decode(bytes: &[u8; PREAMBLE_LEN], kind: ConnectionKind) -> Result<Self, ProtocolError> {
        if &bytes[..5] == MAGIC && bytes[5] == BUSY {
            return Err(ProtocolError::Busy);
        }
        if &bytes[..5] != MAGIC || bytes[5] != kind.byte() {
            return Err(ProtocolError::NotFerry);
        }
        Ok(Preamble {
            kind,
            major: u16::from_be_bytes([bytes[6], bytes[7]]),
        })
    }

    /// Checks that the peer speaks our major version.
    ///
    /// # Errors
    /// [`ProtocolError::VersionMismatch`] naming both versions and roles.
    pub fn check_version(
        &self,
        peer_role: &'static str,
        our_role: &'static str,
    ) -> Result<(), ProtocolError> {
        if self.major == PROTOCOL_MAJOR {
            Ok(())
        } else {
            Err(ProtocolError::VersionMismatch {
                peer_role,
                peer: self.major,
                our_role,
                ours: PROTOCOL_MAJOR,
            })
        }
    }

    /// The Noise prologue for this kind of connection: protocol name, kind and
    /// major version, so both sides prove they agreed on all three.
    pub fn prologue(kind: ConnectionKind) -> Vec<u8> {
        let mut p = PROTOCOL_NAME.to_vec();
        p.extend_from_slice(&Preamble::current(kind).encode());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_mismatch() {
        let p = Preamble::current(ConnectionKind::Session);
        let back = Preamble::decode(&p.encode(), ConnectionKind::Session).unwrap();
        assert_eq!(back, p);
        assert!(back.check_version("relay", "endpoint").is_ok());
        assert_eq!(
            Preamble::decode(&p.encode(), ConnectionKind::Pairing),
            Err(ProtocolError::NotFerry)
        );
        let other = Preamble {
            kind: ConnectionKind::Session,
            major: 7,
        };
        let err = other
            .check_version("relay", "endpoint")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "relay speaks ferry protocol 7, this endpoint speaks ferry protocol 1"
        );
    }
}
