//! What a restore does with what the target already holds at a path, when
//! that differs from the snapshot's entry (`ferry restore --overwrite`).

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use ferry_protocol::tree::{Entry, EntryKind};
use rustix::fs::{AtFlags, FileType};

/// The overwrite policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Overwrite {
    /// Replace whatever differs.
    Always,
    /// Replace what differs in size, modification time or (with
    /// `--checksum`) content: rsync's rule, what ferry did before.
    IfChanged,
    /// The default: replace only what is older than the snapshot's entry.
    /// A file changed since the snapshot's version was written (a local
    /// edit after the backup) is kept; a stale or damaged older copy is
    /// brought back to the snapshot's state, which is what a restore is for.
    #[default]
    IfNewer,
    /// Never replace anything that exists.
    Never,
}

/// What the target holds where a snapshot's entry would go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Nothing.
    Absent,
    /// The same file version (size and modification time) or link target.
    Same,
    /// A directory (where a directory goes: nothing to do; else the
    /// restore's own refusal).
    Dir,
    /// A file or symlink that differs; `newer`: modified at or after the
    /// snapshot's entry.
    Differs {
        /// Modified at or after the snapshot's entry.
        newer: bool,
    },
    /// Something a policy does not judge (another kind of entry, or of
    /// local file): restored as before.
    Other,
}

/// What is at `name` in `dir`, against the snapshot's `entry`.
///
/// # Errors
/// I/O errors other than "absent".
pub fn local_state(dir: &OwnedFd, name: &[u8], entry: &Entry) -> std::io::Result<Local> {
    let name = OsStr::from_bytes(name);
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(Local::Absent),
        Err(e) => return Err(e.into()),
    };
    let local_ns = (st.st_mtime as i64)
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_mtime_nsec as i64);
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind == FileType::Directory {
        return Ok(Local::Dir);
    }
    let same = match (&entry.kind, kind) {
        (EntryKind::File { size, .. }, FileType::RegularFile) => {
            st.st_size as u64 == *size && local_ns == entry.mtime_ns
        }
        (EntryKind::File { .. }, _) => false,
        (EntryKind::Symlink { target }, FileType::Symlink) => {
            rustix::fs::readlinkat(dir, name, Vec::new())
                .is_ok_and(|link| link.as_bytes() == target.as_slice())
        }
        (EntryKind::Symlink { .. }, _) => false,
        _ => return Ok(Local::Other),
    };
    Ok(if same {
        Local::Same
    } else {
        Local::Differs {
            newer: entry.mtime_ns <= local_ns,
        }
    })
}

impl Overwrite {
    /// Whether what is at `name` in `dir` stays where the snapshot's
    /// `entry` would go: only a local file or symlink that differs from it,
    /// and only as the policy says. A file of the same size and
    /// modification time is the same version (`--checksum` may still
    /// repair its content) and never kept; a directory in the way is left
    /// to the restore's own refusal; other kinds of entry are restored as
    /// before.
    ///
    /// # Errors
    /// I/O errors other than "absent".
    pub fn keeps(self, dir: &OwnedFd, name: &[u8], entry: &Entry) -> std::io::Result<bool> {
        if matches!(self, Overwrite::Always | Overwrite::IfChanged) {
            return Ok(false);
        }
        Ok(self.keeps_state(local_state(dir, name, entry)?))
    }

    /// Whether the policy keeps what [`local_state`] found.
    pub fn keeps_state(self, local: Local) -> bool {
        match local {
            Local::Differs { newer } => match self {
                Overwrite::Always | Overwrite::IfChanged => false,
                Overwrite::IfNewer => newer,
                Overwrite::Never => true,
            },
            _ => false,
        }
    }

    /// The line that tells how many entries were kept, and how to replace
    /// them.
    #[must_use]
    pub fn kept_line(self, kept: u64) -> String {
        let why = match self {
            Overwrite::IfNewer => "newer than the snapshot's (changed since)",
            _ => "that differ from the snapshot's",
        };
        format!(
            "kept {kept} local files or symlinks {why}; --overwrite if-changed or always replaces them (--json lists them)"
        )
    }
}

/// Paths of kept entries a summary lists, at most (the count goes on).
pub const KEPT_LISTED: usize = 100;

/// Entries a restore kept under its policy.
#[derive(Debug, Default, serde::Serialize)]
pub struct Kept {
    /// How many.
    #[serde(rename = "entries_kept")]
    pub count: u64,
    /// The first [`KEPT_LISTED`] of them, as snapshot paths.
    #[serde(rename = "kept")]
    pub paths: Vec<String>,
}

impl Kept {
    /// Counts one more, listing it while the list has room.
    pub fn add(&mut self, path: String) {
        self.count += 1;
        if self.paths.len() < KEPT_LISTED {
            self.paths.push(path);
        }
    }
}
