//! Backup and restore requests inside an authenticated session.
//!
//! [`Transfer::handle`] takes one request and returns the reply, if the
//! request has one. It does blocking work (hashing, lz4, rsync, pack writes,
//! SQLite), so the session calls it on the blocking pool. Every lookup is
//! keyed by the session's client: asking for another client's blob gives the
//! same answer as asking for one that does not exist.
//!
//! Upload rules: a chunk counts only once its BLAKE3 matches its id (a delta
//! that does not rebuild it is reported back in `Synced.rejected`); blobs
//! become visible in the catalog at `Sync`, after the pack is fsynced; a
//! snapshot is committed only when everything new under its root is present.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Result};
use ferry_protocol::chunking::MAX_CHUNK;
use ferry_protocol::compress::{compress, decompress, Codec};
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::{ChunkId, ContentId, TreeId};
use ferry_protocol::message::{
    set_missing, ChunkBatch, ChunkPut, Message, ObjectId, Refusal, SnapshotInfo,
    INCOMPLETE_SNAPSHOT, MAX_BATCH,
};
use ferry_protocol::retention::Retention;
use ferry_protocol::tree::{Content, EntryKind, Tree};
use ferry_protocol::{delta, patch};

use crate::catalog::{now_ms, BlobKind, BlobRow, BlobState};
use crate::repo::Repo;

/// One session's transfer state.
#[derive(Debug)]
pub struct Transfer {
    repo: Arc<Repo>,
    client: u64,
    upload: Option<Upload>,
    policy: Option<InternetPolicy>,
}

/// What a client may do when its session comes from the internet.
#[derive(Debug, Clone, Copy)]
pub struct InternetPolicy {
    /// Whether a set's first (full) backup may run now.
    pub full_backups: bool,
    /// The largest single file.
    pub max_file: Option<u64>,
}

/// An open backup: blobs written but not yet in the catalog.
#[derive(Debug, Default)]
struct Upload {
    /// Keeps garbage collection out until this upload ends.
    _permit: Option<crate::gate::UploadPermit>,
    set_id: i64,
    retention: Retention,
    /// The store's [`BlobStore::epoch`] at the first append since the last
    /// sync (`None`: nothing unsynced): a failed fsync since then, of this
    /// session or another, means those blobs may be lost.
    unsynced_since: Option<u64>,
    pending: HashMap<(BlobKind, [u8; 32]), BlobRow>,
    rejected: Vec<ChunkId>,
    new_trees: HashSet<TreeId>,
    new_contents: HashSet<ContentId>,
}

fn object_key(id: &ObjectId) -> (BlobKind, [u8; 32]) {
    match id {
        ObjectId::Tree(t) => (BlobKind::Tree, t.0),
        ObjectId::Content(c) => (BlobKind::Content, c.0),
    }
}

impl Transfer {
    /// State for a session of `client`; `policy` applies when the session
    /// comes from the internet (`None` on the LAN).
    pub fn new(repo: Arc<Repo>, client: u64, policy: Option<InternetPolicy>) -> Self {
        Transfer {
            repo,
            client,
            upload: None,
            policy,
        }
    }

    /// Ends the session's open upload, if any: what reached the relay is
    /// made durable and indexed (the next run need not send it again), so
    /// a session cut by shutdown or a dropped link leaves no torn tail.
    pub fn finish(&mut self) {
        if self.upload.is_none() {
            return;
        }
        match self.sync() {
            Ok(()) => tracing::info!(
                client = self.client,
                "an unfinished upload's data was made durable for its next run"
            ),
            Err(e) => tracing::warn!(
                client = self.client,
                "an unfinished upload's data could not be kept: {e:#}"
            ),
        }
        self.upload = None;
    }

    /// Handles one request; returns the reply, if it has one.
    ///
    /// # Errors
    /// A protocol violation or a storage failure: the session should report
    /// it and end.
    pub fn handle(&mut self, message: Message) -> Result<Option<Message>> {
        Ok(match message {
            Message::BackupBegin { set, retention } => {
                check_set_name(&set)?;
                let client = self.client;
                if self.policy.is_some_and(|p| !p.full_backups) {
                    let earlier = self.catalog(|c| c.list_snapshots(Some(client), Some(&set)))?;
                    if earlier.is_empty() {
                        return Ok(Some(Message::Refused {
                            code: Refusal::FullBackupNeedsLan,
                            message: format!(
                                "the first (full) backup of set {set:?} must run over the LAN: this relay lets this client send only incremental backups over the internet"
                            ),
                        }));
                    }
                }
                // A second BackupBegin replaces the open upload (and its permit).
                self.upload = None;
                let permit = self.repo.enter_upload();
                let set_id = self.catalog(|c| c.ensure_set(client, &set))?;
                self.upload = Some(Upload {
                    _permit: Some(permit),
                    set_id,
                    retention,
                    ..Upload::default()
                });
                Some(Message::BackupReady {
                    max_file: self.policy.and_then(|p| p.max_file),
                })
            }
            Message::QueryChunks { ids } => {
                check_batch(ids.len())?;
                let mut missing = vec![0u8; ids.len().div_ceil(8)];
                for (i, id) in ids.iter().enumerate() {
                    if !self.has(BlobKind::Chunk, &id.0)? {
                        set_missing(&mut missing, i);
                    }
                }
                Some(Message::ChunksMissing { missing })
            }
            Message::GetSignatures { ids } => {
                check_batch(ids.len())?;
                let signatures = ids
                    .iter()
                    .map(|id| {
                        // Computed when asked, from the stored chunk: most
                        // chunks are never a delta base, so ingest skips it.
                        let chunk = self.load(BlobKind::Chunk, &id.0)?;
                        Ok(chunk.map(|raw| serde_bytes::ByteBuf::from(delta::signature(&raw))))
                    })
                    .collect::<Result<_>>()?;
                Some(Message::Signatures { signatures })
            }
            Message::PutChunk { id, codec, data } => {
                let raw = decompress(codec, data.clone(), MAX_CHUNK as usize)?;
                ensure!(
                    ChunkId::of(&raw) == id,
                    "chunk {} does not match its id",
                    id.short()
                );
                // Stored as it came (lz4 or zstd): no second compression.
                self.store_chunk(id, &raw, Some((codec, data)))?;
                None
            }
            Message::PutDelta {
                id,
                base,
                codec,
                delta: bytes,
            } => {
                let delta = decompress(codec, bytes, delta::MAX_DELTA)?;
                self.put_delta(id, base, &delta)?;
                None
            }
            Message::PutChunks { codec, data } => {
                let raw = decompress(codec, data, MAX_MESSAGE)?;
                for put in ChunkBatch::decode(&raw)?.0 {
                    match put {
                        ChunkPut::Whole(data) => {
                            ensure!(
                                data.len() <= MAX_CHUNK as usize,
                                "a chunk of {} bytes exceeds the largest chunk",
                                data.len()
                            );
                            self.store_chunk(ChunkId::of(&data), &data, None)?;
                        }
                        ChunkPut::Packed { codec, data } => {
                            let raw = decompress(codec, data.clone(), MAX_CHUNK as usize)?;
                            self.store_chunk(ChunkId::of(&raw), &raw, Some((codec, data)))?;
                        }
                        ChunkPut::Delta { id, base, delta } => {
                            ensure!(
                                delta.len() <= delta::MAX_DELTA,
                                "a delta of {} bytes exceeds the limit",
                                delta.len()
                            );
                            self.put_delta(id, base, &delta)?;
                        }
                    }
                }
                None
            }
            Message::QueryObjects { ids } => {
                check_batch(ids.len())?;
                let mut missing = Vec::new();
                for id in ids {
                    let (kind, key) = object_key(&id);
                    if !self.has(kind, &key)? {
                        missing.push(id);
                    }
                }
                Some(Message::ObjectsMissing { ids: missing })
            }
            Message::PutObject { id, codec, data } => {
                let raw = decompress(codec, data.clone(), MAX_MESSAGE)?;
                self.put_object(id, &raw, codec, data)?;
                None
            }
            Message::PutObjectPatch { id, base, patch } => {
                self.put_object_patch(id, base, &patch)?;
                None
            }
            Message::Sync => {
                self.sync()?;
                let rejected = std::mem::take(&mut self.upload()?.rejected);
                Some(Message::Synced { rejected })
            }
            Message::Commit {
                root,
                files,
                bytes,
                started_ms,
            } => Some(self.commit(root, files, bytes, started_ms)?),
            Message::ListSnapshots { set } => {
                let client = self.client;
                let rows = self.catalog(move |c| c.list_snapshots(Some(client), set.as_deref()))?;
                let snapshots = rows
                    .into_iter()
                    .map(|r| SnapshotInfo {
                        id: r.id,
                        set: r.set,
                        root: TreeId(r.root_id),
                        started_ms: r.started_ms,
                        finished_ms: r.finished_ms,
                        files: r.files,
                        bytes: r.bytes,
                    })
                    .collect();
                Some(Message::SnapshotList { snapshots })
            }
            Message::GetObject { id } => {
                let (kind, key) = object_key(&id);
                match self.fetch(kind, &key)? {
                    Some((row, data)) => Some(Message::Object {
                        codec: row.codec,
                        data,
                    }),
                    None => Some(Message::Refused {
                        code: Refusal::NoSuchObject,
                        message: format!("no such object {id:?}"),
                    }),
                }
            }
            Message::GetChunk { id, base_signature } => Some(self.get_chunk(&id, base_signature)?),
            Message::GetDamage => {
                let client = self.client;
                let (damaged, healed) = self.catalog(|c| c.client_damage(client))?;
                Some(Message::Damage { damaged, healed })
            }
            other => bail!("unexpected message {}", other.name()),
        })
    }

    /// Checks a tree or content (the relay trusts no object it has not
    /// decoded) and stores it as `data`, which is `raw` compressed by `codec`.
    fn put_object(&mut self, id: ObjectId, raw: &[u8], codec: Codec, data: Vec<u8>) -> Result<()> {
        match id {
            ObjectId::Tree(tree) => {
                Tree::decode(&tree, raw)?;
                self.upload()?.new_trees.insert(tree);
            }
            ObjectId::Content(content) => {
                let decoded = Content::decode(&content, raw)?;
                if let Some(max) = self.policy.and_then(|p| p.max_file) {
                    ensure!(
                        decoded.len() <= max,
                        "a file of {} bytes exceeds this client's limit of {max} bytes for single files over the internet",
                        decoded.len()
                    );
                }
                self.upload()?.new_contents.insert(content);
            }
        }
        let (kind, key) = object_key(&id);
        self.store_blob(kind, key, codec, data)
    }

    /// Rebuilds an object from a patch against an object of the same kind
    /// this client stored before. Without the base the patch is dropped and
    /// logged: the commit will name the object missing.
    fn put_object_patch(&mut self, id: ObjectId, base: ObjectId, patch: &[u8]) -> Result<()> {
        let (kind, _) = object_key(&id);
        let (base_kind, base_key) = object_key(&base);
        ensure!(
            kind == base_kind,
            "a patch of a {kind:?} against a {base_kind:?}"
        );
        let Some(base_bytes) = self.load(base_kind, &base_key)? else {
            tracing::warn!(
                client = self.client,
                ?base,
                "object patch against a missing base dropped"
            );
            return Ok(());
        };
        let raw = patch::apply(&base_bytes, patch, MAX_MESSAGE)?;
        let (codec, data) = compress(&raw);
        self.put_object(id, &raw, codec, data)
    }

    fn upload(&mut self) -> Result<&mut Upload> {
        self.upload
            .as_mut()
            .ok_or_else(|| anyhow!("upload message outside a backup (no BackupBegin)"))
    }

    fn catalog<T>(
        &self,
        f: impl FnOnce(&mut crate::catalog::Catalog) -> crate::catalog::Result<T>,
    ) -> Result<T> {
        Ok(self.repo.catalog(f)?)
    }

    /// The blob's row: pending in this upload, or committed.
    fn find(&self, kind: BlobKind, id: &[u8; 32]) -> Result<Option<BlobRow>> {
        if let Some(row) = self
            .upload
            .as_ref()
            .and_then(|u| u.pending.get(&(kind, *id)))
        {
            return Ok(Some(*row));
        }
        let client = self.client;
        self.catalog(|c| c.find_blob(client, kind, id))
    }

    /// Whether the client holds the blob whole, as uploads need it: a
    /// damaged or incomplete one counts as missing, so it is sent again.
    fn has(&self, kind: BlobKind, id: &[u8; 32]) -> Result<bool> {
        if let Some(upload) = &self.upload {
            if upload.pending.contains_key(&(kind, *id)) {
                return Ok(true);
            }
        }
        let client = self.client;
        let found = self.catalog(|c| c.find_blob_state(client, kind, id))?;
        Ok(found.is_some_and(|(_, state)| state == BlobState::Whole))
    }

    /// The blob's row and stored bytes. The lookup and the read happen
    /// under `pack_files`, so a collection cannot delete the pack between them.
    fn fetch(&self, kind: BlobKind, id: &[u8; 32]) -> Result<Option<(BlobRow, Vec<u8>)>> {
        let reading = self.repo.blobs().reading();
        let Some(row) = self.find(kind, id)? else {
            return Ok(None);
        };
        Ok(Some((row, reading.read(&row.at)?)))
    }

    /// The blob's bytes, decompressed.
    fn load(&self, kind: BlobKind, id: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let Some((row, stored)) = self.fetch(kind, id)? else {
            return Ok(None);
        };
        let limit = if kind == BlobKind::Chunk {
            MAX_CHUNK as usize
        } else {
            MAX_MESSAGE
        };
        Ok(Some(decompress(row.codec, stored, limit)?))
    }

    /// Appends a blob, already encoded as `codec` says, to the open upload.
    fn store_blob(
        &mut self,
        kind: BlobKind,
        id: [u8; 32],
        codec: Codec,
        bytes: Vec<u8>,
    ) -> Result<()> {
        // Outside a backup nothing is appended: it could never be indexed.
        self.upload()?;
        if self.has(kind, &id)? {
            return Ok(());
        }
        let (at, epoch) = self.repo.blobs().append(&bytes)?;
        let row = BlobRow {
            kind,
            id,
            at,
            codec,
        };
        let upload = self.upload()?;
        upload.unsynced_since.get_or_insert(epoch);
        upload.pending.insert((kind, id), row);
        Ok(())
    }

    /// Rebuilds chunk `id` from `delta` against `base` and stores it, or
    /// records it as rejected (the sender resends it whole).
    fn put_delta(&mut self, id: ChunkId, base: ChunkId, delta: &[u8]) -> Result<()> {
        let rebuilt = match self.load(BlobKind::Chunk, &base.0)? {
            Some(base) => delta::apply(&base, delta, &id).ok(),
            None => None,
        };
        match rebuilt {
            Some(raw) => self.store_chunk(id, &raw, None),
            None => {
                self.upload()?.rejected.push(id);
                Ok(())
            }
        }
    }

    /// Stores a verified chunk: as it came (`encoded`: the sender already
    /// chose and tried compression), else lz4'd here.
    fn store_chunk(
        &mut self,
        id: ChunkId,
        raw: &[u8],
        encoded: Option<(Codec, Vec<u8>)>,
    ) -> Result<()> {
        if self.has(BlobKind::Chunk, &id.0)? {
            return Ok(());
        }
        let (codec, bytes) = match encoded {
            Some(encoded) => encoded,
            None => compress(raw),
        };
        self.store_blob(BlobKind::Chunk, id.0, codec, bytes)
    }

    /// Pack data durable first, then the catalog rows that name it. A
    /// content whose chunks are not all stored yet (a rejected delta is being
    /// resent) stays pending, so a content in the catalog always has its chunks.
    fn sync(&mut self) -> Result<()> {
        let mut held = HashSet::new();
        let upload = self
            .upload
            .as_ref()
            .ok_or_else(|| anyhow!("sync outside a backup"))?;
        let contents: Vec<[u8; 32]> = upload
            .pending
            .keys()
            .filter(|(kind, _)| *kind == BlobKind::Content)
            .map(|(_, id)| *id)
            .collect();
        let mut parted = Vec::new();
        for id in contents {
            let raw = self
                .load(BlobKind::Content, &id)?
                .ok_or_else(|| anyhow!("pending content vanished"))?;
            let content = Content::decode(&ContentId(id), &raw)?;
            for chunk in &content.chunks {
                if !self.has(BlobKind::Chunk, &chunk.id.0)? {
                    held.insert(id);
                    break;
                }
            }
            if !content.parts.is_empty() {
                parted.push((id, content.parts));
            }
        }
        // A large file's content waits for its parts (parts hold only chunks).
        for (id, parts) in parted {
            for part in parts {
                if held.contains(&part.id.0) || !self.has(BlobKind::Content, &part.id.0)? {
                    held.insert(id);
                    break;
                }
            }
        }
        // Trees wait for the commit: a tree in the catalog is one whose
        // closure was checked, so a later backup may trust it (and skip
        // what is under it) when told it exists.
        let is_held = |kind: BlobKind, id: &[u8; 32]| {
            kind == BlobKind::Tree || (kind == BlobKind::Content && held.contains(id))
        };
        let rows: Vec<BlobRow> = self
            .upload()?
            .pending
            .values()
            .filter(|r| !is_held(r.kind, &r.id))
            .copied()
            .collect();
        let unsynced_since = self.upload()?.unsynced_since;
        if rows.is_empty() && unsynced_since.is_none() {
            return Ok(());
        }
        let epoch = self.repo.blobs().sync()?;
        // Appended before a failed fsync (this session's or another's):
        // the bytes may be gone even though this fsync succeeded.
        ensure!(
            unsynced_since.is_none_or(|since| since == epoch),
            "the relay's disk failed while this backup was being written (an fsync failed); nothing of it since the last sync was kept"
        );
        let client = self.client;
        self.catalog(|c| c.insert_blobs(client, &rows))?;
        let upload = self.upload()?;
        upload.unsynced_since = None;
        upload.pending.retain(|(kind, id), _| is_held(*kind, id));
        Ok(())
    }

    fn commit(&mut self, root: TreeId, files: u64, bytes: u64, started_ms: i64) -> Result<Message> {
        self.sync()?;
        let upload = self.upload()?;
        if !upload.rejected.is_empty()
            || upload
                .pending
                .keys()
                .any(|(kind, _)| *kind != BlobKind::Tree)
        {
            bail!("commit before every rejected chunk was resent");
        }
        let upload = self.upload()?;
        let new = (
            std::mem::take(&mut upload.new_trees),
            std::mem::take(&mut upload.new_contents),
        );
        let closure = self.check_closure(&root, &new.0, &new.1);
        // Taken either way: a refused commit's trees are never indexed.
        let upload = self
            .upload
            .take()
            .ok_or_else(|| anyhow!("commit outside a backup"))?;
        if let Err(e) = closure {
            return Ok(Message::Refused {
                code: Refusal::IncompleteSnapshot,
                message: format!("{INCOMPLETE_SNAPSHOT}: {e:#}"),
            });
        }
        let client = self.client;
        let trees: Vec<BlobRow> = upload.pending.values().copied().collect();
        self.catalog(|c| c.insert_blobs(client, &trees))?;
        let snapshot = self.catalog(|c| {
            c.insert_snapshot(
                client,
                upload.set_id,
                &root.0,
                started_ms,
                now_ms(),
                files,
                bytes,
            )
        })?;
        tracing::info!(
            "client {client}: committed snapshot {snapshot} ({files} files, {bytes} bytes)"
        );
        if upload.retention.is_set() {
            let (set_id, retention) = (upload.set_id, upload.retention);
            let forgotten = self.catalog(|c| c.apply_retention(client, set_id, &retention))?;
            if forgotten > 0 {
                tracing::info!("client {client}: retention forgot {forgotten} older snapshot(s) of set {set_id}");
            }
        }
        Ok(Message::Committed { snapshot })
    }

    /// Checks that the root exists and that every tree and content uploaded
    /// in this backup references only what exists. Trees in the catalog
    /// were complete when they were indexed: a tree is indexed only by the
    /// commit that checked it (see `sync`). Once something this client
    /// stored was found damaged, a tree that exists may not be whole below
    /// it, so the whole snapshot is checked instead.
    fn check_closure(
        &self,
        root: &TreeId,
        new_trees: &HashSet<TreeId>,
        new_contents: &HashSet<ContentId>,
    ) -> Result<()> {
        self.require(BlobKind::Tree, &root.0, "root tree")?;
        let client = self.client;
        if self.catalog(|c| c.has_damage(client))? {
            let contents = self.check_trees(vec![*root], true)?;
            return self.check_contents(contents.into_iter().collect(), true);
        }
        self.check_trees(new_trees.iter().copied().collect(), false)?;
        self.check_contents(new_contents.iter().copied().collect(), false)
    }

    /// Checks that what each tree names exists; with `descend`, walks into
    /// the subtrees too and returns every content reached.
    fn check_trees(&self, mut trees: Vec<TreeId>, descend: bool) -> Result<HashSet<ContentId>> {
        let mut seen = HashSet::new();
        let mut contents = HashSet::new();
        while let Some(tree) = trees.pop() {
            if !seen.insert(tree) {
                continue;
            }
            let raw = self
                .load(BlobKind::Tree, &tree.0)?
                .ok_or_else(|| anyhow!("tree {} is missing", tree.short()))?;
            for entry in Tree::decode(&tree, &raw)?.entries {
                match entry.kind {
                    EntryKind::Dir { tree } => {
                        self.require(BlobKind::Tree, &tree.0, "tree")?;
                        if descend {
                            trees.push(tree);
                        }
                    }
                    EntryKind::File { content, .. } => {
                        self.require(BlobKind::Content, &content.0, "content")?;
                        if descend {
                            contents.insert(content);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(contents)
    }

    /// Checks the chunks (and parts) of `contents`; with `deep`, the chunks
    /// of the parts too.
    fn check_contents(&self, mut contents: Vec<ContentId>, deep: bool) -> Result<()> {
        while let Some(content_id) = contents.pop() {
            let raw = self
                .load(BlobKind::Content, &content_id.0)?
                .ok_or_else(|| anyhow!("content {} is missing", content_id.short()))?;
            let content = Content::decode(&content_id, &raw)?;
            for chunk in &content.chunks {
                self.require(BlobKind::Chunk, &chunk.id.0, "chunk")?;
            }
            for part in &content.parts {
                self.require(BlobKind::Content, &part.id.0, "content part")?;
                if deep {
                    contents.push(part.id);
                }
            }
        }
        Ok(())
    }

    /// Fails naming the blob when the client does not hold it whole.
    fn require(&self, kind: BlobKind, id: &[u8; 32], what: &str) -> Result<()> {
        ensure!(
            self.has(kind, id)?,
            "{what} {} is missing",
            crate::catalog::hex(&id[..8])
        );
        Ok(())
    }

    /// A chunk for a restore: as a delta against the caller's similar chunk
    /// when that is smaller, else whole.
    fn get_chunk(&self, id: &ChunkId, base_signature: Option<Vec<u8>>) -> Result<Message> {
        let Some((row, stored)) = self.fetch(BlobKind::Chunk, &id.0)? else {
            return Ok(Message::Refused {
                code: Refusal::NoSuchObject,
                message: format!("no such chunk {}", id.short()),
            });
        };
        if let Some(signature) = base_signature {
            let raw = decompress(row.codec, stored.clone(), MAX_CHUNK as usize)?;
            let delta = delta::diff(signature, &raw)?;
            let (codec, delta) = compress(&delta);
            if delta.len() < stored.len() {
                return Ok(Message::ChunkDelta { codec, delta });
            }
        }
        Ok(Message::ChunkData {
            codec: row.codec,
            data: stored,
        })
    }
}

fn check_batch(len: usize) -> Result<()> {
    ensure!(
        len <= MAX_BATCH,
        "batch of {len} ids exceeds the limit of {MAX_BATCH}"
    );
    Ok(())
}

fn check_set_name(set: &str) -> Result<()> {
    ensure!(
        !set.is_empty() && set.len() <= 64 && !set.chars().any(|c| c.is_control() || c == '/'),
        "invalid backup set name {set:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The upload and restore rules, one `Transfer` per client over a real
    //! temporary catalog and an in-memory store, no socket.

    use super::*;
    use crate::catalog::Catalog;
    use crate::store::{BlobReader, MemoryStore};
    use ferry_protocol::compress::Codec;
    use ferry_protocol::keys::PublicKey;
    use ferry_protocol::tree::{ChunkRef, Entry};

    /// A relay's repo: a temporary catalog with clients a and b, and `store`.
    fn relay_with(dir: &std::path::Path, store: MemoryStore) -> (Arc<Repo>, u64, u64) {
        let path = dir.join("catalog.sqlite");
        let mut catalog = Catalog::open(&path).unwrap();
        let mut clients = Vec::new();
        for (name, key) in [("a", 1u8), ("b", 2u8)] {
            let (id, _) = catalog
                .create_pairing(name, 0, i64::MAX, u32::from(key))
                .unwrap()
                .unwrap();
            let crate::catalog::PairOutcome::Paired(client) = catalog
                .complete_pairing(id, &PublicKey([key; 32]), "host", 1)
                .unwrap()
            else {
                panic!("pairing")
            };
            clients.push(client.id);
        }
        (
            Arc::new(Repo::new(catalog, &path, store)),
            clients[0],
            clients[1],
        )
    }

    /// [`relay_with`] an empty in-memory store.
    fn relay(dir: &std::path::Path) -> (Arc<Repo>, u64, u64) {
        relay_with(dir, MemoryStore::default())
    }

    fn begin(t: &mut Transfer) {
        let ready = t
            .handle(Message::BackupBegin {
                set: "default".into(),
                retention: Retention::default(),
            })
            .unwrap();
        assert!(matches!(ready, Some(Message::BackupReady { .. })));
    }

    fn missing_chunks(t: &mut Transfer, ids: &[ChunkId]) -> Vec<bool> {
        let Some(Message::ChunksMissing { missing }) = t
            .handle(Message::QueryChunks { ids: ids.to_vec() })
            .unwrap()
        else {
            panic!("ChunksMissing")
        };
        (0..ids.len())
            .map(|i| missing[i / 8] & (1 << (i % 8)) != 0)
            .collect()
    }

    fn put_chunk(t: &mut Transfer, data: &[u8]) -> ChunkId {
        let id = ChunkId::of(data);
        t.handle(Message::PutChunk {
            id,
            codec: Codec::None,
            data: data.to_vec(),
        })
        .unwrap();
        id
    }

    fn synced(t: &mut Transfer) -> Vec<ChunkId> {
        let Some(Message::Synced { rejected }) = t.handle(Message::Sync).unwrap() else {
            panic!("Synced")
        };
        rejected
    }

    /// A content of `chunks` and a root tree with one file of it.
    fn file_tree(chunks: &[(ChunkId, usize)]) -> (ContentId, Vec<u8>, TreeId, Vec<u8>) {
        let content = Content {
            chunks: chunks
                .iter()
                .map(|(id, len)| ChunkRef {
                    id: *id,
                    len: *len as u32,
                })
                .collect(),
            parts: Vec::new(),
        };
        let (content_id, content_bytes) = content.encode();
        let size = chunks.iter().map(|(_, len)| *len as u64).sum();
        let tree = Tree {
            entries: vec![Entry {
                name: b"f".to_vec(),
                kind: EntryKind::File {
                    size,
                    content: content_id,
                    sparse: None,
                },
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime_ns: 0,
                xattrs: Vec::new(),
            }],
        };
        let (tree_id, tree_bytes) = tree.encode().unwrap();
        (content_id, content_bytes, tree_id, tree_bytes)
    }

    fn put_object(t: &mut Transfer, id: ObjectId, bytes: &[u8]) {
        t.handle(Message::PutObject {
            id,
            codec: Codec::None,
            data: bytes.to_vec(),
        })
        .unwrap();
    }

    fn commit(t: &mut Transfer, root: TreeId) -> Message {
        t.handle(Message::Commit {
            root,
            files: 1,
            bytes: 1,
            started_ms: 0,
        })
        .unwrap()
        .unwrap()
    }

    /// Backs up one file of `data` as client `t`; returns the snapshot's ids.
    fn backup_one(t: &mut Transfer, data: &[u8]) -> (ChunkId, ContentId, TreeId, u64) {
        begin(t);
        let chunk = put_chunk(t, data);
        let (content, content_bytes, root, tree_bytes) = file_tree(&[(chunk, data.len())]);
        put_object(t, ObjectId::Content(content), &content_bytes);
        put_object(t, ObjectId::Tree(root), &tree_bytes);
        let Message::Committed { snapshot } = commit(t, root) else {
            panic!("Committed")
        };
        (chunk, content, root, snapshot)
    }

    #[test]
    fn a_chunk_is_known_once_stored_and_a_wrong_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let mut t = Transfer::new(repo, a, None);
        begin(&mut t);
        let id = ChunkId::of(b"hello");
        assert_eq!(missing_chunks(&mut t, &[id]), vec![true]);
        put_chunk(&mut t, b"hello");
        assert_eq!(missing_chunks(&mut t, &[id]), vec![false]);
        assert!(synced(&mut t).is_empty());
        let forged = t.handle(Message::PutChunk {
            id: ChunkId::of(b"other"),
            codec: Codec::None,
            data: b"hello".to_vec(),
        });
        assert!(forged.is_err(), "a chunk whose bytes are not its id");
    }

    #[test]
    fn uploads_outside_a_backup_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let mut t = Transfer::new(repo, a, None);
        let outside = t.handle(Message::PutChunk {
            id: ChunkId::of(b"x"),
            codec: Codec::None,
            data: b"x".to_vec(),
        });
        assert!(outside.is_err());
        assert!(t.handle(Message::Sync).is_err());
    }

    #[test]
    fn a_delta_rebuilds_against_the_base_and_one_that_does_not_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let mut t = Transfer::new(repo, a, None);
        begin(&mut t);
        let base: Vec<u8> = (0..8192u32).flat_map(|i| i.to_le_bytes()).collect();
        let base_id = put_chunk(&mut t, &base);
        let mut new = base.clone();
        new[100] ^= 1;
        let new_id = ChunkId::of(&new);
        let signature = delta::signature(&base);
        let good = delta::diff(signature, &new).unwrap();
        t.handle(Message::PutDelta {
            id: new_id,
            base: base_id,
            codec: Codec::None,
            delta: good,
        })
        .unwrap();
        assert_eq!(missing_chunks(&mut t, &[new_id]), vec![false]);
        // A delta naming an id its result does not have is reported back.
        let liar = ChunkId::of(b"not what the delta builds");
        let wrong = delta::diff(delta::signature(&base), &new).unwrap();
        t.handle(Message::PutDelta {
            id: liar,
            base: base_id,
            codec: Codec::None,
            delta: wrong,
        })
        .unwrap();
        assert_eq!(synced(&mut t), vec![liar]);
        assert_eq!(missing_chunks(&mut t, &[liar]), vec![true]);
    }

    #[test]
    fn a_commit_whose_closure_is_incomplete_is_refused_and_its_trees_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let mut t = Transfer::new(repo, a, None);
        begin(&mut t);
        // The tree names a content never sent.
        let chunk = put_chunk(&mut t, b"data");
        let (_, _, root, tree_bytes) = file_tree(&[(chunk, 4)]);
        put_object(&mut t, ObjectId::Tree(root), &tree_bytes);
        match commit(&mut t, root) {
            Message::Refused { code, message } => {
                assert_eq!(code, Refusal::IncompleteSnapshot);
                assert!(message.contains("is missing"), "{message}");
            }
            other => panic!("expected Refused, got {other:?}"),
        }
        // The refused commit's tree was never indexed: the next backup is
        // told it is missing, so it sends it (and what is under it) again.
        begin(&mut t);
        let Some(Message::ObjectsMissing { ids }) = t
            .handle(Message::QueryObjects {
                ids: vec![ObjectId::Tree(root)],
            })
            .unwrap()
        else {
            panic!("ObjectsMissing")
        };
        assert_eq!(ids, vec![ObjectId::Tree(root)]);
    }

    #[test]
    fn a_whole_snapshot_commits_and_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let mut t = Transfer::new(repo, a, None);
        let (_, _, root, snapshot) = backup_one(&mut t, b"some file data");
        let Some(Message::SnapshotList { snapshots }) =
            t.handle(Message::ListSnapshots { set: None }).unwrap()
        else {
            panic!("SnapshotList")
        };
        assert_eq!(snapshots.len(), 1);
        assert_eq!((snapshots[0].id, snapshots[0].root), (snapshot, root));
    }

    #[test]
    fn a_patch_against_a_base_the_relay_lacks_is_dropped_and_the_commit_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let mut t = Transfer::new(repo, a, None);
        begin(&mut t);
        let chunk = put_chunk(&mut t, b"data");
        let (content, content_bytes, root, tree_bytes) = file_tree(&[(chunk, 4)]);
        put_object(&mut t, ObjectId::Content(content), &content_bytes);
        let base = TreeId([9; 32]);
        t.handle(Message::PutObjectPatch {
            id: ObjectId::Tree(root),
            base: ObjectId::Tree(base),
            patch: patch::diff(b"whatever", &tree_bytes),
        })
        .unwrap();
        assert!(matches!(
            commit(&mut t, root),
            Message::Refused {
                code: Refusal::IncompleteSnapshot,
                ..
            }
        ));
    }

    #[test]
    fn a_client_asking_for_anothers_data_gets_what_it_gets_for_none() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, b) = relay(dir.path());
        let mut ta = Transfer::new(Arc::clone(&repo), a, None);
        let (chunk, content, root, snapshot) = backup_one(&mut ta, b"a's secret");
        let mut tb = Transfer::new(repo, b, None);
        begin(&mut tb);
        let unknown = ChunkId::of(b"nobody has this");
        assert_eq!(missing_chunks(&mut tb, &[chunk, unknown]), vec![true, true]);
        let answer =
            |tb: &mut Transfer, id: ObjectId| match tb.handle(Message::GetObject { id }).unwrap() {
                Some(Message::Refused { code, .. }) => code,
                other => panic!("expected Refused, got {other:?}"),
            };
        assert_eq!(
            answer(&mut tb, ObjectId::Tree(root)),
            answer(&mut tb, ObjectId::Tree(TreeId([3; 32])))
        );
        assert_eq!(
            answer(&mut tb, ObjectId::Content(content)),
            Refusal::NoSuchObject
        );
        let got = tb
            .handle(Message::GetChunk {
                id: chunk,
                base_signature: None,
            })
            .unwrap();
        assert!(matches!(
            got,
            Some(Message::Refused {
                code: Refusal::NoSuchObject,
                ..
            })
        ));
        let Some(Message::SnapshotList { snapshots }) =
            tb.handle(Message::ListSnapshots { set: None }).unwrap()
        else {
            panic!("SnapshotList")
        };
        assert!(snapshots.iter().all(|s| s.id != snapshot));
        // B's own copy of the same bytes is B's: it is stored for B.
        put_chunk(&mut tb, b"a's secret");
        assert_eq!(missing_chunks(&mut tb, &[chunk]), vec![false]);
    }

    #[test]
    fn a_restore_gets_a_chunk_whole_or_as_a_delta_against_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let mut t = Transfer::new(repo, a, None);
        let data: Vec<u8> = (0..16384u32).flat_map(|i| i.to_le_bytes()).collect();
        let (chunk, _, _, _) = backup_one(&mut t, &data);
        let whole = t
            .handle(Message::GetChunk {
                id: chunk,
                base_signature: None,
            })
            .unwrap();
        assert!(matches!(whole, Some(Message::ChunkData { .. })));
        let mut near = data.clone();
        near[5] ^= 1;
        let as_delta = t
            .handle(Message::GetChunk {
                id: chunk,
                base_signature: Some(delta::signature(&near)),
            })
            .unwrap();
        let Some(Message::ChunkDelta { codec, delta: d }) = as_delta else {
            panic!("a delta is smaller than the chunk")
        };
        let d = decompress(codec, d, delta::MAX_DELTA).unwrap();
        assert_eq!(delta::apply(&near, &d, &chunk).unwrap(), data);
    }

    #[test]
    fn a_content_waits_for_its_chunks_before_it_is_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let mut t = Transfer::new(repo, a, None);
        begin(&mut t);
        let data = b"late chunk";
        let chunk = ChunkId::of(data);
        let (content, content_bytes, root, tree_bytes) = file_tree(&[(chunk, data.len())]);
        put_object(&mut t, ObjectId::Content(content), &content_bytes);
        synced(&mut t);
        // Held: a commit now would name a content whose chunk is not stored.
        assert!(t
            .handle(Message::Commit {
                root,
                files: 1,
                bytes: 1,
                started_ms: 0
            })
            .is_err());
        begin(&mut t);
        put_chunk(&mut t, data);
        put_object(&mut t, ObjectId::Content(content), &content_bytes);
        put_object(&mut t, ObjectId::Tree(root), &tree_bytes);
        assert!(matches!(commit(&mut t, root), Message::Committed { .. }));
    }

    #[test]
    fn the_endpoints_retention_hint_is_applied_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let mut t = Transfer::new(repo, a, None);
        for data in [&b"one"[..], b"two", b"three"] {
            t.handle(Message::BackupBegin {
                set: "default".into(),
                retention: Retention {
                    keep_last: Some(2),
                    ..Retention::default()
                },
            })
            .unwrap();
            let chunk = put_chunk(&mut t, data);
            let (content, content_bytes, root, tree_bytes) = file_tree(&[(chunk, data.len())]);
            put_object(&mut t, ObjectId::Content(content), &content_bytes);
            put_object(&mut t, ObjectId::Tree(root), &tree_bytes);
            assert!(matches!(commit(&mut t, root), Message::Committed { .. }));
        }
        let Some(Message::SnapshotList { snapshots }) =
            t.handle(Message::ListSnapshots { set: None }).unwrap()
        else {
            panic!("SnapshotList")
        };
        let ids: Vec<u64> = snapshots.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![2, 3]);
    }

    #[test]
    fn gc_collects_what_only_a_forgotten_snapshot_reached() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let mut t = Transfer::new(Arc::clone(&repo), a, None);
        let (old_chunk, _, _, first) = backup_one(&mut t, b"first version");
        let (new_chunk, _, _, _) = backup_one(&mut t, b"second version");
        drop(t);
        repo.catalog(|c| c.forget_snapshots(&[first])).unwrap();
        let report = repo
            .collect(std::time::Duration::ZERO, now_ms() + 1)
            .unwrap();
        assert_eq!(report.snapshots, 1);
        assert_eq!(report.blobs_deleted, 3, "{report:?}");
        let mut t = Transfer::new(repo, a, None);
        begin(&mut t);
        assert_eq!(
            missing_chunks(&mut t, &[old_chunk, new_chunk]),
            vec![true, false]
        );
    }

    #[test]
    fn gc_deletes_dead_packs_and_rewrites_mostly_dead_ones() {
        let dir = tempfile::tempdir().unwrap();
        // Packs of about one backup each.
        let store = MemoryStore::with_pack_target(256);
        let (repo, a, _) = relay_with(dir.path(), store.clone());
        let mut t = Transfer::new(Arc::clone(&repo), a, None);
        let noise = |seed: u8| -> Vec<u8> {
            (0..600u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
                .collect()
        };
        let (_, _, _, first) = backup_one(&mut t, &noise(1));
        let (kept, _, _, _) = backup_one(&mut t, &noise(2));
        drop(t);
        repo.blobs().seal().unwrap();
        let before = store.packs().unwrap().len();
        repo.catalog(|c| c.forget_snapshots(&[first])).unwrap();
        let report = repo
            .collect(std::time::Duration::ZERO, now_ms() + 1)
            .unwrap();
        assert!(
            report.packs_deleted + report.packs_repacked >= 1,
            "{report:?}"
        );
        assert!(report.bytes_freed > 0, "{report:?}");
        assert!(store.packs().unwrap().len() <= before);
        let mut t = Transfer::new(repo, a, None);
        let Some(Message::ChunkData { codec, data }) = t
            .handle(Message::GetChunk {
                id: kept,
                base_signature: None,
            })
            .unwrap()
        else {
            panic!("ChunkData")
        };
        assert_eq!(
            decompress(codec, data, MAX_CHUNK as usize).unwrap(),
            noise(2)
        );
    }

    #[test]
    fn set_names_that_are_not_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let mut t = Transfer::new(repo, a, None);
        for bad in ["", "a/b", "tab\there", &"x".repeat(65)] {
            let begun = t.handle(Message::BackupBegin {
                set: bad.into(),
                retention: Retention::default(),
            });
            assert!(begun.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn over_the_internet_a_first_backup_can_be_refused_and_large_files_too() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let policy = InternetPolicy {
            full_backups: false,
            max_file: Some(8),
        };
        let mut t = Transfer::new(Arc::clone(&repo), a, Some(policy));
        let begun = t
            .handle(Message::BackupBegin {
                set: "default".into(),
                retention: Retention::default(),
            })
            .unwrap();
        assert!(matches!(
            begun,
            Some(Message::Refused {
                code: Refusal::FullBackupNeedsLan,
                ..
            })
        ));
        // Once a first backup ran on the LAN, incrementals may come from anywhere.
        backup_one(&mut Transfer::new(Arc::clone(&repo), a, None), b"small");
        let mut t = Transfer::new(repo, a, Some(policy));
        begin(&mut t);
        let chunk = put_chunk(&mut t, b"more than eight bytes");
        let (content, content_bytes, _, _) = file_tree(&[(chunk, 21)]);
        let too_large = t.handle(Message::PutObject {
            id: ObjectId::Content(content),
            codec: Codec::None,
            data: content_bytes,
        });
        assert!(too_large.is_err());
    }

    #[test]
    fn a_second_backup_begin_drops_what_the_first_left_unsynced() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let mut t = Transfer::new(repo, a, None);
        begin(&mut t);
        let id = put_chunk(&mut t, b"abandoned");
        begin(&mut t);
        assert_eq!(missing_chunks(&mut t, &[id]), vec![true]);
    }

    #[test]
    fn batches_over_the_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let mut t = Transfer::new(repo, a, None);
        begin(&mut t);
        let ids = vec![ChunkId::of(b"x"); MAX_BATCH + 1];
        assert!(t.handle(Message::QueryChunks { ids }).is_err());
    }

    #[test]
    fn signatures_are_given_for_stored_chunks_only() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let mut t = Transfer::new(repo, a, None);
        let (chunk, _, _, _) = backup_one(&mut t, &[7u8; 4096]);
        let Some(Message::Signatures { signatures }) = t
            .handle(Message::GetSignatures {
                ids: vec![chunk, ChunkId::of(b"absent")],
            })
            .unwrap()
        else {
            panic!("Signatures")
        };
        assert!(signatures[0].is_some() && signatures[1].is_none());
    }

    #[test]
    fn verify_finds_a_flipped_byte_and_the_next_upload_heals_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::default();
        let (repo, a, _) = relay_with(dir.path(), store.clone());
        let mut t = Transfer::new(Arc::clone(&repo), a, None);
        let data = vec![42u8; 10_000];
        let (chunk, _, _, _) = backup_one(&mut t, &data);
        let at = repo
            .catalog(|c| c.find_blob(a, BlobKind::Chunk, &chunk.0))
            .unwrap()
            .unwrap()
            .at;
        store.flip(&at, 5);
        let catalog = dir.path().join("catalog.sqlite");
        let report = crate::verify::run(&catalog, &store, &Default::default()).unwrap();
        assert!(report.is_damaged());
        assert_eq!(report.damaged[0].kind, "chunk");
        begin(&mut t);
        assert_eq!(missing_chunks(&mut t, &[chunk]), vec![true]);
        backup_one(&mut t, &data);
        let report = crate::verify::run(&catalog, &store, &Default::default()).unwrap();
        assert!(!report.is_damaged(), "{report:?}");
        assert_eq!(report.healed.len(), 1);
    }

    #[test]
    fn a_message_the_relay_never_expects_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, a, _) = relay(dir.path());
        let mut t = Transfer::new(repo, a, None);
        let error = t
            .handle(Message::Committed { snapshot: 1 })
            .unwrap_err()
            .to_string();
        assert!(error.contains("unexpected message Committed"), "{error}");
    }

    #[test]
    fn a_failed_fsync_fails_every_upload_with_data_before_it_and_none_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::default();
        let (repo, a, b) = relay_with(dir.path(), store.clone());
        let mut ta = Transfer::new(Arc::clone(&repo), a, None);
        let mut tb = Transfer::new(Arc::clone(&repo), b, None);
        begin(&mut ta);
        begin(&mut tb);
        let lost = put_chunk(&mut ta, b"appended before the failure");
        put_chunk(&mut tb, b"b's data");
        store.fail_next_sync();
        assert!(tb.handle(Message::Sync).is_err(), "b's own fsync failed");
        // A's data shared the pack whose fsync failed: never acknowledged.
        let error = ta.handle(Message::Sync).unwrap_err().to_string();
        assert!(error.contains("an fsync failed"), "{error}");
        // An upload that appends only after the failure is unaffected.
        let mut tc = Transfer::new(repo, a, None);
        begin(&mut tc);
        let kept = put_chunk(&mut tc, b"appended after the failure");
        assert!(synced(&mut tc).is_empty());
        assert_eq!(missing_chunks(&mut tc, &[lost, kept]), vec![true, false]);
    }
}
