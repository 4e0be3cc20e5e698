//! `ferry backup --dry-run`: what a backup would read (files new or
//! changed since the set's last backup, as the files cache tells) and what
//! it leaves out and by which rule, from a walk that reads metadata only.
//! Nothing is sent; the relay is not asked.

use std::ops::ControlFlow;
use std::os::unix::ffi::OsStrExt;

use anyhow::Result;
use ferry_protocol::units::format_size;
use serde::Serialize;

use super::estimate::{walk, Seen};
use super::files::unchanged;
use super::{Job, Source};
use crate::cache::FilesCache;
use crate::state::StateDir;

/// A file the backup would read.
#[derive(Debug, Serialize)]
pub struct ToRead {
    /// Its path.
    pub path: String,
    /// Its size.
    pub size: u64,
    /// `new` (not in the set's last backup) or `changed`.
    pub why: &'static str,
}

/// A path left out.
#[derive(Debug, Serialize)]
pub struct LeftOut {
    /// Its path.
    pub path: String,
    /// The rule that leaves it out.
    pub rule: String,
}

/// What a backup would do.
#[derive(Debug, Default, Serialize)]
pub struct Preview {
    /// The set.
    pub set: String,
    /// Files it would read.
    pub read: Vec<ToRead>,
    /// Files unchanged since the set's last backup (not read).
    pub unchanged: u64,
    /// Paths left out.
    pub excluded: Vec<LeftOut>,
    /// Paths of the set that do not exist.
    pub paths_missing: Vec<String>,
    /// A command whose output would be backed up instead of files.
    pub command: Option<String>,
}

/// Walks `job`'s paths as its backup would.
///
/// # Errors
/// No path of the job exists; the files cache cannot be read.
pub fn preview(state: &StateDir, job: &Job) -> Result<Preview> {
    let (job, paths_missing) = super::without_missing_paths(job)?;
    let mut preview = Preview {
        set: job.set.clone(),
        paths_missing,
        ..Preview::default()
    };
    let paths = match &job.source {
        Source::Paths(paths) => paths
            .iter()
            .map(|p| super::absolute(p))
            .collect::<Result<Vec<_>>>()?,
        Source::Command { command, name } => {
            preview.command = Some(format!("{command} (stored as {name})"));
            return Ok(preview);
        }
    };
    let mut known = FilesCache::open(&state.cache_path())?.load(&job.set)?;
    walk(&paths, &job.excludes, |seen| {
        match seen {
            Seen::Left(path, why) => preview.excluded.push(LeftOut {
                path: path.display().to_string(),
                rule: why.to_string(),
            }),
            Seen::Taken(path, meta) if meta.is_file() => {
                let cached = known.files.remove(path.as_os_str().as_bytes());
                match cached {
                    Some((cached, _)) if unchanged(&cached, meta) => preview.unchanged += 1,
                    cached => preview.read.push(ToRead {
                        path: path.display().to_string(),
                        size: meta.len(),
                        why: if cached.is_some() { "changed" } else { "new" },
                    }),
                }
            }
            Seen::Taken(..) => {}
        }
        ControlFlow::Continue(())
    });
    Ok(preview)
}

/// Prints `preview`: a line per file read (`new`, `changed`) and per path
/// left out (with its rule), then one summary line; or one JSON object.
///
/// # Errors
/// JSON encoding.
pub fn print(preview: &Preview, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(preview)?);
        return Ok(());
    }
    if let Some(command) = &preview.command {
        println!("would back up the output of {command} (dry run: nothing was run or sent)");
        return Ok(());
    }
    for file in &preview.read {
        println!(
            "{:<8} {:>10}  {}",
            file.why,
            format_size(file.size),
            file.path
        );
    }
    for left in &preview.excluded {
        println!("excluded {}  ({})", left.path, left.rule);
    }
    let bytes: u64 = preview.read.iter().map(|f| f.size).sum();
    println!(
        "set {:?}: would read {} files ({}), {} unchanged; {} paths excluded (dry run: nothing was sent)",
        preview.set,
        preview.read.len(),
        format_size(bytes),
        preview.unchanged,
        preview.excluded.len()
    );
    Ok(())
}
