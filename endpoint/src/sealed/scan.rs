//! The sealed backup's walk: the paths of a set walked into directory
//! nodes, each regular file handed to `file` as it is reached.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ferry_protocol::tree::EntryKind;

use super::backup::Sealed;
use crate::backup::absolute;
use crate::backup::scan::parent_node;
use crate::backup::{DirNode, Node};
use crate::fsmeta;

type Boxed<'b, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'b>>;

impl Sealed<'_, '_> {
    /// Adds one requested path and its ancestors to the tree.
    pub(super) async fn add_path(&mut self, root: &mut DirNode, path: &Path) -> Result<()> {
        let path = absolute(path)?;
        let (dir, last) = parent_node(root, &path)?;
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if let Some(node) = self.scan(&path, last.clone(), meta).await? {
            dir.children.insert(last.clone(), node);
        }
        Ok(())
    }

    /// Scans one path; `None` when it could not be read (counted, named).
    fn scan<'b>(
        &'b mut self,
        path: &'b Path,
        name: Vec<u8>,
        meta: Metadata,
    ) -> Boxed<'b, Result<Option<Node>>> {
        Box::pin(async move {
            let xattrs = fsmeta::read_xattrs(path).unwrap_or_default();
            if meta.is_dir() {
                let mut dir = DirNode {
                    entry: Some(fsmeta::entry(name, &meta, EntryKind::Fifo, xattrs)),
                    children: BTreeMap::new(),
                };
                let mut children: Vec<Vec<u8>> = match std::fs::read_dir(path) {
                    Ok(listing) => listing
                        .filter_map(|item| item.ok())
                        .map(|item| item.file_name().as_bytes().to_vec())
                        .collect(),
                    Err(e) => {
                        self.unreadable(path, &e.to_string());
                        Vec::new()
                    }
                };
                children.sort();
                for child in children {
                    if self.control.stop.load(std::sync::atomic::Ordering::Relaxed) {
                        bail!("stopped; what was sent is kept and the next run resumes from there");
                    }
                    let child_path = path.join(std::ffi::OsStr::from_bytes(&child));
                    if self.job.excludes.excludes(&child_path) {
                        continue;
                    }
                    let Ok(child_meta) = std::fs::symlink_metadata(&child_path) else {
                        self.unreadable(&child_path, "it vanished");
                        continue;
                    };
                    if let Some(node) = self.scan(&child_path, child.clone(), child_meta).await? {
                        dir.children.insert(child, node);
                    }
                }
                return Ok(Some(Node::Dir(dir)));
            }
            if meta.is_file() {
                if meta.nlink() > 1 {
                    let rel = path.as_os_str().as_bytes()[1..].to_vec();
                    if let Some(first) = self.hardlinks.get(&(meta.dev(), meta.ino())) {
                        let kind = EntryKind::Hardlink {
                            target: first.clone(),
                        };
                        return Ok(Some(Node::Leaf(fsmeta::entry(name, &meta, kind, xattrs))));
                    }
                    self.hardlinks.insert((meta.dev(), meta.ino()), rel);
                }
                return Ok(self
                    .file(path, &meta)
                    .await?
                    .map(|(kind, meta)| Node::Leaf(fsmeta::entry(name, &meta, kind, xattrs))));
            }
            match fsmeta::special_entry(path, name, &meta, xattrs) {
                Ok(entry) => Ok(Some(Node::Leaf(entry))),
                Err(why) => {
                    self.unreadable(path, &why);
                    Ok(None)
                }
            }
        })
    }

    pub(super) fn unreadable(&mut self, path: &Path, why: &str) {
        self.summary.files_unreadable += 1;
        self.summary
            .errors
            .push(format!("{}: {why}", path.display()));
    }

    pub(super) fn count(&mut self, size: u64) {
        self.control.live.file_done(size, 0, 0);
        self.summary.files += 1;
        self.summary.bytes += size;
    }
}
