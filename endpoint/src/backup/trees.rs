//! Trees: directory nodes built bottom-up into trees, uploaded (as patches
//! against their previous versions where that is smaller), and the files
//! cache update that follows a commit.

use super::*;

/// A snapshot's trees, built bottom-up.
#[derive(Debug, Default)]
pub(super) struct Trees {
    /// Each distinct tree's bytes.
    pub(super) by_id: HashMap<TreeId, Vec<u8>>,
    /// Every directory (`/`-separated absolute path) and its tree.
    pub(super) dirs: Vec<(Vec<u8>, TreeId)>,
}

/// What changed in the files cache: files read (new or changed), files and
/// directories the cache knew that this snapshot lacks, new trees.
pub(super) fn cache_update(
    previous: SetCache,
    files: Vec<(Vec<u8>, CachedFile)>,
    trees: Trees,
) -> SetUpdate {
    let mut previous = previous;
    let adopted = previous.adopted();
    let files_gone = previous.unseen_files();
    let mut old_trees = previous.trees;
    let mut changed_trees = Vec::new();
    for (path, id) in trees.dirs {
        if old_trees.remove(&path) != Some(id) {
            changed_trees.push((path, id, trees.by_id[&id].clone()));
        }
    }
    SetUpdate {
        files,
        files_gone,
        trees: changed_trees,
        trees_gone: old_trees.into_keys().collect(),
        adopted,
    }
}

impl Backup<'_> {
    /// Uploads the trees that differ from the cached snapshot's at the same
    /// path, children first, without asking which the relay lacks (a
    /// changed directory's tree is new; an unchanged one the relay holds,
    /// or the commit's closure check says otherwise and the files cache is
    /// cleared), then makes the upload durable where it must be.
    pub(super) async fn upload_trees(&mut self, trees: &Trees) -> Result<()> {
        let mut sent = HashSet::new();
        // `dirs` lists children before their parents.
        for (path, tree) in &trees.dirs {
            if self.previous.trees.get(path) == Some(tree) || !sent.insert(*tree) {
                continue;
            }
            let built = trees
                .by_id
                .get(tree)
                .context("a directory without its tree")?;
            // The same directory's tree in the cached snapshot: the relay has it.
            let base = match self.previous.trees.get(path) {
                Some(old) => self
                    .cache
                    .tree(&self.set, path, old)?
                    .map(|bytes| (*old, bytes)),
                None => None,
            };
            let base = base
                .as_ref()
                .map(|(old, bytes)| (ObjectId::Tree(*old), bytes.as_slice()));
            self.put_object(ObjectId::Tree(*tree), built, base).await?;
        }
        // Rejected deltas resent whole, if any were sent.
        self.uploader.flush(self.client).await
    }
}

impl Trees {
    /// Builds `dir`'s tree (found at `path`) and those below it; returns its id.
    pub(super) fn build(&mut self, path: Vec<u8>, dir: DirNode) -> Result<TreeId> {
        let entries = dir.into_entries(|name, sub| {
            let mut sub_path = path.clone();
            if sub_path.len() > 1 {
                sub_path.push(b'/');
            }
            sub_path.extend_from_slice(name);
            self.build(sub_path, sub)
        })?;
        let (id, bytes) = Tree { entries }.encode()?;
        self.dirs.push((path, id));
        self.by_id.entry(id).or_insert(bytes);
        Ok(id)
    }
}
