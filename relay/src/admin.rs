//! The admin commands of `ferry-relay` (everything but `init` and
//! `serve`): each works on the data directory, beside a serving relay or
//! not, and prints text or JSON. Tables go through
//! [`ferry_net::table::Table`], shared with the endpoint's commands.

pub mod catalog_copy;
pub mod clients;
pub mod migrate;
pub mod pair;
pub mod pair_lines;
pub mod retention;
pub mod sets;
pub mod snapshots;
pub mod verify;

use ferry_protocol::units::format_size;
use std::time::Duration;

use anyhow::Result;
use ferry_protocol::schedule::Schedule;

use crate::data_dir::DataDir;

/// Parses a rate or a schedule argument.
///
/// # Errors
/// Text that is neither.
pub fn parse_schedule(text: &str) -> Result<Schedule, String> {
    Schedule::parse(text)
}

/// Runs `ferry-relay limit`: sets (or with `None`, resets) the global limit.
///
/// # Errors
/// Catalog errors.
pub fn global_limit(data: &DataDir, global: Option<&Schedule>) -> Result<()> {
    let text = global.map(Schedule::to_text);
    data.catalog()?.set_global_limit(text.as_deref())?;
    match text {
        Some(text) => {
            println!("global limit set to {text} (a running relay applies it within 2 s)")
        }
        None => println!("global limit reset to relay.toml's rates"),
    }
    Ok(())
}

/// Runs `ferry-relay gc`: collects (in the running relay if there is one)
/// with `grace`, or relay.toml's.
///
/// # Errors
/// A failed collection.
pub fn gc(data: &DataDir, grace: Option<Duration>, json: bool) -> Result<()> {
    let grace = match grace {
        Some(grace) => grace,
        None => data.config()?.gc.resolve()?.grace,
    };
    let report = crate::gc_service::run_now(data, grace)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "kept {} snapshots; deleted {} unreferenced blobs ({}), kept {} younger than the grace period; deleted {} packs, rewrote {}; freed {} in {} ms",
            report.snapshots,
            report.blobs_deleted,
            format_size(report.bytes_unreferenced),
            report.blobs_in_grace,
            report.packs_deleted,
            report.packs_repacked,
            format_size(report.bytes_freed),
            report.duration_ms
        );
        if !report.snapshots_damaged.is_empty() {
            println!(
                "damaged snapshots {:?} name blobs the store lacks; what else they reach was kept (`ferry-relay verify` names what is missing)",
                report.snapshots_damaged
            );
        }
    }
    Ok(())
}

/// `ferry-relay recovery-key --new FILE`: writes a new recovery identity to
/// `file` (mode 0600, never over an existing file) and prints its
/// recipient for `relay.toml`.
///
/// # Errors
/// An existing file, or one that cannot be written.
pub fn recovery_key(file: &std::path::Path) -> anyhow::Result<()> {
    use rand_core::{OsRng, RngCore};
    if file.exists() {
        anyhow::bail!(
            "{} exists; a recovery identity is never written over (it may be the only key to clients' vaults)",
            file.display()
        );
    }
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let identity = ferry_protocol::recovery::Identity::from_secret(secret);
    zeroize::Zeroize::zeroize(&mut secret);
    let text = zeroize::Zeroizing::new(format!("{}\n", identity.encode()));
    ferry_net::io::keyfile::write_private(file, text.as_bytes())?;
    println!("[sealed]");
    println!("recovery-recipient = \"{}\"", identity.recipient().encode());
    eprintln!(
        "wrote the recovery identity to {}: keep it offline (it opens every client's vault); put the two lines above into relay.toml",
        file.display()
    );
    Ok(())
}
