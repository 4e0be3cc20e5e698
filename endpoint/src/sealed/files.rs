//! A sealed restore's files, streamed: every file's content resolved level
//! by level across all files (one batch of fetches per level, not per
//! file), then the chunks of many files fetched a window at a time, each
//! written at its place in its file's temporary copy; a file whose last
//! chunk is written takes its metadata and its name.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};
use ferry_protocol::message::StorageId;
use ferry_protocol::sealed::{SealedKind, SealingKeys};
use ferry_protocol::sealed_objects::{ChunkEntry, SealedContent, MAX_CONTENT_LEVELS};
use ferry_protocol::tree::{Entry, Extent};

use super::local::Held;
use super::remote::{short, Remote};
use super::restore::Opening;
use crate::target::Target;

/// Chunks fetched and written together, across files, at most...
const WINDOW_CHUNKS: usize = 1024;
/// ...and at most this many bytes of them: a window costs a round trip
/// or two whatever its size, so small files go many to a window.
const WINDOW_BYTES: u64 = 16 << 20;

/// One file to write.
pub(super) struct FileJob {
    /// Where it goes below the target.
    pub(super) at: Vec<Vec<u8>>,
    /// Its entry (metadata, size, sparse regions).
    pub(super) entry: Entry,
    /// Its data.
    pub(super) data: FileData,
}

/// How a file's data is named.
pub(super) enum FileData {
    /// By a content listing its chunks.
    Content(StorageId),
    /// By its one chunk, for a small file (its depth [`ANY_DEPTH`]).
    Chunk(ChunkEntry),
}

/// The depth of a small file's chunk named by its tree: a whole chunk or a
/// patch, as its header says.
pub(super) const ANY_DEPTH: u8 = u8::MAX;

/// A file being written: its temporary copy and what is left of it.
struct Open {
    job: usize,
    dir: OwnedFd,
    file: File,
    tmp: Vec<u8>,
    /// Bytes of its data written.
    written: u64,
    /// Chunks not written yet.
    left: usize,
    /// The first write that failed (the file is then not settled).
    error: Option<String>,
    /// What the target held under its name before (chunks read from it).
    held: Option<Held>,
}

/// Each content's chunk list, through its parts, for many contents at
/// once; every part must hold what the content above says it does.
///
/// # Errors
/// A content that does not open or decode, a part of another length than
/// named, parts nested deeper than [`MAX_CONTENT_LEVELS`].
pub(super) async fn contents(
    remote: &mut Remote<'_>,
    keys: &SealingKeys,
    ids: &[StorageId],
) -> Result<HashMap<StorageId, Vec<ChunkEntry>>> {
    /// A file's list as far as it is resolved.
    enum Item {
        Chunk(ChunkEntry),
        Part(StorageId, Option<u64>),
    }
    let mut lists: HashMap<StorageId, Vec<Item>> = ids
        .iter()
        .map(|id| (*id, vec![Item::Part(*id, None)]))
        .collect();
    for _ in 0..=MAX_CONTENT_LEVELS {
        let wanted: Vec<StorageId> = lists
            .values()
            .flatten()
            .filter_map(|item| match item {
                Item::Part(id, _) => Some(*id),
                Item::Chunk(_) => None,
            })
            .collect();
        if wanted.is_empty() {
            let resolved = lists
                .into_iter()
                .map(|(id, items)| {
                    let chunks = items
                        .into_iter()
                        .filter_map(|item| match item {
                            Item::Chunk(chunk) => Some(chunk),
                            Item::Part(..) => None,
                        })
                        .collect();
                    (id, chunks)
                })
                .collect();
            return Ok(resolved);
        }
        let opened = remote.open_all(keys, SealedKind::Content, &wanted).await?;
        let mut decoded: HashMap<StorageId, SealedContent> = HashMap::new();
        for (id, (header, plain)) in &opened {
            let content = SealedContent::decode(plain, &header.refs).map_err(|e| {
                anyhow::anyhow!("sealed content {} does not decode: {e}", short(id))
            })?;
            decoded.insert(*id, content);
        }
        for items in lists.values_mut() {
            let mut next = Vec::with_capacity(items.len());
            for item in items.drain(..) {
                let Item::Part(id, len) = item else {
                    next.push(item);
                    continue;
                };
                let content = &decoded[&id];
                if len.is_some_and(|len| len != content.len()) {
                    bail!(
                        "sealed content {} is not the part its file names",
                        short(&id)
                    );
                }
                next.extend(content.chunks.iter().map(|c| Item::Chunk(*c)));
                next.extend(
                    content
                        .parts
                        .iter()
                        .map(|(id, len)| Item::Part(*id, Some(*len))),
                );
            }
            *items = next;
        }
    }
    bail!("a sealed content nests deeper than {MAX_CONTENT_LEVELS} levels")
}

/// Writes `jobs` under `target`, the chunks of several files fetched
/// together; returns the jobs that could not be written, with why.
///
/// # Errors
/// Session failures and objects the relay altered (the restore stops:
/// nothing more from it is trusted; the temporary copies are removed).
pub(super) async fn write(
    remote: &mut Remote<'_>,
    opening: &Opening<'_>,
    target: &Target,
    jobs: &[FileJob],
) -> Result<Written> {
    // rsync's quick check: a file of the same size and mtime is the same.
    let found: Vec<AtTarget> = jobs
        .iter()
        .map(|job| already_there(target, job).unwrap_or(AtTarget::Nothing))
        .collect();
    let unchanged: Vec<bool> = found.iter().map(|f| *f == AtTarget::Same).collect();
    let ids: Vec<StorageId> = jobs
        .iter()
        .zip(&unchanged)
        .filter(|(_, same)| !**same)
        .filter_map(|(j, _)| match j.data {
            FileData::Content(id) => Some(id),
            FileData::Chunk(_) => None,
        })
        .collect();
    let chunks = contents(remote, opening.keys, &ids).await?;
    let mut writer = Writer {
        target,
        jobs,
        open: Vec::new(),
        window: Vec::new(),
        window_bytes: 0,
        failed: Vec::new(),
    };
    let result = async {
        for (i, job) in jobs.iter().enumerate() {
            if unchanged[i] {
                continue;
            }
            let list = match &job.data {
                FileData::Content(id) => &chunks[id][..],
                FileData::Chunk(chunk) => std::slice::from_ref(chunk),
            };
            let file = match start(opening, target, job, i, list.len()) {
                Ok(file) => file,
                Err(e) => {
                    writer.failed.push((i, format!("{e:#}")));
                    continue;
                }
            };
            writer.open.push(file);
            if list.is_empty() {
                writer.settle();
            }
            for chunk in list {
                writer.window.push((writer.open.len() - 1, *chunk));
                writer.window_bytes += u64::from(chunk.len);
                if writer.window.len() == WINDOW_CHUNKS || writer.window_bytes >= WINDOW_BYTES {
                    writer.drain(remote, opening).await?;
                }
            }
        }
        writer.drain(remote, opening).await
    }
    .await;
    if let Err(e) = result {
        for file in writer.open {
            Target::remove_temp(&file.dir, &file.tmp);
        }
        return Err(e);
    }
    let replaced = found
        .iter()
        .enumerate()
        .filter(|(i, f)| **f == AtTarget::Other && !writer.failed.iter().any(|(j, _)| j == i))
        .count() as u64;
    Ok(Written {
        failed: writer.failed,
        unchanged: unchanged.iter().filter(|u| **u).count() as u64,
        replaced,
    })
}

/// What [`write`] did.
pub(super) struct Written {
    /// Jobs that could not be written, with why.
    pub(super) failed: Vec<(usize, String)>,
    /// Files the target held already (same size and mtime).
    pub(super) unchanged: u64,
    /// Files written over another version the target held.
    pub(super) replaced: u64,
}

/// What the target holds where a file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtTarget {
    /// The file itself (same size and mtime; metadata set if it differed).
    Same,
    /// Another version of it.
    Other,
    /// No file.
    Nothing,
}

/// What the target holds where `job` goes: the file already (same size
/// and mtime; its metadata set now if only that differs), another version,
/// or nothing.
fn already_there(target: &Target, job: &FileJob) -> Result<AtTarget> {
    let ferry_protocol::tree::EntryKind::File { size, .. } = &job.entry.kind else {
        return Ok(AtTarget::Nothing);
    };
    let (name, parent) = job.at.split_last().context("a file has a name")?;
    let dir = target.dir(parent)?;
    let quick = target.quick_match(&dir, name, &job.entry, *size)?;
    if quick == Some(true) {
        return Ok(AtTarget::Same);
    }
    Ok(match Target::existing_file(&dir, name)? {
        Some(file) if quick == Some(false) => {
            target.apply_to_fd(&file, &job.entry)?;
            AtTarget::Same
        }
        Some(_) => AtTarget::Other,
        None => AtTarget::Nothing,
    })
}

/// The files being written and the window of chunks asked for them.
struct Writer<'t> {
    target: &'t Target,
    jobs: &'t [FileJob],
    /// Files opened and not settled: those the window's chunks go to.
    open: Vec<Open>,
    /// Chunks to fetch, each with its file's place in `open`.
    window: Vec<(usize, ChunkEntry)>,
    /// Their bytes.
    window_bytes: u64,
    /// Jobs that failed, with why.
    failed: Vec<(usize, String)>,
}

impl Writer<'_> {
    /// Fetches and writes the window's chunks, then settles every file
    /// whose chunks are all written.
    async fn drain(&mut self, remote: &mut Remote<'_>, opening: &Opening<'_>) -> Result<()> {
        let entries: Vec<ChunkEntry> = self.window.iter().map(|(_, c)| *c).collect();
        let held: Vec<Option<&Held>> = self
            .window
            .iter()
            .map(|(slot, _)| self.open[*slot].held.as_ref())
            .collect();
        let data = super::restore::rebuild(remote, opening, &entries, &held).await?;
        self.window_bytes = 0;
        for ((slot, _), bytes) in self.window.drain(..).zip(data) {
            let file = &mut self.open[slot];
            let ferry_protocol::tree::EntryKind::File { sparse, .. } =
                &self.jobs[file.job].entry.kind
            else {
                continue;
            };
            file.left -= 1;
            let written = write_logical(&file.file, file.written, &bytes, sparse.as_deref());
            file.written += bytes.len() as u64;
            if let Err(e) = written {
                file.error.get_or_insert(e.to_string());
            }
        }
        self.settle();
        Ok(())
    }

    /// Settles the files whose chunks are all written: size and metadata
    /// set, renamed over their names (a failed one's copy removed).
    fn settle(&mut self) {
        let (done, open): (Vec<Open>, Vec<Open>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|f| f.left == 0);
        self.open = open;
        for file in done {
            let job = &self.jobs[file.job];
            if let Err(e) = finish(self.target, job, &file) {
                Target::remove_temp(&file.dir, &file.tmp);
                self.failed.push((file.job, format!("{e:#}")));
            }
        }
    }
}

/// A file's temporary copy, opened.
fn start(
    opening: &Opening<'_>,
    target: &Target,
    job: &FileJob,
    index: usize,
    chunks: usize,
) -> Result<Open> {
    let (name, parent) = job.at.split_last().context("a file has a name")?;
    let dir = target.dir(parent)?;
    // An older version under the name: its chunks need not be fetched.
    let held = match Target::existing_file(&dir, name) {
        Ok(Some(file)) if chunks > 0 => Held::read(opening, file),
        _ => None,
    };
    let (file, tmp) = Target::temp_file(&dir, name)?;
    Ok(Open {
        job: index,
        dir,
        file,
        tmp,
        written: 0,
        left: chunks,
        error: None,
        held,
    })
}

fn finish(target: &Target, job: &FileJob, file: &Open) -> Result<()> {
    if let Some(error) = &file.error {
        bail!("{error}");
    }
    let ferry_protocol::tree::EntryKind::File { size, .. } = &job.entry.kind else {
        bail!("not a file");
    };
    file.file.set_len(*size)?;
    target.apply_to_fd(&file.file, &job.entry)?;
    let name = job.at.last().context("a file has a name")?;
    Target::commit_temp(&file.dir, &file.tmp, name)?;
    Ok(())
}

/// Writes `data`, at `offset` of the file's data regions joined, to where
/// those bytes lie in the file.
fn write_logical(
    file: &File,
    offset: u64,
    data: &[u8],
    sparse: Option<&[Extent]>,
) -> std::io::Result<()> {
    let Some(extents) = sparse else {
        return file.write_all_at(data, offset);
    };
    let (mut logical, mut rest, mut at) = (0u64, data, offset);
    for extent in extents {
        if rest.is_empty() {
            break;
        }
        let end = logical + extent.len;
        if at < end {
            let within = at - logical;
            let n = ((extent.len - within) as usize).min(rest.len());
            file.write_all_at(&rest[..n], extent.offset + within)?;
            rest = &rest[n..];
            at += n as u64;
        }
        logical = end;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(std::io::Error::other("data past the file's regions"))
    }
}
