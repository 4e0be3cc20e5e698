//! The organisation's recovery key: an X25519 key pair. Its public half, a
//! [`Recipient`], goes into the relay's `relay.toml` (`[sealed]
//! recovery-recipient`); every endpoint also wraps its vault key to it; its
//! secret half, an [`Identity`], stays offline with the operator and opens
//! any client's vault (`ferry key recover --identity FILE`).
//!
//! Why not age's X25519 recipients: the wrap is one fixed-size 32-byte key,
//! and ferry already carries X25519 (curve25519-dalek), BLAKE3 and
//! XChaCha20-Poly1305, so a wrap is ten lines of those instead of a new
//! dependency and its armour. The construction is age's in shape: an
//! ephemeral key, ECDH with the recipient, a key derived from the shared
//! secret and both public keys, an AEAD over the vault key:
//!
//! ```text
//! version u8 (1) | ephemeral public (32) | nonce (24) | sealed key (32 + 16)
//! ```
//!
//! Recipients and identities are written in Crockford base32 with a 2-byte
//! checksum, after a prefix that says which is which.

use curve25519_dalek::montgomery::MontgomeryPoint;
use zeroize::Zeroize;

use crate::sealed::VaultKey;
use crate::vault::{base32, base32_decode, open_key, seal_key, VaultError};

/// A recipient's text prefix.
const RECIPIENT_PREFIX: &str = "ferry-recipient-";
/// An identity's text prefix.
const IDENTITY_PREFIX: &str = "FERRY-IDENTITY-";
/// The wrap format's version.
const WRAP_VERSION: u8 = 1;
/// Bytes of a wrap to a recipient.
pub const RECIPIENT_WRAP_LEN: usize = 1 + 32 + 24 + 32 + 16;
/// The associated data every wrap is sealed with.
const WRAP_CONTEXT: &[u8] = b"ferry vault key wrapped to a recovery recipient, v1";

/// The public half of a recovery key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient(pub [u8; 32]);

/// The secret half of a recovery key; zeroized when dropped, never printed.
#[derive(Clone)]
pub struct Identity([u8; 32]);

impl Drop for Identity {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity(…)")
    }
}

/// `bytes` and a 2-byte checksum, in base32 after `prefix`.
fn encode(prefix: &str, bytes: &[u8; 32]) -> String {
    let mut all = bytes.to_vec();
    all.extend_from_slice(&blake3::hash(bytes).as_bytes()[..2]);
    let text = format!("{prefix}{}", base32(&all));
    all.zeroize();
    text
}

/// The 32 bytes `text` holds after `prefix`, checked.
fn decode(prefix: &str, text: &str, what: &'static str) -> Result<[u8; 32], VaultError> {
    let body = text
        .trim()
        .get(prefix.len()..)
        .filter(|_| {
            text.trim()
                .to_ascii_lowercase()
                .starts_with(&prefix.to_ascii_lowercase())
        })
        .ok_or(VaultError::Paper(what))?;
    let mut all = base32_decode(body).ok_or(VaultError::Paper(what))?;
    let checked = all.len() == 34 && blake3::hash(&all[..32]).as_bytes()[..2] == all[32..];
    let bytes = checked.then(|| <[u8; 32]>::try_from(&all[..32]).expect("32 bytes"));
    all.zeroize();
    bytes.ok_or(VaultError::Paper(what))
}

impl Recipient {
    /// The recipient as `relay.toml` holds it.
    pub fn encode(&self) -> String {
        encode(RECIPIENT_PREFIX, &self.0)
    }

    /// Reads a recipient written by [`Recipient::encode`].
    ///
    /// # Errors
    /// Another prefix, a character outside the alphabet, a bad checksum.
    pub fn decode(text: &str) -> Result<Self, VaultError> {
        decode(
            RECIPIENT_PREFIX,
            text,
            "not a recovery recipient (ferry-recipient-…)",
        )
        .map(Recipient)
    }
}

impl Identity {
    /// A recovery key from 32 random bytes.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Identity(secret)
    }

    /// Its public half.
    pub fn recipient(&self) -> Recipient {
        Recipient(MontgomeryPoint::mul_base_clamped(self.0).to_bytes())
    }

    /// The identity as its file holds it.
    pub fn encode(&self) -> String {
        encode(IDENTITY_PREFIX, &self.0)
    }

    /// Reads an identity written by [`Identity::encode`].
    ///
    /// # Errors
    /// Another prefix, a character outside the alphabet, a bad checksum.
    pub fn decode(text: &str) -> Result<Self, VaultError> {
        decode(
            IDENTITY_PREFIX,
            text,
            "not a recovery identity (FERRY-IDENTITY-…)",
        )
        .map(Identity)
    }
}

/// The key a wrap is sealed with: from the shared secret and both public keys.
fn wrap_key(shared: &MontgomeryPoint, ephemeral: &[u8; 32], recipient: &Recipient) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("ferry 2026-12 vault wrap to recipient");
    hasher
        .update(shared.as_bytes())
        .update(ephemeral)
        .update(&recipient.0);
    *hasher.finalize().as_bytes()
}

/// `vault` wrapped to `recipient`, with an ephemeral secret and a nonce
/// fresh from the OS.
pub fn wrap_to(
    vault: &VaultKey,
    recipient: &Recipient,
    mut ephemeral_secret: [u8; 32],
    nonce: [u8; 24],
) -> Vec<u8> {
    let ephemeral = MontgomeryPoint::mul_base_clamped(ephemeral_secret).to_bytes();
    let shared = MontgomeryPoint(recipient.0).mul_clamped(ephemeral_secret);
    ephemeral_secret.zeroize();
    let sealed = seal_key(
        wrap_key(&shared, &ephemeral, recipient),
        &nonce,
        vault,
        WRAP_CONTEXT,
    );
    let mut out = Vec::with_capacity(RECIPIENT_WRAP_LEN);
    out.push(WRAP_VERSION);
    out.extend_from_slice(&ephemeral);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Opens a wrap made by [`wrap_to`] with the recipient's identity.
///
/// # Errors
/// A wrap of another length or version, or one this identity does not
/// open (made for another recipient, or altered).
pub fn unwrap_with(wrapped: &[u8], identity: &Identity) -> Result<VaultKey, VaultError> {
    if wrapped.len() != RECIPIENT_WRAP_LEN || wrapped[0] != WRAP_VERSION {
        return Err(VaultError::Malformed(
            "the recovery wrap's length or version",
        ));
    }
    let ephemeral: [u8; 32] = wrapped[1..33].try_into().expect("32 bytes");
    let shared = MontgomeryPoint(ephemeral).mul_clamped(identity.0);
    let key = wrap_key(&shared, &ephemeral, &identity.recipient());
    open_key(key, &wrapped[33..57], &wrapped[57..], WRAP_CONTEXT)
        .ok_or(VaultError::WrongIdentity)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vault_wrapped_to_a_recipient_opens_with_its_identity_only() {
        let identity = Identity::from_secret([3; 32]);
        let vault = VaultKey::from_bytes([9; 32]);
        let wrapped = wrap_to(&vault, &identity.recipient(), [4; 32], [5; 24]);
        assert_eq!(wrapped.len(), RECIPIENT_WRAP_LEN);
        assert_eq!(
            unwrap_with(&wrapped, &identity).unwrap().expose(),
            vault.expose()
        );
        let other = Identity::from_secret([6; 32]);
        assert_eq!(
            unwrap_with(&wrapped, &other).unwrap_err(),
            VaultError::WrongIdentity
        );
        let mut altered = wrapped.clone();
        altered[70] ^= 1;
        assert!(unwrap_with(&altered, &identity).is_err());
    }

    #[test]
    fn recipients_and_identities_read_back_and_typos_are_caught() {
        let identity = Identity::from_secret([7; 32]);
        let text = identity.recipient().encode();
        assert!(text.starts_with("ferry-recipient-"), "{text}");
        assert_eq!(Recipient::decode(&text).unwrap(), identity.recipient());
        let secret = identity.encode();
        assert_eq!(
            Identity::decode(&secret).unwrap().recipient(),
            identity.recipient()
        );
        assert!(
            Recipient::decode(&secret).is_err(),
            "an identity is not a recipient"
        );
        let mut typo: Vec<char> = text.chars().collect();
        let last = typo.len() - 3;
        typo[last] = if typo[last] == 'A' { 'B' } else { 'A' };
        assert!(Recipient::decode(&typo.into_iter().collect::<String>()).is_err());
        assert_eq!(format!("{identity:?}"), "Identity(…)");
    }
}
