//! A restore's safety checks, read from the snapshot's trees and the
//! target before anything is written: a path the snapshot lacks names the
//! newest snapshot of its set that holds it; `--dry-run` lists what would
//! be written, replaced, kept and (with `--delete`) removed; `--delete`
//! removes, after a whole restore, only what the snapshot lacks below the
//! directory it restored into. Open and sealed clients alike.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use ferry_protocol::message::SnapshotInfo;
use ferry_protocol::tree::EntryKind;
use ferry_protocol::units::format_rfc3339;
use serde::Serialize;

use crate::browse::Reader;
use crate::client::RelayClient;
use crate::overwrite::{local_state, Local};
use crate::restore::{components, selection_of, Place, Request, Selection, Selector};
use crate::state::StateDir;

/// What a restore would do at the target.
#[derive(Debug, Default, Serialize)]
pub struct Plan {
    /// The snapshot.
    pub snapshot: u64,
    /// Paths that do not exist yet.
    pub write: Vec<String>,
    /// Paths whose local version the snapshot's replaces.
    pub replace: Vec<String>,
    /// Local files and symlinks the overwrite policy keeps.
    pub keep: Vec<String>,
    /// Local paths the snapshot lacks (listed with `--delete` only).
    pub remove: Vec<String>,
    /// Entries already as the snapshot has them.
    pub unchanged: u64,
}

/// Each path the request names (`--map-from`, the paths) is in the
/// snapshot; else one line naming the newest snapshot of the set that
/// holds it.
///
/// # Errors
/// A path the snapshot lacks; session failures.
pub async fn check_paths(
    state: &StateDir,
    client: &mut RelayClient,
    reader: &Reader,
    request: &Request,
) -> Result<()> {
    let which = (request.set.as_deref(), request.snapshot);
    for path in request.map_from.iter().chain(&request.paths) {
        let (info, held) = holds(state, client, reader, which, path).await?;
        if held {
            continue;
        }
        let newest = newest_holding(state, client, reader, &info, path).await?;
        let set = ferry_protocol::units::printable(info.set.as_bytes());
        match newest {
            Some(other) => bail!(
                "snapshot {} holds nothing at {}; the newest snapshot of set {set:?} that does is {} ({}): restore with -b {}",
                info.id,
                path.display(),
                other.id,
                format_rfc3339(other.finished_ms),
                other.id
            ),
            None => bail!(
                "snapshot {} holds nothing at {}, nor does any other snapshot of set {set:?}",
                info.id,
                path.display()
            ),
        }
    }
    Ok(())
}

/// Whether snapshot `which` has an entry at `path`.
async fn holds(
    state: &StateDir,
    client: &mut RelayClient,
    reader: &Reader,
    which: (Option<&str>, Selector),
    path: &Path,
) -> Result<(SnapshotInfo, bool)> {
    let wanted = components(path);
    let selection = Selection::under(Some(wanted.clone()));
    let (info, found) = reader
        .entries(state, client, which, &selection, wanted.len())
        .await?;
    let held = wanted.is_empty() || found.iter().any(|l| l.path == wanted);
    Ok((info, held))
}

/// The newest snapshot of `info`'s set, other than `info`, with an entry
/// at `path`.
async fn newest_holding(
    state: &StateDir,
    client: &mut RelayClient,
    reader: &Reader,
    info: &SnapshotInfo,
    path: &Path,
) -> Result<Option<SnapshotInfo>> {
    let others = crate::snapshot::list(client, Some(&info.set)).await?;
    for other in others.into_iter().rev().filter(|s| s.id != info.id) {
        let which = (Some(info.set.as_str()), Selector::Id(other.id));
        if holds(state, client, reader, which, path).await?.1 {
            return Ok(Some(other));
        }
    }
    Ok(None)
}

/// What restoring `request` would do; with `delete`, also what it would
/// remove. Writes nothing.
///
/// # Errors
/// `--delete` without a directory to keep in step; session failures.
pub async fn plan(
    state: &StateDir,
    client: &mut RelayClient,
    reader: &Reader,
    request: &Request,
    delete: bool,
) -> Result<Plan> {
    let (base, selection) = selection_of(request);
    let scopes = if delete {
        delete_scopes(request, &base)?
    } else {
        Vec::new()
    };
    let which = (request.set.as_deref(), request.snapshot);
    let (info, listed) = reader
        .entries(state, client, which, &selection, usize::MAX)
        .await?;
    let mut plan = Plan {
        snapshot: info.id,
        ..Plan::default()
    };
    let mut placed = HashSet::new();
    let mut parent: Option<(PathBuf, Option<OwnedFd>)> = None;
    for l in &listed {
        // The target directory itself is no entry of the plan.
        let Place::At(at) = selection.place_entry(&l.path, &l.entry) else {
            continue;
        };
        if at.is_empty() {
            continue;
        }
        let local = at
            .iter()
            .fold(base.clone(), |p, c| p.join(OsStr::from_bytes(c)));
        let dir = local.parent().unwrap_or(&base).to_path_buf();
        if parent.as_ref().is_none_or(|(p, _)| *p != dir) {
            parent = Some((dir.clone(), open_dir(&dir)));
        }
        let state = match parent.as_ref().and_then(|(_, fd)| fd.as_ref()) {
            Some(fd) => local_state(fd, at.last().map_or(&[][..], Vec::as_slice), &l.entry)?,
            None => Local::Absent,
        };
        let shown = local.display().to_string();
        match (state, &l.entry.kind) {
            (Local::Absent, _) => plan.write.push(shown),
            (Local::Same, _) | (Local::Dir, EntryKind::Dir { .. }) => plan.unchanged += 1,
            (local, _) if request.overwrite.keeps_state(local) => plan.keep.push(shown),
            _ => plan.replace.push(shown),
        }
        placed.insert(local);
    }
    for scope in scopes {
        extras(&scope, &placed, &mut plan.remove);
    }
    Ok(plan)
}

/// What `--delete` keeps in step with the snapshot: the target of
/// `--map-from` (the very file or directory `--map-to` names when it takes
/// a new name), or each path asked for, where it lands below the target;
/// never a whole snapshot restored onto `/` or elsewhere by default, and
/// never more than what was asked for.
fn delete_scopes(request: &Request, base: &Path) -> Result<Vec<PathBuf>> {
    let below = |p: &Path| base.join(p.strip_prefix("/").unwrap_or(p));
    match (&request.map_from, request.paths.is_empty()) {
        (Some(_), _) if selection_of(request).1.takes_new_name() => Ok(vec![request.map_to.clone()]),
        (Some(_), true) => Ok(vec![base.to_path_buf()]),
        (Some(from), false) => Ok(request
            .paths
            .iter()
            .filter_map(|p| p.strip_prefix(from).ok())
            .map(below)
            .collect()),
        (None, false) => Ok(request.paths.iter().map(|p| below(p)).collect()),
        (None, true) => bail!("--delete removes what the snapshot lacks below the directory restored into: name it with --map-from (or give the paths to restore)"),
    }
}

/// The directory `dir` opened to look up names in, if it exists.
fn open_dir(dir: &Path) -> Option<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    rustix::fs::open(dir, flags, Mode::empty()).ok()
}

/// Paths below `dir` (not following symlinks) that `placed` lacks; a
/// directory the snapshot lacks is listed, not entered.
fn extras(dir: &Path, placed: &HashSet<PathBuf>, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if !placed.contains(&path) {
            out.push(path.display().to_string());
        } else if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            extras(&path, placed, out);
        }
    }
}

/// Removes what [`Plan::remove`] lists; returns how many went. A path
/// that cannot be removed is one line on stderr and counted in the second
/// number.
pub fn remove(paths: &[String]) -> (u64, u64) {
    let (mut removed, mut failed) = (0, 0);
    for path in paths {
        let path = Path::new(path);
        let gone = match path.symlink_metadata() {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(e) => Err(e),
        };
        match gone {
            Ok(()) => removed += 1,
            Err(e) => {
                eprintln!("ferry: cannot remove {}: {e}", path.display());
                failed += 1;
            }
        }
    }
    (removed, failed)
}

/// Prints a plan: a line per path (`write`, `replace`, `keep`, `remove`)
/// and a count of each, or one JSON object.
///
/// # Errors
/// JSON encoding.
pub fn print_plan(plan: &Plan, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(plan)?);
        return Ok(());
    }
    for (word, paths) in [
        ("write", &plan.write),
        ("replace", &plan.replace),
        ("keep", &plan.keep),
        ("remove", &plan.remove),
    ] {
        for path in paths {
            println!("would {word:<7} {path}");
        }
    }
    println!(
        "snapshot {}: would write {}, replace {}, keep {}, remove {}; {} already as in the snapshot (dry run: nothing was changed)",
        plan.snapshot,
        plan.write.len(),
        plan.replace.len(),
        plan.keep.len(),
        plan.remove.len(),
        plan.unchanged
    );
    Ok(())
}
