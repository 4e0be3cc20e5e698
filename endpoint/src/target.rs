//! The restore target: every write happens relative to an open directory,
//! one validated name at a time, never following a symlink.
//!
//! Whatever a tree from the network says, a path is a list of names that
//! each passed [`ferry_protocol::tree::check_name`] (no `/`, no `..`, not
//! empty, no NUL), and each directory on the way is opened with
//! `O_NOFOLLOW | O_DIRECTORY` relative to its parent: a symlink planted in
//! the target (or created by the restore itself) cannot redirect a write
//! outside the target directory.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use ferry_protocol::tree::{check_name, Entry};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

/// An open target directory.
#[derive(Debug)]
pub struct Target {
    root: OwnedFd,
    as_root: bool,
    /// Setuid/setgid bits, device nodes and `security.capability` are
    /// restored: as root, only into `/` or when asked.
    privileges: bool,
}

/// Mode bits that give a file its owner's or group's powers when run.
const PRIVILEGE_BITS: u32 = 0o6000;

/// A name as a path argument, checked.
fn name_arg(name: &[u8]) -> io::Result<&OsStr> {
    check_name(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(OsStr::from_bytes(name))
}

const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC);

impl Target {
    /// Opens (creating) the target directory `dir`, which the user named.
    /// As root, privileges (setuid/setgid bits, device nodes,
    /// `security.capability`) are restored only into `/` or with
    /// `preserve_privileges`: what a relay sends must not become a root
    /// shell in a directory someone restores into to look at.
    ///
    /// # Errors
    /// I/O errors.
    pub fn open(dir: &Path, preserve_privileges: bool) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let root = rustix::fs::open(dir, DIR_FLAGS, Mode::empty())?;
        let as_root = rustix::process::geteuid().is_root();
        let into_root = std::fs::canonicalize(dir)? == Path::new("/");
        Ok(Target {
            root,
            as_root,
            privileges: !as_root || preserve_privileges || into_root,
        })
    }

    /// The directory `path` will be made in (made first if missing), as a
    /// target for the one entry named `path`: never `/` itself, so
    /// privileges are restored only when asked, as for any directory.
    ///
    /// # Errors
    /// I/O errors; a path without a parent.
    pub fn open_parent_of(path: &Path, preserve_privileges: bool) -> io::Result<Self> {
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            Some(_) => Path::new("."),
            None => return Err(io::Error::other("no directory to put it in")),
        };
        std::fs::create_dir_all(parent)?;
        let root = rustix::fs::open(parent, DIR_FLAGS, Mode::empty())?;
        let as_root = rustix::process::geteuid().is_root();
        Ok(Target {
            root,
            as_root,
            privileges: !as_root || preserve_privileges,
        })
    }

    /// Whether device nodes may be made here (as root, with privileges).
    pub fn devices(&self) -> bool {
        self.as_root && self.privileges
    }

    /// `mode` as restored here: without setuid/setgid unless privileges are.
    fn mode(&self, mode: u32) -> Mode {
        let mode = mode & 0o7777;
        Mode::from_raw_mode(if self.privileges {
            mode
        } else {
            mode & !PRIVILEGE_BITS
        })
    }

    /// Opens the directory at `names` below the target, creating missing
    /// directories (mode 0700 until their own metadata is applied).
    ///
    /// # Errors
    /// I/O errors, a bad name, or a non-directory (a symlink included) on the way.
    pub fn dir(&self, names: &[Vec<u8>]) -> io::Result<OwnedFd> {
        let mut fd = rustix::fs::openat(&self.root, ".", DIR_FLAGS, Mode::empty())?;
        for name in names {
            let name = name_arg(name)?;
            fd = match rustix::fs::openat(&fd, name, DIR_FLAGS, Mode::empty()) {
                Ok(next) => next,
                Err(rustix::io::Errno::NOENT) => {
                    rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o700))?;
                    rustix::fs::openat(&fd, name, DIR_FLAGS, Mode::empty())?
                }
                Err(e) => {
                    return Err(io::Error::new(
                        io::Error::from(e).kind(),
                        format!(
                            "{}: not a directory (or a symlink, never followed)",
                            name.to_string_lossy()
                        ),
                    ))
                }
            };
        }
        Ok(fd)
    }

    /// rsync's quick check: whether `name` in `dir` is a regular file of
    /// `size` bytes with `entry`'s modification time. `Some(true)` when its
    /// mode (and owner, as root) match too and `entry` has no extended
    /// attributes, so nothing needs doing; `Some(false)` when only metadata
    /// needs setting; `None` when its data must be compared or written.
    ///
    /// # Errors
    /// I/O errors other than "absent".
    pub fn quick_match(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        entry: &Entry,
        size: u64,
    ) -> io::Result<Option<bool>> {
        let st = match rustix::fs::statat(dir, name_arg(name)?, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let regular =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
        let mtime_ns = (st.st_mtime as i64)
            .saturating_mul(1_000_000_000)
            .saturating_add(st.st_mtime_nsec as i64);
        if !regular || st.st_size as u64 != size || mtime_ns != entry.mtime_ns {
            return Ok(None);
        }
        let owner = !self.as_root || (st.st_uid == entry.uid && st.st_gid == entry.gid);
        Ok(Some(
            st.st_mode & 0o7777 == entry.mode & 0o7777 && owner && entry.xattrs.is_empty(),
        ))
    }

    /// Opens an existing regular file `name` in `dir` for reading, if there is one.
    ///
    /// # Errors
    /// I/O errors other than "absent".
    pub fn existing_file(dir: &OwnedFd, name: &[u8]) -> io::Result<Option<File>> {
        open_regular(dir, name_arg(name)?, OFlags::RDONLY)
    }

    /// Creates a fresh temporary file beside `name`, to be renamed over it.
    ///
    /// # Errors
    /// I/O errors.
    pub fn temp_file(dir: &OwnedFd, name: &[u8]) -> io::Result<(File, Vec<u8>)> {
        let tmp = temp_name(name)?;
        // A leftover from an interrupted restore is ours to replace.
        let _ = rustix::fs::unlinkat(dir, OsStr::from_bytes(&tmp), AtFlags::empty());
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(
            dir,
            OsStr::from_bytes(&tmp),
            flags,
            Mode::from_raw_mode(0o600),
        )?;
        Ok((File::from(fd), tmp))
    }

    /// The temporary file an interrupted restore left for `name`, if any,
    /// open for reading and writing (and its name): it is completed in
    /// place, so a restore resumes rather than starting over.
    ///
    /// # Errors
    /// I/O errors other than "absent".
    pub fn leftover_temp(dir: &OwnedFd, name: &[u8]) -> io::Result<Option<(File, Vec<u8>)>> {
        let tmp = temp_name(name)?;
        let file = open_regular(dir, OsStr::from_bytes(&tmp), OFlags::RDWR)?;
        Ok(file.map(|file| (file, tmp)))
    }

    /// Whether nothing at all is at `name`, nor a temporary file of an
    /// interrupted restore of it: a file restored there needs every chunk.
    ///
    /// # Errors
    /// I/O errors other than "absent".
    pub fn absent(dir: &OwnedFd, name: &[u8]) -> io::Result<bool> {
        for candidate in [name_arg(name)?, OsStr::from_bytes(&temp_name(name)?)] {
            match rustix::fs::statat(dir, candidate, AtFlags::SYMLINK_NOFOLLOW) {
                Err(rustix::io::Errno::NOENT) => {}
                Ok(_) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Removes the temporary file `tmp` of a file that cannot be restored
    /// (best effort: a leftover is only reused or replaced by the next run).
    pub fn remove_temp(dir: &OwnedFd, tmp: &[u8]) {
        let _ = rustix::fs::unlinkat(dir, OsStr::from_bytes(tmp), AtFlags::empty());
    }

    /// Atomically replaces `name` with the temporary file `tmp`.
    ///
    /// # Errors
    /// I/O errors (e.g. `name` is a directory).
    pub fn commit_temp(dir: &OwnedFd, tmp: &[u8], name: &[u8]) -> io::Result<()> {
        let result = rustix::fs::renameat(dir, OsStr::from_bytes(tmp), dir, name_arg(name)?);
        if result.is_err() {
            let _ = rustix::fs::unlinkat(dir, OsStr::from_bytes(tmp), AtFlags::empty());
        }
        Ok(result?)
    }

    /// Removes a non-directory `name` so something else can take its place.
    fn clear(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st)
                if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::Directory =>
            {
                Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a directory is in the way",
                ))
            }
            Ok(_) => Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?),
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a symlink `name` → `target` (the target is stored, never followed).
    ///
    /// # Errors
    /// I/O errors.
    pub fn symlink(dir: &OwnedFd, name: &[u8], target: &[u8]) -> io::Result<()> {
        let name = name_arg(name)?;
        Self::clear(dir, name)?;
        Ok(rustix::fs::symlinkat(OsStr::from_bytes(target), dir, name)?)
    }

    /// Creates a FIFO or device node.
    ///
    /// # Errors
    /// I/O errors.
    pub fn node(
        dir: &OwnedFd,
        name: &[u8],
        kind: rustix::fs::FileType,
        rdev: u64,
    ) -> io::Result<()> {
        let name = name_arg(name)?;
        Self::clear(dir, name)?;
        Ok(rustix::fs::mknodat(
            dir,
            name,
            kind,
            Mode::from_raw_mode(0o600),
            rdev,
        )?)
    }

    /// Makes `name` in `dir` a hard link to `existing` in `existing_dir`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn hardlink(
        existing_dir: &OwnedFd,
        existing: &[u8],
        dir: &OwnedFd,
        name: &[u8],
    ) -> io::Result<()> {
        let name = name_arg(name)?;
        Self::clear(dir, name)?;
        Ok(rustix::fs::linkat(
            existing_dir,
            name_arg(existing)?,
            dir,
            name,
            AtFlags::empty(),
        )?)
    }

    /// Applies an entry's metadata to an open file or directory: owner (as
    /// root), mode, xattrs, then mtime last. Returns the xattrs that could not
    /// be set (other namespaces than `user.` need privileges).
    ///
    /// # Errors
    /// I/O errors setting mode or times.
    pub fn apply_to_fd(&self, fd: impl AsFd, entry: &Entry) -> io::Result<Vec<String>> {
        let fd = fd.as_fd();
        if self.as_root {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(entry.uid)),
                Some(rustix::fs::Gid::from_raw(entry.gid)),
            )?;
        }
        rustix::fs::fchmod(fd, self.mode(entry.mode))?;
        let mut failed = Vec::new();
        for (name, value) in &entry.xattrs {
            if !self.privileges && name.as_slice() == b"security.capability" {
                failed.push("security.capability (restored with --preserve-privileges)".into());
                continue;
            }
            if rustix::fs::fsetxattr(
                fd,
                OsStr::from_bytes(name),
                value,
                rustix::fs::XattrFlags::empty(),
            )
            .is_err()
            {
                failed.push(ferry_protocol::units::printable(name));
            }
        }
        rustix::fs::futimens(fd, &times(entry.mtime_ns))?;
        Ok(failed)
    }

    /// Applies metadata to `name` in `dir` without opening it (symlinks and
    /// FIFOs): owner as root, mode except on symlinks, mtime.
    ///
    /// # Errors
    /// I/O errors.
    pub fn apply_at(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        entry: &Entry,
        is_symlink: bool,
    ) -> io::Result<()> {
        let name = name_arg(name)?;
        if self.as_root {
            rustix::fs::chownat(
                dir,
                name,
                Some(rustix::fs::Uid::from_raw(entry.uid)),
                Some(rustix::fs::Gid::from_raw(entry.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        if !is_symlink {
            chmod_unless_symlink(dir, name, self.mode(entry.mode))?;
        }
        Ok(rustix::fs::utimensat(
            dir,
            name,
            &times(entry.mtime_ns),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }
}

/// Sets the mode of `name` in `dir` (a FIFO or device node just made)
/// without following a symlink swapped in meanwhile: the node is pinned
/// with an `O_PATH | O_NOFOLLOW` descriptor, checked not to be a symlink,
/// and changed through that descriptor (`/proc/self/fd`, as glibc's
/// `fchmodat(AT_SYMLINK_NOFOLLOW)` does), never by the name again.
fn chmod_unless_symlink(dir: &OwnedFd, name: &OsStr, mode: Mode) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let pinned = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let kind = rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&pinned)?.st_mode);
    if kind == rustix::fs::FileType::Symlink {
        return Err(io::Error::other(format!(
            "{} became a symlink while it was restored; its mode was not set",
            ferry_protocol::units::printable(name.as_bytes())
        )));
    }
    let through = format!("/proc/self/fd/{}", pinned.as_raw_fd());
    Ok(rustix::fs::chmod(through.as_str(), mode)?)
}

/// Opens `name` in `dir` with `access` (read, or read and write) when it
/// is a regular file, never following a symlink; `None` when absent or
/// something else.
fn open_regular(dir: &OwnedFd, name: &OsStr, access: OFlags) -> io::Result<Option<File>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode)
                == rustix::fs::FileType::RegularFile => {}
        Ok(_) | Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    // Non-blocking, and checked again once open: something swapped in
    // since the stat (a FIFO) must neither hang the restore nor be used.
    let flags = access | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let file = File::from(rustix::fs::openat(dir, name, flags, Mode::empty())?);
    Ok(file.metadata()?.is_file().then_some(file))
}

/// The temporary name used while restoring `name` (hidden, fixed per name).
fn temp_name(name: &[u8]) -> io::Result<Vec<u8>> {
    name_arg(name)?;
    Ok(format!(".ferry-{}.tmp", &blake3::hash(name).to_hex()[..16]).into_bytes())
}

fn times(mtime_ns: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&[u8]]) -> Vec<Vec<u8>> {
        list.iter().map(|n| n.to_vec()).collect()
    }

    #[test]
    fn hostile_names_are_refused_before_any_write() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::open(&dir.path().join("t"), false).unwrap();
        for hostile in [&b".."[..], b".", b"", b"a/b", b"/etc", b"x\0y"] {
            assert!(
                target.dir(&names(&[b"ok", hostile])).is_err(),
                "{hostile:?}"
            );
            let ok = target.dir(&names(&[b"ok"])).unwrap();
            assert!(Target::temp_file(&ok, hostile).is_err());
            assert!(Target::symlink(&ok, hostile, b"/etc/passwd").is_err());
            assert!(Target::node(&ok, hostile, rustix::fs::FileType::Fifo, 0).is_err());
            assert!(Target::hardlink(&ok, hostile, &ok, b"h").is_err());
        }
        // Nothing but the one good directory was created.
        let made: Vec<_> = std::fs::read_dir(dir.path().join("t")).unwrap().collect();
        assert_eq!(made.len(), 1);
        assert!(!dir.path().join("etc").exists());
    }

    #[test]
    fn a_symlink_on_the_way_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let root = dir.path().join("t");
        let target = Target::open(&root, false).unwrap();
        // A symlink the restore itself made (a symlink entry) or one planted in the target.
        let top = target.dir(&[]).unwrap();
        Target::symlink(&top, b"link", outside.as_os_str().as_bytes()).unwrap();
        assert!(target.dir(&names(&[b"link"])).is_err());
        assert!(target.dir(&names(&[b"link", b"below"])).is_err());
        // Writing a file named like the symlink replaces the link, not its target.
        let (file, tmp) = Target::temp_file(&top, b"link").unwrap();
        drop(file);
        Target::commit_temp(&top, &tmp, b"link").unwrap();
        assert!(std::fs::symlink_metadata(root.join("link"))
            .unwrap()
            .is_file());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn a_symlink_swapped_in_for_a_new_fifo_does_not_get_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"x").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let target = Target::open(&dir.path().join("t"), false).unwrap();
        let top = target.dir(&[]).unwrap();
        let entry = |mode| ferry_protocol::tree::Entry {
            name: b"pipe".to_vec(),
            kind: ferry_protocol::tree::EntryKind::Fifo,
            mode,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            xattrs: Vec::new(),
        };
        Target::node(&top, b"pipe", rustix::fs::FileType::Fifo, 0).unwrap();
        target
            .apply_at(&top, b"pipe", &entry(0o640), false)
            .unwrap();
        let pipe = dir.path().join("t/pipe");
        assert_eq!(
            std::fs::metadata(&pipe).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        // Between mknodat and the mode, another user swaps in a symlink.
        std::fs::remove_file(&pipe).unwrap();
        std::os::unix::fs::symlink(&secret, &pipe).unwrap();
        assert!(target
            .apply_at(&top, b"pipe", &entry(0o666), false)
            .is_err());
        assert_eq!(
            std::fs::metadata(&secret).unwrap().permissions().mode() & 0o7777,
            0o600
        );
    }

    #[test]
    fn crafted_trees_with_hostile_entries_do_not_decode() {
        use ferry_protocol::ids::TreeId;
        use ferry_protocol::tree::{EntryKind, Tree};
        for (name, kind) in [
            (&b".."[..], EntryKind::Fifo),
            (b"a/b", EntryKind::Fifo),
            (b"/abs", EntryKind::Fifo),
            (
                b"h",
                EntryKind::Hardlink {
                    target: b"../../etc/passwd".to_vec(),
                },
            ),
            (
                b"h",
                EntryKind::Hardlink {
                    target: b"/etc/passwd".to_vec(),
                },
            ),
        ] {
            let tree = Tree {
                entries: vec![Entry {
                    name: name.to_vec(),
                    kind,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    mtime_ns: 0,
                    xattrs: vec![],
                }],
            };
            // Encoded without the checks `Tree::encode` makes, as a hostile relay would.
            let bytes = postcard::to_allocvec(&tree).unwrap();
            assert!(
                Tree::decode(&TreeId::of(&bytes), &bytes).is_err(),
                "{name:?}"
            );
        }
    }
}
