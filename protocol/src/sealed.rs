//! Sealed objects: what the relay stores for a sealed client, which it can
//! check, link, collect and heal but not read.
//!
//! An object is a clear header and an AEAD body:
//!
//! ```text
//! header: version u8 | kind u8 | padded length u32 LE | ref count u32 LE | refs, 32 bytes each, sorted
//! body:   nonce (24 bytes) | XChaCha20-Poly1305(inner, associated data = header) (padded length + 16 bytes)
//! inner:  plaintext length u32 LE | plaintext | zeros up to the padded length
//! ```
//!
//! Its storage id is BLAKE3(header ‖ body): the relay checks every upload's
//! id, walks closures and marks for collection by the refs alone, and
//! re-hashes to verify. The nonce is the keyed BLAKE3 of the header and the
//! plaintext (a synthetic nonce, as SIV modes make one), so the same
//! plaintext with the same refs seals to the same bytes within one vault:
//! dedup survives sealing, and a backup that heals a damaged object sends
//! exactly the bytes that were lost.
//!
//! Why XChaCha20-Poly1305: it is in ferry's tree already (snow's
//! ChaChaPoly), fast without AES instructions (ARM laptops, small relays),
//! and its 192-bit nonce leaves a nonce derived from a hash no birthday
//! bound worth counting; AES-256-GCM-SIV would need a new crate for the
//! same deterministic property. The kind and the refs are in the header,
//! which is the associated data: a relay that swaps a header fails the tag.
//! Lengths are padded with Padmé (at most 12 % overhead, and a length leaks
//! O(log log n) bits).
//!
//! Subkeys come from the client's vault key by BLAKE3's KDF, each with its
//! own context: object encryption, nonces, keyed ids, the chunker's key,
//! root signing. Key material is zeroized when dropped.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::fragment::MAX_MESSAGE;
use crate::ProtocolError;

/// The format's version, the header's first byte.
pub const SEALED_VERSION: u8 = 1;
/// The most refs a header may list (a tree of 65,536 entries).
pub const MAX_REFS: usize = 1 << 16;
/// The most bytes one sealed object may take, header and body: one
/// `PutSealed` or `SealedObjects` carries it with room to spare.
pub const MAX_SEALED_OBJECT: usize = MAX_MESSAGE - 64 * 1024;
/// The longest plaintext a sealed object holds.
pub const MAX_PLAINTEXT: usize = MAX_MESSAGE;
/// Bytes of the header before its refs.
const HEADER_FIXED: usize = 10;
/// Bytes of the nonce at the start of the body.
const NONCE_LEN: usize = 24;
/// Bytes of the Poly1305 tag.
const TAG_LEN: usize = 16;
/// Bytes of the plaintext's length inside the padded inner text.
const LEN_PREFIX: usize = 4;

/// What a sealed object holds; bound into its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealedKind {
    /// File data.
    Chunk = 0,
    /// A chunk as a delta against the chunks its refs name.
    Patch = 1,
    /// A chunk's rsync signature (the endpoint diffs against it).
    Signature = 2,
    /// A file's chunk list.
    Content = 3,
    /// A directory.
    Tree = 4,
    /// A snapshot's signed root.
    Root = 5,
    /// The vault's compression dictionary
    /// ([`crate::sealed_dictionary`]), named by the roots whose chunks it
    /// packs.
    Dictionary = 6,
    /// A snapshot's label ([`crate::label`]), kept beside the snapshot in
    /// the relay's catalog (never in its store), naming the root it
    /// describes.
    Label = 7,
}

impl SealedKind {
    fn from_code(code: u8) -> Result<Self, ProtocolError> {
        Ok(match code {
            0 => SealedKind::Chunk,
            1 => SealedKind::Patch,
            2 => SealedKind::Signature,
            3 => SealedKind::Content,
            4 => SealedKind::Tree,
            5 => SealedKind::Root,
            6 => SealedKind::Dictionary,
            7 => SealedKind::Label,
            _ => return Err(ProtocolError::Malformed("sealed object kind")),
        })
    }
}

/// A sealed object's name on the relay: BLAKE3 of its header and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StorageId(pub [u8; 32]);

impl StorageId {
    /// The storage id of sealed bytes.
    pub fn of(bytes: &[u8]) -> Self {
        StorageId(*blake3::hash(bytes).as_bytes())
    }
}

/// The clear part of a sealed object: all the relay needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// What the body holds.
    pub kind: SealedKind,
    /// The objects it names, sorted, each once.
    pub refs: Vec<StorageId>,
    /// The inner text's length after padding.
    pub padded_len: u32,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_FIXED + 32 * self.refs.len());
        out.push(SEALED_VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.padded_len.to_le_bytes());
        out.extend_from_slice(&(self.refs.len() as u32).to_le_bytes());
        for id in &self.refs {
            out.extend_from_slice(&id.0);
        }
        out
    }

    /// Reads the header at the start of `bytes` and checks that the body
    /// after it is as long as the header says; returns the header and its
    /// length. Needs no key: this is what the relay reads.
    ///
    /// # Errors
    /// Another version, an unknown kind, more refs than [`MAX_REFS`] or
    /// than the bytes hold, refs not sorted or repeated, a padded length
    /// past the limit or not the body's.
    pub fn read(bytes: &[u8]) -> Result<(Header, usize), ProtocolError> {
        let fixed = bytes
            .get(..HEADER_FIXED)
            .ok_or(ProtocolError::Malformed("sealed header"))?;
        if fixed[0] != SEALED_VERSION {
            return Err(ProtocolError::Malformed("sealed object version"));
        }
        let kind = SealedKind::from_code(fixed[1])?;
        let padded_len = u32::from_le_bytes(fixed[2..6].try_into().expect("4 bytes"));
        let count = u32::from_le_bytes(fixed[6..10].try_into().expect("4 bytes")) as usize;
        if count > MAX_REFS {
            return Err(ProtocolError::TooLarge {
                what: "sealed object's refs",
                len: count,
                max: MAX_REFS,
            });
        }
        let len = HEADER_FIXED + 32 * count;
        let raw = bytes
            .get(HEADER_FIXED..len)
            .ok_or(ProtocolError::Malformed("sealed header refs"))?;
        let refs: Vec<StorageId> = raw
            .chunks_exact(32)
            .map(|r| StorageId(r.try_into().expect("32 bytes")))
            .collect();
        if refs.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ProtocolError::Malformed("sealed header refs order"));
        }
        if padded_len as usize > padme(MAX_PLAINTEXT + LEN_PREFIX)
            || bytes.len() - len != NONCE_LEN + padded_len as usize + TAG_LEN
        {
            return Err(ProtocolError::Malformed("sealed object length"));
        }
        let header = Header {
            kind,
            refs,
            padded_len,
        };
        Ok((header, len))
    }
}

/// A client's vault key: every other key of its sealed data comes from it.
/// Zeroized when dropped.
#[derive(Clone)]
pub struct VaultKey([u8; 32]);

impl Drop for VaultKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultKey(…)")
    }
}

impl VaultKey {
    /// A vault key of these bytes (32 random bytes from the OS at pairing).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        VaultKey(bytes)
    }

    /// Its bytes, for wrapping and export.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The subkeys of a vault, each derived for one purpose. Zeroized when dropped.
pub struct SealingKeys {
    object: [u8; 32],
    nonce: [u8; 32],
    ids: [u8; 32],
    chunker: [u8; 32],
    signing: [u8; 32],
}

impl Drop for SealingKeys {
    fn drop(&mut self) {
        for key in [
            &mut self.object,
            &mut self.nonce,
            &mut self.ids,
            &mut self.chunker,
            &mut self.signing,
        ] {
            key.zeroize();
        }
    }
}

impl std::fmt::Debug for SealingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKeys(…)")
    }
}

impl SealingKeys {
    /// Derives the subkeys of `vault`.
    pub fn derive(vault: &VaultKey) -> Self {
        let derive = |context: &str| blake3::derive_key(context, &vault.0);
        SealingKeys {
            object: derive("ferry 2026-12 sealed object encryption"),
            nonce: derive("ferry 2026-12 sealed object nonces"),
            ids: derive("ferry 2026-12 keyed chunk ids"),
            chunker: derive("ferry 2026-12 keyed chunker"),
            signing: derive("ferry 2026-12 root signing"),
        }
    }

    /// A chunk's keyed id: equal chunks of one vault share it, and it says
    /// nothing of the chunk to whoever lacks the vault.
    pub fn keyed_id(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.ids, data).as_bytes()
    }

    /// The key the chunker's cut function is keyed by.
    pub fn chunker_key(&self) -> &[u8; 32] {
        &self.chunker
    }

    /// The seed of the key that signs roots.
    pub fn signing_seed(&self) -> &[u8; 32] {
        &self.signing
    }
}

/// Padmé: `len` rounded up so that only its top O(log log len) bits are
/// free; at most about 12 % more.
pub fn padme(len: usize) -> usize {
    if len < 2 {
        return len;
    }
    let e = usize::BITS - 1 - len.leading_zeros(); // floor(log2 len)
    let s = u32::BITS - e.leading_zeros(); // floor(log2 e) + 1
    let mask = (1usize << (e - s)) - 1;
    (len + mask) & !mask
}

/// Seals `plaintext` as an object of `kind` naming `refs` (sorted and made
/// unique here); returns its storage id and bytes.
///
/// # Errors
/// A plaintext over [`MAX_PLAINTEXT`] or more refs than [`MAX_REFS`].
pub fn seal(
    keys: &SealingKeys,
    kind: SealedKind,
    mut refs: Vec<StorageId>,
    plaintext: &[u8],
) -> Result<(StorageId, Vec<u8>), ProtocolError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(ProtocolError::TooLarge {
            what: "sealed plaintext",
            len: plaintext.len(),
            max: MAX_PLAINTEXT,
        });
    }
    refs.sort_unstable();
    refs.dedup();
    if refs.len() > MAX_REFS {
        return Err(ProtocolError::TooLarge {
            what: "sealed object's refs",
            len: refs.len(),
            max: MAX_REFS,
        });
    }
    let padded = padme(LEN_PREFIX + plaintext.len());
    let header = Header {
        kind,
        refs,
        padded_len: padded as u32,
    }
    .encode();
    let mut inner = Vec::with_capacity(padded);
    inner.extend_from_slice(&(plaintext.len() as u32).to_le_bytes());
    inner.extend_from_slice(plaintext);
    inner.resize(padded, 0);
    let mut hasher = blake3::Hasher::new_keyed(&keys.nonce);
    hasher.update(&header).update(plaintext);
    let nonce = *XNonce::from_slice(&hasher.finalize().as_bytes()[..NONCE_LEN]);
    let sealed = XChaCha20Poly1305::new((&keys.object).into())
        .encrypt(
            &nonce,
            Payload {
                msg: &inner,
                aad: &header,
            },
        )
        .map_err(|_| ProtocolError::Crypto("sealing an object"))?;
    inner.zeroize();
    let mut out = header;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    let max = MAX_SEALED_OBJECT;
    if out.len() > max {
        return Err(ProtocolError::TooLarge {
            what: "sealed object",
            len: out.len(),
            max,
        });
    }
    Ok((StorageId::of(&out), out))
}

/// Opens the object `id` (its bytes as the relay sent them), which must be
/// of `kind`; returns its header and plaintext.
///
/// # Errors
/// Bytes that hash to another id (a swapped or damaged object), a header
/// that does not parse or names another kind, a body that does not
/// authenticate under this vault (a forged or altered object, or another
/// vault's), or padding that is not zeros.
pub fn open(
    keys: &SealingKeys,
    id: &StorageId,
    bytes: &[u8],
    kind: SealedKind,
) -> Result<(Header, Vec<u8>), ProtocolError> {
    if StorageId::of(bytes) != *id {
        return Err(ProtocolError::Crypto(
            "a sealed object's id (not the object asked for)",
        ));
    }
    let (header, len) = Header::read(bytes)?;
    if header.kind != kind {
        return Err(ProtocolError::Malformed(
            "sealed object of another kind than asked",
        ));
    }
    let (nonce, sealed) = bytes[len..].split_at(NONCE_LEN);
    let mut inner = XChaCha20Poly1305::new((&keys.object).into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &bytes[..len],
            },
        )
        .map_err(|_| ProtocolError::Crypto("opening a sealed object"))?;
    let Some(prefix) = inner.get(..LEN_PREFIX) else {
        return Err(ProtocolError::Malformed("sealed object padding"));
    };
    let plain_len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
    let end = LEN_PREFIX + plain_len;
    if end > inner.len() || inner[end..].iter().any(|&b| b != 0) {
        inner.zeroize();
        return Err(ProtocolError::Malformed("sealed object padding"));
    }
    inner.truncate(end);
    inner.drain(..LEN_PREFIX);
    Ok((header, inner))
}

#[cfg(test)]
mod tests;
