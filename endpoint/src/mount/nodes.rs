//! The mounted tree's nodes: `/sets/SET/ID-TIME/…` over each snapshot's
//! entries, and `/sets/SET/latest` pointing at the newest. Inode numbers
//! are indexes into one table; a snapshot's own entries are added the
//! first time something looks inside it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_protocol::message::SnapshotInfo;
use ferry_protocol::tree::{Entry, EntryKind};
use ferry_protocol::units::format_rfc3339;
use fuser::{FileAttr, FileType, INodeNo};

use crate::browse::Listed;

/// What a node is.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// A directory; its entries by name.
    Dir(BTreeMap<Vec<u8>, u64>),
    /// A snapshot's root, its entries not read yet.
    Unread(u64),
    /// A file of a snapshot: its id and the file's path there.
    File {
        /// The snapshot.
        snapshot: u64,
        /// The path (components), as `ferry restore` takes it.
        path: Vec<Vec<u8>>,
    },
    /// A symbolic link and its target.
    Symlink(Vec<u8>),
    /// A fifo or device, shown and never opened.
    Special,
}

/// One node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its directory's inode.
    pub parent: u64,
    /// What it is.
    pub kind: NodeKind,
    /// What `stat` says of it.
    pub attr: FileAttr,
    /// Its extended attributes (name, value), as backed up.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Every node, by inode (inode 1, the root, at index 0).
#[derive(Debug, Default)]
pub struct Nodes {
    nodes: Vec<Node>,
}

/// The time a virtual directory shows, and a snapshot's when it has one.
fn time_of_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A virtual directory's or link's attributes (read-only, owned by the
/// user who mounted).
fn virtual_attr(kind: FileType, size: u64, time: SystemTime) -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size,
        blocks: 0,
        atime: time,
        mtime: time,
        ctime: time,
        crtime: time,
        kind,
        perm: if kind == FileType::Directory {
            0o555
        } else {
            0o777
        },
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// An entry's attributes, as it was backed up.
fn entry_attr(entry: &Entry) -> FileAttr {
    let (kind, size, rdev) = match &entry.kind {
        EntryKind::File { size, .. } => (FileType::RegularFile, *size, 0),
        EntryKind::Dir { .. } => (FileType::Directory, 0, 0),
        EntryKind::Symlink { target } => (FileType::Symlink, target.len() as u64, 0),
        EntryKind::Hardlink { .. } => (FileType::RegularFile, 0, 0),
        EntryKind::Fifo => (FileType::NamedPipe, 0, 0),
        EntryKind::Device { character, rdev } => {
            let kind = if *character {
                FileType::CharDevice
            } else {
                FileType::BlockDevice
            };
            (kind, 0, u32::try_from(*rdev).unwrap_or(0))
        }
    };
    let secs = entry.mtime_ns.div_euclid(1_000_000_000);
    let nanos = entry.mtime_ns.rem_euclid(1_000_000_000);
    let mtime = UNIX_EPOCH
        + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
        + Duration::from_nanos(nanos as u64);
    FileAttr {
        ino: INodeNo(0),
        size,
        blocks: size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind,
        perm: (entry.mode & 0o7777) as u16,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: entry.uid,
        gid: entry.gid,
        rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// A snapshot's directory name: `ID-TIME`.
pub fn snapshot_name(info: &SnapshotInfo) -> String {
    format!("{}-{}", info.id, format_rfc3339(info.finished_ms))
}

/// A name safe as one path component (a set named `a/b` shows as `a_b`).
fn component(name: &str) -> Vec<u8> {
    name.replace('/', "_").into_bytes()
}

impl Nodes {
    /// The tree over `snapshots` (oldest first): `/sets/SET/ID-TIME`, each
    /// unread, and `latest` in each set.
    pub fn new(snapshots: &[SnapshotInfo]) -> Self {
        let now = SystemTime::now();
        let mut nodes = Self::default();
        let dir = || virtual_attr(FileType::Directory, 0, now);
        let root = nodes.add(1, NodeKind::Dir(BTreeMap::new()), dir());
        nodes.add_child(root, b"sets", NodeKind::Dir(BTreeMap::new()), dir());
        nodes.add_snapshots(snapshots);
        nodes
    }

    /// Adds the snapshots of `snapshots` (oldest first) not shown yet, and
    /// points each set's `latest` at its newest. Returns how many were new.
    pub fn add_snapshots(&mut self, snapshots: &[SnapshotInfo]) -> usize {
        let Some(sets) = self.lookup(1, b"sets") else {
            return 0;
        };
        let mut added = 0;
        let mut newest: BTreeMap<Vec<u8>, &SnapshotInfo> = BTreeMap::new();
        for info in snapshots {
            let set_name = component(&info.set);
            let set = match self.lookup(sets, &set_name) {
                Some(set) => set,
                None => {
                    let attr = virtual_attr(FileType::Directory, 0, SystemTime::now());
                    self.add_child(sets, &set_name, NodeKind::Dir(BTreeMap::new()), attr)
                }
            };
            let name = snapshot_name(info);
            if self.lookup(set, name.as_bytes()).is_none() {
                let attr = virtual_attr(FileType::Directory, 0, time_of_ms(info.finished_ms));
                self.add_child(set, name.as_bytes(), NodeKind::Unread(info.id), attr);
                added += 1;
            }
            newest.insert(set_name, info);
        }
        for (set_name, info) in newest {
            let Some(set) = self.lookup(sets, &set_name) else {
                continue;
            };
            let target = snapshot_name(info).into_bytes();
            let time = time_of_ms(info.finished_ms);
            let attr = virtual_attr(FileType::Symlink, target.len() as u64, time);
            match self.lookup(set, b"latest") {
                Some(latest) => {
                    let node = &mut self.nodes[latest as usize - 1];
                    node.kind = NodeKind::Symlink(target);
                    node.attr = FileAttr {
                        ino: INodeNo(latest),
                        ..attr
                    };
                }
                None => {
                    self.add_child(set, b"latest", NodeKind::Symlink(target), attr);
                }
            }
        }
        added
    }

    /// Adds a node under `parent`; returns its inode.
    fn add(&mut self, parent: u64, kind: NodeKind, mut attr: FileAttr) -> u64 {
        let ino = self.nodes.len() as u64 + 1;
        attr.ino = INodeNo(ino);
        self.nodes.push(Node {
            parent,
            kind,
            attr,
            xattrs: Vec::new(),
        });
        ino
    }

    /// Adds a node named `name` in directory `parent`.
    fn add_child(&mut self, parent: u64, name: &[u8], kind: NodeKind, attr: FileAttr) -> u64 {
        let ino = self.add(parent, kind, attr);
        if let Some(NodeKind::Dir(children)) =
            self.nodes.get_mut(parent as usize - 1).map(|n| &mut n.kind)
        {
            children.insert(name.to_vec(), ino);
        }
        ino
    }

    /// The node `ino`.
    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(usize::try_from(ino).ok()?.checked_sub(1)?)
    }

    /// Fills the unread snapshot root `ino` with `listed` (the whole
    /// snapshot, parents before children). A hard link becomes another
    /// name for the file it names.
    pub fn fill(&mut self, ino: u64, snapshot: u64, listed: Vec<Listed>) {
        let Some(node) = self.nodes.get_mut(ino as usize - 1) else {
            return;
        };
        node.kind = NodeKind::Dir(BTreeMap::new());
        let mut at: HashMap<Vec<Vec<u8>>, u64> = HashMap::from([(Vec::new(), ino)]);
        for l in listed {
            let Some((name, parent_path)) = l.path.split_last() else {
                continue;
            };
            let Some(&parent) = at.get(parent_path) else {
                continue;
            };
            let attr = entry_attr(&l.entry);
            let kind = match &l.entry.kind {
                EntryKind::Dir { .. } => NodeKind::Dir(BTreeMap::new()),
                EntryKind::File { .. } => NodeKind::File {
                    snapshot,
                    path: l.path.clone(),
                },
                EntryKind::Symlink { target } => NodeKind::Symlink(target.clone()),
                EntryKind::Hardlink { target } => {
                    let target: Vec<Vec<u8>> = target
                        .split(|b| *b == b'/')
                        .filter(|c| !c.is_empty())
                        .map(<[u8]>::to_vec)
                        .collect();
                    match at.get(&target).and_then(|t| self.get(*t)).cloned() {
                        Some(file) => {
                            let child = self.add_child(parent, name, file.kind, file.attr);
                            self.nodes[child as usize - 1].xattrs = file.xattrs;
                            at.insert(l.path, child);
                            continue;
                        }
                        None => NodeKind::Special,
                    }
                }
                EntryKind::Fifo | EntryKind::Device { .. } => NodeKind::Special,
            };
            let child = self.add_child(parent, name, kind, attr);
            self.nodes[child as usize - 1].xattrs = l.entry.xattrs;
            at.insert(l.path, child);
        }
    }

    /// The entry `name` of directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Option<u64> {
        match &self.get(parent)?.kind {
            NodeKind::Dir(children) => children.get(name).copied(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_protocol::ids::{ContentId, TreeId};

    fn info(id: u64, set: &str) -> SnapshotInfo {
        SnapshotInfo {
            id,
            set: set.into(),
            root: TreeId([0; 32]),
            started_ms: 0,
            finished_ms: 1_700_000_000_000 + id as i64,
            files: 1,
            bytes: 3,
        }
    }

    fn listed(path: &[&str], kind: EntryKind) -> Listed {
        Listed {
            path: path.iter().map(|c| c.as_bytes().to_vec()).collect(),
            entry: Entry {
                name: path.last().unwrap().as_bytes().to_vec(),
                kind,
                mode: 0o640,
                uid: 7,
                gid: 8,
                mtime_ns: 1_500_000_000_123_456_789,
                xattrs: Vec::new(),
            },
        }
    }

    #[test]
    fn snapshots_made_after_the_mount_are_added_and_latest_moves() {
        let mut nodes = Nodes::new(&[info(1, "docs")]);
        let sets = nodes.lookup(1, b"sets").unwrap();
        let docs = nodes.lookup(sets, b"docs").unwrap();
        let latest = nodes.lookup(docs, b"latest").unwrap();
        assert_eq!(
            nodes.add_snapshots(&[info(1, "docs"), info(4, "docs"), info(5, "new")]),
            2
        );
        assert_eq!(
            nodes.lookup(docs, b"latest"),
            Some(latest),
            "the same inode"
        );
        let NodeKind::Symlink(target) = &nodes.get(latest).unwrap().kind else {
            panic!()
        };
        assert!(target.starts_with(b"4-"));
        assert!(nodes.lookup(sets, b"new").is_some());
        assert_eq!(nodes.add_snapshots(&[info(4, "docs")]), 0);
    }

    #[test]
    fn sets_hold_snapshots_by_id_and_time_and_latest_names_the_newest() {
        let mut nodes = Nodes::new(&[info(1, "docs"), info(2, "a/b"), info(3, "docs")]);
        let sets = nodes.lookup(1, b"sets").unwrap();
        let docs = nodes.lookup(sets, b"docs").unwrap();
        assert!(nodes.lookup(sets, b"a_b").is_some());
        let latest = nodes.get(nodes.lookup(docs, b"latest").unwrap()).unwrap();
        let NodeKind::Symlink(target) = &latest.kind else {
            panic!()
        };
        let newest = nodes.lookup(docs, target).unwrap();
        assert!(matches!(
            nodes.get(newest).unwrap().kind,
            NodeKind::Unread(3)
        ));

        let file = EntryKind::File {
            size: 3,
            content: ContentId([1; 32]),
            sparse: None,
        };
        nodes.fill(
            newest,
            3,
            vec![
                listed(
                    &["home"],
                    EntryKind::Dir {
                        tree: TreeId([2; 32]),
                    },
                ),
                listed(&["home", "a.txt"], file),
                listed(
                    &["home", "b.txt"],
                    EntryKind::Hardlink {
                        target: b"home/a.txt".to_vec(),
                    },
                ),
            ],
        );
        let home = nodes.lookup(newest, b"home").unwrap();
        let a = nodes.get(nodes.lookup(home, b"a.txt").unwrap()).unwrap();
        assert_eq!((a.attr.size, a.attr.perm, a.attr.uid), (3, 0o640, 7));
        let NodeKind::File { snapshot, path } = &a.kind else {
            panic!()
        };
        assert_eq!((*snapshot, path.len()), (3, 2));
        let b = nodes.get(nodes.lookup(home, b"b.txt").unwrap()).unwrap();
        assert!(
            matches!(b.kind, NodeKind::File { .. }),
            "a hard link reads as the file it names"
        );
        assert_eq!(b.attr.size, 3);
    }
}
