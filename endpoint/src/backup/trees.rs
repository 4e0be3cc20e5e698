//! Trees: directory nodes built bottom-up into trees, uploaded (as patches
//! against their previous versions where that is smaller), and the files
//! cache update that follows a commit.

use super::*;

/// A snapshot's trees, built bottom-up.
#[derive(Debug, Default)]
pub(super) struct Trees {
    /// Each distinct tree: its bytes, its subtrees and a directory it is.
    pub(super) by_id: HashMap<TreeId, BuiltTree>,
    /// Every directory (`/`-separated absolute path) and its tree.
    pub(super) dirs: Vec<(Vec<u8>, TreeId)>,
}

#[derive(Debug)]
pub(super) struct BuiltTree {
    pub(super) bytes: Vec<u8>,
    pub(super) subtrees: Vec<TreeId>,
    pub(super) path: Vec<u8>,
}

/// What changed in the files cache: files read (new or changed), files and
/// directories the cache knew that this snapshot lacks, new trees.
pub(super) fn cache_update(
    previous: SetCache,
    files: Vec<(Vec<u8>, CachedFile)>,
    trees: Trees,
) -> SetUpdate {
    let files_gone = previous
        .files
        .into_iter()
        .filter(|(_, (_, seen))| !seen)
        .map(|(path, _)| path)
        .collect();
    let mut old_trees = previous.trees;
    let mut changed_trees = Vec::new();
    for (path, id) in trees.dirs {
        if old_trees.remove(&path) != Some(id) {
            changed_trees.push((path, id, trees.by_id[&id].bytes.clone()));
        }
    }
    SetUpdate {
        files,
        files_gone,
        trees: changed_trees,
        trees_gone: old_trees.into_keys().collect(),
    }
}

impl Backup<'_> {
    /// Asks top-down which trees the relay lacks, uploads them children
    /// first, and makes them durable.
    pub(super) async fn upload_trees(&mut self, root: TreeId, trees: &Trees) -> Result<()> {
        // Every chunk durable (rejected deltas resent) before any tree is.
        self.uploader.flush(self.client).await?;
        let mut to_check = vec![root];
        let mut missing_order = Vec::new();
        let mut queued = HashSet::from([root]);
        while !to_check.is_empty() {
            let take = to_check.len().min(MAX_BATCH);
            let batch: Vec<TreeId> = to_check.drain(..take).collect();
            let ids = batch.iter().map(|t| ObjectId::Tree(*t)).collect();
            let missing = match self.client.request(&Message::QueryObjects { ids }).await? {
                Message::ObjectsMissing { ids } => ids,
                other => return Err(unexpected("ObjectsMissing", &other)),
            };
            for id in missing {
                let ObjectId::Tree(tree) = id else { continue };
                missing_order.push(tree);
                if let Some(built) = trees.by_id.get(&tree) {
                    to_check.extend(built.subtrees.iter().filter(|c| queued.insert(**c)));
                }
            }
        }
        for tree in missing_order.iter().rev() {
            let built = trees
                .by_id
                .get(tree)
                .context("relay asked for an unknown tree")?;
            // The same directory's tree in the cached snapshot: the relay has it.
            let base = match self.previous.trees.get(&built.path) {
                Some(old) if old != tree => self
                    .cache
                    .tree(&self.set, &built.path, old)?
                    .map(|bytes| (*old, bytes)),
                _ => None,
            };
            let base = base
                .as_ref()
                .map(|(old, bytes)| (ObjectId::Tree(*old), bytes.as_slice()));
            self.put_object(ObjectId::Tree(*tree), &built.bytes, base)
                .await?;
        }
        if !crate::uploader::sync(self.client).await?.is_empty() {
            bail!("the relay rejected chunks while storing trees");
        }
        Ok(())
    }
}

impl Trees {
    /// Builds `dir`'s tree (found at `path`) and those below it; returns its id.
    pub(super) fn build(&mut self, path: Vec<u8>, dir: DirNode) -> Result<TreeId> {
        let mut entries = Vec::with_capacity(dir.children.len());
        let mut subtrees = Vec::new();
        for (name, child) in dir.children {
            match child {
                Node::Leaf(entry) => entries.push(entry),
                Node::Dir(mut sub) => {
                    let mut entry = sub.entry.take().context("directory without metadata")?;
                    let mut sub_path = path.clone();
                    if sub_path.len() > 1 {
                        sub_path.push(b'/');
                    }
                    sub_path.extend_from_slice(&name);
                    let id = self.build(sub_path, sub)?;
                    entry.kind = EntryKind::Dir { tree: id };
                    subtrees.push(id);
                    entries.push(entry);
                }
            }
        }
        let (id, bytes) = Tree { entries }.encode()?;
        self.dirs.push((path.clone(), id));
        self.by_id.entry(id).or_insert(BuiltTree {
            bytes,
            subtrees,
            path,
        });
        Ok(id)
    }
}
