//! An open-mode client's snapshot read as files, for the web page's
//! browser and downloads: a directory's entries by path, a file's bytes as
//! a [`Read`] that loads one chunk at a time (so a download of any size
//! holds one chunk in memory), holes of sparse files as zeros. Every
//! object is looked up under its client (never another's) and checked
//! against its id as it is decoded. Sealed clients' objects are opaque to
//! the relay: they never come here.

use std::io::Read;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ferry_protocol::chunking::MAX_CHUNK;
use ferry_protocol::compress::decompress;
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::{ChunkId, ContentId, TreeId};
use ferry_protocol::layout::Layout;
use ferry_protocol::tree::{Content, Entry, EntryKind, Tree};

use crate::catalog::BlobIndex;
use crate::catalog::{BlobKind, ClientId};
use crate::repo::Repo;

/// How deep a path into a snapshot may go (a hostile tree cannot make a
/// walk or an archive recurse without end).
pub const MAX_DEPTH: usize = 256;

/// One client's stored objects, read as files.
#[derive(Clone)]
pub struct SnapshotFiles {
    repo: Arc<Repo>,
    client: ClientId,
}

/// What a path in a snapshot names.
#[derive(Debug)]
pub enum Found {
    /// A directory: its tree.
    Dir(Tree),
    /// Anything else: its entry.
    Other(Entry),
}

impl SnapshotFiles {
    /// `client`'s objects in `repo`.
    pub fn new(repo: Arc<Repo>, client: ClientId) -> Self {
        SnapshotFiles { repo, client }
    }

    /// A blob of this client's, decompressed within `limit` bytes.
    fn load(&self, kind: BlobKind, id: &[u8; 32], limit: usize) -> Result<Vec<u8>> {
        let reading = self.repo.blobs().reading();
        let client = self.client;
        let row = self
            .repo
            .catalog(|c| c.find_blob(client, kind, id))?
            .with_context(|| {
                format!(
                    "the store has no {kind:?} {} of this client",
                    crate::catalog::hex(&id[..8])
                )
            })?;
        let stored = reading.read(&row.at)?;
        Ok(decompress(row.codec, stored, limit)?)
    }

    /// A directory's tree.
    ///
    /// # Errors
    /// A missing or damaged tree, store errors.
    pub fn tree(&self, id: &TreeId) -> Result<Tree> {
        let raw = self.load(BlobKind::Tree, &id.0, MAX_MESSAGE)?;
        Ok(Tree::decode(id, &raw)?)
    }

    /// What `path` (names from the root, each one entry's name) names in
    /// the snapshot whose root tree is `root`.
    ///
    /// # Errors
    /// A name not found, a path through a non-directory, store errors.
    pub fn walk(&self, root: &TreeId, path: &[Vec<u8>]) -> Result<Found> {
        if path.len() > MAX_DEPTH {
            bail!("the path is deeper than {MAX_DEPTH} directories");
        }
        let mut tree = self.tree(root)?;
        for (depth, name) in path.iter().enumerate() {
            let entry = tree
                .entries
                .iter()
                .find(|e| &e.name == name)
                .cloned()
                .with_context(|| {
                    format!("no {:?} in this snapshot", String::from_utf8_lossy(name))
                })?;
            match entry.kind {
                EntryKind::Dir { tree: ref id } => tree = self.tree(id)?,
                _ if depth + 1 == path.len() => return Ok(Found::Other(entry)),
                _ => bail!(
                    "{:?} is not a directory",
                    String::from_utf8_lossy(&entry.name)
                ),
            }
        }
        Ok(Found::Dir(tree))
    }

    /// A file's bytes, read lazily: `None` when `entry` is not a file.
    ///
    /// # Errors
    /// A missing or damaged content, store errors.
    pub fn open(&self, entry: &Entry) -> Result<Option<FileBytes>> {
        let EntryKind::File {
            size,
            content,
            sparse,
        } = &entry.kind
        else {
            return Ok(None);
        };
        let mut chunks = Vec::new();
        self.chunks_of(content, &mut chunks, 0)?;
        // The content laid at its places (the extents, for a sparse file),
        // the holes between as zeros.
        let layout = Layout::new(*size, sparse.as_deref());
        let mut pieces = Vec::new();
        let (mut content_at, mut file_at) = (0u64, 0u64);
        for (id, len) in chunks {
            let places = layout
                .places(content_at, u64::from(len))
                .context("the file's chunks hold more bytes than its size or extents say")?;
            let mut within = 0;
            for place in places {
                if place.file_offset > file_at {
                    pieces.push(Piece::Zeros(place.file_offset - file_at));
                }
                pieces.push(Piece::Slice {
                    id,
                    chunk_len: len,
                    from: within,
                    len: place.len,
                });
                within += place.len;
                file_at = place.file_offset + place.len;
            }
            content_at += u64::from(len);
        }
        if content_at < layout.total() {
            bail!("the file's chunks hold fewer bytes than its size or extents say");
        }
        if *size > file_at {
            pieces.push(Piece::Zeros(size - file_at));
        }
        Ok(Some(FileBytes {
            files: self.clone(),
            pieces: pieces.into(),
            current: Vec::new(),
            offset: 0,
            left: *size,
            last: None,
        }))
    }

    /// Appends a content's chunks (its parts' chunks, in order) to `out`.
    fn chunks_of(&self, id: &ContentId, out: &mut Vec<(ChunkId, u32)>, depth: usize) -> Result<()> {
        if depth > 1 {
            bail!("a content's part has parts of its own");
        }
        let raw = self.load(BlobKind::Content, &id.0, MAX_MESSAGE)?;
        let content = Content::decode(id, &raw)?;
        out.extend(content.chunks.iter().map(|c| (c.id, c.len)));
        for part in &content.parts {
            self.chunks_of(&part.id, out, depth + 1)?;
        }
        Ok(())
    }

    /// A chunk's bytes, checked against its id.
    fn chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let data = self.load(BlobKind::Chunk, &id.0, MAX_CHUNK as usize)?;
        if ChunkId::of(&data) != *id {
            bail!("chunk {} is damaged in the store", id.short());
        }
        Ok(data)
    }
}

/// One stretch of a file.
#[derive(Debug, Clone, Copy)]
enum Piece {
    /// Bytes of a chunk (often all of them).
    Slice {
        /// The chunk.
        id: ChunkId,
        /// Its length, as its content says.
        chunk_len: u32,
        /// From this offset in it.
        from: u64,
        /// This many bytes.
        len: u64,
    },
    /// A hole.
    Zeros(u64),
}

/// A file's bytes, one chunk in memory at a time; a file whose chunks
/// hold more or fewer bytes than its size says ends in an error, never in
/// a short or long file.
pub struct FileBytes {
    files: SnapshotFiles,
    pieces: std::collections::VecDeque<Piece>,
    current: Vec<u8>,
    offset: usize,
    left: u64,
    /// The last chunk loaded: a chunk cut by a sparse file's extents into
    /// several pieces is read and checked once, not once per piece (a
    /// layout of many tiny extents must not multiply the work).
    last: Option<(ChunkId, Arc<Vec<u8>>)>,
}

impl FileBytes {
    /// The file's size.
    pub fn len(&self) -> u64 {
        self.left + (self.current.len() - self.offset) as u64
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads the next piece into `current`; false at the end.
    fn next_piece(&mut self) -> std::io::Result<bool> {
        let Some(piece) = self.pieces.pop_front() else {
            return Ok(false);
        };
        let bytes = match piece {
            Piece::Slice {
                id,
                chunk_len,
                from,
                len,
            } => {
                let data = match &self.last {
                    Some((last, data)) if *last == id => Arc::clone(data),
                    _ => {
                        let data = Arc::new(self.files.chunk(&id).map_err(std::io::Error::other)?);
                        self.last = Some((id, Arc::clone(&data)));
                        data
                    }
                };
                if data.len() != chunk_len as usize {
                    return Err(std::io::Error::other(format!(
                        "chunk {} holds {} bytes where its content says {chunk_len}",
                        id.short(),
                        data.len()
                    )));
                }
                // Within the chunk: `places` never cuts past a length.
                let from = usize::try_from(from).unwrap_or(usize::MAX);
                let to = from.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                data.get(from..to)
                    .ok_or_else(|| std::io::Error::other("a slice past its chunk"))?
                    .to_vec()
            }
            Piece::Zeros(n) => vec![0; usize::try_from(n.min(1 << 20)).unwrap_or(1 << 20)],
        };
        if let Piece::Zeros(n) = piece {
            let rest = n - bytes.len() as u64;
            if rest > 0 {
                self.pieces.push_front(Piece::Zeros(rest));
            }
        }
        if bytes.len() as u64 > self.left {
            return Err(std::io::Error::other(
                "the file's chunks hold more bytes than its size",
            ));
        }
        self.left -= bytes.len() as u64;
        self.current = bytes;
        self.offset = 0;
        Ok(true)
    }
}

impl Read for FileBytes {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.offset == self.current.len() {
            if !self.next_piece()? {
                if self.left > 0 {
                    return Err(std::io::Error::other(
                        "the file's chunks hold fewer bytes than its size",
                    ));
                }
                return Ok(0);
            }
        }
        let n = buf.len().min(self.current.len() - self.offset);
        buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}
