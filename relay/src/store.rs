//! The chunk store: append-only pack files under `DATA/store/packs/`.
//!
//! Blobs (chunks, their signatures, trees, contents) are appended to the
//! current pack, which rolls over at [`PACK_TARGET`] bytes; their index lives
//! in the catalog, not in the packs, so a terabyte of 64 KiB chunks is a few
//! thousand files rather than millions. Write order, as restic does: append,
//! then [`BlobStore::sync`] (fsync the pack, and the directory when a pack was
//! created), and only then do catalog rows name the blobs. A relay killed
//! mid-append leaves a tail no row names; [`PackStore::open`] cuts every pack
//! back to the end of its last committed blob, and deletes packs no row names
//! at all (left by an interrupted garbage collection).
//!
//! [`BlobStore`] is the seam for other backends (an S3-compatible store).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Size at which a pack is closed and a new one started.
pub const PACK_TARGET: u64 = 64 * 1024 * 1024;

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Pack number.
    pub pack: u32,
    /// Offset in the pack.
    pub offset: u64,
    /// Stored length.
    pub len: u32,
}

/// Storage for immutable blobs.
pub trait BlobStore: Send {
    /// Appends a blob; it is durable only after [`BlobStore::sync`].
    ///
    /// # Errors
    /// I/O errors (a full disk among them).
    fn append(&mut self, data: &[u8]) -> io::Result<BlobLocation>;

    /// Makes every appended blob durable.
    ///
    /// # Errors
    /// I/O errors; an fsync error must fail the backup, never be retried.
    fn sync(&mut self) -> io::Result<()>;

    /// Counts the failures that may have lost appended, not yet durable
    /// blobs (a failed fsync). A writer that appended in one epoch and
    /// syncs in another must not index what it appended: a later fsync
    /// can succeed after the kernel dropped the pages an earlier one failed on.
    fn epoch(&self) -> u64;

    /// Reads a blob back.
    ///
    /// # Errors
    /// I/O errors, or a location past the end of its pack.
    fn read(&self, at: &BlobLocation) -> io::Result<Vec<u8>>;
}

/// Pack files in one directory.
#[derive(Debug)]
pub struct PackStore {
    dir: PathBuf,
    /// The pack being appended to, and its length: the end of the last
    /// blob written whole. Writes are positioned at that length (never
    /// `O_APPEND`), so a failed write cannot shift the blobs after it.
    current: Option<(u32, File, u64)>,
    next_pack: u32,
    unsynced: bool,
    new_pack: bool,
    epoch: u64,
    /// A test hook: the file `FERRY_FAIL_FSYNC` named at open. While it
    /// exists, the next fsync fails with EIO (and removes it).
    fail_fsync: Option<PathBuf>,
}

fn pack_path(dir: &Path, pack: u32) -> PathBuf {
    dir.join(format!("{pack:08}.pack"))
}

/// The number of a pack file's name (`00000042.pack`), if it is one.
pub fn pack_number(name: &std::ffi::OsStr) -> Option<u32> {
    name.to_str()
        .and_then(|n| n.strip_suffix(".pack"))
        .and_then(|n| n.parse::<u32>().ok())
}

impl PackStore {
    /// Opens the store, cutting each pack back to `committed_end[pack]` (the
    /// end of its last blob named in the catalog; absent means none).
    ///
    /// # Errors
    /// I/O errors.
    pub fn open(dir: &Path, committed_end: &HashMap<u32, u64>) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut last = 0u32;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let Some(number) = pack_number(&entry.file_name()) else {
                continue;
            };
            last = last.max(number);
            let Some(&end) = committed_end.get(&number) else {
                tracing::warn!("pack {number:08}: no catalog row names it; deleting it");
                fs::remove_file(entry.path())?;
                continue;
            };
            let file = OpenOptions::new().write(true).open(entry.path())?;
            let len = file.metadata()?.len();
            if len > end {
                tracing::warn!(
                    "pack {number:08}: cutting {} bytes no catalog row names (torn tail of an interrupted write)",
                    len - end
                );
                file.set_len(end)?;
                file.sync_all()?;
            }
        }
        Ok(PackStore {
            dir: dir.to_path_buf(),
            current: None,
            next_pack: last + 1,
            unsynced: false,
            new_pack: false,
            epoch: 0,
            fail_fsync: std::env::var_os("FERRY_FAIL_FSYNC").map(PathBuf::from),
        })
    }

    /// After a failed fsync nothing unsynced in the current pack can be
    /// trusted: the pack is sealed as it is (its unindexed tail is cut at the
    /// next start) and a new one is started by the next append.
    fn poison(&mut self) {
        if let Some((pack, _, _)) = self.current.take() {
            tracing::error!(
                "pack {pack:08}: an fsync failed; sealing it, nothing unsynced in it is indexed"
            );
        }
        self.epoch += 1;
        self.unsynced = false;
    }

    /// Makes the next fsync fail with EIO while `trigger` exists (as
    /// `FERRY_FAIL_FSYNC` does for a running relay).
    #[cfg(test)]
    pub fn fail_fsync_while(&mut self, trigger: PathBuf) {
        self.fail_fsync = Some(trigger);
    }

    /// Packs numbered below this are sealed: nothing is appended to them
    /// any more, so the garbage collector may rewrite or delete them.
    pub fn sealed_below(&self) -> u32 {
        self.current
            .as_ref()
            .map_or(self.next_pack, |(pack, _, _)| *pack)
    }

    /// Every pack on disk with its length, in number order.
    ///
    /// # Errors
    /// I/O errors.
    pub fn packs(&self) -> io::Result<Vec<(u32, u64)>> {
        let mut packs = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if let Some(number) = pack_number(&entry.file_name()) {
                packs.push((number, entry.metadata()?.len()));
            }
        }
        packs.sort_unstable();
        Ok(packs)
    }

    /// Deletes a sealed pack and makes the deletion durable. The caller has
    /// made sure no catalog row names it any more.
    ///
    /// # Errors
    /// I/O errors, or `pack` is not sealed.
    pub fn remove(&mut self, pack: u32) -> io::Result<()> {
        if pack >= self.sealed_below() {
            return Err(io::Error::other(format!(
                "pack {pack:08} is still being written"
            )));
        }
        fs::remove_file(pack_path(&self.dir, pack))?;
        File::open(&self.dir)?.sync_all()
    }
}

impl BlobStore for PackStore {
    fn append(&mut self, data: &[u8]) -> io::Result<BlobLocation> {
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("blob too large"))?;
        if self
            .current
            .as_ref()
            .is_none_or(|(_, _, size)| *size >= PACK_TARGET)
        {
            if let Some((_, file, _)) = &self.current {
                if let Err(e) = file.sync_all() {
                    self.poison();
                    return Err(e);
                }
                self.current = None;
                self.unsynced = false;
            }
            let pack = self.next_pack;
            self.next_pack += 1;
            let file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .read(true)
                .open(pack_path(&self.dir, pack))?;
            self.current = Some((pack, file, 0));
            self.new_pack = true;
        }
        let (pack, file, size) = self.current.as_mut().expect("opened above");
        let offset = *size;
        if let Err(e) = file.write_all_at(data, offset) {
            // Cut what part of the blob was written, so the pack ends with
            // its last whole blob; a failed cut only leaves an unnamed tail.
            let _ = file.set_len(offset);
            return Err(e);
        }
        *size += u64::from(len);
        self.unsynced = true;
        Ok(BlobLocation {
            pack: *pack,
            offset,
            len,
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            if let Some((_, file, _)) = &self.current {
                if let Err(e) =
                    fail_point(self.fail_fsync.as_deref()).and_then(|()| file.sync_data())
                {
                    self.poison();
                    return Err(e);
                }
            }
            self.unsynced = false;
        }
        if self.new_pack {
            File::open(&self.dir)?.sync_all()?;
            self.new_pack = false;
        }
        Ok(())
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn read(&self, at: &BlobLocation) -> io::Result<Vec<u8>> {
        let file = File::open(pack_path(&self.dir, at.pack))?;
        let mut out = vec![0u8; at.len as usize];
        file.read_exact_at(&mut out, at.offset)?;
        Ok(out)
    }
}

/// Whether an I/O error means the disk (or the quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// An I/O error of the store as one clear line: a full disk says so first,
/// since that is what the user and the operator must act on.
pub fn storage_error(e: io::Error, doing: &str) -> anyhow::Error {
    if is_disk_full(&e) {
        anyhow::anyhow!("no space left on the relay's disk ({doing}: {e})")
    } else {
        anyhow::anyhow!("the relay's disk failed ({doing}: {e})")
    }
}

/// A test hook: when `trigger` names an existing file, the operation fails
/// with EIO once and the file is removed (so a test can inject one fsync
/// error into a running relay).
fn fail_point(trigger: Option<&Path>) -> io::Result<()> {
    let Some(path) = trigger else {
        return Ok(());
    };
    if fs::remove_file(path).is_ok() {
        tracing::warn!("{}: injecting an I/O error", path.display());
        return Err(io::Error::from_raw_os_error(5));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_and_torn_tail_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = PackStore::open(dir.path(), &HashMap::new()).unwrap();
        let a = store.append(b"hello").unwrap();
        let b = store.append(b"world!").unwrap();
        store.sync().unwrap();
        assert_eq!(store.read(&a).unwrap(), b"hello");
        assert_eq!(store.read(&b).unwrap(), b"world!");
        drop(store);
        // A pack no row names at all (an interrupted collection) goes.
        let orphan = dir.path().join("00000009.pack");
        fs::write(&orphan, b"orphan").unwrap();
        // Only `a` was committed to the catalog: the rest is a torn tail.
        let ends = HashMap::from([(a.pack, a.offset + u64::from(a.len))]);
        let mut store = PackStore::open(dir.path(), &ends).unwrap();
        assert_eq!(store.read(&a).unwrap(), b"hello");
        assert!(store.read(&b).is_err());
        assert!(!orphan.exists());
        assert_eq!(store.packs().unwrap(), vec![(a.pack, 5)]);
        assert!(
            store.remove(a.pack + 1).is_err(),
            "the next pack is not sealed"
        );
        let c = store.append(b"next").unwrap();
        assert_ne!(c.pack, a.pack, "a reopened store starts a new pack");
        store.sync().unwrap();
        assert_eq!(store.read(&c).unwrap(), b"next");
    }

    #[test]
    fn a_failed_fsync_seals_the_pack_and_moves_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let trigger = dir.path().join("trigger");
        let mut store = PackStore::open(&dir.path().join("packs"), &HashMap::new()).unwrap();
        let a = store.append(b"before").unwrap();
        store.sync().unwrap();
        let epoch = store.epoch();
        store.append(b"lost?").unwrap();
        fs::write(&trigger, b"").unwrap();
        store.fail_fsync_while(trigger.clone());
        assert!(store.sync().is_err());
        assert!(!trigger.exists());
        assert_eq!(
            store.epoch(),
            epoch + 1,
            "writers of unsynced blobs can tell"
        );
        let b = store.append(b"after").unwrap();
        assert_ne!(b.pack, a.pack, "the pack that failed is sealed");
        store.sync().unwrap();
        assert_eq!(store.read(&a).unwrap(), b"before");
        assert_eq!(store.read(&b).unwrap(), b"after");
    }
}
