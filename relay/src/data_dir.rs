//! The layout of the relay's data directory.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ferry_net::io::keyfile;
use ferry_protocol::keys::StaticKeypair;

use crate::catalog::{Catalog, CatalogAt};
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
    /// The catalog, once read from relay.toml's `[catalog]`.
    catalog: std::sync::OnceLock<CatalogAt>,
}

impl DataDir {
    /// Names a data directory (nothing is read yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir {
            root: root.into(),
            catalog: std::sync::OnceLock::new(),
        }
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

    /// The catalog: relay.toml's `[catalog] url`, else
    /// `DATA/catalog.sqlite`.
    pub fn catalog_at(&self) -> CatalogAt {
        self.catalog
            .get_or_init(|| {
                let shared = self
                    .config()
                    .ok()
                    .and_then(|config| config.catalog.location().ok().flatten());
                shared.unwrap_or_else(|| CatalogAt::File(self.root.join("catalog.sqlite")))
            })
            .clone()
    }

    /// The SQLite catalog's file (`DATA/catalog.sqlite` when the catalog
    /// is in PostgreSQL: no file is there then).
    pub fn catalog_path(&self) -> PathBuf {
        match self.catalog_at() {
            CatalogAt::File(path) => path,
            CatalogAt::Postgres(_) => self.root.join("catalog.sqlite"),
        }
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

    /// `relay-id`: this relay's number among the relays sharing one
    /// catalog and store (0 to 1023): registered in the catalog under this
    /// host and directory, the lowest free one the first time.
    ///
    /// # Errors
    /// I/O or catalog errors, a file that does not hold such a number, or
    /// an id another relay holds (a copied data directory).
    pub fn relay_id(&self) -> Result<u16> {
        let path = self.root.join("relay-id");
        let max = crate::store::s3::MAX_RELAY_ID;
        let kept = match fs::read_to_string(&path) {
            Ok(text) => Some(
                text.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|id| *id <= max)
                    .with_context(|| {
                        format!("{} must hold a number from 0 to {max}", path.display())
                    })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let root = fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let holder = format!("{}:{}", host.trim(), root.display());
        let now = crate::clock::now_ms();
        let up_within = i64::try_from(crate::presence::UP_WITHIN.as_millis()).unwrap_or(i64::MAX);
        let registered =
            self.catalog()?
                .register_relay(&holder, kept, max, now, now - up_within)?;
        let id = match registered {
            crate::catalog::Registered::Id(id) => id,
            crate::catalog::Registered::TakenBy(other) => bail!(
                "relay id {} ({}) is another relay's, which is running ({other}): a copied data directory? Delete {} to draw a new id",
                kept.unwrap_or_default(),
                path.display(),
                path.display()
            ),
            crate::catalog::Registered::Full => {
                bail!("every relay id (0 to {max}) is registered in the catalog")
            }
        };
        if kept != Some(id) {
            keyfile::write_private(&path, format!("{id}\n").as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(id)
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
    pub fn init(&self, config: &RelayConfig, identity: Option<&Path>) -> Result<StaticKeypair> {
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
        if let Some(identity) = identity {
            keyfile::load(identity).with_context(|| {
                format!("cannot use {} as the relay's identity", identity.display())
            })?;
            let key = fs::read(identity)
                .with_context(|| format!("cannot read {}", identity.display()))?;
            keyfile::write_private(&self.key_path(), &key)?;
        }
        let (keys, _) = keyfile::load_or_create(&self.key_path())
            .with_context(|| format!("cannot create {}", self.key_path().display()))?;
        let catalog = config
            .catalog
            .location()?
            .unwrap_or_else(|| CatalogAt::File(self.root.join("catalog.sqlite")));
        Catalog::open_at(&catalog)
            .with_context(|| format!("cannot create the catalog {catalog}"))?;
        if let CatalogAt::File(file) = &catalog {
            // It holds pending pairing codes; SQLite gives its -wal and -shm
            // files the same mode.
            fs::set_permissions(file, fs::Permissions::from_mode(0o600))?;
        }
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
        let at = self.catalog_at();
        if let CatalogAt::Postgres(_) = at {
            return Catalog::open_at(&at).with_context(|| format!("cannot open the catalog {at}"));
        }
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
