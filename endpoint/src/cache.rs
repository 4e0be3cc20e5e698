//! The files cache, `STATE/cache.sqlite`: what each path held at the last
//! committed backup of a set, so unchanged files are not read again (as
//! restic and borg do) and changed ones find their previous chunk list,
//! whose chunks are the bases for rsync deltas.
//!
//! A file counts as unchanged when size, mtime, ctime and inode all match.
//! Entries are written only after the relay committed the snapshot that
//! holds them, so a cached content is known to exist on the relay.

use std::path::Path;

use anyhow::{Context, Result};
use ferry_protocol::ids::ContentId;
use ferry_protocol::tree::{Content, Extent};
use rusqlite::{params, Connection, OptionalExtension};

/// What the cache knows about one path.
#[derive(Debug, Clone)]
pub struct CachedFile {
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
    /// Its chunk list.
    pub chunks: Content,
    /// Its data regions, when sparse.
    pub sparse: Option<Vec<Extent>>,
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
            ) WITHOUT ROWID;",
        )?;
        Ok(FilesCache { conn })
    }

    /// The cached state of `path` in `set`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn get(&self, set: &str, path: &[u8]) -> Result<Option<CachedFile>> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT size, mtime_ns, ctime_ns, inode, content, chunks, sparse FROM files WHERE set_name = ?1 AND path = ?2",
            )?
            .query_row(params![set, path], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                    r.get::<_, Option<Vec<u8>>>(6)?,
                ))
            })
            .optional()?;
        let Some((size, mtime_ns, ctime_ns, inode, content, chunks, sparse)) = row else {
            return Ok(None);
        };
        let content = ContentId::from_slice(&content)?;
        // A damaged row is a miss, not an error: the file is simply read again.
        let Ok(chunks) = Content::decode(&content, &chunks) else {
            return Ok(None);
        };
        let sparse = match sparse {
            Some(bytes) => postcard::from_bytes(&bytes).ok(),
            None => None,
        };
        Ok(Some(CachedFile {
            size: size as u64,
            mtime_ns,
            ctime_ns,
            inode: inode as u64,
            content,
            chunks,
            sparse,
        }))
    }

    /// Replaces `set`'s entries with `files`, in one transaction.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn replace_set(&mut self, set: &str, files: &[(Vec<u8>, CachedFile)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM files WHERE set_name = ?1", [set])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO files (set_name, path, size, mtime_ns, ctime_ns, inode, content, chunks, sparse)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for (path, f) in files {
                let sparse = f.sparse.as_ref().map(postcard::to_allocvec).transpose()?;
                insert.execute(params![
                    set,
                    path,
                    f.size as i64,
                    f.mtime_ns,
                    f.ctime_ns,
                    f.inode as i64,
                    &f.content.0[..],
                    f.chunks.encode().1,
                    sparse
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
