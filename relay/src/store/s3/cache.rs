//! The object store's local read cache: one sparse file per pack under
//! `DATA/store/cache/`, filled a block at a time by ranged GETs (or whole,
//! by the relay's own upload), the least recently read packs dropped first
//! once it holds more than its limit. Its index lives in memory, so the
//! directory is emptied at every start.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::store::PackId;

/// Bytes fetched at a time: a restore reads a pack's blobs in order, so
/// one GET serves many of them.
pub const BLOCK: u64 = 4 * 1024 * 1024;

/// A bounded cache of pack bytes on local disk.
#[derive(Debug)]
pub struct BlockCache {
    dir: PathBuf,
    limit: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    packs: HashMap<PackId, Cached>,
    used: u64,
    clock: u64,
    hits: u64,
    misses: u64,
}

#[derive(Debug, Default)]
struct Cached {
    /// Every byte is here (the relay uploaded the pack itself).
    whole: bool,
    blocks: HashSet<u64>,
    bytes: u64,
    last_used: u64,
}

impl Cached {
    fn holds(&self, offset: u64, len: u64) -> bool {
        self.whole || blocks_of(offset, len).all(|b| self.blocks.contains(&b))
    }
}

/// The blocks covering `len` bytes at `offset`.
pub fn blocks_of(offset: u64, len: u64) -> std::ops::RangeInclusive<u64> {
    let last = offset.saturating_add(len.max(1)) - 1;
    offset / BLOCK..=last / BLOCK
}

impl BlockCache {
    /// A cache of at most `limit` bytes in `dir`, emptied now.
    ///
    /// # Errors
    /// I/O errors emptying or creating `dir`.
    pub fn open(dir: &Path, limit: u64) -> io::Result<Self> {
        match fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        super::make_private_dir(dir)?;
        Ok(BlockCache {
            dir: dir.to_path_buf(),
            limit,
            state: Mutex::default(),
        })
    }

    /// Whether anything is kept at all.
    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Hits and misses since start.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.state();
        (state.hits, state.misses)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, pack: PackId) -> PathBuf {
        self.dir.join(format!("{pack}"))
    }

    /// Whether `len` bytes of `pack` at `offset` are all here (not counted
    /// as a hit or a miss).
    pub fn holds(&self, pack: PackId, offset: u64, len: u64) -> bool {
        self.state()
            .packs
            .get(&pack)
            .is_some_and(|cached| cached.holds(offset, len))
    }

    /// Reads `len` bytes of `pack` at `offset` into `buffer` if they are
    /// all here; false (a miss) if not.
    ///
    /// # Errors
    /// I/O errors reading the cache's file.
    pub fn read(
        &self,
        pack: PackId,
        offset: u64,
        len: u64,
        buffer: &mut Vec<u8>,
    ) -> io::Result<bool> {
        {
            let mut state = self.state();
            state.clock += 1;
            let now = state.clock;
            let held = state.packs.get_mut(&pack).is_some_and(|cached| {
                cached.last_used = now;
                cached.holds(offset, len)
            });
            if !held {
                state.misses += 1;
                return Ok(false);
            }
            state.hits += 1;
        }
        let file = match File::open(self.path(pack)) {
            Ok(file) => file,
            // Dropped since: read it from the store.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let len = usize::try_from(len).map_err(|_| io::Error::other("read too large"))?;
        buffer.resize(len, 0);
        file.read_exact_at(buffer, offset)?;
        Ok(true)
    }

    /// Keeps block `block` of `pack` (its bytes `data`).
    ///
    /// # Errors
    /// I/O errors writing the cache's file.
    pub fn put_block(&self, pack: PackId, block: u64, data: &[u8]) -> io::Result<()> {
        if !self.enabled() || data.len() as u64 > self.limit {
            return Ok(());
        }
        let mut state = self.state();
        if state
            .packs
            .get(&pack)
            .is_some_and(|c| c.whole || c.blocks.contains(&block))
        {
            return Ok(());
        }
        self.make_room(&mut state, data.len() as u64, pack);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            .open(self.path(pack))?;
        file.write_all_at(data, block * BLOCK)?;
        state.clock += 1;
        let now = state.clock;
        state.used += data.len() as u64;
        let cached = state.packs.entry(pack).or_default();
        cached.blocks.insert(block);
        cached.bytes += data.len() as u64;
        cached.last_used = now;
        Ok(())
    }

    /// Takes the file `staged` (`len` bytes) as the whole of `pack`, or
    /// deletes it when it does not fit.
    pub fn adopt(&self, pack: PackId, staged: &Path, len: u64) {
        let mut state = self.state();
        if !self.enabled() || len > self.limit {
            drop(state);
            let _ = fs::remove_file(staged);
            return;
        }
        self.make_room(&mut state, len, pack);
        if fs::rename(staged, self.path(pack)).is_err() {
            let _ = fs::remove_file(staged);
            return;
        }
        state.clock += 1;
        let now = state.clock;
        state.used += len;
        state.packs.insert(
            pack,
            Cached {
                whole: true,
                blocks: HashSet::new(),
                bytes: len,
                last_used: now,
            },
        );
    }

    /// Drops `pack` (deleted from the store).
    pub fn forget(&self, pack: PackId) {
        let mut state = self.state();
        self.drop_pack(&mut state, pack);
    }

    fn drop_pack(&self, state: &mut State, pack: PackId) {
        if let Some(cached) = state.packs.remove(&pack) {
            state.used -= cached.bytes;
            let _ = fs::remove_file(self.path(pack));
        }
    }

    /// Drops the least recently read packs (never `keep`) until `incoming`
    /// more bytes fit.
    fn make_room(&self, state: &mut State, incoming: u64, keep: PackId) {
        while state.used + incoming > self.limit {
            let oldest = state
                .packs
                .iter()
                .filter(|(pack, _)| **pack != keep)
                .min_by_key(|(_, cached)| cached.last_used)
                .map(|(pack, _)| *pack);
            match oldest {
                Some(pack) => self.drop_pack(state, pack),
                None => return,
            }
        }
    }
}

impl Drop for BlockCache {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_kept_read_and_dropped_oldest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = BlockCache::open(&tmp.path().join("cache"), 2 * BLOCK).unwrap();
        let mut out = Vec::new();
        assert!(!cache.read(PackId(1), 10, 5, &mut out).unwrap());
        let block: Vec<u8> = (0..BLOCK).map(|i| (i % 251) as u8).collect();
        cache.put_block(PackId(1), 0, &block).unwrap();
        assert!(cache.read(PackId(1), 10, 5, &mut out).unwrap());
        assert_eq!(out, block[10..15]);
        // A range reaching into a block not kept is a miss.
        assert!(!cache.read(PackId(1), BLOCK - 2, 4, &mut out).unwrap());
        cache.put_block(PackId(2), 1, &block).unwrap();
        assert!(cache.read(PackId(2), BLOCK + 3, 2, &mut out).unwrap());
        assert_eq!(out, block[3..5]);
        // Pack 1 was read less recently than pack 2: it goes first.
        cache.put_block(PackId(3), 0, &block).unwrap();
        assert!(!cache.read(PackId(1), 10, 5, &mut out).unwrap());
        assert!(cache.read(PackId(2), BLOCK, 1, &mut out).unwrap());
        let staged = tmp.path().join("staged");
        fs::write(&staged, b"whole pack").unwrap();
        cache.adopt(PackId(4), &staged, 10);
        assert!(cache.read(PackId(4), 6, 4, &mut out).unwrap());
        assert_eq!(out, b"pack");
        cache.forget(PackId(4));
        assert!(!cache.read(PackId(4), 6, 4, &mut out).unwrap());
        assert!(cache.state().used <= 2 * BLOCK);
    }
}
