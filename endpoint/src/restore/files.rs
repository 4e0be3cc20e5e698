//! Writing one file: its chunks from the target's own copy, from the relay
//! (whole or as a delta), or already in place, into a temporary file that
//! is made durable and renamed over the name in batches.

use super::*;

/// Files written before they are made durable and take their names (each
/// holds itself and its directory open: well under the usual 1024 fds).
pub(super) const SETTLE_FILES: usize = 128;

/// Bytes written before the same.
pub(super) const SETTLE_BYTES: u64 = 128 << 20;

/// A file written to a temporary name, waiting to be made durable and renamed.
pub(super) struct Written {
    pub(super) file: File,
    pub(super) dir: Arc<OwnedFd>,
    pub(super) tmp: Vec<u8>,
    pub(super) name: Vec<u8>,
    pub(super) snapshot_path: Vec<Vec<u8>>,
}

/// A chunk waiting its turn to be written.
pub(super) enum Queued {
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
pub(super) struct Output {
    pub(super) file: File,
    pub(super) tmp: Vec<u8>,
    /// It is an interrupted restore's: chunks already at their place stay.
    pub(super) in_place: bool,
}

impl Restore<'_> {
    /// [`Target::quick_match`], unless `--checksum` asks to compare content.
    pub(super) fn quick_match(
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
    pub(super) fn parent_dir(&mut self, parent: &[Vec<u8>]) -> std::io::Result<Arc<OwnedFd>> {
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
    pub(super) fn settle(&mut self) {
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

    /// Restores one regular file's data and metadata; returns the
    /// temporary file that holds it (and its name) when it was written, to
    /// be renamed over `name` once durable.
    pub(super) async fn file(
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
    pub(super) async fn write_file(
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
    pub(super) async fn write_chunks(
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
    pub(super) async fn receive_into(
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
    pub(super) fn local_chunk(
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
    pub(super) async fn receive(&mut self, queued: Queued) -> Result<Vec<u8>> {
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
    pub(super) async fn chunk_answer(
        &mut self,
        id: ChunkId,
        base: Option<Vec<u8>>,
    ) -> Result<Vec<u8>> {
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
}
