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
//!
//! The pieces: `scan` (paths and commands walked into directory nodes),
//! `files` (one file chunked and sent), `bases` (the previous version as
//! delta bases, sparse-aware reading), `trees` (trees built, uploaded,
//! and the files cache updated).

mod bases;
pub mod estimate;
pub(crate) mod files;
pub mod preview;
pub(crate) mod scan;
mod trees;

use bases::Bases;
pub(crate) use bases::ExtentReader;
use scan::Walker;
use trees::{cache_update, Trees};

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
use ferry_protocol::delta;
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::{ChunkId, ContentId, TreeId};
use ferry_protocol::message::{Message, ObjectId, Refusal};
use ferry_protocol::tree::{
    ChunkRef, Content, ContentBuilder, ContentPart, Entry, EntryKind, Extent, Tree,
};
use serde::Serialize;

use crate::summary::Totals;

use crate::cache::{CachedFile, FilesCache, Known, SetCache, SetUpdate};
use crate::client::{unexpected, ClientError, RelayClient};
use crate::compression::{method_name, Chooser, Compression};
use crate::exclude::Excludes;
use crate::fsmeta;
use crate::hooks::SnapshotScripts;
use crate::uploader::Uploader;

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
    /// One line per unreadable file: its path and why.
    #[serde(rename = "unreadable")]
    pub errors: Vec<String>,
    /// Paths of the set that did not exist, left out (exit 3).
    pub paths_missing: Vec<String>,
}

impl Summary {
    /// Counts a file read whole: changed when the files cache knew it
    /// (`known`), new otherwise.
    pub(crate) fn count_read(&mut self, known: bool) {
        if known {
            self.totals.files_changed += 1;
        } else {
            self.totals.files_new += 1;
        }
    }
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
    /// Files and bytes handled so far, and what crossed the link (the
    /// progress bar and the daemon's status show them).
    pub live: crate::progress::Live,
    /// File bytes read so far.
    pub bytes_scanned: std::sync::atomic::AtomicU64,
}

/// A directory under construction.
#[derive(Debug, Default)]
pub(crate) struct DirNode {
    /// Its own entry (the kind is set once its tree is built).
    pub(crate) entry: Option<Entry>,
    /// What it holds, by name.
    pub(crate) children: BTreeMap<Vec<u8>, Node>,
}

impl DirNode {
    /// The directory's entries, each subdirectory's kind naming the tree
    /// `subtree` builds for it (given its name and node), children first.
    ///
    /// # Errors
    /// What `subtree` returns, and a subdirectory without metadata.
    pub(crate) fn into_entries(
        self,
        mut subtree: impl FnMut(&[u8], DirNode) -> Result<ferry_protocol::ids::TreeId>,
    ) -> Result<Vec<Entry>> {
        let mut entries = Vec::with_capacity(self.children.len());
        for (name, child) in self.children {
            match child {
                Node::Leaf(entry) => entries.push(entry),
                Node::Dir(mut sub) => {
                    let mut entry = sub.entry.take().context("directory without metadata")?;
                    entry.kind = EntryKind::Dir {
                        tree: subtree(&name, sub)?,
                    };
                    entries.push(entry);
                }
            }
        }
        Ok(entries)
    }
}

/// A directory or anything else, as the scan found it.
#[derive(Debug)]
pub(crate) enum Node {
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
    // The last backup's size: what this one likely covers (until a walk
    // of the paths, when one runs, knows better).
    let _ = control.live.bytes_expected.compare_exchange(
        0,
        previous.files.values().map(|(known, _)| known.size).sum(),
        std::sync::atomic::Ordering::Relaxed,
        std::sync::atomic::Ordering::Relaxed,
    );
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
        unsynced_objects: 0,
    };
    let mut root = DirNode::default();
    match source {
        Source::Paths(paths) => {
            for path in paths {
                match hooks {
                    None => run.add_path(&mut root, path, None).await?,
                    Some(hooks) => {
                        let path = absolute(path)?;
                        let (run, root, at) = (&mut run, &mut root, path.clone());
                        hooks
                            .with_snapshot(&path, set, |snapshot| async move {
                                run.add_path(root, &at, Some(&snapshot)).await
                            })
                            .await?;
                    }
                }
            }
        }
        Source::Command { command, name } => run.add_command(&mut root, command, name).await?,
    }
    let mut trees = Trees::default();
    let root_id = trees.build(b"/".to_vec(), root)?;
    run.upload_trees(&trees).await?;
    let labelled = crate::labels::ask(run.client, root_id.0, &label_paths(source), None).await?;
    let commit = Message::Commit {
        root: root_id,
        files: run.summary.files,
        bytes: run.summary.bytes,
        started_ms,
    };
    let answer = crate::labels::commit(run.client, labelled, &commit).await;
    let snapshot = committed(answer, run.cache, &run.set)?;
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
    summary.totals.round_trips = client.round_trips();
    summary.totals.duration_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The snapshot a commit made, from the relay's answer. A commit refused
/// as incomplete means what the files cache remembers is no longer whole
/// on the relay (collected after its snapshots were forgotten, or found
/// damaged by `verify`): the set's cache is cleared and a [`StaleCache`]
/// error says to read everything again.
///
/// # Errors
/// The refusal, or any other answer.
pub(crate) fn committed(
    answer: Result<Message, ClientError>,
    cache: &mut FilesCache,
    set: &str,
) -> Result<u64> {
    match answer {
        Ok(Message::Committed { snapshot }) => Ok(snapshot),
        Ok(other) => Err(unexpected("Committed", &other)),
        Err(ClientError::Refused(r)) if r.code == Some(Refusal::IncompleteSnapshot) => {
            cache.clear(set)?;
            Err(StaleCache(r.to_string()).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The relay refused the commit because something the files cache named
/// is not whole there any more; the cache was cleared, and a backup run
/// again reads and sends what is missing.
#[derive(Debug, thiserror::Error)]
#[error("{0}; the files cache was cleared")]
pub struct StaleCache(pub(crate) String);

/// `job` without the paths that do not exist, and those paths.
///
/// # Errors
/// When none exists.
pub fn without_missing_paths(job: &Job) -> Result<(Job, Vec<String>)> {
    let Source::Paths(paths) = &job.source else {
        return Ok((job.clone(), Vec::new()));
    };
    let (present, missing): (Vec<PathBuf>, Vec<PathBuf>) = paths
        .iter()
        .cloned()
        .partition(|path| std::fs::symlink_metadata(path).is_ok());
    let missing: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
    if present.is_empty() {
        bail!("{}: no such file or directory", missing.join(", "));
    }
    for path in &missing {
        tracing::warn!(
            "set {:?}: {path} does not exist; backing up the rest",
            job.set
        );
        eprintln!("ferry: warning: {path}: no such file or directory; backing up the rest");
    }
    let mut job = job.clone();
    job.source = Source::Paths(present);
    Ok((job, missing))
}

/// What a backup of `source` covers, as its label says it.
pub fn label_paths(source: &Source) -> Vec<String> {
    match source {
        Source::Paths(paths) => paths
            .iter()
            .map(|p| {
                absolute(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string()
            })
            .collect(),
        Source::Command { name, .. } => vec![format!("command:{name}")],
    }
}

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
    /// Trees and contents sent since the last `Sync` this backup asked for
    /// on their account (the relay holds them in memory until one).
    unsynced_objects: usize,
}

impl Backup<'_> {}
