//! Reading file metadata for a snapshot entry: mode, owner, nanosecond
//! mtime, extended attributes and the data regions of sparse files.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
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
            target: target.as_os_str().as_bytes().to_vec(),
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

/// The entry of a non-regular, non-directory file (a symlink, a FIFO, a
/// device), or why it cannot be backed up.
///
/// # Errors
/// The reason, for the user: a socket, or a symlink that cannot be read.
pub fn special_entry(
    path: &Path,
    name: Vec<u8>,
    meta: &Metadata,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<Entry, String> {
    match special_kind(path, meta) {
        Ok(Some(kind)) => Ok(entry(name, meta, kind, xattrs)),
        Ok(None) => Err("unsupported file type (socket?)".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Extended attributes of `path` (not following a final symlink), sorted.
/// A filesystem without xattr support has none.
///
/// # Errors
/// I/O errors other than "not supported".
pub fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    // Linux caps a name list at 64 KiB (XATTR_LIST_MAX); values we accept are
    // capped at MAX_XATTR_VALUE, so fixed buffers of those sizes suffice.
    // Most files have none: ask with a small buffer first, and allocate
    // the large ones only when there is something to read.
    let mut small = [0u8; 1024];
    let names = match rustix::fs::llistxattr(path, &mut small[..]) {
        Ok(0) => return Ok(Vec::new()),
        Ok(len) => small[..len].to_vec(),
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(rustix::io::Errno::RANGE) => {
            let mut names = vec![0u8; 64 * 1024];
            let len = rustix::fs::llistxattr(path, &mut names[..])?;
            names.truncate(len);
            names
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    let mut value = vec![0u8; MAX_XATTR_VALUE];
    for name in names
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty() && n.len() <= MAX_NAME)
    {
        let len =
            match rustix::fs::lgetxattr(path, std::ffi::OsStr::from_bytes(name), &mut value[..]) {
                Ok(len) => len,
                // Removed since listed: nothing to store.
                Err(rustix::io::Errno::NODATA) => continue,
                Err(rustix::io::Errno::RANGE) => {
                    return Err(io::Error::other(format!(
                        "extended attribute {} of {} is larger than {MAX_XATTR_VALUE} bytes",
                        String::from_utf8_lossy(name),
                        path.display()
                    )))
                }
                Err(e) => return Err(e.into()),
            };
        out.push((name.to_vec(), value[..len].to_vec()));
    }
    out.sort();
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattrs_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        rustix::fs::lsetxattr(&path, "user.a", b"1", rustix::fs::XattrFlags::empty()).unwrap();
        assert_eq!(
            read_xattrs(&path).unwrap(),
            vec![(b"user.a".to_vec(), b"1".to_vec())]
        );
    }
}
