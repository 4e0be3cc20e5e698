//! Patches: a tree or content sent as the difference from its previous
//! version, which the receiver already holds.
//!
//! A changed directory differs from its previous tree in a few entries, and
//! a changed large file's chunk list in a few chunk ids; the rest (32-byte
//! ids, which do not compress) would otherwise travel again. A patch is one
//! zstd frame of the new bytes compressed with the base's bytes as a raw
//! prefix (what `zstd --patch-from` does): unchanged runs become matches
//! into the base, a few bytes each. The frame must declare its size, which
//! [`apply`] bounds before allocating; the receiver checks the rebuilt
//! object against its id, so a patch against the wrong base is an error,
//! never a wrong object.

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx};

use crate::ProtocolError;

/// zstd level for patches: objects are small, the matches are long.
const PATCH_LEVEL: i32 = 3;

/// Encodes `new` as a patch against `base`.
pub fn diff(base: &[u8], new: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(new.len()));
    let mut cctx = CCtx::create();
    let made = cctx
        .set_parameter(CParameter::CompressionLevel(PATCH_LEVEL))
        .and_then(|_| cctx.set_parameter(CParameter::ContentSizeFlag(true)))
        .and_then(|_| cctx.ref_prefix(base))
        .and_then(|_| cctx.compress2(&mut out, new));
    // compress2 fails only on an undersized buffer or bad parameters,
    // neither possible here.
    made.expect("zstd compresses into a compress_bound buffer");
    out
}

/// Rebuilds an object from its `base` and a patch from the network.
///
/// # Errors
/// [`ProtocolError::TooLarge`] when the patch declares more than `max_len`
/// bytes (checked before allocating); [`ProtocolError::Malformed`] when it
/// is not a zstd frame with a declared size, or does not decode against
/// `base` to that size.
pub fn apply(base: &[u8], patch: &[u8], max_len: usize) -> Result<Vec<u8>, ProtocolError> {
    let declared = zstd_safe::get_frame_content_size(patch)
        .ok()
        .flatten()
        .ok_or(ProtocolError::Malformed("patch frame header"))?;
    let declared = usize::try_from(declared).unwrap_or(usize::MAX);
    if declared > max_len {
        return Err(ProtocolError::TooLarge {
            what: "patched object",
            len: declared,
            max: max_len,
        });
    }
    let mut out = Vec::with_capacity(declared);
    let mut dctx = DCtx::create();
    dctx.ref_prefix(base)
        .map_err(|_| ProtocolError::Malformed("patch base"))?;
    match dctx.decompress(&mut out, patch) {
        Ok(n) if n == declared => Ok(out),
        _ => Err(ProtocolError::Malformed("patch data")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(seed: u32, n: usize) -> Vec<u8> {
        (0..n as u32)
            .flat_map(|i| {
                *blake3::hash(&(seed.wrapping_mul(1_000_003) ^ i).to_le_bytes()).as_bytes()
            })
            .collect()
    }

    proptest! {
        #[test]
        fn round_trip(base in proptest::collection::vec(any::<u8>(), 0..5_000),
                      edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..20),
                      insert in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut new = base.clone();
            for (at, byte) in edits {
                if !new.is_empty() {
                    let i = usize::from(at) % new.len();
                    new[i] = byte;
                }
            }
            let at = new.len() / 2;
            new.splice(at..at, insert);
            let patch = diff(&base, &new);
            prop_assert_eq!(apply(&base, &patch, new.len()).unwrap(), new);
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = apply(b"some base bytes", &data, 1 << 20);
        }
    }

    #[test]
    fn a_few_changed_ids_cost_a_few_ids() {
        let base = ids(1, 16_384);
        let mut new = base.clone();
        for k in 0..200 {
            let at = (k * 7919 % 16_384) * 32;
            new[at..at + 32].copy_from_slice(blake3::hash(&[k as u8, 9]).as_bytes());
        }
        let patch = diff(&base, &new);
        assert!(
            patch.len() < 200 * 32 + 4096,
            "patch of {} bytes",
            patch.len()
        );
        assert_eq!(apply(&base, &patch, new.len()).unwrap(), new);
    }

    #[test]
    fn the_wrong_base_and_a_huge_size_are_refused() {
        let base = ids(1, 1000);
        let new = ids(2, 10);
        let mut changed = base.clone();
        changed[100] ^= 1;
        let patch = diff(&base, &changed);
        let rebuilt = apply(&new, &patch, changed.len());
        assert!(rebuilt.as_ref() != Ok(&changed));
        assert!(matches!(
            apply(&base, &patch, changed.len() - 1),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(apply(&base, b"not zstd", 1000).is_err());
    }
}
