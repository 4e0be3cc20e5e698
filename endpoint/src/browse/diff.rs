//! `ferry diff`: what changed between two snapshots, read from their
//! trees (open or sealed alike): paths added, removed, modified (other
//! data, another kind, another link target) or with other metadata only.

use std::collections::BTreeMap;

use anyhow::Result;
use ferry_protocol::message::SnapshotInfo;
use ferry_protocol::tree::{Entry, EntryKind};
use ferry_protocol::units::format_size;
use serde::Serialize;

use super::{list, size_of, ListRequest, Listed, Reader};
use crate::restore::Selector;
use crate::snapshot::show_path;
use crate::state::StateDir;

/// How a path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the second snapshot.
    Added,
    /// Only in the first.
    Removed,
    /// Other data, another kind, another link target or device.
    Modified,
    /// The same data; other permissions, owner, time or attributes.
    Metadata,
}

impl Change {
    /// The letter `ferry diff` prints (restic's).
    fn letter(self) -> char {
        match self {
            Self::Added => '+',
            Self::Removed => '-',
            Self::Modified => 'M',
            Self::Metadata => 'U',
        }
    }
}

/// One path that differs.
#[derive(Debug, Clone)]
pub struct Difference {
    /// Its path in the snapshots.
    pub path: Vec<Vec<u8>>,
    /// How.
    pub change: Change,
    /// Its entry in the first snapshot, if there.
    pub before: Option<Entry>,
    /// Its entry in the second, if there.
    pub after: Option<Entry>,
}

/// How `before` and `after` (the same path) differ, if they do. A
/// directory's own time is left out: it moves whenever its entries do,
/// and those are shown themselves.
pub fn change_of(before: &Entry, after: &Entry) -> Option<Change> {
    let same_data = match (&before.kind, &after.kind) {
        (EntryKind::Dir { .. }, EntryKind::Dir { .. }) => true,
        (a, b) => a == b,
    };
    let is_dir = matches!(after.kind, EntryKind::Dir { .. });
    let same_metadata = before.mode == after.mode
        && before.uid == after.uid
        && before.gid == after.gid
        && before.xattrs == after.xattrs
        && (is_dir || before.mtime_ns == after.mtime_ns);
    match (same_data, same_metadata) {
        (false, _) => Some(Change::Modified),
        (true, false) => Some(Change::Metadata),
        (true, true) => None,
    }
}

/// The differences between two listings, in path order.
pub fn compare(before: Vec<Listed>, after: Vec<Listed>) -> Vec<Difference> {
    /// A path's entry in each snapshot.
    type Sides = (Option<Entry>, Option<Entry>);
    let mut paths: BTreeMap<Vec<Vec<u8>>, Sides> = BTreeMap::new();
    for l in before {
        paths.entry(l.path).or_default().0 = Some(l.entry);
    }
    for l in after {
        paths.entry(l.path).or_default().1 = Some(l.entry);
    }
    paths
        .into_iter()
        .filter_map(|(path, (before, after))| {
            let change = match (&before, &after) {
                (None, Some(_)) => Change::Added,
                (Some(_), None) => Change::Removed,
                (Some(b), Some(a)) => change_of(b, a)?,
                (None, None) => return None,
            };
            Some(Difference {
                path,
                change,
                before,
                after,
            })
        })
        .collect()
}

/// Which two snapshots, and below which path.
#[derive(Debug, Clone)]
pub struct DiffRequest {
    /// The set `last` means (and the set ids are looked up in, if given).
    pub set: Option<String>,
    /// The first snapshot...
    pub from: Selector,
    /// ...and the second.
    pub to: Selector,
    /// Only below this absolute path.
    pub path: Option<std::path::PathBuf>,
}

/// The two snapshots and their differences.
///
/// # Errors
/// Session failures, no such snapshot, a tree damaged or (sealed) altered.
pub async fn diff(
    state: &StateDir,
    request: &DiffRequest,
) -> Result<(SnapshotInfo, SnapshotInfo, Vec<Difference>)> {
    let mut client = crate::jobs::open_client(state).await?;
    let reader = Reader::new(state, &mut client).await?;
    let side = |snapshot: Selector| ListRequest {
        set: crate::snapshot::set_of(request.set.clone(), snapshot),
        snapshot,
        path: request.path.clone(),
        recursive: true,
    };
    let (from, before) = list(state, &mut client, &reader, &side(request.from)).await?;
    let (to, after) = list(state, &mut client, &reader, &side(request.to)).await?;
    client.close().await;
    Ok((from, to, compare(before, after)))
}

/// Prints [`diff`]'s result: a line per path (`+`, `-`, `M`, `U`, with
/// sizes) and a count of each, or one JSON object.
///
/// # Errors
/// As [`diff`].
pub async fn print_diff(state: &StateDir, request: &DiffRequest, json: bool) -> Result<()> {
    let (from, to, differences) = diff(state, request).await?;
    let count = |change: Change| differences.iter().filter(|d| d.change == change).count();
    let size = |entry: &Option<Entry>| entry.as_ref().map(|e| size_of(&e.kind));
    if json {
        let changes: Vec<serde_json::Value> = differences
            .iter()
            .map(|d| {
                serde_json::json!({
                    "path": show_path(&d.path),
                    "change": d.change,
                    "type": super::kind_name(&d.after.as_ref().or(d.before.as_ref()).expect("one side").kind),
                    "size_before": size(&d.before),
                    "size_after": size(&d.after),
                })
            })
            .collect();
        let out = serde_json::json!({
            "from": from.id,
            "to": to.id,
            "added": count(Change::Added),
            "removed": count(Change::Removed),
            "modified": count(Change::Modified),
            "metadata": count(Change::Metadata),
            "changes": changes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("comparing snapshot {} with snapshot {}", from.id, to.id);
    for d in &differences {
        let sizes = match (size(&d.before), size(&d.after), d.change) {
            (Some(b), Some(a), Change::Modified) if b != a => {
                format!("  ({} -> {})", format_size(b), format_size(a))
            }
            (_, Some(a), Change::Added) => format!("  ({})", format_size(a)),
            (Some(b), _, Change::Removed) => format!("  ({})", format_size(b)),
            _ => String::new(),
        };
        println!("{}    {}{sizes}", d.change.letter(), show_path(&d.path));
    }
    println!(
        "{} added, {} removed, {} modified, {} with other metadata",
        count(Change::Added),
        count(Change::Removed),
        count(Change::Modified),
        count(Change::Metadata)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_protocol::ids::{ContentId, TreeId};

    fn file(name: &str, data: &[u8], mode: u32) -> Listed {
        Listed {
            path: vec![b"d".to_vec(), name.as_bytes().to_vec()],
            entry: Entry {
                name: name.as_bytes().to_vec(),
                kind: EntryKind::File {
                    size: data.len() as u64,
                    content: ContentId(*blake3::hash(data).as_bytes()),
                    sparse: None,
                },
                mode,
                uid: 0,
                gid: 0,
                mtime_ns: 1,
                xattrs: Vec::new(),
            },
        }
    }

    fn dir(mtime_ns: i64, tree: u8) -> Listed {
        let mut d = file("x", b"", 0o755);
        d.path = vec![b"d".to_vec()];
        d.entry.kind = EntryKind::Dir {
            tree: TreeId([tree; 32]),
        };
        d.entry.mtime_ns = mtime_ns;
        d
    }

    #[test]
    fn paths_are_added_removed_modified_or_changed_in_metadata_only() {
        let before = vec![
            dir(1, 1),
            file("gone", b"a", 0o644),
            file("edited", b"old", 0o644),
            file("chmod", b"same", 0o644),
            file("kept", b"same", 0o644),
        ];
        let after = vec![
            dir(2, 2),
            file("edited", b"new!", 0o644),
            file("chmod", b"same", 0o600),
            file("kept", b"same", 0o644),
            file("new", b"b", 0o644),
        ];
        let found: Vec<(String, Change)> = compare(before, after)
            .into_iter()
            .map(|d| (show_path(&d.path), d.change))
            .collect();
        assert_eq!(
            found,
            vec![
                ("/d/chmod".to_string(), Change::Metadata),
                ("/d/edited".to_string(), Change::Modified),
                ("/d/gone".to_string(), Change::Removed),
                ("/d/new".to_string(), Change::Added),
            ],
            "a directory whose entries changed is not itself shown"
        );
    }
}
