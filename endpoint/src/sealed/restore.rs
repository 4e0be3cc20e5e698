//! A sealed restore: the root checked against what this endpoint has seen,
//! the trees opened level by level, each file's content, chunks and
//! patches fetched in pipelined batches and opened here. Patch chains are
//! resolved on the endpoint and every rebuilt chunk checked against its
//! keyed id before it is written. Files are written to a temporary name
//! beside their own, take their metadata, and are renamed over it;
//! symlinks follow, directory metadata last, deepest first.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};
use ferry_protocol::message::StorageId;
use ferry_protocol::sealed::{Header, SealedKind, SealingKeys};
use ferry_protocol::sealed_objects::{
    decode_chunk, ChunkEntry, Patch, SealedContent, MAX_CHAIN, MAX_CONTENT_LEVELS,
};
use ferry_protocol::tree::{Entry, EntryKind, Tree};

use super::remote::{short, Remote};
use crate::client::RelayClient;
use crate::restore::{Place, Request, Selection, Summary};
use crate::snapshot::{resolve, show_path};
use crate::state::StateDir;
use crate::target::Target;

/// Chunks fetched and written together.
const WINDOW: usize = 64;

/// An entry of the snapshot: its path there, and where it goes.
struct Placed {
    from: Vec<Vec<u8>>,
    at: Vec<Vec<u8>>,
    entry: Entry,
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
    let info = resolve(client, request.set.as_deref(), request.snapshot).await?;
    let mut remote = Remote::new(client);
    super::roots::newest(state, &mut remote, keys, &info.set).await?;
    let root_id = StorageId(info.root.0);
    let roots = super::roots::open_roots(&mut remote, keys, &[root_id]).await?;
    let root = roots
        .get(&root_id)
        .context("the relay did not serve the root")?;
    if root.set != info.set {
        bail!(
            "the relay served a root of set {:?} as snapshot {} of set {:?}",
            root.set,
            info.id,
            info.set
        );
    }
    let target = Target::open(&request.map_to, request.preserve_privileges)
        .with_context(|| format!("cannot open the target {}", request.map_to.display()))?;
    let selection = Selection::of(request);
    let placed = walk(&mut remote, keys, &selection, StorageId(root.tree)).await?;
    if placed.is_empty() {
        bail!(
            "snapshot {} holds nothing under the paths asked for",
            info.id
        );
    }
    let mut summary = Summary::default();
    summary.totals.snapshot = info.id;
    write_all(&mut remote, keys, &target, placed, &mut summary).await?;
    let client = remote.into_client();
    summary.totals.bytes_sent = client.bytes_sent();
    summary.totals.bytes_received = client.bytes_received();
    summary.totals.round_trips = client.round_trips();
    summary.totals.duration_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Opens the trees breadth first, a level per batch of fetches; returns the
/// selected entries in snapshot order (parents before children).
async fn walk(
    remote: &mut Remote<'_>,
    keys: &SealingKeys,
    selection: &Selection,
    root: StorageId,
) -> Result<Vec<Placed>> {
    let mut placed = Vec::new();
    let mut level: Vec<(Vec<Vec<u8>>, StorageId)> = vec![(Vec::new(), root)];
    let mut depth = 0;
    while !level.is_empty() {
        depth += 1;
        if depth > crate::fetcher::MAX_DEPTH {
            bail!(
                "the snapshot's directories nest deeper than {}",
                crate::fetcher::MAX_DEPTH
            );
        }
        let ids: Vec<StorageId> = level.iter().map(|(_, id)| *id).collect();
        let trees = remote.open_all(keys, SealedKind::Tree, &ids).await?;
        let mut next = Vec::new();
        for (path, id) in level {
            let (header, plain) = &trees[&id];
            let tree = Tree::decode_opened(plain)
                .map_err(|e| anyhow::anyhow!("sealed tree {} does not decode: {e}", short(&id)))?;
            check_tree_refs(&tree, header, &id)?;
            for entry in tree.entries {
                let mut from = path.clone();
                from.push(entry.name.clone());
                let place = selection.place(&from);
                if let EntryKind::Dir { tree } = &entry.kind {
                    if !matches!(place, Place::Skip) {
                        next.push((from.clone(), StorageId(tree.0)));
                    }
                }
                if let Place::At(at) = place {
                    placed.push(Placed { from, at, entry });
                }
            }
        }
        level = next;
    }
    Ok(placed)
}

/// A tree's header must name exactly what its entries name.
fn check_tree_refs(tree: &Tree, header: &Header, id: &StorageId) -> Result<()> {
    let mut named: Vec<StorageId> = tree
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::File { content, .. } => Some(StorageId(content.0)),
            EntryKind::Dir { tree } => Some(StorageId(tree.0)),
            _ => None,
        })
        .collect();
    named.sort_unstable();
    named.dedup();
    if named != header.refs {
        bail!(
            "sealed tree {} names other objects in its header than in its entries",
            short(id)
        );
    }
    Ok(())
}

/// Creates every placed entry under the target.
async fn write_all(
    remote: &mut Remote<'_>,
    keys: &SealingKeys,
    target: &Target,
    placed: Vec<Placed>,
    summary: &mut Summary,
) -> Result<()> {
    let mut restored: HashMap<Vec<Vec<u8>>, Vec<Vec<u8>>> = HashMap::new();
    let mut dirs = Vec::new();
    let mut symlinks = Vec::new();
    for item in placed {
        let result = match &item.entry.kind {
            EntryKind::Dir { .. } => target.dir(&item.at).map(|_| ()).map_err(Into::into),
            EntryKind::File {
                size,
                content,
                sparse,
            } => {
                let content = StorageId(content.0);
                let sparse = sparse.clone();
                write_file(
                    remote,
                    keys,
                    target,
                    &item,
                    content,
                    *size,
                    sparse.as_deref(),
                )
                .await
            }
            EntryKind::Symlink { target: link } => {
                symlinks.push((item.at.clone(), item.entry.clone(), link.clone()));
                Ok(())
            }
            EntryKind::Hardlink { target: first } => hardlink(target, &restored, &item, first),
            EntryKind::Fifo | EntryKind::Device { .. } => special(target, &item),
        };
        match result {
            Ok(()) => {
                summary.totals.files_new +=
                    u64::from(matches!(item.entry.kind, EntryKind::File { .. }));
                if let EntryKind::Dir { .. } = item.entry.kind {
                    dirs.push((item.at.clone(), item.entry.clone()));
                }
                restored.insert(item.from, item.at);
            }
            Err(e) => {
                summary.errors += 1;
                summary
                    .messages
                    .push(format!("{}: {e:#}", show_path(&item.at)));
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
            summary.errors += 1;
            summary.messages.push(format!("{}: {e}", show_path(&at)));
        }
    }
    dirs.sort_by_key(|(at, _)| std::cmp::Reverse(at.len()));
    for (at, entry) in dirs {
        if let Err(e) = target
            .dir(&at)
            .and_then(|fd| target.apply_to_fd(&fd, &entry))
        {
            summary.errors += 1;
            summary.messages.push(format!("{}: {e}", show_path(&at)));
        }
    }
    Ok(())
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

/// Writes one file: its chunks fetched a window at a time, rebuilt and
/// checked, written at their place (a sparse file's data regions at their
/// offsets), then the file renamed over its name.
async fn write_file(
    remote: &mut Remote<'_>,
    keys: &SealingKeys,
    target: &Target,
    item: &Placed,
    content: StorageId,
    size: u64,
    sparse: Option<&[ferry_protocol::tree::Extent]>,
) -> Result<()> {
    let entries = content_entries(remote, keys, content).await?;
    let total: u64 = entries.iter().map(|e| u64::from(e.len)).sum();
    let (name, parent) = item.at.split_last().context("a file has a name")?;
    let dir = target.dir(parent)?;
    let (file, tmp) = Target::temp_file(&dir, name)?;
    let written = async {
        let mut offset = 0u64;
        for window in entries.chunks(WINDOW) {
            let chunks = rebuild(remote, keys, window).await?;
            for data in chunks {
                write_logical(&file, offset, &data, sparse)?;
                offset += data.len() as u64;
            }
        }
        if offset != total {
            bail!("its chunks add up to {offset} bytes, not {total}");
        }
        file.set_len(size)?;
        target.apply_to_fd(&file, &item.entry)?;
        anyhow::Ok(())
    }
    .await;
    match written {
        Ok(()) => Ok(Target::commit_temp(&dir, &tmp, name)?),
        Err(e) => {
            Target::remove_temp(&dir, &tmp);
            Err(e)
        }
    }
}

/// Writes `data`, at `offset` of the file's data regions concatenated, to
/// where those bytes lie in the file.
fn write_logical(
    file: &File,
    offset: u64,
    data: &[u8],
    sparse: Option<&[ferry_protocol::tree::Extent]>,
) -> std::io::Result<()> {
    let Some(extents) = sparse else {
        return file.write_all_at(data, offset);
    };
    let (mut logical, mut rest, mut at) = (0u64, data, offset);
    for extent in extents {
        if rest.is_empty() {
            break;
        }
        let end = logical + extent.len;
        if at < end {
            let within = at - logical;
            let n = ((extent.len - within) as usize).min(rest.len());
            file.write_all_at(&rest[..n], extent.offset + within)?;
            rest = &rest[n..];
            at += n as u64;
        }
        logical = end;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(std::io::Error::other("data past the file's regions"))
    }
}

/// A file's chunk entries, through its parts (level by level) when it has
/// them; every part must hold what the content above says it does.
async fn content_entries(
    remote: &mut Remote<'_>,
    keys: &SealingKeys,
    id: StorageId,
) -> Result<Vec<ChunkEntry>> {
    let mut level: Vec<(StorageId, Option<u64>)> = vec![(id, None)];
    for _ in 0..=MAX_CONTENT_LEVELS {
        let ids: Vec<StorageId> = level.iter().map(|(id, _)| *id).collect();
        let opened = remote.open_all(keys, SealedKind::Content, &ids).await?;
        let mut entries = Vec::new();
        let mut parts = Vec::new();
        for (id, len) in &level {
            let (header, plain) = &opened[id];
            let content = SealedContent::decode(plain, &header.refs).map_err(|e| {
                anyhow::anyhow!("sealed content {} does not decode: {e}", short(id))
            })?;
            if len.is_some_and(|len| len != content.len()) {
                bail!(
                    "sealed content {} is not the part its file names",
                    short(id)
                );
            }
            entries.extend(content.chunks);
            parts.extend(content.parts.into_iter().map(|(id, len)| (id, Some(len))));
        }
        match (entries.is_empty(), parts.is_empty()) {
            (_, true) => return Ok(entries),
            (true, false) => level = parts,
            (false, false) => bail!("a sealed content mixes chunks and parts across a level"),
        }
    }
    bail!("a sealed content nests deeper than {MAX_CONTENT_LEVELS} levels")
}

/// The chunks of `window`, rebuilt through their patch chains (a fetch per
/// link of the longest chain) and each patch's result checked against its
/// keyed id.
async fn rebuild(
    remote: &mut Remote<'_>,
    keys: &SealingKeys,
    window: &[ChunkEntry],
) -> Result<Vec<Vec<u8>>> {
    let starts: Vec<(StorageId, SealedKind)> = window
        .iter()
        .map(|e| {
            (
                e.data,
                if e.depth == 0 {
                    SealedKind::Chunk
                } else {
                    SealedKind::Patch
                },
            )
        })
        .collect();
    let (chains, opened) = remote
        .chains(
            keys,
            &starts,
            usize::from(MAX_CHAIN),
            |header, plain, kind| {
                if kind == SealedKind::Chunk {
                    return Ok(None);
                }
                let patch = Patch::decode(plain, &header.refs)?;
                let below = if patch.depth == 1 {
                    SealedKind::Chunk
                } else {
                    SealedKind::Patch
                };
                Ok(Some((patch.base, below)))
            },
        )
        .await?;
    let mut out = Vec::with_capacity(window.len());
    for (entry, chain) in window.iter().zip(&chains) {
        let bottom = chain.last().expect("not empty");
        let mut data = decode_chunk(&opened[bottom].1)
            .map_err(|e| anyhow::anyhow!("sealed chunk {}: {e}", short(bottom)))?;
        for id in chain.iter().rev().skip(1) {
            let (header, plain) = &opened[id];
            let patch = Patch::decode(plain, &header.refs)
                .map_err(|e| anyhow::anyhow!("sealed patch {}: {e}", short(id)))?;
            data = ferry_protocol::delta::rebuild(&data, &patch.delta)
                .map_err(|e| anyhow::anyhow!("sealed patch {}: {e}", short(id)))?;
            if keys.keyed_id(&data) != patch.keyed {
                bail!("sealed patch {} does not rebuild its chunk", short(id));
            }
        }
        // A whole chunk is authentic by its seal; a patch's result was
        // checked by its keyed id above.
        if data.len() != entry.len as usize {
            bail!(
                "sealed chunk {} is not the chunk its file names",
                short(&entry.data)
            );
        }
        out.push(data);
    }
    Ok(out)
}
