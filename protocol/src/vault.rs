//! A client's vault key at rest outside the endpoint: wrapped under a key
//! made from its owner's passphrase (kept on the relay, for a new machine
//! to recover), and written out on paper. Sans IO: the randomness comes in
//! as arguments.
//!
//! The wrap is argon2id (64 MiB, 3 passes, one lane: the memory-hard
//! setting OWASP and restic's users expect to cost an attacker per guess)
//! and XChaCha20-Poly1305 over the 32-byte key:
//!
//! ```text
//! version u8 (1) | memory KiB u32 LE | passes u32 LE | lanes u32 LE | salt (16) | nonce (24) | sealed key (32 + 16)
//! ```
//!
//! The parameters travel with the wrap so they can grow; what is read back
//! is bounded, so a hostile relay cannot make an endpoint allocate
//! gigabytes or spin for hours.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroize;

use crate::sealed::VaultKey;

/// The wrap format's version.
const WRAP_VERSION: u8 = 1;
/// Argon2id memory, in KiB.
pub const WRAP_MEMORY_KIB: u32 = 64 * 1024;
/// Argon2id passes.
pub const WRAP_PASSES: u32 = 3;
/// The most memory a wrap read back may ask for (1 GiB).
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// The most passes a wrap read back may ask for.
const MAX_PASSES: u32 = 16;
/// The most lanes a wrap read back may ask for.
const MAX_LANES: u32 = 8;
/// Bytes of a wrap.
pub const WRAP_LEN: usize = 1 + 12 + 16 + 24 + 32 + 16;
/// The associated data every wrap is sealed with.
const WRAP_CONTEXT: &[u8] = b"ferry vault key wrapped by passphrase, v1";
/// The shortest passphrase accepted.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// Why a vault key could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The passphrase does not open the wrap (or the wrap was altered).
    #[error("the passphrase does not open this client's vault key")]
    WrongPassphrase,
    /// The recovery identity does not open the wrap (it was made for
    /// another recipient, or altered).
    #[error("this recovery identity does not open this client's vault key (it was wrapped to another recovery recipient)")]
    WrongIdentity,
    /// The wrap is not one this version reads, or asks for too much.
    #[error("the wrapped vault key is malformed: {0}")]
    Malformed(&'static str),
    /// A paper key with a typo (its checksum does not match) or of the
    /// wrong length.
    #[error("the paper key does not check: {0}")]
    Paper(&'static str),
}

/// Whether `passphrase` is strong enough to guard a vault key; the reason
/// when not.
///
/// # Errors
/// Too short, or too little variety (one repeated character, a run).
pub fn check_passphrase(passphrase: &str) -> Result<(), String> {
    let chars: Vec<char> = passphrase.chars().collect();
    if chars.len() < MIN_PASSPHRASE_CHARS {
        return Err(format!(
            "too short: {} characters, at least {MIN_PASSPHRASE_CHARS} (four or five random words are best)",
            chars.len()
        ));
    }
    let mut distinct = chars.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 6 {
        return Err(format!(
            "too repetitive: only {} different characters",
            distinct.len()
        ));
    }
    let run = chars
        .windows(2)
        .all(|w| (w[1] as i64 - w[0] as i64).abs() <= 1);
    if run {
        return Err("a keyboard run or sequence, which is guessed first".into());
    }
    Ok(())
}

/// `vault` wrapped under `passphrase`, with `salt` and `nonce` fresh from
/// the OS.
///
/// # Panics
/// Never with the fixed parameters (argon2 accepts them).
pub fn wrap(vault: &VaultKey, passphrase: &[u8], salt: [u8; 16], nonce: [u8; 24]) -> Vec<u8> {
    let key = derive(passphrase, &salt, WRAP_MEMORY_KIB, WRAP_PASSES, 1)
        .expect("the fixed argon2 parameters are valid");
    let sealed = seal_key(key, &nonce, vault, WRAP_CONTEXT);
    let mut out = Vec::with_capacity(WRAP_LEN);
    out.push(WRAP_VERSION);
    out.extend_from_slice(&WRAP_MEMORY_KIB.to_le_bytes());
    out.extend_from_slice(&WRAP_PASSES.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Opens a wrap with `passphrase`.
///
/// # Errors
/// [`VaultError::WrongPassphrase`] (or an altered wrap), or a wrap that is
/// malformed or asks for more memory, passes or lanes than allowed.
pub fn unwrap(wrapped: &[u8], passphrase: &[u8]) -> Result<VaultKey, VaultError> {
    if wrapped.len() != WRAP_LEN {
        return Err(VaultError::Malformed("its length"));
    }
    if wrapped[0] != WRAP_VERSION {
        return Err(VaultError::Malformed("its version"));
    }
    let word = |at: usize| u32::from_le_bytes(wrapped[at..at + 4].try_into().expect("4 bytes"));
    let (memory, passes, lanes) = (word(1), word(5), word(9));
    if memory > MAX_MEMORY_KIB || passes > MAX_PASSES || lanes > MAX_LANES {
        return Err(VaultError::Malformed("its parameters ask for too much"));
    }
    let salt = &wrapped[13..29];
    let nonce = &wrapped[29..53];
    let key = derive(passphrase, salt, memory, passes, lanes)
        .ok_or(VaultError::Malformed("its parameters"))?;
    open_key(key, nonce, &wrapped[53..], WRAP_CONTEXT).ok_or(VaultError::WrongPassphrase)?
}

/// `vault` sealed under `key` (zeroized after) with XChaCha20-Poly1305,
/// `context` as associated data: the body of every wrap.
pub(crate) fn seal_key(
    mut key: [u8; 32],
    nonce: &[u8; 24],
    vault: &VaultKey,
    context: &[u8],
) -> Vec<u8> {
    let sealed = XChaCha20Poly1305::new((&key).into())
        .encrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: vault.expose(),
                aad: context,
            },
        )
        .expect("sealing 32 bytes cannot fail");
    key.zeroize();
    sealed
}

/// Opens what [`seal_key`] sealed; `None` when `key` does not open it
/// (the caller says why: a wrong passphrase or identity, or an altered wrap).
pub(crate) fn open_key(
    mut key: [u8; 32],
    nonce: &[u8],
    sealed: &[u8],
    context: &[u8],
) -> Option<Result<VaultKey, VaultError>> {
    let opened = XChaCha20Poly1305::new((&key).into()).decrypt(
        XNonce::from_slice(nonce),
        Payload {
            msg: sealed,
            aad: context,
        },
    );
    key.zeroize();
    let mut bytes = opened.ok()?;
    let vault = <[u8; 32]>::try_from(bytes.as_slice())
        .map(VaultKey::from_bytes)
        .map_err(|_| VaultError::Malformed("the key's length"));
    bytes.zeroize();
    Some(vault)
}

fn derive(
    passphrase: &[u8],
    salt: &[u8],
    memory: u32,
    passes: u32,
    lanes: u32,
) -> Option<[u8; 32]> {
    let params = Params::new(memory, passes, lanes, Some(32)).ok()?;
    let mut key = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, &mut key)
        .ok()?;
    Some(key)
}

/// The alphabet of paper keys: Crockford's base32 (no I, L, O, U).
const PAPER_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// The first line of a paper key.
const PAPER_TITLE: &str = "ferry vault key v1";

/// `vault` as text to print and keep: a title line, then the key and a
/// 2-byte checksum in base32, in groups of four; typos are caught.
pub fn paper(vault: &VaultKey) -> String {
    let mut bytes = vault.expose().to_vec();
    bytes.extend_from_slice(&blake3::hash(vault.expose()).as_bytes()[..2]);
    let text = base32(&bytes);
    bytes.zeroize();
    let groups: Vec<&str> = text
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    let lines: Vec<String> = groups.chunks(7).map(|line| line.join("-")).collect();
    format!("{PAPER_TITLE}\n{}\n", lines.join("\n"))
}

/// Reads a paper key back: the title line is optional; case, spaces,
/// dashes and line breaks are ignored; `O` reads as `0`, `I` and `L` as `1`.
///
/// # Errors
/// A character outside the alphabet, the wrong length, or a checksum that
/// does not match (a typo).
pub fn from_paper(text: &str) -> Result<VaultKey, VaultError> {
    let body = text
        .lines()
        .filter(|line| !line.trim().eq_ignore_ascii_case(PAPER_TITLE))
        .collect::<String>();
    let mut bytes =
        base32_decode(&body).ok_or(VaultError::Paper("a character that is not in a paper key"))?;
    if bytes.len() != 34 {
        return Err(VaultError::Paper("its length (a group missing or extra)"));
    }
    let key: [u8; 32] = bytes[..32].try_into().expect("32 bytes");
    let sum_ok = blake3::hash(&key).as_bytes()[..2] == bytes[32..];
    bytes.zeroize();
    if !sum_ok {
        return Err(VaultError::Paper("its checksum (a typo?)"));
    }
    Ok(VaultKey::from_bytes(key))
}

/// Crockford base32 read back (case, spaces and dashes ignored; `O` as
/// `0`, `I` and `L` as `1`); `None` for a character outside the alphabet.
pub(crate) fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let (mut bits, mut held) = (0u64, 0);
    let mut bytes = Vec::new();
    for c in text.chars().filter(|c| !c.is_whitespace() && *c != '-') {
        let c = match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        let value = PAPER_ALPHABET.iter().position(|&a| a as char == c)?;
        bits = (bits << 5) | value as u64;
        held += 5;
        if held >= 8 {
            held -= 8;
            bytes.push((bits >> held) as u8);
            bits &= (1 << held) - 1;
        }
    }
    Some(bytes)
}

/// Crockford base32 of `bytes`, without padding.
pub(crate) fn base32(bytes: &[u8]) -> String {
    crate::keys::base32_with(PAPER_ALPHABET, bytes)
}

/// A vault key's fingerprint, for people to compare: it says nothing of the key.
pub fn fingerprint(vault: &VaultKey) -> String {
    let digest = blake3::derive_key("ferry 2026-12 vault fingerprint", vault.expose());
    let text = base32(&digest[..10]);
    format!(
        "{}-{}-{}-{}",
        &text[..4],
        &text[4..8],
        &text[8..12],
        &text[12..16]
    )
}

#[cfg(test)]
mod tests;
