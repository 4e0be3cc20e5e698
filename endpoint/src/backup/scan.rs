//! Scanning: the paths and command outputs of a set walked into a tree of
//! directory nodes, each file handed to `files` as it is reached.

use super::*;

pub(crate) type Boxed<'b, T> = Pin<Box<dyn Future<Output = T> + 'b>>;

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

/// A path a set asks for: the directory node it goes in, its name there,
/// where it is read from and its metadata there.
pub(crate) struct Requested<'r> {
    /// The node of its parent directory.
    pub(crate) dir: &'r mut DirNode,
    /// Its name in it.
    pub(crate) name: Vec<u8>,
    /// Where it is read: itself, or its filesystem snapshot.
    pub(crate) read: PathBuf,
    /// Its metadata there.
    pub(crate) meta: std::fs::Metadata,
    /// Its original path and its snapshot's, when read from a snapshot.
    pub(crate) view: Option<(PathBuf, PathBuf)>,
}

impl<'r> Requested<'r> {
    /// `path` (read from `read_from`, a filesystem snapshot of it, when
    /// given) placed under `root`, its ancestors made.
    ///
    /// # Errors
    /// A path that cannot be made absolute or read.
    pub(crate) fn find(
        root: &'r mut DirNode,
        path: &Path,
        read_from: Option<&Path>,
    ) -> Result<Self> {
        let path = absolute(path)?;
        let (dir, name) = parent_node(root, &path)?;
        let read = read_from.map_or_else(|| path.clone(), Path::to_path_buf);
        let meta = std::fs::symlink_metadata(&read)
            .with_context(|| format!("cannot read {}", read.display()))?;
        let view = read_from.map(|_| (path, read.clone()));
        Ok(Requested {
            dir,
            name,
            read,
            meta,
            view,
        })
    }
}

/// What walks a set's paths into directory nodes: an open backup or a
/// sealed one (each reads and stores files its own way).
pub(crate) trait Walker {
    /// Scans one path read at `path`; `None` when it could not be read.
    fn scan<'b>(
        &'b mut self,
        path: &'b Path,
        name: Vec<u8>,
        meta: Metadata,
    ) -> Boxed<'b, Result<Option<Node>>>;

    /// While a path is read from a filesystem snapshot: its original path
    /// and the snapshot's (what files are recorded under).
    fn set_view(&mut self, view: Option<(PathBuf, PathBuf)>);

    /// Adds one requested path and its ancestors to the tree, reading it
    /// from `read_from` (a filesystem snapshot of it) when given.
    fn add_path<'b>(
        &'b mut self,
        root: &'b mut DirNode,
        path: &'b Path,
        read_from: Option<&'b Path>,
    ) -> Boxed<'b, Result<()>> {
        Box::pin(async move {
            let requested = Requested::find(root, path, read_from)?;
            self.set_view(requested.view);
            let node = self
                .scan(&requested.read, requested.name.clone(), requested.meta)
                .await;
            self.set_view(None);
            if let Some(node) = node? {
                requested.dir.children.insert(requested.name, node);
            }
            Ok(())
        })
    }
}

impl Walker for Backup<'_> {
    /// Scans one path; `None` when it could not be read (counted, named).
    fn scan<'b>(
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
                    let child_meta = match std::fs::symlink_metadata(&child_path) {
                        Ok(m) => m,
                        Err(e) => {
                            self.unreadable(&child_path, &e.to_string());
                            continue;
                        }
                    };
                    let recorded = self.recorded(&child_path);
                    if (self.excludes)
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

    fn set_view(&mut self, view: Option<(PathBuf, PathBuf)>) {
        self.view = view;
    }
}

impl Backup<'_> {
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
        let previous = self.previous_chunks(&key, cached.as_ref())?;
        let stored = self.store_data(stdout, previous.as_ref()).await;
        let finished = command_finished(child, command);
        let (content_id, content) = stored?;
        finished?;
        let size = content.len();
        self.summary.count_read(cached.is_some());
        self.summary.files += 1;
        self.summary.bytes += size;
        let entry = command_entry(name, size, content_id);
        let record = CachedFile {
            known: command_known(size, content_id),
            chunks: content,
        };
        self.changed.push((key, record));
        root.children
            .insert(name.as_bytes().to_vec(), Node::Leaf(entry));
        Ok(())
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
        recorded(self.view.as_ref(), read)
    }
}

/// The path a file read at `read` is recorded under: while reading from a
/// filesystem snapshot (`view`: the original path and the snapshot's), its
/// original path.
pub(crate) fn recorded(view: Option<&(PathBuf, PathBuf)>, read: &Path) -> PathBuf {
    match view {
        Some((original, snapshot)) => match read.strip_prefix(snapshot) {
            Ok(rest) if rest.as_os_str().is_empty() => original.clone(),
            Ok(rest) => original.join(rest),
            Err(_) => read.to_path_buf(),
        },
        None => read.to_path_buf(),
    }
}

/// Starts `command` (by `sh -c`) for a set whose source is a command's
/// output, after checking the file `name` it is stored as.
///
/// # Errors
/// A name that is not a plain file name; a command that cannot start.
pub(crate) fn spawn_command(
    command: &str,
    name: &str,
) -> Result<(std::process::Child, std::process::ChildStdout)> {
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
    Ok((child, stdout))
}

/// Waits for `command`, whose output was stored: one that failed makes no
/// snapshot.
///
/// # Errors
/// The command failed, or could not be waited for.
pub(crate) fn command_finished(mut child: std::process::Child, command: &str) -> Result<()> {
    let status = child.wait()?;
    if !status.success() {
        bail!("the command {command:?} failed ({status}); no snapshot was made");
    }
    Ok(())
}

/// What the files cache knows of a command's output: its size and content
/// (there is no file behind it to compare times and inodes with).
pub(crate) fn command_known(size: u64, content: ContentId) -> Known {
    Known {
        size,
        mtime_ns: 0,
        ctime_ns: 0,
        inode: 0,
        content,
        sparse: None,
    }
}

/// The entry of a command's output stored as the file `name` at the root:
/// owned by whoever ran it, 0600, dated now.
pub(crate) fn command_entry(name: &str, size: u64, content: ContentId) -> Entry {
    Entry {
        name: name.as_bytes().to_vec(),
        kind: EntryKind::File {
            size,
            content,
            sparse: None,
        },
        mode: 0o600,
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        mtime_ns: crate::now_ms().saturating_mul(1_000_000),
        xattrs: Vec::new(),
    }
}
