//! The mount as FUSE sees it: lookups, attributes, directory listings and
//! links from [`Nodes`]; a file's bytes from its copy in the [`Cache`],
//! fetched through the session (a restore of that one file, checked as
//! every restore is) the first time it is opened. FUSE's threads wait on
//! the session's runtime; several files may be open and read at once.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Result;
use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

use super::cache::Cache;
use super::nodes::{NodeKind, Nodes};
use super::remote::Remote;

/// How long the kernel may keep what it was told: a snapshot never changes.
const TTL: Duration = Duration::from_secs(3600);
/// ...but the list of sets and snapshots does, and `latest` moves.
const LISTING_TTL: Duration = Duration::from_secs(1);
/// The relay is asked for new snapshots at most this often, when someone
/// looks at the list of sets or snapshots.
const REFRESH: Duration = Duration::from_secs(5);

/// A file opened first is fetched with the files beside it in its
/// directory not held yet, up to this many bytes in all: one restore,
/// a few round trips, instead of one per file as `cp -a` opens them.
const BESIDE_BYTES: u64 = 32 << 20;
/// ...and up to this many files.
const BESIDE_FILES: usize = 512;

/// The mounted snapshots.
pub struct SnapshotFs {
    nodes: RwLock<Nodes>,
    cache: Cache,
    remote: Remote,
    /// Open files by handle, with their copy's path.
    handles: Mutex<HashMap<u64, (PathBuf, Arc<File>)>>,
    next_handle: AtomicU64,
    runtime: tokio::runtime::Handle,
    /// Only this set's snapshots are shown, if given.
    set: Option<String>,
    /// When the list of snapshots was last asked for.
    refreshed: Mutex<std::time::Instant>,
}

impl SnapshotFs {
    /// The filesystem over `nodes`, fetching through `remote` into `cache`
    /// on `runtime`; only `set`'s snapshots, if given.
    pub fn new(
        nodes: Nodes,
        (cache, remote): (Cache, Remote),
        runtime: tokio::runtime::Handle,
        set: Option<String>,
    ) -> Self {
        Self {
            nodes: RwLock::new(nodes),
            cache,
            remote,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            runtime,
            set,
            refreshed: Mutex::new(std::time::Instant::now()),
        }
    }

    /// Whether `ino` is the root, `sets` or a set's directory: listings
    /// that grow as backups are made.
    fn is_listing(&self, ino: u64) -> bool {
        let nodes = self.nodes();
        let sets = nodes.lookup(1, b"sets");
        ino == 1 || Some(ino) == sets || nodes.get(ino).is_some_and(|n| Some(n.parent) == sets)
    }

    /// How long the kernel may keep `ino`'s entry and attributes.
    fn ttl(&self, ino: u64) -> Duration {
        let parent = self.nodes().get(ino).map_or(1, |n| n.parent);
        if self.is_listing(ino) || self.is_listing(parent) {
            LISTING_TTL
        } else {
            TTL
        }
    }

    /// Adds the snapshots made since the last look, when `ino` is a
    /// listing and the last look is [`REFRESH`] old. A relay that does not
    /// answer leaves the listing as it was.
    fn refresh(&self, ino: u64) {
        if !self.is_listing(ino) {
            return;
        }
        {
            let mut last = self
                .refreshed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.elapsed() < REFRESH {
                return;
            }
            *last = std::time::Instant::now();
        }
        match self
            .runtime
            .block_on(self.remote.snapshots(self.set.clone()))
        {
            Ok(snapshots) => {
                let mut nodes = self
                    .nodes
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let added = nodes.add_snapshots(&snapshots);
                if added > 0 {
                    tracing::info!("mount: {added} new snapshot(s)");
                }
            }
            Err(e) => tracing::warn!("mount: cannot list new snapshots: {e:#}"),
        }
    }

    fn nodes(&self) -> std::sync::RwLockReadGuard<'_, Nodes> {
        self.nodes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads snapshot root `ino`'s entries if not yet read.
    fn read_snapshot(&self, ino: u64) -> Result<(), Errno> {
        let Some(NodeKind::Unread(snapshot)) = self.nodes().get(ino).map(|n| n.kind.clone()) else {
            return Ok(());
        };
        let listed = self
            .runtime
            .block_on(self.remote.listing(snapshot))
            .map_err(|e| {
                tracing::error!("cannot read snapshot {snapshot}: {e:#}");
                Errno::EIO
            })?;
        let mut nodes = self
            .nodes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(nodes.get(ino).map(|n| &n.kind), Some(NodeKind::Unread(_))) {
            nodes.fill(ino, snapshot, listed);
        }
        Ok(())
    }

    /// Inode `ino`'s copy and its path, fetched first (with files beside
    /// it) if not held; counted open.
    fn open_copy(&self, ino: u64) -> Result<(PathBuf, File), Errno> {
        let Some(NodeKind::File { snapshot, path }) = self.nodes().get(ino).map(|n| n.kind.clone())
        else {
            return Err(Errno::EISDIR);
        };
        let asked = absolute(&path);
        let copy = self.cache.path_of(snapshot, &asked);
        if let Some(file) = self.cache.open(&copy) {
            return Ok((copy, file));
        }
        self.runtime
            .block_on(async {
                let _one = self.remote.fetching().await;
                // Another thread may have fetched it meanwhile.
                if let Some(file) = self.cache.open(&copy) {
                    return Ok(file);
                }
                let paths = self.beside(ino, snapshot, asked.clone());
                let into = self.cache.snapshot_dir(snapshot);
                self.remote.fetch(snapshot, paths.clone(), into).await?;
                let mut fetched = Vec::with_capacity(paths.len());
                for path in paths {
                    let at = self.cache.path_of(snapshot, &path);
                    fetched.push((at.clone(), std::fs::metadata(&at)?.len()));
                }
                Ok(self.cache.insert_open(&fetched, &copy)?)
            })
            .map(|file| (copy.clone(), file))
            .map_err(|e: anyhow::Error| {
                tracing::error!(
                    "cannot fetch {} of snapshot {snapshot}: {e:#}",
                    asked.display()
                );
                Errno::EIO
            })
    }

    /// `asked` (file `ino`'s path) and the files of its directory not
    /// held yet, within [`BESIDE_BYTES`] and [`BESIDE_FILES`].
    fn beside(&self, ino: u64, snapshot: u64, asked: PathBuf) -> Vec<PathBuf> {
        let nodes = self.nodes();
        let mut paths = vec![asked];
        let mut bytes = nodes.get(ino).map_or(0, |n| n.attr.size);
        let parent = nodes.get(ino).map_or(0, |n| n.parent);
        let Some(NodeKind::Dir(children)) = nodes.get(parent).map(|n| &n.kind) else {
            return paths;
        };
        for child in children.values().filter(|c| **c != ino) {
            let Some(node) = nodes.get(*child) else {
                continue;
            };
            let NodeKind::File { path, .. } = &node.kind else {
                continue;
            };
            let path = absolute(path);
            if paths.len() >= BESIDE_FILES || bytes + node.attr.size > BESIDE_BYTES {
                break;
            }
            if !self.cache.holds(&self.cache.path_of(snapshot, &path)) && !paths.contains(&path) {
                bytes += node.attr.size;
                paths.push(path);
            }
        }
        paths
    }
}

/// A snapshot path's components as an absolute path.
fn absolute(path: &[Vec<u8>]) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path {
        out.push(OsStr::from_bytes(c));
    }
    out
}

impl Filesystem for SnapshotFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if let Err(e) = self.read_snapshot(parent.0) {
            return reply.error(e);
        }
        // A name not known yet may be a snapshot made since the mount.
        let found = self.nodes().lookup(parent.0, name.as_bytes());
        let found = found.or_else(|| {
            self.refresh(parent.0);
            self.nodes().lookup(parent.0, name.as_bytes())
        });
        let attr = found.and_then(|ino| self.nodes().get(ino).map(|n| n.attr));
        match (found, attr) {
            (Some(ino), Some(attr)) => reply.entry(&self.ttl(ino), &attr, Generation(0)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let attr = self.nodes().get(ino.0).map(|n| n.attr);
        match attr {
            Some(attr) => reply.attr(&self.ttl(ino.0), &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.nodes().get(ino.0).map(|n| &n.kind) {
            Some(NodeKind::Symlink(target)) => reply.data(target),
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & (libc_write_flags()) != 0 {
            return reply.error(Errno::EROFS);
        }
        match self.open_copy(ino.0) {
            Ok((copy, file)) => {
                let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
                self.handles
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(handle, (copy, Arc::new(file)));
                reply.opened(FileHandle(handle), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let file = self
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&fh.0)
            .map(|(_, f)| Arc::clone(f));
        let Some(file) = file else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return reply.error(Errno::EIO),
            }
        }
        reply.data(&buf[..filled]);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let closed = self
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&fh.0);
        if let Some((copy, _)) = closed {
            self.cache.release(&copy);
        }
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let nodes = self.nodes();
        let value = nodes.get(ino.0).and_then(|n| {
            n.xattrs
                .iter()
                .find(|(k, _)| k.as_slice() == name.as_bytes())
        });
        match value {
            None => reply.error(Errno::NO_XATTR),
            Some((_, value)) => xattr_reply(value, size, reply),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let names: Vec<u8> = self.nodes().get(ino.0).map_or_else(Vec::new, |n| {
            n.xattrs
                .iter()
                .flat_map(|(k, _)| k.iter().copied().chain([0]))
                .collect()
        });
        xattr_reply(&names, size, reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if let Err(e) = self.read_snapshot(ino.0) {
            return reply.error(e);
        }
        if offset == 0 {
            self.refresh(ino.0);
        }
        let nodes = self.nodes();
        let Some(node) = nodes.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let NodeKind::Dir(children) = &node.kind else {
            return reply.error(Errno::ENOTDIR);
        };
        let dots = [
            (ino.0, FileType::Directory, OsStr::new(".")),
            (node.parent, FileType::Directory, OsStr::new("..")),
        ];
        let named = children.iter().filter_map(|(name, child)| {
            let kind = nodes.get(*child)?.attr.kind;
            Some((*child, kind, OsStr::from_bytes(name)))
        });
        for (i, (child, kind, name)) in dots
            .into_iter()
            .chain(named)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// Answers an xattr request: the size when asked for it (`size` 0), the
/// bytes when they fit, else ERANGE.
fn xattr_reply(value: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() <= size as usize {
        reply.data(value);
    } else {
        reply.error(Errno::ERANGE);
    }
}

/// The open flags that would write (O_WRONLY, O_RDWR, O_TRUNC, O_APPEND).
fn libc_write_flags() -> i32 {
    use rustix::fs::OFlags;
    (OFlags::WRONLY | OFlags::RDWR | OFlags::TRUNC | OFlags::APPEND).bits() as i32
}
