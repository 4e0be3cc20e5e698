//! A sealed backup: the files read and cut by the vault's keyed chunker,
//! every chunk, signature, patch, content, tree and root sealed here, and
//! only sealed objects the relay lacks sent.
//!
//! A changed chunk goes as a sealed patch against the chunk at the same
//! place of the file's previous version when the patch is under half the
//! chunk and the chain stays within [`MAX_CHAIN`]: the endpoint fetches
//! the old chunk's sealed signature (a batch at a time) and diffs locally,
//! since the relay can neither sign nor diff ciphertext. The files cache
//! remembers each file's chunk entries, so unchanged files are not read
//! and changed ones find their bases without asking the relay.

use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ferry_protocol::compress::Method;
use ferry_protocol::delta;
use ferry_protocol::ids::ContentId;
use ferry_protocol::keyed_chunking::KeyedChunker;
use ferry_protocol::message::{Message, StorageId};
use ferry_protocol::root::{Root, Seen};
use ferry_protocol::sealed::{seal, SealedKind, SealingKeys};
use ferry_protocol::sealed_objects::{SignaturePatch, MAX_CHAIN};
use ferry_protocol::tree::{EntryKind, Extent};

use super::align::{cut_at_old_starts, most_overlapping, starts_of};
use super::dictionary::VaultDictionary;
use super::objects::{content_objects, seal_chunks, seal_tree, signed};
use super::remote::{Kinds, Remote, Send};
use crate::backup::files::{open_regular, same_version, unchanged};
use crate::backup::scan::Walker;
use crate::backup::{Control, DirNode, ExtentReader, Job, Source, Summary};
use crate::cache::{CachedChunk, CachedFile, FilesCache, Known, SealedFile, SetCache, SetUpdate};
use crate::client::{unexpected, RelayClient};
use crate::fsmeta;
use crate::state::StateDir;

/// Files up to this size keep their chunks' signatures in the files
/// cache (about 1.2 % of their size): their next version's patches need
/// no round trip. Larger ones fetch them from the relay when changed.
const LOCAL_SIGNATURES_UP_TO: u64 = 256 << 20;

/// Chunks read, sealed and queried together.
const BATCH: usize = 256;

/// One sealed backup under way.
pub(super) struct Sealed<'a, 'c> {
    remote: Remote<'c>,
    keys: &'a SealingKeys,
    pub(super) cache: &'a mut FilesCache,
    pub(super) set: String,
    previous: SetCache,
    /// Files read: their path (or command key), cache record and chunks.
    pub(super) changed: Vec<(Vec<u8>, CachedFile, SealedFile)>,
    /// While reading from a filesystem snapshot: the original path and
    /// the snapshot's.
    pub(super) view: Option<(PathBuf, PathBuf)>,
    /// First path of each multiply-linked inode.
    pub(super) hardlinks: HashMap<(u64, u64), Vec<u8>>,
    pub(super) job: &'a Job,
    pub(super) summary: Summary,
    /// Progress out, stop requests in.
    pub(super) control: &'a Control,
    /// The largest single file the relay takes in this session.
    max_file: Option<u64>,
    /// How chunks are compressed before they are sealed.
    method: Method,
    /// The vault's dictionary chunks are packed with, if any.
    dictionary: Option<VaultDictionary>,
}

/// Runs one sealed backup of `job`.
///
/// # Errors
/// Session failures, a refused commit, a history the relay rolled back.
pub async fn run(
    state: &StateDir,
    client: &mut RelayClient,
    cache: &mut FilesCache,
    keys: &SealingKeys,
    job: &Job,
    control: &Control,
) -> Result<Summary> {
    let started = std::time::Instant::now();
    let started_ms = crate::now_ms();
    // The set's snapshots are asked for with the backup's start: one
    // round trip for both.
    client
        .ask(&Message::BackupBegin {
            set: job.set.clone(),
            retention: job.retention,
        })
        .await?;
    client
        .ask(&Message::ListSnapshots {
            set: Some(job.set.clone()),
        })
        .await?;
    let max_file = match client.answer().await? {
        Message::BackupReady { max_file } => max_file,
        other => return Err(unexpected("BackupReady", &other)),
    };
    let listed = match client.answer().await? {
        Message::SnapshotList { snapshots } => snapshots,
        other => return Err(unexpected("SnapshotList", &other)),
    };
    let previous = cache.load(&job.set)?;
    // As open mode starts (by the link's rate), without adapting: each
    // chunk is compressed alone, so zstd's ratio counts for more.
    let method = {
        let (day, minute) = ferry_net::throttle::local_now();
        crate::compression::Chooser::new(job.compression, job.limit.rate_at(day, minute)).method()
    };
    let mut run = Sealed {
        remote: Remote::new(client),
        keys,
        cache,
        set: job.set.clone(),
        previous,
        changed: Vec::new(),
        hardlinks: HashMap::new(),
        view: None,
        job,
        summary: Summary::default(),
        control,
        max_file,
        method,
        dictionary: None,
    };
    let before = super::roots::newest(state, &mut run.remote, keys, &job.set, listed).await?;
    let paths = match &job.source {
        Source::Paths(paths) => paths.clone(),
        Source::Command { .. } => Vec::new(),
    };
    run.dictionary = super::dictionary::for_backup(
        state,
        &mut run.remote,
        keys,
        (&job.set, before),
        (&paths, &job.excludes),
        method,
    )
    .await?;
    let mut root = DirNode::default();
    match (&job.source, &job.hooks) {
        (Source::Command { command, name }, _) => run.add_command(&mut root, command, name).await?,
        (Source::Paths(_), None) => {
            for path in &paths {
                run.add_path(&mut root, path, None).await?;
            }
        }
        (Source::Paths(_), Some(hooks)) => {
            for path in &paths {
                let path = crate::backup::absolute(path)?;
                let (run, root, at) = (&mut run, &mut root, path.clone());
                hooks
                    .with_snapshot(&path, &job.set, |snapshot| async move {
                        run.add_path(root, &at, Some(&snapshot)).await
                    })
                    .await?;
            }
        }
    }
    let (tree, trees) = run.trees(root).await?;
    let sequence = before.map_or(1, |seen| seen.sequence + 1);
    let root = Root {
        set: job.set.clone(),
        sequence,
        previous: before.map(|seen| seen.id),
        time_ms: started_ms,
        tree: tree.0,
    };
    let dictionary = run.dictionary.as_ref().map(|d| d.id);
    let refs = std::iter::once(tree).chain(dictionary).collect();
    let (root_id, bytes) = seal(keys, SealedKind::Root, refs, &root.encode()?)?;
    run.remote.queue(root_id, bytes, Send::Always).await?;
    run.remote.drain().await?;
    let client = run.remote.client();
    let labelled = crate::labels::ask(
        client,
        root_id.0,
        &crate::backup::label_paths(&job.source),
        Some(keys),
    )
    .await?;
    let commit = Message::CommitSealed {
        root: root_id,
        files: run.summary.files,
        bytes: run.summary.bytes,
        started_ms,
    };
    let answer = crate::labels::commit(run.remote.client(), labelled, &commit).await;
    let snapshot = crate::backup::committed(answer, run.cache, &run.set)?;
    super::roots::remember(
        state,
        &job.set,
        Seen {
            sequence,
            id: root_id.0,
        },
    )?;
    if let Some(dictionary) = dictionary {
        super::dictionary::remember_named(state, &job.set, &root_id.0, &dictionary)?;
    }
    let Sealed {
        remote,
        cache,
        set,
        previous,
        changed,
        mut summary,
        ..
    } = run;
    save_cache(cache, &set, previous, changed)?;
    cache.save_sealed_trees(&set, &trees)?;
    let names = [
        "chunk",
        "patch",
        "signature",
        "content",
        "tree",
        "root",
        "dictionary",
    ];
    let sent: Vec<String> = names
        .iter()
        .zip(remote.sent_by_kind)
        .map(|(kind, (count, bytes))| format!("{kind} {count} ({bytes} B)"))
        .collect();
    tracing::debug!("sealed objects sent: {}", sent.join(", "));
    let client = remote.into_client();
    summary.totals.snapshot = snapshot;
    summary.compression = crate::compression::method_name(method);
    summary.totals.bytes_sent = client.bytes_sent();
    summary.totals.bytes_received = client.bytes_received();
    summary.totals.round_trips = client.round_trips();
    summary.totals.duration_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The files read, each with what the next backup's patches need.
fn save_cache(
    cache: &mut FilesCache,
    set: &str,
    mut previous: SetCache,
    changed: Vec<(Vec<u8>, CachedFile, SealedFile)>,
) -> Result<()> {
    let adopted = previous.adopted();
    let files_gone = previous.unseen_files();
    let mut sealed = Vec::with_capacity(changed.len());
    let mut files = Vec::with_capacity(changed.len());
    for (path, file, kept) in changed {
        sealed.push((path.clone(), kept));
        files.push((path, file));
    }
    let update = SetUpdate {
        files,
        files_gone,
        trees: Vec::new(),
        trees_gone: Vec::new(),
        adopted,
    };
    cache.save(set, &update)?;
    cache.save_sealed_files(set, &sealed)
}

impl Sealed<'_, '_> {
    /// One regular file: its entry kind and the metadata it was read under.
    pub(super) async fn file(
        &mut self,
        path: &Path,
        scanned: &Metadata,
    ) -> Result<Option<(EntryKind, Metadata)>> {
        let key = self.recorded(path).as_os_str().as_bytes().to_vec();
        let cached = self.known(&key);
        if let Some(c) = cached.as_ref().filter(|c| unchanged(c, scanned)) {
            self.summary.totals.files_unchanged += 1;
            self.count(c.size);
            let kind = EntryKind::File {
                size: c.size,
                content: c.content,
                sparse: c.sparse.clone(),
            };
            return Ok(Some((kind, scanned.clone())));
        }
        let previous = match &cached {
            Some(_) => self.cache.sealed_file(&self.set, &key)?.unwrap_or_default(),
            None => SealedFile::default(),
        };
        for _ in 0..crate::backup::files::TORN_RETRIES {
            let (file, before) = match open_regular(path, self.max_file)? {
                Ok(opened) => opened,
                Err(why) => {
                    self.unreadable(path, &why);
                    return Ok(None);
                }
            };
            let extents = fsmeta::data_extents(&file, &before)?;
            let whole = [Extent {
                offset: 0,
                len: before.len(),
            }];
            let reader = ExtentReader::new(file, extents.as_deref().unwrap_or(&whole));
            let (content, kept) = match self.store(reader, &previous).await {
                Ok(done) => done,
                Err(e) if e.downcast_ref::<std::io::Error>().is_some() => {
                    self.unreadable(path, &format!("{e:#}"));
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let after = std::fs::symlink_metadata(path)?;
            if !same_version(&before, &after) {
                continue;
            }
            self.count_read(cached.is_some(), before.len());
            let content = ContentId(content.0);
            let record = CachedFile {
                known: Known {
                    size: before.len(),
                    mtime_ns: fsmeta::mtime_ns(&before),
                    ctime_ns: fsmeta::ctime_ns(&before),
                    inode: before.ino(),
                    content,
                    sparse: extents.clone(),
                },
                chunks: Default::default(),
            };
            self.changed.push((key, record, kept));
            let kind = EntryKind::File {
                size: before.len(),
                content,
                sparse: extents,
            };
            return Ok(Some((kind, before)));
        }
        self.unreadable(path, "it kept changing while it was read");
        Ok(None)
    }

    /// What the files cache knew of the file (or command) `key`, which
    /// this backup has now seen.
    pub(super) fn known(&mut self, key: &[u8]) -> Option<Known> {
        self.previous.files.get_mut(key).map(|(known, seen)| {
            *seen = true;
            known.clone()
        })
    }

    /// Counts a file read, new or changed (`known` before), of `size` bytes.
    pub(super) fn count_read(&mut self, known: bool, size: u64) {
        self.summary.count_read(known);
        self.count(size);
    }

    /// Chunks `reader`, queues what the relay may lack, seals the
    /// content; returns its storage id and what the cache keeps of the
    /// file (its chunks, and their signatures unless it is large).
    pub(super) async fn store(
        &mut self,
        reader: impl std::io::Read,
        previous: &SealedFile,
    ) -> Result<(StorageId, SealedFile)> {
        let bases = &previous.chunks;
        let mut signatures: HashMap<StorageId, Vec<u8>> = previous
            .signatures
            .iter()
            .map(|(id, sig)| (*id, sig.to_vec()))
            .collect();
        let mut chunks_out: Vec<CachedChunk> = Vec::new();
        let mut chunks = KeyedChunker::new(reader, self.keys);
        loop {
            let mut batch = Vec::with_capacity(BATCH);
            for chunk in chunks.by_ref().take(BATCH) {
                batch.push(chunk?.data);
            }
            if batch.is_empty() {
                break;
            }
            let offset: u64 = chunks_out.iter().map(|c| u64::from(c.len)).sum();
            let sent = self
                .send_chunks(batch, bases, offset, &mut signatures)
                .await?;
            chunks_out.extend(sent);
        }
        let (content, objects) = content_objects(self.keys, &chunks_out)?;
        // Parts the previous version had too are on the relay (it was
        // committed); a new file's may be another file's: asked.
        let (how, held) = if bases.is_empty() {
            (Send::IfMissing, HashSet::new())
        } else {
            let (_, old) = content_objects(self.keys, bases)?;
            (Send::Always, old.into_iter().map(|(id, _)| id).collect())
        };
        for (id, bytes) in objects {
            if !held.contains(&id) {
                self.remote.queue(id, bytes, how).await?;
            }
        }
        let size: u64 = chunks_out.iter().map(|c| u64::from(c.len)).sum();
        let kept_signatures = if size <= LOCAL_SIGNATURES_UP_TO {
            chunks_out
                .iter()
                .filter_map(|c| {
                    let sig = signatures.get(&c.signature)?.clone();
                    Some((c.signature, serde_bytes::ByteBuf::from(sig)))
                })
                .collect()
        } else {
            Vec::new()
        };
        let kept = SealedFile {
            chunks: chunks_out,
            signatures: kept_signatures,
        };
        Ok((content, kept))
    }

    /// One batch of chunks (the first at `offset` of the file's data):
    /// each reused from the previous version when its keyed id is there,
    /// else cut again where an old chunk began inside it ([`super::align`])
    /// and sealed whole (sent if the relay lacks it) or as a patch against
    /// the old chunk it overlaps most, with its signature.
    /// The bases' signatures come from `signatures` (the files cache's
    /// copies), else from the relay, in one round trip for the batch; the
    /// new chunks' signatures are added to it.
    async fn send_chunks(
        &mut self,
        batch: Vec<Vec<u8>>,
        bases: &[CachedChunk],
        offset: u64,
        signatures: &mut HashMap<StorageId, Vec<u8>>,
    ) -> Result<Vec<CachedChunk>> {
        let keys = self.keys;
        let known: HashMap<[u8; 32], CachedChunk> = bases.iter().map(|c| (c.keyed, *c)).collect();
        // Where each old chunk starts, and how long it is.
        let old_lens: Vec<u64> = bases.iter().map(|c| u64::from(c.len)).collect();
        let starts = starts_of(old_lens.iter().copied(), 0);
        let mut keyed: Vec<[u8; 32]> = batch.iter().map(|data| keys.keyed_id(data)).collect();
        let fresh: Vec<bool> = keyed.iter().map(|k| !known.contains_key(k)).collect();
        let count = batch.len();
        let batch = cut_at_old_starts(batch, &fresh, offset, &starts);
        if batch.len() != count {
            keyed = batch.iter().map(|data| keys.keyed_id(data)).collect();
        }
        let offsets = starts_of(batch.iter().map(|data| data.len() as u64), offset);
        let base_of = |i: usize| {
            let (start, end) = (offsets[i], offsets[i] + batch[i].len() as u64);
            let j = most_overlapping(&starts, &old_lens, start, end)?;
            bases.get(j).filter(|b| b.depth < MAX_CHAIN).copied()
        };
        let wanted: Vec<StorageId> = (0..batch.len())
            .filter(|i| !known.contains_key(&keyed[*i]))
            .filter_map(|i| base_of(i).filter(|b| signed(b.len as usize)))
            .map(|b| b.signature)
            .filter(|id| !signatures.contains_key(id))
            .collect();
        let fetched = self.signatures(&wanted).await?;
        signatures.extend(fetched);
        // The chunks not reused, sealed on every core.
        let fresh: Vec<(usize, Option<CachedChunk>)> = (0..batch.len())
            .filter(|i| !known.contains_key(&keyed[*i]))
            .map(|i| {
                let base = base_of(i).filter(|b| signatures.contains_key(&b.signature));
                (i, base)
            })
            .collect();
        let dictionary = self.dictionary.as_ref().map(|d| &d.prepared);
        let sealed = seal_chunks(
            keys,
            (self.method, dictionary),
            &batch,
            &keyed,
            &fresh,
            signatures,
        )?;

        let mut sealed = sealed.into_iter();
        let mut out = Vec::with_capacity(batch.len());
        for (data, keyed) in batch.iter().zip(keyed) {
            self.summary.totals.bytes_scanned += data.len() as u64;
            if let Some(cached) = known.get(&keyed) {
                out.push(*cached);
                continue;
            }
            let chunk = sealed.next().context("a chunk not sealed")?;
            let (signature, data_id) = (chunk.cached.signature, chunk.cached.data);
            let patched = chunk.cached.depth > 0;
            if patched {
                self.summary.chunks_delta += 1;
            }
            if let Some(bytes) = chunk.signature {
                let how = if patched {
                    Send::Always
                } else {
                    Send::IfMissing
                };
                self.remote.queue(signature, bytes, how).await?;
            }
            let how = if patched {
                Send::Always
            } else {
                Send::ChunkIfMissing
            };
            self.remote.queue(data_id, chunk.data, how).await?;
            signatures.insert(signature, chunk.full_signature);
            out.push(chunk.cached);
        }
        Ok(out)
    }

    /// The signatures `ids` in full, each rebuilt through its chain of
    /// signature patches (a fetch per link of the longest chain).
    async fn signatures(&mut self, ids: &[StorageId]) -> Result<HashMap<StorageId, Vec<u8>>> {
        let starts: Vec<(StorageId, Kinds)> = ids
            .iter()
            .map(|id| (*id, &[SealedKind::Signature][..]))
            .collect();
        let (chains, opened) = self
            .remote
            .chains(
                self.keys,
                &starts,
                usize::from(MAX_CHAIN),
                |header, _| match header.refs.as_slice() {
                    [] => Ok(None),
                    [base] => Ok(Some((*base, &[SealedKind::Signature][..]))),
                    _ => bail!("a sealed signature names more than one base"),
                },
            )
            .await?;
        let mut out = HashMap::with_capacity(ids.len());
        for chain in chains {
            let bottom = chain.last().expect("not empty");
            let mut full = opened[bottom].1.clone();
            delta::check_signature(&full)?;
            for id in chain.iter().rev().skip(1) {
                full = SignaturePatch::decode(&opened[id].1)?.apply(&full)?;
            }
            out.insert(chain[0], full);
        }
        Ok(out)
    }

    /// Seals the trees bottom-up and queues them, children first: those
    /// of the set's last snapshot are on the relay, the others are sent
    /// (asked first when the set has no snapshot here yet: another set may
    /// hold them). Returns the root tree's storage id and every tree's.
    async fn trees(&mut self, root: DirNode) -> Result<(StorageId, Vec<StorageId>)> {
        let mut sealed = Vec::new();
        let id = seal_tree(self.keys, root, &mut sealed)?;
        let held = self.cache.sealed_trees(&self.set)?;
        let how = if held.is_empty() {
            Send::IfMissing
        } else {
            Send::Always
        };
        let ids = sealed.iter().map(|(id, _)| *id).collect();
        for (id, bytes) in sealed {
            if !held.contains(&id) {
                self.remote.queue(id, bytes, how).await?;
            }
        }
        Ok((id, ids))
    }
}
