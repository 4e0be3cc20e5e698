//! Deterministic test data and a comparable listing of a directory tree.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Pseudo-random bytes (xorshift64*), the same for the same seed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Everything a restore must reproduce about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// "file", "dir", "symlink", "fifo", "other".
    pub kind: &'static str,
    /// Permission bits (not for symlinks, whose mode Linux ignores).
    pub mode: u32,
    /// mtime in ns.
    pub mtime_ns: i64,
    /// Size (files).
    pub size: u64,
    /// BLAKE3 of the content (files).
    pub hash: String,
    /// Symlink target.
    pub target: Vec<u8>,
    /// User xattrs.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Paths sharing this file's inode (hardlink group), by relative path.
    pub links: Vec<Vec<u8>>,
    /// Whether the file has holes (allocated less than its size).
    pub sparse: bool,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// A listing of everything below `root`, keyed by relative path bytes.
///
/// # Panics
/// On I/O errors.
pub fn listing(root: &Path) -> BTreeMap<Vec<u8>, Item> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes);
    for paths in inodes.values().filter(|p| p.len() > 1) {
        for p in paths {
            out.get_mut(p).expect("listed").links = paths.clone();
        }
    }
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<Vec<u8>, Item>,
    inodes: &mut BTreeMap<u64, Vec<Vec<u8>>>,
) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let rel = path
            .strip_prefix(root)
            .expect("below root")
            .as_os_str()
            .as_bytes()
            .to_vec();
        let meta = fs::symlink_metadata(&path).expect("lstat");
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            "file"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let mut item = Item {
            kind,
            mode: if ft.is_symlink() {
                0
            } else {
                meta.mode() & 0o7777
            },
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            size: 0,
            hash: String::new(),
            target: Vec::new(),
            xattrs: user_xattrs(&path),
            links: Vec::new(),
            sparse: false,
            uid: meta.uid(),
            gid: meta.gid(),
        };
        if ft.is_file() {
            item.size = meta.len();
            item.hash = blake3::hash(&fs::read(&path).expect("read"))
                .to_hex()
                .to_string();
            item.sparse = meta.blocks() * 512 < meta.len();
            inodes.entry(meta.ino()).or_default().push(rel.clone());
        }
        if ft.is_symlink() {
            item.target = fs::read_link(&path)
                .expect("readlink")
                .as_os_str()
                .as_bytes()
                .to_vec();
        }
        out.insert(rel, item);
        if ft.is_dir() {
            walk(root, &path, out, inodes);
        }
    }
}

fn user_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let Ok(len) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return Vec::new();
    };
    names.truncate(len);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| n.starts_with(b"user.")) {
        let mut value = vec![0u8; 65536];
        let n =
            rustix::fs::lgetxattr(path, OsStr::from_bytes(name), &mut value[..]).expect("getxattr");
        value.truncate(n);
        out.push((name.to_vec(), value));
    }
    out.sort();
    out
}

/// Sets a user xattr.
///
/// # Panics
/// When the filesystem refuses.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).expect("setxattr");
}

/// Sets a path's mtime (not following symlinks).
///
/// # Panics
/// On I/O errors.
pub fn set_mtime(path: &Path, secs: i64, nanos: i64) {
    let ts = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: nanos as _,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("utimensat");
}

/// Makes a FIFO.
///
/// # Panics
/// On I/O errors.
pub fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .expect("mkfifo");
}

/// A snapshot entry named `name` of `kind`, owned by root, mode 0644 for
/// files (0755 otherwise), time 0, no extended attributes: what tests that
/// make up trees (for raw peers and fake relays) need.
pub fn entry(name: &[u8], kind: ferry_protocol::tree::EntryKind) -> ferry_protocol::tree::Entry {
    let mode = match kind {
        ferry_protocol::tree::EntryKind::File { .. } => 0o644,
        _ => 0o755,
    };
    ferry_protocol::tree::Entry {
        name: name.to_vec(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        xattrs: Vec::new(),
    }
}
