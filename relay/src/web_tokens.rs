//! The web page's login tokens: one for the administrator (everything,
//! actions included) and one read-only (pages, browsing, downloads). The
//! relay keeps only their BLAKE3 hashes, in `DATA/web-tokens.json` (mode
//! 0600): a token is shown once, when `init` or `ferry-relay web-token`
//! makes it, and a new one replaces the old (the old stops working at the
//! relay's next read of the file, at most [`RELOAD`] later).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::data_dir::DataDir;

/// How often a serving relay reads the token file again.
pub const RELOAD: std::time::Duration = std::time::Duration::from_secs(2);

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// See every page, browse and download open-mode snapshots.
    ReadOnly,
    /// All of that, and act: protect, forget, quotas, revocation, pairing
    /// codes, collection and verification.
    Admin,
}

impl Role {
    /// Its name, as the command line and the page say it.
    pub fn name(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Admin => "admin",
        }
    }
}

/// The hashes on file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct TokenFile {
    /// BLAKE3 of the admin token, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// BLAKE3 of the read-only token, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<String>,
}

/// Where the hashes are kept.
pub fn path(data: &DataDir) -> PathBuf {
    data.root().join("web-tokens.json")
}

/// The hash of `token`, as kept.
pub fn hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.trim().as_bytes()).as_bytes()
}

/// Makes a new token for `role`, keeps its hash in place of the old one,
/// and returns it (the only time it is seen).
///
/// # Errors
/// The file cannot be read or written.
pub fn renew(data: &DataDir, role: Role) -> Result<String> {
    let file = path(data);
    let mut kept = read(&file)?;
    let mut secret = [0u8; 20];
    OsRng.fill_bytes(&mut secret);
    let token: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let hashed = hash(&token).iter().map(|b| format!("{b:02x}")).collect();
    match role {
        Role::Admin => kept.admin = Some(hashed),
        Role::ReadOnly => kept.read_only = Some(hashed),
    }
    let text = serde_json::to_string_pretty(&kept)?;
    ferry_net::io::keyfile::write_private(&file, text.as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(token)
}

/// The hashes in `file` with their roles (none when it does not exist).
///
/// # Errors
/// A file that cannot be read or parsed.
pub fn load(file: &Path) -> Result<Vec<([u8; 32], Role)>> {
    let kept = read(file)?;
    let mut hashes = Vec::new();
    for (hex, role) in [(kept.admin, Role::Admin), (kept.read_only, Role::ReadOnly)] {
        if let Some(hex) = hex {
            hashes.push((parse_hash(&hex, file)?, role));
        }
    }
    Ok(hashes)
}

fn read(file: &Path) -> Result<TokenFile> {
    match std::fs::read_to_string(file) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a token file", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

fn parse_hash(hex: &str, file: &Path) -> Result<[u8; 32]> {
    let bad = || anyhow::anyhow!("{} holds a hash that is not 64 hex digits", file.display());
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewed_token_replaces_the_old_and_only_its_hash_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let first = renew(&data, Role::Admin).unwrap();
        let reader = renew(&data, Role::ReadOnly).unwrap();
        let second = renew(&data, Role::Admin).unwrap();
        let text = std::fs::read_to_string(path(&data)).unwrap();
        assert!(!text.contains(&second) && !text.contains(&reader));
        let hashes = load(&path(&data)).unwrap();
        assert_eq!(
            hashes,
            vec![
                (hash(&second), Role::Admin),
                (hash(&reader), Role::ReadOnly)
            ]
        );
        assert!(!hashes.iter().any(|(h, _)| *h == hash(&first)));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path(&data)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
