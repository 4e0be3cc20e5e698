//! `ferry verify`: fetch a snapshot end to end and check it, writing
//! nothing: every tree, content and chunk a restore would use is received
//! and hashed against its id, and with `--against DIR` each file is also
//! compared with the local file at its path below `DIR`.
//!
//! A run bounded by `--max-duration` records the last file it checked in
//! `STATE/verify.json`; the next run of the same snapshot resumes after it
//! (files are walked in a fixed order: directories depth first, names
//! sorted, so "after" is the lexicographic order of their paths).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use std::collections::{HashMap, VecDeque};

use anyhow::{Context, Result};
use ferry_protocol::compress::decompress;
use ferry_protocol::fetch::{FetchItem, FetchReply};
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::{ChunkId, ContentId, TreeId};
use ferry_protocol::message::{Message, ObjectId};
use ferry_protocol::tree::{ChunkRef, EntryKind};
use serde::{Deserialize, Serialize};

use crate::client::RelayClient;
use crate::fetcher::{prefetch_trees, Fetcher};
use crate::restore::Selector;
use crate::snapshot::{
    chunk_data, chunk_file, decode_content, decode_tree, fits_file, resolve, show_path, Damaged,
};

/// Files checked together, at most, whatever directories they are in:
/// their contents are asked for in one batch, then their parts, then
/// their chunks, so a run costs about three round trips (200,000 files:
/// about forty, not one run per directory).
const RUN_FILES: usize = 16_384;

/// Bytes of files checked together, at most (a run's chunk lists stay a
/// few megabytes; a time-boxed check stops between runs).
const RUN_BYTES: u64 = 1 << 30;

/// Chunk bytes asked for and not yet received, at most.
const WINDOW_BYTES: u64 = 16 << 20;

/// A content's reply estimated (a small file's chunk list), and a part's.
const CONTENT_ESTIMATE: u64 = 1024;
const PART_ESTIMATE: u64 = 16384 * 48;

/// Bytes of trees fetched ahead, at most.
const TREES_AHEAD: usize = 64 << 20;

/// A reply's bytes: decompressed (within a message's size), or why the
/// relay could not give them.
fn reply_bytes(reply: FetchReply) -> Result<Vec<u8>> {
    match reply {
        FetchReply::Data { codec, data } => decompress(codec, data, MAX_MESSAGE)
            .map_err(|e| Damaged(format!("data that does not decompress ({e})")).into()),
        FetchReply::Refused { message, .. } => Err(Damaged(message).into()),
        FetchReply::Delta { .. } | FetchReply::Later | FetchReply::Trees(_) => {
            anyhow::bail!("the relay sent something other than the data asked for")
        }
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Request {
    /// The backup set (`None`: any set, for `-b ID`).
    pub set: Option<String>,
    /// Which snapshot.
    pub snapshot: Selector,
    /// Compare with the local files below this directory (the snapshot's
    /// absolute paths appended to it; `/` compares with the originals).
    pub against: Option<PathBuf>,
    /// Stop after this long; the next run resumes.
    pub max_duration: Option<Duration>,
    /// Where the progress of a time-boxed run is kept.
    pub progress: PathBuf,
}

/// What a check found: the `--json` summary.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// The snapshot checked.
    pub snapshot: u64,
    /// Files received and found whole.
    pub files_checked: u64,
    /// Their bytes.
    pub bytes_checked: u64,
    /// Files the relay could not give back whole (named on stderr).
    pub files_damaged: u64,
    /// Files that differ from the local file `--against` names.
    pub files_differ: u64,
    /// Files skipped because an earlier, time-boxed run checked them.
    pub files_resumed: u64,
    /// Whether the whole snapshot was gone through (false: time box hit).
    pub complete: bool,
    /// Bytes sent on the connection.
    pub bytes_sent: u64,
    /// Bytes received on the connection.
    pub bytes_received: u64,
    /// Times this side waited a whole round trip for the relay (as in
    /// backup and restore summaries).
    pub round_trips: u64,
    /// Wall time in seconds.
    pub duration_s: f64,
    /// One line per damaged or differing file.
    #[serde(skip)]
    pub messages: Vec<String>,
}

/// Where a time-boxed run stopped.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    snapshot: u64,
    last: Vec<Vec<u8>>,
}

/// Checks the snapshot `request` names.
///
/// # Errors
/// When the snapshot does not exist or the session breaks.
pub async fn run(client: &mut RelayClient, request: &Request) -> Result<Summary> {
    let started = Instant::now();
    let info = resolve(client, request.set.as_deref(), request.snapshot).await?;
    let resume = std::fs::read(&request.progress)
        .ok()
        .and_then(|b| serde_json::from_slice::<Progress>(&b).ok())
        .filter(|p| p.snapshot == info.id)
        .map(|p| p.last);
    let mut fetcher = Fetcher::default();
    let trees = prefetch_trees(&mut fetcher, client, info.root, TREES_AHEAD, |_| true).await?;
    let mut check = Check {
        client,
        fetcher,
        trees,
        request,
        started,
        resume,
        run: Vec::new(),
        run_bytes: 0,
        last: Vec::new(),
        stopped: false,
        summary: Summary {
            snapshot: info.id,
            ..Summary::default()
        },
    };
    check.tree(info.root, Vec::new()).await?;
    let run = std::mem::take(&mut check.run);
    check.files(run).await?;
    let progress = Progress {
        snapshot: info.id,
        last: std::mem::take(&mut check.last),
    };
    if check.stopped {
        // Best effort: without it the next run starts over, nothing worse.
        let _ = std::fs::write(&request.progress, serde_json::to_vec(&progress)?);
    } else {
        let _ = std::fs::remove_file(&request.progress);
    }
    let mut summary = check.summary;
    summary.complete = !check.stopped;
    summary.bytes_sent = client.bytes_sent();
    summary.bytes_received = client.bytes_received();
    summary.round_trips = client.round_trips();
    summary.duration_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

struct Check<'a> {
    client: &'a mut RelayClient,
    /// Batched asks: a run of files' contents, then their chunks.
    fetcher: Fetcher,
    /// The snapshot's trees, fetched ahead as subtrees.
    trees: HashMap<TreeId, Vec<u8>>,
    request: &'a Request,
    started: Instant,
    /// Files up to this path were checked by the run this one resumes.
    resume: Option<Vec<Vec<u8>>>,
    /// Files met by the walk and not yet checked, in its order.
    run: Vec<(ContentId, u64, Vec<Vec<u8>>)>,
    /// Their bytes.
    run_bytes: u64,
    /// The last file checked.
    last: Vec<Vec<u8>>,
    stopped: bool,
    summary: Summary,
}

type Boxed<'b, T> = Pin<Box<dyn std::future::Future<Output = T> + 'b>>;

impl Check<'_> {
    fn tree(&mut self, id: TreeId, path: Vec<Vec<u8>>) -> Boxed<'_, Result<()>> {
        Box::pin(async move {
            let tree = self.object(ObjectId::Tree(id)).await;
            let tree = match tree.and_then(|raw| decode_tree(&id, &raw)) {
                Ok(tree) => tree,
                Err(e) if e.is::<Damaged>() => {
                    self.report(&path, &format!("{e:#}; nothing below it was checked"));
                    self.summary.files_damaged += 1;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            // Files are checked a run at a time, across directories.
            for entry in tree.entries {
                if self.stopped {
                    return Ok(());
                }
                let mut entry_path = path.clone();
                entry_path.push(entry.name.clone());
                match entry.kind {
                    EntryKind::Dir { tree } => self.tree(tree, entry_path).await?,
                    EntryKind::File { content, size, .. } => {
                        if self.resume.as_ref().is_some_and(|r| entry_path <= *r) {
                            self.summary.files_resumed += 1;
                            continue;
                        }
                        self.run.push((content, size, entry_path));
                        self.run_bytes += size;
                        if self.run.len() >= RUN_FILES || self.run_bytes >= RUN_BYTES {
                            let run = std::mem::take(&mut self.run);
                            self.run_bytes = 0;
                            self.files(run).await?;
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        })
    }

    /// A tree, fetched ahead or asked for now.
    async fn object(&mut self, id: ObjectId) -> Result<Vec<u8>> {
        if let ObjectId::Tree(tree) = id {
            if let Some(raw) = self.trees.get(&tree) {
                return Ok(raw.clone());
            }
        }
        let item = FetchItem::Object(id);
        self.fetch(vec![(item, 0)]).await?.remove(0)
    }

    /// Asks for `items` (with their estimated sizes) and returns a reply
    /// for each, in order: the bytes, or why the relay could not give them.
    async fn fetch(&mut self, items: Vec<(FetchItem, u64)>) -> Result<Vec<Result<Vec<u8>>>> {
        self.fetch_with(items, |_, reply| reply).await
    }

    /// As [`Check::fetch`], each reply passed through `keep` as it
    /// arrives (a chunk is checked and dropped, not held to the end).
    async fn fetch_with<T>(
        &mut self,
        items: Vec<(FetchItem, u64)>,
        mut keep: impl FnMut(usize, Result<Vec<u8>>) -> T,
    ) -> Result<Vec<T>> {
        let mut out: Vec<Option<T>> = Vec::new();
        out.resize_with(items.len(), || None);
        let mut asked = VecDeque::new();
        let mut in_flight = 0u64;
        for (i, (item, estimate)) in items.into_iter().enumerate() {
            in_flight += estimate;
            self.fetcher
                .add(self.client, item.clone(), estimate)
                .await?;
            asked.push_back((i, item, estimate));
            while in_flight >= WINDOW_BYTES {
                in_flight -= self.receive(&mut asked, &mut out, &mut keep).await?;
            }
        }
        while !asked.is_empty() {
            self.receive(&mut asked, &mut out, &mut keep).await?;
        }
        out.into_iter()
            .map(|reply| reply.context("an item never answered"))
            .collect()
    }

    /// Reads the next answer message into `out` through `keep`; returns
    /// the estimated bytes it answered. What the relay put off is asked
    /// again.
    async fn receive<T>(
        &mut self,
        asked: &mut VecDeque<(usize, FetchItem, u64)>,
        out: &mut [Option<T>],
        keep: &mut impl FnMut(usize, Result<Vec<u8>>) -> T,
    ) -> Result<u64> {
        let replies = self
            .fetcher
            .next(self.client)
            .await?
            .context("an answer to nothing asked")?;
        let mut answered = 0;
        for reply in replies {
            let (i, item, estimate) = asked.pop_front().context("a reply to nothing asked")?;
            if reply == FetchReply::Later {
                self.fetcher
                    .add(self.client, item.clone(), estimate)
                    .await?;
                asked.push_back((i, item, estimate));
                continue;
            }
            answered += estimate;
            out[i] = Some(keep(i, reply_bytes(reply)));
        }
        Ok(answered)
    }

    /// Checks a run of files: their contents asked for together, then
    /// their parts, then every chunk (up to [`WINDOW_BYTES`] in flight),
    /// each received and hashed; then each is compared with the local file,
    /// if asked. A time-boxed run stops before a run once its time is up.
    async fn files(&mut self, run: Vec<(ContentId, u64, Vec<Vec<u8>>)>) -> Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        if self
            .request
            .max_duration
            .is_some_and(|max| self.started.elapsed() >= max)
        {
            self.stopped = true;
            return Ok(());
        }
        let asks = run
            .iter()
            .map(|(id, ..)| (FetchItem::Object(ObjectId::Content(*id)), CONTENT_ESTIMATE))
            .collect();
        let contents = self.fetch(asks).await?;
        let mut damage: Vec<Option<anyhow::Error>> = Vec::new();
        let mut chunks: Vec<Vec<ChunkRef>> = Vec::new();
        let mut parts = Vec::new();
        // Chunk lists no longer than the files' sizes allow: a relay cannot
        // make a run hold more than its files are worth.
        for (i, ((id, size, _), raw)) in run.iter().zip(contents).enumerate() {
            let decoded = raw.and_then(|raw| decode_content(id, &raw));
            match decoded.and_then(|c| fits_file(c, id, false, 0, *size)) {
                Ok(content) => {
                    parts.extend(content.parts.iter().map(|p| (i, p.id)));
                    chunks.push(content.chunks);
                    damage.push(None);
                }
                Err(e) if e.is::<Damaged>() => {
                    chunks.push(Vec::new());
                    damage.push(Some(e));
                }
                Err(e) => return Err(e),
            }
        }
        // A large file's parts, in order.
        let asks = parts
            .iter()
            .map(|(_, id)| (FetchItem::Object(ObjectId::Content(*id)), PART_ESTIMATE))
            .collect();
        for ((i, id), raw) in parts.iter().zip(self.fetch(asks).await?) {
            let (listed, size) = (chunks[*i].len() as u64, run[*i].1);
            let decoded = raw.and_then(|raw| decode_content(id, &raw));
            match decoded.and_then(|c| fits_file(c, id, true, listed, size)) {
                Ok(part) => chunks[*i].extend(part.chunks),
                Err(e) if e.is::<Damaged>() => {
                    damage[*i].get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        let owners: Vec<(usize, ChunkId)> = chunks
            .iter()
            .enumerate()
            .filter(|(i, _)| damage[*i].is_none())
            .flat_map(|(i, list)| list.iter().map(move |c| (i, c.id)))
            .collect();
        let asks = chunks
            .iter()
            .enumerate()
            .filter(|(i, _)| damage[*i].is_none())
            .flat_map(|(_, list)| list.iter())
            .map(|c| {
                let item = FetchItem::Chunk {
                    id: c.id,
                    base_signature: None,
                };
                (item, u64::from(c.len))
            })
            .collect();
        // Each chunk checked as it arrives, its bytes dropped.
        let checked = self
            .fetch_with(asks, |k, raw| {
                raw.and_then(|raw| {
                    let reply = Message::ChunkData {
                        codec: ferry_protocol::compress::Codec::None,
                        data: raw,
                    };
                    chunk_data(Ok(reply), &owners[k].1).map(drop)
                })
            })
            .await?;
        for ((i, _), checked) in owners.iter().zip(checked) {
            match checked {
                Ok(()) => {}
                Err(e) if e.is::<Damaged>() => {
                    damage[*i].get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        for ((id, size, path), damage) in run.into_iter().zip(damage) {
            self.last.clone_from(&path);
            if let Some(e) = damage {
                self.summary.files_damaged += 1;
                self.report(&path, &format!("{e:#}"));
                continue;
            }
            self.summary.files_checked += 1;
            self.summary.bytes_checked += size;
            if let Some(root) = &self.request.against {
                let local = local_path(root, &path);
                match local_content_id(&local) {
                    Ok(local_id) if local_id == id => {}
                    Ok(_) => self.differs(&path, "differs from the local file"),
                    Err(e) => self.differs(&path, &format!("the local file cannot be read ({e})")),
                }
            }
        }
        Ok(())
    }

    fn differs(&mut self, path: &[Vec<u8>], why: &str) {
        self.summary.files_differ += 1;
        self.report(path, why);
    }

    fn report(&mut self, path: &[Vec<u8>], why: &str) {
        self.summary
            .messages
            .push(format!("{}: {why}", show_path(path)));
    }
}

fn local_path(root: &Path, path: &[Vec<u8>]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut local = root.to_path_buf();
    for name in path {
        local.push(std::ffi::OsStr::from_bytes(name));
    }
    local
}

/// The content id of a local file, chunked as a backup would.
fn local_content_id(path: &Path) -> std::io::Result<ContentId> {
    let file = std::fs::File::open(path)?;
    Ok(chunk_file(&file, |_, _, _| {})?.encode().0)
}
