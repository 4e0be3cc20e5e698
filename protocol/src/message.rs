//! Application messages exchanged inside an established session.
//!
//! One `postcard`-encoded [`Message`] enum. The first message each side sends
//! is [`Message::Hello`], which carries the minor version and software name
//! (the major version was settled by the preamble before the handshake).
//! Decoding reads from a buffer already bounded by
//! [`crate::fragment::MAX_MESSAGE`], and postcard never allocates more than
//! the input holds, so a hostile length cannot force a large allocation.

use serde::{Deserialize, Serialize};

use crate::ProtocolError;

/// Greeting sent first by both sides of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Major protocol version (must match the preamble's).
    pub major: u16,
    /// Minor protocol version: features the sender understands.
    pub minor: u16,
    /// Sender's software and version, for logs.
    pub software: String,
}

/// Everything that travels inside a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// First message of each side.
    Hello(Hello),
    /// Liveness and round-trip probe; answered by `Pong` with the same nonce.
    Ping {
        /// Echoed back unchanged.
        nonce: u64,
    },
    /// Answer to `Ping`.
    Pong {
        /// The nonce of the `Ping` answered.
        nonce: u64,
    },
    /// The sender is closing the session; the reason is shown to the user.
    Close {
        /// Human-readable reason, e.g. "client removed".
        reason: String,
    },
}

impl Message {
    /// Encodes the message into its postcard bytes.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] if serialization fails (it cannot for these types).
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        postcard::to_allocvec(self).map_err(|_| ProtocolError::Malformed("message encoding"))
    }

    /// Decodes one whole message; trailing bytes are an error.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for anything that is not exactly one message.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        match postcard::take_from_bytes::<Message>(bytes) {
            Ok((message, [])) => Ok(message),
            _ => Err(ProtocolError::Malformed("message")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u16>(), any::<u16>(), ".{0,40}").prop_map(|(major, minor, software)| {
                Message::Hello(Hello {
                    major,
                    minor,
                    software,
                })
            }),
            any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
            any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
            ".{0,200}".prop_map(|reason| Message::Close { reason }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(message in any_message()) {
            let bytes = message.encode().unwrap();
            prop_assert_eq!(Message::decode(&bytes).unwrap(), message);
        }

        #[test]
        fn trailing_bytes_are_rejected(message in any_message(), extra in 1u8..) {
            let mut bytes = message.encode().unwrap();
            bytes.push(extra);
            prop_assert!(Message::decode(&bytes).is_err());
        }
    }

    #[test]
    fn huge_declared_string_does_not_allocate() {
        // Close with a string length of 2^62: must fail, not allocate.
        let bytes = [3u8, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40];
        assert!(Message::decode(&bytes).is_err());
    }
}
