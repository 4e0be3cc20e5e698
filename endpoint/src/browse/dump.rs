//! `ferry dump`: one file of a snapshot to standard output, or a
//! directory as a tar stream. The path is restored (open or sealed alike,
//! every byte checked as a restore checks it) into a private scratch
//! directory under `$TMPDIR`, streamed out, and removed.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ferry_protocol::tree::EntryKind;
use ferry_protocol::units::printable;

use super::Reader;
use crate::restore::{Request, Selection, Selector};
use crate::state::StateDir;

/// A directory only this process uses, removed with everything in it
/// when dropped.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A new empty directory (mode 0700) under `parent`.
    ///
    /// # Errors
    /// `parent` is not writable.
    pub fn new(parent: &Path) -> Result<Self> {
        for attempt in 0u32..100 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = parent.join(format!(
                "ferry-scratch-{}-{nanos:x}-{attempt}",
                std::process::id()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot make a scratch directory in {}", parent.display())
                    })
                }
            }
        }
        bail!("cannot make a scratch directory in {}", parent.display())
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// What to dump.
#[derive(Debug, Clone)]
pub struct DumpRequest {
    /// The set (`None`: any, for an id).
    pub set: Option<String>,
    /// Which snapshot.
    pub snapshot: Selector,
    /// The file or directory, absolute as backed up.
    pub path: PathBuf,
}

/// Writes `request`'s file, or its directory as a tar archive whose
/// entries are named below the directory's own name, to `out`.
///
/// # Errors
/// Session failures, a path the snapshot lacks or that is neither a file
/// nor a directory, what the restore could not write whole, `out` closed.
pub async fn dump(state: &StateDir, request: &DumpRequest, out: &mut dyn Write) -> Result<()> {
    let mut client = crate::jobs::open_client(state).await?;
    let reader = Reader::new(state, &mut client).await?;
    let components = crate::restore::components(&request.path);
    let which = (request.set.as_deref(), request.snapshot);
    let selection = Selection::under(Some(components.clone()));
    let (info, found) = reader
        .entries(state, &mut client, which, &selection, components.len())
        .await?;
    let Some(entry) = found.into_iter().find(|l| l.path == components) else {
        bail!(
            "snapshot {} holds nothing at {}",
            info.id,
            request.path.display()
        );
    };
    let is_file = match entry.entry.kind {
        EntryKind::File { .. } => true,
        EntryKind::Dir { .. } => false,
        _ => bail!(
            "{} is neither a file nor a directory in snapshot {}: `ferry ls --long` shows it",
            request.path.display(),
            info.id
        ),
    };
    let name = components
        .last()
        .map_or_else(|| format!("snapshot-{}", info.id), |n| printable(n));
    let scratch = Scratch::new(&std::env::temp_dir())?;
    let placed = scratch.path().join(&name);
    let restore = Request {
        set: None,
        snapshot: Selector::Id(info.id),
        map_from: Some(request.path.clone()),
        map_to: placed.clone(),
        paths: Vec::new(),
        checksum: false,
        preserve_privileges: false,
        overwrite: crate::overwrite::Overwrite::Always,
    };
    let live = crate::progress::Live::default();
    let summary = reader.restore(state, &mut client, &restore, &live).await?;
    client.close().await;
    if summary.errors > 0 {
        bail!(
            "snapshot {} could not be read whole: {}",
            info.id,
            summary.lines().join("; ")
        );
    }
    if is_file {
        let mut file = std::fs::File::open(&placed)?;
        std::io::copy(&mut file, out)?;
    } else {
        let mut archive = tar::Builder::new(out);
        archive.follow_symlinks(false);
        archive.mode(tar::HeaderMode::Complete);
        archive.append_dir_all(&name, &placed)?;
        archive.into_inner()?.flush()?;
        return Ok(());
    }
    out.flush()?;
    Ok(())
}
