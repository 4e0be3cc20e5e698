//! Filesystem snapshot hooks, compatible with UrBackup's scripts.
//!
//! A `snapshot.cfg` names two scripts:
//!
//! ```text
//! create_filesystem_snapshot=/usr/local/etc/urbackup/create_filesystem_snapshot
//! remove_filesystem_snapshot=/usr/local/etc/urbackup/remove_filesystem_snapshot
//! ```
//!
//! For a set that requires a snapshot, each path is backed up from a frozen
//! view: `create UID PATH DEVICE FSTYPE NAME` must print `SNAPSHOT=/where`
//! (UrBackup's LVM script reads the volume name from `$5`); ferry reads from
//! there while recording the original paths, then always calls
//! `remove UID SNAPSHOT PATH DEVICE NAME`, also when the backup failed.
//! DEVICE and FSTYPE are passed empty: ferry does not inspect block devices.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The two scripts of a `snapshot.cfg`.
#[derive(Debug, Clone)]
pub struct SnapshotScripts {
    create: PathBuf,
    remove: PathBuf,
}

/// A fresh snapshot id (32 hex digits) for one create/remove pair.
pub fn snapshot_uid() -> String {
    let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
    blake3::hash(seed.as_bytes()).to_hex()[..32].to_string()
}

impl SnapshotScripts {
    /// Runs `add` with a fresh filesystem snapshot of `path` (for set
    /// `set`) to read from, then removes the snapshot, also when `add`
    /// failed: the snapshot must not outlive the backup.
    ///
    /// # Errors
    /// The scripts' failures, and `add`'s.
    pub async fn with_snapshot<F, Fut>(&self, path: &Path, set: &str, add: F) -> Result<()>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let uid = snapshot_uid();
        let snapshot = self.create(&uid, path, set)?;
        let added = add(snapshot.clone()).await;
        let removed = self.remove(&uid, &snapshot, path, set);
        added?;
        removed
    }

    /// Reads `snapshot.cfg`.
    ///
    /// # Errors
    /// When it is missing, or lacks either script.
    pub fn load(cfg: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(cfg).with_context(|| {
            format!(
                "this set requires a filesystem snapshot, but {} cannot be read",
                cfg.display()
            )
        })?;
        let mut create = None;
        let mut remove = None;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            match line.split_once('=') {
                Some(("create_filesystem_snapshot", v)) => create = Some(PathBuf::from(v.trim())),
                Some(("remove_filesystem_snapshot", v)) => remove = Some(PathBuf::from(v.trim())),
                _ => {}
            }
        }
        match (create, remove) {
            (Some(create), Some(remove)) => {
                // They run as root: nobody else may have written them.
                for trusted in [cfg, &create, &remove] {
                    ferry_net::io::keyfile::check_trusted(trusted)?;
                }
                Ok(SnapshotScripts { create, remove })
            }
            _ => bail!(
                "{} must name create_filesystem_snapshot and remove_filesystem_snapshot",
                cfg.display()
            ),
        }
    }

    /// Creates a snapshot of `path`; returns where the frozen view is.
    ///
    /// # Errors
    /// When the script fails or prints no `SNAPSHOT=` line.
    pub fn create(&self, uid: &str, path: &Path, set: &str) -> Result<PathBuf> {
        let out = Command::new(&self.create)
            .args([
                uid.as_ref(),
                path.as_os_str(),
                "".as_ref(),
                "".as_ref(),
                set.as_ref(),
            ])
            .output()
            .with_context(|| format!("cannot run {}", self.create.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "{} failed ({}) for {}: {}",
                self.create.display(),
                out.status,
                path.display(),
                last_line(&stdout, &out.stderr)
            );
        }
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("SNAPSHOT="))
            .map(PathBuf::from)
            .with_context(|| format!("{} printed no SNAPSHOT=PATH line", self.create.display()))
    }

    /// Removes the snapshot made by [`SnapshotScripts::create`].
    ///
    /// # Errors
    /// When the script fails.
    pub fn remove(&self, uid: &str, snapshot: &Path, path: &Path, set: &str) -> Result<()> {
        let out = Command::new(&self.remove)
            .args([
                uid.as_ref(),
                snapshot.as_os_str(),
                path.as_os_str(),
                "".as_ref(),
                set.as_ref(),
            ])
            .output()
            .with_context(|| format!("cannot run {}", self.remove.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                self.remove.display(),
                out.status,
                last_line(&String::from_utf8_lossy(&out.stdout), &out.stderr)
            );
        }
        Ok(())
    }
}

fn last_line(stdout: &str, stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    stderr
        .lines()
        .chain(stdout.lines())
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .to_string()
}
