//! A vault's compression dictionary: a sealed client compresses each chunk
//! alone before sealing it (ciphertext does not compress), so a small file
//! or a chunk starts with nothing learnt, where open mode compresses many
//! chunks in one stream. A zstd dictionary trained on the vault's own data
//! gives every chunk that start: on small text files it recovers most of
//! what compressing them together would (see the README's sealed table).
//!
//! The endpoint trains one on up to [`SAMPLE_BYTES`] of the files its first
//! backup is about to read (a piece of each), before it seals any, seals it
//! as a dictionary object and keeps it;
//! every root its backups make names it among the root's refs, so the
//! relay keeps it as long as any snapshot and a new machine finds it in
//! the newest root. A chunk compressed with it says so by its codec byte
//! ([`DICTIONARY_CODEC`]), and zstd checks the dictionary's id in the frame:
//! a relay that serves another of the vault's dictionaries is caught.

use zstd::zstd_safe::{CDict, DDict};

use crate::compress::{compress_with, zstd_declared, Codec, Method};
use crate::ProtocolError;

/// Bytes of samples a dictionary is trained on. zstd advises about a
/// hundred times the dictionary's size; training is on the first backup's
/// path before anything is sent. Timed with python-zstandard's trainer
/// (the same zstd, fastCover with k optimized) on the D2 benchmark's
/// files: 77 ms for 512 KiB, 119 ms for 1 MiB, and 256 KiB already gave
/// a dictionary within 0.2 % of what 1 MiB gave.
pub const SAMPLE_BYTES: usize = 512 << 10;
/// Fewest bytes of samples a dictionary is trained on.
pub const FEWEST_SAMPLE_BYTES: usize = 128 << 10;
/// Most bytes taken from one file as a sample.
pub const SAMPLE_PIECE: usize = 16 << 10;
/// The dictionary's size: zstd's default is 110 KiB; a third of that loses
/// little on small files and costs a third to upload and to load.
pub const DICTIONARY_SIZE: usize = 32 << 10;
/// The largest dictionary a decoder accepts.
pub const MAX_DICTIONARY: usize = 128 << 10;
/// The codec byte of a chunk compressed with the vault's dictionary (the
/// others are [`Codec::code`]s).
pub const DICTIONARY_CODEC: u8 = 0x10;
/// zstd's dictionary magic number, the first four bytes of a trained one.
const MAGIC: [u8; 4] = [0x37, 0xA4, 0x30, 0xEC];

/// Pieces of files collected until there are enough to train on.
#[derive(Debug, Default)]
pub struct Samples {
    pieces: Vec<Vec<u8>>,
    bytes: usize,
}

impl Samples {
    /// Takes the first [`SAMPLE_PIECE`] bytes of `data` while the samples
    /// are not yet [`Samples::full`].
    pub fn add(&mut self, data: &[u8]) {
        if self.full() || data.is_empty() {
            return;
        }
        let piece = &data[..data.len().min(SAMPLE_PIECE)];
        self.bytes += piece.len();
        self.pieces.push(piece.to_vec());
    }

    /// Whether [`SAMPLE_BYTES`] are collected.
    pub fn full(&self) -> bool {
        self.bytes >= SAMPLE_BYTES
    }

    /// A dictionary trained on the samples; `None` when they are fewer
    /// than [`FEWEST_SAMPLE_BYTES`] (a dictionary would pack little and be
    /// the vault's for good) or zstd finds nothing to learn from them.
    pub fn train(&self) -> Option<Vec<u8>> {
        if self.bytes < FEWEST_SAMPLE_BYTES {
            return None;
        }
        let dictionary = zstd::dict::from_samples(&self.pieces, DICTIONARY_SIZE).ok()?;
        check(&dictionary).ok()?;
        Some(dictionary)
    }
}

/// Checks a dictionary read from a sealed object: bounded, and in zstd's
/// format (its magic).
///
/// # Errors
/// A dictionary over [`MAX_DICTIONARY`] or without zstd's magic.
pub fn check(dictionary: &[u8]) -> Result<(), ProtocolError> {
    if dictionary.len() > MAX_DICTIONARY {
        return Err(ProtocolError::TooLarge {
            what: "sealed dictionary",
            len: dictionary.len(),
            max: MAX_DICTIONARY,
        });
    }
    if dictionary.len() < 8 || dictionary[..4] != MAGIC {
        return Err(ProtocolError::Malformed("sealed dictionary"));
    }
    Ok(())
}

thread_local! {
    // One zstd context per thread, for every chunk it packs or unpacks (a
    // context costs more to make than a small chunk to compress).
    static CCTX: std::cell::RefCell<Option<zstd::zstd_safe::CCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DCTX: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// A dictionary made ready to compress at one zstd level and to
/// decompress (zstd's prepared forms, shared by every thread).
pub struct Dictionary {
    level: Option<i32>,
    encoder: Option<CDict<'static>>,
    decoder: DDict<'static>,
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionary")
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl Dictionary {
    /// `bytes` prepared to decompress, and to compress under `method` when
    /// that is zstd (lz4 and none do not use it).
    ///
    /// # Errors
    /// As [`check`], and bytes zstd cannot load as a dictionary (a vault
    /// key that seals anything can seal those: found by fuzzing, where
    /// zstd's own wrappers panic).
    pub fn new(bytes: &[u8], method: Method) -> Result<Self, ProtocolError> {
        check(bytes)?;
        let level = match method {
            Method::Zstd(level) => Some(level),
            Method::Lz4 | Method::None => None,
        };
        let unusable = || ProtocolError::Malformed("a sealed dictionary zstd cannot load");
        let encoder = match level {
            Some(level) => Some(CDict::try_create(bytes, level).ok_or_else(unusable)?),
            None => None,
        };
        Ok(Dictionary {
            level,
            encoder,
            decoder: DDict::try_create(bytes).ok_or_else(unusable)?,
        })
    }

    /// `data` compressed with the dictionary, when it compresses to less
    /// than `data` and this dictionary was prepared for zstd.
    fn compress(&self, data: &[u8]) -> Option<Vec<u8>> {
        let encoder = self.encoder.as_ref()?;
        let mut packed = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
        CCTX.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = zstd::zstd_safe::CCtx::try_create();
            }
            let cctx = cell.as_mut()?;
            cctx.compress_using_cdict(&mut packed, data, encoder).ok()
        })?;
        (packed.len() < data.len()).then_some(packed)
    }

    /// Undoes [`Dictionary::compress`], within `max_len` bytes.
    fn decompress(&self, packed: &[u8], max_len: usize) -> Result<Vec<u8>, ProtocolError> {
        let declared = zstd_declared(packed, max_len)?;
        let mut out = Vec::with_capacity(declared);
        let done = DCTX.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = zstd::zstd_safe::DCtx::try_create();
            }
            let dctx = cell.as_mut()?;
            dctx.decompress_using_ddict(&mut out, packed, &self.decoder)
                .ok()
        });
        match done {
            Some(len) if len == declared && out.len() == declared => Ok(out),
            _ => Err(ProtocolError::Malformed(
                "a chunk that does not unpack with the vault's dictionary",
            )),
        }
    }
}

/// `data` packed for sealing: with `dictionary` when it is prepared for
/// zstd, else as `method` packs it (see [`compress_with`]). Returns the
/// codec byte and the packed bytes.
pub fn pack(method: Method, dictionary: Option<&Dictionary>, data: &[u8]) -> (u8, Vec<u8>) {
    if let Some(packed) = dictionary.and_then(|d| d.compress(data)) {
        return (DICTIONARY_CODEC, packed);
    }
    let (codec, packed) = compress_with(method, data);
    (codec.code(), packed)
}

/// Undoes [`pack`] within `max_len` bytes.
///
/// # Errors
/// An unknown codec, a chunk packed with a dictionary when none is given,
/// bytes that do not unpack.
pub fn unpack(
    code: u8,
    dictionary: Option<&Dictionary>,
    packed: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, ProtocolError> {
    if code == DICTIONARY_CODEC {
        let dictionary = dictionary.ok_or(ProtocolError::Malformed(
            "a chunk packed with a dictionary its snapshot does not name",
        ))?;
        return dictionary.decompress(packed, max_len);
    }
    let codec = Codec::from_code(code).ok_or(ProtocolError::Malformed("sealed chunk codec"))?;
    crate::compress::decompress_slice(codec, packed, max_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(seed: u64, len: usize) -> Vec<u8> {
        let words = [
            "alpha", "beta", "gamma", "delta", "ferry", "relay", "chunk", "seal",
        ];
        let mut state = seed | 1;
        let mut out = Vec::new();
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.extend_from_slice(words[(state % 8) as usize].as_bytes());
            out.push(b' ');
        }
        out.truncate(len);
        out
    }

    fn trained() -> Vec<u8> {
        let mut samples = Samples::default();
        let mut seed = 1;
        while !samples.full() {
            samples.add(&text(seed, 4000));
            seed += 1;
        }
        samples.train().expect("a dictionary")
    }

    #[test]
    fn a_dictionary_packs_small_chunks_smaller_and_unpacks_them() {
        let bytes = trained();
        assert!(bytes.len() <= DICTIONARY_SIZE);
        let dictionary = Dictionary::new(&bytes, Method::Zstd(3)).unwrap();
        let chunk = text(99_999, 3000);
        let (code, with) = pack(Method::Zstd(3), Some(&dictionary), &chunk);
        let (plain_code, without) = pack(Method::Zstd(3), None, &chunk);
        assert_eq!(code, DICTIONARY_CODEC);
        assert_eq!(plain_code, Codec::Zstd.code());
        assert!(
            with.len() < without.len(),
            "{} {}",
            with.len(),
            without.len()
        );
        assert_eq!(
            unpack(code, Some(&dictionary), &with, 1 << 20).unwrap(),
            chunk
        );
        // Packing is deterministic: the same chunk seals the same.
        assert_eq!(pack(Method::Zstd(3), Some(&dictionary), &chunk).1, with);
    }

    #[test]
    fn a_missing_wrong_or_lying_dictionary_is_refused() {
        let bytes = trained();
        let dictionary = Dictionary::new(&bytes, Method::Zstd(3)).unwrap();
        let chunk = text(7, 3000);
        let (code, packed) = pack(Method::Zstd(3), Some(&dictionary), &chunk);
        assert!(unpack(code, None, &packed, 1 << 20).is_err());
        assert!(unpack(code, Some(&dictionary), &packed, 100).is_err());
        // Another dictionary (another id in zstd's header) does not unpack it.
        let mut other = Samples::default();
        let mut seed = 1_000_000;
        while !other.full() {
            other.add(&text(seed, 2000));
            seed += 1;
        }
        let other = Dictionary::new(&other.train().unwrap(), Method::Zstd(3)).unwrap();
        assert!(unpack(code, Some(&other), &packed, 1 << 20).is_err());
        assert!(check(b"not a dictionary").is_err());
        // zstd's magic and a header zstd cannot load (found by fuzzing:
        // zstd's own wrappers panicked on it).
        let unloadable = [
            0x37, 0xa4, 0x30, 0xec, 0x30, 0xa4, 0x37, 0x01, 0x00, 0x23, 0x00, 0x09, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0xbc, 0x01, 0xff, 0xfe, 0x00, 0x00, 0xfb, 0xff, 0xff, 0x05,
            0x00, 0x01, 0xa7, 0x35, 0xff, 0x00, 0x01, 0x00,
        ];
        assert!(Dictionary::new(&unloadable, Method::Zstd(3)).is_err());
        assert!(check(&vec![0u8; MAX_DICTIONARY + 1]).is_err());
        // lz4 and none leave the dictionary unused.
        let lz4 = Dictionary::new(&bytes, Method::Lz4).unwrap();
        assert_eq!(pack(Method::Lz4, Some(&lz4), &chunk).0, Codec::Lz4.code());
    }
}
