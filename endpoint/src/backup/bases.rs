//! The previous version of a changed file, as delta bases by offset, and
//! the reader of a file's data extents (holes of sparse files skipped).

use super::*;

/// The previous version's chunks by offset: the base for a new chunk is the
/// old chunk that covered the same offset. For a large file only one part of
/// the old chunk list is held at a time.
pub(super) struct Bases {
    /// (start, id) of the chunks in view: the whole file, or one part.
    pub(super) view: Vec<(u64, ChunkId)>,
    /// End of the view.
    pub(super) view_end: u64,
    /// (start, part) of each part of a large file.
    pub(super) parts: Vec<(u64, ContentPart)>,
    /// The last parts loaded (index, id, bytes): bases for the new parts.
    pub(super) loaded: Vec<(usize, ContentId, Vec<u8>)>,
}

/// Reads the data regions of a file one after another (all of it when dense).
pub(crate) struct ExtentReader<'e> {
    pub(super) file: File,
    pub(super) extents: &'e [Extent],
    pub(super) current: usize,
    pub(super) left: u64,
}

impl Bases {
    pub(super) fn new(content: &Content) -> Self {
        let mut bases = Bases {
            view: Vec::new(),
            view_end: 0,
            parts: Vec::new(),
            loaded: Vec::new(),
        };
        let mut at = 0u64;
        for part in &content.parts {
            bases.parts.push((at, *part));
            at += part.len;
        }
        bases.show(0, &content.chunks);
        bases
    }

    pub(super) fn show(&mut self, mut at: u64, chunks: &[ChunkRef]) {
        self.view.clear();
        for c in chunks {
            self.view.push((at, c.id));
            at += u64::from(c.len);
        }
        self.view_end = at;
    }

    /// The part to load before `offset` can be answered, if any.
    pub(super) fn part_needed(&self, offset: u64) -> Option<usize> {
        let in_view =
            self.view.first().is_some_and(|(start, _)| *start <= offset) && offset < self.view_end;
        if in_view || self.parts.is_empty() {
            return None;
        }
        self.parts
            .partition_point(|(start, _)| *start <= offset)
            .checked_sub(1)
    }

    /// Shows part `index`, whose encoded bytes are `bytes`, checked against `id`.
    pub(super) fn load(&mut self, index: usize, id: ContentId, bytes: Vec<u8>) -> Result<()> {
        let part = Content::decode(&id, &bytes)?;
        let start = self.parts[index].0;
        self.show(start, &part.chunks);
        if self.loaded.len() == 2 {
            self.loaded.remove(0);
        }
        self.loaded.push((index, id, bytes));
        Ok(())
    }

    /// The old part to patch new part `index` against: the old part of the
    /// same index when loaded, else the last one loaded.
    pub(super) fn part_base(&self, index: usize) -> Option<(ContentId, &[u8])> {
        let (_, id, bytes) = self
            .loaded
            .iter()
            .find(|(i, _, _)| *i == index)
            .or(self.loaded.last())?;
        Some((*id, bytes.as_slice()))
    }

    /// The old chunks that covered `len` bytes at `offset`, in order: the
    /// delta base of the new chunk there (one when boundaries stayed, more
    /// when they moved), at most [`delta::MAX_BASE_CHUNKS`] of them and
    /// [`delta::MAX_BASE`] bytes, within the part in view.
    pub(super) fn covering(&self, offset: u64, len: u64) -> Vec<ChunkId> {
        if offset >= self.view_end {
            return Vec::new();
        }
        let Some(first) = self
            .view
            .partition_point(|(start, _)| *start <= offset)
            .checked_sub(1)
        else {
            return Vec::new();
        };
        let mut covering = Vec::new();
        let mut joined = 0;
        for (i, (start, id)) in self.view.iter().enumerate().skip(first) {
            let end = self
                .view
                .get(i + 1)
                .map_or(self.view_end, |(next, _)| *next);
            if *start >= offset + len.max(1)
                || covering.len() == delta::MAX_BASE_CHUNKS
                || joined + (end - start) > delta::MAX_BASE as u64
            {
                break;
            }
            joined += end - start;
            covering.push(*id);
        }
        covering
    }
}

impl<'e> ExtentReader<'e> {
    pub(crate) fn new(file: File, extents: &'e [Extent]) -> Self {
        ExtentReader {
            file,
            extents,
            current: 0,
            left: 0,
        }
    }
}

impl Read for ExtentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            let Some(extent) = self.extents.get(self.current) else {
                return Ok(0);
            };
            self.file.seek(SeekFrom::Start(extent.offset))?;
            self.left = extent.len;
            self.current += 1;
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            // The file shrank under us: the after-check will retry it.
            self.left = 0;
            return Ok(0);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(lens: &[u32]) -> (Content, Vec<ChunkId>) {
        let ids: Vec<ChunkId> = (0..lens.len()).map(|i| ChunkId([i as u8; 32])).collect();
        let chunks = lens
            .iter()
            .zip(&ids)
            .map(|(len, id)| ChunkRef { id: *id, len: *len })
            .collect();
        (
            Content {
                chunks,
                parts: Vec::new(),
            },
            ids,
        )
    }

    #[test]
    fn a_new_chunk_is_based_on_every_old_chunk_it_overlaps() {
        let (old, ids) = content(&[100, 200, 300, 400]);
        let bases = Bases::new(&old);
        // Same boundaries: the one chunk.
        assert_eq!(bases.covering(100, 200), vec![ids[1]]);
        // Boundaries moved: the end of one and the start of the next.
        assert_eq!(bases.covering(250, 100), vec![ids[1], ids[2]]);
        // Past the old end: nothing; an empty chunk: the one at its place.
        assert_eq!(bases.covering(1000, 10), Vec::<ChunkId>::new());
        assert_eq!(bases.covering(0, 0), vec![ids[0]]);
        // At most MAX_BASE_CHUNKS of them.
        let (many, _) = content(&[10; 10]);
        assert_eq!(
            Bases::new(&many).covering(0, 100).len(),
            delta::MAX_BASE_CHUNKS
        );
        // At most MAX_BASE bytes: a base is never cut inside a chunk.
        let big = delta::MAX_BASE as u32 / 2 + 1;
        let (large, large_ids) = content(&[big, big, big]);
        assert_eq!(
            Bases::new(&large).covering(0, u64::from(big) * 3),
            vec![large_ids[0]]
        );
    }
}
