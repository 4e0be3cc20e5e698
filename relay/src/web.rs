//! The relay's web listener (`[web] listen`, `serve --web ADDR`): the
//! status page (`GET /`), the same as JSON (`GET /api/status`) and
//! Prometheus metrics (`GET /metrics`), on the server's own runtime, with
//! axum. Off unless configured. A loopback address needs nothing more; any
//! other needs `[web] token-file`, and then every request must carry
//! `Authorization: Bearer TOKEN` (compared in constant time), or gets 401.
//! At most `listener::MAX_CONNECTIONS` connections are served at once, so
//! the page can never take the file descriptors the sessions need.

pub mod listener;
pub mod metrics;
pub mod page;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::config::WebConfig;
use crate::status::StatusSources;
use tokio_util::sync::CancellationToken;

/// Where the web listener listens and what it asks of requests.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// The address to bind.
    pub listen: SocketAddr,
    /// BLAKE3 of the bearer token every request must carry (`None`: none).
    token_hash: Option<[u8; 32]>,
}

impl WebSettings {
    /// The settings from `[web]` and `serve --web` (which wins); `None`
    /// when neither names an address.
    ///
    /// # Errors
    /// A non-loopback address without a token file, or a token file that
    /// cannot be read, is empty, or is readable by others.
    pub fn resolve(config: &WebConfig, listen: Option<SocketAddr>) -> Result<Option<Self>> {
        let Some(listen) = listen.or(config.listen) else {
            return Ok(None);
        };
        let token_hash = match &config.token_file {
            Some(path) => Some(*blake3::hash(read_token(path)?.as_bytes()).as_bytes()),
            None if listen.ip().is_loopback() => None,
            None => bail!(
                "[web] listen {listen} is not a loopback address: set [web] token-file (a file \
                 holding a bearer token, mode 0600) so the status page and metrics are not open \
                 to everyone who can reach it"
            ),
        };
        Ok(Some(WebSettings { listen, token_hash }))
    }

    /// Whether requests must carry a token.
    pub fn needs_token(&self) -> bool {
        self.token_hash.is_some()
    }
}

/// The token in `path`: its first line, trimmed.
fn read_token(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("[web] token-file {}: cannot read it", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "[web] token-file {} can be read by other users: chmod 600 it",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("[web] token-file {}: cannot read it", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
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

#[derive(Clone)]
struct App {
    status: Arc<StatusSources>,
    token_hash: Option<[u8; 32]>,
    /// Log lines about refused requests, rate-limited.
    refusals: Arc<LogGate>,
    /// Without a token, the `Host` a request must name (the loopback
    /// listener under its names): a page of some web site that a browser
    /// on this host loads cannot read it by DNS rebinding.
    hosts: Arc<Vec<String>>,
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
}

/// Serves the web listener until the relay shuts down.
pub async fn serve(
    status: Arc<StatusSources>,
    settings: WebSettings,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    let port = listener
        .local_addr()
        .map_or(settings.listen.port(), |a| a.port());
    let app = App {
        status,
        token_hash: settings.token_hash,
        refusals: Arc::default(),
        hosts: Arc::new(loopback_hosts(settings.listen, port)),
    };
    let router = Router::new()
        .route("/", get(status_page))
        .route("/api/status", get(status_json))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .with_state(app);
    if let Err(e) = axum::serve(listener::Capped::new(listener), router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        error!("web listener failed: {e}");
    }
}

/// Lets a request through when no token is needed or it carries the token.
async fn authorize(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(expected) = app.token_hash else {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if app.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return next.run(request).await;
        }
        app.refusals.warn(format_args!(
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
    };
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|token| *blake3::hash(token.trim().as_bytes()).as_bytes());
    match offered {
        Some(hash) if bool::from(hash.ct_eq(&expected)) => next.run(request).await,
        _ => {
            app.refusals.warn(format_args!(
                "web: refused {} {}: missing or wrong bearer token",
                request.method(),
                request.uri().path()
            ));
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required (Authorization: Bearer TOKEN)\n",
            )
                .into_response()
        }
    }
}

async fn status_page(State(app): State<App>) -> Response {
    match app.status.read().await {
        Ok(status) => Html(page::render(&status)).into_response(),
        Err(e) => failed(&e),
    }
}

async fn status_json(State(app): State<App>) -> Response {
    match app.status.read().await {
        Ok(status) => Json(status).into_response(),
        Err(e) => failed(&e),
    }
}

async fn metrics_text(State(app): State<App>) -> Response {
    let text = app.status.read().await.and_then(|status| {
        metrics::render(&status, &app.status.telemetry).map_err(anyhow::Error::from)
    });
    match text {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => failed(&e),
    }
}

fn failed(e: &anyhow::Error) -> Response {
    error!("web: cannot read the relay's status: {e:#}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "cannot read the relay's status; see the relay's log\n",
    )
        .into_response()
}

/// Says where the web listener is, once, at start.
pub fn announce(settings: &WebSettings, bound: SocketAddr) {
    info!(
        "web status on http://{bound}/ ({})",
        if settings.needs_token() {
            "every request needs the bearer token of [web] token-file"
        } else {
            "loopback only, no token"
        }
    );
}
