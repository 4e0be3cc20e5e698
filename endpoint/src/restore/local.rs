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

/// Where a content's bytes go in a (possibly sparse) file: its data
/// regions, in order, so a chunk can be written at its content offset in
/// whatever order the chunks arrive.
pub(super) struct Layout {
    extents: Vec<Extent>,
    /// The content offset at which each extent begins.
    starts: Vec<u64>,
    /// Content bytes the extents hold.
    total: u64,
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

impl Layout {
    /// The layout of a file of `size` bytes: its data extents when sparse,
    /// else the whole file.
    pub(super) fn new(size: u64, sparse: Option<&[Extent]>) -> Self {
        let extents = sparse.map_or_else(
            || {
                vec![Extent {
                    offset: 0,
                    len: size,
                }]
            },
            <[Extent]>::to_vec,
        );
        let mut starts = Vec::with_capacity(extents.len());
        let mut total = 0u64;
        for extent in &extents {
            starts.push(total);
            total = total.saturating_add(extent.len);
        }
        Layout {
            extents,
            starts,
            total,
        }
    }

    /// Content bytes the file's data regions hold.
    pub(super) fn total(&self) -> u64 {
        self.total
    }

    /// Whether content offsets are file offsets (not sparse).
    pub(super) fn is_whole(&self) -> bool {
        self.extents.len() == 1 && self.extents[0].offset == 0
    }

    /// Writes `data`, the content's bytes from `offset`, at their places in `file`.
    pub(super) fn write(&self, file: &File, offset: u64, mut data: &[u8]) -> std::io::Result<()> {
        if offset.saturating_add(data.len() as u64) > self.total {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "content longer than its extents",
            ));
        }
        let mut at = offset;
        let mut i = self.starts.partition_point(|&s| s <= at).saturating_sub(1);
        while !data.is_empty() {
            let extent = &self.extents[i];
            let inside = at - self.starts[i];
            let room = extent.len - inside;
            let n = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            file.write_all_at(&data[..n], extent.offset + inside)?;
            at += n as u64;
            data = &data[n..];
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extent(offset: u64, len: u64) -> Extent {
        Extent { offset, len }
    }

    #[test]
    fn chunks_land_at_their_extents_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let layout = Layout::new(40, Some(&[extent(2, 3), extent(10, 5), extent(30, 4)]));
        assert_eq!(layout.total(), 12);
        // "abcdefghijkl" across the three extents, written back to front.
        layout.write(&file, 7, b"hijkl").unwrap();
        layout.write(&file, 0, b"abcdefg").unwrap();
        file.set_len(40).unwrap();
        let mut all = vec![0u8; 40];
        file.read_exact_at(&mut all, 0).unwrap();
        let mut expected = vec![0u8; 40];
        expected[2..5].copy_from_slice(b"abc");
        expected[10..15].copy_from_slice(b"defgh");
        expected[30..34].copy_from_slice(b"ijkl");
        assert_eq!(all, expected);
        assert!(layout.write(&file, 10, b"xyz").is_err(), "past the extents");
    }
}
