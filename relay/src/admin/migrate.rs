//! `ferry-relay migrate --to-storage s3://BUCKET[/PREFIX]`: moves a
//! stopped relay's pack files into an object store, checks every one read
//! back, then points relay.toml at the store. Endpoints notice nothing:
//! the catalog, the keys and the addresses stay; each pack keeps its id,
//! so every row names the same bytes. It can be run again after a failure:
//! a pack already in the store with the same bytes is not sent twice.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ferry_protocol::units::format_size;

use crate::config::{StorageConfig, StorageKind};
use crate::data_dir::DataDir;
use crate::store::{BlobReader, BlobStore, PackReader, PackStore, S3Store, Storage};

/// `ferry-relay migrate`'s arguments.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Where the packs go: `s3://BUCKET` or `s3://BUCKET/PREFIX`.
    #[arg(long, value_name = "URL")]
    pub to_storage: String,
    /// The object store's URL (`https://s3.example.net`).
    #[arg(long, value_name = "URL")]
    pub endpoint: String,
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
    fn storage(&self) -> Result<StorageConfig> {
        let Some(rest) = self.to_storage.strip_prefix("s3://") else {
            bail!(
                "--to-storage takes s3://BUCKET[/PREFIX], not {}",
                self.to_storage
            );
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("--to-storage s3:// needs a bucket name");
        }
        Ok(StorageConfig {
            kind: StorageKind::S3,
            endpoint: Some(self.endpoint.clone()),
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
/// A serving relay, a relay already on an object store, an unreachable
/// store, a pack that does not read back identical.
pub fn run(data: &DataDir, args: &MigrateArgs) -> Result<()> {
    let Some(_lock) = data.try_lock()? else {
        bail!(
            "a ferry-relay is serving {}: stop it first (`systemctl stop ferry-relay`), then migrate; nothing was changed",
            data.root().display()
        );
    };
    let mut config = data.config()?;
    if config.storage.kind != StorageKind::Local {
        bail!("relay.toml's [storage] is already an object store; nothing was changed");
    }
    let target = args.storage()?;
    let storage = data.storage(&target)?;
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
    let ends = data.catalog()?.committed_pack_ends()?;
    drop(PackStore::open(&packs_dir, &ends)?);
    let store = S3Store::open(settings, dir, *relay)
        .with_context(|| format!("cannot reach {}", storage.describe()))?;
    let local = PackReader::new(&packs_dir);
    let packs = local.packs()?;
    let mut bytes_moved = 0;
    for (pack, len) in &packs {
        let mut bytes = Vec::new();
        local.read_into(*pack, 0, *len, &mut bytes)?;
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
    let before = data.root().join("relay.toml.before-migrate");
    fs::copy(data.config_path(), &before)?;
    config.storage = target;
    ferry_net::io::keyfile::write_private(&data.config_path(), config.to_toml()?.as_bytes())
        .with_context(|| format!("cannot write {}", data.config_path().display()))?;
    let moved = packs_dir.with_file_name("packs.migrated");
    if packs_dir.exists() {
        fs::rename(&packs_dir, &moved)?;
    }
    println!(
        "{} pack(s), {}, moved to {} and read back identical; relay.toml now names it (the old one is {}); the pack files are kept in {} until you delete them",
        packs.len(),
        format_size(bytes_moved),
        storage.describe(),
        before.display(),
        moved.display()
    );
    Ok(())
}
