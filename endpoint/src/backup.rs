//! Backup: scan, chunk, upload only what the relay lacks, commit a snapshot.
//!
//! 1. Each requested path is recorded under its absolute path: the root tree
//!    is `/`, with the ancestors of each path as directories.
//! 2. Regular files the files cache knows unchanged are not read. Others are
//!    read a batch of chunks at a time (FastCDC, about 64 KiB each); the
//!    relay is asked which chunks it lacks; each missing chunk goes as an
//!    rsync delta against the chunk at the same place in the file's previous
//!    version when that is smaller, else whole; lz4 only when it shrinks.
//! 3. Trees are built bottom-up and the relay is asked top-down which it
//!    lacks, so an unchanged snapshot costs one query. Missing trees are
//!    uploaded children first, then the snapshot is committed.
//!
//! Memory is bounded by one batch of chunks, whatever the file sizes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, Metadata};
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ferry_protocol::chunking::Chunker;
use ferry_protocol::compress::{compress_with, decompress};
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::{ChunkId, ContentId, TreeId};
use ferry_protocol::message::{Message, ObjectId, Refusal, MAX_BATCH};
use ferry_protocol::tree::{
    ChunkRef, Content, ContentBuilder, ContentPart, Entry, EntryKind, Extent, Tree,
};
use serde::Serialize;

use crate::summary::Totals;

use crate::cache::{CachedFile, FilesCache, Known, SetCache, SetUpdate};
use crate::client::{unexpected, Refused, RelayClient};
use crate::compression::{method_name, Chooser, Compression};
use crate::exclude::Excludes;
use crate::fsmeta;
use crate::hooks::SnapshotScripts;
use crate::uploader::Uploader;

/// Times a file that changes while being read is read again.
const TORN_RETRIES: usize = 3;

/// What a backup did: the `--json` summary.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// The contract figures.
    #[serde(flatten)]
    pub totals: Totals,
    /// Chunks sent whole.
    pub chunks_sent: u64,
    /// Chunks sent as rsync deltas.
    pub chunks_delta: u64,
    /// Trees and contents sent as patches against their previous versions.
    pub objects_patched: u64,
    /// Files that could not be read (named on stderr); the snapshot lacks them.
    pub files_unreadable: u64,
    /// Files and bytes in the snapshot.
    pub files: u64,
    /// Bytes of file data in the snapshot.
    pub bytes: u64,
    /// The compression chunks went with at the end (`lz4`, `zstd-3`, `none`).
    pub compression: String,
    /// One line per unreadable file.
    #[serde(skip)]
    pub errors: Vec<String>,
}

/// What a backup reads.
#[derive(Debug, Clone)]
pub enum Source {
    /// Files and directories, recorded under their absolute paths.
    Paths(Vec<PathBuf>),
    /// A shell command's standard output, stored as one file `name` at the
    /// snapshot's root (a database dump, say).
    Command {
        /// Run with `sh -c`.
        command: String,
        /// The file name for its output.
        name: String,
    },
}

/// One backup of a set, resolved from endpoint.toml and the command line.
#[derive(Debug, Clone)]
pub struct Job {
    /// The backup set.
    pub set: String,
    /// What to read.
    pub source: Source,
    /// What to leave out.
    pub excludes: Excludes,
    /// Filesystem snapshot scripts, when the set requires a snapshot.
    pub hooks: Option<SnapshotScripts>,
    /// This endpoint's upload limit.
    pub limit: ferry_protocol::schedule::Schedule,
    /// The set's retention hints for the relay.
    pub retention: ferry_protocol::retention::Retention,
    /// How chunks are compressed.
    pub compression: Compression,
}

/// Live progress of a backup, and a request to stop it, shared with whoever
/// runs it (the daemon shows the one and sets the other on SIGTERM).
#[derive(Debug, Default)]
pub struct Control {
    /// Set to stop at the next file: what was sent so far is made durable
    /// first, so the next run resumes from there.
    pub stop: std::sync::atomic::AtomicBool,
    /// Files done so far.
    pub files: std::sync::atomic::AtomicU64,
    /// File bytes read so far.
    pub bytes_scanned: std::sync::atomic::AtomicU64,
}

/// A directory under construction.
#[derive(Debug, Default)]
struct DirNode {
    entry: Option<Entry>,
    children: BTreeMap<Vec<u8>, Node>,
}

#[derive(Debug)]
enum Node {
    Dir(DirNode),
    Leaf(Entry),
}

/// Runs one backup of `paths` into `set`.
///
/// # Errors
/// Session failures and a refused commit; unreadable files are not errors
/// but are counted in the summary.
pub async fn run(
    client: &mut RelayClient,
    cache: &mut FilesCache,
    job: &Job,
    control: &Control,
) -> Result<Summary> {
    let (set, source, excludes, hooks) = (
        job.set.as_str(),
        &job.source,
        &job.excludes,
        job.hooks.as_ref(),
    );
    let started = Instant::now();
    let started_ms = crate::now_ms();
    let max_file_allowed = match client
        .request(&Message::BackupBegin {
            set: set.to_string(),
            retention: job.retention,
        })
        .await?
    {
        Message::BackupReady { max_file } => max_file,
        other => return Err(unexpected("BackupReady", &other)),
    };
    let previous = cache.load(set)?;
    let mut run = Backup {
        client,
        cache,
        set: set.to_string(),
        summary: Summary::default(),
        previous,
        changed: Vec::new(),
        hardlinks: HashMap::new(),
        uploader: Uploader::new(Chooser::new(job.compression, {
            let (day, minute) = ferry_net::throttle::local_now();
            job.limit.rate_at(day, minute)
        })),
        excludes,
        view: None,
        control,
        max_file: max_file_allowed,
    };
    let mut root = DirNode::default();
    match source {
        Source::Paths(paths) => {
            for path in paths {
                match hooks {
                    None => run.add_path(&mut root, path, None).await?,
                    Some(hooks) => {
                        let path = absolute(path)?;
                        let uid = crate::hooks::snapshot_uid();
                        let snapshot = hooks.create(&uid, &path, set)?;
                        let added = run.add_path(&mut root, &path, Some(&snapshot)).await;
                        // Always, also after a failure: the snapshot must not outlive the backup.
                        let removed = hooks.remove(&uid, &snapshot, &path, set);
                        added?;
                        removed?;
                    }
                }
            }
        }
        Source::Command { command, name } => run.add_command(&mut root, command, name).await?,
    }
    let mut trees = Trees::default();
    let root_id = trees.build(b"/".to_vec(), root)?;
    run.upload_trees(root_id, &trees).await?;
    let commit = Message::Commit {
        root: root_id,
        files: run.summary.files,
        bytes: run.summary.bytes,
        started_ms,
    };
    let snapshot = match run.client.request(&commit).await {
        Ok(Message::Committed { snapshot }) => snapshot,
        Ok(other) => return Err(unexpected("Committed", &other)),
        Err(e)
            if e.downcast_ref::<Refused>()
                .is_some_and(|r| r.code == Some(Refusal::IncompleteSnapshot)) =>
        {
            // What the cache remembers is no longer whole on the relay
            // (collected after its snapshots were forgotten, or found
            // damaged by `verify`): read everything again.
            run.cache.clear(&run.set)?;
            return Err(StaleCache(format!("{e}")).into());
        }
        Err(e) => return Err(e),
    };
    let Backup {
        client,
        cache,
        set,
        mut summary,
        previous,
        changed,
        uploader,
        ..
    } = run;
    cache.save(&set, &cache_update(previous, changed, trees))?;
    summary.totals.snapshot = snapshot;
    summary.compression = method_name(uploader.chooser().method());
    summary.chunks_sent = uploader.sent().whole;
    summary.chunks_delta = uploader.sent().deltas;
    summary.totals.bytes_sent = client.bytes_sent();
    summary.totals.bytes_received = client.bytes_received();
    summary.totals.duration_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The relay refused the commit because something the files cache named
/// is not whole there any more; the cache was cleared, and a backup run
/// again reads and sends what is missing.
#[derive(Debug, thiserror::Error)]
#[error("{0}; the files cache was cleared")]
pub struct StaleCache(String);

/// Makes `path` absolute and lexically normal (no `.` or `..`), without
/// resolving symlinks: a symlink given on the command line is stored as one.
///
/// # Errors
/// When the current directory cannot be read.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

fn names(path: &Path) -> Vec<Vec<u8>> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes().to_vec()),
            _ => None,
        })
        .collect()
}

/// A snapshot's trees, built bottom-up.
#[derive(Debug, Default)]
struct Trees {
    /// Each distinct tree: its bytes, its subtrees and a directory it is.
    by_id: HashMap<TreeId, BuiltTree>,
    /// Every directory (`/`-separated absolute path) and its tree.
    dirs: Vec<(Vec<u8>, TreeId)>,
}

#[derive(Debug)]
struct BuiltTree {
    bytes: Vec<u8>,
    subtrees: Vec<TreeId>,
    path: Vec<u8>,
}

impl Trees {
    /// Builds `dir`'s tree (found at `path`) and those below it; returns its id.
    fn build(&mut self, path: Vec<u8>, dir: DirNode) -> Result<TreeId> {
        let mut entries = Vec::with_capacity(dir.children.len());
        let mut subtrees = Vec::new();
        for (name, child) in dir.children {
            match child {
                Node::Leaf(entry) => entries.push(entry),
                Node::Dir(mut sub) => {
                    let mut entry = sub.entry.take().context("directory without metadata")?;
                    let mut sub_path = path.clone();
                    if sub_path.len() > 1 {
                        sub_path.push(b'/');
                    }
                    sub_path.extend_from_slice(&name);
                    let id = self.build(sub_path, sub)?;
                    entry.kind = EntryKind::Dir { tree: id };
                    subtrees.push(id);
                    entries.push(entry);
                }
            }
        }
        let (id, bytes) = Tree { entries }.encode()?;
        self.dirs.push((path.clone(), id));
        self.by_id.entry(id).or_insert(BuiltTree {
            bytes,
            subtrees,
            path,
        });
        Ok(id)
    }
}

/// What changed in the files cache: files read (new or changed), files and
/// directories the cache knew that this snapshot lacks, new trees.
fn cache_update(previous: SetCache, files: Vec<(Vec<u8>, CachedFile)>, trees: Trees) -> SetUpdate {
    let files_gone = previous
        .files
        .into_iter()
        .filter(|(_, (_, seen))| !seen)
        .map(|(path, _)| path)
        .collect();
    let mut old_trees = previous.trees;
    let mut changed_trees = Vec::new();
    for (path, id) in trees.dirs {
        if old_trees.remove(&path) != Some(id) {
            changed_trees.push((path, id, trees.by_id[&id].bytes.clone()));
        }
    }
    SetUpdate {
        files,
        files_gone,
        trees: changed_trees,
        trees_gone: old_trees.into_keys().collect(),
    }
}

struct Backup<'a> {
    client: &'a mut RelayClient,
    cache: &'a mut FilesCache,
    set: String,
    summary: Summary,
    /// The cache as this backup found it; files seen again are marked.
    previous: SetCache,
    /// Files read (new or changed), for the next cache.
    changed: Vec<(Vec<u8>, CachedFile)>,
    /// First path (relative to `/`) of each multiply-linked inode.
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    /// The chunk queue, shared by every file.
    uploader: Uploader,
    /// What the set leaves out.
    excludes: &'a Excludes,
    /// While reading a path from a filesystem snapshot: (original, snapshot).
    view: Option<(PathBuf, PathBuf)>,
    /// Progress out, stop requests in.
    control: &'a Control,
    /// The largest single file the relay accepts in this session.
    max_file: Option<u64>,
}

type Boxed<'b, T> = Pin<Box<dyn Future<Output = T> + 'b>>;

impl Backup<'_> {
    /// Adds one requested path and its ancestors to the tree, reading it from
    /// `read_from` (a filesystem snapshot of it) when given.
    async fn add_path(
        &mut self,
        root: &mut DirNode,
        path: &Path,
        read_from: Option<&Path>,
    ) -> Result<()> {
        let path = absolute(path)?;
        let components = names(&path);
        let Some((last, parents)) = components.split_last() else {
            bail!("backing up / itself is not supported; name the directories to back up");
        };
        let mut dir = root;
        let mut at = PathBuf::from("/");
        for name in parents {
            at.push(std::ffi::OsStr::from_bytes(name));
            let meta = std::fs::symlink_metadata(&at)
                .with_context(|| format!("cannot read {}", at.display()))?;
            let xattrs = fsmeta::read_xattrs(&at).unwrap_or_default();
            let node = dir.children.entry(name.clone()).or_insert_with(|| {
                Node::Dir(DirNode {
                    entry: Some(fsmeta::entry(name.clone(), &meta, EntryKind::Fifo, xattrs)),
                    children: BTreeMap::new(),
                })
            });
            dir = match node {
                Node::Dir(d) => d,
                Node::Leaf(_) => bail!(
                    "{} is both a file and a directory in this backup",
                    at.display()
                ),
            };
        }
        let read = read_from.map_or_else(|| path.clone(), Path::to_path_buf);
        let meta = std::fs::symlink_metadata(&read)
            .with_context(|| format!("cannot read {}", read.display()))?;
        self.view = Some((path.clone(), read.clone()));
        let node = self.scan(&read, last.clone(), meta).await;
        self.view = None;
        let node = node?;
        if let Some(node) = node {
            dir.children.insert(last.clone(), node);
        }
        Ok(())
    }

    /// Runs `command` and stores its output as the file `name` at the root.
    async fn add_command(&mut self, root: &mut DirNode, command: &str, name: &str) -> Result<()> {
        ferry_protocol::tree::check_name(name.as_bytes())
            .map_err(|_| anyhow::anyhow!("invalid --name {name:?}: use a plain file name"))?;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {command:?}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let key = format!("command:{name}").into_bytes();
        let cached = self.known(&key);
        let previous = self.previous_chunks(&key, cached.as_ref())?;
        let stored = self.store_data(stdout, previous.as_ref()).await;
        let status = child.wait()?;
        let (content_id, content) = stored?;
        if !status.success() {
            bail!("the command {command:?} failed ({status}); no snapshot was made");
        }
        let size = content.len();
        if cached.is_some() {
            self.summary.totals.files_changed += 1;
        } else {
            self.summary.totals.files_new += 1;
        }
        self.summary.files += 1;
        self.summary.bytes += size;
        let entry = Entry {
            name: name.as_bytes().to_vec(),
            kind: EntryKind::File {
                size,
                content: content_id,
                sparse: None,
            },
            mode: 0o600,
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            mtime_ns: crate::now_ms().saturating_mul(1_000_000),
            xattrs: Vec::new(),
        };
        let record = CachedFile {
            known: Known {
                size,
                mtime_ns: 0,
                ctime_ns: 0,
                inode: 0,
                content: content_id,
                sparse: None,
            },
            chunks: content,
        };
        self.changed.push((key, record));
        root.children
            .insert(name.as_bytes().to_vec(), Node::Leaf(entry));
        Ok(())
    }

    /// Scans one path; `None` when it could not be read (counted, named).
    fn scan<'b>(
        &'b mut self,
        path: &'b Path,
        name: Vec<u8>,
        meta: Metadata,
    ) -> Boxed<'b, Result<Option<Node>>> {
        Box::pin(async move {
            let xattrs = match fsmeta::read_xattrs(path) {
                Ok(x) => x,
                Err(e) => {
                    self.unreadable(path, &e.to_string());
                    Vec::new()
                }
            };
            if meta.is_dir() {
                let mut dir = DirNode {
                    entry: Some(fsmeta::entry(name, &meta, EntryKind::Fifo, xattrs)),
                    children: BTreeMap::new(),
                };
                let listing = match std::fs::read_dir(path) {
                    Ok(listing) => listing,
                    Err(e) => {
                        self.unreadable(path, &e.to_string());
                        return Ok(Some(Node::Dir(dir)));
                    }
                };
                let mut children: Vec<Vec<u8>> = Vec::new();
                for item in listing {
                    match item {
                        Ok(item) => children.push(item.file_name().as_bytes().to_vec()),
                        Err(e) => self.unreadable(path, &e.to_string()),
                    }
                }
                children.sort();
                for child in children {
                    if self.control.stop.load(std::sync::atomic::Ordering::Relaxed) {
                        self.uploader.flush(self.client).await?;
                        bail!("stopped; what was sent is kept and the next run resumes from there");
                    }
                    let child_path = path.join(std::ffi::OsStr::from_bytes(&child));
                    if self.excludes.excludes(&self.recorded(&child_path)) {
                        continue;
                    }
                    let child_meta = match std::fs::symlink_metadata(&child_path) {
                        Ok(m) => m,
                        Err(e) => {
                            self.unreadable(&child_path, &e.to_string());
                            continue;
                        }
                    };
                    if let Some(node) = self.scan(&child_path, child.clone(), child_meta).await? {
                        dir.children.insert(child, node);
                    }
                }
                return Ok(Some(Node::Dir(dir)));
            }
            if meta.is_file() {
                let rel = self.recorded(path).as_os_str().as_bytes()[1..].to_vec();
                if meta.nlink() > 1 {
                    if let Some(first) = self.hardlinks.get(&(meta.dev(), meta.ino())) {
                        let kind = EntryKind::Hardlink {
                            target: first.clone(),
                        };
                        return Ok(Some(Node::Leaf(fsmeta::entry(name, &meta, kind, xattrs))));
                    }
                    self.hardlinks.insert((meta.dev(), meta.ino()), rel);
                }
                return match self.file(path, &meta).await? {
                    Some((kind, meta)) => {
                        Ok(Some(Node::Leaf(fsmeta::entry(name, &meta, kind, xattrs))))
                    }
                    None => Ok(None),
                };
            }
            match fsmeta::special_kind(path, &meta) {
                Ok(Some(kind)) => Ok(Some(Node::Leaf(fsmeta::entry(name, &meta, kind, xattrs)))),
                Ok(None) => {
                    self.unreadable(path, "unsupported file type (socket?)");
                    Ok(None)
                }
                Err(e) => {
                    self.unreadable(path, &e.to_string());
                    Ok(None)
                }
            }
        })
    }

    fn unreadable(&mut self, path: &Path, why: &str) {
        let shown = self.recorded(path);
        self.summary.files_unreadable += 1;
        self.summary
            .errors
            .push(format!("{}: {why}", shown.display()));
    }

    /// The path a file is recorded under: while reading from a filesystem
    /// snapshot, its original path.
    fn recorded(&self, read: &Path) -> PathBuf {
        match &self.view {
            Some((original, snapshot)) => match read.strip_prefix(snapshot) {
                Ok(rest) if rest.as_os_str().is_empty() => original.clone(),
                Ok(rest) => original.join(rest),
                Err(_) => read.to_path_buf(),
            },
            None => read.to_path_buf(),
        }
    }

    /// Stores one regular file; returns its entry kind and the metadata it
    /// was read under, or `None` when it could not be read.
    async fn file(
        &mut self,
        path: &Path,
        scanned: &Metadata,
    ) -> Result<Option<(EntryKind, Metadata)>> {
        let key = self.recorded(path).as_os_str().as_bytes().to_vec();
        let cached = self.known(&key);
        // Unchanged since the cache saw it (by the scan's lstat): not opened.
        if let Some(c) = cached.as_ref().filter(|c| unchanged(c, scanned)) {
            if self.max_file.is_none_or(|max| c.size <= max) {
                self.summary.totals.files_unchanged += 1;
                self.count(scanned);
                let kind = EntryKind::File {
                    size: c.size,
                    content: c.content,
                    sparse: c.sparse.clone(),
                };
                return Ok(Some((kind, scanned.clone())));
            }
        }
        let mut previous = None;
        for _ in 0..TORN_RETRIES {
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(path)
            {
                Ok(file) => file,
                Err(e) => {
                    self.unreadable(path, &e.to_string());
                    return Ok(None);
                }
            };
            let before = file.metadata()?;
            if let Some(max) = self.max_file.filter(|max| before.len() > *max) {
                self.unreadable(
                    path,
                    &format!(
                        "{} bytes is more than the relay accepts for a single file over the internet ({max} bytes); back it up from the LAN",
                        before.len()
                    ),
                );
                return Ok(None);
            }
            if let Some(c) = cached.as_ref().filter(|c| unchanged(c, &before)) {
                self.summary.totals.files_unchanged += 1;
                self.count(&before);
                let kind = EntryKind::File {
                    size: c.size,
                    content: c.content,
                    sparse: c.sparse.clone(),
                };
                return Ok(Some((kind, before)));
            }
            if previous.is_none() {
                previous = self.previous_chunks(&key, cached.as_ref())?;
            }
            let extents = fsmeta::data_extents(&file, &before)?;
            let whole = [Extent {
                offset: 0,
                len: before.len(),
            }];
            let reader = ExtentReader::new(file, extents.as_deref().unwrap_or(&whole));
            let stored = self.store_data(reader, previous.as_ref()).await;
            let (content_id, content) = match stored {
                Ok(done) => done,
                Err(e) if e.downcast_ref::<io::Error>().is_some() => {
                    self.unreadable(path, &format!("{e:#}"));
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let after = std::fs::symlink_metadata(path)?;
            if !same_version(&before, &after) {
                continue;
            }
            if cached.is_some() {
                self.summary.totals.files_changed += 1;
            } else {
                self.summary.totals.files_new += 1;
            }
            self.count(&before);
            let record = CachedFile {
                known: Known {
                    size: before.len(),
                    mtime_ns: fsmeta::mtime_ns(&before),
                    ctime_ns: fsmeta::ctime_ns(&before),
                    inode: before.ino(),
                    content: content_id,
                    sparse: extents.clone(),
                },
                chunks: content,
            };
            self.changed.push((key, record));
            let kind = EntryKind::File {
                size: before.len(),
                content: content_id,
                sparse: extents,
            };
            return Ok(Some((kind, before)));
        }
        self.unreadable(
            path,
            &format!("changed while being read, {TORN_RETRIES} times; not stored"),
        );
        Ok(None)
    }

    /// What the cache knew of `key`; marks it seen, so it stays cached.
    fn known(&mut self, key: &[u8]) -> Option<Known> {
        let (known, seen) = self.previous.files.get_mut(key)?;
        *seen = true;
        Some(known.clone())
    }

    /// The chunk list of a file's cached version: the bases for its deltas.
    fn previous_chunks(&self, key: &[u8], known: Option<&Known>) -> Result<Option<Content>> {
        match known {
            Some(k) => self.cache.chunks(&self.set, key, &k.content),
            None => Ok(None),
        }
    }

    fn count(&mut self, meta: &Metadata) {
        self.control
            .files
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.summary.files += 1;
        self.summary.bytes += meta.len();
    }

    /// Chunks and uploads a stream's data; returns its content.
    async fn store_data(
        &mut self,
        reader: impl Read,
        previous: Option<&Content>,
    ) -> Result<(ContentId, Content)> {
        let mut builder = ContentBuilder::default();
        let mut bases = previous.map(Bases::new);
        let mut parts_cut = 0;
        for chunk in Chunker::new(reader) {
            let chunk = chunk?;
            self.summary.totals.bytes_scanned += chunk.data.len() as u64;
            self.control.bytes_scanned.fetch_add(
                chunk.data.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            let part = builder.push(ChunkRef {
                id: chunk.id,
                len: chunk.data.len() as u32,
            });
            let base = match bases.as_mut() {
                Some(b) => self.base_at(b, chunk.offset).await?,
                None => None,
            };
            // The previous version had this very chunk here: the relay holds
            // it (the commit checks, and a refusal clears the files cache).
            if base != Some(chunk.id) {
                self.uploader.push(self.client, chunk, base).await?;
            }
            if let Some((id, bytes)) = part {
                let base = bases.as_ref().and_then(|b| b.part_base(parts_cut));
                self.put_content(id, &bytes, base).await?;
                parts_cut += 1;
            }
        }
        let (content, last_part) = builder.finish();
        if let Some((id, bytes)) = last_part {
            let base = bases.as_ref().and_then(|b| b.part_base(parts_cut));
            self.put_content(id, &bytes, base).await?;
        }
        let (id, bytes) = content.encode();
        let previous = previous.map(Content::encode);
        let base = previous.as_ref().map(|(id, bytes)| (*id, bytes.as_slice()));
        self.put_content(id, &bytes, base).await?;
        Ok((id, content))
    }

    /// Sends a content, patched against the previous version's `base` when
    /// there is one; not at all when it is that version (the relay has it).
    async fn put_content(
        &mut self,
        id: ContentId,
        bytes: &[u8],
        base: Option<(ContentId, &[u8])>,
    ) -> Result<()> {
        if base.is_some_and(|(base, _)| base == id) {
            return Ok(());
        }
        let base = base.map(|(base, bytes)| (ObjectId::Content(base), bytes));
        self.put_object(ObjectId::Content(id), bytes, base).await
    }

    /// Sends an object: as a patch against `base` (an object the relay
    /// holds: the same directory's or file's previous version) when that is
    /// smaller, else whole.
    async fn put_object(
        &mut self,
        id: ObjectId,
        bytes: &[u8],
        base: Option<(ObjectId, &[u8])>,
    ) -> Result<()> {
        let (codec, data) = compress_with(self.uploader.chooser().method(), bytes);
        if let Some((base, base_bytes)) = base {
            let patch = ferry_protocol::patch::diff(base_bytes, bytes);
            if patch.len() < data.len() {
                self.summary.objects_patched += 1;
                return self
                    .client
                    .send(&Message::PutObjectPatch { id, base, patch })
                    .await;
            }
        }
        self.client
            .send(&Message::PutObject { id, codec, data })
            .await
    }

    /// The previous version's chunk at `offset`, loading the part of a large
    /// file's content that covers it when needed.
    async fn base_at(&mut self, bases: &mut Bases, offset: u64) -> Result<Option<ChunkId>> {
        if let Some(index) = bases.part_needed(offset) {
            let id = bases.parts[index].1.id;
            let part = match self
                .client
                .request(&Message::GetObject {
                    id: ObjectId::Content(id),
                })
                .await?
            {
                Message::Object { codec, data } => decompress(codec, data, MAX_MESSAGE)?,
                other => return Err(unexpected("Object", &other)),
            };
            bases.load(index, id, part)?;
        }
        Ok(bases.at(offset))
    }

    /// Asks top-down which trees the relay lacks, uploads them children
    /// first, and makes them durable.
    async fn upload_trees(&mut self, root: TreeId, trees: &Trees) -> Result<()> {
        // Every chunk durable (rejected deltas resent) before any tree is.
        self.uploader.flush(self.client).await?;
        let mut to_check = vec![root];
        let mut missing_order = Vec::new();
        let mut queued = HashSet::from([root]);
        while !to_check.is_empty() {
            let take = to_check.len().min(MAX_BATCH);
            let batch: Vec<TreeId> = to_check.drain(..take).collect();
            let ids = batch.iter().map(|t| ObjectId::Tree(*t)).collect();
            let missing = match self.client.request(&Message::QueryObjects { ids }).await? {
                Message::ObjectsMissing { ids } => ids,
                other => return Err(unexpected("ObjectsMissing", &other)),
            };
            for id in missing {
                let ObjectId::Tree(tree) = id else { continue };
                missing_order.push(tree);
                if let Some(built) = trees.by_id.get(&tree) {
                    to_check.extend(built.subtrees.iter().filter(|c| queued.insert(**c)));
                }
            }
        }
        for tree in missing_order.iter().rev() {
            let built = trees
                .by_id
                .get(tree)
                .context("relay asked for an unknown tree")?;
            // The same directory's tree in the cached snapshot: the relay has it.
            let base = match self.previous.trees.get(&built.path) {
                Some(old) if old != tree => self
                    .cache
                    .tree(&self.set, &built.path, old)?
                    .map(|bytes| (*old, bytes)),
                _ => None,
            };
            let base = base
                .as_ref()
                .map(|(old, bytes)| (ObjectId::Tree(*old), bytes.as_slice()));
            self.put_object(ObjectId::Tree(*tree), &built.bytes, base)
                .await?;
        }
        if !crate::uploader::sync(self.client).await?.is_empty() {
            bail!("the relay rejected chunks while storing trees");
        }
        Ok(())
    }
}

/// Same size, mtime, ctime and inode as when cached.
fn unchanged(cached: &Known, meta: &Metadata) -> bool {
    cached.size == meta.len()
        && cached.mtime_ns == fsmeta::mtime_ns(meta)
        && cached.ctime_ns == fsmeta::ctime_ns(meta)
        && cached.inode == meta.ino()
}

/// Whether a file was not modified between two looks at it.
fn same_version(before: &Metadata, after: &Metadata) -> bool {
    before.len() == after.len()
        && fsmeta::mtime_ns(before) == fsmeta::mtime_ns(after)
        && fsmeta::ctime_ns(before) == fsmeta::ctime_ns(after)
        && before.ino() == after.ino()
}

/// The previous version's chunks by offset: the base for a new chunk is the
/// old chunk that covered the same offset. For a large file only one part of
/// the old chunk list is held at a time.
struct Bases {
    /// (start, id) of the chunks in view: the whole file, or one part.
    view: Vec<(u64, ChunkId)>,
    /// End of the view.
    view_end: u64,
    /// (start, part) of each part of a large file.
    parts: Vec<(u64, ContentPart)>,
    /// The last parts loaded (index, id, bytes): bases for the new parts.
    loaded: Vec<(usize, ContentId, Vec<u8>)>,
}

impl Bases {
    fn new(content: &Content) -> Self {
        let mut bases = Bases {
            view: Vec::new(),
            view_end: 0,
            parts: Vec::new(),
            loaded: Vec::new(),
        };
        let mut at = 0u64;
        for part in &content.parts {
            bases.parts.push((at, *part));
            at += part.len;
        }
        bases.show(0, &content.chunks);
        bases
    }

    fn show(&mut self, mut at: u64, chunks: &[ChunkRef]) {
        self.view.clear();
        for c in chunks {
            self.view.push((at, c.id));
            at += u64::from(c.len);
        }
        self.view_end = at;
    }

    /// The part to load before `offset` can be answered, if any.
    fn part_needed(&self, offset: u64) -> Option<usize> {
        let in_view =
            self.view.first().is_some_and(|(start, _)| *start <= offset) && offset < self.view_end;
        if in_view || self.parts.is_empty() {
            return None;
        }
        self.parts
            .partition_point(|(start, _)| *start <= offset)
            .checked_sub(1)
    }

    /// Shows part `index`, whose encoded bytes are `bytes`, checked against `id`.
    fn load(&mut self, index: usize, id: ContentId, bytes: Vec<u8>) -> Result<()> {
        let part = Content::decode(&id, &bytes)?;
        let start = self.parts[index].0;
        self.show(start, &part.chunks);
        if self.loaded.len() == 2 {
            self.loaded.remove(0);
        }
        self.loaded.push((index, id, bytes));
        Ok(())
    }

    /// The old part to patch new part `index` against: the old part of the
    /// same index when loaded, else the last one loaded.
    fn part_base(&self, index: usize) -> Option<(ContentId, &[u8])> {
        let (_, id, bytes) = self
            .loaded
            .iter()
            .find(|(i, _, _)| *i == index)
            .or(self.loaded.last())?;
        Some((*id, bytes.as_slice()))
    }

    fn at(&self, offset: u64) -> Option<ChunkId> {
        if offset >= self.view_end {
            return None;
        }
        let i = self
            .view
            .partition_point(|(start, _)| *start <= offset)
            .checked_sub(1)?;
        Some(self.view[i].1)
    }
}

/// Reads the data regions of a file one after another (all of it when dense).
struct ExtentReader<'e> {
    file: File,
    extents: &'e [Extent],
    current: usize,
    left: u64,
}

impl<'e> ExtentReader<'e> {
    fn new(file: File, extents: &'e [Extent]) -> Self {
        ExtentReader {
            file,
            extents,
            current: 0,
            left: 0,
        }
    }
}

impl Read for ExtentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            let Some(extent) = self.extents.get(self.current) else {
                return Ok(0);
            };
            self.file.seek(SeekFrom::Start(extent.offset))?;
            self.left = extent.len;
            self.current += 1;
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            // The file shrank under us: the after-check will retry it.
            self.left = 0;
            return Ok(0);
        }
        self.left -= n as u64;
        Ok(n)
    }
}
