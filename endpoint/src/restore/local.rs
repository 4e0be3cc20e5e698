//! The target's side of a file: the chunks of its current version, read
//! back by id, and the writer that lays chunks out at their extents.

use super::*;

/// The target's current version of a file, chunked to find reusable chunks.
pub(super) struct LocalFile {
    pub(super) file: File,
    pub(super) len: u64,
    /// (offset, len, id) of each chunk, in order.
    pub(super) chunks: Vec<(u64, u32, ChunkId)>,
    pub(super) by_id: HashMap<ChunkId, (u64, u32)>,
    pub(super) content: Content,
}

/// Writes a content's bytes into the data regions of a (possibly sparse) file.
pub(super) struct ExtentWriter<'f> {
    pub(super) file: &'f File,
    pub(super) extents: &'f [Extent],
    pub(super) current: usize,
    pub(super) done: u64,
    /// Content bytes of the chunks queued so far (see [`ExtentWriter::in_place`]).
    pub(super) queued: u64,
    /// The file's own earlier contents, when completing it in place.
    pub(super) earlier: Option<&'f LocalFile>,
}

impl LocalFile {
    pub(super) fn scan(file: File) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        let mut chunks = Vec::new();
        let mut by_id = HashMap::new();
        let content = chunk_file(&file, |offset, n, id| {
            chunks.push((offset, n, id));
            by_id.entry(id).or_insert((offset, n));
        })?;
        Ok(LocalFile {
            file,
            len,
            chunks,
            by_id,
            content,
        })
    }

    pub(super) fn read_at(&self, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    pub(super) fn read(&self, id: &ChunkId) -> std::io::Result<Option<Vec<u8>>> {
        match self.by_id.get(id) {
            Some((offset, len)) => self.read_at(*offset, *len).map(Some),
            None => Ok(None),
        }
    }
}

impl ExtentWriter<'_> {
    /// Takes the place of the content's next chunk (the `index`th, queued
    /// in order); true when it is already there (an interrupted restore
    /// wrote it). Only for non-sparse files, where content offsets are file
    /// offsets.
    pub(super) fn in_place(&mut self, index: usize, chunk: &ChunkRef) -> bool {
        let at = self.queued;
        self.queued += u64::from(chunk.len);
        self.extents.len() == 1
            && self.earlier.is_some_and(|local| {
                local.chunks.get(index).is_some_and(|&(offset, len, id)| {
                    id == chunk.id && len == chunk.len && offset == at
                })
            })
    }

    /// Moves past `len` bytes already in place.
    pub(super) fn skip(&mut self, len: u64) -> std::io::Result<()> {
        self.done += len;
        let extent = self.extents.get(self.current).map_or(0, |e| e.len);
        if self.done > extent {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "content longer than its extents",
            ));
        }
        if self.done == extent {
            self.current += 1;
            self.done = 0;
        }
        Ok(())
    }

    pub(super) fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let Some(extent) = self.extents.get(self.current) else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "content longer than its extents",
                ));
            };
            let room = extent.len - self.done;
            let n = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            self.file
                .write_all_at(&data[..n], extent.offset + self.done)?;
            self.done += n as u64;
            data = &data[n..];
            if self.done == extent.len {
                self.current += 1;
                self.done = 0;
            }
        }
        Ok(())
    }
}
