//! `ferry sets`: what this endpoint keeps of its backup sets.

use anyhow::Result;
use clap::Subcommand;

use crate::cache::FilesCache;
use crate::state::StateDir;

/// `ferry sets …`.
#[derive(Debug, Subcommand)]
pub enum SetsCommand {
    /// Forget what this endpoint keeps of a set the relay's operator
    /// removed (`ferry-relay sets remove`): its files cache and, for a
    /// sealed client, the newest snapshot it saw, so that a backup into a
    /// set of that name starts a new history instead of being refused as
    /// a rollback. Only for a set you know was removed: a relay that hid a
    /// set's history would look the same.
    Forget {
        /// The set's name.
        set: String,
    },
}

/// Runs `ferry sets COMMAND`.
///
/// # Errors
/// The state or the files cache cannot be read or written.
pub fn run(state: &StateDir, command: SetsCommand) -> Result<()> {
    match command {
        SetsCommand::Forget { set } => {
            let had_history = crate::sealed::roots::forget(state, &set)?;
            FilesCache::open(&state.cache_path())?.clear(&set)?;
            tracing::info!("set {set:?} forgotten on this endpoint");
            println!(
                "forgot set {set:?} on this endpoint{}: its next backup reads every file and starts a new history",
                if had_history {
                    " (and the newest snapshot it had seen of it)"
                } else {
                    ""
                }
            );
            Ok(())
        }
    }
}

/// Completes `--set` with the set names of endpoint.toml (in `FERRY_STATE`
/// or the default state directory; `--state` on the line being completed
/// is not seen): `ferry backup --set <TAB>`.
pub fn set_name_completer() -> ferry_net::cli_docs::ArgValueCompleter {
    ferry_net::cli_docs::ArgValueCompleter::new(|typed: &std::ffi::OsStr| {
        let typed = typed.to_string_lossy();
        let state = match std::env::var_os("FERRY_STATE").filter(|s| !s.is_empty()) {
            Some(dir) => StateDir::new(dir),
            None => match StateDir::default_location() {
                Ok(state) => state,
                Err(_) => return Vec::new(),
            },
        };
        let Ok(config) = state.config() else {
            return Vec::new();
        };
        config
            .sets
            .keys()
            .filter(|name| name.starts_with(typed.as_ref()))
            .map(ferry_net::cli_docs::CompletionCandidate::new)
            .collect()
    })
}
