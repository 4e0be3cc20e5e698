//! HTTPS for the web listener (`[web] tls-cert`, `tls-key`): each accepted
//! connection does its TLS handshake (within [`HANDSHAKE`]) on its own
//! task, then is served by hyper with the same router as plain HTTP. The
//! connection caps of `listener` hold as for plain HTTP.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::Router;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::listener::Capped;

/// How long a client has for its TLS handshake.
pub const HANDSHAKE: Duration = Duration::from_secs(10);

/// The acceptor for the certificate chain in `cert` and the key in `key`.
///
/// # Errors
/// Files that cannot be read, hold no certificate or key, a key others
/// can read, or a key that does not match the certificate.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    use std::os::unix::fs::PermissionsExt;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("[web] tls-cert {}: cannot read it", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("[web] tls-cert {}: not PEM certificates", cert.display()))?;
    if chain.is_empty() {
        bail!("[web] tls-cert {} holds no certificate", cert.display());
    }
    let mode = std::fs::metadata(key)
        .with_context(|| format!("[web] tls-key {}: cannot read it", key.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "[web] tls-key {} can be read by other users: chmod 600 it",
            key.display()
        );
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("[web] tls-key {}: no PEM private key in it", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .context("[web] tls-key does not match tls-cert")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `router` over TLS on `listener` until `shutdown`.
pub async fn serve(
    mut listener: Capped,
    router: Router,
    acceptor: TlsAcceptor,
    shutdown: CancellationToken,
) {
    use axum::serve::Listener;
    loop {
        let (io, addr) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE, acceptor.accept(io)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!("web: TLS handshake with {addr} failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}
