//! The session handshake: `Noise_IK_25519_ChaChaPoly_BLAKE2s`, endpoint first.
//!
//! ```text
//! IK:  <- s                      (the endpoint knows the relay's key from pairing)
//!      -> e, es, s, ss  [timestamp]
//!      <- e, ee, se     []
//! ```
//!
//! The prologue binds the protocol name, connection kind and major version
//! ([`Preamble::prologue`]). The first message's payload is the endpoint's
//! [`Timestamp`]; the relay checks it against its [`crate::timestamp::ReplayGuard`]
//! after it has decided the key belongs to an active client, and only then
//! answers. A relay that does not recognise the key sends nothing at all.
//!
//! Since protocol 1.4 the first message is followed by a MAC keyed by the
//! relay's public key ([`first_mac`], WireGuard's `mac1`): the relay checks
//! it before any Diffie-Hellman work, so a flood from anyone who does not
//! know its key (an internet scan, a botnet) costs it one BLAKE3 per
//! message, not two X25519 operations. Under load it drops first messages
//! without one (endpoints older than 1.4).

use crate::keys::{PublicKey, StaticKeypair};
use crate::noise::{crypto, session_params as params};
use crate::timestamp::{Timestamp, TIMESTAMP_LEN};
use crate::transport::Transport;
use crate::version::{ConnectionKind, Preamble};
use crate::ProtocolError;

/// Largest first handshake message: 32 (e) + 48 (s + tag) + 12 + 16 (payload + tag).
pub const FIRST_MESSAGE_LEN: usize = 32 + 48 + TIMESTAMP_LEN + 16;

/// Length of the MAC after the first message (see [`first_mac`]).
pub const MAC_LEN: usize = 32;

/// The MAC an endpoint appends to its first `message` to `relay`: a keyed
/// BLAKE3, the key derived from the relay's public key, which the endpoint
/// learnt at pairing and a stranger does not know.
pub fn first_mac(relay: &PublicKey, message: &[u8]) -> [u8; MAC_LEN] {
    let key = blake3::derive_key("ferry 2026-11 session first-message mac", &relay.0);
    *blake3::keyed_hash(&key, message).as_bytes()
}

/// What the MAC of a first handshake frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstMac {
    /// Made with this relay's key.
    Valid,
    /// Present, but not made with this relay's key.
    Invalid,
    /// None (an endpoint older than protocol 1.4).
    Absent,
}

/// Splits a first handshake frame into the Noise message and what its MAC
/// says, checked in constant time against `relay` (this relay's key).
pub fn check_first_mac<'a>(relay: &PublicKey, frame: &'a [u8]) -> (&'a [u8], FirstMac) {
    if frame.len() != FIRST_MESSAGE_LEN + MAC_LEN {
        return (frame, FirstMac::Absent);
    }
    let (message, mac) = frame.split_at(FIRST_MESSAGE_LEN);
    let mac: [u8; MAC_LEN] = mac.try_into().expect("split at the MAC's length");
    let valid =
        blake3::Hash::from_bytes(mac) == blake3::Hash::from_bytes(first_mac(relay, message));
    (
        message,
        if valid {
            FirstMac::Valid
        } else {
            FirstMac::Invalid
        },
    )
}

/// The endpoint's half of the handshake, after sending the first message.
pub struct Initiator {
    noise: snow::HandshakeState,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("session::Initiator")
    }
}

impl Initiator {
    /// Starts a handshake to `relay`, writing the first message (unframed)
    /// and its MAC to `dst`.
    ///
    /// # Errors
    /// [`ProtocolError::Crypto`] if snow rejects a key.
    pub fn start(
        local: &StaticKeypair,
        relay: &PublicKey,
        now: Timestamp,
        dst: &mut Vec<u8>,
    ) -> Result<Self, ProtocolError> {
        let from = dst.len();
        let initiator = Self::start_without_mac(local, relay, now, dst)?;
        let mac = first_mac(relay, &dst[from..]);
        dst.extend_from_slice(&mac);
        Ok(initiator)
    }

    /// Like [`Initiator::start`], without the MAC: the first message as
    /// relays older than protocol 1.4 expect it.
    ///
    /// # Errors
    /// [`ProtocolError::Crypto`] if snow rejects a key.
    pub fn start_without_mac(
        local: &StaticKeypair,
        relay: &PublicKey,
        now: Timestamp,
        dst: &mut Vec<u8>,
    ) -> Result<Self, ProtocolError> {
        let prologue = Preamble::prologue(ConnectionKind::Session);
        let mut noise = snow::Builder::new(params())
            .prologue(&prologue)
            .and_then(|b| b.local_private_key(local.secret()))
            .and_then(|b| b.remote_public_key(&relay.0))
            .and_then(|b| b.build_initiator())
            .map_err(crypto("handshake setup"))?;
        let mut buf = [0u8; FIRST_MESSAGE_LEN];
        let len = noise
            .write_message(&now.encode(), &mut buf)
            .map_err(crypto("handshake"))?;
        dst.extend_from_slice(&buf[..len]);
        Ok(Initiator { noise })
    }

    /// Reads the relay's answer and finishes the handshake.
    ///
    /// # Errors
    /// [`ProtocolError::Crypto`] if the answer does not come from the relay key
    /// we paired with; [`ProtocolError::Malformed`] for a non-empty payload.
    pub fn finish(mut self, answer: &[u8]) -> Result<Transport, ProtocolError> {
        let mut payload = [0u8; 64];
        let len = self
            .noise
            .read_message(answer, &mut payload)
            .map_err(crypto("the relay's handshake answer"))?;
        if len != 0 {
            return Err(ProtocolError::Malformed("handshake answer payload"));
        }
        let noise = self
            .noise
            .into_transport_mode()
            .map_err(crypto("handshake"))?;
        Ok(Transport::new(noise))
    }
}

/// The relay's half, after reading a first message that decrypted.
pub struct Responder {
    noise: snow::HandshakeState,
    /// The initiator's static key, authenticated by the `ss` token.
    pub peer: PublicKey,
    /// The initiator's clock when it started; check it with a `ReplayGuard`.
    pub timestamp: Timestamp,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("session::Responder")
            .field("peer", &self.peer)
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// Reads an endpoint's first message.
    ///
    /// # Errors
    /// [`ProtocolError::Crypto`] when the message was not made for our key (or
    /// was tampered with); [`ProtocolError::Malformed`] for a bad timestamp.
    pub fn read_first(local: &StaticKeypair, first: &[u8]) -> Result<Self, ProtocolError> {
        if first.len() > FIRST_MESSAGE_LEN {
            return Err(ProtocolError::TooLarge {
                what: "first handshake message",
                len: first.len(),
                max: FIRST_MESSAGE_LEN,
            });
        }
        let prologue = Preamble::prologue(ConnectionKind::Session);
        let mut noise = snow::Builder::new(params())
            .prologue(&prologue)
            .and_then(|b| b.local_private_key(local.secret()))
            .and_then(|b| b.build_responder())
            .map_err(crypto("handshake setup"))?;
        let mut payload = [0u8; FIRST_MESSAGE_LEN];
        let len = noise
            .read_message(first, &mut payload)
            .map_err(crypto("the first handshake message"))?;
        let timestamp = Timestamp::decode(&payload[..len])?;
        let peer = PublicKey::from_slice(
            noise
                .get_remote_static()
                .ok_or(ProtocolError::Malformed("first handshake message"))?,
        )?;
        Ok(Responder {
            noise,
            peer,
            timestamp,
        })
    }

    /// Accepts the endpoint: writes the answer (unframed) to `dst`.
    ///
    /// # Errors
    /// [`ProtocolError::Crypto`] if snow fails to write the answer.
    pub fn accept(mut self, dst: &mut Vec<u8>) -> Result<Transport, ProtocolError> {
        let mut buf = [0u8; 64];
        let len = self
            .noise
            .write_message(&[], &mut buf)
            .map_err(crypto("handshake answer"))?;
        dst.extend_from_slice(&buf[..len]);
        let noise = self
            .noise
            .into_transport_mode()
            .map_err(crypto("handshake"))?;
        Ok(Transport::new(noise))
    }
}

/// Both ends of a session between two fresh keys, with no network in
/// between (initiator's transport first): what benchmarks and tests of the
/// transport and channel need.
///
/// # Errors
/// Key generation or handshake failures (none in practice).
pub fn local_pair() -> Result<(Transport, Transport), ProtocolError> {
    let endpoint = StaticKeypair::generate()?;
    let relay = StaticKeypair::generate()?;
    let mut first = Vec::new();
    let initiator = Initiator::start_without_mac(
        &endpoint,
        &relay.public,
        Timestamp { secs: 1, nanos: 0 },
        &mut first,
    )?;
    let mut answer = Vec::new();
    let responder = Responder::read_first(&relay, &first)?.accept(&mut answer)?;
    Ok((initiator.finish(&answer)?, responder))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn keys() -> (StaticKeypair, StaticKeypair) {
        (
            StaticKeypair::generate().unwrap(),
            StaticKeypair::generate().unwrap(),
        )
    }

    #[test]
    fn the_first_mac_is_checked_without_any_key_agreement() {
        let (endpoint, relay) = keys();
        let other = StaticKeypair::generate().unwrap();
        let now = Timestamp { secs: 1, nanos: 0 };
        let mut first = Vec::new();
        Initiator::start(&endpoint, &relay.public, now, &mut first).unwrap();
        // Another relay (or a stranger's guess) does not match it.
        assert_eq!(check_first_mac(&other.public, &first).1, FirstMac::Invalid);
        let mut tampered = first.clone();
        tampered[40] ^= 1;
        assert_eq!(
            check_first_mac(&relay.public, &tampered).1,
            FirstMac::Invalid
        );
        // The form of endpoints older than 1.4 has none, and still works.
        let mut legacy = Vec::new();
        Initiator::start_without_mac(&endpoint, &relay.public, now, &mut legacy).unwrap();
        let (message, mac) = check_first_mac(&relay.public, &legacy);
        assert_eq!((message.len(), mac), (FIRST_MESSAGE_LEN, FirstMac::Absent));
        assert!(Responder::read_first(&relay, message).is_ok());
    }

    #[test]
    fn handshake_then_messages_both_ways() {
        let (endpoint, relay) = keys();
        let now = Timestamp {
            secs: 1_800_000_000,
            nanos: 7,
        };
        let mut first = Vec::new();
        let initiator = Initiator::start(&endpoint, &relay.public, now, &mut first).unwrap();
        assert_eq!(first.len(), FIRST_MESSAGE_LEN + MAC_LEN);
        let (first, mac) = check_first_mac(&relay.public, &first);
        assert_eq!(mac, FirstMac::Valid);
        let responder = Responder::read_first(&relay, first).unwrap();
        assert_eq!(responder.peer, endpoint.public);
        assert_eq!(responder.timestamp, now);
        let mut answer = Vec::new();
        let mut relay_side = responder
            .accept(&mut answer)
            .unwrap()
            .with_rekey_interval(3);
        let mut endpoint_side = initiator.finish(&answer).unwrap().with_rekey_interval(3);

        // Enough messages to cross several rekeys, with a multi-fragment one.
        for i in 0..10u64 {
            let mut wire = Vec::new();
            endpoint_side
                .seal(&Message::Ping { nonce: i }, &mut wire)
                .unwrap();
            let (payload, used) = crate::frame::parse_frame(&wire).unwrap().unwrap();
            assert_eq!(used, wire.len());
            assert_eq!(
                relay_side.open(payload).unwrap(),
                Some(Message::Ping { nonce: i })
            );
        }
        let big = Message::Close {
            reason: "x".repeat(200_000),
        };
        let mut wire = Vec::new();
        relay_side.seal(&big, &mut wire).unwrap();
        let mut got = None;
        let mut rest = &wire[..];
        while let Some((payload, used)) = crate::frame::parse_frame(rest).unwrap() {
            got = endpoint_side.open(payload).unwrap().or(got);
            rest = &rest[used..];
        }
        assert_eq!(got, Some(big));
    }

    #[test]
    fn wrong_relay_key_and_tampering_fail() {
        let (endpoint, relay) = keys();
        let stranger = StaticKeypair::generate().unwrap();
        let now = Timestamp { secs: 1, nanos: 0 };
        let mut first = Vec::new();
        Initiator::start_without_mac(&endpoint, &stranger.public, now, &mut first).unwrap();
        assert!(matches!(
            Responder::read_first(&relay, &first),
            Err(ProtocolError::Crypto(_))
        ));

        let mut first = Vec::new();
        Initiator::start_without_mac(&endpoint, &relay.public, now, &mut first).unwrap();
        for i in 0..first.len() {
            let mut bad = first.clone();
            bad[i] ^= 0x40;
            assert!(
                Responder::read_first(&relay, &bad).is_err(),
                "flip at {i} accepted"
            );
        }
    }

    #[test]
    fn flipped_transport_frame_is_rejected() {
        let (mut endpoint_side, mut relay_side) = local_pair().unwrap();
        let mut wire = Vec::new();
        endpoint_side
            .seal(&Message::Ping { nonce: 1 }, &mut wire)
            .unwrap();
        wire[5] ^= 1;
        let (payload, _) = crate::frame::parse_frame(&wire).unwrap().unwrap();
        assert!(matches!(
            relay_side.open(payload),
            Err(ProtocolError::Crypto(_))
        ));
    }

    #[test]
    fn derived_public_key_matches_snow() {
        let kp = snow::Builder::new(params()).generate_keypair().unwrap();
        let ours = StaticKeypair::from_secret_slice(&kp.private).unwrap();
        assert_eq!(ours.public.0.as_slice(), kp.public.as_slice());
        let again = StaticKeypair::from_secret_hex(&ours.secret_hex()).unwrap();
        assert_eq!(again.public, ours.public);
        assert_eq!(
            PublicKey::from_hex(&ours.public.to_hex()).unwrap(),
            ours.public
        );
        assert_eq!(ours.public.fingerprint().to_string().len(), 19);
    }
}
