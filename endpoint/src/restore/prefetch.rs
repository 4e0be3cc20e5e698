//! The snapshot's trees, fetched ahead before the walk so entering a
//! directory costs no round trip.

use super::*;

/// Bytes of trees fetched ahead before the walk, at most (a hostile relay
/// could name millions); past this, directories fetch their tree when
/// entered.
pub(super) const PREFETCH_TREE_BYTES: usize = 64 << 20;

/// Trees asked for and not yet received, at most (their answers, each at
/// most a message, are read one at a time).
pub(super) const TREES_IN_FLIGHT: usize = 256;

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
            while asked.len() < TREES_IN_FLIGHT && held < PREFETCH_TREE_BYTES {
                let Some((id, path)) = frontier.pop_front() else {
                    break;
                };
                if seen.insert(id) {
                    self.client
                        .ask(&Message::GetObject {
                            id: ObjectId::Tree(id),
                        })
                        .await?;
                    asked.push_back((id, path));
                }
            }
            let Some((id, path)) = asked.pop_front() else {
                return Ok(());
            };
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
            // Past the bound what was asked is read and dropped.
            if held < PREFETCH_TREE_BYTES {
                held += raw.len();
                self.trees.insert(id, raw);
            }
        }
    }
}
