//! Walking the snapshot: trees fetched as they are entered, each entry
//! placed under the target (or skipped) and created in turn.

use super::*;

pub(super) type Boxed<'b, T> = Pin<Box<dyn Future<Output = T> + 'b>>;

/// Directories deeper than this are not restored (see the fetcher's).
pub(super) use crate::fetcher::MAX_DEPTH;

pub(super) fn starts_with(path: &[Vec<u8>], prefix: &[Vec<u8>]) -> bool {
    path.len() >= prefix.len() && path[..prefix.len()] == *prefix
}

impl Selection {
    /// Where the entry at `snapshot_path` goes.
    pub(crate) fn place(&self, snapshot_path: &[Vec<u8>]) -> Place {
        let selected =
            self.filters.is_empty() || self.filters.iter().any(|f| starts_with(snapshot_path, f));
        let above_filter = self.filters.iter().any(|f| starts_with(f, snapshot_path));
        let mapped = match &self.map_from {
            None => Some(snapshot_path.to_vec()),
            Some(from) if starts_with(snapshot_path, from) => Some(
                self.renamed
                    .iter()
                    .cloned()
                    .chain(snapshot_path[from.len()..].iter().cloned())
                    .collect(),
            ),
            Some(_) => None,
        };
        let above_map = self
            .map_from
            .as_ref()
            .is_some_and(|from| starts_with(from, snapshot_path));
        match mapped {
            Some(at) if selected => Place::At(at),
            _ if above_filter || above_map => Place::Through,
            _ => Place::Skip,
        }
    }

    /// [`Selection::place`] of `entry`: a file (or any non-directory) at
    /// `--map-from` itself, restored into an existing directory, goes into
    /// it under its own name (the target directory cannot become a file).
    pub(crate) fn place_entry(&self, snapshot_path: &[Vec<u8>], entry: &Entry) -> Place {
        match self.place(snapshot_path) {
            Place::At(at) if at.is_empty() && !matches!(entry.kind, EntryKind::Dir { .. }) => {
                Place::At(snapshot_path.last().into_iter().cloned().collect())
            }
            place => place,
        }
    }
}

impl Restore<'_> {
    pub(super) fn place(&self, snapshot_path: &[Vec<u8>], entry: &Entry) -> Place {
        self.selection.place_entry(snapshot_path, entry)
    }

    /// A tree, fetched ahead or asked for now (after every answer to come:
    /// they come in order).
    pub(super) async fn tree(&mut self, id: TreeId) -> Result<Vec<u8>> {
        // Kept: the same tree may stand at several paths (empty
        // directories, copies).
        if let Some(raw) = self.trees.get(&id) {
            return Ok(raw.clone());
        }
        self.drain().await?;
        let answer = self
            .client
            .request(&Message::GetObject {
                id: ObjectId::Tree(id),
            })
            .await;
        object_bytes(answer)
    }

    pub(super) fn walk<'b>(
        &'b mut self,
        tree_id: TreeId,
        path: Vec<Vec<u8>>,
        inside: bool,
    ) -> Boxed<'b, Result<()>> {
        Box::pin(async move {
            if path.len() > MAX_DEPTH {
                self.fail(
                    &path[..1],
                    format!("a directory in it lies deeper than {MAX_DEPTH} levels; nothing below that depth was restored"),
                );
                return Ok(());
            }
            let tree = self.tree(tree_id).await;
            let tree = match tree.and_then(|raw| decode_tree(&tree_id, &raw)) {
                Ok(tree) => tree,
                Err(e) if e.is::<Damaged>() => {
                    self.fail(&path, format!("{e:#}; nothing below it was restored"));
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            for entry in tree.entries {
                let mut snapshot_path = path.clone();
                snapshot_path.push(entry.name.clone());
                let place = if inside {
                    match self.place(&snapshot_path, &entry) {
                        Place::At(at) => Place::At(at),
                        _ => Place::Skip,
                    }
                } else {
                    self.place(&snapshot_path, &entry)
                };
                match (place, &entry.kind) {
                    (Place::Skip, _) => {}
                    (Place::Through, EntryKind::Dir { tree }) => {
                        let tree = *tree;
                        self.walk(tree, snapshot_path, false).await?;
                    }
                    (Place::Through, _) => {}
                    (Place::At(at), _) => self.entry(entry, snapshot_path, at).await?,
                }
            }
            Ok(())
        })
    }

    pub(super) async fn entry(
        &mut self,
        entry: Entry,
        snapshot_path: Vec<Vec<u8>>,
        at: Vec<Vec<u8>>,
    ) -> Result<()> {
        self.placed += 1;
        let Some((name, parent)) = at.split_last() else {
            // The mapped directory itself: the target root takes its metadata.
            if let EntryKind::Dir { tree } = entry.kind {
                self.walk(tree, snapshot_path, true).await?;
                self.dirs.push((Vec::new(), entry));
            }
            return Ok(());
        };
        let dir = match self.parent_dir(parent) {
            Ok(dir) => dir,
            Err(e) => {
                self.fail(&snapshot_path, e);
                return Ok(());
            }
        };
        match &entry.kind {
            EntryKind::Dir { tree } => {
                let tree = *tree;
                if let Err(e) = self.target.dir(&at) {
                    self.fail(&snapshot_path, e);
                    return Ok(());
                }
                self.walk(tree, snapshot_path, true).await?;
                self.dirs.push((at, entry));
            }
            EntryKind::File { .. } if self.disk_is_full() => {
                self.fail(&snapshot_path, "No space left on device");
            }
            EntryKind::File { .. } => {
                let file = FileEntry {
                    dir,
                    name: name.clone(),
                    entry,
                    snapshot_path: snapshot_path.clone(),
                    at: at.clone(),
                };
                match self.file(file).await {
                    Ok(()) => {}
                    Err(e) if e.is::<std::io::Error>() || e.is::<Damaged>() => {
                        self.fail(&snapshot_path, format!("{e:#}"))
                    }
                    Err(e) => return Err(e),
                }
            }
            EntryKind::Symlink { target } => {
                let target = target.clone();
                self.symlinks.push((at, entry, target));
            }
            EntryKind::Hardlink { target } => {
                // The file linked to must be under its name first.
                self.drain().await?;
                self.settle_all();
                let original: Vec<Vec<u8>> =
                    target.split(|b| *b == b'/').map(<[u8]>::to_vec).collect();
                let Some(first) = self.restored.get(&original).cloned() else {
                    self.fail(&snapshot_path, "hard link to a file that was not restored");
                    return Ok(());
                };
                let (first_name, first_parent) =
                    first.split_last().expect("restored paths are not empty");
                let linked = self
                    .target
                    .dir(first_parent)
                    .and_then(|first_dir| Target::hardlink(&first_dir, first_name, &dir, name));
                if let Err(e) = linked {
                    self.fail(&snapshot_path, e);
                }
            }
            EntryKind::Fifo => {
                let made = Target::node(&dir, name, rustix::fs::FileType::Fifo, 0)
                    .and_then(|()| self.target.apply_at(&dir, name, &entry, false));
                if let Err(e) = made {
                    self.fail(&snapshot_path, e);
                }
            }
            EntryKind::Device { character, rdev } => {
                if !self.target.devices() {
                    self.fail(
                        &snapshot_path,
                        "device nodes are restored only as root, into / or with --preserve-privileges",
                    );
                    return Ok(());
                }
                let kind = if *character {
                    rustix::fs::FileType::CharacterDevice
                } else {
                    rustix::fs::FileType::BlockDevice
                };
                let made = Target::node(&dir, name, kind, *rdev)
                    .and_then(|()| self.target.apply_at(&dir, name, &entry, false));
                if let Err(e) = made {
                    self.fail(&snapshot_path, e);
                }
            }
        }
        Ok(())
    }
}
