//! `ferry-relay snapshots`: list and forget committed snapshots.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use ferry_net::table::{Align, Table};

use crate::catalog::SnapshotId;
use crate::data_dir::DataDir;

/// `ferry-relay snapshots …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    /// List snapshots, oldest first.
    List {
        /// Only this client's.
        #[arg(long)]
        client: Option<String>,
        /// Only this backup set's.
        #[arg(long)]
        set: Option<String>,
        /// JSON array output.
        #[arg(long)]
        json: bool,
    },
    /// Forget snapshots; their data goes at the next garbage collection.
    Forget {
        /// Snapshot ids (as `snapshots list` shows them).
        #[arg(required = true)]
        ids: Vec<u64>,
    },
}

/// Runs `ferry-relay snapshots COMMAND`; forgetting an id that does not
/// exist fails (exit 1) after forgetting the others.
///
/// # Errors
/// An unknown client, catalog errors.
pub fn run(data: &DataDir, command: SnapshotsCommand) -> Result<ExitCode> {
    match command {
        SnapshotsCommand::List { client, set, json } => list(data, client, set, json)?,
        SnapshotsCommand::Forget { ids } => {
            let ids: Vec<SnapshotId> = ids.into_iter().map(SnapshotId).collect();
            let forgotten = data.catalog()?.forget_snapshots(&ids)?;
            for id in &ids {
                if forgotten.contains(id) {
                    println!("forgot snapshot {id}");
                } else {
                    eprintln!("ferry-relay: no snapshot {id}");
                }
            }
            if forgotten.len() < ids.len() {
                return Ok(ExitCode::FAILURE);
            }
            println!("their data is freed by the next garbage collection (`ferry-relay gc`)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(data: &DataDir, client: Option<String>, set: Option<String>, json: bool) -> Result<()> {
    let catalog = data.catalog()?;
    let client_id = match &client {
        Some(name) => Some(
            catalog
                .client_by_name(name)?
                .with_context(|| format!("no client named {name:?}"))?
                .id,
        ),
        None => None,
    };
    let rows = catalog.list_snapshots(client_id, set.as_deref())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("no snapshots");
    } else {
        let mut table = Table::new(&[
            ("ID", Align::Right),
            ("CLIENT", Align::Left),
            ("SET", Align::Left),
            ("FINISHED", Align::Left),
            ("FILES", Align::Right),
            ("BYTES", Align::Right),
        ]);
        for r in rows {
            table.row(vec![
                r.id.to_string(),
                r.client,
                r.set,
                r.finished_at,
                r.files.to_string(),
                r.bytes.to_string(),
            ]);
        }
        print!("{}", table.render());
    }
    Ok(())
}
