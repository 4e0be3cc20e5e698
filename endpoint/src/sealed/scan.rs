//! The sealed backup's walk: the paths of a set walked into directory
//! nodes (read from a filesystem snapshot when the set asks for one), each
//! regular file handed to `file` as it is reached; or a command's output
//! stored as one file.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use ferry_protocol::ids::ContentId;
use ferry_protocol::tree::EntryKind;

use super::backup::Sealed;
use crate::backup::scan::{
    command_entry, command_finished, command_known, recorded, spawn_command, Boxed, Walker,
};
use crate::backup::{DirNode, Node};
use crate::cache::CachedFile;
use crate::fsmeta;

impl Walker for Sealed<'_, '_> {
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
                    let Ok(child_meta) = std::fs::symlink_metadata(&child_path) else {
                        self.unreadable(&child_path, "it vanished");
                        continue;
                    };
                    let recorded = self.recorded(&child_path);
                    if (self.job.excludes)
                        .why(&recorded, &child_path, &child_meta, meta.dev())
                        .is_some()
                    {
                        continue;
                    }
                    if let Some(node) = self.scan(&child_path, child.clone(), child_meta).await? {
                        dir.children.insert(child, node);
                    }
                }
                return Ok(Some(Node::Dir(dir)));
            }
            if meta.is_file() {
                if meta.nlink() > 1 {
                    let rel = self.recorded(path).as_os_str().as_bytes()[1..].to_vec();
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

    fn set_view(&mut self, view: Option<(PathBuf, PathBuf)>) {
        self.view = view;
    }
}

impl Sealed<'_, '_> {
    /// Runs `command` and stores its output as the file `name` at the root.
    pub(super) async fn add_command(
        &mut self,
        root: &mut DirNode,
        command: &str,
        name: &str,
    ) -> Result<()> {
        let (child, stdout) = spawn_command(command, name)?;
        let key = format!("command:{name}").into_bytes();
        let cached = self.known(&key);
        let previous = match &cached {
            Some(_) => self.cache.sealed_file(&self.set, &key)?.unwrap_or_default(),
            None => Default::default(),
        };
        let stored = self.store(stdout, &previous).await;
        let finished = command_finished(child, command);
        let (content, kept) = stored?;
        finished?;
        let size: u64 = kept.chunks.iter().map(|c| u64::from(c.len)).sum();
        self.count_read(cached.is_some(), size);
        let content = ContentId(content.0);
        let record = CachedFile {
            known: command_known(size, content),
            chunks: Default::default(),
        };
        self.changed.push((key, record, kept));
        let entry = command_entry(name, size, content);
        root.children
            .insert(name.as_bytes().to_vec(), Node::Leaf(entry));
        Ok(())
    }

    /// The path a file read at `read` is recorded under (its original
    /// path while reading from a filesystem snapshot).
    pub(super) fn recorded(&self, read: &Path) -> std::path::PathBuf {
        recorded(self.view.as_ref(), read)
    }

    pub(super) fn unreadable(&mut self, path: &Path, why: &str) {
        let shown = self.recorded(path);
        self.summary.files_unreadable += 1;
        self.summary
            .errors
            .push(format!("{}: {why}", shown.display()));
    }

    pub(super) fn count(&mut self, size: u64) {
        self.control.live.file_done(size, 0, 0);
        self.summary.files += 1;
        self.summary.bytes += size;
    }
}
