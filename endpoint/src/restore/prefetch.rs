//! The snapshot's trees, fetched ahead before the walk so entering a
//! directory costs no round trip.

use super::*;

use ferry_protocol::fetch::{FetchItem, FetchReply};

/// Bytes of trees fetched ahead before the walk, at most (a hostile relay
/// could name millions); past this, directories fetch their tree when
/// entered.
pub(super) const PREFETCH_TREE_BYTES: usize = 64 << 20;

/// Trees asked for and not yet received, at most.
pub(super) const TREES_IN_FLIGHT: usize = 256;

/// Trees asked for in one `Fetch`, at most (a batch's replies are read
/// together; the relay puts off what passes its bound).
pub(super) const BATCH_TREES: usize = 64;

impl Restore<'_> {
    /// Fetches the snapshot's trees from `root` down, breadth-first, with
    /// up to [`TREES_IN_FLIGHT`] asked and a directory's subdirectories
    /// asked as soon as it arrives, only where the walk will go (the
    /// selected paths and those above them): the whole costs about a round
    /// trip per level of the first directories, not per directory. A
    /// damaged or undecodable tree is left for the walk to ask again and
    /// report.
    pub(super) async fn prefetch_trees(&mut self, root: TreeId) -> Result<()> {
        let mut frontier = std::collections::VecDeque::from([(root, Vec::<Vec<u8>>::new())]);
        let mut asked = std::collections::VecDeque::new();
        let mut held = 0;
        let mut seen = std::collections::HashSet::new();
        loop {
            // Batches of what the frontier holds, while there is room.
            while asked.len() < TREES_IN_FLIGHT && held < PREFETCH_TREE_BYTES {
                let mut batch = 0;
                while batch < BATCH_TREES && asked.len() < TREES_IN_FLIGHT {
                    let Some((id, path)) = frontier.pop_front() else {
                        break;
                    };
                    if seen.insert(id) {
                        self.stream
                            .batch
                            .push(FetchItem::Object(ObjectId::Tree(id)));
                        asked.push_back((id, path));
                        batch += 1;
                    }
                }
                if batch == 0 {
                    break;
                }
                self.flush().await?;
            }
            let Some(count) = self.stream.messages.pop_front() else {
                return Ok(());
            };
            for reply in self.replies(count).await? {
                let (id, path) = asked.pop_front().context("a reply to nothing asked")?;
                let raw = match reply {
                    FetchReply::Data { codec, data } => {
                        match decompress(codec, data, MAX_MESSAGE) {
                            Ok(raw) => raw,
                            Err(_) => continue,
                        }
                    }
                    FetchReply::Later => {
                        // Asked again in a later batch.
                        seen.remove(&id);
                        frontier.push_front((id, path));
                        continue;
                    }
                    // Damaged, or not a tree: the walk asks again and reports it.
                    FetchReply::Refused { .. } | FetchReply::Delta { .. } => continue,
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
                // Past the bound what was asked is read and dropped.
                if held < PREFETCH_TREE_BYTES {
                    held += raw.len();
                    self.trees.insert(id, raw);
                }
            }
        }
    }
}
