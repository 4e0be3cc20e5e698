//! Seeing into a snapshot without restoring it (`ferry ls`): its entries
//! read from its trees by the endpoint, open or sealed alike (the relay of
//! a sealed client cannot read them, and need not).

pub mod diff;
pub mod dump;
pub mod find;

use std::collections::VecDeque;
use std::path::PathBuf;

use anyhow::{bail, Result};
use ferry_protocol::ids::TreeId;
use ferry_protocol::message::{Message, ObjectId, SnapshotInfo, StorageId};
use ferry_protocol::tree::{Entry, EntryKind};
use ferry_protocol::units::{format_rfc3339, format_size, printable};

use crate::client::RelayClient;
use crate::fetcher::{prefetch_trees, Fetcher, MAX_DEPTH};
use crate::restore::{Place, Selection, Selector};
use crate::snapshot::{decode_tree, object_bytes, resolve, show_path};
use crate::state::StateDir;
use ferry_net::table::{Align, Table};

/// Bytes of trees fetched ahead for a listing, at most (the rest are
/// asked for as the walk reaches them).
const PREFETCH_BYTES: usize = 64 << 20;

/// What to list.
#[derive(Debug, Clone)]
pub struct ListRequest {
    /// The backup set (`None`: any set, for `-b ID`).
    pub set: Option<String>,
    /// Which snapshot.
    pub snapshot: Selector,
    /// The directory (or file) to list, absolute as backed up; `None`: the
    /// snapshot's root.
    pub path: Option<PathBuf>,
    /// Everything below it, not only its entries.
    pub recursive: bool,
}

/// An entry of the snapshot and its path there.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its path in the snapshot (components).
    pub path: Vec<Vec<u8>>,
    /// The entry.
    pub entry: Entry,
}

/// How this client's snapshots are read: open trees as the relay holds
/// them, or sealed ones opened and checked with the vault's keys.
pub enum Reader {
    /// An open client.
    Open,
    /// A sealed client, and its vault's keys.
    Sealed(Box<ferry_protocol::sealed::SealingKeys>),
}

impl Reader {
    /// The reader for the client `state` is paired as (a sealed client's
    /// keys fetched or asked for as a restore needs them).
    ///
    /// # Errors
    /// The state cannot be read; a sealed client's keys cannot be had.
    pub async fn new(state: &StateDir, client: &mut RelayClient) -> Result<Self> {
        if state.relay()?.is_some_and(|r| r.sealed) {
            use crate::sealed;
            let keys = sealed::keys(state, client, sealed::KeyUse::Restore).await?;
            Ok(Self::Sealed(Box::new(keys)))
        } else {
            Ok(Self::Open)
        }
    }

    /// The entries of snapshot `which` that `selection` places, no deeper
    /// than `depth_limit` components, parents before children.
    ///
    /// # Errors
    /// Session failures, no such snapshot, a tree damaged or (sealed)
    /// altered.
    pub(crate) async fn entries(
        &self,
        state: &StateDir,
        client: &mut RelayClient,
        which: (Option<&str>, Selector),
        selection: &Selection,
        depth_limit: usize,
    ) -> Result<(SnapshotInfo, Vec<Listed>)> {
        match self {
            Self::Open => {
                let info = resolve(client, which.0, which.1).await?;
                let found = open_entries(client, info.root, selection, depth_limit).await?;
                Ok((info, found))
            }
            Self::Sealed(keys) => {
                sealed_entries(state, client, keys, which, selection, depth_limit).await
            }
        }
    }

    /// Runs `request` as an open or a sealed restore.
    ///
    /// # Errors
    /// As the restore's.
    pub async fn restore(
        &self,
        state: &StateDir,
        client: &mut RelayClient,
        request: &crate::restore::Request,
        live: &crate::progress::Live,
    ) -> Result<crate::restore::Summary> {
        match self {
            Self::Open => crate::restore::run(client, request, live).await,
            Self::Sealed(keys) => crate::sealed::restore::run(state, client, keys, request).await,
        }
    }
}

/// The entries `request` asks for, parents before children, and the
/// snapshot they are from.
///
/// # Errors
/// Session failures, no such snapshot, a tree the relay damaged or (sealed)
/// altered, a path the snapshot lacks.
pub async fn list(
    state: &StateDir,
    client: &mut RelayClient,
    reader: &Reader,
    request: &ListRequest,
) -> Result<(SnapshotInfo, Vec<Listed>)> {
    let under = request.path.as_deref().map(crate::restore::components);
    let base = under.as_ref().map_or(0, Vec::len);
    let selection = Selection::under(under);
    // Below the listed directory, one level unless recursive.
    let depth_limit = if request.recursive {
        usize::MAX
    } else {
        base + 1
    };
    let which = (request.set.as_deref(), request.snapshot);
    let (info, found) = reader
        .entries(state, client, which, &selection, depth_limit)
        .await?;
    // The directory's entries, or the file itself.
    let listed: Vec<Listed> = found
        .into_iter()
        .filter(|l| {
            l.path.len() > base
                || (l.path.len() == base && !matches!(l.entry.kind, EntryKind::Dir { .. }))
        })
        .collect();
    if listed.is_empty() && base > 0 {
        let asked = request.path.as_deref().unwrap_or(std::path::Path::new("/"));
        bail!("snapshot {} holds nothing at {}", info.id, asked.display());
    }
    Ok((info, listed))
}

/// An open client's entries: trees fetched ahead where the listing goes,
/// the rest asked for one by one.
async fn open_entries(
    client: &mut RelayClient,
    root: TreeId,
    selection: &Selection,
    depth_limit: usize,
) -> Result<Vec<Listed>> {
    let wanted = |path: &[Vec<u8>]| {
        path.len() < depth_limit && !matches!(selection.place(path), Place::Skip)
    };
    let mut fetcher = Fetcher::default();
    let trees = prefetch_trees(&mut fetcher, client, root, PREFETCH_BYTES, wanted).await?;
    let mut listed = Vec::new();
    let mut queue = VecDeque::from([(Vec::<Vec<u8>>::new(), root)]);
    while let Some((path, id)) = queue.pop_front() {
        if path.len() > MAX_DEPTH {
            bail!("the snapshot's directories nest deeper than {MAX_DEPTH}");
        }
        let raw = match trees.get(&id) {
            Some(raw) => raw.clone(),
            None => {
                let answer = client
                    .request(&Message::GetObject {
                        id: ObjectId::Tree(id),
                    })
                    .await;
                object_bytes(answer)?
            }
        };
        for entry in decode_tree(&id, &raw)?.entries {
            let mut from = path.clone();
            from.push(entry.name.clone());
            let place = selection.place_entry(&from, &entry);
            if let EntryKind::Dir { tree } = &entry.kind {
                if !matches!(place, Place::Skip) && from.len() < depth_limit {
                    queue.push_back((from.clone(), *tree));
                }
            }
            if matches!(place, Place::At(_)) {
                listed.push(Listed { path: from, entry });
            }
        }
    }
    Ok(listed)
}

/// A sealed client's entries, its root checked as a restore checks it.
async fn sealed_entries(
    state: &StateDir,
    client: &mut RelayClient,
    keys: &ferry_protocol::sealed::SealingKeys,
    which: (Option<&str>, Selector),
    selection: &Selection,
    depth_limit: usize,
) -> Result<(SnapshotInfo, Vec<Listed>)> {
    use crate::sealed;
    let mut remote = sealed::remote::Remote::new(client);
    let (info, root) =
        sealed::restore::open_snapshot(state, &mut remote, keys, which, false).await?;
    let root = (StorageId(root.root.tree), depth_limit);
    let placed = sealed::restore::walk(&mut remote, keys, selection, root, false).await?;
    let listed = placed
        .into_iter()
        .map(|p| Listed {
            path: p.from,
            entry: p.entry,
        })
        .collect();
    Ok((info, listed))
}

/// Prints what `request` lists: a path a line (with `long`, mode, owner,
/// size and time too), or a JSON array.
///
/// # Errors
/// As [`list`].
pub async fn print_list(
    state: &StateDir,
    request: &ListRequest,
    long: bool,
    json: bool,
) -> Result<()> {
    let mut client = crate::jobs::open_client(state).await?;
    let reader = Reader::new(state, &mut client).await?;
    let (_, listed) = list(state, &mut client, &reader, request).await?;
    client.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&to_json(&listed))?);
    } else {
        for line in lines(&listed, long) {
            println!("{line}");
        }
    }
    Ok(())
}

/// Prints the set's snapshots (every set's without one), oldest first,
/// with why the relay keeps each and the host and paths each covers (its
/// label): a table, or a JSON array.
///
/// # Errors
/// The relay cannot be reached or answers wrongly.
pub async fn print_snapshots(state: &StateDir, set: Option<String>, json: bool) -> Result<()> {
    let mut client = crate::jobs::open_client(state).await?;
    let (list, kept_by) = crate::snapshot::list_kept_by(&mut client, set).await?;
    let kept = |id: u64| kept_by.get(&id).cloned().unwrap_or_default();
    let labels = crate::labels::fetch(state, &mut client, &list).await?;
    client.close().await;
    if json {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id,
                    "set": s.set,
                    "root": s.root.to_string(),
                    "started_at": format_rfc3339(s.started_ms),
                    "finished_at": format_rfc3339(s.finished_ms),
                    "files": s.files,
                    "bytes": s.bytes,
                    "kept_by": kept(s.id),
                    "host": labels.get(&s.id).map(|l| printable(l.host.as_bytes())),
                    "paths": labels.get(&s.id).map(|l| l.paths.clone()).unwrap_or_default(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if list.is_empty() {
        println!("no snapshots");
    } else {
        let mut table = Table::new(&[
            ("ID", Align::Right),
            ("SET", Align::Left),
            ("FINISHED", Align::Left),
            ("FILES", Align::Right),
            ("SIZE", Align::Right),
            ("KEPT BY", Align::Left),
            ("HOST", Align::Left),
            ("PATHS", Align::Left),
        ]);
        for s in list {
            let label = labels.get(&s.id);
            table.row(vec![
                s.id.to_string(),
                printable(s.set.as_bytes()),
                format_rfc3339(s.finished_ms),
                s.files.to_string(),
                format_size(s.bytes),
                kept(s.id).join(","),
                label.map_or_else(String::new, |l| printable(l.host.as_bytes())),
                label.map_or_else(String::new, crate::labels::shown_paths),
            ]);
        }
        print!("{}", table.render());
    }
    Ok(())
}

/// What an entry is, as `ls -l` writes its first letter.
pub(crate) fn kind_name(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::File { .. } => "file",
        EntryKind::Dir { .. } => "dir",
        EntryKind::Symlink { .. } => "symlink",
        EntryKind::Hardlink { .. } => "hardlink",
        EntryKind::Fifo => "fifo",
        EntryKind::Device { .. } => "device",
    }
}

/// The bytes a file holds (0 for other entries).
pub(crate) fn size_of(kind: &EntryKind) -> u64 {
    match kind {
        EntryKind::File { size, .. } => *size,
        _ => 0,
    }
}

/// `ls -l`'s mode string: the kind's letter and the permission bits.
fn mode_string(entry: &Entry) -> String {
    let letter = match entry.kind {
        EntryKind::Dir { .. } => 'd',
        EntryKind::Symlink { .. } => 'l',
        EntryKind::Fifo => 'p',
        EntryKind::Device {
            character: true, ..
        } => 'c',
        EntryKind::Device { .. } => 'b',
        _ => '-',
    };
    let bits = "rwxrwxrwx".chars().enumerate().map(|(i, c)| {
        if entry.mode & (0o400 >> i) != 0 {
            c
        } else {
            '-'
        }
    });
    std::iter::once(letter).chain(bits).collect()
}

/// A listed entry's path as shown: absolute, as backed up.
fn shown(listed: &Listed) -> String {
    show_path(&listed.path)
}

/// One JSON object per entry: path, type, size, mode, uid, gid, mtime,
/// and a symlink's target.
pub fn to_json(listed: &[Listed]) -> serde_json::Value {
    let rows = listed.iter().map(|l| {
        let mut row = serde_json::json!({
            "path": shown(l),
            "type": kind_name(&l.entry.kind),
            "size": size_of(&l.entry.kind),
            "mode": format!("{:04o}", l.entry.mode),
            "uid": l.entry.uid,
            "gid": l.entry.gid,
            "mtime": format_rfc3339(l.entry.mtime_ns.div_euclid(1_000_000)),
        });
        if let EntryKind::Symlink { target } = &l.entry.kind {
            row["target"] = printable(target).into();
        }
        row
    });
    serde_json::Value::Array(rows.collect())
}

/// The lines `ferry ls` prints: a path each, or with `long` mode, owner,
/// size, modification time and path (and a symlink's target).
pub fn lines(listed: &[Listed], long: bool) -> Vec<String> {
    listed
        .iter()
        .map(|l| {
            if !long {
                return shown(l);
            }
            let link = match &l.entry.kind {
                EntryKind::Symlink { target } => format!(" -> {}", printable(target)),
                _ => String::new(),
            };
            format!(
                "{} {:>5} {:>5} {:>10} {} {}{link}",
                mode_string(&l.entry),
                l.entry.uid,
                l.entry.gid,
                format_size(size_of(&l.entry.kind)),
                format_rfc3339(l.entry.mtime_ns.div_euclid(1_000_000)),
                shown(l)
            )
        })
        .collect()
}
