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

/// Writes `data`, the content's bytes from `offset`, at their places in
/// `file` (see [`Layout`]): chunks land in whatever order they arrive.
pub(super) fn write_content(
    layout: &Layout,
    file: &File,
    offset: u64,
    mut data: &[u8],
) -> std::io::Result<()> {
    let places = layout.places(offset, data.len() as u64).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "content longer than its extents",
        )
    })?;
    for place in places {
        let (here, rest) = data.split_at(usize::try_from(place.len).unwrap_or(usize::MAX));
        file.write_all_at(here, place.file_offset)?;
        data = rest;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_protocol::tree::Extent;

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
        write_content(&layout, &file, 7, b"hijkl").unwrap();
        write_content(&layout, &file, 0, b"abcdefg").unwrap();
        file.set_len(40).unwrap();
        let mut all = vec![0u8; 40];
        file.read_exact_at(&mut all, 0).unwrap();
        let mut expected = vec![0u8; 40];
        expected[2..5].copy_from_slice(b"abc");
        expected[10..15].copy_from_slice(b"defgh");
        expected[30..34].copy_from_slice(b"ijkl");
        assert_eq!(all, expected);
        assert!(
            write_content(&layout, &file, 10, b"xyz").is_err(),
            "past the extents"
        );
    }
}
