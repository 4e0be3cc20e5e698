//! The files cache, `STATE/cache.sqlite`: what each path held at the last
//! committed backup of a set, so unchanged files are not read again (as
//! restic and borg do), changed ones find their previous chunk list, whose
//! chunks are the bases for rsync deltas, and changed directories find their
//! previous tree, the base for a patch.
//!
//! A file counts as unchanged when size, mtime, ctime and inode all match.
//! Entries are written only after the relay committed the snapshot that
//! holds them, so a cached content or tree is known to exist on the relay.
//!
//! A backup reads what it needs to decide about every path in one query at
//! its start ([`FilesCache::load`]): one SQLite lookup per file cost as much
//! as the `lstat` it saves. Chunk lists and trees, needed only for what
//! changed, are read one at a time. At the end only what changed is written
//! ([`FilesCache::save`]), so a backup with no change writes nothing.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use ferry_protocol::ids::{ContentId, TreeId};
use ferry_protocol::sealed::StorageId;
use ferry_protocol::tree::{Content, Extent};
use rusqlite::{params, Connection, OptionalExtension};

/// What the cache knows about one path, enough to tell whether it changed.
#[derive(Debug, Clone)]
pub struct Known {
    /// Size in bytes.
    pub size: u64,
    /// mtime in ns.
    pub mtime_ns: i64,
    /// ctime in ns.
    pub ctime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// The content stored for it.
    pub content: ContentId,
    /// Its data regions, when sparse.
    pub sparse: Option<Vec<Extent>>,
}

/// A file as the next backup's cache will know it.
#[derive(Debug, Clone)]
pub struct CachedFile {
    /// What tells a change.
    pub known: Known,
    /// Its chunk list.
    pub chunks: Content,
}

/// One set's entries as a backup found them at its start.
#[derive(Debug, Default)]
pub struct SetCache {
    /// Every cached file by path, and whether this backup saw it again.
    pub files: HashMap<Vec<u8>, (Known, bool)>,
    /// Every cached directory's tree id by path.
    pub trees: HashMap<Vec<u8>, TreeId>,
    /// Files known from another set's cache (the set's own holds none: its
    /// first backup, over files another set backed up), and that set.
    pub borrowed: HashMap<Vec<u8>, String>,
}

impl SetCache {
    /// The files known from another set's cache that this backup saw
    /// unchanged, with that set: they become this set's own.
    pub fn adopted(&self) -> Vec<(Vec<u8>, String)> {
        self.files
            .iter()
            .filter(|(_, (_, seen))| *seen)
            .filter_map(|(path, _)| Some((path.clone(), self.borrowed.get(path)?.clone())))
            .collect()
    }

    /// The files this backup did not see again (gone, or no longer backed
    /// up), taken out.
    pub fn unseen_files(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.files)
            .into_iter()
            .filter(|(_, (_, seen))| !seen)
            .map(|(path, _)| path)
            .collect()
    }
}

/// What a backup changes in its set's cache.
#[derive(Debug, Default)]
pub struct SetUpdate {
    /// Files new or changed since the cache's snapshot.
    pub files: Vec<(Vec<u8>, CachedFile)>,
    /// Files gone (or no longer backed up).
    pub files_gone: Vec<Vec<u8>>,
    /// Directories whose tree is new or changed: path, id, encoded tree.
    pub trees: Vec<(Vec<u8>, TreeId, Vec<u8>)>,
    /// Directories gone.
    pub trees_gone: Vec<Vec<u8>>,
    /// Files known from another set's cache, seen unchanged: copied from
    /// that set (path, set).
    pub adopted: Vec<(Vec<u8>, String)>,
}

/// A sealed client's chunk as the files cache keeps it: what the next
/// version of its file needs to reuse it or patch against it without
/// asking the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CachedChunk {
    /// Its data object (a chunk or a patch).
    pub data: StorageId,
    /// Its signature object.
    pub signature: StorageId,
    /// Its keyed id.
    pub keyed: [u8; 32],
    /// Its length.
    pub len: u32,
    /// Patches between `data` and a whole chunk.
    pub depth: u8,
}

/// A sealed client's file as the files cache keeps it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SealedFile {
    /// Its chunks.
    pub chunks: Vec<CachedChunk>,
    /// Their signatures in full, by signature object (none for a large
    /// file: those are fetched from the relay when needed).
    pub signatures: Vec<(StorageId, serde_bytes::ByteBuf)>,
}

/// The cache database.
#[derive(Debug)]
pub struct FilesCache {
    conn: Connection,
}

impl FilesCache {
    /// Opens (creating) the cache at `path`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn open(path: &Path) -> Result<Self> {
        let conn =
            Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // It lists every path backed up; SQLite gives -wal and -shm this mode.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .with_context(|| format!("cannot make {} private", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS files (
                set_name TEXT NOT NULL,
                path BLOB NOT NULL,
                size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL,
                ctime_ns INTEGER NOT NULL,
                inode INTEGER NOT NULL,
                content BLOB NOT NULL,
                chunks BLOB NOT NULL,
                sparse BLOB,
                PRIMARY KEY (set_name, path)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS trees (
                set_name TEXT NOT NULL,
                path BLOB NOT NULL,
                id BLOB NOT NULL,
                bytes BLOB NOT NULL,
                PRIMARY KEY (set_name, path)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS sealed_trees (
                set_name TEXT NOT NULL,
                id BLOB NOT NULL,
                PRIMARY KEY (set_name, id)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS cleared_sets (set_name TEXT PRIMARY KEY) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS sealed_entries (
                set_name TEXT NOT NULL,
                path BLOB NOT NULL,
                entries BLOB NOT NULL,
                PRIMARY KEY (set_name, path)
            ) WITHOUT ROWID;",
        )?;
        Ok(FilesCache { conn })
    }

    /// Everything needed to decide about each path of `set`: one query per
    /// table. A damaged row is left out (its file is simply read again).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn load(&self, set: &str) -> Result<SetCache> {
        let mut files = self.files_where("set_name = ?1", set, |_| {})?;
        let mut borrowed = HashMap::new();
        let cleared: bool = self
            .conn
            .prepare_cached("SELECT 1 FROM cleared_sets WHERE set_name = ?1")?
            .exists([set])?;
        if files.is_empty() && !cleared {
            // A set's first backup over files another set backed up: known
            // by their size, times and inode, not read again. Should the
            // relay no longer hold what they name, the commit says so, this
            // set's cache is cleared, and the backup reads every file.
            files = self.files_where("set_name != ?1", set, |(path, from)| {
                borrowed.insert(path, from);
            })?;
        }
        let mut trees = HashMap::new();
        let mut select = self
            .conn
            .prepare("SELECT path, id FROM trees WHERE set_name = ?1")?;
        let mut rows = select.query([set])?;
        while let Some(r) = rows.next()? {
            if let Ok(id) = TreeId::from_slice(&r.get::<_, Vec<u8>>(1)?) {
                trees.insert(r.get(0)?, id);
            }
        }
        Ok(SetCache {
            files,
            trees,
            borrowed,
        })
    }

    /// The cached files of the sets `condition` (on `set`) picks, a
    /// damaged row left out; `each` sees each path and its set.
    fn files_where(
        &self,
        condition: &str,
        set: &str,
        mut each: impl FnMut((Vec<u8>, String)),
    ) -> Result<HashMap<Vec<u8>, (Known, bool)>> {
        let mut files = HashMap::new();
        let mut select = self.conn.prepare(&format!(
            "SELECT path, size, mtime_ns, ctime_ns, inode, content, sparse, set_name FROM files WHERE {condition}"
        ))?;
        let mut rows = select.query([set])?;
        while let Some(r) = rows.next()? {
            let Ok(content) = ContentId::from_slice(&r.get::<_, Vec<u8>>(5)?) else {
                continue;
            };
            let sparse = match r.get::<_, Option<Vec<u8>>>(6)? {
                Some(bytes) => match postcard::from_bytes(&bytes) {
                    Ok(extents) => Some(extents),
                    Err(_) => continue,
                },
                None => None,
            };
            let known = Known {
                size: r.get::<_, i64>(1)? as u64,
                mtime_ns: r.get(2)?,
                ctime_ns: r.get(3)?,
                inode: r.get::<_, i64>(4)? as u64,
                content,
                sparse,
            };
            let path: Vec<u8> = r.get(0)?;
            each((path.clone(), r.get(7)?));
            files.insert(path, (known, false));
        }
        Ok(files)
    }

    /// The chunk list cached for `path` in `set`, when it is `content`'s.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn chunks(&self, set: &str, path: &[u8], content: &ContentId) -> Result<Option<Content>> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT chunks FROM files WHERE set_name = ?1 AND path = ?2")?
            .query_row(params![set, path], |r| r.get(0))
            .optional()?;
        Ok(bytes.and_then(|b| Content::decode(content, &b).ok()))
    }

    /// The encoded tree cached for directory `path` in `set`, when it is `id`'s.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn tree(&self, set: &str, path: &[u8], id: &TreeId) -> Result<Option<Vec<u8>>> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT bytes FROM trees WHERE set_name = ?1 AND path = ?2")?
            .query_row(params![set, path], |r| r.get(0))
            .optional()?;
        Ok(bytes.filter(|b| TreeId::of(b) == *id))
    }

    /// Applies a backup's changes to `set`, in one transaction.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn save(&mut self, set: &str, update: &SetUpdate) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM cleared_sets WHERE set_name = ?1", [set])?;
        {
            let mut adopt = tx.prepare_cached(
                "INSERT OR IGNORE INTO files (set_name, path, size, mtime_ns, ctime_ns, inode, content, chunks, sparse)
                 SELECT ?1, path, size, mtime_ns, ctime_ns, inode, content, chunks, sparse
                 FROM files WHERE set_name = ?2 AND path = ?3",
            )?;
            let mut adopt_sealed = tx.prepare_cached(
                "INSERT OR IGNORE INTO sealed_entries (set_name, path, entries)
                 SELECT ?1, path, entries FROM sealed_entries WHERE set_name = ?2 AND path = ?3",
            )?;
            for (path, from) in &update.adopted {
                adopt.execute(params![set, from, path])?;
                adopt_sealed.execute(params![set, from, path])?;
            }
            let mut delete =
                tx.prepare_cached("DELETE FROM files WHERE set_name = ?1 AND path = ?2")?;
            for path in &update.files_gone {
                delete.execute(params![set, path])?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO files (set_name, path, size, mtime_ns, ctime_ns, inode, content, chunks, sparse)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for (path, f) in &update.files {
                let k = &f.known;
                let sparse = k.sparse.as_ref().map(postcard::to_allocvec).transpose()?;
                insert.execute(params![
                    set,
                    path,
                    k.size as i64,
                    k.mtime_ns,
                    k.ctime_ns,
                    k.inode as i64,
                    &k.content.0[..],
                    f.chunks.encode().1,
                    sparse
                ])?;
            }
            let mut delete =
                tx.prepare_cached("DELETE FROM trees WHERE set_name = ?1 AND path = ?2")?;
            for path in &update.trees_gone {
                delete.execute(params![set, path])?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO trees (set_name, path, id, bytes) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (path, id, bytes) in &update.trees {
                insert.execute(params![set, path, &id.0[..], bytes])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// What a sealed backup kept of `path` in `set`: its chunks (the bases
    /// of its next version's patches) and, for a file not too large, their
    /// signatures (so a patch needs no round trip to the relay).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn sealed_file(&self, set: &str, path: &[u8]) -> Result<Option<SealedFile>> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT entries FROM sealed_entries WHERE set_name = ?1 AND path = ?2")?
            .query_row(params![set, path], |r| r.get(0))
            .optional()?;
        Ok(bytes.and_then(|b| postcard::from_bytes(&b).ok()))
    }

    /// Keeps what a sealed backup read of each file.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn save_sealed_files(&mut self, set: &str, files: &[(Vec<u8>, SealedFile)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO sealed_entries (set_name, path, entries) VALUES (?1, ?2, ?3)",
            )?;
            for (path, file) in files {
                insert.execute(params![set, path, postcard::to_allocvec(file)?])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The sealed trees of `set`'s last committed snapshot: the relay
    /// holds them.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn sealed_trees(&self, set: &str) -> Result<std::collections::HashSet<StorageId>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM sealed_trees WHERE set_name = ?1")?;
        let rows = stmt.query_map([set], |r| r.get::<_, Vec<u8>>(0))?;
        let mut ids = std::collections::HashSet::new();
        for row in rows {
            if let Ok(id) = <[u8; 32]>::try_from(row?.as_slice()) {
                ids.insert(StorageId(id));
            }
        }
        Ok(ids)
    }

    /// Keeps `ids` as the sealed trees of `set`'s last committed snapshot.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn save_sealed_trees(&mut self, set: &str, ids: &[StorageId]) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM sealed_trees WHERE set_name = ?1", [set])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO sealed_trees (set_name, id) VALUES (?1, ?2)",
            )?;
            for id in ids {
                insert.execute(params![set, &id.0[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets everything cached for `set`: its next backup reads every
    /// file (borrowing nothing from another set's cache).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn clear(&mut self, set: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM files WHERE set_name = ?1", [set])?;
        tx.execute("DELETE FROM sealed_entries WHERE set_name = ?1", [set])?;
        tx.execute("DELETE FROM sealed_trees WHERE set_name = ?1", [set])?;
        tx.execute("DELETE FROM trees WHERE set_name = ?1", [set])?;
        // Its next backup reads every file, not another set's cache's.
        tx.execute(
            "INSERT OR IGNORE INTO cleared_sets (set_name) VALUES (?1)",
            [set],
        )?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_protocol::ids::ChunkId;
    use ferry_protocol::tree::{ChunkRef, Tree};

    fn file(size: u64) -> CachedFile {
        let chunks = Content {
            chunks: vec![ChunkRef {
                id: ChunkId::of(&size.to_le_bytes()),
                len: size as u32,
            }],
            parts: Vec::new(),
        };
        CachedFile {
            known: Known {
                size,
                mtime_ns: 1,
                ctime_ns: 2,
                inode: 3,
                content: chunks.encode().0,
                sparse: None,
            },
            chunks,
        }
    }

    #[test]
    fn saves_only_changes_and_loads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = FilesCache::open(&dir.path().join("c.sqlite")).unwrap();
        let (tree, bytes) = Tree::default().encode().unwrap();
        let first = SetUpdate {
            files: vec![(b"/a".to_vec(), file(10)), (b"/b".to_vec(), file(20))],
            trees: vec![(b"/".to_vec(), tree, bytes.clone())],
            ..SetUpdate::default()
        };
        cache.save("s", &first).unwrap();
        let second = SetUpdate {
            files: vec![(b"/b".to_vec(), file(30))],
            files_gone: vec![b"/a".to_vec()],
            ..SetUpdate::default()
        };
        cache.save("s", &second).unwrap();
        let loaded = cache.load("s").unwrap();
        assert_eq!(loaded.files.len(), 1);
        let (b, seen) = &loaded.files[&b"/b".to_vec()];
        assert!(!seen);
        assert_eq!(b.size, 30);
        assert_eq!(
            cache.chunks("s", b"/b", &b.content).unwrap(),
            Some(file(30).chunks)
        );
        assert_eq!(
            cache.chunks("s", b"/b", &file(20).known.content).unwrap(),
            None
        );
        assert_eq!(loaded.trees[&b"/".to_vec()], tree);
        assert_eq!(cache.tree("s", b"/", &tree).unwrap(), Some(bytes));
        // A set with nothing cached knows another set's files.
        assert_eq!(cache.load("other").unwrap().borrowed[&b"/b".to_vec()], "s");
        cache.clear("s").unwrap();
        let cleared = cache.load("s").unwrap();
        assert!(cleared.files.is_empty() && cleared.trees.is_empty());
    }

    #[test]
    fn a_new_set_borrows_another_sets_files_and_keeps_those_it_saw() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = FilesCache::open(&dir.path().join("c.sqlite")).unwrap();
        let first = SetUpdate {
            files: vec![(b"/a".to_vec(), file(10)), (b"/b".to_vec(), file(20))],
            ..SetUpdate::default()
        };
        cache.save("docs", &first).unwrap();
        let mut borrowed = cache.load("copy").unwrap();
        assert_eq!(borrowed.files.len(), 2);
        // The backup saw /a unchanged, and not /b.
        borrowed.files.get_mut(b"/a".as_slice()).unwrap().1 = true;
        let update = SetUpdate {
            adopted: borrowed.adopted(),
            files_gone: borrowed.unseen_files(),
            ..SetUpdate::default()
        };
        cache.save("copy", &update).unwrap();
        let own = cache.load("copy").unwrap();
        assert!(own.borrowed.is_empty(), "its own now");
        assert_eq!(own.files.keys().collect::<Vec<_>>(), [&b"/a".to_vec()]);
        let a = &own.files[&b"/a".to_vec()].0;
        assert_eq!(
            cache.chunks("copy", b"/a", &a.content).unwrap(),
            Some(file(10).chunks)
        );
        // Cleared (the relay lacked what it named): nothing borrowed again.
        cache.clear("copy").unwrap();
        assert!(cache.load("copy").unwrap().files.is_empty());
        assert!(
            cache.load("third").unwrap().files.len() == 2,
            "others still borrow"
        );
    }
}
