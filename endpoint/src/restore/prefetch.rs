//! Asking ahead: the contents of a directory's files, and the chunks of the
//! next new files, requested before they are reached so a directory of
//! small files costs no round trip per file.

use super::*;

/// Chunks asked ahead for the new files of a run of files, at most.
pub(super) const AHEAD_CHUNKS: usize = 256;

/// Bytes of those chunks, at most.
pub(super) const AHEAD_BYTES: u64 = 8 << 20;

/// Bytes of contents prefetched for one directory, at most: each may be
/// up to a message's size, and a hostile relay could send a directory of
/// 100,000 of them. Past this, files fetch their contents when reached.
pub(super) const PREFETCH_BYTES: usize = 64 << 20;

/// Bytes of trees fetched ahead before the walk, at most (a hostile relay
/// could name millions); past this, directories fetch their tree when
/// entered.
pub(super) const PREFETCH_TREE_BYTES: usize = 64 << 20;

/// Contents asked for at once while prefetching a directory's.
pub(super) const BATCH_CONTENTS: usize = 64;

/// Trees asked for at once while prefetching (their answers, each at most
/// a message, are read back to back).
pub(super) const BATCH_TREES: usize = 64;

/// Chunks of the next new files, asked for before those files are reached,
/// so that a directory of small files does not wait for a round trip per
/// file. The relay answers in order: answers to chunks asked ahead come
/// before any later request's, and are read into `received` first.
#[derive(Default)]
pub(super) struct Ahead {
    /// Asked, answer not read yet, in order.
    pub(super) in_flight: std::collections::VecDeque<ChunkId>,
    /// Answers read, checked, not used yet (or why the chunk is damaged).
    pub(super) received: HashMap<ChunkId, std::result::Result<Vec<u8>, String>>,
    /// Asked and not yet claimed by a file.
    pub(super) unclaimed: std::collections::HashSet<ChunkId>,
}

impl Restore<'_> {
    /// Fetches the snapshot's trees from `root` down, breadth-first,
    /// [`BATCH_TREES`] requests at a time, only where the walk will
    /// go (the selected paths and those above them), so entering a
    /// directory costs no round trip. A damaged or undecodable tree is
    /// left for the walk to ask again and report.
    pub(super) async fn prefetch_trees(&mut self, root: TreeId) -> Result<()> {
        let mut frontier = std::collections::VecDeque::from([(root, Vec::<Vec<u8>>::new())]);
        let mut held = 0;
        let mut seen = std::collections::HashSet::new();
        while !frontier.is_empty() && held < PREFETCH_TREE_BYTES {
            // A batch asked at once, its answers read back to back.
            let mut batch = Vec::new();
            while batch.len() < BATCH_TREES {
                let Some((id, path)) = frontier.pop_front() else {
                    break;
                };
                if seen.insert(id) {
                    self.client
                        .send(&Message::GetObject {
                            id: ObjectId::Tree(id),
                        })
                        .await?;
                    batch.push((id, path));
                }
            }
            for (id, path) in batch {
                let raw = match object_bytes(self.client.answer().await) {
                    Ok(raw) => raw,
                    Err(e) if e.is::<Damaged>() => continue,
                    Err(e) => return Err(e),
                };
                let Ok(tree) = decode_tree(&id, &raw) else {
                    continue;
                };
                for entry in &tree.entries {
                    if let EntryKind::Dir { tree: sub } = entry.kind {
                        let mut sub_path = path.clone();
                        sub_path.push(entry.name.clone());
                        if sub_path.len() <= super::walk::MAX_DEPTH
                            && !matches!(self.place(&sub_path), Place::Skip)
                        {
                            frontier.push_back((sub, sub_path));
                        }
                    }
                }
                // Past the bound the rest of the batch is read and dropped.
                if held < PREFETCH_TREE_BYTES {
                    held += raw.len();
                    self.trees.insert(id, raw);
                }
            }
        }
        Ok(())
    }

    /// Fetches the contents of the files of `tree` that will be restored,
    /// [`BATCH_CONTENTS`] requests at a time, so a directory of small
    /// files costs a round trip per batch rather than one per file.
    pub(super) async fn prefetch_contents(&mut self, tree: &Tree, path: &[Vec<u8>]) -> Result<()> {
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
        let mut held = 0;
        // Batches asked at once, their answers read back to back: a
        // directory of small files costs a round trip per batch.
        for batch in wanted.chunks(BATCH_CONTENTS) {
            if held >= PREFETCH_BYTES {
                break;
            }
            for id in batch {
                self.client
                    .send(&Message::GetObject {
                        id: ObjectId::Content(*id),
                    })
                    .await?;
            }
            for id in batch {
                held += self.take_content_answer(*id).await?;
                if held >= PREFETCH_BYTES {
                    // Past the bound the rest is read and dropped (the
                    // files fetch their contents when reached).
                    self.contents.remove(id);
                }
            }
        }
        Ok(())
    }

    /// Reads the answer to a prefetched content; returns its size. A
    /// damaged one is left out (the file that needs it asks again and
    /// fails alone).
    pub(super) async fn take_content_answer(&mut self, id: ContentId) -> Result<usize> {
        match object_bytes(self.client.answer().await) {
            Ok(raw) => {
                let len = raw.len();
                self.contents.insert(id, raw);
                Ok(len)
            }
            Err(e) if e.is::<Damaged>() => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Asks for the chunks of the new files (nothing in the target at their
    /// name) among the next `entries` up to the next directory, within
    /// [`AHEAD_CHUNKS`] and [`AHEAD_BYTES`]; their contents were prefetched.
    /// Returns how many entries it went through.
    pub(super) async fn ask_ahead(&mut self, entries: &[Entry], path: &[Vec<u8>]) -> Result<usize> {
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
    pub(super) async fn read_ahead_answers(&mut self) -> Result<()> {
        while let Some(id) = self.ahead.in_flight.pop_front() {
            let data = self.ahead_answer(id).await?;
            self.ahead.received.insert(id, data);
        }
        Ok(())
    }

    /// The answer to a chunk asked ahead: its bytes, or why it is damaged.
    pub(super) async fn ahead_answer(
        &mut self,
        id: ChunkId,
    ) -> Result<std::result::Result<Vec<u8>, String>> {
        match self.chunk_answer(id, None).await {
            Ok(data) => Ok(Ok(data)),
            Err(e) => match e.downcast::<Damaged>() {
                Ok(damaged) => Ok(Err(damaged.0)),
                Err(e) => Err(e),
            },
        }
    }

    /// Forgets the chunks asked ahead that no file used (a file that failed).
    pub(super) async fn drop_ahead(&mut self) -> Result<()> {
        self.read_ahead_answers().await?;
        self.ahead.received.clear();
        self.ahead.unclaimed.clear();
        Ok(())
    }
}
