//! Restore: rebuild a snapshot (or part of it) under a target directory,
//! moving only what the target lacks.
//!
//! For each file: if the target already holds the same content, only its
//! metadata is set. Otherwise the target's current version (if any) is
//! chunked; chunks it already has are copied locally, and for each of the
//! others the relay sends a delta against the target's chunk at the same
//! place (we send that chunk's signature), or the whole chunk. Every chunk is
//! checked against its BLAKE3 id before it is written. Data goes to a
//! temporary file beside the name, which takes the file's metadata and
//! starts its writeback; once a batch of such files is written, each is
//! fsynced (by then its data is mostly on disk, so the restore does not wait
//! on one file's writes at a time) and renamed over its name, so a file
//! under its final name always has durable data (what an interrupted
//! restore's quick check relies on). Symlinks are created after everything
//! else, and directory metadata last, deepest first, so nothing later
//! disturbs it.

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
use ferry_protocol::chunking::{Chunker, MAX_CHUNK};
use ferry_protocol::compress::decompress;
use ferry_protocol::delta;
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::{ChunkId, ContentId, TreeId};
use ferry_protocol::message::{Message, ObjectId, SnapshotInfo};
use ferry_protocol::tree::{ChunkRef, Content, ContentBuilder, Entry, EntryKind, Extent, Tree};
use serde::Serialize;

use crate::summary::Totals;

use crate::client::{unexpected, Refused, RelayClient};
use crate::target::Target;

/// Requests kept in flight (and chunks queued for writing) at a time.
pub const WINDOW: usize = 16;

/// Files written before they are made durable and take their names (each
/// holds itself and its directory open: well under the usual 1024 fds).
const SETTLE_FILES: usize = 128;
/// Bytes written before the same.
const SETTLE_BYTES: u64 = 128 << 20;

/// A file written to a temporary name, waiting to be made durable and renamed.
struct Written {
    file: File,
    dir: Arc<OwnedFd>,
    tmp: Vec<u8>,
    name: Vec<u8>,
    snapshot_path: Vec<Vec<u8>>,
}

/// Chunks asked ahead for the new files of a run of files, at most.
const AHEAD_CHUNKS: usize = 256;
/// Bytes of those chunks, at most.
const AHEAD_BYTES: u64 = 8 << 20;

/// A chunk waiting its turn to be written.
enum Queued {
    /// Read from the target's own file.
    Ready(Vec<u8>),
    /// Requested from the relay, with the local base sent as its signature.
    Asked(ChunkId, Option<Vec<u8>>),
    /// Asked ahead (see [`Restore::ask_ahead`]).
    Ahead(ChunkId),
    /// Already at its place in the temporary file being completed.
    InPlace(u32),
}

/// The temporary file a file is written to.
struct Output {
    file: File,
    tmp: Vec<u8>,
    /// It is an interrupted restore's: chunks already at their place stay.
    in_place: bool,
}

/// Something the snapshot names that the relay could not give back whole
/// (it lacks it, or its bytes do not match their id): the entries that need
/// it fail and are named, the rest of the restore goes on.
#[derive(Debug, thiserror::Error)]
#[error("damaged on the relay: {0}")]
pub struct Damaged(String);

/// The bytes of an answer to `GetObject`: a refusal (no such object) is
/// damage, as is an answer that does not decompress.
pub(crate) fn object_bytes(answer: Result<Message>) -> Result<Vec<u8>> {
    match answer {
        Ok(Message::Object { codec, data }) => decompress(codec, data, MAX_MESSAGE)
            .map_err(|e| Damaged(format!("an object that does not decompress ({e})")).into()),
        Ok(other) => Err(unexpected("Object", &other)),
        Err(e) => Err(as_damage(e)),
    }
}

/// A relay's refusal of one request becomes [`Damaged`]; other errors (the
/// session broke) stay as they are and end the restore.
pub(crate) fn as_damage(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<Refused>() {
        Ok(refused) => Damaged(refused.message).into(),
        Err(e) => e,
    }
}

fn chunk_damaged(id: &ChunkId, why: String) -> anyhow::Error {
    Damaged(format!("chunk {}: {why}", id.short())).into()
}

/// The bytes of an answer to `GetChunk` sent without a base, checked
/// against `id`; a refusal or wrong bytes are [`Damaged`].
pub(crate) fn chunk_data(answer: Result<Message>, id: &ChunkId) -> Result<Vec<u8>> {
    match answer.map_err(as_damage)? {
        Message::ChunkData { codec, data } => {
            let data = decompress(codec, data, MAX_CHUNK as usize)
                .map_err(|e| chunk_damaged(id, format!("does not decompress ({e})")))?;
            if ChunkId::of(&data) != *id {
                return Err(chunk_damaged(
                    id,
                    "the relay's copy does not match its id".into(),
                ));
            }
            Ok(data)
        }
        other => Err(unexpected("ChunkData", &other)),
    }
}

/// Decodes a tree, or reports it damaged.
pub(crate) fn decode_tree(id: &TreeId, raw: &[u8]) -> Result<Tree> {
    Tree::decode(id, raw).map_err(|e| Damaged(format!("directory {}: {e}", id.short())).into())
}

/// Decodes a content, or reports it damaged.
pub(crate) fn decode_content(id: &ContentId, raw: &[u8]) -> Result<Content> {
    Content::decode(id, raw).map_err(|e| Damaged(format!("file list {}: {e}", id.short())).into())
}

/// Which snapshot to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// The newest of the set.
    Last,
    /// A snapshot id.
    Id(u64),
}

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
    /// One line per failed entry.
    #[serde(skip)]
    pub messages: Vec<String>,
}

/// Finds the snapshot a request names.
///
/// # Errors
/// When there is none.
pub async fn resolve(
    client: &mut RelayClient,
    set: Option<&str>,
    selector: Selector,
) -> Result<SnapshotInfo> {
    let list = match client
        .request(&Message::ListSnapshots {
            set: set.map(str::to_string),
        })
        .await?
    {
        Message::SnapshotList { snapshots } => snapshots,
        other => return Err(unexpected("SnapshotList", &other)),
    };
    let found = match selector {
        Selector::Last => list.into_iter().last(),
        Selector::Id(id) => list.into_iter().find(|s| s.id == id),
    };
    found.with_context(|| match (selector, set) {
        (Selector::Last, Some(set)) => format!("no snapshot in set {set:?}"),
        (Selector::Last, None) => "no snapshot".to_string(),
        (Selector::Id(id), _) => format!("no snapshot {id}"),
    })
}

fn components(path: &Path) -> Vec<Vec<u8>> {
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
pub async fn run(client: &mut RelayClient, request: &Request) -> Result<Summary> {
    let started = Instant::now();
    let info = resolve(client, request.set.as_deref(), request.snapshot).await?;
    let target = Target::open(&request.map_to)
        .with_context(|| format!("cannot open the target {}", request.map_to.display()))?;
    let mut restore = Restore {
        client,
        target,
        map_from: request.map_from.as_deref().map(components),
        filters: request.paths.iter().map(|p| components(p)).collect(),
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
        contents: HashMap::new(),
        checksum: request.checksum,
        last_dir: None,
        written: Vec::new(),
        written_bytes: 0,
        ahead: Ahead::default(),
    };
    let walked = restore.walk(info.root, Vec::new(), false).await;
    // Also after a failure: what was written takes its name, for the next run.
    restore.settle();
    walked?;
    if restore.placed == 0 {
        let under: Vec<String> = request
            .map_from
            .iter()
            .chain(request.paths.iter())
            .map(|p| p.display().to_string())
            .collect();
        bail!(
            "snapshot {} holds nothing under {}",
            info.id,
            under.join(", ")
        );
    }
    restore.finish();
    let mut summary = restore.summary;
    summary.totals.bytes_sent = restore.client.bytes_sent();
    summary.totals.bytes_received = restore.client.bytes_received();
    summary.totals.duration_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Where an entry goes.
enum Place {
    /// Not restored.
    Skip,
    /// An ancestor of what is restored: walk into it, create nothing.
    Through,
    /// Restored at this path below the target.
    At(Vec<Vec<u8>>),
}

struct Restore<'a> {
    client: &'a mut RelayClient,
    target: Target,
    map_from: Option<Vec<Vec<u8>>>,
    filters: Vec<Vec<Vec<u8>>>,
    summary: Summary,
    /// Snapshot path → target path of restored files, for hardlinks.
    restored: HashMap<Vec<Vec<u8>>, Vec<Vec<u8>>>,
    symlinks: Vec<(Vec<Vec<u8>>, Entry, Vec<u8>)>,
    dirs: Vec<(Vec<Vec<u8>>, Entry)>,
    /// Entries selected for restoring (zero means the selection matched nothing).
    placed: u64,
    /// Contents of the files of the directories being walked, fetched in
    /// pipelined batches when a directory is entered, taken when used.
    contents: HashMap<ContentId, Vec<u8>>,
    /// See [`Request::checksum`].
    checksum: bool,
    /// The directory the last entry went into, kept open: siblings follow
    /// one another, so most entries need no path walk.
    last_dir: Option<(Vec<Vec<u8>>, Arc<OwnedFd>)>,
    /// Files written, not yet durable nor under their names.
    written: Vec<Written>,
    /// Their bytes.
    written_bytes: u64,
    /// Chunks asked ahead of the files that need them.
    ahead: Ahead,
}

/// Chunks of the next new files, asked for before those files are reached,
/// so that a directory of small files does not wait for a round trip per
/// file. The relay answers in order: answers to chunks asked ahead come
/// before any later request's, and are read into `received` first.
#[derive(Default)]
struct Ahead {
    /// Asked, answer not read yet, in order.
    in_flight: std::collections::VecDeque<ChunkId>,
    /// Answers read, checked, not used yet (or why the chunk is damaged).
    received: HashMap<ChunkId, std::result::Result<Vec<u8>, String>>,
    /// Asked and not yet claimed by a file.
    unclaimed: std::collections::HashSet<ChunkId>,
}

type Boxed<'b, T> = Pin<Box<dyn Future<Output = T> + 'b>>;

fn starts_with(path: &[Vec<u8>], prefix: &[Vec<u8>]) -> bool {
    path.len() >= prefix.len() && path[..prefix.len()] == *prefix
}

impl Restore<'_> {
    fn place(&self, snapshot_path: &[Vec<u8>]) -> Place {
        let selected =
            self.filters.is_empty() || self.filters.iter().any(|f| starts_with(snapshot_path, f));
        let above_filter = self.filters.iter().any(|f| starts_with(f, snapshot_path));
        let mapped = match &self.map_from {
            None => Some(snapshot_path.to_vec()),
            Some(from) if starts_with(snapshot_path, from) => {
                Some(snapshot_path[from.len()..].to_vec())
            }
            Some(_) => None,
        };
        let above_map = self
            .map_from
            .as_ref()
            .is_some_and(|from| starts_with(from, snapshot_path));
        match mapped {
            Some(at) if selected => Place::At(at),
            _ if above_filter || above_map => Place::Through,
            _ => Place::Skip,
        }
    }

    fn fail(&mut self, path: &[Vec<u8>], error: impl std::fmt::Display) {
        self.summary.errors += 1;
        self.summary
            .messages
            .push(format!("{}: {error}", show_path(path)));
    }

    /// [`Target::quick_match`], unless `--checksum` asks to compare content.
    fn quick_match(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        entry: &Entry,
        size: u64,
    ) -> std::io::Result<Option<bool>> {
        if self.checksum {
            return Ok(None);
        }
        self.target.quick_match(dir, name, entry, size)
    }

    /// The open directory `parent` (below the target), reused when the
    /// previous entry went there too.
    fn parent_dir(&mut self, parent: &[Vec<u8>]) -> std::io::Result<Arc<OwnedFd>> {
        if let Some((path, fd)) = &self.last_dir {
            if path.as_slice() == parent {
                return Ok(Arc::clone(fd));
            }
        }
        let fd = Arc::new(self.target.dir(parent)?);
        self.last_dir = Some((parent.to_vec(), Arc::clone(&fd)));
        Ok(fd)
    }

    /// Makes each written file durable, then renames it over its name; a
    /// file that fails either is counted (when its fsync failed, its
    /// temporary file stays for the next run to reuse).
    fn settle(&mut self) {
        for w in std::mem::take(&mut self.written) {
            let done = w
                .file
                .sync_all()
                .and_then(|()| Target::commit_temp(&w.dir, &w.tmp, &w.name));
            if let Err(e) = done {
                self.restored.remove(&w.snapshot_path);
                self.fail(&w.snapshot_path, e);
            }
        }
        self.written_bytes = 0;
    }

    async fn object(&mut self, id: ObjectId) -> Result<Vec<u8>> {
        if let ObjectId::Content(content) = id {
            if let Some(raw) = self.contents.remove(&content) {
                return Ok(raw);
            }
        }
        self.read_ahead_answers().await?;
        let answer = self.client.request(&Message::GetObject { id }).await;
        object_bytes(answer)
    }

    /// Fetches the contents of the files of `tree` that will be restored,
    /// [`WINDOW`] requests in flight at a time, so a directory of small
    /// files costs a few round trips rather than one per file.
    async fn prefetch_contents(&mut self, tree: &Tree, path: &[Vec<u8>]) -> Result<()> {
        self.read_ahead_answers().await?;
        let mut wanted = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for entry in &tree.entries {
            let EntryKind::File { content, size, .. } = entry.kind else {
                continue;
            };
            let mut snapshot_path = path.to_vec();
            snapshot_path.push(entry.name.clone());
            let Place::At(at) = self.place(&snapshot_path) else {
                continue;
            };
            // A file the quick check will find in place needs no content.
            if let Some((name, parent)) = at.split_last() {
                let dir = self.parent_dir(parent);
                if let Ok(dir) = dir {
                    if self.quick_match(&dir, name, entry, size)?.is_some() {
                        continue;
                    }
                }
            }
            if !self.contents.contains_key(&content) && seen.insert(content) {
                wanted.push(content);
            }
        }
        let mut asked = std::collections::VecDeque::new();
        for id in wanted {
            self.client
                .send(&Message::GetObject {
                    id: ObjectId::Content(id),
                })
                .await?;
            asked.push_back(id);
            if asked.len() >= WINDOW {
                let id = asked.pop_front().expect("not empty");
                self.take_content_answer(id).await?;
            }
        }
        while let Some(id) = asked.pop_front() {
            self.take_content_answer(id).await?;
        }
        Ok(())
    }

    /// Reads the answer to a prefetched content; a damaged one is left
    /// out (the file that needs it asks again and fails alone).
    async fn take_content_answer(&mut self, id: ContentId) -> Result<()> {
        match object_bytes(self.client.answer().await) {
            Ok(raw) => {
                self.contents.insert(id, raw);
                Ok(())
            }
            Err(e) if e.is::<Damaged>() => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn walk<'b>(
        &'b mut self,
        tree_id: TreeId,
        path: Vec<Vec<u8>>,
        inside: bool,
    ) -> Boxed<'b, Result<()>> {
        Box::pin(async move {
            let tree = self.object(ObjectId::Tree(tree_id)).await;
            let tree = match tree.and_then(|raw| decode_tree(&tree_id, &raw)) {
                Ok(tree) => tree,
                Err(e) if e.is::<Damaged>() => {
                    self.fail(&path, format!("{e:#}; nothing below it was restored"));
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            self.prefetch_contents(&tree, &path).await?;
            // Entries before this index were considered for asking ahead.
            let mut considered = 0;
            for (i, entry) in tree.entries.iter().enumerate() {
                let entry = entry.clone();
                if matches!(entry.kind, EntryKind::Dir { .. }) {
                    // A run of files ends: nothing asked ahead outlives it.
                    self.drop_ahead().await?;
                } else if i >= considered && self.ahead.unclaimed.is_empty() {
                    considered = i + self.ask_ahead(&tree.entries[i..], &path).await?;
                }
                let mut snapshot_path = path.clone();
                snapshot_path.push(entry.name.clone());
                let place = if inside {
                    match self.place(&snapshot_path) {
                        Place::At(at) => Place::At(at),
                        _ => Place::Skip,
                    }
                } else {
                    self.place(&snapshot_path)
                };
                match (place, &entry.kind) {
                    (Place::Skip, _) => {}
                    (Place::Through, EntryKind::Dir { tree }) => {
                        let tree = *tree;
                        self.walk(tree, snapshot_path, false).await?;
                    }
                    (Place::Through, _) => {}
                    (Place::At(at), _) => self.entry(entry, snapshot_path, at).await?,
                }
            }
            self.drop_ahead().await
        })
    }

    /// Asks for the chunks of the new files (nothing in the target at their
    /// name) among the next `entries` up to the next directory, within
    /// [`AHEAD_CHUNKS`] and [`AHEAD_BYTES`]; their contents were prefetched.
    /// Returns how many entries it went through.
    async fn ask_ahead(&mut self, entries: &[Entry], path: &[Vec<u8>]) -> Result<usize> {
        let (mut count, mut bytes) = (0, 0u64);
        for (k, entry) in entries.iter().enumerate() {
            if count >= AHEAD_CHUNKS || bytes >= AHEAD_BYTES {
                return Ok(k);
            }
            let EntryKind::File { content, .. } = &entry.kind else {
                if matches!(entry.kind, EntryKind::Dir { .. }) {
                    return Ok(k);
                }
                continue;
            };
            let mut snapshot_path = path.to_vec();
            snapshot_path.push(entry.name.clone());
            let Place::At(at) = self.place(&snapshot_path) else {
                continue;
            };
            let Some((name, parent)) = at.split_last() else {
                continue;
            };
            let Ok(dir) = self.parent_dir(parent) else {
                continue;
            };
            if !Target::absent(&dir, name)? {
                continue;
            }
            let Some(raw) = self.contents.get(content) else {
                continue;
            };
            let Ok(chunks) = Content::decode(content, raw) else {
                continue;
            };
            for chunk in &chunks.chunks {
                if count >= AHEAD_CHUNKS || bytes >= AHEAD_BYTES {
                    // The rest of this file is asked for as it is written.
                    return Ok(k + 1);
                }
                if !self.ahead.unclaimed.insert(chunk.id) {
                    continue;
                }
                self.client
                    .send(&Message::GetChunk {
                        id: chunk.id,
                        base_signature: None,
                    })
                    .await?;
                self.ahead.in_flight.push_back(chunk.id);
                count += 1;
                bytes += u64::from(chunk.len);
            }
        }
        Ok(entries.len())
    }

    /// Reads the answers to every chunk asked ahead, so the next answer is
    /// to whatever is asked next.
    async fn read_ahead_answers(&mut self) -> Result<()> {
        while let Some(id) = self.ahead.in_flight.pop_front() {
            let data = self.ahead_answer(id).await?;
            self.ahead.received.insert(id, data);
        }
        Ok(())
    }

    /// The answer to a chunk asked ahead: its bytes, or why it is damaged.
    async fn ahead_answer(&mut self, id: ChunkId) -> Result<std::result::Result<Vec<u8>, String>> {
        match self.chunk_answer(id, None).await {
            Ok(data) => Ok(Ok(data)),
            Err(e) => match e.downcast::<Damaged>() {
                Ok(damaged) => Ok(Err(damaged.0)),
                Err(e) => Err(e),
            },
        }
    }

    /// Forgets the chunks asked ahead that no file used (a file that failed).
    async fn drop_ahead(&mut self) -> Result<()> {
        self.read_ahead_answers().await?;
        self.ahead.received.clear();
        self.ahead.unclaimed.clear();
        Ok(())
    }

    async fn entry(
        &mut self,
        entry: Entry,
        snapshot_path: Vec<Vec<u8>>,
        at: Vec<Vec<u8>>,
    ) -> Result<()> {
        self.placed += 1;
        let Some((name, parent)) = at.split_last() else {
            // The mapped directory itself: the target root takes its metadata.
            if let EntryKind::Dir { tree } = entry.kind {
                self.walk(tree, snapshot_path, true).await?;
                self.dirs.push((Vec::new(), entry));
            }
            return Ok(());
        };
        let dir = match self.parent_dir(parent) {
            Ok(dir) => dir,
            Err(e) => {
                self.fail(&snapshot_path, e);
                return Ok(());
            }
        };
        match &entry.kind {
            EntryKind::Dir { tree } => {
                let tree = *tree;
                if let Err(e) = self.target.dir(&at) {
                    self.fail(&snapshot_path, e);
                    return Ok(());
                }
                self.walk(tree, snapshot_path, true).await?;
                self.dirs.push((at, entry));
            }
            EntryKind::File {
                size,
                content,
                sparse,
            } => {
                let (size, content, sparse) = (*size, *content, sparse.clone());
                match self
                    .file(&dir, name, &entry, size, content, sparse.as_deref())
                    .await
                {
                    Ok(written) => {
                        self.restored.insert(snapshot_path.clone(), at.clone());
                        if let Some((file, tmp)) = written {
                            self.written_bytes += size;
                            self.written.push(Written {
                                file,
                                dir: Arc::clone(&dir),
                                tmp,
                                name: name.clone(),
                                snapshot_path,
                            });
                            if self.written.len() >= SETTLE_FILES
                                || self.written_bytes >= SETTLE_BYTES
                            {
                                self.settle();
                            }
                        }
                    }
                    Err(e) if e.is::<std::io::Error>() || e.is::<Damaged>() => {
                        self.fail(&snapshot_path, format!("{e:#}"))
                    }
                    Err(e) => return Err(e),
                }
            }
            EntryKind::Symlink { target } => {
                let target = target.clone();
                self.symlinks.push((at, entry, target));
            }
            EntryKind::Hardlink { target } => {
                // The file linked to must be under its name first.
                self.settle();
                let original: Vec<Vec<u8>> =
                    target.split(|b| *b == b'/').map(<[u8]>::to_vec).collect();
                let Some(first) = self.restored.get(&original).cloned() else {
                    self.fail(&snapshot_path, "hard link to a file that was not restored");
                    return Ok(());
                };
                let (first_name, first_parent) =
                    first.split_last().expect("restored paths are not empty");
                let linked = self
                    .target
                    .dir(first_parent)
                    .and_then(|first_dir| Target::hardlink(&first_dir, first_name, &dir, name));
                if let Err(e) = linked {
                    self.fail(&snapshot_path, e);
                }
            }
            EntryKind::Fifo => {
                let made = Target::node(&dir, name, rustix::fs::FileType::Fifo, 0)
                    .and_then(|()| self.target.apply_at(&dir, name, &entry, false));
                if let Err(e) = made {
                    self.fail(&snapshot_path, e);
                }
            }
            EntryKind::Device { character, rdev } => {
                if !self.target.as_root() {
                    self.fail(&snapshot_path, "device nodes are restored only as root");
                    return Ok(());
                }
                let kind = if *character {
                    rustix::fs::FileType::CharacterDevice
                } else {
                    rustix::fs::FileType::BlockDevice
                };
                let made = Target::node(&dir, name, kind, *rdev)
                    .and_then(|()| self.target.apply_at(&dir, name, &entry, false));
                if let Err(e) = made {
                    self.fail(&snapshot_path, e);
                }
            }
        }
        Ok(())
    }

    /// Restores one regular file's data and metadata; returns the
    /// temporary file that holds it (and its name) when it was written, to
    /// be renamed over `name` once durable.
    async fn file(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        entry: &Entry,
        size: u64,
        content_id: ContentId,
        sparse: Option<&[Extent]>,
    ) -> Result<Option<(File, Vec<u8>)>> {
        if let Some(metadata_too) = self.quick_match(dir, name, entry, size)? {
            // rsync's quick check: same size and modification time, same file.
            self.summary.totals.files_unchanged += 1;
            if !metadata_too {
                if let Some(file) = Target::existing_file(dir, name)? {
                    self.target.apply_to_fd(&file, entry)?;
                }
            }
            return Ok(None);
        }
        let content = decode_content(
            &content_id,
            &self.object(ObjectId::Content(content_id)).await?,
        )?;
        let existing = Target::existing_file(dir, name)?;
        // An interrupted restore of this file: its temporary file is
        // completed in place, so no later interruption loses what it holds.
        let leftover = match sparse {
            None => Target::leftover_temp(dir, name)?,
            Some(_) => None,
        };
        if let Some((file, tmp)) = leftover {
            let partial = LocalFile::scan(file.try_clone()?)?;
            self.summary.totals.bytes_scanned += partial.len;
            match existing {
                Some(_) => self.summary.totals.files_changed += 1,
                None => self.summary.totals.files_new += 1,
            }
            let out = Output {
                file,
                tmp,
                in_place: true,
            };
            return self
                .write_file(dir, entry, size, &content, sparse, Some(&partial), out)
                .await
                .map(Some);
        }
        let local = existing.map(LocalFile::scan).transpose()?;
        if let Some(local) = &local {
            self.summary.totals.bytes_scanned += local.len;
            let same =
                local.content.encode().0 == content_id && local.len == size && sparse.is_none();
            if same {
                self.summary.totals.files_unchanged += 1;
                self.target.apply_to_fd(&local.file, entry)?;
                return Ok(None);
            }
            self.summary.totals.files_changed += 1;
        } else {
            self.summary.totals.files_new += 1;
        }
        let (file, tmp) = Target::temp_file(dir, name)?;
        let out = Output {
            file,
            tmp,
            in_place: false,
        };
        self.write_file(dir, entry, size, &content, sparse, local.as_ref(), out)
            .await
            .map(Some)
    }

    /// Writes a file's data and metadata to its temporary file `out`,
    /// reusing the chunks of `local` (the target's current version, or the
    /// temporary file itself when `out.in_place`), and starts its
    /// writeback; returns the temporary file and its name.
    #[allow(clippy::too_many_arguments)]
    async fn write_file(
        &mut self,
        dir: &OwnedFd,
        entry: &Entry,
        size: u64,
        content: &Content,
        sparse: Option<&[Extent]>,
        local: Option<&LocalFile>,
        out: Output,
    ) -> Result<(File, Vec<u8>)> {
        let Output {
            file,
            tmp,
            in_place,
        } = out;
        let whole = [Extent {
            offset: 0,
            len: size,
        }];
        let mut out = ExtentWriter {
            file: &file,
            extents: sparse.unwrap_or(&whole),
            current: 0,
            done: 0,
            queued: 0,
            earlier: local.filter(|_| in_place),
        };
        let mut index = 0;
        if content.parts.is_empty() {
            if let Err(e) = self
                .write_chunks(&content.chunks, &mut index, local, &mut out)
                .await
            {
                Target::remove_temp(dir, &tmp);
                return Err(e);
            }
        }
        // A large file: one part's chunk list at a time.
        for part in &content.parts {
            let part = self
                .object(ObjectId::Content(part.id))
                .await
                .and_then(|raw| decode_content(&part.id, &raw));
            let written = match part {
                Ok(part) => {
                    self.write_chunks(&part.chunks, &mut index, local, &mut out)
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                // Never under its name: the temporary file goes too.
                Target::remove_temp(dir, &tmp);
                return Err(e);
            }
        }
        file.set_len(size)?;
        let failed = self.target.apply_to_fd(&file, entry)?;
        if !failed.is_empty() && failed.iter().any(|x| x.starts_with("user.")) {
            bail!("cannot set extended attributes {failed:?}");
        }
        // Writeback starts now, so the fsync of the batch finds it done
        // (only a hint: an error here changes nothing).
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        Ok((file, tmp))
    }

    /// Writes `chunks` in order: those the target holds are copied, the
    /// others requested with up to [`WINDOW`] chunks queued, so the relay
    /// works while earlier answers are written.
    async fn write_chunks(
        &mut self,
        chunks: &[ChunkRef],
        index: &mut usize,
        local: Option<&LocalFile>,
        out: &mut ExtentWriter<'_>,
    ) -> Result<()> {
        let mut queue = std::collections::VecDeque::new();
        let mut damage = None;
        for chunk in chunks {
            if damage.is_some() {
                break;
            }
            let at = *index;
            *index += 1;
            if out.in_place(at, chunk) {
                self.summary.chunks_local += 1;
                queue.push_back(Queued::InPlace(chunk.len));
            } else if let Some(data) = self.local_chunk(chunk, local)? {
                queue.push_back(Queued::Ready(data));
            } else if self.ahead.unclaimed.remove(&chunk.id) {
                queue.push_back(Queued::Ahead(chunk.id));
            } else {
                let base = match local.and_then(|l| l.chunks.get(at).map(|c| (l, *c))) {
                    Some((l, (offset, len, _))) => Some(l.read_at(offset, len)?),
                    None => None,
                };
                self.client
                    .send(&Message::GetChunk {
                        id: chunk.id,
                        base_signature: base.as_deref().map(delta::signature),
                    })
                    .await?;
                queue.push_back(Queued::Asked(chunk.id, base));
            }
            if queue.len() >= WINDOW {
                let next = queue.pop_front().expect("not empty");
                self.receive_into(next, out, &mut damage).await?;
            }
        }
        // Every answer asked for is read, also after damage: answers come in order.
        while let Some(next) = queue.pop_front() {
            self.receive_into(next, out, &mut damage).await?;
        }
        match damage {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Receives a queued chunk and writes it, unless this file is already
    /// damaged; damage is kept in `damage`, other errors returned.
    async fn receive_into(
        &mut self,
        next: Queued,
        out: &mut ExtentWriter<'_>,
        damage: &mut Option<anyhow::Error>,
    ) -> Result<()> {
        if let Queued::InPlace(len) = next {
            return Ok(out.skip(u64::from(len))?);
        }
        match self.receive(next).await {
            Ok(data) if damage.is_none() => Ok(out.write(&data)?),
            Ok(_) => Ok(()),
            Err(e) if e.is::<Damaged>() => {
                damage.get_or_insert(e);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The chunk, if the target's own file holds it.
    fn local_chunk(
        &mut self,
        chunk: &ChunkRef,
        local: Option<&LocalFile>,
    ) -> Result<Option<Vec<u8>>> {
        if let Some(data) = local.map(|l| l.read(&chunk.id)).transpose()?.flatten() {
            if ChunkId::of(&data) == chunk.id {
                self.summary.chunks_local += 1;
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    /// A queued chunk's bytes: at hand, or the relay's answer, checked.
    async fn receive(&mut self, queued: Queued) -> Result<Vec<u8>> {
        match queued {
            Queued::Ready(data) => Ok(data),
            Queued::InPlace(_) => bail!("a chunk already in place has nothing to receive"),
            Queued::Asked(id, base) => {
                // Asked after every chunk asked ahead: their answers come first.
                self.read_ahead_answers().await?;
                self.chunk_answer(id, base).await
            }
            Queued::Ahead(id) => loop {
                if let Some(data) = self.ahead.received.remove(&id) {
                    return data.map_err(|why| Damaged(why).into());
                }
                let next = self
                    .ahead
                    .in_flight
                    .pop_front()
                    .context("a chunk asked ahead was never asked")?;
                let data = self.ahead_answer(next).await?;
                self.ahead.received.insert(next, data);
            },
        }
    }

    /// Reads the relay's answer to a `GetChunk` for `id` (sent with
    /// `base`'s signature, if any) and checks it.
    async fn chunk_answer(&mut self, id: ChunkId, base: Option<Vec<u8>>) -> Result<Vec<u8>> {
        let damaged = |why: String| -> anyhow::Error { chunk_damaged(&id, why) };
        match self.client.answer().await.map_err(as_damage)? {
            answer @ Message::ChunkData { .. } => {
                self.summary.chunks_full += 1;
                chunk_data(Ok(answer), &id)
            }
            Message::ChunkDelta {
                codec,
                delta: bytes,
            } => {
                let base = base.context("the relay sent a delta without a base")?;
                self.summary.chunks_delta += 1;
                let delta = decompress(codec, bytes, delta::MAX_DELTA)
                    .map_err(|e| damaged(format!("its delta does not decompress ({e})")))?;
                delta::apply(&base, &delta, &id)
                    .map_err(|e| damaged(format!("its delta does not rebuild it ({e})")))
            }
            other => Err(unexpected("ChunkData", &other)),
        }
    }

    /// Symlinks last, then directory metadata deepest first.
    fn finish(&mut self) {
        for (at, entry, target) in std::mem::take(&mut self.symlinks) {
            let (name, parent) = at.split_last().expect("symlinks have a name");
            let made = self.target.dir(parent).and_then(|dir| {
                Target::symlink(&dir, name, &target)?;
                self.target.apply_at(&dir, name, &entry, true)
            });
            if let Err(e) = made {
                self.fail(&at, e);
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

/// Chunks `file` as a backup would and returns its content (chunk list);
/// `each` sees every chunk's offset, length and id.
pub(crate) fn chunk_file(
    file: &File,
    mut each: impl FnMut(u64, u32, ChunkId),
) -> std::io::Result<Content> {
    let mut builder = ContentBuilder::default();
    for chunk in Chunker::new(std::io::BufReader::new(file)) {
        let chunk = chunk?;
        let len = chunk.data.len() as u32;
        each(chunk.offset, len, chunk.id);
        builder.push(ChunkRef { id: chunk.id, len });
    }
    Ok(builder.finish().0)
}

/// A path of the snapshot as `/a/b`, for messages.
pub(crate) fn show_path(path: &[Vec<u8>]) -> String {
    let shown: Vec<String> = path
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    format!("/{}", shown.join("/"))
}

/// The target's current version of a file, chunked to find reusable chunks.
struct LocalFile {
    file: File,
    len: u64,
    /// (offset, len, id) of each chunk, in order.
    chunks: Vec<(u64, u32, ChunkId)>,
    by_id: HashMap<ChunkId, (u64, u32)>,
    content: Content,
}

impl LocalFile {
    fn scan(file: File) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        let mut chunks = Vec::new();
        let mut by_id = HashMap::new();
        let content = chunk_file(&file, |offset, n, id| {
            chunks.push((offset, n, id));
            by_id.entry(id).or_insert((offset, n));
        })?;
        Ok(LocalFile {
            file,
            len,
            chunks,
            by_id,
            content,
        })
    }

    fn read_at(&self, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    fn read(&self, id: &ChunkId) -> std::io::Result<Option<Vec<u8>>> {
        match self.by_id.get(id) {
            Some((offset, len)) => self.read_at(*offset, *len).map(Some),
            None => Ok(None),
        }
    }
}

/// Writes a content's bytes into the data regions of a (possibly sparse) file.
struct ExtentWriter<'f> {
    file: &'f File,
    extents: &'f [Extent],
    current: usize,
    done: u64,
    /// Content bytes of the chunks queued so far (see [`ExtentWriter::in_place`]).
    queued: u64,
    /// The file's own earlier contents, when completing it in place.
    earlier: Option<&'f LocalFile>,
}

impl ExtentWriter<'_> {
    /// Takes the place of the content's next chunk (the `index`th, queued
    /// in order); true when it is already there (an interrupted restore
    /// wrote it). Only for non-sparse files, where content offsets are file
    /// offsets.
    fn in_place(&mut self, index: usize, chunk: &ChunkRef) -> bool {
        let at = self.queued;
        self.queued += u64::from(chunk.len);
        self.extents.len() == 1
            && self.earlier.is_some_and(|local| {
                local.chunks.get(index).is_some_and(|&(offset, len, id)| {
                    id == chunk.id && len == chunk.len && offset == at
                })
            })
    }

    /// Moves past `len` bytes already in place.
    fn skip(&mut self, len: u64) -> std::io::Result<()> {
        self.done += len;
        let extent = self.extents.get(self.current).map_or(0, |e| e.len);
        if self.done > extent {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "content longer than its extents",
            ));
        }
        if self.done == extent {
            self.current += 1;
            self.done = 0;
        }
        Ok(())
    }

    fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let Some(extent) = self.extents.get(self.current) else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "content longer than its extents",
                ));
            };
            let room = extent.len - self.done;
            let n = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            self.file
                .write_all_at(&data[..n], extent.offset + self.done)?;
            self.done += n as u64;
            data = &data[n..];
            if self.done == extent.len {
                self.current += 1;
                self.done = 0;
            }
        }
        Ok(())
    }
}
