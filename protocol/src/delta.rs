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
/// Largest serialized signature accepted (that of a [`MAX_CHUNK`] chunk, with room).
pub const MAX_SIGNATURE: usize =
    16 + (MAX_CHUNK / BLOCK_SIZE) as usize * (4 + STRONG_HASH_LEN as usize) + 1024;
/// Largest delta accepted: a whole chunk of literals plus command overhead.
pub const MAX_DELTA: usize = MAX_CHUNK as usize + 4096;

/// The serialized rsync signature of `chunk`.
pub fn signature(chunk: &[u8]) -> Vec<u8> {
    let options = fast_rsync::SignatureOptions {
        block_size: BLOCK_SIZE,
        crypto_hash_size: STRONG_HASH_LEN,
    };
    fast_rsync::Signature::calculate(chunk, options).into_serialized()
}

/// A delta that turns the chunk behind `signature` into `new`.
///
/// # Errors
/// [`ProtocolError::TooLarge`] or [`ProtocolError::Malformed`] for a signature
/// from the network that is oversized or invalid.
pub fn diff(signature: Vec<u8>, new: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    if signature.len() > MAX_SIGNATURE {
        return Err(ProtocolError::TooLarge {
            what: "signature",
            len: signature.len(),
            max: MAX_SIGNATURE,
        });
    }
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
    if ChunkId::of(&out) != *expected {
        return Err(ProtocolError::Crypto("rebuilt chunk does not match its id"));
    }
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
