//! The layout of the relay's data directory.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ferry_net::io::keyfile;
use ferry_protocol::keys::StaticKeypair;

use crate::catalog::Catalog;
use crate::config::RelayConfig;

/// The exclusive lock on a data directory; see [`DataDir::try_lock`].
#[derive(Debug)]
pub struct DataLock {
    _file: fs::File,
}

/// `DATA/`: `relay.toml`, `keys/relay.key`, `catalog.sqlite`, `run/listen.json`.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Names a data directory (nothing is read yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `relay.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("relay.toml")
    }

    /// The relay's static key (mode 0600).
    pub fn key_path(&self) -> PathBuf {
        self.root.join("keys").join("relay.key")
    }

    /// The SQLite catalog.
    pub fn catalog_path(&self) -> PathBuf {
        self.root.join("catalog.sqlite")
    }

    /// The pack files.
    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store").join("packs")
    }

    /// Where the packs are, by `[storage]` in relay.toml.
    ///
    /// # Errors
    /// Incomplete object store settings, or no relay id.
    pub fn storage(&self, config: &crate::config::StorageConfig) -> Result<crate::store::Storage> {
        Ok(match config.s3()? {
            None => crate::store::Storage::Local(self.store_dir()),
            Some(settings) => crate::store::Storage::S3 {
                settings,
                dir: self.root.join("store").join("s3"),
                relay: self.relay_id()?,
            },
        })
    }

    /// `relay-id`: this relay's number among the relays sharing one store
    /// (0 to 1023, drawn at random the first time it is asked for).
    ///
    /// # Errors
    /// I/O errors, or a file that does not hold such a number.
    pub fn relay_id(&self) -> Result<u16> {
        let path = self.root.join("relay-id");
        match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|id| *id <= crate::store::s3::MAX_RELAY_ID)
                .with_context(|| {
                    format!(
                        "{} must hold a number from 0 to {}",
                        path.display(),
                        crate::store::s3::MAX_RELAY_ID
                    )
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 2];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
                let id = u16::from_le_bytes(bytes) & crate::store::s3::MAX_RELAY_ID;
                keyfile::write_private(&path, format!("{id}\n").as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(id)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Limits in force and measured rates, rewritten by `serve` about twice a second.
    pub fn rates_file(&self) -> PathBuf {
        self.root.join("run").join("rates.json")
    }

    /// Written by `serve` once bound: the actual listen addresses, so tools and
    /// tests can find a relay started on port 0.
    pub fn listen_file(&self) -> PathBuf {
        self.root.join("run").join("listen.json")
    }

    /// Creates a new data directory with a fresh key, the config and the catalog.
    ///
    /// # Errors
    /// When the directory already holds a relay, or on I/O errors.
    pub fn init(&self, config: &RelayConfig) -> Result<StaticKeypair> {
        if self.config_path().exists() {
            bail!(
                "{} already holds a relay (relay.toml exists)",
                self.root.display()
            );
        }
        for dir in [
            self.root.clone(),
            self.root.join("keys"),
            self.root.join("run"),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            // A directory that existed keeps its mode otherwise (0755 from
            // a package or by hand): only the relay's user may look in.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {} private", dir.display()))?;
        }
        let (keys, _) = keyfile::load_or_create(&self.key_path())
            .with_context(|| format!("cannot create {}", self.key_path().display()))?;
        Catalog::open(&self.catalog_path())
            .with_context(|| format!("cannot create {}", self.catalog_path().display()))?;
        // It holds pending pairing codes; SQLite gives its -wal and -shm files
        // the same mode.
        fs::set_permissions(self.catalog_path(), fs::Permissions::from_mode(0o600))?;
        keyfile::write_private(&self.config_path(), config.to_toml()?.as_bytes())
            .with_context(|| format!("cannot write {}", self.config_path().display()))?;
        Ok(keys)
    }

    /// Loads the relay's key.
    ///
    /// # Errors
    /// When missing, unreadable or too open.
    pub fn keys(&self) -> Result<StaticKeypair> {
        keyfile::load(&self.key_path())
            .with_context(|| format!("cannot load the relay key {}", self.key_path().display()))
    }

    /// `run/reserve`: bytes the relay keeps on its disk so that, stopped on
    /// a full disk, it can start again (see `crate::reserve`).
    pub fn reserve_path(&self) -> PathBuf {
        self.root.join("run").join("reserve")
    }

    /// `run/relay.lock`: held by `serve` (and an offline `gc`) while it runs.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("run").join("relay.lock")
    }

    /// Takes the data directory's lock, or `None` when another process (a
    /// running `serve`) holds it. Released when the value is dropped, also
    /// when the process dies.
    ///
    /// # Errors
    /// I/O errors.
    pub fn try_lock(&self) -> Result<Option<DataLock>> {
        let path = self.lock_path();
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(DataLock { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot lock {}: {e}", path.display())),
        }
    }

    /// Loads `relay.toml`.
    ///
    /// # Errors
    /// When missing or invalid.
    pub fn config(&self) -> Result<RelayConfig> {
        let path = self.config_path();
        if path.exists() {
            keyfile::check_trusted(&path)?;
        }
        RelayConfig::load(&path)
    }

    /// Opens the catalog (it must exist: `init` creates it).
    ///
    /// # Errors
    /// When missing or not a catalog.
    pub fn catalog(&self) -> Result<Catalog> {
        if !self.catalog_path().exists() {
            if self
                .catalog_path()
                .with_extension("sqlite.damaged")
                .exists()
            {
                bail!(
                    "{} is missing: a catalog repair was interrupted; `ferry-relay serve` or `ferry-relay verify --repair-catalog` finishes it",
                    self.catalog_path().display()
                );
            }
            bail!(
                "{} is not a relay data directory (no catalog.sqlite); run `ferry-relay init` first",
                self.root.display()
            );
        }
        Catalog::open(&self.catalog_path()).map_err(|e| {
            let advice = if matches!(e, crate::catalog::CatalogError::Damaged(_)) {
                "; it is damaged: with the relay stopped, run `ferry-relay verify --repair-catalog`"
            } else {
                ""
            };
            anyhow::anyhow!("cannot open {}: {e}{advice}", self.catalog_path().display())
        })
    }
}
