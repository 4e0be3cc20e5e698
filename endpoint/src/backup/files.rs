//! One file: unchanged ones cost a cache lookup; changed ones are chunked,
//! and each chunk sent whole or as a delta against the chunk at the same
//! offset of the file's previous version.

use super::*;

/// Trees and contents sent between two `Sync`s asked for on their account:
/// the relay holds them in memory until one (it refuses more than
/// [`ferry_protocol::message::MAX_PENDING_OBJECTS`]).
const SYNC_OBJECTS: usize = ferry_protocol::message::MAX_PENDING_OBJECTS / 32;

/// Times a file that changes while being read is read again.
pub(crate) const TORN_RETRIES: usize = 3;

/// Reading the file being backed up failed (it is skipped and named;
/// the backup goes on), as opposed to the relay or the link failing.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(super) struct Unreadable(io::Error);

/// Opens a file to back up, or says why it cannot be: without following a
/// symlink, and non-blocking (a FIFO swapped in since the scan must not
/// hang the backup in open); it must still be a regular file, of at most
/// `max_file` bytes (the relay's limit for this session).
///
/// # Errors
/// Reading the opened file's metadata failed.
pub(crate) fn open_regular(
    path: &Path,
    max_file: Option<u64>,
) -> io::Result<Result<(File, Metadata), String>> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
    {
        Ok(file) => file,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Err("it is no longer a regular file".into()));
    }
    if let Some(max) = max_file.filter(|max| meta.len() > *max) {
        return Ok(Err(format!(
            "{} bytes is more than the relay accepts for a single file over the internet ({max} bytes); back it up from the LAN",
            meta.len()
        )));
    }
    Ok(Ok((file, meta)))
}

/// Same size, mtime, ctime and inode as when cached.
pub(crate) fn unchanged(cached: &Known, meta: &Metadata) -> bool {
    cached.size == meta.len()
        && cached.mtime_ns == fsmeta::mtime_ns(meta)
        && cached.ctime_ns == fsmeta::ctime_ns(meta)
        && cached.inode == meta.ino()
}

/// Whether a file was not modified between two looks at it.
pub(crate) fn same_version(before: &Metadata, after: &Metadata) -> bool {
    before.len() == after.len()
        && fsmeta::mtime_ns(before) == fsmeta::mtime_ns(after)
        && fsmeta::ctime_ns(before) == fsmeta::ctime_ns(after)
        && before.ino() == after.ino()
}

impl Backup<'_> {
    /// Stores one regular file; returns its entry kind and the metadata it
    /// was read under, or `None` when it could not be read.
    pub(super) async fn file(
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
            let (file, before) = match open_regular(path, self.max_file)? {
                Ok(opened) => opened,
                Err(why) => {
                    self.unreadable(path, &why);
                    return Ok(None);
                }
            };
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
                Err(e) if e.downcast_ref::<Unreadable>().is_some() => {
                    self.unreadable(path, &format!("{e:#}"));
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let after = std::fs::symlink_metadata(path)?;
            if !same_version(&before, &after) {
                continue;
            }
            self.summary.count_read(cached.is_some());
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
    pub(super) fn known(&mut self, key: &[u8]) -> Option<Known> {
        let (known, seen) = self.previous.files.get_mut(key)?;
        *seen = true;
        Some(known.clone())
    }

    /// The chunk list of a file's cached version: the bases for its deltas.
    pub(super) fn previous_chunks(
        &self,
        key: &[u8],
        known: Option<&Known>,
    ) -> Result<Option<Content>> {
        match known {
            Some(k) => self.cache.chunks(&self.set, key, &k.content),
            None => Ok(None),
        }
    }

    pub(super) fn count(&mut self, meta: &Metadata) {
        self.control.live.file_done(
            meta.len(),
            self.client.bytes_sent(),
            self.client.bytes_received(),
        );
        self.summary.files += 1;
        self.summary.bytes += meta.len();
    }

    /// Chunks and uploads a stream's data; returns its content.
    pub(super) async fn store_data(
        &mut self,
        reader: impl Read,
        previous: Option<&Content>,
    ) -> Result<(ContentId, Content)> {
        let mut builder = ContentBuilder::default();
        let mut bases = previous.map(Bases::new);
        let mut parts_cut = 0;
        for chunk in Chunker::new(reader) {
            let chunk = chunk.map_err(Unreadable)?;
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
                Some(b) => {
                    self.bases_at(b, chunk.offset, chunk.data.len() as u64)
                        .await?
                }
                None => Vec::new(),
            };
            // The previous version had this very chunk here: the relay holds
            // it (the commit checks, and a refusal clears the files cache).
            if !base.contains(&chunk.id) {
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
    pub(super) async fn put_content(
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
    pub(super) async fn put_object(
        &mut self,
        id: ObjectId,
        bytes: &[u8],
        base: Option<(ObjectId, &[u8])>,
    ) -> Result<()> {
        let (codec, data) = compress_with(self.uploader.chooser().method(), bytes);
        let patch = base
            .map(|(base, base_bytes)| (base, ferry_protocol::patch::diff(base_bytes, bytes)))
            .filter(|(_, patch)| patch.len() < data.len());
        let message = match patch {
            Some((base, patch)) => {
                self.summary.objects_patched += 1;
                Message::PutObjectPatch { id, base, patch }
            }
            None => Message::PutObject { id, codec, data },
        };
        self.client.send(&message).await?;
        self.unsynced_objects += 1;
        if self.unsynced_objects >= SYNC_OBJECTS {
            self.client.sync_later().await?;
            self.unsynced_objects = 0;
        }
        Ok(())
    }

    /// The previous version's chunks that covered `len` bytes at `offset`,
    /// loading the part of a large file's content that covers it when needed.
    pub(super) async fn bases_at(
        &mut self,
        bases: &mut Bases,
        offset: u64,
        len: u64,
    ) -> Result<Vec<ChunkId>> {
        if let Some(index) = bases.part_needed(offset) {
            let id = bases.parts[index].1.id;
            // Answers come in order: the chunk query's first.
            self.uploader.settle(self.client).await?;
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
        Ok(bases.covering(offset, len))
    }
}
