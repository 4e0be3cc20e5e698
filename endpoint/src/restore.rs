//! Restore: rebuild a snapshot (or part of it) under a target directory,
//! moving only what the target lacks.
//!
//! For each file: if the target already holds the same content, only its
//! metadata is set. Otherwise the target's current version (if any) is
//! chunked; chunks it already has are copied locally, and for each of the
//! others the relay sends a delta against the target's chunk at the same
//! place (we send that chunk's signature), or the whole chunk. Requests go
//! out as a stream, as far ahead of the writes as a window allows, and
//! answers are written as they arrive (see `stream`). Every chunk is
//! checked against its BLAKE3 id before it is written. Data goes to a
//! temporary file beside the name, which takes the file's metadata and
//! starts its writeback; once a batch of such files is written, a thread
//! fsyncs each (by then its data is mostly on disk) and renames it over its
//! name while the next batch is received and written, so a file
//! under its final name always has durable data (what an interrupted
//! restore's quick check relies on). Symlinks are created after everything
//! else, and directory metadata last, deepest first, so nothing later
//! disturbs it.
//!
//! The pieces: `prefetch` (the trees, fetched ahead), `walk` (the trees,
//! entry by entry), `files` (whether a file needs writing, its temporary
//! file), `stream` (contents and chunks asked ahead and written as they
//! arrive), `settle` (written files made durable and renamed in batches,
//! on a thread), `local` (what the target holds, and where a content's
//! bytes go).

mod files;
mod local;
mod prefetch;
mod settle;
mod stream;
mod walk;
mod window;

use crate::progress::Live;
use ferry_protocol::layout::Layout;
use files::{FileEntry, Output, Written};
use local::{write_content, LocalFile};
use settle::{Failure, Settler};
use stream::{Job, Stream};

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ferry_protocol::compress::decompress;
use ferry_protocol::delta;
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::{ChunkId, ContentId, TreeId};
use ferry_protocol::message::{Message, ObjectId};
use ferry_protocol::tree::{ChunkRef, Content, Entry, EntryKind};
use serde::Serialize;

use crate::summary::Totals;

use crate::client::RelayClient;
pub(crate) use crate::snapshot::{
    chunk_damaged, chunk_data, chunk_file, decode_content, decode_tree, fits_file, max_chunks,
    object_bytes, show_path, Damaged,
};
pub use crate::snapshot::{resolve, Selector};
use crate::target::Target;

/// Chunk requests `ferry verify` keeps in flight.
pub const WINDOW: usize = 16;

/// What to restore and where.
#[derive(Debug, Clone)]
pub struct Request {
    /// The backup set (`None`: any set, for `-b ID`).
    pub set: Option<String>,
    /// Which snapshot.
    pub snapshot: Selector,
    /// Restore what was under this absolute path...
    pub map_from: Option<PathBuf>,
    /// ...into this directory (without `map_from`, absolute paths are recreated below it).
    pub map_to: PathBuf,
    /// Only these absolute paths (as backed up), if any.
    pub paths: Vec<PathBuf>,
    /// Compare existing target files by content even when their size and
    /// modification time match the snapshot's (rsync's `--checksum`).
    pub checksum: bool,
    /// Restore setuid/setgid bits, device nodes and `security.capability`
    /// as root into a directory other than `/` too.
    pub preserve_privileges: bool,
    /// What happens to a local file or symlink that differs.
    pub overwrite: crate::overwrite::Overwrite,
}

/// What a restore did: the `--json` summary.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// The contract figures.
    #[serde(flatten)]
    pub totals: Totals,
    /// Chunks copied from the target's own files.
    pub chunks_local: u64,
    /// Chunks received as deltas.
    pub chunks_delta: u64,
    /// Chunks received whole.
    pub chunks_full: u64,
    /// Entries that could not be restored (named on stderr).
    pub errors: u64,
    /// One line per failed entry (those that did not fit a full disk are
    /// one line together).
    #[serde(skip)]
    pub messages: Vec<String>,
    /// Files left out because the target's disk is full (counted in
    /// `errors`); after the first, nothing more is asked of the relay.
    pub did_not_fit: u64,
    /// The first of them.
    #[serde(skip)]
    pub first_not_fitting: Option<String>,
    /// Local files and symlinks kept by the overwrite policy.
    #[serde(flatten)]
    pub kept: crate::overwrite::Kept,
    /// Local entries `--delete` removed (the snapshot lacks them).
    pub entries_deleted: u64,
    /// Their paths (the first 100).
    pub deleted: Vec<String>,
}

impl Summary {
    /// The lines to tell the user: one per failed entry, and one for all
    /// that did not fit.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = self.messages.clone();
        if let Some(first) = &self.first_not_fitting {
            lines.push(format!(
                "{} file(s): the target's disk is full (No space left on device), from {first} on; nothing more was fetched, and everything restored before it is whole: free some space and run the restore again",
                self.did_not_fit
            ));
        }
        lines
    }
}

/// A restore whose paths the snapshot lacks: nothing was written (the
/// command line then names the newest snapshot that holds them).
#[derive(Debug, thiserror::Error)]
#[error("snapshot {snapshot} holds nothing under {under}")]
pub struct HoldsNothing {
    /// The snapshot.
    pub snapshot: u64,
    /// The paths asked for.
    pub under: String,
}

impl HoldsNothing {
    /// That snapshot `snapshot` holds none of the paths `request` asks for.
    pub fn of(snapshot: u64, request: &Request) -> Self {
        let under: Vec<String> = request
            .map_from
            .iter()
            .chain(&request.paths)
            .map(|p| p.display().to_string())
            .collect();
        HoldsNothing {
            snapshot,
            under: under.join(", "),
        }
    }
}

/// Whether `error` says the disk is full.
pub(crate) fn is_disk_full(error: &str) -> bool {
    error.contains("No space left on device") || error.contains("os error 28")
}

/// A path's names, as a snapshot's paths are kept.
pub(crate) fn components(path: &Path) -> Vec<Vec<u8>> {
    path.components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.as_bytes().to_vec()),
            _ => None,
        })
        .collect()
}

/// Runs a restore.
///
/// # Errors
/// Session failures and an unusable target; entries that fail are counted.
pub async fn run(client: &mut RelayClient, request: &Request, live: &Live) -> Result<Summary> {
    let started = Instant::now();
    let info = resolve(client, request.set.as_deref(), request.snapshot).await?;
    if request.map_from.is_none() && request.paths.is_empty() {
        live.bytes_expected
            .store(info.bytes, std::sync::atomic::Ordering::Relaxed);
    }
    let (target, selection) = open_target(request)?;
    let mut restore = Restore {
        client,
        live,
        target,
        selection,
        summary: Summary {
            totals: Totals {
                snapshot: info.id,
                ..Totals::default()
            },
            ..Summary::default()
        },
        restored: HashMap::new(),
        symlinks: Vec::new(),
        dirs: Vec::new(),
        placed: 0,
        trees: HashMap::new(),
        checksum: request.checksum,
        overwrite: request.overwrite,
        last_dir: None,
        written: Vec::new(),
        written_bytes: 0,
        stream: Stream::new(window::max_files()),
        settler: Settler::start(),
    };
    restore.prefetch_trees(info.root).await?;
    let walked = match restore.walk(info.root, Vec::new(), false).await {
        Ok(()) => restore.drain().await,
        Err(e) => Err(e),
    };
    // Also after a failure: what was written takes its name, for the next run.
    restore.settle_all();
    walked?;
    if restore.placed == 0 {
        // Nothing placed because what holds it is damaged (the root, say):
        // that is the news, not an empty selection.
        if let Some(first) = restore.summary.lines().first() {
            bail!("nothing of snapshot {} could be restored: {first}", info.id);
        }
        return Err(HoldsNothing::of(info.id, request).into());
    }
    restore.finish();
    let mut summary = restore.summary;
    summary.totals.bytes_sent = restore.client.bytes_sent();
    summary.totals.bytes_received = restore.client.bytes_received();
    summary.totals.round_trips = restore.client.round_trips();
    summary.totals.duration_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// What a restore takes from the snapshot, and where it puts it.
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    /// Only what was under this path (components)...
    map_from: Option<Vec<Vec<u8>>>,
    /// ...and under one of these, if any.
    filters: Vec<Vec<Vec<u8>>>,
    /// The name the entry at `map_from` takes below the target (its
    /// contents go into the target itself without one).
    renamed: Option<Vec<u8>>,
}

impl Selection {
    /// Whether the entry at `--map-from` takes `--map-to`'s own name
    /// (rather than going into `--map-to`).
    pub(crate) fn takes_new_name(&self) -> bool {
        self.renamed.is_some()
    }

    /// Everything under `path` (the whole snapshot for `None`), in place.
    pub(crate) fn under(path: Option<Vec<Vec<u8>>>) -> Self {
        Selection {
            map_from: None,
            filters: path.into_iter().collect(),
            renamed: None,
        }
    }
}

/// Whether `path` holds nothing a restore could meet: it does not exist, or
/// is an empty directory (a file there is something: a restore under its
/// name meets it).
pub(crate) fn holds_nothing(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Err(_) => true,
        Ok(meta) if meta.is_dir() => std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none()),
        Ok(_) => false,
    }
}

/// The target a restore writes into, and what it places there. A
/// `--map-to` that names nothing yet (or a file) is where the entry at
/// `--map-from` goes under that very name, file or directory: so
/// `--map-from FILE --map-to NEWNAME` restores the file as NEWNAME (it made
/// an empty directory NEWNAME and restored nothing). A `--map-to` that is a
/// directory takes what was under `--map-from`, as before.
///
/// # Errors
/// A target that cannot be opened (or made).
pub(crate) fn open_target(request: &Request) -> Result<(Target, Selection)> {
    let (base, selection) = selection_of(request);
    let to = &request.map_to;
    let cannot = |e| anyhow::anyhow!("cannot open the target {}: {e}", to.display());
    let target = if selection.renamed.is_some() {
        Target::open_parent_of(to, request.preserve_privileges)
    } else {
        Target::open(&base, request.preserve_privileges)
    };
    Ok((target.map_err(cannot)?, selection))
}

/// The directory entries are placed below (`--map-to`, or its parent when
/// the entry at `--map-from` takes `--map-to`'s name) and what goes
/// there, as [`open_target`] decides, touching nothing.
pub(crate) fn selection_of(request: &Request) -> (PathBuf, Selection) {
    let mut selection = Selection {
        map_from: request.map_from.as_deref().map(components),
        filters: request.paths.iter().map(|p| components(p)).collect(),
        renamed: None,
    };
    let to = &request.map_to;
    let is_dir = std::fs::metadata(to).is_ok_and(|m| m.is_dir());
    match (&selection.map_from, to.file_name()) {
        (Some(from), Some(name)) if !is_dir && !from.is_empty() => {
            selection.renamed = Some(name.as_bytes().to_vec());
            let parent = to.parent().unwrap_or(Path::new("."));
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            (parent.to_path_buf(), selection)
        }
        _ => (to.clone(), selection),
    }
}

/// Where an entry goes.
pub(crate) enum Place {
    /// Not restored.
    Skip,
    /// An ancestor of what is restored: walk into it, create nothing.
    Through,
    /// Restored at this path below the target.
    At(Vec<Vec<u8>>),
}

struct Restore<'a> {
    client: &'a mut RelayClient,
    /// What the progress bar shows.
    live: &'a Live,
    target: Target,
    /// What is restored, and where.
    selection: Selection,
    summary: Summary,
    /// Snapshot path → target path of restored files, for hardlinks.
    restored: HashMap<Vec<Vec<u8>>, Vec<Vec<u8>>>,
    symlinks: Vec<(Vec<Vec<u8>>, Entry, Vec<u8>)>,
    dirs: Vec<(Vec<Vec<u8>>, Entry)>,
    /// Entries selected for restoring (zero means the selection matched nothing).
    placed: u64,
    /// The snapshot's trees, fetched ahead breadth-first in pipelined
    /// batches before the walk (at most `PREFETCH_TREE_BYTES`).
    trees: HashMap<TreeId, Vec<u8>>,
    /// See [`Request::checksum`].
    checksum: bool,
    /// See [`Request::overwrite`].
    overwrite: crate::overwrite::Overwrite,
    /// The directory the last entry went into, kept open: siblings follow
    /// one another, so most entries need no path walk.
    last_dir: Option<(Vec<Vec<u8>>, Arc<OwnedFd>)>,
    /// Files written, not yet durable nor under their names.
    written: Vec<Written>,
    /// Their bytes.
    written_bytes: u64,
    /// The files whose contents and chunks are asked for and being written.
    stream: Stream,
    /// Makes written files durable and renames them, beside the stream.
    settler: Settler,
}

impl Restore<'_> {
    fn fail(&mut self, path: &[Vec<u8>], error: impl std::fmt::Display) {
        self.summary.errors += 1;
        let error = error.to_string();
        if is_disk_full(&error) {
            self.summary.did_not_fit += 1;
            self.summary
                .first_not_fitting
                .get_or_insert_with(|| show_path(path));
            return;
        }
        self.summary
            .messages
            .push(format!("{}: {error}", show_path(path)));
    }

    /// Whether the target's disk filled up: files not started yet are
    /// left out without asking the relay for them.
    fn disk_is_full(&self) -> bool {
        self.summary.first_not_fitting.is_some()
    }

    /// Symlinks last, then directory metadata deepest first.
    fn finish(&mut self) {
        for (at, entry, target) in std::mem::take(&mut self.symlinks) {
            let (name, parent) = at.split_last().expect("symlinks have a name");
            let made = self.target.dir(parent).and_then(|dir| {
                if self.overwrite.keeps(&dir, name, &entry)? {
                    return Ok(false);
                }
                Target::symlink(&dir, name, &target)?;
                self.target.apply_at(&dir, name, &entry, true)?;
                Ok(true)
            });
            match made {
                Ok(true) => {}
                Ok(false) => self.summary.kept.add(show_path(&at)),
                Err(e) => self.fail(&at, e),
            }
        }
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|(at, _)| std::cmp::Reverse(at.len()));
        for (at, entry) in dirs {
            let applied = self
                .target
                .dir(&at)
                .and_then(|fd| self.target.apply_to_fd(&fd, &entry));
            if let Err(e) = applied {
                self.fail(&at, e);
            }
        }
    }
}
