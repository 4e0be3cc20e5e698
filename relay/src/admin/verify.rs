//! `ferry-relay verify`: runs [`crate::verify::run`] and prints what it found.

use ferry_protocol::units::format_size;
use std::process::ExitCode;

use anyhow::{bail, Result};

use crate::data_dir::DataDir;

/// Runs `ferry-relay verify`: exit 0 clean, 3 damage found.
///
/// # Errors
/// A catalog that cannot be repaired or opened, a pack that cannot be listed.
pub fn run(
    data: &DataDir,
    options: &crate::verify::Options,
    repair_catalog: bool,
    json: bool,
) -> Result<ExitCode> {
    // Held through the repair: a serving relay must never see its catalog
    // renamed away under it (what it commits then would be lost).
    let _lock = if repair_catalog {
        let Some(lock) = data.try_lock()? else {
            bail!(
                "a ferry-relay is serving {} (or another repair runs): stop it first (`systemctl stop ferry-relay`), then run --repair-catalog again; nothing was changed",
                data.root().display()
            );
        };
        Some(lock)
    } else {
        None
    };
    if repair_catalog {
        if let crate::catalog::CatalogAt::Postgres(_) = data.catalog_at() {
            bail!("--repair-catalog repairs an SQLite catalog; this relay's is in PostgreSQL, which checks and repairs its own (`pg_amcheck`, `REINDEX`); nothing was changed");
        }
        let outcome = crate::catalog::Catalog::repair_file(&data.catalog_path())?;
        if outcome == "ok" {
            eprintln!("catalog repaired: its indexes were rebuilt and it checks clean");
        } else {
            bail!("the catalog's indexes were rebuilt but it still does not check clean ({outcome}); restore catalog.sqlite from a copy, or ask for help");
        }
    }
    let report = crate::verify::run(
        data.catalog_at(),
        data.storage(&data.config()?.storage)?.reader()?.as_ref(),
        options,
    )?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "catalog: {}; {} blobs ({}) in {} pack(s) checked, {} left for the next run; {} snapshot(s) walked in {} ms",
            report.catalog,
            report.blobs_checked,
            format_size(report.bytes_checked),
            report.packs,
            report.blobs_left,
            report.snapshots,
            report.duration_ms
        );
        if report.unindexed_tail_bytes > 0 || report.packs_unnamed > 0 {
            println!(
                "not damage: {} at pack ends and {} pack(s) no row names (an interrupted write or collection; moved to store/quarantine/ at the next start)",
                format_size(report.unindexed_tail_bytes),
                report.packs_unnamed
            );
        }
        for d in &report.damaged {
            let at = match (d.pack, d.offset) {
                (Some(pack), Some(offset)) => format!("pack {pack:08} at {offset}"),
                _ => "no stored copy".into(),
            };
            println!(
                "DAMAGED {} {} of client {} ({at}): {}; snapshots {:?}; paths {}",
                d.kind,
                d.blob,
                d.client,
                d.reason,
                d.snapshots,
                d.paths.join(", ")
            );
        }
        if !report.snapshots_damaged.is_empty() {
            println!(
                "damaged snapshots: {:?} (the next backup that still holds the data heals them)",
                report.snapshots_damaged
            );
        }
        for h in &report.healed {
            println!(
                "healed {} {} of client {} (found {}, sent again {})",
                h.kind,
                h.blob,
                h.client,
                h.found_at,
                h.healed_at.as_deref().unwrap_or("?")
            );
        }
    }
    if report.catalog != "ok" {
        eprintln!("ferry-relay: the catalog is damaged ({}); stop the relay and run `ferry-relay verify --repair-catalog`", report.catalog);
    }
    Ok(if report.is_damaged() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
