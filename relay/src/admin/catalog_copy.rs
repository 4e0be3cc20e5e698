//! `ferry-relay catalog dump` and `ferry-relay catalog rebuild`: a relay
//! on an object store keeps a copy of its catalog there (all but the
//! blobs' index, which every pack's trailer holds for its own blobs), so a
//! catalog lost with its engine (a PostgreSQL server gone, no backup of
//! it) can be rebuilt from the store alone: the newest copy, then the
//! trailers. Snapshots committed after that copy are not in it; their
//! blobs are (their packs' trailers list them), so each endpoint's next
//! backup sends almost nothing.

use std::fs;

use anyhow::{bail, Context, Result};
use ferry_protocol::units::format_size;

use crate::catalog::{Catalog, CatalogAt};
use crate::catalog_copies;
use crate::data_dir::DataDir;
use crate::store::{open_reader, BlobReader, S3Reader};

/// `ferry-relay catalog`'s commands.
#[derive(Debug, clap::Subcommand)]
pub enum CatalogCommand {
    /// Keep a copy of the catalog (clients and their keys, sets,
    /// snapshots, rules; not the blobs' index, which each pack's trailer
    /// holds) in the object store, as `catalog/<ms>-<relay>.sqlite`; the
    /// newest 8 are kept. The relay keeps one after every collection too.
    /// Safe beside a serving relay.
    Dump,
    /// Rebuild a lost catalog from the object store alone: the newest copy
    /// `dump` kept, then every pack's trailer. The relay must be stopped
    /// and relay.toml's catalog empty (a new PostgreSQL database, or no
    /// SQLite file). Snapshots committed after that copy are not restored.
    Rebuild,
}

/// Runs a `ferry-relay catalog` command.
///
/// # Errors
/// A relay not on an object store; an unreachable store or catalog; for
/// `rebuild`, a serving relay, a catalog that is not empty, or no copy.
pub fn run(data: &DataDir, command: &CatalogCommand) -> Result<()> {
    match command {
        CatalogCommand::Dump => dump(data),
        CatalogCommand::Rebuild => rebuild(data),
    }
}

/// The object store relay.toml names, read through a cache of its own.
fn store(data: &DataDir, scratch: &std::path::Path) -> Result<S3Reader> {
    let Some(settings) = data.config()?.storage.s3()? else {
        bail!(
            "the catalog is rebuilt from an object store's pack trailers, and this relay keeps its packs on local disk (beside its catalog); a damaged SQLite catalog is repaired with `ferry-relay verify --repair-catalog`"
        );
    };
    open_reader(&settings, &scratch.join("cache"), &scratch.join("staging"))
        .with_context(|| format!("cannot reach the object store at {}", settings.endpoint))
}

fn dump(data: &DataDir) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let store = store(data, scratch.path())?;
    let kept = catalog_copies::keep(&data.catalog()?, &store, data.relay_id()?)?;
    println!(
        "kept a copy of the catalog in the object store: {} ({}; {})",
        kept.name,
        format_size(kept.bytes),
        catalog_copies::describe(&kept.copied)
    );
    Ok(())
}

fn rebuild(data: &DataDir) -> Result<()> {
    let Some(_lock) = data.try_lock()? else {
        bail!(
            "a ferry-relay is serving {}: stop it first, then rebuild; nothing was changed",
            data.root().display()
        );
    };
    let scratch = tempfile::tempdir()?;
    let store = store(data, scratch.path())?;
    let copies = store.list_named(catalog_copies::FOLDER)?;
    let Some(newest) = copies.iter().rev().find(|n| n.ends_with(".sqlite")) else {
        bail!(
            "the object store holds no copy of the catalog (`ferry-relay catalog dump` keeps one): without it no blob can be given back to its client; nothing was changed"
        );
    };
    let at = data.catalog_at();
    if let CatalogAt::File(path) = &at {
        if path.exists() {
            bail!(
                "{} exists: move it away first (a rebuild writes a new catalog, never over one); nothing was changed",
                path.display()
            );
        }
    }
    let file = scratch.path().join("copy.sqlite");
    fs::write(&file, store.get_named(newest)?)?;
    let mut catalog = Catalog::open_at(&at).with_context(|| format!("cannot open {at}"))?;
    let copied = Catalog::open_at(&CatalogAt::File(file))?
        .copy_into(&catalog)
        .with_context(|| format!("cannot copy {newest} into {at}"))?;
    let (mut indexed, mut skipped, mut without) = (0, 0, 0);
    let packs = store.packs()?;
    let clients = catalog.client_ids()?;
    for (pack, _) in packs.iter().rev() {
        match store.trailer(*pack)? {
            Some(entries) => {
                let found = catalog.index_trailer(&entries, &clients)?;
                indexed += found.indexed;
                skipped += found.skipped;
            }
            None => without += 1,
        }
    }
    println!(
        "rebuilt {at} from the object store: {} from {newest}, {indexed} blob(s) indexed from {} pack trailer(s){}{}; snapshots committed after that copy are not in it (their data is: the next backup sends little). Run `ferry-relay verify` next.",
        catalog_copies::describe(&copied),
        packs.len() - without,
        if skipped > 0 { format!(", {skipped} of no known client skipped") } else { String::new() },
        if without > 0 { format!(", {without} pack(s) without a trailer (written before trailers) not indexed") } else { String::new() },
    );
    Ok(())
}
