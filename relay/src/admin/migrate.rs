//! `ferry-relay migrate --to-storage s3://BUCKET[/PREFIX] --to-catalog
//! postgres://…` (either or both): moves a stopped relay's pack files into
//! an object store, checking every one read back, and its catalog into an
//! empty PostgreSQL database, checking every table reads back the same;
//! then points relay.toml at them. Endpoints notice nothing: the keys, the
//! addresses and every id stay; each pack keeps its id, so every row names
//! the same bytes. It can be run again after a failure: a pack already in
//! the store is not sent twice, and relay.toml changes only at the end.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ferry_protocol::units::format_size;

use crate::catalog::{Catalog, CatalogAt};
use crate::config::{StorageConfig, StorageKind};
use crate::data_dir::DataDir;
use crate::store::trailer::{self, TrailerEntry};
use crate::store::{BlobReader, BlobStore, PackReader, PackStore, S3Store, Storage};

/// `ferry-relay migrate`'s arguments.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Where the packs go: `s3://BUCKET` or `s3://BUCKET/PREFIX`.
    #[arg(long, value_name = "URL", required_unless_present = "to_catalog")]
    pub to_storage: Option<String>,
    /// The object store's URL (`https://s3.example.net`).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Where the catalog goes: an empty PostgreSQL database,
    /// `postgres://USER:PASSWORD@HOST/DATABASE`.
    #[arg(long, value_name = "URL")]
    pub to_catalog: Option<String>,
    /// The bucket's region.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// A file (mode 0600) with `access-key-id` and `secret-access-key`;
    /// without it, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long, value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Name the bucket in the host name rather than the path.
    #[arg(long)]
    pub virtual_hosted: bool,
}

impl MigrateArgs {
    /// The `[storage]` table these arguments describe.
    ///
    /// # Errors
    /// A URL that is not `s3://BUCKET[/PREFIX]`.
    fn storage(&self, url: &str) -> Result<StorageConfig> {
        let Some(rest) = url.strip_prefix("s3://") else {
            bail!("--to-storage takes s3://BUCKET[/PREFIX], not {url}");
        };
        let Some(endpoint) = &self.endpoint else {
            bail!("--to-storage needs --endpoint URL (the object store's)");
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("--to-storage s3:// needs a bucket name");
        }
        Ok(StorageConfig {
            kind: StorageKind::S3,
            endpoint: Some(endpoint.clone()),
            bucket: Some(bucket.into()),
            prefix: prefix.into(),
            region: self.region.clone(),
            path_style: !self.virtual_hosted,
            credentials_file: self.credentials_file.clone(),
            ..StorageConfig::default()
        })
    }
}

/// Runs `ferry-relay migrate`.
///
/// # Errors
/// A serving relay, a relay already on an object store or PostgreSQL, an
/// unreachable store or database, a pack or table that does not read back
/// identical.
pub fn run(data: &DataDir, args: &MigrateArgs) -> Result<()> {
    let Some(_lock) = data.try_lock()? else {
        bail!(
            "a ferry-relay is serving {}: stop it first (`systemctl stop ferry-relay`), then migrate; nothing was changed",
            data.root().display()
        );
    };
    let mut config = data.config()?;
    let mut said = Vec::new();
    if let Some(url) = &args.to_storage {
        if config.storage.kind != StorageKind::Local {
            bail!("relay.toml's [storage] is already an object store; nothing was changed");
        }
        let target = args.storage(url)?;
        said.push(move_packs(data, &target)?);
        config.storage = target;
    }
    if let Some(url) = &args.to_catalog {
        said.push(move_catalog(data, url)?);
        config.catalog.url = Some(url.clone());
    }
    let before = data.root().join("relay.toml.before-migrate");
    fs::copy(data.config_path(), &before)?;
    ferry_net::io::keyfile::write_private(&data.config_path(), config.to_toml()?.as_bytes())
        .with_context(|| format!("cannot write {}", data.config_path().display()))?;
    if args.to_storage.is_some() {
        let packs_dir = data.store_dir();
        if packs_dir.exists() {
            fs::rename(&packs_dir, packs_dir.with_file_name("packs.migrated"))?;
        }
    }
    println!(
        "{}; relay.toml now names the new place (the old one is {})",
        said.join("; "),
        before.display()
    );
    Ok(())
}

/// Copies every pack into the object store `target` and reads each back.
fn move_packs(data: &DataDir, target: &StorageConfig) -> Result<String> {
    let storage = data.storage(target)?;
    let Storage::S3 {
        settings,
        dir,
        relay,
    } = &storage
    else {
        unreachable!("an s3:// target");
    };
    let packs_dir = data.store_dir();
    // Cut back to what the catalog names, as a start would.
    let catalog = data.catalog()?;
    let ends = catalog.committed_pack_ends()?;
    drop(PackStore::open(&packs_dir, &ends)?);
    let store = S3Store::open(settings, dir, *relay)
        .with_context(|| format!("cannot reach {}", storage.describe()))?;
    let local = PackReader::new(&packs_dir);
    let packs = local.packs()?;
    let mut bytes_moved = 0;
    for (pack, len) in &packs {
        let mut bytes = Vec::new();
        local.read_into(*pack, 0, *len, &mut bytes)?;
        // Stored with the trailer the object store's packs carry.
        let mut entries: Vec<TrailerEntry> = catalog
            .blobs_in_pack(*pack)?
            .into_iter()
            .map(|(client, row)| TrailerEntry {
                label: row.label(client),
                at: row.at,
            })
            .collect();
        entries.sort_unstable_by_key(|e| e.at.offset);
        bytes.extend_from_slice(&trailer::encode(&entries));
        let len = &(bytes.len() as u64);
        let sum = blake3::hash(&bytes);
        store
            .import(*pack, bytes)
            .with_context(|| format!("pack {pack}: cannot store it in {}", storage.describe()))?;
        let mut back = Vec::new();
        store.reader().read_into(*pack, 0, *len, &mut back)?;
        if blake3::hash(&back) != sum {
            bail!("pack {pack} does not read back identical from {}; relay.toml was not changed, run migrate again", storage.describe());
        }
        bytes_moved += len;
    }
    Ok(format!(
        "{} pack(s), {}, moved to {} and read back identical (the pack files are kept in {} until you delete them)",
        packs.len(),
        format_size(bytes_moved),
        storage.describe(),
        data.store_dir().with_file_name("packs.migrated").display()
    ))
}

/// Copies the catalog into the empty PostgreSQL database at `url`.
fn move_catalog(data: &DataDir, url: &str) -> Result<String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!("--to-catalog takes postgres://USER:PASSWORD@HOST/DATABASE");
    }
    let CatalogAt::File(file) = data.catalog_at() else {
        bail!("relay.toml's [catalog] is already PostgreSQL; nothing was changed");
    };
    let at = CatalogAt::Postgres(url.to_owned());
    let target = Catalog::open_at(&at).with_context(|| format!("cannot open the catalog {at}"))?;
    let copied = data.catalog()?.copy_into(&target).with_context(|| {
        format!("cannot copy the catalog into {at}; relay.toml was not changed")
    })?;
    let rows: u64 = copied.iter().map(|(_, n)| n).sum();
    Ok(format!(
        "the catalog, {rows} row(s) in {} tables, copied to {at} and read back the same ({} is kept until you delete it)",
        copied.len(),
        file.display()
    ))
}
