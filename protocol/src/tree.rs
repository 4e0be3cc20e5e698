//! Snapshots as Merkle trees: [`Tree`] (one directory's entries) and
//! [`Content`] (one file version's chunk list), each named by the BLAKE3 of
//! its postcard encoding, so unchanged directories and files are shared
//! between snapshots and a single root id pins everything below it.
//!
//! Decoding validates what a restore will trust: names are non-empty, contain
//! no `/` or NUL and are not `.` or `..`; entries are strictly sorted by name
//! (so each name appears once); hardlink targets are relative paths of valid
//! names; sizes of every list and string are bounded.

use serde::{Deserialize, Serialize};

use crate::decoding::decode_exact;
use crate::ids::{ChunkId, ContentId, TreeId};
use crate::ProtocolError;

/// Largest name, symlink target or xattr name, in bytes.
pub const MAX_NAME: usize = 4096;
/// Largest xattr value.
pub const MAX_XATTR_VALUE: usize = 64 * 1024;

/// A region of a sparse file that holds data (everything else is a hole).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// Offset of the region in the file.
    pub offset: u64,
    /// Its length.
    pub len: u64,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file.
    File {
        /// Logical size in bytes.
        size: u64,
        /// Its data: for a sparse file, the data regions concatenated.
        content: ContentId,
        /// Data regions of a sparse file; `None` for a dense one.
        sparse: Option<Vec<Extent>>,
    },
    /// A directory.
    Dir {
        /// Its entries.
        tree: TreeId,
    },
    /// A symbolic link (possibly dangling).
    Symlink {
        /// The link's target, as stored, never followed.
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
    /// Another name for a file that appears earlier in the snapshot.
    Hardlink {
        /// The earlier path, relative to the snapshot root, `/`-separated.
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
    /// A named pipe.
    Fifo,
    /// A device node (restored only when running as root).
    Device {
        /// Character (true) or block device.
        character: bool,
        /// Device number.
        rdev: u64,
    },
}

/// One name in a directory, with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The file name: bytes, not necessarily UTF-8.
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Extended attributes (name, value), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries sorted by name.
    pub entries: Vec<Entry>,
}

/// One chunk of a content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The chunk.
    pub id: ChunkId,
    /// Its length.
    pub len: u32,
}

/// Chunks per content part. A file with more chunks is stored as a content
/// of parts, each a content of at most this many chunks, so no content object
/// exceeds about 600 KiB whatever the file's size (a 1 TiB file's root
/// content lists 1024 parts).
pub const PART_CHUNKS: usize = 16384;

/// A piece of a large file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentPart {
    /// A content holding only chunks.
    pub id: ContentId,
    /// Its bytes.
    pub len: u64,
}

/// One file version: its chunks in order, or for a large file its parts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// The chunks (empty when `parts` is used).
    pub chunks: Vec<ChunkRef>,
    /// The parts, in order (empty for a file of at most [`PART_CHUNKS`] chunks).
    pub parts: Vec<ContentPart>,
}

impl Content {
    /// Encodes the content and names it.
    pub fn encode(&self) -> (ContentId, Vec<u8>) {
        let bytes = postcard::to_allocvec(self).expect("contents always encode");
        (ContentId::of(&bytes), bytes)
    }

    /// Decodes a content and checks it against its name.
    ///
    /// # Errors
    /// [`ProtocolError::Crypto`] when the bytes are not `id`'s,
    /// [`ProtocolError::Malformed`] when they do not decode or mix chunks and
    /// parts.
    pub fn decode(id: &ContentId, bytes: &[u8]) -> Result<Self, ProtocolError> {
        if ContentId::of(bytes) != *id {
            return Err(ProtocolError::Crypto("content does not match its id"));
        }
        let content: Content = decode_exact(bytes, "content")?;
        if (!content.chunks.is_empty() && !content.parts.is_empty())
            || content.chunks.len() > PART_CHUNKS
        {
            return Err(ProtocolError::Malformed("content layout"));
        }
        Ok(content)
    }

    /// Total bytes.
    pub fn len(&self) -> u64 {
        // Saturating: part lengths come from the network, and a sum that
        // wrapped would pass any size limit.
        self.chunks
            .iter()
            .map(|c| u64::from(c.len))
            .chain(self.parts.iter().map(|p| p.len))
            .fold(0u64, u64::saturating_add)
    }

    /// Whether it has no data.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.parts.is_empty()
    }
}

/// Builds a file's content a chunk at a time, splitting it into parts when
/// it grows past [`PART_CHUNKS`]; the same chunks always give the same id.
#[derive(Debug, Default)]
pub struct ContentBuilder {
    current: Vec<ChunkRef>,
    parts: Vec<ContentPart>,
}

impl ContentBuilder {
    /// Adds the next chunk; returns a finished part (id and bytes) to store.
    pub fn push(&mut self, chunk: ChunkRef) -> Option<(ContentId, Vec<u8>)> {
        self.current.push(chunk);
        (self.current.len() == PART_CHUNKS).then(|| self.cut())
    }

    fn cut(&mut self) -> (ContentId, Vec<u8>) {
        let part = Content {
            chunks: std::mem::take(&mut self.current),
            parts: Vec::new(),
        };
        let len = part.len();
        let (id, bytes) = part.encode();
        self.parts.push(ContentPart { id, len });
        (id, bytes)
    }

    /// The file's content, and a last part to store if one was cut.
    pub fn finish(mut self) -> (Content, Option<(ContentId, Vec<u8>)>) {
        if self.parts.is_empty() {
            return (
                Content {
                    chunks: self.current,
                    parts: Vec::new(),
                },
                None,
            );
        }
        let last = (!self.current.is_empty()).then(|| self.cut());
        (
            Content {
                chunks: Vec::new(),
                parts: self.parts,
            },
            last,
        )
    }
}

impl Tree {
    /// Sorts the entries, checks them and names the tree.
    ///
    /// # Errors
    /// As [`Tree::check`].
    pub fn encode(mut self) -> Result<(TreeId, Vec<u8>), ProtocolError> {
        self.entries.sort_by(|a, b| a.name.cmp(&b.name));
        self.check()?;
        let bytes = postcard::to_allocvec(&self).map_err(|_| ProtocolError::Malformed("tree"))?;
        Ok((TreeId::of(&bytes), bytes))
    }

    /// Decodes a tree, checks it against its name and validates it.
    ///
    /// # Errors
    /// [`ProtocolError::Crypto`] when the bytes are not `id`'s,
    /// [`ProtocolError::Malformed`] when they do not decode or break a rule.
    pub fn decode(id: &TreeId, bytes: &[u8]) -> Result<Self, ProtocolError> {
        if TreeId::of(bytes) != *id {
            return Err(ProtocolError::Crypto("tree does not match its id"));
        }
        let tree: Tree = decode_exact(bytes, "tree")?;
        tree.check()?;
        Ok(tree)
    }

    /// Decodes and validates a tree whose bytes were authenticated some
    /// other way (a sealed tree, opened under its vault): no id check.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] when the bytes do not decode or break a rule.
    pub fn decode_opened(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let tree: Tree = decode_exact(bytes, "tree")?;
        tree.check()?;
        Ok(tree)
    }

    /// Checks the rules listed in the module docs.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] naming the rule broken.
    pub fn check(&self) -> Result<(), ProtocolError> {
        for pair in self.entries.windows(2) {
            if pair[0].name >= pair[1].name {
                return Err(ProtocolError::Malformed(
                    "tree entries not sorted or duplicated",
                ));
            }
        }
        for entry in &self.entries {
            check_name(&entry.name)?;
            match &entry.kind {
                EntryKind::Symlink { target }
                    if target.is_empty() || target.len() > MAX_NAME || target.contains(&0) =>
                {
                    return Err(ProtocolError::Malformed("symlink target"));
                }
                EntryKind::Hardlink { target } => check_relative_path(target)?,
                EntryKind::File {
                    sparse: Some(extents),
                    size,
                    ..
                } => {
                    let mut end = 0u64;
                    for e in extents {
                        let next = e
                            .offset
                            .checked_add(e.len)
                            .ok_or(ProtocolError::Malformed("extent"))?;
                        if e.offset < end || next > *size {
                            return Err(ProtocolError::Malformed("sparse extents"));
                        }
                        end = next;
                    }
                }
                _ => {}
            }
            for (name, value) in &entry.xattrs {
                if name.is_empty()
                    || name.len() > MAX_NAME
                    || name.contains(&0)
                    || value.len() > MAX_XATTR_VALUE
                {
                    return Err(ProtocolError::Malformed("xattr"));
                }
            }
        }
        Ok(())
    }
}

/// Checks one path component from the network.
///
/// # Errors
/// [`ProtocolError::Malformed`] for empty, `.`, `..`, or names with `/` or NUL.
pub fn check_name(name: &[u8]) -> Result<(), ProtocolError> {
    if name.is_empty()
        || name == b"."
        || name == b".."
        || name.len() > 255
        || name.contains(&b'/')
        || name.contains(&0)
    {
        return Err(ProtocolError::Malformed("entry name"));
    }
    Ok(())
}

/// Checks a relative `/`-separated path of valid names.
///
/// # Errors
/// [`ProtocolError::Malformed`] for an empty or absolute path or a bad component.
pub fn check_relative_path(path: &[u8]) -> Result<(), ProtocolError> {
    if path.is_empty() || path.len() > MAX_NAME {
        return Err(ProtocolError::Malformed("relative path"));
    }
    path.split(|b| *b == b'/').try_for_each(check_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_part_lengths_cannot_wrap_the_total() {
        let part = |len| ContentPart {
            id: ContentId([1; 32]),
            len,
        };
        let content = Content {
            chunks: Vec::new(),
            parts: vec![part(u64::MAX), part(2)],
        };
        assert_eq!(content.len(), u64::MAX);
    }

    fn entry(name: &[u8], kind: EntryKind) -> Entry {
        Entry {
            name: name.to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 1,
            xattrs: vec![],
        }
    }

    #[test]
    fn trees_round_trip_and_are_named_by_their_bytes() {
        let tree = Tree {
            entries: vec![
                entry(b"b", EntryKind::Fifo),
                entry(
                    b"a\xff",
                    EntryKind::Symlink {
                        target: b"../x".to_vec(),
                    },
                ),
                entry(
                    b"c",
                    EntryKind::Hardlink {
                        target: b"dir/a".to_vec(),
                    },
                ),
            ],
        };
        let (id, bytes) = tree.clone().encode().unwrap();
        let back = Tree::decode(&id, &bytes).unwrap();
        assert_eq!(back.entries[0].name, b"a\xff");
        assert!(Tree::decode(&TreeId::of(b"other"), &bytes).is_err());
    }

    #[test]
    fn hostile_trees_are_rejected() {
        for name in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            let tree = Tree {
                entries: vec![entry(name, EntryKind::Fifo)],
            };
            assert!(tree.check().is_err(), "{name:?}");
        }
        let dup = Tree {
            entries: vec![entry(b"a", EntryKind::Fifo), entry(b"a", EntryKind::Fifo)],
        };
        assert!(dup.check().is_err());
        for target in [&b"/etc/passwd"[..], b"../x", b"a//b", b""] {
            let t = Tree {
                entries: vec![entry(
                    b"h",
                    EntryKind::Hardlink {
                        target: target.to_vec(),
                    },
                )],
            };
            assert!(t.check().is_err(), "{target:?}");
        }
        let sparse = EntryKind::File {
            size: 10,
            content: ContentId::of(b""),
            sparse: Some(vec![Extent { offset: 5, len: 10 }]),
        };
        assert!(Tree {
            entries: vec![entry(b"s", sparse)]
        }
        .check()
        .is_err());
    }

    #[test]
    fn contents_are_checked_against_their_id() {
        let content = Content {
            chunks: vec![ChunkRef {
                id: ChunkId::of(b"x"),
                len: 1,
            }],
            parts: vec![],
        };
        let (id, bytes) = content.encode();
        assert_eq!(Content::decode(&id, &bytes).unwrap(), content);
        assert!(Content::decode(&ContentId::of(b"y"), &bytes).is_err());
        assert_eq!(content.len(), 1);
    }

    #[test]
    fn large_contents_are_split_into_parts_deterministically() {
        let chunk = |i: usize| ChunkRef {
            id: ChunkId::of(&i.to_le_bytes()),
            len: 10,
        };
        let build = |n: usize| {
            let mut builder = ContentBuilder::default();
            let mut parts = Vec::new();
            for i in 0..n {
                parts.extend(builder.push(chunk(i)));
            }
            let (root, last) = builder.finish();
            parts.extend(last);
            (root, parts)
        };
        let (small, parts) = build(3);
        assert!(parts.is_empty() && small.chunks.len() == 3);
        let (big, parts) = build(PART_CHUNKS * 2 + 5);
        assert_eq!(big.parts.len(), 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(big.len(), (PART_CHUNKS as u64 * 2 + 5) * 10);
        assert_eq!(build(PART_CHUNKS * 2 + 5).0.encode().0, big.encode().0);
        let (exact, parts) = build(PART_CHUNKS);
        assert_eq!((exact.parts.len(), parts.len()), (1, 1));
        let mixed = Content {
            chunks: vec![chunk(1)],
            parts: big.parts.clone(),
        };
        let (id, bytes) = mixed.encode();
        assert!(Content::decode(&id, &bytes).is_err());
    }
}
