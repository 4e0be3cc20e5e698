//! Content-defined chunking: FastCDC (2020) cut points, about 64 KiB on
//! average, between 16 KiB and 256 KiB. Cutting by content means an
//! insertion moves only the chunks around it. [`Chunker`] is an iterator
//! over any `Read`, so a file of any size is handled one chunk at a time.

use std::io::Read;

use crate::ids::ChunkId;

/// Smallest chunk (except a file's last).
pub const MIN_CHUNK: u32 = 16 * 1024;
/// Average chunk size FastCDC aims for.
pub const AVG_CHUNK: u32 = 64 * 1024;
/// Largest chunk: bounds every chunk-sized buffer on both sides.
pub const MAX_CHUNK: u32 = 256 * 1024;

/// One chunk of a stream.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Offset of the chunk in the stream.
    pub offset: u64,
    /// Its bytes.
    pub data: Vec<u8>,
    /// Its name.
    pub id: ChunkId,
}

/// Cuts a byte stream into chunks.
pub struct Chunker<R: Read> {
    inner: fastcdc::v2020::StreamCDC<R>,
}

impl<R: Read> std::fmt::Debug for Chunker<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Chunker")
    }
}

impl<R: Read> Chunker<R> {
    /// Chunks `reader` with ferry's parameters.
    pub fn new(reader: R) -> Self {
        Chunker {
            inner: fastcdc::v2020::StreamCDC::new(reader, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK),
        }
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = std::io::Result<Chunk>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|result| {
            result
                .map(|c| Chunk {
                    offset: c.offset,
                    id: ChunkId::of(&c.data),
                    data: c.data,
                })
                .map_err(|e| match e {
                    fastcdc::v2020::Error::IoError(io) => io,
                    other => std::io::Error::other(other.to_string()),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_cover_the_stream_and_an_insertion_moves_few_chunks() {
        let data = pseudo_random(4 << 20, 7);
        let chunks: Vec<Chunk> = Chunker::new(&data[..]).map(Result::unwrap).collect();
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(joined, data);
        assert!(chunks.iter().all(|c| c.data.len() <= MAX_CHUNK as usize));
        let mut edited = data.clone();
        edited.insert(2 << 20, 0x42);
        let after: Vec<Chunk> = Chunker::new(&edited[..]).map(Result::unwrap).collect();
        let before: std::collections::HashSet<ChunkId> = chunks.iter().map(|c| c.id).collect();
        let new = after.iter().filter(|c| !before.contains(&c.id)).count();
        assert!(new <= 2, "{new} chunks changed");
    }
}
