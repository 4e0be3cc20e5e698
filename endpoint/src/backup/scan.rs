//! Scanning: the paths and command outputs of a set walked into a tree of
//! directory nodes, each file handed to `files` as it is reached.

use super::*;

pub(super) type Boxed<'b, T> = Pin<Box<dyn Future<Output = T> + 'b>>;

/// The directory node that holds `path` (absolute), its ancestors added
/// to the tree with their metadata as needed; and `path`'s last name.
///
/// # Errors
/// `/` itself, an ancestor that cannot be read, or one that is a file in
/// this backup.
pub(crate) fn parent_node<'r>(
    root: &'r mut DirNode,
    path: &Path,
) -> Result<(&'r mut DirNode, Vec<u8>)> {
    let components = names(path);
    let Some((last, parents)) = components.split_last() else {
        bail!("backing up / itself is not supported; name the directories to back up");
    };
    let mut dir = root;
    let mut at = PathBuf::from("/");
    for name in parents {
        at.push(std::ffi::OsStr::from_bytes(name));
        let meta = std::fs::symlink_metadata(&at)
            .with_context(|| format!("cannot read {}", at.display()))?;
        let xattrs = fsmeta::read_xattrs(&at).unwrap_or_default();
        let node = dir.children.entry(name.clone()).or_insert_with(|| {
            Node::Dir(DirNode {
                entry: Some(fsmeta::entry(name.clone(), &meta, EntryKind::Fifo, xattrs)),
                children: BTreeMap::new(),
            })
        });
        dir = match node {
            Node::Dir(d) => d,
            Node::Leaf(_) => bail!(
                "{} is both a file and a directory in this backup",
                at.display()
            ),
        };
    }
    Ok((dir, last.clone()))
}

impl Backup<'_> {
    /// Adds one requested path and its ancestors to the tree, reading it from
    /// `read_from` (a filesystem snapshot of it) when given.
    pub(super) async fn add_path(
        &mut self,
        root: &mut DirNode,
        path: &Path,
        read_from: Option<&Path>,
    ) -> Result<()> {
        let path = absolute(path)?;
        let (dir, last) = parent_node(root, &path)?;
        let read = read_from.map_or_else(|| path.clone(), Path::to_path_buf);
        let meta = std::fs::symlink_metadata(&read)
            .with_context(|| format!("cannot read {}", read.display()))?;
        self.view = Some((path.clone(), read.clone()));
        let node = self.scan(&read, last.clone(), meta).await;
        self.view = None;
        let node = node?;
        if let Some(node) = node {
            dir.children.insert(last.clone(), node);
        }
        Ok(())
    }

    /// Runs `command` and stores its output as the file `name` at the root.
    pub(super) async fn add_command(
        &mut self,
        root: &mut DirNode,
        command: &str,
        name: &str,
    ) -> Result<()> {
        ferry_protocol::tree::check_name(name.as_bytes())
            .map_err(|_| anyhow::anyhow!("invalid --name {name:?}: use a plain file name"))?;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {command:?}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let key = format!("command:{name}").into_bytes();
        let cached = self.known(&key);
        let previous = self.previous_chunks(&key, cached.as_ref())?;
        let stored = self.store_data(stdout, previous.as_ref()).await;
        let status = child.wait()?;
        let (content_id, content) = stored?;
        if !status.success() {
            bail!("the command {command:?} failed ({status}); no snapshot was made");
        }
        let size = content.len();
        if cached.is_some() {
            self.summary.totals.files_changed += 1;
        } else {
            self.summary.totals.files_new += 1;
        }
        self.summary.files += 1;
        self.summary.bytes += size;
        let entry = Entry {
            name: name.as_bytes().to_vec(),
            kind: EntryKind::File {
                size,
                content: content_id,
                sparse: None,
            },
            mode: 0o600,
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            mtime_ns: crate::now_ms().saturating_mul(1_000_000),
            xattrs: Vec::new(),
        };
        let record = CachedFile {
            known: Known {
                size,
                mtime_ns: 0,
                ctime_ns: 0,
                inode: 0,
                content: content_id,
                sparse: None,
            },
            chunks: content,
        };
        self.changed.push((key, record));
        root.children
            .insert(name.as_bytes().to_vec(), Node::Leaf(entry));
        Ok(())
    }

    /// Scans one path; `None` when it could not be read (counted, named).
    pub(super) fn scan<'b>(
        &'b mut self,
        path: &'b Path,
        name: Vec<u8>,
        meta: Metadata,
    ) -> Boxed<'b, Result<Option<Node>>> {
        Box::pin(async move {
            let xattrs = match fsmeta::read_xattrs(path) {
                Ok(x) => x,
                Err(e) => {
                    self.unreadable(path, &e.to_string());
                    Vec::new()
                }
            };
            if meta.is_dir() {
                let mut dir = DirNode {
                    entry: Some(fsmeta::entry(name, &meta, EntryKind::Fifo, xattrs)),
                    children: BTreeMap::new(),
                };
                let listing = match std::fs::read_dir(path) {
                    Ok(listing) => listing,
                    Err(e) => {
                        self.unreadable(path, &e.to_string());
                        return Ok(Some(Node::Dir(dir)));
                    }
                };
                let mut children: Vec<Vec<u8>> = Vec::new();
                for item in listing {
                    match item {
                        Ok(item) => children.push(item.file_name().as_bytes().to_vec()),
                        Err(e) => self.unreadable(path, &e.to_string()),
                    }
                }
                children.sort();
                for child in children {
                    if self.control.stop.load(std::sync::atomic::Ordering::Relaxed) {
                        self.uploader.flush(self.client).await?;
                        bail!("stopped; what was sent is kept and the next run resumes from there");
                    }
                    let child_path = path.join(std::ffi::OsStr::from_bytes(&child));
                    if self.excludes.excludes(&self.recorded(&child_path)) {
                        continue;
                    }
                    let child_meta = match std::fs::symlink_metadata(&child_path) {
                        Ok(m) => m,
                        Err(e) => {
                            self.unreadable(&child_path, &e.to_string());
                            continue;
                        }
                    };
                    if let Some(node) = self.scan(&child_path, child.clone(), child_meta).await? {
                        dir.children.insert(child, node);
                    }
                }
                return Ok(Some(Node::Dir(dir)));
            }
            if meta.is_file() {
                let rel = self.recorded(path).as_os_str().as_bytes()[1..].to_vec();
                if meta.nlink() > 1 {
                    if let Some(first) = self.hardlinks.get(&(meta.dev(), meta.ino())) {
                        let kind = EntryKind::Hardlink {
                            target: first.clone(),
                        };
                        return Ok(Some(Node::Leaf(fsmeta::entry(name, &meta, kind, xattrs))));
                    }
                    self.hardlinks.insert((meta.dev(), meta.ino()), rel);
                }
                return match self.file(path, &meta).await? {
                    Some((kind, meta)) => {
                        Ok(Some(Node::Leaf(fsmeta::entry(name, &meta, kind, xattrs))))
                    }
                    None => Ok(None),
                };
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
        let shown = self.recorded(path);
        self.summary.files_unreadable += 1;
        self.summary
            .errors
            .push(format!("{}: {why}", shown.display()));
    }

    /// The path a file is recorded under: while reading from a filesystem
    /// snapshot, its original path.
    pub(super) fn recorded(&self, read: &Path) -> PathBuf {
        match &self.view {
            Some((original, snapshot)) => match read.strip_prefix(snapshot) {
                Ok(rest) if rest.as_os_str().is_empty() => original.clone(),
                Ok(rest) => original.join(rest),
                Err(_) => read.to_path_buf(),
            },
            None => read.to_path_buf(),
        }
    }
}
