//! Keyed content-defined chunking for sealed clients: FastCDC's normalized
//! cut rule (the same sizes as [`crate::chunking`]) over a gear table made
//! from the vault's chunker key, so where a file is cut says nothing to
//! whoever lacks the vault. fastcdc's own seed only XORs 64 bits into its
//! public table, which the 2025 attacks on keyed CDC (IACR eprint 2025/532,
//! 2025/558) undo from a few chunk lengths; here all 256 entries come from
//! the key (BLAKE3's keyed XOF). What still leaks (chunk counts and padded
//! sizes over time) is in SECURITY.md.
//!
//! Chunks are named by their keyed id ([`SealingKeys::keyed_id`]): equal
//! chunks of one vault share a name, and the name says nothing of them.

use std::io::Read;

use crate::chunking::{Chunk, AVG_CHUNK, MAX_CHUNK, MIN_CHUNK};
use crate::ids::ChunkId;
use crate::sealed::SealingKeys;

/// Bits of the average chunk size (64 KiB).
const AVG_BITS: u32 = AVG_CHUNK.trailing_zeros();

/// The cut rule's table and masks, from a vault's chunker key.
#[derive(Clone)]
pub struct KeyedCut {
    gear: Box<[u64; 256]>,
    /// Harder before the average size (one bit more than its log).
    mask_small: u64,
    /// Easier after it (one bit fewer).
    mask_large: u64,
}

impl std::fmt::Debug for KeyedCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedCut(…)")
    }
}

/// `bits` ones at the top of a word: the gear hash's top bits depend on
/// the last 64 bytes, its low bits on only the last few.
fn top_mask(bits: u32) -> u64 {
    !0u64 << (64 - bits)
}

impl KeyedCut {
    /// The cut rule of the vault whose keys are `keys`.
    pub fn new(keys: &SealingKeys) -> Self {
        let mut bytes = [0u8; 256 * 8];
        blake3::Hasher::new_keyed(keys.chunker_key())
            .update(b"ferry gear table")
            .finalize_xof()
            .fill(&mut bytes);
        let mut gear = Box::new([0u64; 256]);
        for (entry, word) in gear.iter_mut().zip(bytes.chunks_exact(8)) {
            *entry = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        }
        KeyedCut {
            gear,
            mask_small: top_mask(AVG_BITS + 1),
            mask_large: top_mask(AVG_BITS - 1),
        }
    }

    /// Where the first chunk of `data` ends: its length. `data` is the
    /// rest of the stream, or at least [`MAX_CHUNK`] bytes of it.
    pub fn cut(&self, data: &[u8]) -> usize {
        let end = data.len().min(MAX_CHUNK as usize);
        if end <= MIN_CHUNK as usize {
            return end;
        }
        let middle = end.min(AVG_CHUNK as usize);
        let mut hash = 0u64;
        for (i, &byte) in data.iter().enumerate().take(end).skip(MIN_CHUNK as usize) {
            hash = (hash << 1).wrapping_add(self.gear[byte as usize]);
            let mask = if i < middle {
                self.mask_small
            } else {
                self.mask_large
            };
            if hash & mask == 0 {
                return i + 1;
            }
        }
        end
    }
}

/// Cuts a byte stream into keyed chunks named by their keyed ids.
pub struct KeyedChunker<'k, R: Read> {
    reader: R,
    cut: KeyedCut,
    keys: &'k SealingKeys,
    buffer: Vec<u8>,
    offset: u64,
    eof: bool,
}

impl<R: Read> std::fmt::Debug for KeyedChunker<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedChunker")
    }
}

impl<'k, R: Read> KeyedChunker<'k, R> {
    /// Chunks `reader` for the vault whose keys are `keys`.
    pub fn new(reader: R, keys: &'k SealingKeys) -> Self {
        KeyedChunker {
            reader,
            cut: KeyedCut::new(keys),
            keys,
            buffer: Vec::with_capacity(2 * MAX_CHUNK as usize),
            offset: 0,
            eof: false,
        }
    }

    /// Reads until the buffer holds a largest chunk or the stream ends.
    fn fill(&mut self) -> std::io::Result<()> {
        let want = MAX_CHUNK as usize;
        let mut block = [0u8; 64 * 1024];
        while !self.eof && self.buffer.len() < want {
            match self.reader.read(&mut block) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buffer.extend_from_slice(&block[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for KeyedChunker<'_, R> {
    type Item = std::io::Result<Chunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        if self.buffer.is_empty() {
            return None;
        }
        let len = self.cut.cut(&self.buffer);
        let data: Vec<u8> = self.buffer.drain(..len).collect();
        let chunk = Chunk {
            offset: self.offset,
            id: ChunkId(self.keys.keyed_id(&data)),
            data,
        };
        self.offset += len as u64;
        Some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealed::VaultKey;
    use proptest::prelude::*;

    fn keys(byte: u8) -> SealingKeys {
        SealingKeys::derive(&VaultKey::from_bytes([byte; 32]))
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn chunks(data: &[u8], keys: &SealingKeys) -> Vec<Chunk> {
        KeyedChunker::new(data, keys).map(Result::unwrap).collect()
    }

    #[test]
    fn chunks_cover_the_stream_within_their_bounds_near_the_average() {
        let data = pseudo_random(8 << 20, 3);
        let k = keys(1);
        let all = chunks(&data, &k);
        let joined: Vec<u8> = all.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(joined, data);
        let (last, rest) = all.split_last().unwrap();
        assert!(rest
            .iter()
            .all(|c| (MIN_CHUNK as usize..=MAX_CHUNK as usize).contains(&c.data.len())));
        assert!(last.data.len() <= MAX_CHUNK as usize);
        let average = data.len() / all.len();
        assert!(
            (AVG_CHUNK as usize / 2..AVG_CHUNK as usize * 2).contains(&average),
            "average {average}"
        );
        assert_eq!(all[1].offset, all[0].data.len() as u64);
    }

    #[test]
    fn an_insertion_moves_few_chunks() {
        let data = pseudo_random(4 << 20, 9);
        let k = keys(2);
        let before: std::collections::HashSet<ChunkId> =
            chunks(&data, &k).iter().map(|c| c.id).collect();
        let mut edited = data.clone();
        edited.insert(2 << 20, 0x42);
        let changed = chunks(&edited, &k)
            .iter()
            .filter(|c| !before.contains(&c.id))
            .count();
        assert!(changed <= 2, "{changed} chunks changed");
    }

    #[test]
    fn another_vault_cuts_and_names_the_same_data_otherwise() {
        let data = pseudo_random(2 << 20, 5);
        let (a, b) = (chunks(&data, &keys(1)), chunks(&data, &keys(2)));
        let cuts = |c: &[Chunk]| c.iter().map(|c| c.offset).collect::<Vec<_>>();
        assert_ne!(
            cuts(&a),
            cuts(&b),
            "boundaries fingerprint nothing across vaults"
        );
        assert_ne!(a[0].id, ChunkId::of(&a[0].data), "ids are keyed");
        assert_eq!(cuts(&a), cuts(&chunks(&data, &keys(1))), "deterministic");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn any_stream_is_cut_whole(len in 0usize..600_000, seed in any::<u64>()) {
            let data = pseudo_random(len, seed);
            let joined: Vec<u8> = chunks(&data, &keys(7)).into_iter().flat_map(|c| c.data).collect();
            prop_assert_eq!(joined, data);
        }
    }
}
