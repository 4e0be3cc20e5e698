//! The restore as a stream: the contents and chunks of the files the walk
//! reaches are asked for as far ahead as the windows allow, and the relay's
//! answers, which come in the order asked, are written as they arrive. The
//! walk never waits for a directory's or a file's answers, so a restore
//! waits for the link's round trip a handful of times, not once per
//! directory or file, and the link stays busy while files are written.
//!
//! Each file is a [`Job`]: its content (chunk list) is asked for when the
//! walk reaches it; when the content arrives, its chunks are placed from
//! the target's own copy or asked for (with the signature of the target's
//! chunk at the same place, for a delta), each written at its offset as it
//! arrives; a large file's parts are asked for one ahead. Asks go in
//! batches (`crate::fetcher`). A file whose
//! answers are all in is made ready to settle (see `files`), or, when
//! something it needs is damaged, its temporary file is removed and it is
//! named.

use super::*;

use std::collections::{BTreeMap, VecDeque};

use ferry_protocol::fetch::{FetchItem, FetchReply};
use ferry_protocol::tree::{ContentPart, PART_CHUNKS};

use super::window::{content_estimate, part_estimate, CONTENT_WINDOW_BYTES, WINDOW_BYTES};
use crate::fetcher::Fetcher;

/// A file in the stream: asked for, being written.
pub(super) struct Job {
    /// Its path in the snapshot (for messages and hard links).
    pub(super) snapshot_path: Vec<Vec<u8>>,
    /// Its path below the target.
    pub(super) at: Vec<Vec<u8>>,
    /// Its name in `dir`.
    pub(super) name: Vec<u8>,
    /// The directory it goes into.
    pub(super) dir: Arc<OwnedFd>,
    /// Its entry, whose metadata it takes.
    pub(super) entry: Entry,
    /// Its size.
    pub(super) size: u64,
    /// Its content (chunk list).
    pub(super) content: ContentId,
    /// Where its content's bytes go.
    pub(super) layout: Layout,
    /// The target's current version, whose chunks are reused or serve as
    /// delta bases; or, when `out.in_place`, the interrupted restore's
    /// temporary file itself.
    pub(super) local: Option<LocalFile>,
    /// The temporary file written.
    pub(super) out: Output,
}

/// A job's progress through the stream.
struct Progress {
    job: Job,
    /// Chunks known and not yet asked for or placed, in order.
    pending: VecDeque<ChunkRef>,
    /// Parts not yet asked for (a large file's).
    parts: VecDeque<ContentPart>,
    /// A part is asked for and not yet received.
    part_asked: bool,
    /// Answers asked for this file and not yet read.
    awaited: usize,
    /// Index (in the whole file) and content offset of the next pending chunk.
    next_index: usize,
    next_offset: u64,
    /// Why the file cannot be restored, once known: nothing more is asked for it.
    failed: Option<anyhow::Error>,
}

/// An answer to come, in the order asked.
enum Expected {
    /// A file's content, or one of its parts, estimated at `estimate` bytes.
    ChunkList {
        job: u64,
        id: ContentId,
        part: bool,
        estimate: u64,
    },
    /// A chunk, to be written at `offset`; asked with the signature of the
    /// target's `index`th chunk when `with_base`.
    Chunk {
        job: u64,
        id: ChunkId,
        index: usize,
        offset: u64,
        len: u32,
        with_base: bool,
    },
}

/// The files in flight and the answers to come.
pub(super) struct Stream {
    jobs: BTreeMap<u64, Progress>,
    next_job: u64,
    /// What each reply to come answers, in order.
    expected: VecDeque<Expected>,
    /// The batches asked and to be asked.
    pub(super) fetcher: Fetcher,
    /// Chunk bytes asked for, not received.
    chunk_bytes: u64,
    /// Estimated content bytes asked for, not received.
    content_bytes: u64,
    /// See [`max_files`].
    max_files: usize,
    /// The id of an empty file's content, which is never asked for.
    empty_content: ContentId,
}

impl Stream {
    /// An empty stream holding at most `max_files` files.
    pub(super) fn new(max_files: usize) -> Self {
        Stream {
            jobs: BTreeMap::new(),
            next_job: 0,
            expected: VecDeque::new(),
            fetcher: Fetcher::default(),
            chunk_bytes: 0,
            content_bytes: 0,
            max_files,
            empty_content: Content::default().encode().0,
        }
    }
}

impl Restore<'_> {
    /// Puts a file into the stream: its content is asked for once there is
    /// room (answers are read and written until there is).
    pub(super) async fn stream_file(&mut self, job: Job) -> Result<()> {
        let estimate = content_estimate(job.layout.total());
        while self.stream.jobs.len() >= self.stream.max_files
            || (self.stream.content_bytes > 0
                && self.stream.content_bytes + estimate > CONTENT_WINDOW_BYTES)
        {
            self.step().await?;
        }
        let key = self.stream.next_job;
        self.stream.next_job += 1;
        let content = job.content;
        let mut progress = Progress {
            job,
            pending: VecDeque::new(),
            parts: VecDeque::new(),
            part_asked: false,
            awaited: 0,
            next_index: 0,
            next_offset: 0,
            failed: None,
        };
        // An empty file's content is known: nothing to ask.
        if content != self.stream.empty_content {
            let expected = Expected::ChunkList {
                job: key,
                id: content,
                part: false,
                estimate,
            };
            self.ask(
                FetchItem::Object(ObjectId::Content(content)),
                expected,
                estimate,
            )
            .await?;
            self.stream.content_bytes += estimate;
            progress.awaited = 1;
        }
        self.stream.jobs.insert(key, progress);
        self.finish_if_done(key);
        Ok(())
    }

    /// Adds an ask to the batch, which goes once it is full (or when an
    /// answer is waited for).
    async fn ask(&mut self, item: FetchItem, expected: Expected, estimate: u64) -> Result<()> {
        self.stream.expected.push_back(expected);
        self.stream.fetcher.add(self.client, item, estimate).await
    }

    /// Reads every answer to come and finishes every file in the stream.
    pub(super) async fn drain(&mut self) -> Result<()> {
        self.fill().await?;
        while self.stream.fetcher.pending() {
            self.step().await?;
        }
        if !self.stream.jobs.is_empty() {
            bail!("files were left unfinished with nothing asked for them");
        }
        Ok(())
    }

    /// Reads the next answer message, uses its replies, and asks for what
    /// there is now room for.
    async fn step(&mut self) -> Result<()> {
        let Some(replies) = self.stream.fetcher.next(self.client).await? else {
            return Ok(());
        };
        let mut later = Vec::new();
        for reply in replies {
            let next = self
                .stream
                .expected
                .pop_front()
                .context("a reply to nothing asked")?;
            if reply == FetchReply::Later {
                later.push(next);
                continue;
            }
            match self.reply_arrived(next, reply)? {
                Arrived::For(key) => self.finish_if_done(key),
                Arrived::AskAgain(next) => later.push(next),
            }
        }
        // What did not fit the relay's batch is asked for again.
        for next in later {
            let (item, estimate) = self.item_for(&next)?;
            self.ask(item, next, estimate).await?;
        }
        self.fill().await
    }

    /// What to ask for again for an answer to come, and its estimate.
    fn item_for(&self, expected: &Expected) -> Result<(FetchItem, u64)> {
        Ok(match *expected {
            Expected::ChunkList { id, estimate, .. } => {
                (FetchItem::Object(ObjectId::Content(id)), estimate)
            }
            Expected::Chunk {
                job,
                id,
                index,
                len,
                with_base,
                ..
            } => {
                let progress = self.stream.jobs.get(&job).context("a chunk for no file")?;
                let base = match progress.job.local.as_ref().filter(|_| with_base) {
                    Some(local) => {
                        let &(at, n, _) = local.chunks.get(index).context("a base not held")?;
                        Some(delta::signature(&local.read_at(at, n)?))
                    }
                    None => None,
                };
                let item = FetchItem::Chunk {
                    id,
                    base_signature: base,
                };
                (item, u64::from(len))
            }
        })
    }

    /// Uses one reply; returns the file it was for, or what to ask again.
    fn reply_arrived(&mut self, next: Expected, reply: FetchReply) -> Result<Arrived> {
        Ok(Arrived::For(match next {
            Expected::ChunkList {
                job,
                id,
                part,
                estimate,
            } => {
                self.stream.content_bytes -= estimate;
                let raw = match reply {
                    FetchReply::Data { codec, data } => decompress(codec, data, MAX_MESSAGE)
                        .map_err(|e| {
                            Damaged(format!("an object that does not decompress ({e})")).into()
                        }),
                    FetchReply::Refused { message, .. } => Err(Damaged(message).into()),
                    FetchReply::Delta { .. } | FetchReply::Later | FetchReply::Trees(_) => {
                        bail!("the relay sent something else for a file list")
                    }
                };
                self.chunk_list_arrived(job, id, part, raw);
                job
            }
            Expected::Chunk {
                job,
                id,
                index,
                offset,
                len,
                with_base,
            } => {
                self.stream.chunk_bytes -= u64::from(len);
                let progress = self
                    .stream
                    .jobs
                    .get_mut(&job)
                    .context("a chunk for no file")?;
                progress.awaited -= 1;
                let base = progress
                    .job
                    .local
                    .as_ref()
                    .filter(|_| with_base)
                    .and_then(|local| {
                        local
                            .chunks
                            .get(index)
                            .map(|&(at, n, _)| local.read_at(at, n))
                    });
                let data = match base.transpose() {
                    Ok(base) => chunk_reply(reply, &id, base, &mut self.summary),
                    Err(e) => Err(e.into()),
                };
                if data.as_ref().is_err_and(|e| e.is::<DeltaFailed>()) {
                    // The relay's delta, or a base the user changed since
                    // it was read: the chunk itself is asked for instead.
                    self.stream.chunk_bytes += u64::from(len);
                    progress.awaited += 1;
                    return Ok(Arrived::AskAgain(Expected::Chunk {
                        job,
                        id,
                        index,
                        offset,
                        len,
                        with_base: false,
                    }));
                }
                match data {
                    Ok(data) if progress.failed.is_none() => {
                        let job_ = &progress.job;
                        if let Err(e) = write_content(&job_.layout, &job_.out.file, offset, &data) {
                            progress.failed = Some(e.into());
                        }
                    }
                    Ok(_) => {}
                    Err(e) if e.is::<Damaged>() || e.is::<std::io::Error>() => {
                        progress.failed.get_or_insert(e);
                    }
                    Err(e) => return Err(e),
                }
                job
            }
        }))
    }

    /// A file's content or part arrived (or is damaged): its chunks and
    /// parts join what is to be asked for.
    fn chunk_list_arrived(&mut self, key: u64, id: ContentId, part: bool, raw: Result<Vec<u8>>) {
        let Some(progress) = self.stream.jobs.get_mut(&key) else {
            return;
        };
        progress.awaited -= 1;
        progress.part_asked &= !part;
        if progress.failed.is_some() {
            return;
        }
        let data = progress.job.layout.total();
        // Chunks listed so far: placed or asked, and pending.
        let listed = (progress.next_index + progress.pending.len()) as u64;
        let content = raw
            .and_then(|raw| decode_content(&id, &raw))
            .and_then(|c| fits_file(c, &id, part, listed, data));
        match content {
            Ok(content) => {
                progress.pending.extend(content.chunks);
                progress.parts.extend(content.parts);
            }
            Err(e) => progress.failed = Some(e),
        }
    }

    /// Asks for (or places, from the target's own copy) the chunks of the
    /// files in the stream, oldest first, while the window has room.
    async fn fill(&mut self) -> Result<()> {
        let keys: Vec<u64> = self.stream.jobs.keys().copied().collect();
        for key in keys {
            let full = self.feed(key).await?;
            self.finish_if_done(key);
            if full {
                break;
            }
        }
        self.stream.fetcher.flush(self.client).await
    }

    /// Feeds one file's chunks; true when the window is full.
    async fn feed(&mut self, key: u64) -> Result<bool> {
        let disk_full = self.disk_is_full();
        loop {
            let Some(progress) = self.stream.jobs.get_mut(&key) else {
                return Ok(false);
            };
            // Once the target's disk is full nothing more is asked for: the
            // files waiting for their chunks fail with it.
            if disk_full && progress.failed.is_none() {
                progress.failed = Some(anyhow::anyhow!(std::io::Error::from_raw_os_error(28)));
            }
            if progress.failed.is_some() {
                progress.pending.clear();
                progress.parts.clear();
                return Ok(false);
            }
            // The next part is asked for while this one's chunks travel.
            if !progress.part_asked && progress.pending.len() <= PART_CHUNKS {
                if let Some(part) = progress.parts.pop_front() {
                    let estimate = part_estimate();
                    progress.part_asked = true;
                    progress.awaited += 1;
                    self.stream.content_bytes += estimate;
                    let expected = Expected::ChunkList {
                        job: key,
                        id: part.id,
                        part: true,
                        estimate,
                    };
                    let item = FetchItem::Object(ObjectId::Content(part.id));
                    self.ask(item, expected, estimate).await?;
                    continue;
                }
            }
            let Some(&chunk) = progress.pending.front() else {
                return Ok(false);
            };
            let (index, offset) = (progress.next_index, progress.next_offset);
            let job = &progress.job;
            let local = job.local.as_ref();
            let in_place = job.out.in_place
                && job.layout.is_whole()
                && local
                    .is_some_and(|l| l.chunks.get(index) == Some(&(offset, chunk.len, chunk.id)));
            if !in_place {
                match local.map(|l| l.read(&chunk.id)).transpose() {
                    Ok(Some(Some(data))) if ChunkId::of(&data) == chunk.id => {
                        if let Err(e) = write_content(&job.layout, &job.out.file, offset, &data) {
                            progress.failed = Some(e.into());
                        }
                    }
                    Err(e) => progress.failed = Some(e.into()),
                    Ok(_) => {
                        if self.stream.chunk_bytes >= WINDOW_BYTES {
                            return Ok(true);
                        }
                        // The base is read again when the delta arrives, so
                        // it must not change meanwhile: never the temporary
                        // file being completed in place, which this very
                        // stream writes to.
                        let base = local
                            .filter(|_| !job.out.in_place)
                            .and_then(|l| l.chunks.get(index));
                        let signature =
                            match base.map(|&(at, n, _)| local.expect("a base").read_at(at, n)) {
                                Some(Ok(base)) => Some(delta::signature(&base)),
                                Some(Err(e)) => {
                                    progress.failed = Some(e.into());
                                    continue;
                                }
                                None => None,
                            };
                        let expected = Expected::Chunk {
                            job: key,
                            id: chunk.id,
                            index,
                            offset,
                            len: chunk.len,
                            with_base: signature.is_some(),
                        };
                        self.stream.chunk_bytes += u64::from(chunk.len);
                        progress.awaited += 1;
                        progress.pending.pop_front();
                        progress.next_index += 1;
                        progress.next_offset += u64::from(chunk.len);
                        let item = FetchItem::Chunk {
                            id: chunk.id,
                            base_signature: signature,
                        };
                        self.ask(item, expected, u64::from(chunk.len)).await?;
                        continue;
                    }
                }
            }
            if progress.failed.is_none() {
                self.summary.chunks_local += 1;
            }
            progress.pending.pop_front();
            progress.next_index += 1;
            progress.next_offset += u64::from(chunk.len);
        }
    }

    /// A file whose answers are all in leaves the stream: written, it waits
    /// to settle; failed, its temporary file goes and it is named.
    fn finish_if_done(&mut self, key: u64) {
        let done = self.stream.jobs.get(&key).is_some_and(|p| {
            p.awaited == 0
                && !p.part_asked
                && (p.failed.is_some() || (p.pending.is_empty() && p.parts.is_empty()))
        });
        if !done {
            return;
        }
        let Some(progress) = self.stream.jobs.remove(&key) else {
            return;
        };
        let job = progress.job;
        let failed = match progress.failed {
            Some(e) => Err(e),
            None => self.complete(&job),
        };
        match failed {
            Ok(()) => self.written_file(job),
            Err(e) => {
                Target::remove_temp(&job.dir, &job.out.tmp);
                self.fail(&job.snapshot_path, format!("{e:#}"));
            }
        }
    }
}

/// What a reply meant for the stream.
enum Arrived {
    /// It was for this file.
    For(u64),
    /// It must be asked for again, so.
    AskAgain(Expected),
}

/// A delta that did not rebuild its chunk: either the relay's fault or a
/// base that changed on disk since its signature was read (the user edited
/// the file); the chunk is asked for whole before anything is called damaged.
#[derive(Debug)]
struct DeltaFailed;

impl std::fmt::Display for DeltaFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a delta did not rebuild its chunk")
    }
}

impl std::error::Error for DeltaFailed {}

/// A chunk from the relay's reply (asked with `base`'s signature, if
/// any), checked against its id, and counted by how it came.
fn chunk_reply(
    reply: FetchReply,
    id: &ChunkId,
    base: Option<Vec<u8>>,
    summary: &mut Summary,
) -> Result<Vec<u8>> {
    let damaged = |why: String| -> anyhow::Error { chunk_damaged(id, why) };
    match reply {
        FetchReply::Data { codec, data } => {
            summary.chunks_full += 1;
            chunk_data(Ok(Message::ChunkData { codec, data }), id)
        }
        FetchReply::Delta {
            codec,
            delta: bytes,
        } => {
            let base = base.context("the relay sent a delta without a base")?;
            let delta = decompress(codec, bytes, delta::MAX_DELTA)
                .map_err(|e| damaged(format!("its delta does not decompress ({e})")))?;
            let chunk = delta::apply(&base, &delta, id).map_err(|_| DeltaFailed)?;
            summary.chunks_delta += 1;
            Ok(chunk)
        }
        FetchReply::Refused { message, .. } => Err(Damaged(message).into()),
        FetchReply::Later => bail!("a chunk put off was taken as received"),
        FetchReply::Trees(_) => bail!("the relay sent directories for a chunk"),
    }
}
