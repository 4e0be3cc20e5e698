//! A sealed set's history as the relay serves it, checked against what this
//! endpoint has seen (`STATE/sealed-seen.json`): a rollback, a fork, a
//! broken chain or another set's root is refused with one line.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use ferry_protocol::message::{Message, SnapshotInfo, StorageId};
use ferry_protocol::root::{check_newest, Root, Seen};
use ferry_protocol::sealed::{SealedKind, SealingKeys};

use super::remote::Remote;
use crate::client::unexpected;
use crate::state::StateDir;

/// The newest roots seen, by set.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct SeenFile {
    sets: BTreeMap<String, (u64, String)>,
}

fn seen_path(state: &StateDir) -> std::path::PathBuf {
    state.root().join("sealed-seen.json")
}

fn read_seen(state: &StateDir) -> Result<SeenFile> {
    crate::state::read_json(&seen_path(state))
}

/// The newest root of `set` this endpoint has seen.
///
/// # Errors
/// A damaged file.
pub fn seen(state: &StateDir, set: &str) -> Result<Option<Seen>> {
    let file = read_seen(state)?;
    let Some((sequence, id)) = file.sets.get(set) else {
        return Ok(None);
    };
    let id = ferry_protocol::keys::from_hex::<32>(id).context("sealed-seen.json: a bad id")?;
    Ok(Some(Seen {
        sequence: *sequence,
        id,
    }))
}

/// The root this endpoint saw last of `set`, or of its one set for
/// `None` (with several sets seen, which is newest is the relay's to say).
///
/// # Errors
/// A damaged file.
pub fn last_seen(state: &StateDir, set: Option<&str>) -> Result<Option<StorageId>> {
    let only = match set {
        Some(set) => set.to_string(),
        None => {
            let file = read_seen(state)?;
            let mut sets = file.sets.keys();
            match (sets.next(), sets.next()) {
                (Some(only), None) => only.clone(),
                _ => return Ok(None),
            }
        }
    };
    Ok(seen(state, &only)?.map(|seen| StorageId(seen.id)))
}

/// Remembers `now` as the newest root of `set` seen.
///
/// # Errors
/// The file cannot be written.
pub fn remember(state: &StateDir, set: &str, now: Seen) -> Result<()> {
    let mut file = read_seen(state)?;
    file.sets.insert(
        set.to_string(),
        (now.sequence, ferry_protocol::keys::to_hex(&now.id)),
    );
    crate::state::write_json(&seen_path(state), &file)
}

/// Forgets the newest root seen of `set` (a set the relay's operator
/// removed); returns whether one was remembered.
///
/// # Errors
/// The file cannot be read or written.
pub fn forget(state: &StateDir, set: &str) -> Result<bool> {
    let mut file = read_seen(state)?;
    let had = file.sets.remove(set).is_some();
    if had {
        crate::state::write_json(&seen_path(state), &file)?;
    }
    Ok(had)
}

/// The relay's snapshots of `set` (all sets for `None`), oldest first.
///
/// # Errors
/// Session failures.
pub async fn list(remote: &mut Remote<'_>, set: Option<&str>) -> Result<Vec<SnapshotInfo>> {
    let request = Message::ListSnapshots {
        set: set.map(str::to_string),
    };
    match remote.client().request(&request).await? {
        Message::SnapshotList { snapshots } => Ok(snapshots),
        other => Err(unexpected("SnapshotList", &other)),
    }
}

/// Checks the newest root of `set` in `listed` (the relay's listing of
/// that set or of every set: the others are left out) against what was
/// seen; returns it (none for a set without snapshots) and remembers it as
/// seen. When it is the root seen last, nothing is fetched; else the
/// listed roots are opened and the chain from the newest down to the one
/// seen is checked.
///
/// # Errors
/// A root that does not open, a rollback, a fork, a broken chain, a root
/// of another set.
pub async fn newest(
    state: &StateDir,
    remote: &mut Remote<'_>,
    keys: &SealingKeys,
    set: &str,
    listed: Vec<SnapshotInfo>,
) -> Result<Option<Seen>> {
    let listed: Vec<SnapshotInfo> = listed.into_iter().filter(|s| s.set == set).collect();
    let seen = seen(state, set)?;
    if listed.is_empty() {
        if let Some(seen) = seen {
            anyhow::bail!(
                "the relay lists no snapshot of set {set:?}, but this endpoint has seen snapshot {} of it: a rollback (if the relay's operator removed the set, `ferry sets forget {set}` starts it again)",
                seen.sequence
            );
        }
        return Ok(None);
    }
    let last = listed.iter().max_by_key(|s| s.id).map(|s| s.root.0);
    if let Some(seen) = seen.filter(|seen| Some(seen.id) == last) {
        return Ok(Some(seen));
    }
    let ids: Vec<StorageId> = listed.iter().map(|s| StorageId(s.root.0)).collect();
    let roots: HashMap<StorageId, Root> = open_roots(remote, keys, &ids)
        .await?
        .into_iter()
        .map(|(id, opened)| (id, opened.root))
        .collect();
    let newest = roots
        .iter()
        .max_by_key(|(_, root)| root.sequence)
        .map(|(id, root)| (*id, root.clone()))
        .context("no root")?;
    // Newest first, following each root's previous link down to what was
    // seen, while the relay still keeps the roots on the way.
    let mut chain = vec![newest.clone()];
    if let Some(seen) = seen {
        while let Some((_, last)) = chain.last().filter(|(_, r)| r.sequence > seen.sequence) {
            let Some((id, root)) = last
                .previous
                .and_then(|p| roots.get_key_value(&StorageId(p)))
            else {
                break;
            };
            chain.push((*id, root.clone()));
        }
        if chain
            .last()
            .is_some_and(|(_, r)| r.sequence > seen.sequence)
        {
            // Retention forgot the roots between: only a rollback can be told.
            let now = Seen {
                sequence: newest.1.sequence,
                id: newest.0 .0,
            };
            remember(state, set, now)?;
            return Ok(Some(now));
        }
    }
    let now = check_newest(set, seen, &chain).map_err(|e| anyhow::anyhow!("{e}"))?;
    remember(state, set, now)?;
    Ok(Some(now))
}

/// A root opened: what it holds, and the dictionary its header names.
#[derive(Debug, Clone)]
pub struct OpenedRoot {
    /// The root.
    pub root: Root,
    /// The vault's dictionary its snapshot's chunks may be packed with.
    pub dictionary: Option<StorageId>,
}

/// Fetches and opens roots.
///
/// # Errors
/// A root that does not open or decode, or whose header names more than
/// its tree and a dictionary.
pub async fn open_roots(
    remote: &mut Remote<'_>,
    keys: &SealingKeys,
    ids: &[StorageId],
) -> Result<HashMap<StorageId, OpenedRoot>> {
    remote
        .open_all(keys, SealedKind::Root, ids)
        .await?
        .into_iter()
        .map(|(id, (header, plain))| {
            let bad = |e| anyhow::anyhow!("the relay served a root that does not decode: {e}");
            let root = Root::decode(&plain).map_err(bad)?;
            let dictionary = root.dictionary(&header.refs).map_err(bad)?;
            Ok((id, OpenedRoot { root, dictionary }))
        })
        .collect()
}
