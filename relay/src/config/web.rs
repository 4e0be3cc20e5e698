//! `[web]`: the status page's listener.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `[web]`: the status page, `/api/status` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct WebConfig {
    /// Where to listen (`127.0.0.1:7332`); none: no web listener.
    pub listen: Option<SocketAddr>,
    /// A file holding the bearer token every request must carry; required
    /// unless `listen` is a loopback address. Relative: in the data directory.
    pub token_file: Option<std::path::PathBuf>,
    /// The `Host` names (`backup.example.com`, with `:PORT` when not the
    /// scheme's) that a TLS reverse proxy in front of the listener sends:
    /// with a loopback listener, requests naming any other host are
    /// refused (DNS rebinding); beyond loopback, only these are served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host: Vec<String>,
    /// Serve HTTPS with this certificate chain (PEM); with `tls-key`.
    /// Relative: in the data directory.
    pub tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM, mode 0600).
    pub tls_key: Option<std::path::PathBuf>,
}
