//! The mount's local copies of files it fetched, each under its
//! snapshot's directory at its path there: bounded in bytes, the least
//! recently opened copy not open now dropped first. A file larger than
//! the whole bound is still fetched (it is what was asked for) and is the
//! first to go once closed.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::browse::dump::Scratch;

/// One fetched file.
struct Copy {
    size: u64,
    /// When it was last opened (a counter, not a clock).
    used: u64,
    /// How many handles have it open.
    open: u32,
}

/// The copies and their total.
#[derive(Default)]
struct Copies {
    by_path: HashMap<PathBuf, Copy>,
    total: u64,
    clock: u64,
}

/// The cache: a private scratch directory (removed at unmount).
pub struct Cache {
    dir: Scratch,
    limit: u64,
    copies: Mutex<Copies>,
}

impl Cache {
    /// An empty cache in `dir`, holding about `limit` bytes.
    pub fn new(dir: Scratch, limit: u64) -> Self {
        Self {
            dir,
            limit,
            copies: Mutex::new(Copies::default()),
        }
    }

    /// The directory snapshot `snapshot`'s files are restored below.
    pub fn snapshot_dir(&self, snapshot: u64) -> PathBuf {
        self.dir.path().join(format!("s{snapshot}"))
    }

    /// Where file `path` of snapshot `snapshot` is copied.
    pub fn path_of(&self, snapshot: u64, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        self.snapshot_dir(snapshot).join(relative)
    }

    /// Whether the copy at `copy` is held.
    pub fn holds(&self, copy: &Path) -> bool {
        self.lock().by_path.contains_key(copy)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Copies> {
        self.copies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The copy at `path` opened for reading (counted as open), if held.
    pub fn open(&self, path: &Path) -> Option<File> {
        let mut copies = self.lock();
        copies.clock += 1;
        let clock = copies.clock;
        let copy = copies.by_path.get_mut(path)?;
        let file = File::open(path).ok()?;
        copy.used = clock;
        copy.open += 1;
        Some(file)
    }

    /// Records the copies just written at `fetched` (with their sizes),
    /// then opens the one at `asked` (counted as open, so it stays) and
    /// drops old copies past the bound.
    ///
    /// # Errors
    /// The copy asked for cannot be opened.
    pub fn insert_open(&self, fetched: &[(PathBuf, u64)], asked: &Path) -> std::io::Result<File> {
        let file = File::open(asked)?;
        let mut copies = self.lock();
        for (path, size) in fetched {
            copies.clock += 1;
            let copy = Copy {
                size: *size,
                used: copies.clock,
                open: u32::from(path == asked),
            };
            if let Some(old) = copies.by_path.insert(path.clone(), copy) {
                copies.total -= old.size;
            }
            copies.total += size;
        }
        self.evict(&mut copies);
        Ok(file)
    }

    /// One handle of the copy at `path` closed.
    pub fn release(&self, path: &Path) {
        let mut copies = self.lock();
        if let Some(copy) = copies.by_path.get_mut(path) {
            copy.open = copy.open.saturating_sub(1);
        }
        self.evict(&mut copies);
    }

    /// Bytes held now.
    #[cfg(test)]
    pub fn held(&self) -> u64 {
        self.lock().total
    }

    fn evict(&self, copies: &mut Copies) {
        while copies.total > self.limit {
            let oldest = copies
                .by_path
                .iter()
                .filter(|(_, c)| c.open == 0)
                .min_by_key(|(_, c)| c.used)
                .map(|(path, _)| path.clone());
            let Some(path) = oldest else { return };
            if let Some(copy) = copies.by_path.remove(&path) {
                copies.total -= copy.size;
            }
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("cannot remove the mount's copy {}: {e}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_opened_closed_copy_goes_first_and_open_ones_stay() {
        let parent = tempfile::tempdir().unwrap();
        let cache = Cache::new(Scratch::new(parent.path()).unwrap(), 100);
        let path = |n: u32| cache.path_of(1, Path::new(&format!("/d/{n}")));
        std::fs::create_dir_all(cache.snapshot_dir(1).join("d")).unwrap();
        let write = |n: u32, len: usize| {
            std::fs::write(path(n), vec![0u8; len]).unwrap();
            (path(n), len as u64)
        };
        // Two fetched together, the first asked for.
        let fetched = [write(1, 40), write(2, 40)];
        drop(cache.insert_open(&fetched, &path(1)).unwrap());
        cache.release(&path(1));
        let one = cache.open(&path(1)).expect("held");
        drop(cache.insert_open(&[write(3, 40)], &path(3)).unwrap());
        cache.release(&path(3));
        // 120 > 100: 2 goes (1 is open, though older).
        assert!(cache.open(&path(2)).is_none() && !path(2).exists());
        assert!(cache.holds(&path(1)) && cache.holds(&path(3)));
        assert_eq!(cache.held(), 80);
        drop(one);
        cache.release(&path(1));
        // A copy larger than the bound stays while open, then goes first.
        let big = cache.insert_open(&[write(4, 200)], &path(4)).unwrap();
        assert!(!path(1).exists() && !path(3).exists());
        assert!(path(4).exists(), "the file asked for is kept while open");
        drop(big);
        cache.release(&path(4));
        assert_eq!(cache.held(), 0);
    }
}
