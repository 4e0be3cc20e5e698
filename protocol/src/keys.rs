//! Static X25519 identities and their fingerprints.
//!
//! Each side keeps one [`StaticKeypair`] for life. Humans compare
//! [`Fingerprint`]s: the first 80 bits of the BLAKE3 hash of the public key, in
//! lowercase base32, grouped by four (`abcd-efgh-ijkl-mnop`). Key text is hex,
//! which is unambiguous in config files and easy to diff.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ProtocolError;

/// Length of X25519 keys in bytes.
pub const KEY_LEN: usize = 32;

/// An X25519 public key: a peer's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// Reads a key from a byte slice of exactly [`KEY_LEN`] bytes.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] on any other length.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtocolError> {
        <[u8; KEY_LEN]>::try_from(bytes)
            .map(PublicKey)
            .map_err(|_| ProtocolError::Malformed("public key"))
    }

    /// The human-comparable fingerprint of this key.
    pub fn fingerprint(&self) -> Fingerprint {
        let hash = blake3::hash(&self.0);
        let mut head = [0u8; 10];
        head.copy_from_slice(&hash.as_bytes()[..10]);
        Fingerprint(head)
    }

    /// Hex text form, as stored in state files.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Parses the hex text form.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] unless the text is 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, ProtocolError> {
        from_hex::<KEY_LEN>(text.trim()).map(PublicKey)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// A static key pair. The secret half never appears in `Debug` output and is
/// overwritten with zeros when the pair is dropped.
#[derive(Clone)]
pub struct StaticKeypair {
    secret: [u8; KEY_LEN],
    /// The public half.
    pub public: PublicKey,
}

impl StaticKeypair {
    /// Makes a fresh key pair from the operating system's random source.
    ///
    /// # Errors
    /// [`ProtocolError::Crypto`] if the random source or curve code fails.
    pub fn generate() -> Result<Self, ProtocolError> {
        let kp = snow::Builder::new(crate::noise::session_params())
            .generate_keypair()
            .map_err(|_| ProtocolError::Crypto("key generation"))?;
        Self::from_secret_slice(&kp.private)
    }

    /// Rebuilds a key pair from its secret half, deriving the public half.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] unless `secret` is 32 bytes.
    pub fn from_secret_slice(secret: &[u8]) -> Result<Self, ProtocolError> {
        let secret: [u8; KEY_LEN] = secret
            .try_into()
            .map_err(|_| ProtocolError::Malformed("secret key"))?;
        let public = x25519_public(&secret)?;
        Ok(StaticKeypair { secret, public })
    }

    /// The secret half, for handing to the Noise builder.
    pub fn secret(&self) -> &[u8; KEY_LEN] {
        &self.secret
    }

    /// Hex text of the secret half, for the 0600 key file only.
    pub fn secret_hex(&self) -> String {
        to_hex(&self.secret)
    }

    /// Parses the hex text of a secret key.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] unless the text is 64 hex digits.
    pub fn from_secret_hex(text: &str) -> Result<Self, ProtocolError> {
        Self::from_secret_slice(&from_hex::<KEY_LEN>(text.trim())?)
    }
}

impl Drop for StaticKeypair {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("public", &self.public)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Derives the X25519 public key: the clamped secret times the base point.
fn x25519_public(secret: &[u8; KEY_LEN]) -> Result<PublicKey, ProtocolError> {
    let point = curve25519_dalek::montgomery::MontgomeryPoint::mul_base_clamped(*secret);
    Ok(PublicKey(point.to_bytes()))
}

/// The short string humans compare to check a peer's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 10]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = base32(&self.0);
        for (i, group) in text.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(std::str::from_utf8(group).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// RFC 4648 base32, lowercase, no padding (input length a multiple of 5 here).
fn base32(bytes: &[u8]) -> String {
    base32_with(b"abcdefghijklmnopqrstuvwxyz234567", bytes)
}

/// Base32 of `bytes` in `alphabet`, no padding (the last group padded with
/// zero bits).
pub(crate) fn base32_with(alphabet: &[u8; 32], bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u64, 0);
    for &b in bytes {
        buffer = (buffer << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(alphabet[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(alphabet[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Lower-case hex of `bytes` (key files).
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `N` bytes read from hex text (key files).
///
/// # Errors
/// [`ProtocolError::Malformed`] unless the text is `2 N` hex digits.
pub fn from_hex<const N: usize>(text: &str) -> Result<[u8; N], ProtocolError> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N {
        return Err(ProtocolError::Malformed("hex key"));
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |c: u8| {
            (c as char)
                .to_digit(16)
                .ok_or(ProtocolError::Malformed("hex key"))
        };
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Ok(out)
}
