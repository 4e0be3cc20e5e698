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
    /// A protected snapshot is refused until it is unprotected.
    Forget {
        /// Snapshot ids (as `snapshots list` shows them).
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Protect snapshots: neither retention nor `forget` removes them.
    Protect {
        /// Snapshot ids.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Lift the protection of snapshots.
    Unprotect {
        /// Snapshot ids.
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
            let (forgotten, protected) = data.catalog()?.forget_snapshots(&ids)?;
            for id in &ids {
                if forgotten.contains(id) {
                    println!("forgot snapshot {id}");
                } else if protected.contains(id) {
                    eprintln!("ferry-relay: snapshot {id} is protected; `ferry-relay snapshots unprotect {id}` first");
                } else {
                    eprintln!("ferry-relay: no snapshot {id}");
                }
            }
            if !forgotten.is_empty() {
                println!("their data is freed by the next garbage collection (`ferry-relay gc`)");
            }
            if forgotten.len() < ids.len() {
                return Ok(ExitCode::FAILURE);
            }
        }
        SnapshotsCommand::Protect { ids } => return protect(data, ids, true),
        SnapshotsCommand::Unprotect { ids } => return protect(data, ids, false),
    }
    Ok(ExitCode::SUCCESS)
}

/// Snapshots, oldest first, of one client (and set) or all, each with the
/// retention rules that keep it.
///
/// # Errors
/// An unknown client, catalog errors.
pub fn listed(
    data: &DataDir,
    catalog: &crate::catalog::Catalog,
    client: Option<&str>,
    set: Option<&str>,
) -> Result<Vec<crate::catalog::SnapshotRow>> {
    let client_id = match client {
        Some(name) => Some(
            catalog
                .client_by_name(name)?
                .with_context(|| format!("no client named {name:?}"))?
                .id,
        ),
        None => None,
    };
    let mut rows = catalog.list_snapshots(client_id, set)?;
    let decided = super::retention::decisions(data, catalog, client, None)?;
    let kept_by: std::collections::HashMap<u64, Vec<&'static str>> = decided
        .iter()
        .flat_map(|set| set.decision.iter())
        .map(|(id, why)| (*id, super::retention::reasons(why)))
        .collect();
    for row in &mut rows {
        row.kept_by = kept_by.get(&row.id.0).cloned().unwrap_or_default();
    }
    Ok(rows)
}

/// Protects or unprotects `ids`; fails naming those that do not exist.
fn protect(data: &DataDir, ids: Vec<u64>, protect: bool) -> Result<ExitCode> {
    let ids: Vec<SnapshotId> = ids.into_iter().map(SnapshotId).collect();
    let found = data.catalog()?.protect_snapshots(&ids, protect)?;
    for id in &ids {
        if !found.contains(id) {
            eprintln!("ferry-relay: no snapshot {id}");
        } else if protect {
            println!("protected snapshot {id}");
        } else {
            println!("unprotected snapshot {id}");
        }
    }
    Ok(if found.len() == ids.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn list(data: &DataDir, client: Option<String>, set: Option<String>, json: bool) -> Result<()> {
    let rows = listed(data, &data.catalog()?, client.as_deref(), set.as_deref())?;
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
            ("SIZE", Align::Right),
            ("KEPT BY", Align::Left),
        ]);
        for r in rows {
            table.row(vec![
                r.id.to_string(),
                r.client,
                r.set,
                r.finished_at,
                r.files.to_string(),
                ferry_protocol::units::format_size(r.bytes),
                r.kept_by.join(","),
            ]);
        }
        print!("{}", table.render());
    }
    Ok(())
}
