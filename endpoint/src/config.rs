//! The endpoint's settings, `STATE/endpoint.toml` (optional).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_protocol::schedule::RateSpec;
use ferry_protocol::units::parse_duration;
use serde::{Deserialize, Serialize};

/// The contents of `endpoint.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EndpointConfig {
    /// How the endpoint reaches its relay.
    #[serde(default)]
    pub connect: ConnectConfig,
    /// This endpoint's own limits.
    #[serde(default)]
    pub upload: UploadConfig,
    /// The UrBackup-compatible `snapshot.cfg` naming the snapshot scripts
    /// (default: `STATE/snapshot.cfg`).
    #[serde(default)]
    pub snapshot_config: Option<std::path::PathBuf>,
    /// Backup sets by name ("virtual clients"): what each backs up, and when.
    #[serde(default)]
    pub sets: std::collections::BTreeMap<String, SetConfig>,
}

/// `[sets.NAME]`: one backup set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SetConfig {
    /// Files and directories to back up (recorded under their absolute paths).
    pub paths: Vec<std::path::PathBuf>,
    /// Glob patterns to leave out: without a `/` they match a name anywhere
    /// (`*.tmp`, `node_modules`); with one, the whole absolute path
    /// (`/home/me/cache/**`); a trailing `/` matches directories only
    /// (`target/`).
    pub exclude: Vec<String>,
    /// Files of patterns in `.gitignore` syntax, rooted at `/` (`target/`,
    /// `*.o`, `!keep.o`, `/home/me/Downloads`).
    pub exclude_file: Vec<std::path::PathBuf>,
    /// Leave out directories holding a file of one of these names
    /// (`.nobackup`).
    pub exclude_if_present: Vec<String>,
    /// Leave out directories tagged as caches by a `CACHEDIR.TAG` (default
    /// true: the tag's whole purpose is to say "do not back this up").
    pub exclude_caches: Option<bool>,
    /// Stay on the filesystem of each path: mount points below it are left
    /// out.
    pub one_file_system: bool,
    /// Back up a command's output instead of paths (with `name`).
    pub command: Option<String>,
    /// The file name of the command's output.
    pub name: Option<String>,
    /// How often `ferry daemon` backs the set up (e.g. `1h`).
    pub interval: Option<String>,
    /// How often `ferry daemon` checks the set's newest snapshot end to end
    /// (as `ferry verify` does) after a backup (e.g. `7d`).
    pub verify_interval: Option<String>,
    /// Retention hint for the relay: keep this many newest snapshots.
    pub keep_last: Option<u32>,
    /// Retention hint: keep the newest snapshot of this many days.
    pub keep_daily: Option<u32>,
    /// Retention hint: keep the newest snapshot of this many weeks.
    pub keep_weekly: Option<u32>,
    /// Retention hint: keep the newest snapshot of this many months.
    pub keep_monthly: Option<u32>,
    /// Back each path up from a filesystem snapshot made by the scripts in
    /// `snapshot-config` (UrBackup's `require_snapshot`).
    pub require_snapshot: bool,
}

/// `[upload]`: spares the user's own link.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct UploadConfig {
    /// Upload rate: a rate, schedule text, or a table of windows and `default`.
    pub limit: RateSpec,
    /// Chunk compression: `auto` (by the link), `lz4`, `zstd` or `none`.
    pub compression: crate::compression::Compression,
}

/// Connection timeouts as written in the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ConnectConfig {
    /// Connect timeout for the LAN address, tried first: short, because away
    /// from the office it usually does not answer at all.
    pub lan_timeout: String,
    /// Connect timeout for each internet address.
    pub timeout: String,
    /// Time allowed for the handshake once connected.
    pub handshake_timeout: String,
    /// A relay (of protocol 1.4 on, which says it is working every 10 s
    /// while busy) that sends nothing for this long while a request waits
    /// has stopped, or its link has: the session is ended. Keep it well
    /// above those 10 s.
    pub silence_timeout: String,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig {
            lan_timeout: "1500ms".into(),
            timeout: "10s".into(),
            handshake_timeout: "10s".into(),
            silence_timeout: "60s".into(),
        }
    }
}

/// Resolved connection timeouts.
#[derive(Debug, Clone, Copy)]
pub struct ConnectTimeouts {
    /// See [`ConnectConfig::lan_timeout`].
    pub lan: Duration,
    /// See [`ConnectConfig::timeout`].
    pub internet: Duration,
    /// See [`ConnectConfig::handshake_timeout`].
    pub handshake: Duration,
    /// See [`ConnectConfig::silence_timeout`].
    pub silence: Duration,
}

impl ConnectConfig {
    /// Resolves the human durations.
    ///
    /// # Errors
    /// A message naming the bad key.
    pub fn resolve(&self) -> Result<ConnectTimeouts> {
        let d = |key: &str, text: &str| {
            parse_duration(text).map_err(|e| anyhow::anyhow!("connect.{key}: {e}"))
        };
        Ok(ConnectTimeouts {
            lan: d("lan-timeout", &self.lan_timeout)?,
            internet: d("timeout", &self.timeout)?,
            handshake: d("handshake-timeout", &self.handshake_timeout)?,
            silence: d("silence-timeout", &self.silence_timeout)?,
        })
    }
}

impl SetConfig {
    /// The set's retention hints as sent to the relay with each backup.
    pub fn retention(&self) -> ferry_protocol::retention::Retention {
        ferry_protocol::retention::Retention {
            keep_last: self.keep_last,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
        }
    }
}

impl EndpointConfig {
    /// Reads `path`, or the defaults when it does not exist.
    ///
    /// # Errors
    /// When the file exists but is invalid.
    pub fn load_or_default(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        ferry_net::io::keyfile::check_trusted(path)?;
        let config: EndpointConfig =
            toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
        config.connect.resolve()?;
        config
            .upload
            .limit
            .schedule()
            .map_err(|e| anyhow::anyhow!("{}: upload.limit: {e}", path.display()))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses() {
        let text = include_str!("../../deploy/endpoint.example.toml");
        let config: EndpointConfig = toml::from_str(text).unwrap();
        config.connect.resolve().unwrap();
        assert!(toml::from_str::<EndpointConfig>("[connect]\nlan-timeot = \"1s\"").is_err());
    }
}
