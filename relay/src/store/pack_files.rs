//! [`PackStore`]: pack files in one directory (`DATA/store/packs/`).
//!
//! A relay killed mid-append leaves a tail no row names; [`PackStore::open`]
//! cuts every pack back to the end of its last committed blob, and moves
//! packs no row names at all (left by an interrupted garbage collection or
//! upload) to `store/quarantine/`. Nothing at start deletes stored bytes:
//! a catalog restored from an older copy, or emptied, must never cost the
//! packs it does not know — a cut tail is kept there too.
//! [`PackReader`] only reads, so `verify` can run beside a relay that writes.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{not_sealed, too_large, BlobLocation, BlobReader, BlobStore, PackId, PACK_TARGET};

/// Reads pack files in one directory; never writes. Keeps up to
/// [`OPEN_PACKS`] of them open, so reading many small blobs costs no
/// `open` each.
#[derive(Debug)]
pub struct PackReader {
    dir: PathBuf,
    open: Mutex<HashMap<PackId, Arc<File>>>,
}

/// Packs a reader keeps open at most.
const OPEN_PACKS: usize = 64;

impl PackReader {
    /// Reads the packs in `dir`.
    pub fn new(dir: &Path) -> Self {
        PackReader {
            dir: dir.to_path_buf(),
            open: Mutex::default(),
        }
    }

    /// The file of `pack`.
    pub fn path(&self, pack: PackId) -> PathBuf {
        pack_path(&self.dir, pack)
    }

    fn file(&self, pack: PackId) -> io::Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = open.get(&pack) {
            return Ok(Arc::clone(file));
        }
        if open.len() >= OPEN_PACKS {
            open.clear();
        }
        let file = Arc::new(File::open(self.path(pack))?);
        open.insert(pack, Arc::clone(&file));
        Ok(file)
    }

    /// Closes `pack` (before it is deleted, so its space is given back).
    fn forget(&self, pack: PackId) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pack);
    }
}

impl BlobReader for PackReader {
    fn read_into(
        &self,
        pack: PackId,
        offset: u64,
        len: u64,
        buffer: &mut Vec<u8>,
    ) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| too_large())?;
        // A reused buffer of the same size is not zeroed again.
        buffer.resize(len, 0);
        self.file(pack)?.read_exact_at(buffer, offset)
    }

    fn packs(&self) -> io::Result<Vec<(PackId, u64)>> {
        let listing = match fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut packs = Vec::new();
        for entry in listing {
            let entry = entry?;
            if let Some(number) = pack_number(&entry.file_name()) {
                packs.push((number, entry.metadata()?.len()));
            }
        }
        packs.sort_unstable();
        Ok(packs)
    }

    fn repair_in_place(&self, pack: PackId, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .open(pack_path(&self.dir, pack))?;
        let end = offset.saturating_add(bytes.len() as u64);
        if end > file.metadata()?.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a repair past the end of its pack",
            ));
        }
        file.write_all_at(bytes, offset)?;
        file.sync_data()
    }
}

/// Pack files in one directory.
#[derive(Debug)]
pub struct PackStore {
    reader: Arc<PackReader>,
    /// What appending changes, behind the store's own lock.
    writer: Mutex<Writer>,
}

/// A pack store's writer state.
#[derive(Debug)]
struct Writer {
    /// The pack being appended to, and its length: the end of the last
    /// blob written whole. Writes are positioned at that length (never
    /// `O_APPEND`), so a failed write cannot shift the blobs after it.
    current: Option<(PackId, File, u64)>,
    next_pack: PackId,
    unsynced: bool,
    new_pack: bool,
    epoch: u64,
    /// A test hook: the file `FERRY_FAIL_FSYNC` named at open. While it
    /// exists, the next fsync fails with EIO (and removes it).
    fail_fsync: Option<PathBuf>,
}

/// How many pack files `dir` holds (0 when it does not exist).
///
/// # Errors
/// I/O errors other than a missing directory.
pub fn count_packs(dir: &Path) -> io::Result<usize> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .filter_map(Result::ok)
            .filter(|e| pack_number(&e.file_name()).is_some())
            .count()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Where packs and tails no catalog row names are kept: `store/quarantine/`
/// beside `store/packs/`.
pub fn quarantine_dir(packs: &Path) -> PathBuf {
    packs.parent().map_or_else(
        || packs.join("quarantine"),
        |store| store.join("quarantine"),
    )
}

fn make_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Copies `file` from `from` on into a new file `to`, synced.
fn save_tail(file: &File, from: u64, to: &Path) -> io::Result<()> {
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(to)?;
    let mut reader = io::BufReader::new(file);
    io::Seek::seek(&mut reader, io::SeekFrom::Start(from))?;
    io::copy(&mut reader, &mut out)?;
    out.sync_all()
}

fn pack_path(dir: &Path, pack: PackId) -> PathBuf {
    dir.join(format!("{pack:08}.pack"))
}

/// The number of a pack file's name (`00000042.pack`), if it is one.
pub fn pack_number(name: &std::ffi::OsStr) -> Option<PackId> {
    name.to_str()
        .and_then(|n| n.strip_suffix(".pack"))
        .and_then(|n| n.parse::<u64>().ok())
        .map(PackId)
}

impl PackStore {
    /// Opens the store, cutting each pack back to `committed_end[pack]` (the
    /// end of its last blob named in the catalog; absent means none).
    ///
    /// # Errors
    /// I/O errors.
    pub fn open(dir: &Path, committed_end: &HashMap<PackId, u64>) -> io::Result<Self> {
        // Only the relay's user may read what clients stored.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let quarantine = quarantine_dir(dir);
        let mut last = PackId(0);
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let Some(number) = pack_number(&entry.file_name()) else {
                continue;
            };
            last = last.max(number);
            let Some(&end) = committed_end.get(&number) else {
                let kept = quarantine.join(entry.file_name());
                match make_private_dir(&quarantine).and_then(|()| fs::rename(entry.path(), &kept)) {
                    Ok(()) => tracing::warn!(
                        "pack {number:08}: no catalog row names it (an interrupted collection or upload, or a catalog older than the store); moved to {}, delete it once the catalog is known to be right",
                        kept.display()
                    ),
                    // A full disk must not keep the relay from serving restores.
                    Err(e) => tracing::warn!(
                        "pack {number:08}: no catalog row names it, and it cannot be moved to {} ({e}); left in place",
                        quarantine.display()
                    ),
                }
                continue;
            };
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(entry.path())?;
            let len = file.metadata()?.len();
            if len > end {
                let kept = quarantine.join(format!("{number:08}.pack.tail-{end}"));
                let saved =
                    make_private_dir(&quarantine).and_then(|()| save_tail(&file, end, &kept));
                match saved {
                    Ok(()) => {
                        tracing::warn!(
                            "pack {number:08}: cutting {} bytes no catalog row names (torn tail of an interrupted write); kept in {}",
                            len - end,
                            kept.display()
                        );
                        file.set_len(end)?;
                        file.sync_all()?;
                    }
                    // Not cut, then (new blobs go to a new pack anyway): a
                    // full disk must not keep the relay from serving restores.
                    Err(e) => {
                        let _ = fs::remove_file(&kept);
                        tracing::warn!(
                            "pack {number:08}: {} bytes at its end no catalog row names stay there: they cannot be kept in {} ({e})",
                            len - end,
                            quarantine.display()
                        );
                    }
                }
            }
        }
        Ok(PackStore {
            reader: Arc::new(PackReader::new(dir)),
            writer: Mutex::new(Writer {
                current: None,
                next_pack: last.next(),
                unsynced: false,
                new_pack: false,
                epoch: 0,
                fail_fsync: crate::test_hooks::fail_fsync_trigger(),
            }),
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Writer {
    fn sealed_below(&self) -> PackId {
        self.current
            .as_ref()
            .map_or(self.next_pack, |(pack, _, _)| *pack)
    }

    /// Makes the current pack durable and sealed; the next append starts a
    /// new one.
    fn seal(&mut self) -> io::Result<()> {
        let Some((_, file, _)) = &self.current else {
            return Ok(());
        };
        if self.unsynced {
            if let Err(e) = file.sync_all() {
                self.poison();
                return Err(e);
            }
        }
        self.current = None;
        self.unsynced = false;
        Ok(())
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
}

impl PackStore {
    /// Makes the next fsync fail with EIO while `trigger` exists (as
    /// `FERRY_FAIL_FSYNC` does for a running relay).
    #[cfg(test)]
    pub fn fail_fsync_while(&self, trigger: PathBuf) {
        self.writer().fail_fsync = Some(trigger);
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.reader.dir)?.sync_all()
    }
}

reads_through_its_reader!(PackStore);

impl BlobStore for PackStore {
    fn reader(&self) -> Arc<dyn BlobReader> {
        Arc::clone(&self.reader) as Arc<dyn BlobReader>
    }

    fn append(&self, data: &[u8]) -> io::Result<BlobLocation> {
        let len = u32::try_from(data.len()).map_err(|_| too_large())?;
        let mut writer = self.writer();
        if is_full(writer.current.as_ref(), PACK_TARGET) {
            writer.seal()?;
        }
        if writer.current.is_none() {
            let pack = writer.next_pack;
            writer.next_pack = pack.next();
            let file = create_pack_file(&self.reader.path(pack))?;
            writer.current = Some((pack, file, 0));
            writer.new_pack = true;
        }
        let (pack, file, size) = writer.current.as_mut().expect("opened above");
        let offset = append_to(file, size, data)?;
        let pack = *pack;
        writer.unsynced = true;
        Ok(BlobLocation { pack, offset, len })
    }

    fn sync(&self) -> io::Result<()> {
        let mut writer = self.writer();
        if writer.unsynced {
            if let Some((_, file, _)) = &writer.current {
                let synced =
                    fail_point(writer.fail_fsync.as_deref()).and_then(|()| file.sync_data());
                if let Err(e) = synced {
                    writer.poison();
                    return Err(e);
                }
            }
            writer.unsynced = false;
        }
        if writer.new_pack {
            self.sync_dir()?;
            writer.new_pack = false;
        }
        Ok(())
    }

    fn epoch(&self) -> u64 {
        self.writer().epoch
    }

    fn sealed_below(&self) -> PackId {
        self.writer().sealed_below()
    }

    fn seal(&self) -> io::Result<()> {
        self.writer().seal()
    }

    fn remove(&self, pack: PackId) -> io::Result<()> {
        if pack >= self.sealed_below() {
            return Err(not_sealed(pack));
        }
        self.reader.forget(pack);
        fs::remove_file(self.reader.path(pack))?;
        self.sync_dir()
    }
}

/// Whether the pack being written has reached `target` bytes.
pub(super) fn is_full(current: Option<&(PackId, File, u64)>, target: u64) -> bool {
    current.is_some_and(|(_, _, size)| *size >= target)
}

/// Creates a new pack file, readable by the relay's user only (never
/// one that exists).
pub(super) fn create_pack_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create_new(true)
        .write(true)
        .read(true)
        .mode(0o600)
        .open(path)
}

/// Writes `data` at `*size` in `file` (positioned, never `O_APPEND`) and
/// moves `*size` past it; returns where it starts. A failed write is cut
/// back, so the pack ends with its last whole blob (a failed cut only
/// leaves a tail no row names).
pub(super) fn append_to(file: &File, size: &mut u64, data: &[u8]) -> io::Result<u64> {
    let offset = *size;
    if let Err(e) = file.write_all_at(data, offset) {
        let _ = file.set_len(offset);
        return Err(e);
    }
    *size += data.len() as u64;
    Ok(offset)
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
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("packs");
        let store = PackStore::open(dir.as_path(), &HashMap::new()).unwrap();
        let a = store.append(b"hello").unwrap();
        let b = store.append(b"world!").unwrap();
        store.sync().unwrap();
        assert_eq!(store.read(&a).unwrap(), b"hello");
        assert_eq!(store.read(&b).unwrap(), b"world!");
        drop(store);
        // A pack no row names at all (an interrupted collection) is moved
        // aside, never deleted.
        let orphan = dir.as_path().join("00000009.pack");
        fs::write(&orphan, b"orphan").unwrap();
        // Only `a` was committed to the catalog: the rest is a torn tail.
        let ends = HashMap::from([(a.pack, a.offset + u64::from(a.len))]);
        let store = PackStore::open(dir.as_path(), &ends).unwrap();
        assert_eq!(store.read(&a).unwrap(), b"hello");
        assert!(store.read(&b).is_err());
        assert!(!orphan.exists());
        let quarantine = quarantine_dir(dir.as_path());
        assert_eq!(
            fs::read(quarantine.join("00000009.pack")).unwrap(),
            b"orphan"
        );
        let tail = quarantine.join(format!("{:08}.pack.tail-5", a.pack));
        assert_eq!(fs::read(tail).unwrap(), b"world!");
        assert_eq!(store.packs().unwrap(), vec![(a.pack, 5)]);
        assert!(
            store.remove(a.pack.next()).is_err(),
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
        let store = PackStore::open(&dir.path().join("packs"), &HashMap::new()).unwrap();
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
