//! The endpoint's state directory.
//!
//! `STATE/keys/endpoint.key` (0600) is the endpoint's static key;
//! `STATE/relay.toml` (0600) records what pairing learned: the relay's key,
//! this client's id and name, and the relay's addresses, LAN first.
//! `STATE/endpoint.toml` holds optional settings.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ferry_net::io::keyfile;
use ferry_protocol::keys::{PublicKey, StaticKeypair};
use serde::{Deserialize, Serialize};

use crate::config::EndpointConfig;

/// What the endpoint knows about its relay, from pairing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RelayRecord {
    /// The relay's static public key (hex).
    pub relay_key: String,
    /// Its fingerprint, for people reading the file.
    pub relay_fingerprint: String,
    /// The relay's id for this endpoint.
    pub client_id: u64,
    /// The relay's name for this endpoint.
    pub client_name: String,
    /// Session addresses, tried in order (LAN first).
    pub addresses: Vec<String>,
    /// Whether the client keeps its data sealed (pairings before sealed
    /// mode are open).
    #[serde(default)]
    pub sealed: bool,
}

impl RelayRecord {
    /// The relay's key.
    ///
    /// # Errors
    /// When the file holds a malformed key.
    pub fn relay_public_key(&self) -> Result<PublicKey> {
        PublicKey::from_hex(&self.relay_key).context("relay.toml: malformed relay-key")
    }
}

/// The endpoint's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Names a state directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// The default: `$XDG_CONFIG_HOME/ferry`, else `$HOME/.config/ferry`.
    ///
    /// # Errors
    /// When neither variable is set.
    pub fn default_location() -> Result<Self> {
        if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
            return Ok(Self::new(Path::new(&dir).join("ferry")));
        }
        match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            Some(home) => Ok(Self::new(Path::new(&home).join(".config").join("ferry"))),
            None => bail!("no state directory: pass --state DIR or set FERRY_STATE"),
        }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn key_path(&self) -> PathBuf {
        self.root.join("keys").join("endpoint.key")
    }

    fn relay_path(&self) -> PathBuf {
        self.root.join("relay.toml")
    }

    /// Loads the endpoint key, creating the directory and key if needed.
    ///
    /// # Errors
    /// I/O errors, or a key file others can read.
    pub fn load_or_create_keys(&self) -> Result<StaticKeypair> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.root.join("keys"))
            .with_context(|| format!("cannot create {}", self.root.display()))?;
        // One that existed keeps its mode otherwise: only this user may
        // look at what it says about the backups.
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", self.root.display()))?;
        let (keys, _) = keyfile::load_or_create(&self.key_path())
            .with_context(|| format!("cannot load or create {}", self.key_path().display()))?;
        Ok(keys)
    }

    /// Loads the endpoint key, which pairing created.
    ///
    /// # Errors
    /// When missing (not paired) or unreadable.
    pub fn keys(&self) -> Result<StaticKeypair> {
        keyfile::load(&self.key_path()).with_context(|| {
            format!(
                "cannot load {} (pair first with `ferry pair`)",
                self.key_path().display()
            )
        })
    }

    /// What pairing recorded, if this endpoint is paired.
    ///
    /// # Errors
    /// When the file exists but is invalid.
    pub fn relay(&self) -> Result<Option<RelayRecord>> {
        match fs::read_to_string(self.relay_path()) {
            Ok(text) => {
                Ok(Some(toml::from_str(&text).with_context(|| {
                    format!("invalid {}", self.relay_path().display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("cannot read {}", self.relay_path().display()))
            }
        }
    }

    /// What pairing recorded.
    ///
    /// # Errors
    /// When this endpoint is not paired.
    pub fn paired_relay(&self) -> Result<RelayRecord> {
        self.relay()?.with_context(|| {
            format!(
                "this endpoint is not paired (no {}): run `ferry pair --relay HOST:PORT --code CODE`",
                self.relay_path().display()
            )
        })
    }

    /// Stores what pairing learned (mode 0600, atomically).
    ///
    /// # Errors
    /// I/O errors.
    pub fn save_relay(&self, record: &RelayRecord) -> Result<()> {
        let text = toml::to_string_pretty(record)?;
        keyfile::write_private(&self.relay_path(), text.as_bytes())
            .with_context(|| format!("cannot write {}", self.relay_path().display()))
    }

    /// The files cache database.
    pub fn cache_path(&self) -> PathBuf {
        self.root.join("cache.sqlite")
    }

    /// The optional settings file.
    ///
    /// # Errors
    /// When it exists but is invalid.
    pub fn config(&self) -> Result<EndpointConfig> {
        EndpointConfig::load_or_default(&self.root.join("endpoint.toml"))
    }
}

/// A small JSON state file (`STATE/sealed-seen.json` and the like): its
/// value, or the default when it does not exist yet.
///
/// # Errors
/// A file that cannot be read or is damaged.
pub fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a small JSON state file whole (a temporary copy renamed over it).
///
/// # Errors
/// The file cannot be written.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(value)?)?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
