//! `ferry-relay verify`: finds damage before a restore does, and sets the
//! store up to heal it.
//!
//! 1. **Catalog**: `PRAGMA integrity_check`.
//! 2. **Blobs**: pack by pack, least recently verified first, every row's
//!    bytes are read sequentially, decompressed and hashed (BLAKE3) against
//!    its id; a row past the end of its pack, or in a pack that is gone, is
//!    damaged too. Two workers each read and hash whole packs (in 2 MiB
//!    segments) while the calling thread records results. Each blob found whole
//!    records when (`verified_at`), so a run bounded by `--max-duration` or
//!    `--subset` resumes where the last one stopped.
//! 3. **Closure**: every snapshot's tree is walked; a damaged or missing blob
//!    is reported with the client, snapshots and paths that reach it, and
//!    every tree and content above it is marked incomplete.
//!
//! A damaged blob counts as missing from then on, and an incomplete one as
//! missing to uploads: the next backup that still holds the data sends it
//! again (see `Catalog::insert_blobs`), which heals every snapshot that
//! named it. Verify only reads packs and writes catalog rows, so it runs
//! beside a serving relay; a row that a collection moved while it was being
//! read is not reported as damage (it is checked where it went next time).

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferry_protocol::chunking::MAX_CHUNK;
use ferry_protocol::compress::decompress;
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::{ChunkId, ContentId, TreeId};
use ferry_protocol::tree::{Content, EntryKind, Tree};
use serde::Serialize;

use crate::catalog::{hex, kind_name, now_ms, BlobKind, BlobRow, BlobState, Catalog, DamageRecord};

/// Paths listed per damaged blob, at most.
const PATHS_SHOWN: usize = 10;
/// Blobs healed within this long are listed in the report.
const HEALED_SHOWN_MS: i64 = 7 * 24 * 3600 * 1000;

/// What a run checks.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Stop reading blobs after this long (the closure check still runs).
    pub max_duration: Option<Duration>,
    /// Read only this percentage of the bytes due this run.
    pub subset_percent: Option<f64>,
    /// Skip blobs verified more recently than this.
    pub since_verified: Option<Duration>,
    /// Read at most this many bytes per second (beside uploads).
    pub rate: Option<u64>,
}

/// One damaged (or missing) blob, with what reaches it.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    /// The client whose blob it is.
    pub client: String,
    /// `chunk`, `tree`, `content`.
    pub kind: &'static str,
    /// Its id, hex.
    pub blob: String,
    /// Its pack, offset and stored length (absent when no row names it).
    pub pack: Option<u32>,
    /// Offset in the pack.
    pub offset: Option<u64>,
    /// Stored length.
    pub length: Option<u32>,
    /// What is wrong.
    pub reason: String,
    /// Snapshots that reach it.
    pub snapshots: Vec<u64>,
    /// Some of the paths that reach it (as backed up).
    pub paths: Vec<String>,
}

/// What a run found; `ferry-relay verify --json` prints it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `PRAGMA integrity_check`'s first line ("ok" when clean).
    pub catalog: String,
    /// Packs read.
    pub packs: u64,
    /// Blobs read and hashed.
    pub blobs_checked: u64,
    /// Their stored bytes.
    pub bytes_checked: u64,
    /// Blobs due that this run left for the next (time box or subset).
    pub blobs_left: u64,
    /// Bytes at the end of packs that no row names (a torn tail, or an
    /// upload that never synced): not damage, cut at the next start.
    pub unindexed_tail_bytes: u64,
    /// Pack files no row names at all (an interrupted collection): not
    /// damage, deleted at the next start.
    pub packs_unnamed: u64,
    /// Snapshots walked.
    pub snapshots: u64,
    /// Damage found (newly or still unhealed).
    pub damaged: Vec<Damage>,
    /// Snapshots that reach damage.
    pub snapshots_damaged: Vec<u64>,
    /// Blobs found damaged earlier and sent again by a backup in the last
    /// seven days.
    pub healed: Vec<DamageRecord>,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
}

impl Report {
    /// Whether anything is damaged (exit code 3).
    pub fn is_damaged(&self) -> bool {
        self.catalog != "ok" || !self.damaged.is_empty() || !self.snapshots_damaged.is_empty()
    }
}

/// Verifies the store in `packs_dir` against the catalog at `catalog_path`.
///
/// # Errors
/// When the catalog cannot be opened or queried, or a pack cannot be listed.
pub fn run(catalog_path: &Path, packs_dir: &Path, options: &Options) -> Result<Report> {
    let started = Instant::now();
    let mut catalog = Catalog::open(catalog_path).map_err(crate::catalog::describe_error)?;
    let mut report = Report {
        catalog: catalog.integrity_check()?,
        ..Report::default()
    };
    if report.catalog != "ok" {
        tracing::error!("verify: the catalog is damaged: {}", report.catalog);
    }
    check_structure(&catalog, packs_dir, &mut report)?;
    let mut found = Vec::new();
    check_blobs(
        &mut catalog,
        packs_dir,
        options,
        started,
        &mut report,
        &mut found,
    )?;
    let mut walk = Walk {
        catalog: &mut catalog,
        packs_dir,
        found: HashMap::new(),
        below: HashMap::new(),
        files: HashMap::new(),
    };
    for (client, row, reason) in found {
        walk.found
            .insert((client, row.kind, row.id), Finding::new(Some(&row), reason));
    }
    walk.snapshots(&mut report)?;
    let Walk { found, .. } = walk;
    for ((client, kind, id), finding) in found {
        let snapshots: Vec<u64> = finding.snapshots.iter().copied().collect();
        catalog.set_damage_snapshots(client, kind, &id, &snapshots)?;
        report.damaged.push(Damage {
            client: catalog.client_name(client)?,
            kind: kind_name(kind),
            blob: hex(&id),
            pack: finding.at.map(|a| a.0),
            offset: finding.at.map(|a| a.1),
            length: finding.at.map(|a| a.2),
            reason: finding.reason,
            snapshots: finding.snapshots.into_iter().collect(),
            paths: finding.paths,
        });
    }
    report.damaged.sort_by_key(|d| (d.pack, d.offset));
    report.healed = catalog.damage_records(Some(now_ms() - HEALED_SHOWN_MS))?;
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// Verifies every `interval` in the server (beside uploads, at the
/// configured rate), logging what it found, until `shutdown`.
pub async fn periodic(
    catalog_path: std::path::PathBuf,
    packs_dir: std::path::PathBuf,
    options: Options,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let (catalog, packs, options) = (catalog_path.clone(), packs_dir.clone(), options.clone());
        let outcome = tokio::task::spawn_blocking(move || run(&catalog, &packs, &options)).await;
        match outcome {
            Ok(Ok(report)) if report.is_damaged() => tracing::error!(
                "verify: damage found: catalog {}; {} damaged blobs; snapshots {:?} (run `ferry-relay verify` for details)",
                report.catalog,
                report.damaged.len(),
                report.snapshots_damaged
            ),
            Ok(Ok(report)) => tracing::info!(
                "verify: clean: {} blobs ({} bytes) checked, {} left for the next run, in {} ms",
                report.blobs_checked,
                report.bytes_checked,
                report.blobs_left,
                report.duration_ms
            ),
            Ok(Err(e)) => tracing::error!("verify failed: {e:#}"),
            Err(e) => tracing::error!("verify failed: {e}"),
        }
    }
}

/// The packs' structure: what lies past the last blob each names, and
/// packs nothing names. (Rows past a pack's end are found with the blobs.)
fn check_structure(catalog: &Catalog, packs_dir: &Path, report: &mut Report) -> Result<()> {
    let ends = catalog.committed_pack_ends()?;
    let listing = match std::fs::read_dir(packs_dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for entry in listing {
        let entry = entry?;
        let Some(pack) = crate::store::pack_number(&entry.file_name()) else {
            continue;
        };
        let len = entry.metadata()?.len();
        match ends.get(&pack) {
            Some(end) => report.unindexed_tail_bytes += len.saturating_sub(*end),
            None => report.packs_unnamed += 1,
        }
    }
    Ok(())
}

/// Phase 2: read and hash the rows due, pack by pack: [`WORKERS`]
/// threads each read and hash whole packs, least recently verified first,
/// while this one loads their rows and records what they found.
fn check_blobs(
    catalog: &mut Catalog,
    packs_dir: &Path,
    options: &Options,
    started: Instant,
    report: &mut Report,
    found: &mut Vec<(u64, BlobRow, String)>,
) -> Result<()> {
    let cutoff = match options.since_verified {
        Some(since) => {
            now_ms().saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        }
        None => i64::MAX,
    };
    let mut due = Vec::new();
    let mut due_bytes = 0u64;
    for (pack, oldest) in catalog.packs_by_verification()? {
        if oldest < cutoff {
            let (rows, bytes) = catalog.due_in_pack(pack, cutoff)?;
            due_bytes += bytes;
            due.push((pack, rows));
        }
    }
    let budget = options
        .subset_percent
        .map(|p| (due_bytes as f64 * p.clamp(0.0, 100.0) / 100.0).ceil() as u64);
    let pacer = std::sync::Mutex::new(Pacer {
        rate: options.rate.filter(|r| *r > 0),
        started,
        bytes: 0,
    });
    let (send_job, jobs) = sync_channel::<PackJob>(1);
    let jobs = std::sync::Mutex::new(jobs);
    let (send_done, done) = std::sync::mpsc::channel::<(PackJob, std::io::Result<Vec<Verdict>>)>();
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..WORKERS {
            let (jobs, pacer, send_done) = (&jobs, &pacer, send_done.clone());
            scope.spawn(move || {
                let mut buffer = Vec::new();
                while let Ok(Ok(job)) = jobs.lock().map(|j| j.recv()) {
                    let path = packs_dir.join(format!("{:08}.pack", job.pack));
                    let verdicts = check_pack(&path, &job.rows, &mut buffer, pacer);
                    if send_done.send((job, verdicts)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(send_done);
        let mut dispatched = 0;
        let mut stopped = false;
        for (pack, count) in due {
            let over_time = options
                .max_duration
                .is_some_and(|max| started.elapsed() >= max);
            let over_budget = budget.is_some_and(|b| report.bytes_checked >= b);
            if stopped || over_time || over_budget {
                stopped = true;
                report.blobs_left += count;
                continue;
            }
            let rows = catalog.rows_to_verify(pack, cutoff)?;
            report.bytes_checked += rows
                .iter()
                .map(|(_, r, _)| u64::from(r.at.len))
                .sum::<u64>();
            if send_job.send(PackJob { pack, rows }).is_err() {
                break;
            }
            dispatched += 1;
            while let Ok((job, verdicts)) = done.try_recv() {
                record(catalog, packs_dir, job, verdicts, cutoff, report, found)?;
                dispatched -= 1;
            }
        }
        drop(send_job);
        for _ in 0..dispatched {
            let (job, verdicts) = done.recv().expect("every job is answered");
            record(catalog, packs_dir, job, verdicts, cutoff, report, found)?;
        }
        Ok(())
    })
}

/// Threads that read and hash packs.
const WORKERS: usize = 2;

/// The rows of one pack to check.
struct PackJob {
    pack: u32,
    rows: Vec<(u64, BlobRow, BlobState)>,
}

/// `None` when a blob is whole, else what is wrong.
type Verdict = Option<String>;

/// Records what a worker found in one pack: damage marked (when the row is
/// still where it was read: a collection may have moved it meanwhile),
/// the rest verified now.
fn record(
    catalog: &mut Catalog,
    packs_dir: &Path,
    job: PackJob,
    verdicts: std::io::Result<Vec<Verdict>>,
    cutoff: i64,
    report: &mut Report,
    found: &mut Vec<(u64, BlobRow, String)>,
) -> Result<()> {
    let pack = job.pack;
    let verdicts = verdicts.with_context(|| {
        format!(
            "cannot read {}",
            packs_dir.join(format!("{pack:08}.pack")).display()
        )
    })?;
    report.packs += 1;
    for ((client, row, _), verdict) in job.rows.iter().zip(verdicts) {
        report.blobs_checked += 1;
        let Some(reason) = verdict else {
            continue;
        };
        if catalog.mark_damaged(*client, row, &reason)? {
            tracing::error!(
                "verify: {} {} of client {client} in pack {pack:08} at {}: {reason}",
                kind_name(row.kind),
                hex(&row.id[..8]),
                row.at.offset
            );
            found.push((*client, *row, reason));
        }
    }
    if let Some(last) = job.rows.iter().map(|(_, row, _)| row.at.offset).max() {
        catalog.mark_pack_verified(pack, last, cutoff)?;
    }
    Ok(())
}

/// Keeps reads under a rate over the whole run.
struct Pacer {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    /// Counts `bytes` read; returns how long to wait to stay under the rate.
    fn read(&mut self, bytes: u64) -> Option<Duration> {
        self.bytes += bytes;
        let rate = self.rate?;
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        due.checked_sub(self.started.elapsed())
    }
}

/// Bytes of a pack read at once (several blobs, and the dead space
/// between them).
const SEGMENT: u64 = 2 << 20;

/// Reads `rows` (in offset order) from one pack, a segment of [`SEGMENT`]
/// bytes at a time into `buffer`; for each, `None` when its bytes
/// decompress and hash to its id, else what is wrong.
fn check_pack(
    path: &Path,
    rows: &[(u64, BlobRow, BlobState)],
    buffer: &mut Vec<u8>,
    pacer: &std::sync::Mutex<Pacer>,
) -> std::io::Result<Vec<Verdict>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(rows
                .iter()
                .map(|_| Some("its pack is missing".into()))
                .collect());
        }
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let end_of = |i: usize| rows[i].1.at.offset + u64::from(rows[i].1.at.len);
    let mut verdicts = Vec::with_capacity(rows.len());
    let mut first = 0;
    while first < rows.len() {
        if end_of(first) > len {
            verdicts.push(Some(format!(
                "it ends at {}, past the end of its pack ({len} bytes)",
                end_of(first)
            )));
            first += 1;
            continue;
        }
        let start = rows[first].1.at.offset;
        let mut last = first + 1;
        while last < rows.len() && end_of(last) <= len && end_of(last) - start <= SEGMENT {
            last += 1;
        }
        let want = end_of(last - 1) - start;
        buffer.clear();
        // read_to_end fills spare capacity without zeroing it first.
        (&file).seek(SeekFrom::Start(start))?;
        (&file).take(want).read_to_end(buffer)?;
        if (buffer.len() as u64) < want {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let wait = pacer.lock().map_or(None, |mut p| p.read(want));
        if let Some(wait) = wait {
            std::thread::sleep(wait);
        }
        for (_, row, _) in &rows[first..last] {
            let at = (row.at.offset - start) as usize;
            let stored = &buffer[at..at + row.at.len as usize];
            verdicts.push(check_blob(row.kind, &row.id, row.codec, stored));
        }
        first = last;
    }
    Ok(verdicts)
}

/// `None` when the stored bytes are the blob they are named for.
fn check_blob(
    kind: BlobKind,
    id: &[u8; 32],
    codec: ferry_protocol::compress::Codec,
    stored: &[u8],
) -> Option<String> {
    let limit = if kind == BlobKind::Chunk {
        MAX_CHUNK as usize
    } else {
        MAX_MESSAGE
    };
    let decompressed;
    let raw = if codec == ferry_protocol::compress::Codec::None && stored.len() <= limit {
        stored
    } else {
        match decompress(codec, stored.to_vec(), limit) {
            Ok(raw) => {
                decompressed = raw;
                &decompressed[..]
            }
            Err(e) => return Some(format!("it does not decompress ({e})")),
        }
    };
    let whole = match kind {
        BlobKind::Chunk => ChunkId::of(raw).0 == *id,
        BlobKind::Tree => Tree::decode(&TreeId(*id), raw).is_ok(),
        BlobKind::Content => Content::decode(&ContentId(*id), raw).is_ok(),
        // Left by earlier versions, never read, collected as garbage.
        BlobKind::Signature => true,
    };
    (!whole).then(|| "its bytes do not match its id".into())
}

/// What verify knows is wrong with one blob.
struct Finding {
    at: Option<(u32, u64, u32)>,
    reason: String,
    snapshots: BTreeSet<u64>,
    paths: Vec<String>,
}

impl Finding {
    fn new(row: Option<&BlobRow>, reason: String) -> Self {
        Finding {
            at: row.map(|r| (r.at.pack, r.at.offset, r.at.len)),
            reason,
            snapshots: BTreeSet::new(),
            paths: Vec::new(),
        }
    }
}

type Key = (u64, BlobKind, [u8; 32]);

/// Phase 3: the snapshots' closure.
struct Walk<'c, 'p> {
    catalog: &'c mut Catalog,
    packs_dir: &'p Path,
    /// Damaged or missing blobs.
    found: HashMap<Key, Finding>,
    /// Trees and contents walked, with the damaged blobs under them (none:
    /// everything under them is whole).
    below: HashMap<Key, Vec<Key>>,
    /// Packs open for reading trees and contents.
    files: HashMap<u32, File>,
}

/// Packs the closure walk keeps open at most.
const OPEN_PACKS: usize = 64;

impl Walk<'_, '_> {
    fn snapshots(&mut self, report: &mut Report) -> Result<()> {
        let roots = self.catalog.snapshot_roots()?;
        report.snapshots = roots.len() as u64;
        for (client, snapshot, root) in roots {
            let mut reach = Reach {
                snapshot,
                path: String::new(),
            };
            if !self.tree(client, TreeId(root), &mut reach)?.is_empty() {
                report.snapshots_damaged.push(snapshot);
            }
        }
        Ok(())
    }

    /// The damaged blobs under a tree; records the state of each tree and
    /// content it walks (incomplete when something under it is damaged).
    fn tree(&mut self, client: u64, id: TreeId, reach: &mut Reach) -> Result<Vec<Key>> {
        let key = (client, BlobKind::Tree, id.0);
        if let Some(below) = self.seen(&key, reach) {
            return Ok(below);
        }
        let Some((row, raw)) = self.load(key, reach)? else {
            return Ok(self.below.get(&key).cloned().unwrap_or_default());
        };
        let tree = match Tree::decode(&id, &raw) {
            Ok(tree) => tree,
            Err(e) => return self.damaged(key, &row, &format!("{e}"), reach),
        };
        let mut below = Vec::new();
        let base = reach.path.clone();
        for entry in tree.entries {
            reach.path = format!("{base}/{}", String::from_utf8_lossy(&entry.name));
            match entry.kind {
                EntryKind::Dir { tree } => below.extend(self.tree(client, tree, reach)?),
                EntryKind::File { content, .. } => {
                    below.extend(self.content(client, content, reach)?);
                }
                _ => {}
            }
        }
        reach.path = base;
        self.settle(key, below)
    }

    fn content(&mut self, client: u64, id: ContentId, reach: &mut Reach) -> Result<Vec<Key>> {
        let key = (client, BlobKind::Content, id.0);
        if let Some(below) = self.seen(&key, reach) {
            return Ok(below);
        }
        let Some((row, raw)) = self.load(key, reach)? else {
            return Ok(self.below.get(&key).cloned().unwrap_or_default());
        };
        let content = match Content::decode(&id, &raw) {
            Ok(content) => content,
            Err(e) => return self.damaged(key, &row, &format!("{e}"), reach),
        };
        let mut below = Vec::new();
        for chunk in &content.chunks {
            let chunk_key = (client, BlobKind::Chunk, chunk.id.0);
            if let Some(finding) = self.found.get_mut(&chunk_key) {
                finding.reached(reach);
                below.push(chunk_key);
                continue;
            }
            let found = self
                .catalog
                .find_blob_state(client, BlobKind::Chunk, &chunk.id.0)?;
            let reason = match found {
                Some((_, BlobState::Damaged)) => "found damaged by an earlier verify",
                Some(_) => continue,
                None => "no row names it",
            };
            let row = found.map(|(row, _)| row);
            self.record(chunk_key, row.as_ref(), reason.into(), reach);
            below.push(chunk_key);
        }
        for part in content.parts {
            below.extend(self.content(client, part.id, reach)?);
        }
        self.settle(key, below)
    }

    /// A tree or content walked before: the damage under it, now reached
    /// from this snapshot too.
    fn seen(&mut self, key: &Key, reach: &Reach) -> Option<Vec<Key>> {
        let below = self.below.get(key)?.clone();
        for damaged in &below {
            if let Some(finding) = self.found.get_mut(damaged) {
                finding.snapshots.insert(reach.snapshot);
            }
        }
        Some(below)
    }

    fn settle(&mut self, key: Key, mut below: Vec<Key>) -> Result<Vec<Key>> {
        below.sort_unstable_by_key(|k| (k.1 as u8, k.2));
        below.dedup();
        self.catalog
            .set_complete(key.0, key.1, &key.2, below.is_empty())?;
        self.below.insert(key, below.clone());
        Ok(below)
    }

    /// A tree's or content's row and bytes, or `None` when it is damaged or
    /// missing (recorded). A row a collection moves while it is read is
    /// read again where it went.
    fn load(&mut self, key: Key, reach: &mut Reach) -> Result<Option<(BlobRow, Vec<u8>)>> {
        let (client, kind, id) = key;
        let mut attempts = 0;
        loop {
            let Some((row, state)) = self.catalog.find_blob_state(client, kind, &id)? else {
                self.record(key, None, "no row names it".into(), reach);
                self.below.insert(key, vec![key]);
                return Ok(None);
            };
            if state == BlobState::Damaged {
                let reason = "found damaged by an earlier verify".to_string();
                self.record(key, Some(&row), reason, reach);
                self.below.insert(key, vec![key]);
                return Ok(None);
            }
            let raw = self
                .read(&row)
                .map_err(|e| format!("cannot be read ({e})"))
                .and_then(|stored| {
                    decompress(row.codec, stored, MAX_MESSAGE).map_err(|e| format!("{e}"))
                });
            let reason = match raw {
                Ok(raw) => return Ok(Some((row, raw))),
                Err(reason) => reason,
            };
            let moved = self
                .catalog
                .find_blob_state(client, kind, &id)?
                .is_some_and(|(now, _)| now.at != row.at);
            attempts += 1;
            if !moved || attempts >= 3 {
                self.damaged(key, &row, &reason, reach)?;
                return Ok(None);
            }
        }
    }

    /// The stored bytes of a row, through a small cache of open packs.
    fn read(&mut self, row: &BlobRow) -> std::io::Result<Vec<u8>> {
        if !self.files.contains_key(&row.at.pack) {
            if self.files.len() >= OPEN_PACKS {
                self.files.clear();
            }
            let path = self.packs_dir.join(format!("{:08}.pack", row.at.pack));
            self.files.insert(row.at.pack, File::open(path)?);
        }
        let file = &self.files[&row.at.pack];
        let mut buf = vec![0u8; row.at.len as usize];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, row.at.offset)?;
        Ok(buf)
    }

    /// Marks a tree or content whose bytes (read from `row`) are wrong
    /// damaged, and records it, when its row is still where it was read.
    fn damaged(
        &mut self,
        key: Key,
        row: &BlobRow,
        reason: &str,
        reach: &mut Reach,
    ) -> Result<Vec<Key>> {
        if !self.catalog.mark_damaged(key.0, row, reason)? {
            // Moved meanwhile: checked where it went by a later run.
            return Ok(Vec::new());
        }
        self.record(key, Some(row), reason.to_string(), reach);
        self.below.insert(key, vec![key]);
        Ok(vec![key])
    }

    fn record(&mut self, key: Key, row: Option<&BlobRow>, reason: String, reach: &Reach) {
        self.found
            .entry(key)
            .or_insert_with(|| Finding::new(row, reason))
            .reached(reach);
    }
}

/// Where the walk is: which snapshot, which path.
struct Reach {
    snapshot: u64,
    path: String,
}

impl Finding {
    fn reached(&mut self, reach: &Reach) {
        self.snapshots.insert(reach.snapshot);
        if self.paths.len() < PATHS_SHOWN && !self.paths.contains(&reach.path) {
            self.paths.push(if reach.path.is_empty() {
                "/".into()
            } else {
                reach.path.clone()
            });
        }
    }
}
