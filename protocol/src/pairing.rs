//! One-time pairing over the trusted LAN: SPAKE2 on a short code, then
//! `Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s` with the SPAKE2 key as PSK.
//!
//! The code (`4-7291-3385`) is a *nameplate* that picks the relay's pending
//! pairing, and a secret of eight digits. SPAKE2 turns the whole code into a
//! strong shared key that an eavesdropper or an active guesser cannot test
//! offline: each guess costs one online attempt, and the relay burns the code
//! after three. The key becomes the PSK of an `XXpsk3` handshake in which both
//! static keys are exchanged and authenticated.
//!
//! ```text
//! endpoint -> relay   Start { nameplate, spake_a, -> e }
//! relay -> endpoint   Reply { spake_b, <- e, ee, s, es }
//! endpoint -> relay   Noise(-> s, se, psk  [PairRequest])     relay learns the code was right
//! relay -> endpoint   Noise(transport      [PairAccept])      endpoint learns the same
//! ```
//!
//! Either side may instead send `Refused { reason }` (unknown or expired code,
//! too many attempts, wrong code); it is unauthenticated and only ever ends
//! the exchange. All frames here are [`PairFrame`]s carried in
//! [`crate::frame`] frames.

use serde::{Deserialize, Serialize};
use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::decoding::decode_exact;
use crate::keys::{PublicKey, StaticKeypair};
use crate::transport::Transport;
use crate::version::{ConnectionKind, Preamble};
use crate::ProtocolError;

/// Largest nameplate.
pub const MAX_NAMEPLATE: u32 = 999;
/// Largest string field in pairing messages (names, addresses, reasons).
pub const MAX_TEXT: usize = 256;
/// Largest number of addresses a relay hands out.
pub const MAX_ADDRESSES: usize = 16;
/// The port a relay takes pairing connections on unless told otherwise
/// (`ferry-relay init --pair-listen`).
pub const DEFAULT_PAIR_PORT: u16 = 7331;

const SPAKE_ID_ENDPOINT: &[u8] = b"ferry-endpoint";
const SPAKE_ID_RELAY: &[u8] = b"ferry-relay";
const PSK_CONTEXT: &str = "ferry pairing 2026-11 noise psk v1";

/// A one-time pairing code: `NAMEPLATE-DDDD-DDDD`.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingCode {
    /// Picks the pending pairing on the relay; not secret.
    pub nameplate: u32,
    /// The eight secret digits.
    secret: u32,
}

impl std::fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PairingCode({}-****-****)", self.nameplate)
    }
}

impl PairingCode {
    /// Builds a code from a nameplate and random bits (reduced to 8 digits).
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for a nameplate of 0 or over [`MAX_NAMEPLATE`].
    pub fn new(nameplate: u32, random: u32) -> Result<Self, ProtocolError> {
        if nameplate == 0 || nameplate > MAX_NAMEPLATE {
            return Err(ProtocolError::Malformed("nameplate"));
        }
        Ok(PairingCode {
            nameplate,
            secret: random % 100_000_000,
        })
    }

    /// Parses `N-DDDD-DDDD`, or the same digits without the dashes
    /// (`N DDDD DDDD`, `NDDDDDDDD`: the last eight are the secret); spaces
    /// around it are ignored.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for anything else.
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        let bad = ProtocolError::Malformed("pairing code (expected N-DDDD-DDDD)");
        let text = text.trim();
        if !text.contains('-') {
            let digits: String = text.split_whitespace().collect();
            if !(9..=11).contains(&digits.len()) || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad);
            }
            let (nameplate, secret) = digits.split_at(digits.len() - 8);
            return Self::parse(&format!("{nameplate}-{}-{}", &secret[..4], &secret[4..]));
        }
        let parts: Vec<&str> = text.split('-').collect();
        let [nameplate, a, b] = parts.as_slice() else {
            return Err(bad);
        };
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_digit());
        if !digits(a, 4) || !digits(b, 4) || nameplate.is_empty() || nameplate.len() > 3 {
            return Err(bad);
        }
        let nameplate: u32 = nameplate.parse().map_err(|_| bad.clone())?;
        let secret: u32 = format!("{a}{b}").parse().map_err(|_| bad.clone())?;
        PairingCode::new(nameplate, secret).map_err(|_| bad)
    }

    /// The secret part as stored by the relay (8 digits).
    pub fn secret_digits(&self) -> String {
        format!("{:08}", self.secret)
    }

    /// Rebuilds a code from a nameplate and stored secret digits.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for bad parts.
    pub fn from_parts(nameplate: u32, secret_digits: &str) -> Result<Self, ProtocolError> {
        let secret = secret_digits
            .parse()
            .map_err(|_| ProtocolError::Malformed("pairing secret"))?;
        PairingCode::new(nameplate, secret)
    }

    /// The full code, for display to the operator only.
    pub fn reveal(&self) -> String {
        let s = self.secret_digits();
        format!("{}-{}-{}", self.nameplate, &s[..4], &s[4..])
    }

    fn password(&self) -> Password {
        Password::new(self.reveal().into_bytes())
    }
}

/// Cleartext envelope of every pairing frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairFrame {
    /// Endpoint's opening: which pending pairing, SPAKE2 and Noise messages.
    Start {
        /// Picks the pending pairing.
        nameplate: u32,
        /// SPAKE2 message A.
        spake: Vec<u8>,
        /// Noise `-> e`.
        noise: Vec<u8>,
    },
    /// Relay's answer: SPAKE2 message B and Noise `<- e, ee, s, es`.
    Reply {
        /// SPAKE2 message B.
        spake: Vec<u8>,
        /// Noise message 2.
        noise: Vec<u8>,
    },
    /// A Noise handshake or transport message.
    Noise(Vec<u8>),
    /// The exchange is over; the reason is shown to the user.
    Refused {
        /// Human-readable reason.
        reason: String,
    },
}

impl PairFrame {
    /// Encodes the frame.
    ///
    /// # Errors
    /// Never in practice; kept fallible for symmetry with decoding.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        postcard::to_allocvec(self).map_err(|_| ProtocolError::Malformed("pairing frame"))
    }

    /// Decodes exactly one frame from a buffer of at most one transport frame.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        decode_exact(bytes, "pairing frame")
    }
}

/// What the endpoint tells the relay once the code has been proven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRequest {
    /// The endpoint's host name, for the operator's listings.
    pub hostname: String,
    /// Whether the client keeps its data sealed (protocol 1.7; endpoints
    /// before it send no such field and are open).
    pub sealed: bool,
}

/// A [`PairRequest`] as endpoints before protocol 1.7 send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LegacyPairRequest {
    hostname: String,
}

/// A [`PairAccept`] as endpoints before protocol 1.7 read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LegacyPairAccept {
    client_id: u64,
    client_name: String,
    addresses: Vec<String>,
}

/// What the relay hands the endpoint when pairing succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairAccept {
    /// The relay's id for this client.
    pub client_id: u64,
    /// The name the operator gave this client.
    pub client_name: String,
    /// Session addresses to try, in order: the LAN address first, then public ones.
    pub addresses: Vec<String>,
    /// Whether the client is sealed: what it asked for, or, for a machine
    /// taking over a client (`pair --replace`), what that client is.
    pub sealed: bool,
}

impl PairAccept {
    /// Checks the bounds a relay must respect.
    ///
    /// # Errors
    /// [`ProtocolError::TooLarge`] when a field is over its limit.
    pub fn check(&self) -> Result<(), ProtocolError> {
        check_text("client name", &self.client_name)?;
        if self.addresses.len() > MAX_ADDRESSES {
            return Err(ProtocolError::TooLarge {
                what: "address list",
                len: self.addresses.len(),
                max: MAX_ADDRESSES,
            });
        }
        self.addresses
            .iter()
            .try_for_each(|a| check_text("address", a))
    }
}

fn check_text(what: &'static str, text: &str) -> Result<(), ProtocolError> {
    if text.len() > MAX_TEXT {
        return Err(ProtocolError::TooLarge {
            what,
            len: text.len(),
            max: MAX_TEXT,
        });
    }
    Ok(())
}

fn noise_builder(local: &StaticKeypair) -> Result<snow::Builder<'_>, ProtocolError> {
    snow::Builder::new(crate::noise::pairing_params())
        .local_private_key(local.secret())
        .map_err(|_| ProtocolError::Crypto("pairing setup"))
}

fn psk_from(spake_key: &[u8]) -> [u8; 32] {
    blake3::derive_key(PSK_CONTEXT, spake_key)
}

fn decrypt_into(
    noise: &mut snow::HandshakeState,
    message: &[u8],
    what: &'static str,
) -> Result<Vec<u8>, ProtocolError> {
    let mut payload = vec![0u8; message.len()];
    let len = noise
        .read_message(message, &mut payload)
        .map_err(|_| ProtocolError::Crypto(what))?;
    payload.truncate(len);
    Ok(payload)
}

fn encrypt(noise: &mut snow::HandshakeState, payload: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let mut out = vec![0u8; payload.len() + 128];
    let len = noise
        .write_message(payload, &mut out)
        .map_err(|_| ProtocolError::Crypto("pairing handshake"))?;
    out.truncate(len);
    Ok(out)
}

/// The endpoint's pairing state before the relay's reply.
pub struct EndpointStart {
    spake: Spake2<Ed25519Group>,
    noise: snow::HandshakeState,
}

impl std::fmt::Debug for EndpointStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pairing::EndpointStart")
    }
}

impl EndpointStart {
    /// Begins pairing with `code`; returns the state and the `Start` frame to send.
    ///
    /// # Errors
    /// [`ProtocolError::Crypto`] if the Noise setup fails.
    pub fn begin(
        code: &PairingCode,
        local: &StaticKeypair,
    ) -> Result<(Self, PairFrame), ProtocolError> {
        let (spake, spake_msg) = Spake2::<Ed25519Group>::start_a(
            &code.password(),
            &Identity::new(SPAKE_ID_ENDPOINT),
            &Identity::new(SPAKE_ID_RELAY),
        );
        let prologue = Preamble::prologue(ConnectionKind::Pairing);
        let mut noise = noise_builder(local)?
            .prologue(&prologue)
            .and_then(|b| b.build_initiator())
            .map_err(|_| ProtocolError::Crypto("pairing setup"))?;
        let first = encrypt(&mut noise, &[])?;
        let frame = PairFrame::Start {
            nameplate: code.nameplate,
            spake: spake_msg,
            noise: first,
        };
        Ok((EndpointStart { spake, noise }, frame))
    }

    /// Reads the relay's `Reply`; returns the state awaiting acceptance and the
    /// frame that proves our knowledge of the code.
    ///
    /// # Errors
    /// [`ProtocolError::Crypto`] for a bad SPAKE2 or Noise message.
    pub fn read_reply(
        mut self,
        spake_b: &[u8],
        noise_b: &[u8],
        request: &PairRequest,
    ) -> Result<(EndpointFinish, PairFrame), ProtocolError> {
        let key = self
            .spake
            .finish(spake_b)
            .map_err(|_| ProtocolError::Crypto("SPAKE2 exchange"))?;
        let payload = decrypt_into(&mut self.noise, noise_b, "the relay's pairing reply")?;
        if !payload.is_empty() {
            return Err(ProtocolError::Malformed("pairing reply payload"));
        }
        let relay = PublicKey::from_slice(
            self.noise
                .get_remote_static()
                .ok_or(ProtocolError::Malformed("pairing reply"))?,
        )?;
        self.noise
            .set_psk(3, &psk_from(&key))
            .map_err(|_| ProtocolError::Crypto("pairing setup"))?;
        let request =
            postcard::to_allocvec(request).map_err(|_| ProtocolError::Malformed("pair request"))?;
        let third = encrypt(&mut self.noise, &request)?;
        let transport = self
            .noise
            .into_transport_mode()
            .map_err(|_| ProtocolError::Crypto("pairing handshake"))?;
        Ok((
            EndpointFinish {
                relay,
                transport: Transport::new(transport),
            },
            PairFrame::Noise(third),
        ))
    }
}

/// The endpoint's state once it has proven the code, awaiting `PairAccept`.
#[derive(Debug)]
pub struct EndpointFinish {
    relay: PublicKey,
    transport: Transport,
}

impl EndpointFinish {
    /// Reads the relay's acceptance: proof that the relay knew the same code.
    ///
    /// # Errors
    /// [`ProtocolError::Crypto`] when it does not decrypt (the code was wrong),
    /// [`ProtocolError::Malformed`] or [`ProtocolError::TooLarge`] for a bad body.
    pub fn read_accept(mut self, message: &[u8]) -> Result<(PublicKey, PairAccept), ProtocolError> {
        let bytes = self
            .transport
            .open_bytes(message)
            .map_err(|_| ProtocolError::Crypto("the relay's acceptance (wrong pairing code?)"))?
            .ok_or(ProtocolError::Malformed("pair accept"))?;
        let accept = match decode_exact::<PairAccept>(&bytes, "pair accept") {
            Ok(accept) => accept,
            Err(e) => match decode_exact::<LegacyPairAccept>(&bytes, "pair accept") {
                Ok(old) => PairAccept {
                    client_id: old.client_id,
                    client_name: old.client_name,
                    addresses: old.addresses,
                    sealed: false,
                },
                Err(_) => return Err(e),
            },
        };
        accept.check()?;
        Ok((self.relay, accept))
    }
}

/// The relay's pairing state after replying, awaiting the endpoint's proof.
pub struct RelayReplied {
    noise: snow::HandshakeState,
}

impl std::fmt::Debug for RelayReplied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pairing::RelayReplied")
    }
}

/// What the relay learns when the endpoint's proof checks out.
#[derive(Debug)]
pub struct RelayProven {
    /// The endpoint's static key, authenticated by the code.
    pub endpoint: PublicKey,
    /// What the endpoint asked for.
    pub request: PairRequest,
    /// The endpoint is older than protocol 1.7 (its acceptance is sent
    /// in the form it reads).
    legacy: bool,
    transport: Transport,
}

/// Answers an endpoint's `Start` for the pending pairing `code`.
///
/// # Errors
/// [`ProtocolError::Crypto`] or [`ProtocolError::Malformed`] for bad messages.
pub fn relay_reply(
    code: &PairingCode,
    local: &StaticKeypair,
    spake_a: &[u8],
    noise_a: &[u8],
) -> Result<(RelayReplied, PairFrame), ProtocolError> {
    let (spake, spake_msg) = Spake2::<Ed25519Group>::start_b(
        &code.password(),
        &Identity::new(SPAKE_ID_ENDPOINT),
        &Identity::new(SPAKE_ID_RELAY),
    );
    let key = spake
        .finish(spake_a)
        .map_err(|_| ProtocolError::Crypto("SPAKE2 exchange"))?;
    let prologue = Preamble::prologue(ConnectionKind::Pairing);
    let psk = psk_from(&key);
    let mut noise = noise_builder(local)?
        .prologue(&prologue)
        .and_then(|b| b.psk(3, &psk))
        .and_then(|b| b.build_responder())
        .map_err(|_| ProtocolError::Crypto("pairing setup"))?;
    if !decrypt_into(&mut noise, noise_a, "the endpoint's pairing start")?.is_empty() {
        return Err(ProtocolError::Malformed("pairing start payload"));
    }
    let second = encrypt(&mut noise, &[])?;
    Ok((
        RelayReplied { noise },
        PairFrame::Reply {
            spake: spake_msg,
            noise: second,
        },
    ))
}

impl RelayReplied {
    /// Checks the endpoint's proof.
    ///
    /// # Errors
    /// [`ProtocolError::Crypto`] when the endpoint used another code: count it
    /// as a failed attempt.
    pub fn read_proof(mut self, message: &[u8]) -> Result<RelayProven, ProtocolError> {
        let payload = decrypt_into(&mut self.noise, message, "pairing proof (wrong code)")?;
        let (request, legacy) = match decode_exact::<PairRequest>(&payload, "pair request") {
            Ok(request) => (request, false),
            Err(e) => match decode_exact::<LegacyPairRequest>(&payload, "pair request") {
                Ok(old) => {
                    let request = PairRequest {
                        hostname: old.hostname,
                        sealed: false,
                    };
                    (request, true)
                }
                Err(_) => return Err(e),
            },
        };
        check_text("host name", &request.hostname)?;
        let endpoint = PublicKey::from_slice(
            self.noise
                .get_remote_static()
                .ok_or(ProtocolError::Malformed("pairing proof"))?,
        )?;
        let transport = self
            .noise
            .into_transport_mode()
            .map_err(|_| ProtocolError::Crypto("pairing handshake"))?;
        Ok(RelayProven {
            endpoint,
            request,
            legacy,
            transport: Transport::new(transport),
        })
    }
}

impl RelayProven {
    /// Seals the acceptance for the endpoint; send it as `PairFrame::Noise`.
    ///
    /// # Errors
    /// [`ProtocolError::TooLarge`] if `accept` breaks the limits.
    pub fn seal_accept(mut self, accept: &PairAccept) -> Result<PairFrame, ProtocolError> {
        accept.check()?;
        let bytes = if self.legacy {
            postcard::to_allocvec(&LegacyPairAccept {
                client_id: accept.client_id,
                client_name: accept.client_name.clone(),
                addresses: accept.addresses.clone(),
            })
        } else {
            postcard::to_allocvec(accept)
        }
        .map_err(|_| ProtocolError::Malformed("pair accept"))?;
        let mut framed = Vec::new();
        self.transport.seal_bytes(bytes, &mut framed)?;
        // One fragment, one frame: strip the 2-byte length to get the Noise message.
        let (message, _) =
            crate::frame::parse_frame(&framed)?.ok_or(ProtocolError::Malformed("pair accept"))?;
        Ok(PairFrame::Noise(message.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        endpoint_code: &PairingCode,
        relay_code: &PairingCode,
    ) -> Result<(PublicKey, PairAccept, PublicKey), ProtocolError> {
        let endpoint = StaticKeypair::generate().unwrap();
        let relay = StaticKeypair::generate().unwrap();
        let (start, frame) = EndpointStart::begin(endpoint_code, &endpoint)?;
        let frame = PairFrame::decode(&frame.encode()?)?;
        let PairFrame::Start {
            nameplate,
            spake,
            noise,
        } = frame
        else {
            panic!()
        };
        assert_eq!(nameplate, endpoint_code.nameplate);
        let (replied, reply) = relay_reply(relay_code, &relay, &spake, &noise)?;
        let PairFrame::Reply { spake, noise } = reply else {
            panic!()
        };
        let request = PairRequest {
            hostname: "laptop".into(),
            sealed: true,
        };
        let (finish, proof) = start.read_reply(&spake, &noise, &request)?;
        let PairFrame::Noise(proof) = proof else {
            panic!()
        };
        let proven = replied.read_proof(&proof)?;
        assert_eq!(proven.endpoint, endpoint.public);
        assert_eq!(proven.request, request);
        let accept = PairAccept {
            client_id: 7,
            client_name: "laptop".into(),
            addresses: vec!["127.0.0.1:1".into()],
            sealed: true,
        };
        let PairFrame::Noise(sealed) = proven.seal_accept(&accept)? else {
            panic!()
        };
        let (relay_key, got) = finish.read_accept(&sealed)?;
        assert_eq!(relay_key, relay.public);
        Ok((relay_key, got, endpoint.public))
    }

    #[test]
    fn right_code_pairs_and_wrong_code_fails_at_the_proof() {
        let code = PairingCode::parse("4-7291-3385").unwrap();
        assert_eq!(code.reveal(), "4-7291-3385");
        let (_, accept, _) = run(&code, &code).unwrap();
        assert_eq!(accept.client_id, 7);
        let wrong = PairingCode::parse("4-7291-3386").unwrap();
        let err = run(&wrong, &code).unwrap_err();
        assert!(
            matches!(err, ProtocolError::Crypto(what) if what.contains("wrong code")),
            "{err}"
        );
    }

    #[test]
    fn code_parsing() {
        for bad in [
            "",
            "4",
            "4-1234",
            "4-1234-123",
            "0-1234-5678",
            "1000-1234-5678",
            "a-1234-5678",
            "4-12a4-5678",
            "4-1234-5678-1",
            "41234567",
            "100012345678",
            "4 1234 56a8",
            "4 1234 5678 1x",
        ] {
            assert!(PairingCode::parse(bad).is_err(), "{bad}");
        }
        let code = PairingCode::parse(" 12-0001-0000 ").unwrap();
        assert_eq!(code.reveal(), "12-0001-0000");
        // The same digits without their dashes, as a person may type them.
        for typed in ["12 0001 0000", "1200010000", " 12 00010000 "] {
            assert_eq!(PairingCode::parse(typed).unwrap(), code, "{typed}");
        }
        assert_eq!(
            PairingCode::parse("472913385").unwrap().reveal(),
            "4-7291-3385"
        );
        assert_eq!(
            PairingCode::from_parts(12, &code.secret_digits()).unwrap(),
            code
        );
        assert!(!format!("{code:?}").contains("0001"));
    }
}
