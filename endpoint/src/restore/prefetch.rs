//! The snapshot's trees, fetched ahead before the walk so entering a
//! directory costs no round trip.

use super::*;

use std::collections::{HashSet, VecDeque};

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
    /// Fetches the snapshot's trees from `root` down before the walk, so
    /// entering a directory costs no round trip: each ask is for a tree
    /// and those below it (the relay sends as many as fit a batch;
    /// relays before 1.5 send the one), then for what is still missing
    /// below, breadth-first, only where the walk will go (the selected
    /// paths and those above them). A damaged or undecodable tree is left
    /// for the walk to ask again and report.
    pub(super) async fn prefetch_trees(&mut self, root: TreeId) -> Result<()> {
        let mut frontier = VecDeque::from([(root, Vec::<Vec<u8>>::new())]);
        let mut asked = VecDeque::new();
        let mut held = 0;
        let mut seen = HashSet::new();
        let mut expanded = HashSet::new();
        loop {
            // Batches of what the frontier holds, while there is room.
            while asked.len() < TREES_IN_FLIGHT && held < PREFETCH_TREE_BYTES {
                let mut batch = 0;
                while batch < BATCH_TREES && asked.len() < TREES_IN_FLIGHT {
                    let Some((id, path)) = frontier.pop_front() else {
                        break;
                    };
                    if seen.insert(id) {
                        self.stream.batch.push(FetchItem::Trees(id));
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
                let trees = match reply {
                    FetchReply::Trees(trees) => trees.into_iter().map(|t| t.into_vec()).collect(),
                    FetchReply::Data { codec, data } => {
                        match decompress(codec, data, MAX_MESSAGE) {
                            Ok(raw) => vec![raw],
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
                // Past the bound what came is dropped.
                for raw in trees {
                    if held < PREFETCH_TREE_BYTES {
                        held += raw.len();
                        self.trees.insert(TreeId::of(&raw), raw);
                    }
                }
                self.missing_below(id, path, &seen, &mut expanded, &mut frontier);
            }
        }
    }

    /// Adds to `frontier` the trees below `id` (at `path`) that the walk
    /// will enter and that are neither held nor asked for, looking through
    /// those held; each tree is looked through once.
    fn missing_below(
        &self,
        id: TreeId,
        path: Vec<Vec<u8>>,
        asked: &HashSet<TreeId>,
        expanded: &mut HashSet<TreeId>,
        frontier: &mut VecDeque<(TreeId, Vec<Vec<u8>>)>,
    ) {
        let mut stack = vec![(id, path)];
        while let Some((id, path)) = stack.pop() {
            let Some(raw) = self.trees.get(&id) else {
                if !asked.contains(&id) {
                    frontier.push_back((id, path));
                }
                continue;
            };
            if !expanded.insert(id) {
                continue;
            }
            let Ok(tree) = decode_tree(&id, raw) else {
                continue;
            };
            for entry in &tree.entries {
                if let EntryKind::Dir { tree: sub } = entry.kind {
                    let mut sub_path = path.clone();
                    sub_path.push(entry.name.clone());
                    if sub_path.len() <= super::walk::MAX_DEPTH
                        && !matches!(self.place(&sub_path), Place::Skip)
                    {
                        stack.push((sub, sub_path));
                    }
                }
            }
        }
    }
}
