//! The command line of seeing into snapshots: `ferry ls`, `find`, `diff`,
//! `dump` and `mount` (flattened into `ferry`'s commands).

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::browse::diff::DiffRequest;
use crate::browse::dump::DumpRequest;
use crate::browse::find::FindRequest;
use crate::browse::ListRequest;
use crate::restore::Selector;
use crate::snapshot::set_of;
use crate::state::StateDir;

/// `ferry ls | find | diff | dump | mount`.
#[derive(Debug, Subcommand)]
pub enum BrowseCommand {
    /// List what a snapshot holds at a path (its root without one).
    Ls {
        /// The backup set (default: `default`, or any set with -b ID).
        #[arg(long, add = crate::sets::set_name_completer())]
        set: Option<String>,
        /// Snapshot id, or `last`.
        #[arg(short = 'b', long = "backup", default_value = "last")]
        backup: Selector,
        /// A directory or file, absolute as backed up.
        path: Option<PathBuf>,
        /// Mode, owner, size and modification time too.
        #[arg(short, long)]
        long: bool,
        /// Everything below the path, not only its entries.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Find which snapshots hold paths matching a pattern.
    Find {
        /// A glob matched against names (`*.conf`), or against whole paths
        /// when it holds a `/` (`/home/*/notes/**`).
        pattern: String,
        /// Only this backup set's snapshots (default: every set's).
        #[arg(long, add = crate::sets::set_name_completer())]
        set: Option<String>,
        /// Only snapshots finished since: a date (2026-12-03), a UTC time
        /// (2026-12-03T14:05:00Z) or an age (7d).
        #[arg(long, value_parser = parse_time)]
        since: Option<i64>,
        /// Only snapshots finished until then (same forms).
        #[arg(long, value_parser = parse_time)]
        until: Option<i64>,
        /// Print a JSON array of matches.
        #[arg(long)]
        json: bool,
    },
    /// Show what changed between two snapshots: + added, - removed,
    /// M modified, U metadata only.
    Diff {
        /// The first snapshot: an id, or `last`.
        from: Selector,
        /// The second snapshot: an id, or `last`.
        to: Selector,
        /// Only below this path, absolute as backed up.
        path: Option<PathBuf>,
        /// The set `last` means (default: `default`).
        #[arg(long, add = crate::sets::set_name_completer())]
        set: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write a file of a snapshot to standard output, or a directory as a
    /// tar stream.
    Dump {
        /// The backup set (default: `default`, or any set with -b ID).
        #[arg(long, add = crate::sets::set_name_completer())]
        set: Option<String>,
        /// Snapshot id, or `last`.
        #[arg(short = 'b', long = "backup", default_value = "last")]
        backup: Selector,
        /// The file or directory, absolute as backed up.
        path: PathBuf,
    },
    /// Mount the snapshots read-only (FUSE) at an empty directory:
    /// sets/SET/ID-TIME/… and sets/SET/latest. Ends on Ctrl-C, SIGTERM or
    /// `fusermount -u MOUNTPOINT`.
    Mount {
        /// An empty directory.
        mountpoint: PathBuf,
        /// Only this backup set's snapshots (default: every set's).
        #[arg(long, add = crate::sets::set_name_completer())]
        set: Option<String>,
        /// Bytes of fetched files kept on local disk, beyond the files open now.
        #[arg(long, default_value = "1GiB", value_parser = ferry_protocol::units::parse_size)]
        cache_size: u64,
    },
}

fn parse_time(text: &str) -> Result<i64, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    ferry_protocol::units::parse_time(text, now)
}

/// Runs `command` for the client `state` is paired as.
///
/// # Errors
/// One line for the user (see each command).
pub async fn run(state: &StateDir, command: BrowseCommand) -> Result<()> {
    match command {
        BrowseCommand::Ls {
            set,
            backup,
            path,
            long,
            recursive,
            json,
        } => {
            let request = ListRequest {
                set: set_of(set, backup),
                snapshot: backup,
                path,
                recursive,
            };
            crate::browse::print_list(state, &request, long, json).await
        }
        BrowseCommand::Find {
            pattern,
            set,
            since,
            until,
            json,
        } => {
            let request = FindRequest {
                pattern,
                set,
                since_ms: since,
                until_ms: until,
            };
            crate::browse::find::print_found(state, &request, json).await
        }
        BrowseCommand::Diff {
            from,
            to,
            path,
            set,
            json,
        } => {
            let request = DiffRequest {
                set,
                from,
                to,
                path,
            };
            crate::browse::diff::print_diff(state, &request, json).await
        }
        BrowseCommand::Dump { set, backup, path } => {
            let request = DumpRequest {
                set: set_of(set, backup),
                snapshot: backup,
                path,
            };
            crate::browse::dump::dump(state, &request, &mut std::io::stdout().lock()).await
        }
        BrowseCommand::Mount {
            mountpoint,
            set,
            cache_size,
        } => {
            let request = crate::mount::MountRequest {
                mountpoint,
                set,
                cache_bytes: cache_size,
            };
            crate::mount::run(state, &request).await
        }
    }
}
