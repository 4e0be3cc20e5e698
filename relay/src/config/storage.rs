//! `[storage]`: where the relay keeps pack bytes — its own disk (the
//! default) or an S3-compatible object store; `[catalog]`: where its
//! catalog is — in the data directory (the default) or a file several
//! relays share.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ferry_protocol::units::parse_size;
use serde::{Deserialize, Serialize};

use crate::catalog::CatalogAt;

pub use crate::store::s3::S3Settings;

/// `[storage]` as written in `relay.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StorageConfig {
    /// `local` (pack files under `DATA/store/packs/`) or `s3`.
    #[serde(default)]
    pub kind: StorageKind,
    /// The object store's URL (`https://s3.example.net`, `http://127.0.0.1:9000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The bucket (it must exist; the relay never creates one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Where every object name starts (`relay-a/`: several services in one
    /// bucket); none by default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// The region the bucket lives in.
    #[serde(default = "default_region")]
    pub region: String,
    /// Names the bucket in the path (`ENDPOINT/BUCKET/KEY`), as MinIO,
    /// Garage and moto expect; false: as a host name (`BUCKET.ENDPOINT`).
    #[serde(default = "yes")]
    pub path_style: bool,
    /// A file (mode 0600) holding `access-key-id` and `secret-access-key`;
    /// none: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` from the
    /// environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// How much of the store is kept on local disk for reads (`1GiB`;
    /// `0`: none, every read is a ranged GET).
    #[serde(default = "default_cache_size")]
    pub cache_size: String,
}

/// Which store holds the packs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageKind {
    /// Pack files on the relay's own disk.
    #[default]
    Local,
    /// An S3-compatible object store.
    S3,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::Local,
            endpoint: None,
            bucket: None,
            prefix: String::new(),
            region: default_region(),
            path_style: true,
            credentials_file: None,
            cache_size: default_cache_size(),
        }
    }
}

/// `[catalog]` as written in `relay.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CatalogConfig {
    /// `sqlite:///ABSOLUTE/PATH` (a catalog several relays on one host
    /// share) or `postgres://USER:PASSWORD@HOST/DATABASE` (relays on
    /// several hosts); none: `DATA/catalog.sqlite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl CatalogConfig {
    /// The catalog `url` names, if it names one.
    ///
    /// # Errors
    /// A URL that is neither `sqlite:///ABSOLUTE/PATH` nor `postgres://…`.
    pub fn location(&self) -> Result<Option<CatalogAt>> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Some(CatalogAt::Postgres(url.clone())));
        }
        match url.strip_prefix("sqlite://") {
            Some(path) if path.starts_with('/') => Ok(Some(CatalogAt::File(PathBuf::from(path)))),
            _ => bail!(
                "relay.toml [catalog] url takes sqlite:///ABSOLUTE/PATH or postgres://USER:PASSWORD@HOST/DATABASE, not {}",
                CatalogAt::Postgres(url.clone())
            ),
        }
    }
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_cache_size() -> String {
    "1GiB".into()
}

fn yes() -> bool {
    true
}

/// The credentials file's contents.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
}

impl StorageConfig {
    /// The object store's settings, or `None` for local packs.
    ///
    /// # Errors
    /// A missing endpoint or bucket, an unreadable or too open credentials
    /// file, no credentials at all, or a bad cache size.
    pub fn s3(&self) -> Result<Option<S3Settings>> {
        if self.kind == StorageKind::Local {
            return Ok(None);
        }
        let need = |value: &Option<String>, key: &str| {
            value
                .clone()
                .filter(|v| !v.is_empty())
                .with_context(|| format!("relay.toml [storage] kind = \"s3\" needs {key}"))
        };
        let (access_key_id, secret_access_key) = match &self.credentials_file {
            Some(path) => read_credentials(path)?,
            None => (
                env_key("AWS_ACCESS_KEY_ID")?,
                env_key("AWS_SECRET_ACCESS_KEY")?,
            ),
        };
        let mut prefix = self.prefix.trim_start_matches('/').to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Some(S3Settings {
            endpoint: need(&self.endpoint, "endpoint")?,
            bucket: need(&self.bucket, "bucket")?,
            prefix,
            region: self.region.clone(),
            path_style: self.path_style,
            access_key_id,
            secret_access_key,
            cache_bytes: parse_size(&self.cache_size)
                .map_err(anyhow::Error::msg)
                .context("relay.toml [storage] cache-size")?,
        }))
    }
}

fn env_key(name: &str) -> Result<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => bail!("relay.toml [storage] kind = \"s3\" has no credentials-file and {name} is not set: give the object store's keys in one of them"),
    }
}

fn read_credentials(path: &Path) -> Result<(String, String)> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| {
            format!(
                "cannot read the object store's credentials {}",
                path.display()
            )
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "the object store's credentials {} can be read by others (mode {:o}): `chmod 600` it",
            path.display(),
            mode & 0o777
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the object store's credentials {}",
            path.display()
        )
    })?;
    let keys: Credentials = toml::from_str(&text).with_context(|| {
        format!(
            "{}: expected access-key-id and secret-access-key",
            path.display()
        )
    })?;
    Ok((keys.access_key_id, keys.secret_access_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_is_the_default_and_s3_needs_its_settings() {
        let local: StorageConfig = toml::from_str("").unwrap();
        assert_eq!(
            local,
            StorageConfig::default(),
            "an empty table is the default"
        );
        assert_eq!(local.kind, StorageKind::Local);
        assert!(local.s3().unwrap().is_none());
        let no_bucket: StorageConfig =
            toml::from_str("kind = \"s3\"\nendpoint = \"http://127.0.0.1:9\"").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let keys = tmp.path().join("keys.toml");
        std::fs::write(
            &keys,
            "access-key-id = \"a\"\nsecret-access-key = \"s3cret\"\n",
        )
        .unwrap();
        let mut config = StorageConfig {
            credentials_file: Some(keys.clone()),
            ..no_bucket
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = config.s3().unwrap_err().to_string();
        assert!(open.contains("chmod 600"), "{open}");
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
        let missing = config.s3().unwrap_err().to_string();
        assert!(missing.contains("needs bucket"), "{missing}");
        config.bucket = Some("ferry".into());
        config.prefix = "a/b".into();
        let s3 = config.s3().unwrap().unwrap();
        assert_eq!((s3.prefix.as_str(), s3.cache_bytes), ("a/b/", 1 << 30));
        assert!(!format!("{s3:?}").contains("s3cret"));
    }
}
