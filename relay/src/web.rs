//! The relay's web listener (`[web] listen`, `serve --web ADDR`), on the
//! server's own runtime, with axum: the overview (`GET /`), a page per
//! client, an open-mode snapshot's files to browse and download, actions
//! behind a confirmation, the status as JSON (`GET /api/status`) and
//! Prometheus metrics (`GET /metrics`). Off unless configured.
//!
//! Who may do what (`auth`): a browser signs in with a web token (made by
//! `init` or `ferry-relay web-token`) and gets a login cookie; scripts
//! send `Authorization: Bearer TOKEN`. On a loopback listener without
//! `[web] token-file` the status (`/`, `/api/status`, `/metrics`) is open
//! to this host, as before logins; everything else needs a login, and
//! acting needs the admin token's. Any other address needs a token.
//! At most `listener::MAX_CONNECTIONS` connections are served at once, so
//! the page can never take the file descriptors the sessions need.

pub mod actions;
pub mod auth;
pub mod download;
pub mod listener;
pub mod metrics;
pub mod pages;
pub mod percent;
pub mod refusals;
pub mod tls;
pub mod views;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::config::WebConfig;
use crate::status::StatusSources;
use refusals::Refusal;
use tokio_util::sync::CancellationToken;

/// Where the web listener listens and what it asks of requests.
#[derive(Clone)]
pub struct WebSettings {
    /// The address to bind.
    pub listen: SocketAddr,
    /// BLAKE3 of `[web] token-file`'s token (an admin's), if set.
    token_hash: Option<[u8; 32]>,
    /// `DATA/web-tokens.json`.
    tokens_file: std::path::PathBuf,
    /// `[web] host`: the names a reverse proxy in front sends as `Host`.
    proxy_hosts: Vec<String>,
    /// `[web] tls-cert` and `tls-key`, ready: HTTPS instead of HTTP.
    tls: Option<tls::Certified>,
}

impl std::fmt::Debug for WebSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSettings")
            .field("listen", &self.listen)
            .field("proxy_hosts", &self.proxy_hosts)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl WebSettings {
    /// The settings from `[web]` and `serve --web` (which wins); `None`
    /// when neither names an address. `tokens_file` holds the web tokens'
    /// hashes.
    ///
    /// # Errors
    /// A non-loopback address without any token, or a token file that
    /// cannot be read, is empty, or is readable by others.
    pub fn resolve(
        config: &WebConfig,
        listen: Option<SocketAddr>,
        tokens_file: std::path::PathBuf,
    ) -> Result<Option<Self>> {
        let Some(listen) = listen.or(config.listen) else {
            return Ok(None);
        };
        let token_hash = match &config.token_file {
            Some(path) => Some(crate::web_tokens::hash(&read_token(path)?)),
            None => None,
        };
        let has_tokens = token_hash.is_some() || !crate::web_tokens::load(&tokens_file)?.is_empty();
        if !listen.ip().is_loopback() && !has_tokens {
            bail!(
                "[web] listen {listen} is not a loopback address: set [web] token-file (a file \
                 holding a bearer token, mode 0600) or make a web token with `ferry-relay \
                 web-token`, so the pages and metrics are not open to everyone who can reach it"
            );
        }
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::Certified::load(cert, key)?),
            (None, None) => None,
            _ => bail!("[web] tls-cert and tls-key go together: set both, or neither"),
        };
        Ok(Some(WebSettings {
            listen,
            token_hash,
            tokens_file,
            proxy_hosts: config.host.clone(),
            tls,
        }))
    }

    /// Whether the status is open without a token (a loopback listener
    /// without `[web] token-file`).
    pub fn open_status(&self) -> bool {
        self.listen.ip().is_loopback() && self.token_hash.is_none()
    }
}

/// The token in `path`: its first line, trimmed.
fn read_token(path: &Path) -> Result<String> {
    let token = crate::secret_file::first_line(path, "[web] token-file")?;
    if token.len() < 16 {
        bail!(
            "[web] token-file {} must hold a token of at least 16 characters",
            path.display()
        );
    }
    Ok(token)
}

/// Binds the listener (so a bad address fails the start, and the bound
/// port is known when `listen` asks for port 0).
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(settings: &WebSettings) -> Result<TcpListener> {
    TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen for the web status on {}", settings.listen))
}

/// What every request handler shares.
#[derive(Clone)]
pub struct App {
    /// The relay's status.
    pub status: Arc<StatusSources>,
    /// Tokens and logins.
    pub access: Arc<auth::Access>,
    /// What the actions act on.
    pub services: Arc<actions::Services>,
    /// Log lines about refused requests, rate-limited.
    pub refusals: Arc<refusals::Refusals>,
    /// The `Host` a request must name (`None`: any): a loopback
    /// listener's own names (and `[web] host`'s), so a page of some web
    /// site that a browser on this host loads cannot read it by DNS
    /// rebinding.
    hosts: Option<Arc<Vec<String>>>,
}

/// The `Host` values that name a loopback listener on `port`.
fn loopback_hosts(listen: SocketAddr, port: u16) -> Vec<String> {
    let mut hosts = vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    let own = SocketAddr::new(listen.ip(), port).to_string();
    if !hosts.contains(&own) {
        hosts.push(own);
    }
    hosts
}

/// Warnings that a flood of requests or connections would repeat: at most
/// one line per [`LogGate::EVERY`], which says how many were held back.
#[derive(Debug, Default)]
pub struct LogGate {
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl LogGate {
    /// The least time between two lines.
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    /// Logs `line` as a warning, unless one was logged less than
    /// [`LogGate::EVERY`] ago (then it is only counted).
    pub fn warn(&self, line: std::fmt::Arguments<'_>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, held_back) = &mut *state;
        if last.is_some_and(|at| at.elapsed() < Self::EVERY) {
            *held_back += 1;
            return;
        }
        match std::mem::take(held_back) {
            0 => warn!("{line}"),
            n => warn!("{line} ({n} more like it since the last such line)"),
        }
        *last = Some(std::time::Instant::now());
    }

    /// Lines held back since the last one logged.
    pub fn held_back(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

/// Serves the web listener until the relay shuts down.
pub async fn serve(
    status: Arc<StatusSources>,
    services: actions::Services,
    settings: WebSettings,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    let port = listener
        .local_addr()
        .map_or(settings.listen.port(), |a| a.port());
    // A loopback listener answers to its own names; one that names the
    // proxies in front of it, to those as well.
    let limited = settings.listen.ip().is_loopback() || !settings.proxy_hosts.is_empty();
    let hosts = limited.then(|| {
        let mut hosts = loopback_hosts(settings.listen, port);
        hosts.extend(settings.proxy_hosts.iter().cloned());
        Arc::new(hosts)
    });
    let refusals = Arc::new(refusals::Refusals::new(Arc::clone(&status.telemetry)));
    let app = App {
        access: Arc::new(auth::Access::new(
            settings.token_hash,
            settings.tokens_file.clone(),
            settings.open_status(),
        )),
        status,
        services: Arc::new(services),
        refusals,
        hosts,
    };
    let capped = listener::Capped::new(listener);
    if let Some(certified) = settings.tls {
        return tls::serve(capped.for_tls(), pages::router(app), certified, shutdown).await;
    }
    if let Err(e) = axum::serve(capped, pages::router(app))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        error!("web listener failed: {e}");
    }
}

/// Refuses a request whose `Host` is not one the listener answers to,
/// and hands the others on with their [`auth::Visitor`].
pub async fn guard(State(app): State<App>, mut request: Request, next: Next) -> Response {
    if let Some(hosts) = &app.hosts {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            app.refusals.note(Refusal::Host, format_args!(
                "web: refused {} {}: Host {:?} is not this loopback listener (a web page's DNS rebinding?)",
                request.method(),
                request.uri().path(),
                ferry_protocol::units::printable(host.as_bytes())
            ));
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "this status page answers only to its loopback address\n",
            )
                .into_response();
        }
    }
    let visitor = app.access.visitor(request.headers());
    if visitor.bearer && visitor.role.is_none() {
        app.refusals.note(
            Refusal::Bearer,
            format_args!(
                "web: refused {} {}: missing or wrong bearer token",
                request.method(),
                request.uri().path()
            ),
        );
        return unauthorized();
    }
    request.extensions_mut().insert(visitor);
    next.run(request).await
}

/// 401 with the bearer challenge.
pub fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a bearer token is required (Authorization: Bearer TOKEN), or sign in at /login\n",
    )
        .into_response()
}

/// Says where the web listener is, once, at start.
pub fn announce(settings: &WebSettings, bound: SocketAddr) {
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    info!(
        "web status on {scheme}://{bound}/ ({})",
        if settings.open_status() {
            "loopback only, no token"
        } else {
            "every request needs the bearer token of [web] token-file"
        }
    );
    if !bound.ip().is_loopback() && settings.tls.is_none() {
        warn!(
            "web on plain HTTP at {bound}: scripts with a bearer token work, but browsers sign in \
             only over HTTPS (their login cookie is Secure): put a TLS reverse proxy in front \
             (and name it in [web] host)"
        );
    }
}
