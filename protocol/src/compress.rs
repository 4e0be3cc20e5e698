//! lz4 compression of chunk-sized payloads, used only when it shrinks them.
//!
//! The compressed form is lz4_flex's block format with the decompressed size
//! prepended. [`decompress`] reads that size first and refuses anything over
//! the caller's limit before allocating, and always decompresses into a
//! fresh buffer (RUSTSEC-2026-0041 concerns reused buffers; lz4_flex ≥ 0.12.1
//! with `safe-decode` is used regardless).

use crate::ProtocolError;

/// Compresses `data`; returns it compressed only when that is smaller.
pub fn compress(data: &[u8]) -> (bool, Vec<u8>) {
    let packed = lz4_flex::block::compress_prepend_size(data);
    if packed.len() < data.len() {
        (true, packed)
    } else {
        (false, data.to_vec())
    }
}

/// Undoes [`compress`]: `compressed` says which form `bytes` is in.
///
/// # Errors
/// [`ProtocolError::TooLarge`] when the declared or actual size exceeds
/// `max_len`; [`ProtocolError::Malformed`] for invalid lz4 data.
pub fn decompress(
    compressed: bool,
    bytes: Vec<u8>,
    max_len: usize,
) -> Result<Vec<u8>, ProtocolError> {
    if !compressed {
        if bytes.len() > max_len {
            return Err(ProtocolError::TooLarge {
                what: "payload",
                len: bytes.len(),
                max: max_len,
            });
        }
        return Ok(bytes);
    }
    let (declared, body) = lz4_flex::block::uncompressed_size(&bytes)
        .map_err(|_| ProtocolError::Malformed("lz4 size header"))?;
    if declared > max_len {
        return Err(ProtocolError::TooLarge {
            what: "decompressed payload",
            len: declared,
            max: max_len,
        });
    }
    lz4_flex::block::decompress(body, declared).map_err(|_| ProtocolError::Malformed("lz4 data"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(0u8..4, 0..10_000)) {
            let (flag, packed) = compress(&data);
            prop_assert!(packed.len() <= data.len().max(1) || !flag);
            prop_assert_eq!(decompress(flag, packed, data.len()).unwrap(), data);
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decompress(true, data, 1 << 20);
        }
    }

    #[test]
    fn a_huge_declared_size_is_refused_before_allocating() {
        let mut bomb = (u32::MAX).to_le_bytes().to_vec();
        bomb.extend_from_slice(&[0x1f, 0, 0, 0]);
        assert!(matches!(
            decompress(true, bomb, 1 << 20),
            Err(ProtocolError::TooLarge { .. })
        ));
        let (flag, packed) = compress(&vec![0u8; 100_000]);
        assert!(flag);
        assert!(decompress(true, packed, 99_999).is_err());
    }
}
