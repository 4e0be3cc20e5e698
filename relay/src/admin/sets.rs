//! `ferry-relay sets`: a client's backup sets, and removing one that is
//! retired (a laptop's old project, a USB disk given away).

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::catalog::SetRemoval;
use crate::data_dir::DataDir;

/// `ferry-relay sets …`.
#[derive(Debug, Subcommand)]
pub enum SetsCommand {
    /// Remove a retired set: its snapshots are forgotten (their data goes
    /// at the next garbage collection), its retention rules dropped, and
    /// no staleness alert names it again. Refused while it holds
    /// protected snapshots.
    Remove {
        /// The client's name.
        client: String,
        /// The set's name.
        set: String,
    },
}

/// Runs `ferry-relay sets COMMAND`.
///
/// # Errors
/// An unknown client or set, protected snapshots, catalog errors.
pub fn run(data: &DataDir, command: SetsCommand) -> Result<ExitCode> {
    match command {
        SetsCommand::Remove { client, set } => {
            let mut catalog = data.catalog()?;
            let id = catalog
                .client_by_name(&client)?
                .with_context(|| format!("no client named {client:?}"))?
                .id;
            match catalog.remove_set(id, &set)? {
                SetRemoval::Removed { snapshots } => {
                    tracing::info!("set {client}/{set} removed with {snapshots} snapshot(s)");
                    println!(
                        "removed set {set:?} of {client:?} and its {snapshots} snapshot(s); their data goes at the next garbage collection (`ferry-relay gc`)"
                    );
                    Ok(ExitCode::SUCCESS)
                }
                SetRemoval::NoSuchSet => {
                    anyhow::bail!("client {client:?} has no set {set:?} (`ferry-relay snapshots list --client {client}` shows its sets)")
                }
                SetRemoval::Protected(n) => anyhow::bail!(
                    "set {set:?} of {client:?} holds {n} protected snapshot(s): unprotect them first (`ferry-relay snapshots unprotect ID…`); nothing was removed"
                ),
            }
        }
    }
}
