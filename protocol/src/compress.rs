//! Compression of chunk-sized payloads: lz4 for fast links, zstd for slow
//! ones, each used only when it shrinks the payload.
//!
//! A payload travels with its [`Codec`]. lz4 is lz4_flex's block format with
//! the decompressed size prepended; zstd is one zstd frame, which records
//! its decompressed size. [`decompress`] reads that size first and refuses
//! anything over the caller's limit before allocating (a frame without a
//! size is refused), and always decompresses into a fresh buffer
//! (RUSTSEC-2026-0041 concerns reused lz4 buffers).
//!
//! Which codec a sender uses is a [`Method`]; `auto` on the endpoint picks
//! one by the link's measured or configured rate (see [`Method::for_rate`]).

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::ProtocolError;

/// How a payload is compressed. Serialized as its index (0, 1, 2), so a
/// former `bool` flag decodes as `None`/`Lz4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Codec {
    /// Stored as is.
    #[default]
    None,
    /// lz4 block with a size prefix.
    Lz4,
    /// One zstd frame with its content size.
    Zstd,
}

impl Codec {
    /// Its number in catalogs (the serialized index).
    pub fn code(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Lz4 => 1,
            Codec::Zstd => 2,
        }
    }

    /// The codec numbered `code`, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Codec::None),
            1 => Some(Codec::Lz4),
            2 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// The compression a sender applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Never compress.
    None,
    /// lz4: about 700 MB/s per core, ratio ~2.4 on text.
    Lz4,
    /// zstd at a level (1–19): level 3 about 360 MB/s, ratio ~3.8 on text.
    Zstd(i32),
}

/// zstd level for links of unknown or moderate speed.
pub const ZSTD_LEVEL: i32 = 3;
/// zstd level for slow links (≤ [`SLOW_LINK`]), where the CPU waits anyway.
pub const ZSTD_SLOW_LEVEL: i32 = 9;
/// A link at most this fast (bytes/s) gets [`ZSTD_SLOW_LEVEL`].
pub const SLOW_LINK: u64 = 16 << 20;
/// zstd level for very slow links (≤ [`VERY_SLOW_LINK`]): about 11 MB/s of
/// text per core, ratio ~4.4 against level 9's ~4.0 (`bench/src/bin/codecs.rs`).
pub const ZSTD_SLOWEST_LEVEL: i32 = 15;
/// A link at most this fast (bytes/s) gets [`ZSTD_SLOWEST_LEVEL`].
pub const VERY_SLOW_LINK: u64 = 4 << 20;
/// A link faster than this (bytes/s) gets lz4: zstd would be the bottleneck.
pub const FAST_LINK: u64 = 128 << 20;

impl Method {
    /// The method `auto` picks for a link of `rate` bytes per second.
    pub fn for_rate(rate: u64) -> Self {
        if rate <= VERY_SLOW_LINK {
            Method::Zstd(ZSTD_SLOWEST_LEVEL)
        } else if rate <= SLOW_LINK {
            Method::Zstd(ZSTD_SLOW_LEVEL)
        } else if rate <= FAST_LINK {
            Method::Zstd(ZSTD_LEVEL)
        } else {
            Method::Lz4
        }
    }
}

thread_local! {
    static ZSTD_COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static ZSTD_DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

fn zstd_compress(level: i32, data: &[u8]) -> Option<Vec<u8>> {
    ZSTD_COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|(l, _)| *l != level) {
            *cell = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, compressor) = cell.as_mut()?;
        compressor.compress(data).ok()
    })
}

/// Compresses `data` with `method`; returns it as is (`Codec::None`) unless
/// that is smaller.
pub fn compress_with(method: Method, data: &[u8]) -> (Codec, Vec<u8>) {
    let packed = match method {
        Method::None => None,
        Method::Lz4 => Some((Codec::Lz4, lz4_flex::block::compress_prepend_size(data))),
        Method::Zstd(level) => zstd_compress(level, data).map(|p| (Codec::Zstd, p)),
    };
    match packed {
        Some((codec, packed)) if packed.len() < data.len() => (codec, packed),
        _ => (Codec::None, data.to_vec()),
    }
}

/// Compresses `data` with lz4 (the relay's storage format and the default
/// for everything that is not bulk data).
pub fn compress(data: &[u8]) -> (Codec, Vec<u8>) {
    compress_with(Method::Lz4, data)
}

fn too_large(what: &'static str, len: usize, max: usize) -> ProtocolError {
    ProtocolError::TooLarge { what, len, max }
}

/// The size a zstd frame declares it holds, at most `max_len`.
///
/// # Errors
/// A frame without its size, or one over `max_len`.
pub(crate) fn zstd_declared(frame: &[u8], max_len: usize) -> Result<usize, ProtocolError> {
    let declared = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
        .ok_or(ProtocolError::Malformed("zstd frame header"))?;
    let declared = usize::try_from(declared).unwrap_or(usize::MAX);
    if declared > max_len {
        return Err(too_large("decompressed payload", declared, max_len));
    }
    Ok(declared)
}

/// Undoes [`compress_with`]: `codec` says which form `bytes` is in.
///
/// # Errors
/// [`ProtocolError::TooLarge`] when the declared or actual size exceeds
/// `max_len`; [`ProtocolError::Malformed`] for invalid data.
pub fn decompress(codec: Codec, bytes: Vec<u8>, max_len: usize) -> Result<Vec<u8>, ProtocolError> {
    match codec {
        Codec::None if bytes.len() <= max_len => Ok(bytes),
        codec => decompress_slice(codec, &bytes, max_len),
    }
}

/// [`decompress`] from borrowed bytes, for a caller that keeps them (the
/// relay keeps a stored chunk as it is when its unpacked form does not fit
/// a batch): no copy of the input.
///
/// # Errors
/// As [`decompress`].
pub fn decompress_slice(
    codec: Codec,
    bytes: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, ProtocolError> {
    match codec {
        Codec::None if bytes.len() > max_len => Err(too_large("payload", bytes.len(), max_len)),
        Codec::None => Ok(bytes.to_vec()),
        Codec::Lz4 => {
            let (declared, body) = lz4_flex::block::uncompressed_size(bytes)
                .map_err(|_| ProtocolError::Malformed("lz4 size header"))?;
            if declared > max_len {
                return Err(too_large("decompressed payload", declared, max_len));
            }
            lz4_flex::block::decompress(body, declared)
                .map_err(|_| ProtocolError::Malformed("lz4 data"))
        }
        Codec::Zstd => {
            let declared = zstd_declared(bytes, max_len)?;
            let out = ZSTD_DECOMPRESSOR.with(|cell| {
                let mut cell = cell.borrow_mut();
                if cell.is_none() {
                    *cell = zstd::bulk::Decompressor::new().ok();
                }
                cell.as_mut()?.decompress(bytes, declared).ok()
            });
            match out {
                Some(out) if out.len() == declared => Ok(out),
                _ => Err(ProtocolError::Malformed("zstd data")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const METHODS: [Method; 4] = [Method::None, Method::Lz4, Method::Zstd(3), Method::Zstd(9)];

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(0u8..4, 0..10_000), m in 0usize..4) {
            let (codec, packed) = compress_with(METHODS[m], &data);
            prop_assert!(packed.len() <= data.len());
            prop_assert!(codec == Codec::None || packed.len() < data.len());
            prop_assert_eq!(decompress(codec, packed, data.len()).unwrap(), data);
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(data in proptest::collection::vec(any::<u8>(), 0..200), c in 0u8..3) {
            let _ = decompress(Codec::from_code(c).unwrap(), data, 1 << 20);
        }
    }

    #[test]
    fn a_huge_declared_size_is_refused_before_allocating() {
        let mut bomb = (u32::MAX).to_le_bytes().to_vec();
        bomb.extend_from_slice(&[0x1f, 0, 0, 0]);
        assert!(matches!(
            decompress(Codec::Lz4, bomb, 1 << 20),
            Err(ProtocolError::TooLarge { .. })
        ));
        for method in [Method::Lz4, Method::Zstd(3)] {
            let (codec, packed) = compress_with(method, &vec![0u8; 100_000]);
            assert_ne!(codec, Codec::None);
            assert!(matches!(
                decompress(codec, packed, 99_999),
                Err(ProtocolError::TooLarge { .. })
            ));
        }
    }

    #[test]
    fn zstd_beats_lz4_on_text_and_codecs_keep_their_numbers() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("line {i}: the relay stored chunk {} ok\n", i % 97).into_bytes())
            .collect();
        let lz4 = compress_with(Method::Lz4, &text).1.len();
        let zstd = compress_with(Method::Zstd(3), &text).1.len();
        assert!(zstd < lz4, "zstd {zstd} vs lz4 {lz4}");
        for codec in [Codec::None, Codec::Lz4, Codec::Zstd] {
            assert_eq!(Codec::from_code(codec.code()), Some(codec));
            let wire = postcard::to_allocvec(&codec).unwrap();
            assert_eq!(wire, vec![codec.code()]);
        }
        assert_eq!(postcard::from_bytes::<Codec>(&[1]).unwrap(), Codec::Lz4);
        assert_eq!(
            Method::for_rate(2_000_000),
            Method::Zstd(ZSTD_SLOWEST_LEVEL)
        );
        assert_eq!(Method::for_rate(8 << 20), Method::Zstd(ZSTD_SLOW_LEVEL));
        assert_eq!(Method::for_rate(50 << 20), Method::Zstd(ZSTD_LEVEL));
        assert_eq!(Method::for_rate(1 << 30), Method::Lz4);
    }
}
