//! The disk reserve: a few megabytes the relay keeps in a file on its own
//! disk. Stopped on a full disk, it gives them back to start (SQLite needs
//! room for its shared-memory file and the first writes) and then serves
//! restores read-only: backups are refused, with one line saying the disk
//! is full, until the reserve can be made again (someone freed space).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes kept in reserve: enough for SQLite's shared-memory file and the
/// first writes of a start.
pub const RESERVE_BYTES: u64 = 2 << 20;

/// The reserve file and whether it was given back.
#[derive(Debug)]
pub struct DiskReserve {
    path: PathBuf,
    released: AtomicBool,
}

impl DiskReserve {
    /// The reserve at `path` (`run/reserve`), not released.
    pub fn new(path: PathBuf) -> Self {
        DiskReserve {
            path,
            released: AtomicBool::new(false),
        }
    }

    /// Gives the reserve back to the disk; true when there was one (the
    /// relay is read-only from then on, until [`DiskReserve::ensure`]).
    pub fn release(&self) -> bool {
        let released = fs::remove_file(&self.path).is_ok();
        if released {
            self.released.store(true, Ordering::Release);
        }
        released
    }

    /// Makes sure the reserve exists; false when the disk has no room for
    /// it (then backups are refused if it was released).
    pub fn ensure(&self) -> bool {
        if fs::metadata(&self.path).is_ok_and(|m| m.len() == RESERVE_BYTES) {
            self.released.store(false, Ordering::Release);
            return true;
        }
        let made = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|mut file| {
                file.write_all(&vec![0u8; RESERVE_BYTES as usize])?;
                file.sync_all()
            });
        match made {
            Ok(()) => {
                if self.released.swap(false, Ordering::AcqRel) {
                    tracing::info!(
                        "the disk has room again: the reserve is back, backups are accepted"
                    );
                }
                true
            }
            Err(e) => {
                let _ = fs::remove_file(&self.path);
                tracing::warn!(
                    "cannot keep {RESERVE_BYTES} bytes in reserve at {} ({e})",
                    self.path.display()
                );
                false
            }
        }
    }

    /// Whether backups may be written: the reserve was never released, or
    /// it could be made again now.
    pub fn accepts_backups(&self) -> bool {
        !self.released.load(Ordering::Acquire) || self.ensure()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_reserve_is_made_again_once_the_disk_has_room() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = DiskReserve::new(dir.path().join("reserve"));
        assert!(!reserve.release(), "nothing to release yet");
        assert!(reserve.accepts_backups());
        assert!(reserve.ensure());
        assert_eq!(
            fs::metadata(dir.path().join("reserve")).unwrap().len(),
            RESERVE_BYTES
        );
        assert!(reserve.release());
        assert!(!dir.path().join("reserve").exists());
        // Here the disk has room, so asking makes it again.
        assert!(reserve.accepts_backups());
        assert!(dir.path().join("reserve").exists());
    }
}
