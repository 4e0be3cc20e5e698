//! Turning endpoint.toml and the command line into a backup [`Job`], and
//! running one over a fresh session. `ferry backup` and `ferry daemon` both
//! come through here.

use std::path::PathBuf;

use anyhow::{bail, Result};
use ferry_protocol::schedule::Schedule;

use crate::backup::{self, Control, Job, Source, Summary};
use crate::cache::FilesCache;
use crate::client::RelayClient;
use crate::exclude::{ExcludeConfig, Excludes};
use crate::hooks::SnapshotScripts;
use crate::state::StateDir;

/// What the command line adds to a set's configuration (`ferry backup`'s
/// options; the daemon adds nothing).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Upload limit for this run: a rate (`2MiB/s`) or schedule; replaces
    /// endpoint.toml's `upload.limit`.
    #[arg(long, value_parser = Schedule::parse)]
    pub limit: Option<Schedule>,
    /// Chunk compression: auto (by the link's limit or measured speed),
    /// lz4, zstd or none; replaces endpoint.toml's `upload.compression`.
    #[arg(long, value_enum)]
    pub compression: Option<crate::compression::Compression>,
    /// Back up this shell command's standard output instead of files.
    #[arg(long, requires = "name", conflicts_with = "paths")]
    pub command: Option<String>,
    /// The file name the command's output is stored under.
    #[arg(long, requires = "command")]
    pub name: Option<String>,
    /// Leave out files matching this glob (repeatable; added to the set's
    /// `exclude`; a trailing `/` matches directories only).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Leave out what this file's patterns match (`.gitignore` syntax;
    /// repeatable; added to the set's `exclude-file`).
    #[arg(long)]
    pub exclude_file: Vec<PathBuf>,
    /// Leave out directories holding a file of this name (repeatable).
    #[arg(long)]
    pub exclude_if_present: Vec<String>,
    /// Back up directories tagged as caches (`CACHEDIR.TAG`) too.
    #[arg(long)]
    pub keep_caches: bool,
    /// Stay on each path's filesystem (leave out mount points below it).
    #[arg(long)]
    pub one_file_system: bool,
    /// Files and directories to back up (default: the set's `paths` in
    /// endpoint.toml).
    pub paths: Vec<PathBuf>,
}

/// Resolves the job for `set`.
///
/// # Errors
/// When there is nothing to back up, or the configuration is invalid.
pub fn plan(state: &StateDir, set: &str, overrides: Overrides) -> Result<Job> {
    let config = state.config()?;
    let set_config = config.sets.get(set).cloned().unwrap_or_default();
    let retention = set_config.retention();
    let command = overrides.command.or(set_config.command);
    let name = overrides.name.or(set_config.name);
    let source = match (command, name) {
        (Some(command), Some(name)) if overrides.paths.is_empty() => Source::Command { command, name },
        _ if !overrides.paths.is_empty() => Source::Paths(overrides.paths),
        _ if !set_config.paths.is_empty() => Source::Paths(set_config.paths),
        _ => bail!(
            "nothing to back up: name paths, or give set {set:?} `paths` (or `command` and `name`) in {}/endpoint.toml",
            state.root().display()
        ),
    };
    let mut excludes = ExcludeConfig {
        patterns: set_config.exclude,
        files: set_config.exclude_file,
        caches: set_config.exclude_caches.unwrap_or(true) && !overrides.keep_caches,
        if_present: set_config.exclude_if_present,
        one_file_system: set_config.one_file_system || overrides.one_file_system,
    };
    excludes.patterns.extend(overrides.exclude);
    excludes.files.extend(overrides.exclude_file);
    excludes.if_present.extend(overrides.exclude_if_present);
    let hooks = if set_config.require_snapshot {
        let cfg = config
            .snapshot_config
            .clone()
            .unwrap_or_else(|| state.root().join("snapshot.cfg"));
        Some(SnapshotScripts::load(&cfg)?)
    } else {
        None
    };
    let limit = match overrides.limit {
        Some(limit) => limit,
        None => config
            .upload
            .limit
            .schedule()
            .map_err(|e| anyhow::anyhow!("endpoint.toml: upload.limit: {e}"))?,
    };
    Ok(Job {
        set: set.to_string(),
        source,
        excludes: Excludes::from_config(&excludes)?,
        hooks,
        limit,
        retention,
        compression: overrides.compression.unwrap_or(config.upload.compression),
    })
}

pub use crate::client::open_client;

/// Runs `job` over a new session. A path of the job that does not exist
/// (a USB disk not plugged in) is left out with a warning and named in the
/// summary's `paths_missing` (exit 3, as restic does): the rest is backed
/// up. Only a job none of whose paths exist fails.
///
/// # Errors
/// When no path exists, the relay cannot be reached, or the backup fails.
pub async fn run(state: &StateDir, job: &Job, control: &Control) -> Result<Summary> {
    let (job, missing) = crate::backup::without_missing_paths(job)?;
    let mut summary = run_present(state, &job, control).await?;
    summary.paths_missing = missing;
    Ok(summary)
}

async fn run_present(state: &StateDir, job: &Job, control: &Control) -> Result<Summary> {
    let mut cache = FilesCache::open(&state.cache_path())?;
    let mut client = open_client(state).await?;
    client.limit_uploads(job.limit.clone());
    if state.relay()?.is_some_and(|r| r.sealed) {
        let summary = run_sealed(state, &mut client, &mut cache, job, control).await?;
        client.close().await;
        return Ok(summary);
    }
    let summary = match backup::run(&mut client, &mut cache, job, control).await {
        Err(e) if e.downcast_ref::<backup::StaleCache>().is_some() => {
            // Once, on the same session: every file is read and whatever
            // the relay lacks (or holds damaged) is sent again.
            tracing::warn!("{e}; backing up again, reading every file");
            eprintln!("ferry: {e}; backing up again, reading every file");
            backup::run(&mut client, &mut cache, job, control).await?
        }
        other => other?,
    };
    client.close().await;
    Ok(summary)
}

/// A sealed client's backup, run again once reading every file when the
/// relay no longer holds what the files cache names.
async fn run_sealed(
    state: &StateDir,
    client: &mut RelayClient,
    cache: &mut FilesCache,
    job: &Job,
    control: &Control,
) -> Result<Summary> {
    use crate::sealed;
    let keys = sealed::keys(state, client, sealed::KeyUse::Backup).await?;
    match sealed::backup::run(state, client, cache, &keys, job, control).await {
        Err(e) if e.downcast_ref::<backup::StaleCache>().is_some() => {
            tracing::warn!("{e}; backing up again, reading every file");
            eprintln!("ferry: {e}; backing up again, reading every file");
            sealed::backup::run(state, client, cache, &keys, job, control).await
        }
        other => other,
    }
}
