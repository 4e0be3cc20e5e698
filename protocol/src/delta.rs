//! rsync inside changed chunks: signatures, deltas and bounded application.
//!
//! The relay computes a chunk's [`signature`] once, at ingest, and keeps it.
//! The other side computes a [`diff`] of its new chunk against that signature
//! and sends the delta; [`apply`] rebuilds the chunk with the output capped at
//! [`MAX_CHUNK`](crate::chunking::MAX_CHUNK), copies bounded to the base, and
//! then checks the result's BLAKE3 against the chunk id: rsync's strong hash
//! is MD4 and is never trusted alone. Pure functions; the caller moves bytes.

use crate::chunking::MAX_CHUNK;
use crate::ids::ChunkId;
use crate::ProtocolError;

/// Bytes per signature block: small, so a 4 KiB edit costs about that much.
pub const BLOCK_SIZE: u32 = 1024;
/// Bytes of MD4 kept per block (collisions cost efficiency only: BLAKE3 decides).
pub const STRONG_HASH_LEN: u32 = 8;
/// The serialized signature's header: magic, block size, strong hash size
/// (each a big-endian `u32`).
const SIGNATURE_HEADER: usize = 12;
/// MD4's magic in a serialized signature (the only kind [`signature`] makes).
const MD4_MAGIC: u32 = 0x7273_0136;
/// Bytes per block in a serialized signature: CRC and strong hash.
const BLOCK_ENTRY: usize = 4 + STRONG_HASH_LEN as usize;
/// Largest serialized signature accepted: that of a [`MAX_CHUNK`] chunk.
pub const MAX_SIGNATURE: usize =
    SIGNATURE_HEADER + MAX_CHUNK.div_ceil(BLOCK_SIZE) as usize * BLOCK_ENTRY;
/// Largest delta accepted: a whole chunk of literals plus command overhead.
pub const MAX_DELTA: usize = MAX_CHUNK as usize + 4096;

/// Chunks a delta's base may join, at most: a new chunk whose boundaries
/// moved spans parts of several old ones, and a delta against just one
/// would send the rest as literals.
pub const MAX_BASE_CHUNKS: usize = 4;

/// Bytes of a joined base, at most.
pub const MAX_BASE: usize = 2 * MAX_CHUNK as usize;

/// Largest serialized signature of a joined base.
pub const MAX_BASE_SIGNATURE: usize =
    SIGNATURE_HEADER + (MAX_BASE as u32).div_ceil(BLOCK_SIZE) as usize * BLOCK_ENTRY;

/// The serialized rsync signature of `chunk`.
pub fn signature(chunk: &[u8]) -> Vec<u8> {
    let options = fast_rsync::SignatureOptions {
        block_size: BLOCK_SIZE,
        crypto_hash_size: STRONG_HASH_LEN,
    };
    fast_rsync::Signature::calculate(chunk, options).into_serialized()
}

/// Checks a signature from the network is one [`signature`] could have
/// made: MD4, [`BLOCK_SIZE`], [`STRONG_HASH_LEN`], whole block entries, no
/// more blocks than a [`MAX_CHUNK`] chunk has. fast_rsync trusts what it
/// is given (a block size of 0 loops forever or overflows), so nothing
/// else reaches it.
///
/// # Errors
/// [`ProtocolError::TooLarge`] or [`ProtocolError::Malformed`].
pub fn check_signature(signature: &[u8]) -> Result<(), ProtocolError> {
    check_signature_within(signature, MAX_SIGNATURE)
}

/// [`check_signature`] for a signature of at most `max` bytes (that of a
/// joined base, [`MAX_BASE_SIGNATURE`], for [`diff_over`]).
///
/// # Errors
/// As [`check_signature`].
fn check_signature_within(signature: &[u8], max: usize) -> Result<(), ProtocolError> {
    if signature.len() > max {
        return Err(ProtocolError::TooLarge {
            what: "signature",
            len: signature.len(),
            max,
        });
    }
    let field = |at: usize| {
        signature
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    let well_formed = field(0) == Some(MD4_MAGIC)
        && field(4) == Some(BLOCK_SIZE)
        && field(8) == Some(STRONG_HASH_LEN)
        && (signature.len() - SIGNATURE_HEADER) % BLOCK_ENTRY == 0;
    if well_formed {
        Ok(())
    } else {
        Err(ProtocolError::Malformed("rsync signature"))
    }
}

/// A delta that turns the chunk behind `signature` into `new`.
///
/// # Errors
/// [`ProtocolError::TooLarge`] or [`ProtocolError::Malformed`] for a signature
/// from the network that is oversized or not one [`signature`] makes.
pub fn diff(signature: Vec<u8>, new: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    check_signature(&signature)?;
    diff_checked(signature, new)
}

/// [`diff`] against the signature of a joined base (several chunks one
/// after another, at most [`MAX_BASE`] bytes).
///
/// # Errors
/// As [`diff`].
pub fn diff_over(signature: Vec<u8>, new: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    check_signature_within(&signature, MAX_BASE_SIGNATURE)?;
    diff_checked(signature, new)
}

fn diff_checked(signature: Vec<u8>, new: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let signature = fast_rsync::Signature::deserialize(signature)
        .map_err(|_| ProtocolError::Malformed("rsync signature"))?;
    let mut out = Vec::new();
    fast_rsync::diff(&signature.index(), new, &mut out)
        .map_err(|_| ProtocolError::Malformed("rsync signature"))?;
    Ok(out)
}

/// Rebuilds chunk `expected` from `base` and `delta`.
///
/// # Errors
/// [`ProtocolError::TooLarge`] for an oversized delta or output,
/// [`ProtocolError::Malformed`] for an invalid delta (a copy outside the base,
/// trailing bytes), [`ProtocolError::Crypto`] when the result is not `expected`.
pub fn apply(base: &[u8], delta: &[u8], expected: &ChunkId) -> Result<Vec<u8>, ProtocolError> {
    let out = rebuild(base, delta)?;
    if ChunkId::of(&out) != *expected {
        return Err(ProtocolError::Crypto("rebuilt chunk does not match its id"));
    }
    Ok(out)
}

/// Applies `delta` to `base`, at most a largest chunk out; the caller
/// checks what comes out (a sealed patch checks it by its keyed id).
///
/// # Errors
/// As [`apply`], without the id check.
pub fn rebuild(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    if delta.len() > MAX_DELTA {
        return Err(ProtocolError::TooLarge {
            what: "delta",
            len: delta.len(),
            max: MAX_DELTA,
        });
    }
    let mut out = Vec::new();
    fast_rsync::apply_limited(base, delta, &mut out, MAX_CHUNK as usize)
        .map_err(|_| ProtocolError::Malformed("rsync delta"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| ((i * 7919) as u8) ^ seed ^ (i >> 9) as u8)
            .collect()
    }

    proptest! {
        #[test]
        fn delta_rebuilds_any_edit(
            len in 0usize..100_000,
            edits in proptest::collection::vec((any::<u32>(), any::<u8>()), 0..20),
            cut in any::<u16>(),
        ) {
            let base = data(len, 1);
            let mut new = base.clone();
            for (at, byte) in edits {
                if !new.is_empty() {
                    let at = at as usize % new.len();
                    new[at] = byte;
                }
            }
            let cut = usize::from(cut).min(new.len());
            new.insert(cut, 0xab);
            let delta = diff(signature(&base), &new).unwrap();
            prop_assert_eq!(apply(&base, &delta, &ChunkId::of(&new)).unwrap(), new);
        }

        #[test]
        fn hostile_deltas_are_errors(delta in proptest::collection::vec(any::<u8>(), 0..300)) {
            let base = data(5000, 3);
            let _ = apply(&base, &delta, &ChunkId::of(b"x"));
        }
    }

    /// A signature header and `blocks` entries of `crc` and a zero hash.
    fn crafted(magic: u32, block: u32, hash: u32, blocks: usize, crc: u32) -> Vec<u8> {
        let mut sig = Vec::new();
        for field in [magic, block, hash] {
            sig.extend_from_slice(&field.to_be_bytes());
        }
        for _ in 0..blocks {
            sig.extend_from_slice(&crc.to_be_bytes());
            sig.extend(std::iter::repeat_n(0u8, hash as usize));
        }
        sig
    }

    #[test]
    fn signatures_signature_would_not_make_are_refused_before_fast_rsync() {
        let new = data(4096, 5);
        for (why, sig) in [
            (
                "block size 0, CRC 0: fast_rsync loops",
                crafted(MD4_MAGIC, 0, 0, 1, 0),
            ),
            (
                "block size 0, CRC 1: fast_rsync overflows",
                crafted(MD4_MAGIC, 0, 0, 1, 1),
            ),
            ("another block size", crafted(MD4_MAGIC, 4096, 8, 1, 0)),
            ("another hash size", crafted(MD4_MAGIC, 1024, 16, 1, 0)),
            ("BLAKE2", crafted(0x7273_0137, 1024, 8, 1, 0)),
            (
                "a torn entry",
                crafted(MD4_MAGIC, 1024, 8, 1, 0)[..20].to_vec(),
            ),
            (
                "too many blocks",
                crafted(MD4_MAGIC, 1024, 8, MAX_SIGNATURE / 12 + 1, 0),
            ),
            ("no header", vec![0x72, 0x73]),
        ] {
            assert!(diff(sig, &new).is_err(), "{why}");
        }
        // What `signature` makes passes, down to the empty chunk's.
        for base in [Vec::new(), data(1, 1), data(MAX_CHUNK as usize, 2)] {
            check_signature(&signature(&base)).unwrap();
        }
        assert!(diff(crafted(MD4_MAGIC, 1024, 8, 3, 7), &new).is_ok());
    }

    #[test]
    fn small_edit_gives_small_delta_and_wrong_id_is_caught() {
        let base = data(65536, 9);
        let mut new = base.clone();
        new[30_000..30_100].fill(0);
        let delta = diff(signature(&base), &new).unwrap();
        assert!(delta.len() < 3000, "{}", delta.len());
        assert!(matches!(
            apply(&base, &delta, &ChunkId::of(&base)),
            Err(ProtocolError::Crypto(_))
        ));
    }

    #[test]
    fn a_copy_outside_the_base_is_rejected() {
        // librsync delta: magic, then COPY with 4-byte offset and length far past the base.
        let mut delta = vec![0x72, 0x73, 0x02, 0x36];
        delta.push(0x4f); // RS_OP_COPY_N4_N4
        delta.extend_from_slice(&1_000_000u32.to_be_bytes());
        delta.extend_from_slice(&100u32.to_be_bytes());
        delta.push(0); // END
        let base = data(1000, 1);
        assert!(matches!(
            apply(&base, &delta, &ChunkId::of(b"")),
            Err(ProtocolError::Malformed(_))
        ));
    }
}
