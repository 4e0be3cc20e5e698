//! Reading file metadata for a snapshot entry: mode, owner, nanosecond
//! mtime, extended attributes and the data regions of sparse files.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use ferry_protocol::tree::{Entry, EntryKind, Extent, MAX_NAME, MAX_XATTR_VALUE};

/// Nanoseconds since the epoch of a metadata's mtime.
pub fn mtime_ns(meta: &Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// Nanoseconds since the epoch of a metadata's ctime.
pub fn ctime_ns(meta: &Metadata) -> i64 {
    meta.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.ctime_nsec())
}

/// An entry for `name` with `meta`'s attributes and the given kind.
pub fn entry(
    name: Vec<u8>,
    meta: &Metadata,
    kind: EntryKind,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
) -> Entry {
    Entry {
        name,
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns: mtime_ns(meta),
        xattrs,
    }
}

/// The kind of a non-regular, non-directory file, read without following links.
///
/// # Errors
/// I/O errors reading a symlink.
pub fn special_kind(path: &Path, meta: &Metadata) -> io::Result<Option<EntryKind>> {
    let ft = meta.file_type();
    Ok(if ft.is_symlink() {
        let target = std::fs::read_link(path)?;
        Some(EntryKind::Symlink {
            target: std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec(),
        })
    } else if ft.is_fifo() {
        Some(EntryKind::Fifo)
    } else if ft.is_char_device() || ft.is_block_device() {
        Some(EntryKind::Device {
            character: ft.is_char_device(),
            rdev: meta.rdev(),
        })
    } else {
        None
    })
}

/// Extended attributes of `path` (not following a final symlink), sorted.
/// A filesystem without xattr support has none.
///
/// # Errors
/// I/O errors other than "not supported".
pub fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let unsupported =
        |e: &rustix::io::Errno| *e == rustix::io::Errno::NOTSUP || *e == rustix::io::Errno::PERM;
    let size = match rustix::fs::llistxattr(path, &mut [0u8; 0][..]) {
        Ok(size) => size,
        Err(e) if unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    if size == 0 {
        return Ok(Vec::new());
    }
    let mut names = vec![0u8; size];
    let len = rustix::fs::llistxattr(path, &mut names[..])?;
    names.truncate(len);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.len() > MAX_NAME {
            continue;
        }
        let name_str = std::ffi::OsStr::from_bytes_compat(name);
        let size = rustix::fs::lgetxattr(path, name_str, &mut [0u8; 0][..])?;
        if size > MAX_XATTR_VALUE {
            return Err(io::Error::other(format!(
                "extended attribute {} of {} is larger than {MAX_XATTR_VALUE} bytes",
                String::from_utf8_lossy(name),
                path.display()
            )));
        }
        let mut value = vec![0u8; size];
        let len = rustix::fs::lgetxattr(path, name_str, &mut value[..])?;
        value.truncate(len);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

trait FromBytesCompat {
    fn from_bytes_compat(bytes: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(bytes: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(bytes)
    }
}

/// The data regions of a file that has holes; `None` for a dense file.
///
/// # Errors
/// I/O errors from `lseek`.
pub fn data_extents(file: &File, meta: &Metadata) -> io::Result<Option<Vec<Extent>>> {
    let size = meta.len();
    // Fewer allocated blocks than the size needs: there are holes.
    if size == 0 || meta.blocks().saturating_mul(512) >= size {
        return Ok(None);
    }
    let mut extents = Vec::new();
    let mut at = 0u64;
    while at < size {
        let start = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(at)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(start))?.min(size);
        if end > start {
            extents.push(Extent {
                offset: start,
                len: end - start,
            });
        }
        at = end;
    }
    Ok(Some(extents))
}
