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

use std::collections::{BTreeMap, HashMap};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use ferry_protocol::compress::Method;
use ferry_protocol::delta;
use ferry_protocol::ids::{ContentId, TreeId};
use ferry_protocol::keyed_chunking::KeyedChunker;
use ferry_protocol::message::{Message, Refusal, StorageId};
use ferry_protocol::root::{Root, Seen};
use ferry_protocol::sealed::{seal, SealedKind, SealingKeys};
use ferry_protocol::sealed_objects::{
    encode_chunk, ChunkEntry, Patch, SealedContent, MAX_CHAIN, PART_CHUNKS,
};
use ferry_protocol::tree::{Entry, EntryKind, Extent, Tree};

use super::remote::Remote;
use crate::backup::files::{same_version, unchanged};
use crate::backup::{ExtentReader, Job, Source, StaleCache, Summary};
use crate::cache::{CachedFile, FilesCache, Known, SetCache, SetUpdate};
use crate::client::{unexpected, ClientError, RelayClient};
use crate::fsmeta;
use crate::state::StateDir;

/// Chunks read, sealed and queried together.
const BATCH: usize = 256;

/// A directory under construction.
#[derive(Default)]
pub(super) struct Dir {
    pub(super) entry: Option<Entry>,
    pub(super) children: BTreeMap<Vec<u8>, Node>,
}

/// A directory or anything else, as the walk found it.
pub(super) enum Node {
    Dir(Dir),
    Leaf(Entry),
}

/// One sealed backup under way.
pub(super) struct Sealed<'a, 'c> {
    remote: Remote<'c>,
    keys: &'a SealingKeys,
    cache: &'a mut FilesCache,
    set: String,
    previous: SetCache,
    changed: Vec<(Vec<u8>, CachedFile, Vec<ChunkEntry>)>,
    /// First path of each multiply-linked inode.
    pub(super) hardlinks: HashMap<(u64, u64), Vec<u8>>,
    pub(super) job: &'a Job,
    pub(super) summary: Summary,
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
) -> Result<Summary> {
    let started = std::time::Instant::now();
    let started_ms = crate::now_ms();
    match client
        .request(&Message::BackupBegin {
            set: job.set.clone(),
            retention: job.retention,
        })
        .await?
    {
        Message::BackupReady { .. } => {}
        other => return Err(unexpected("BackupReady", &other)),
    }
    let previous = cache.load(&job.set)?;
    let mut run = Sealed {
        remote: Remote::new(client),
        keys,
        cache,
        set: job.set.clone(),
        previous,
        changed: Vec::new(),
        hardlinks: HashMap::new(),
        job,
        summary: Summary::default(),
    };
    let before = super::roots::newest(state, &mut run.remote, keys, &job.set).await?;
    let mut root = Dir::default();
    let Source::Paths(paths) = &job.source else {
        bail!("a sealed client backs up paths; a command's output is not supported in sealed mode yet");
    };
    for path in paths {
        run.add_path(&mut root, path).await?;
    }
    let tree = run.trees(root).await?;
    let sequence = before.as_ref().map_or(1, |(_, r)| r.sequence + 1);
    let root = Root {
        set: job.set.clone(),
        sequence,
        previous: before.map(|(id, _)| id.0),
        time_ms: started_ms,
        tree: tree.0,
    };
    let (root_id, bytes) = seal(keys, SealedKind::Root, vec![tree], &root.encode()?)?;
    run.remote.put(bytes).await?;
    run.remote.flush().await?;
    let commit = Message::CommitSealed {
        root: root_id,
        files: run.summary.files,
        bytes: run.summary.bytes,
        started_ms,
    };
    let snapshot = match run.remote.client().request(&commit).await {
        Ok(Message::Committed { snapshot }) => snapshot,
        Ok(other) => return Err(unexpected("Committed", &other)),
        Err(ClientError::Refused(r)) if r.code == Some(Refusal::IncompleteSnapshot) => {
            run.cache.clear(&run.set)?;
            return Err(StaleCache(r.to_string()).into());
        }
        Err(e) => return Err(e.into()),
    };
    super::roots::remember(
        state,
        &job.set,
        Seen {
            sequence,
            id: root_id.0,
        },
    )?;
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
    let client = remote.into_client();
    summary.totals.snapshot = snapshot;
    summary.compression = "lz4".into();
    summary.totals.bytes_sent = client.bytes_sent();
    summary.totals.bytes_received = client.bytes_received();
    summary.totals.round_trips = client.round_trips();
    summary.totals.duration_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The files read, each with its chunk entries for the next backup's bases.
fn save_cache(
    cache: &mut FilesCache,
    set: &str,
    previous: SetCache,
    changed: Vec<(Vec<u8>, CachedFile, Vec<ChunkEntry>)>,
) -> Result<()> {
    let files_gone = previous
        .files
        .into_iter()
        .filter(|(_, (_, seen))| !seen)
        .map(|(path, _)| path)
        .collect();
    let entries: Vec<(Vec<u8>, Vec<ChunkEntry>)> = changed
        .iter()
        .map(|(path, _, entries)| (path.clone(), entries.clone()))
        .collect();
    let update = SetUpdate {
        files: changed.into_iter().map(|(p, f, _)| (p, f)).collect(),
        files_gone,
        trees: Vec::new(),
        trees_gone: Vec::new(),
    };
    cache.save(set, &update)?;
    cache.save_sealed_entries(set, &entries)
}

impl Sealed<'_, '_> {
    /// One regular file: its entry kind and the metadata it was read under.
    pub(super) async fn file(
        &mut self,
        path: &Path,
        scanned: &Metadata,
    ) -> Result<Option<(EntryKind, Metadata)>> {
        let key = path.as_os_str().as_bytes().to_vec();
        let cached = self.previous.files.get_mut(&key).map(|(known, seen)| {
            *seen = true;
            known.clone()
        });
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
        let bases = match &cached {
            Some(_) => self
                .cache
                .sealed_entries(&self.set, &key)?
                .unwrap_or_default(),
            None => Vec::new(),
        };
        for _ in 0..crate::backup::files::TORN_RETRIES {
            let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags.bits() as i32)
                .open(path)
            {
                Ok(file) => file,
                Err(e) => {
                    self.unreadable(path, &e.to_string());
                    return Ok(None);
                }
            };
            let before = file.metadata()?;
            if !before.is_file() {
                self.unreadable(path, "it is no longer a regular file");
                return Ok(None);
            }
            let extents = fsmeta::data_extents(&file, &before)?;
            let whole = [Extent {
                offset: 0,
                len: before.len(),
            }];
            let reader = ExtentReader::new(file, extents.as_deref().unwrap_or(&whole));
            let (content, entries) = match self.store(reader, &bases).await {
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
            if cached.is_some() {
                self.summary.totals.files_changed += 1;
            } else {
                self.summary.totals.files_new += 1;
            }
            self.count(before.len());
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
            self.changed.push((key, record, entries));
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

    /// Chunks `reader`, sends what the relay lacks, seals the content;
    /// returns its storage id and the chunk entries.
    async fn store(
        &mut self,
        reader: impl std::io::Read,
        bases: &[ChunkEntry],
    ) -> Result<(StorageId, Vec<ChunkEntry>)> {
        let mut entries: Vec<ChunkEntry> = Vec::new();
        let mut chunks = KeyedChunker::new(reader, self.keys);
        loop {
            let mut batch = Vec::with_capacity(BATCH);
            for chunk in chunks.by_ref().take(BATCH) {
                batch.push(chunk?.data);
            }
            if batch.is_empty() {
                break;
            }
            let first = entries.len();
            let sent = self.send_chunks(batch, bases, first).await?;
            entries.extend(sent);
        }
        let content = self.seal_content(&entries).await?;
        Ok((content, entries))
    }

    /// One batch of chunks: each reused from the previous version when its
    /// keyed id is there, else sealed whole or as a patch, with its signature.
    async fn send_chunks(
        &mut self,
        batch: Vec<Vec<u8>>,
        bases: &[ChunkEntry],
        first: usize,
    ) -> Result<Vec<ChunkEntry>> {
        let keys = self.keys;
        let known: HashMap<[u8; 32], ChunkEntry> = bases.iter().map(|e| (e.keyed, *e)).collect();
        let mut out: Vec<Option<ChunkEntry>> = Vec::with_capacity(batch.len());
        let mut fresh = Vec::new();
        for (i, data) in batch.iter().enumerate() {
            let keyed = keys.keyed_id(data);
            if let Some(entry) = known.get(&keyed) {
                out.push(Some(*entry));
                self.summary.totals.bytes_scanned += data.len() as u64;
                continue;
            }
            let (data_id, sealed) = seal(
                keys,
                SealedKind::Chunk,
                Vec::new(),
                &encode_chunk(Method::Lz4, data),
            )?;
            let (sig_id, sig) = seal(
                keys,
                SealedKind::Signature,
                Vec::new(),
                &delta::signature(data),
            )?;
            fresh.push((i, keyed, data_id, sealed, sig_id, sig));
            out.push(None);
        }
        let ids: Vec<StorageId> = fresh
            .iter()
            .flat_map(|(_, _, data, _, sig, _)| [*data, *sig])
            .collect();
        let missing = self.remote.missing(&ids).await?;
        // Bases for the chunks the relay lacks: the same place in the
        // previous version, while its chain is short enough.
        let base_of = |i: usize| {
            bases
                .get(first + i)
                .filter(|b| b.depth < MAX_CHAIN)
                .copied()
        };
        let wanted: Vec<StorageId> = fresh
            .iter()
            .zip(missing.chunks(2))
            .filter(|(_, m)| m[0])
            .filter_map(|((i, ..), _)| base_of(*i).map(|b| b.signature))
            .collect();
        let signatures = self
            .remote
            .open_all(keys, SealedKind::Signature, &wanted)
            .await?;
        for ((i, keyed, data_id, sealed, sig_id, sig), m) in
            fresh.into_iter().zip(missing.chunks(2))
        {
            let data = &batch[i];
            let mut entry = ChunkEntry {
                data: data_id,
                signature: sig_id,
                keyed,
                len: data.len() as u32,
                depth: 0,
            };
            if m[0] {
                let patched = base_of(i).and_then(|base| {
                    let (_, signature) = signatures.get(&base.signature)?;
                    let delta = delta::diff(signature.clone(), data).ok()?;
                    (delta.len() < data.len() / 2).then_some((base, delta))
                });
                match patched {
                    Some((base, delta)) => {
                        let patch = Patch {
                            keyed,
                            depth: base.depth + 1,
                            delta,
                        };
                        let (id, bytes) =
                            seal(keys, SealedKind::Patch, vec![base.data], &patch.encode()?)?;
                        entry.data = id;
                        entry.depth = patch.depth;
                        self.summary.chunks_delta += 1;
                        self.remote.put(bytes).await?;
                    }
                    None => {
                        self.summary.chunks_sent += 1;
                        self.remote.put(sealed).await?;
                    }
                }
            }
            if m[1] {
                self.remote.put(sig).await?;
            }
            self.summary.totals.bytes_scanned += data.len() as u64;
            out[i] = Some(entry);
        }
        Ok(out
            .into_iter()
            .map(|e| e.expect("every chunk placed"))
            .collect())
    }

    /// Seals a file's content (in parts when it is large) and sends what
    /// the relay lacks; returns its storage id.
    async fn seal_content(&mut self, entries: &[ChunkEntry]) -> Result<StorageId> {
        let mut parts = Vec::new();
        if entries.len() > PART_CHUNKS {
            for part in entries.chunks(PART_CHUNKS) {
                let content = SealedContent {
                    chunks: part.to_vec(),
                    parts: Vec::new(),
                };
                let id = self
                    .send_object(SealedKind::Content, content.refs(), &content.encode()?)
                    .await?;
                parts.push((id, content.len()));
            }
        }
        let content = if parts.is_empty() {
            SealedContent {
                chunks: entries.to_vec(),
                parts: Vec::new(),
            }
        } else {
            SealedContent {
                chunks: Vec::new(),
                parts,
            }
        };
        self.send_object(SealedKind::Content, content.refs(), &content.encode()?)
            .await
    }

    /// Seals an object and sends it unless the relay has it.
    async fn send_object(
        &mut self,
        kind: SealedKind,
        refs: Vec<StorageId>,
        plain: &[u8],
    ) -> Result<StorageId> {
        let (id, bytes) = seal(self.keys, kind, refs, plain)?;
        if self.remote.missing(&[id]).await?[0] {
            self.remote.put(bytes).await?;
        }
        Ok(id)
    }

    /// Seals the trees bottom-up, sends those the relay lacks (children
    /// first); returns the root tree's storage id.
    async fn trees(&mut self, root: Dir) -> Result<StorageId> {
        let mut sealed = Vec::new();
        let id = seal_tree(self.keys, root, &mut sealed)?;
        let ids: Vec<StorageId> = sealed.iter().map(|(id, _)| *id).collect();
        let missing = self.remote.missing(&ids).await?;
        let mut sent = std::collections::HashSet::new();
        for ((id, bytes), missing) in sealed.into_iter().zip(missing) {
            if missing && sent.insert(id) {
                self.remote.put(bytes).await?;
            }
        }
        Ok(id)
    }
}

/// Seals `dir` and those below it into `out`, children first.
fn seal_tree(
    keys: &SealingKeys,
    dir: Dir,
    out: &mut Vec<(StorageId, Vec<u8>)>,
) -> Result<StorageId> {
    let mut entries = Vec::with_capacity(dir.children.len());
    let mut refs = Vec::new();
    for (_, child) in dir.children {
        match child {
            Node::Leaf(entry) => {
                if let EntryKind::File { content, .. } = &entry.kind {
                    refs.push(StorageId(content.0));
                }
                entries.push(entry);
            }
            Node::Dir(mut sub) => {
                let mut entry = sub.entry.take().context("directory without metadata")?;
                let id = seal_tree(keys, sub, out)?;
                refs.push(id);
                entry.kind = EntryKind::Dir { tree: TreeId(id.0) };
                entries.push(entry);
            }
        }
    }
    let (_, plain) = Tree { entries }.encode()?;
    let (id, bytes) = seal(keys, SealedKind::Tree, refs, &plain)?;
    out.push((id, bytes));
    Ok(id)
}
