//! TLS to PostgreSQL, with rustls. A connection is encrypted whenever the
//! server offers it (`sslmode=prefer`, the default) or must be
//! (`sslmode=require`), and then always verified: the server's certificate
//! must chain to a trusted CA and name the host — the system's CAs, or
//! those in the PEM file libpq's `sslrootcert=FILE` names (so
//! `verify-full` is what `require` means here; `verify-ca` and
//! `verify-full` are read as `require`). `sslmode=disable` connects in
//! the clear.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::super::{CatalogError, Result};

/// `url` as the PostgreSQL client reads it, and the TLS it connects with.
///
/// # Errors
/// An `sslrootcert` file that cannot be read or holds no certificate.
pub(super) fn target(url: &str) -> Result<(String, MakeRustlsConnect)> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut roots = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslrootcert", path)) => roots = Some(PathBuf::from(path)),
            Some(("sslmode", "verify-ca" | "verify-full")) => kept.push("sslmode=require"),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, MakeRustlsConnect::new((*config(roots)?).clone())))
}

/// The client configuration trusting `roots` (or the system's CAs), made
/// once per process for each.
fn config(roots: Option<PathBuf>) -> Result<Arc<rustls::ClientConfig>> {
    static MADE: OnceLock<Mutex<HashMap<Option<PathBuf>, Arc<rustls::ClientConfig>>>> =
        OnceLock::new();
    let mut made = MADE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(config) = made.get(&roots) {
        return Ok(Arc::clone(config));
    }
    let mut store = rustls::RootCertStore::empty();
    match &roots {
        Some(path) => {
            let unreadable = |e: &dyn std::fmt::Display| {
                CatalogError::Value(format!(
                    "sslrootcert {}: cannot read its certificates ({e})",
                    path.display()
                ))
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
                store
                    .add(cert.map_err(|e| unreadable(&e))?)
                    .map_err(|e| unreadable(&e))?;
            }
            if store.is_empty() {
                return Err(unreadable(&"no certificate in it"));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // One the system holds and rustls refuses is left out.
                let _ = store.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CatalogError::Value(format!("TLS: {e}")))?
        .with_root_certificates(store)
        .with_no_client_auth();
    let config = Arc::new(config);
    made.insert(roots, Arc::clone(&config));
    Ok(config)
}

/// A failed TLS handshake, as one line that says what to do.
pub(super) fn explained(e: &postgres::Error) -> Option<CatalogError> {
    let text = e.to_string();
    text.contains("TLS").then(|| {
        CatalogError::Unreachable(format!(
            "{text}: the server's certificate must chain to a CA this host trusts and name the host in the URL (name the CA's PEM file with ?sslrootcert=FILE, or connect in the clear with ?sslmode=disable on a trusted network)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::pg_server::PgServer;
    use crate::catalog::sql::args;
    use crate::catalog::{Catalog, CatalogAt};

    /// Whether `catalog`'s session is encrypted, as the server says.
    fn encrypted(catalog: &Catalog) -> bool {
        let ssl: i64 = catalog
            .db
            .value(
                "SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                args![],
            )
            .unwrap();
        ssl == 1
    }

    #[test]
    fn the_catalog_is_reached_over_verified_tls_unless_told_otherwise() {
        let server = PgServer::shared();
        let url = server.database();
        let catalog = Catalog::open_at(&CatalogAt::Postgres(url.clone())).unwrap();
        assert!(encrypted(&catalog), "{url}");
        // The server's CA is not one the system trusts: refused, and said
        // what to do.
        let plain = url.split('?').next().unwrap().to_owned();
        let refused = Catalog::open_at(&CatalogAt::Postgres(plain.clone())).unwrap_err();
        assert!(
            matches!(&refused, CatalogError::Unreachable(m) if m.contains("sslrootcert")),
            "{refused}"
        );
        let clear =
            Catalog::open_at(&CatalogAt::Postgres(format!("{plain}?sslmode=disable"))).unwrap();
        assert!(!encrypted(&clear));
    }

    #[test]
    fn sslrootcert_is_taken_out_and_verify_modes_read_as_require() {
        let (url, _) = target("postgres://u@h/db").unwrap();
        assert_eq!(url, "postgres://u@h/db");
        let (url, _) = target("postgres://u@h/db?sslmode=verify-full&application_name=r").unwrap();
        assert_eq!(url, "postgres://u@h/db?sslmode=require&application_name=r");
        let missing = target("postgres://u@h/db?sslrootcert=/nonexistent/ca.pem");
        assert!(
            matches!(&missing, Err(CatalogError::Value(m)) if m.contains("/nonexistent/ca.pem")),
            "{:?}",
            missing.err()
        );
    }
}
