//! HTTPS for the web listener (`[web] tls-cert`, `tls-key`): each accepted
//! connection does its TLS handshake (within [`HANDSHAKE`]) on its own
//! task, then is served by hyper with the same router as plain HTTP. The
//! connection caps of `listener` hold as for plain HTTP.
//!
//! A renewed certificate (certbot's, every 60 days) is taken without a
//! restart: when the files' modification times change, the next
//! connection (at most one look per [`RECHECK`]) loads them anew; files
//! caught half-written, or a key that no longer matches, keep the old
//! pair serving and are said in the log once per change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use axum::Router;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::listener::Capped;

/// How long a client has for its TLS handshake.
pub const HANDSHAKE: Duration = Duration::from_secs(10);

/// The least time between two looks at the certificate's files.
pub const RECHECK: Duration = Duration::from_secs(2);

/// `[web] tls-cert` and `tls-key`, loaded, and loaded again when they
/// change.
#[derive(Clone)]
pub struct Certified {
    cert: PathBuf,
    key: PathBuf,
    acceptor: TlsAcceptor,
    /// The files' modification times when last looked at.
    seen: (Option<SystemTime>, Option<SystemTime>),
    looked: Instant,
}

impl Certified {
    /// Loads the pair.
    ///
    /// # Errors
    /// As [`acceptor`].
    pub fn load(cert: &Path, key: &Path) -> Result<Self> {
        let seen = modified(cert, key);
        Ok(Certified {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            acceptor: acceptor(cert, key)?,
            seen,
            looked: Instant::now(),
        })
    }

    /// The acceptor for a new connection: the files' pair as they are now,
    /// if they changed since the last look and load cleanly; else the one
    /// serving.
    pub fn current(&mut self) -> TlsAcceptor {
        if self.looked.elapsed() >= RECHECK {
            self.looked = Instant::now();
            let now = modified(&self.cert, &self.key);
            if now != self.seen {
                self.seen = now;
                match acceptor(&self.cert, &self.key) {
                    Ok(fresh) => {
                        tracing::info!(
                            "web: TLS certificate {} loaded again (it changed)",
                            self.cert.display()
                        );
                        self.acceptor = fresh;
                    }
                    Err(e) => tracing::error!(
                        "web: the changed TLS certificate cannot be used, the one before \
                         still serves: {e:#}"
                    ),
                }
            }
        }
        self.acceptor.clone()
    }
}

fn modified(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (at(cert), at(key))
}

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
    mut certified: Certified,
    shutdown: CancellationToken,
) {
    use axum::serve::Listener;
    loop {
        let (io, addr) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (acceptor, router) = (certified.current(), router.clone());
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
            // The listener cannot see request heads inside TLS records:
            // hyper cuts a slow head here, as the listener does over HTTP.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(super::listener::HEAD_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}
