//! A sealed restore: the root checked against what this endpoint has seen,
//! the trees opened level by level, each file's content, chunks and
//! patches fetched in pipelined batches and opened here. Patch chains are
//! resolved on the endpoint and every rebuilt chunk checked against its
//! keyed id before it is written. Files are written to a temporary name
//! beside their own, take their metadata, and are renamed over it;
//! symlinks follow, directory metadata last, deepest first.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use anyhow::{bail, Context, Result};
use ferry_protocol::compress::{Method, ZSTD_LEVEL};
use ferry_protocol::message::{SnapshotInfo, StorageId};
use ferry_protocol::sealed::{SealedKind, SealingKeys};
use ferry_protocol::sealed_dictionary::Dictionary;
use ferry_protocol::sealed_objects::{
    data_len, decode_chunk, decode_sealed_tree, names_its_chunk, ChunkEntry, Patch, SealedTree,
    MAX_CHAIN,
};
use ferry_protocol::tree::{Entry, EntryKind};

use super::files;
use super::local::Held;
use super::remote::{short, Kinds, Remote};
use super::roots::OpenedRoot;
use crate::client::RelayClient;
use crate::overwrite::Overwrite;
use crate::restore::{holds_nothing, open_target, Place, Request, Selection, Selector, Summary};
use crate::snapshot::{choose, show_path};
use crate::state::StateDir;
use crate::target::Target;

/// An entry of the snapshot: its path there, and where it goes.
pub(crate) struct Placed {
    /// Its path in the snapshot.
    pub(crate) from: Vec<Vec<u8>>,
    at: Vec<Vec<u8>>,
    /// The entry.
    pub(crate) entry: Entry,
    /// Its tree names a small file's chunk rather than a content.
    names_chunk: bool,
}

/// Runs a sealed restore.
///
/// # Errors
/// Session failures, a root or object the relay altered, swapped or rolled
/// back, an unusable target. Entries that fail to be written are counted.
pub async fn run(
    state: &StateDir,
    client: &mut RelayClient,
    keys: &SealingKeys,
    request: &Request,
) -> Result<Summary> {
    let started = std::time::Instant::now();
    let mut remote = Remote::new(client);
    // Into an empty target every file's content is needed; onto files it
    // holds, few are (those unchanged are skipped before their contents).
    let contents = holds_nothing(&request.map_to);
    let (info, root) = open_snapshot(
        state,
        &mut remote,
        keys,
        (request.set.as_deref(), request.snapshot),
        contents,
    )
    .await?;
    let (root, dictionary) = (&root.root, root.dictionary);
    let (target, selection) = open_target(request)?;
    let placed = walk(
        &mut remote,
        keys,
        &selection,
        (StorageId(root.tree), usize::MAX),
        contents,
    )
    .await?;
    if placed.is_empty() {
        return Err(crate::restore::HoldsNothing::of(info.id, request).into());
    }
    let mut summary = Summary::default();
    summary.totals.snapshot = info.id;
    let placed = if contents {
        placed
    } else {
        keep_local(&target, placed, request.overwrite, &mut summary)?
    };
    let opening = Opening::new(state, &mut remote, keys, dictionary).await?;
    write_all(&mut remote, &opening, &target, placed, &mut summary).await?;
    let client = remote.into_client();
    summary.totals.bytes_sent = client.bytes_sent();
    summary.totals.bytes_received = client.bytes_received();
    summary.totals.round_trips = client.round_trips();
    summary.totals.duration_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// What opens and unpacks a snapshot's file data: the vault's keys and
/// the dictionary its root names.
pub(super) struct Opening<'k> {
    /// The vault's keys.
    pub(super) keys: &'k SealingKeys,
    /// The dictionary the snapshot's chunks may be packed with, prepared
    /// as a backup on a fast link packs (to tell what the target holds).
    pub(super) dictionary: Option<Dictionary>,
}

impl<'k> Opening<'k> {
    /// The keys, with the dictionary `id` (this endpoint's copy when it
    /// is that one, else fetched and checked).
    async fn new(
        state: &StateDir,
        remote: &mut Remote<'_>,
        keys: &'k SealingKeys,
        id: Option<StorageId>,
    ) -> Result<Self> {
        let dictionary = match id {
            Some(id) => {
                let bytes = super::dictionary::for_restore(state, remote, keys, id).await?;
                Some(Dictionary::new(&bytes, Method::Zstd(ZSTD_LEVEL))?)
            }
            None => None,
        };
        Ok(Opening { keys, dictionary })
    }
}

/// Bytes of trees asked for ahead below the ancestors of what is restored.
const THROUGH_ROOM: u32 = 256 * 1024;

/// Picks the snapshot `which` names (a set, if any, and a selector) and
/// opens its root, checked against rollback, forks and a swapped set; with
/// it, what lies below the root seen last is asked for (usually the one
/// wanted: then the root and the first levels below it cost no round trip
/// of their own), with the files' contents if `contents`.
///
/// # Errors
/// Session failures, no such snapshot, a root the relay altered, swapped
/// or rolled back.
pub(crate) async fn open_snapshot(
    state: &StateDir,
    remote: &mut Remote<'_>,
    keys: &SealingKeys,
    which: (Option<&str>, Selector),
    contents: bool,
) -> Result<(SnapshotInfo, OpenedRoot)> {
    let (set, selector) = which;
    let guess = super::roots::last_seen(state, set)?;
    let listed = remote
        .list_guessing(set, guess, (THROUGH_ROOM, contents))
        .await?;
    let info = choose(listed.clone(), set, selector)?;
    let root_id = StorageId(info.root.0);
    remote
        .ahead_below(&[root_id], THROUGH_ROOM, contents)
        .await?;
    super::roots::newest(state, remote, keys, &info.set, listed).await?;
    let mut roots = super::roots::open_roots(remote, keys, &[root_id]).await?;
    let root = roots
        .remove(&root_id)
        .context("the relay did not serve the root")?;
    if root.root.set != info.set {
        bail!(
            "the relay served a root of set {:?} as snapshot {} of set {:?}",
            root.root.set,
            info.id,
            info.set
        );
    }
    Ok((info, root))
}

/// Opens the trees breadth first from `root` (what the relay sent ahead
/// below them, with the files' contents if `contents`, or a level per
/// batch of fetches), not below `depth` components; returns the selected
/// entries in snapshot order (parents before children).
pub(crate) async fn walk(
    remote: &mut Remote<'_>,
    keys: &SealingKeys,
    selection: &Selection,
    (root, depth_limit): (StorageId, usize),
    contents: bool,
) -> Result<Vec<Placed>> {
    let mut placed = Vec::new();
    let whole = matches!(selection.place(&[]), Place::At(_));
    let mut level: Vec<(Vec<Vec<u8>>, StorageId, bool)> = vec![(Vec::new(), root, whole)];
    let mut depth = 0;
    while !level.is_empty() {
        depth += 1;
        // A directory of parts takes two levels.
        if depth > 2 * crate::fetcher::MAX_DEPTH {
            bail!(
                "the snapshot's directories nest deeper than {}",
                crate::fetcher::MAX_DEPTH
            );
        }
        let ids: Vec<StorageId> = level.iter().map(|(_, id, _)| *id).collect();
        // Below a directory restored whole, the relay sends what lies
        // below it too, a message's worth: deeper levels and the files'
        // contents then cost no round trip of their own. Below the
        // ancestors of what is restored, a little (their chain down to it,
        // usually; not a sibling's whole history).
        let (wholes, through): (Vec<_>, Vec<_>) = level.iter().partition(|(_, _, w)| *w);
        let ids_of = |l: Vec<&(Vec<Vec<u8>>, StorageId, bool)>| -> Vec<StorageId> {
            l.into_iter().map(|(_, id, _)| *id).collect()
        };
        remote
            .ahead_below(&ids_of(wholes), u32::MAX, contents)
            .await?;
        remote
            .ahead_below(&ids_of(through), THROUGH_ROOM, contents)
            .await?;
        let trees = remote.open_all(keys, SealedKind::Tree, &ids).await?;
        let mut next = Vec::new();
        for (path, id, whole) in level {
            let (header, plain) = &trees[&id];
            let tree = decode_sealed_tree(plain, &header.refs)
                .map_err(|e| anyhow::anyhow!("sealed tree {} does not decode: {e}", short(&id)))?;
            let (tree, names_chunk) = match tree {
                SealedTree::Entries(tree, names_chunk) => (tree, names_chunk),
                SealedTree::Parts(parts) => {
                    // The parts are read at the next level, as the
                    // directory's entries there.
                    next.extend(parts.into_iter().map(|part| (path.clone(), part, whole)));
                    continue;
                }
            };
            for entry in tree.entries {
                let mut from = path.clone();
                from.push(entry.name.clone());
                let place = selection.place_entry(&from, &entry);
                if let EntryKind::Dir { tree } = &entry.kind {
                    if !matches!(place, Place::Skip) && from.len() < depth_limit {
                        let whole = matches!(place, Place::At(_));
                        next.push((from.clone(), StorageId(tree.0), whole));
                    }
                }
                if let Place::At(at) = place {
                    placed.push(Placed {
                        from,
                        at,
                        entry,
                        names_chunk,
                    });
                }
            }
        }
        level = next;
    }
    Ok(placed)
}

/// Creates every placed entry under the target: directories as they come,
/// then the files (streamed, see `files`), FIFOs and devices, hard links to
/// files restored, symlinks, and directory metadata last, deepest first.
async fn write_all(
    remote: &mut Remote<'_>,
    opening: &Opening<'_>,
    target: &Target,
    placed: Vec<Placed>,
    summary: &mut Summary,
) -> Result<()> {
    let (mut dirs, mut files, mut links, mut others) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for item in placed {
        match &item.entry.kind {
            EntryKind::Dir { .. } => match target.dir(&item.at) {
                Ok(_) => dirs.push(item),
                Err(e) => fail(summary, &item.at, &e),
            },
            EntryKind::File {
                content,
                size,
                sparse,
            } => {
                let id = StorageId(content.0);
                let data = data_len(*size, sparse.as_deref());
                let data = match u32::try_from(data) {
                    Ok(len) if item.names_chunk && names_its_chunk(data) => {
                        files::FileData::Chunk(ChunkEntry {
                            data: id,
                            len,
                            depth: files::ANY_DEPTH,
                        })
                    }
                    _ => files::FileData::Content(id),
                };
                files.push((
                    item.from.clone(),
                    files::FileJob {
                        at: item.at,
                        entry: item.entry,
                        data,
                    },
                ));
            }
            EntryKind::Hardlink { .. } => links.push(item),
            _ => others.push(item),
        }
    }
    let (froms, jobs): (Vec<Vec<Vec<u8>>>, Vec<files::FileJob>) = files.into_iter().unzip();
    let written = files::write(remote, opening, target, &jobs).await?;
    let failed_jobs: std::collections::HashSet<usize> =
        written.failed.iter().map(|(i, _)| *i).collect();
    for (i, why) in &written.failed {
        fail(summary, &jobs[*i].at, why);
    }
    summary.totals.files_unchanged += written.unchanged;
    summary.totals.files_changed += written.replaced;
    summary.totals.files_new +=
        (jobs.len() - failed_jobs.len()) as u64 - written.unchanged - written.replaced;
    let restored: HashMap<Vec<Vec<u8>>, Vec<Vec<u8>>> = froms
        .into_iter()
        .zip(&jobs)
        .enumerate()
        .filter(|(i, _)| !failed_jobs.contains(i))
        .map(|(_, (from, job))| (from, job.at.clone()))
        .collect();
    for item in links {
        if let EntryKind::Hardlink { target: first } = &item.entry.kind {
            if let Err(e) = hardlink(target, &restored, &item, first) {
                fail(summary, &item.at, &e);
            }
        }
    }
    let mut symlinks = Vec::new();
    for item in others {
        match &item.entry.kind {
            EntryKind::Symlink { target: link } => {
                symlinks.push((item.at.clone(), item.entry.clone(), link.clone()))
            }
            _ => {
                if let Err(e) = special(target, &item) {
                    fail(summary, &item.at, &e);
                }
            }
        }
    }
    for (at, entry, link) in symlinks {
        let (name, parent) = at.split_last().expect("a symlink has a name");
        let made = target.dir(parent).and_then(|dir| {
            Target::symlink(&dir, name, &link)?;
            target.apply_at(&dir, name, &entry, true)
        });
        if let Err(e) = made {
            fail(summary, &at, &e);
        }
    }
    dirs.sort_by_key(|item| std::cmp::Reverse(item.at.len()));
    for item in dirs {
        if let Err(e) = target
            .dir(&item.at)
            .and_then(|fd| target.apply_to_fd(&fd, &item.entry))
        {
            fail(summary, &item.at, &e);
        }
    }
    Ok(())
}

/// `placed` without the local files and symlinks `overwrite` keeps, each
/// counted and named in `summary`.
///
/// # Errors
/// I/O errors looking at the target.
fn keep_local(
    target: &Target,
    placed: Vec<Placed>,
    overwrite: Overwrite,
    summary: &mut Summary,
) -> Result<Vec<Placed>> {
    let mut last: Option<(Vec<Vec<u8>>, OwnedFd)> = None;
    let mut left = Vec::with_capacity(placed.len());
    for item in placed {
        let Some((name, parent)) = item.at.split_last() else {
            left.push(item);
            continue;
        };
        if !matches!(
            item.entry.kind,
            EntryKind::File { .. } | EntryKind::Symlink { .. }
        ) {
            left.push(item);
            continue;
        }
        if last
            .as_ref()
            .is_none_or(|(path, _)| path.as_slice() != parent)
        {
            last = target.dir(parent).ok().map(|fd| (parent.to_vec(), fd));
        }
        let kept = match &last {
            Some((_, dir)) => overwrite.keeps(dir, name, &item.entry)?,
            None => false,
        };
        if kept {
            summary.kept.add(show_path(&item.from));
        } else {
            left.push(item);
        }
    }
    Ok(left)
}

/// Counts and names an entry that could not be restored.
fn fail(summary: &mut Summary, at: &[Vec<u8>], e: &dyn std::fmt::Display) {
    summary.errors += 1;
    summary.messages.push(format!("{}: {e}", show_path(at)));
}

fn hardlink(
    target: &Target,
    restored: &HashMap<Vec<Vec<u8>>, Vec<Vec<u8>>>,
    item: &Placed,
    first: &[u8],
) -> Result<()> {
    let first: Vec<Vec<u8>> = first.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
    let Some(existing) = restored.get(&first) else {
        bail!("its other name {} is not restored", show_path(&first));
    };
    let (name, parent) = item.at.split_last().context("a hardlink has a name")?;
    let (first_name, first_parent) = existing.split_last().context("a file has a name")?;
    let from_dir = target.dir(first_parent)?;
    let dir = target.dir(parent)?;
    Target::hardlink(&from_dir, first_name, &dir, name)?;
    Ok(())
}

fn special(target: &Target, item: &Placed) -> Result<()> {
    let (kind, rdev) = match item.entry.kind {
        EntryKind::Fifo => (rustix::fs::FileType::Fifo, 0),
        EntryKind::Device { character, rdev } if target.devices() => (
            if character {
                rustix::fs::FileType::CharacterDevice
            } else {
                rustix::fs::FileType::BlockDevice
            },
            rdev,
        ),
        _ => bail!("device nodes are restored only as root"),
    };
    let (name, parent) = item.at.split_last().context("an entry has a name")?;
    let dir = target.dir(parent)?;
    Target::node(&dir, name, kind, rdev)?;
    target.apply_at(&dir, name, &item.entry, false)?;
    Ok(())
}

/// The chunks of `window`, rebuilt through their patch chains (a fetch per
/// link of the longest chain) and each patch's result checked against its
/// keyed id. What the target holds (`held`, each entry's file's older
/// version) is read, not fetched: a chunk it holds whole, or the base a
/// chain reaches.
pub(super) async fn rebuild(
    remote: &mut Remote<'_>,
    opening: &Opening<'_>,
    window: &[ChunkEntry],
    held: &[Option<&Held>],
) -> Result<Vec<Vec<u8>>> {
    let holds = |id: &StorageId| held.iter().flatten().find(|h| h.has(id)).copied();
    let local = |id: &StorageId| -> Result<Option<Vec<u8>>> {
        match holds(id) {
            Some(h) => h.chunk(opening, id),
            None => Ok(None),
        }
    };
    let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(window.len());
    let mut starts = Vec::new();
    for entry in window {
        let data = local(&entry.data)?;
        if data.is_none() {
            let kinds: Kinds = match entry.depth {
                0 => &[SealedKind::Chunk],
                files::ANY_DEPTH => &[SealedKind::Chunk, SealedKind::Patch],
                _ => &[SealedKind::Patch],
            };
            starts.push((entry.data, kinds));
        }
        out.push(data);
    }
    let (chains, opened) = remote
        .chains(
            opening.keys,
            &starts,
            usize::from(MAX_CHAIN),
            |header, plain| {
                if header.kind == SealedKind::Chunk {
                    return Ok(None);
                }
                let patch = Patch::decode(plain, &header.refs)?;
                if holds(&patch.base).is_some() {
                    return Ok(None);
                }
                let below: Kinds = if patch.depth == 1 {
                    &[SealedKind::Chunk]
                } else {
                    &[SealedKind::Patch]
                };
                Ok(Some((patch.base, below)))
            },
        )
        .await?;
    let mut chains = chains.into_iter();
    let mut rebuilt = Vec::with_capacity(window.len());
    for (entry, data) in window.iter().zip(out) {
        let data = match data {
            Some(data) => data,
            None => {
                let chain = chains.next().context("a chain per chunk")?;
                through_chain(opening, &chain, &opened, &local)?
            }
        };
        // A whole chunk is authentic by its seal (or its id, read here); a
        // patch's result was checked by its keyed id.
        if data.len() != entry.len as usize {
            bail!(
                "sealed chunk {} is not the chunk its file names",
                short(&entry.data)
            );
        }
        rebuilt.push(data);
    }
    Ok(rebuilt)
}

/// A chunk rebuilt along `chain` (its data object first): from the whole
/// chunk at its end, or from the base the target holds, up through each
/// patch.
fn through_chain(
    opening: &Opening<'_>,
    chain: &[StorageId],
    opened: &super::remote::Opened,
    local: &dyn Fn(&StorageId) -> Result<Option<Vec<u8>>>,
) -> Result<Vec<u8>> {
    let bottom = chain.last().context("an empty chain")?;
    let (header, plain) = &opened[bottom];
    let (mut data, patches) = if header.kind == SealedKind::Chunk {
        let data = decode_chunk(plain, opening.dictionary.as_ref())
            .map_err(|e| anyhow::anyhow!("sealed chunk {}: {e}", short(bottom)))?;
        (data, &chain[..chain.len() - 1])
    } else {
        let patch = Patch::decode(plain, &header.refs)?;
        let base = local(&patch.base)?.with_context(|| {
            format!(
                "the target's copy of chunk {} changed while restoring",
                short(&patch.base)
            )
        })?;
        (base, chain)
    };
    for id in patches.iter().rev() {
        let (header, plain) = &opened[id];
        let patch = Patch::decode(plain, &header.refs)
            .map_err(|e| anyhow::anyhow!("sealed patch {}: {e}", short(id)))?;
        data = ferry_protocol::delta::rebuild(&data, &patch.delta)
            .map_err(|e| anyhow::anyhow!("sealed patch {}: {e}", short(id)))?;
        if opening.keys.keyed_id(&data) != patch.keyed {
            bail!("sealed patch {} does not rebuild its chunk", short(id));
        }
    }
    Ok(data)
}
