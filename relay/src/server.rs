//! The relay server: both listeners, the catalog watcher, graceful shutdown.
//!
//! [`run`] binds the session and pairing listeners, writes their actual
//! addresses to `run/listen.json`, and serves until `shutdown` is cancelled
//! (SIGINT/SIGTERM in the binary). Open sessions are then told the relay is
//! shutting down and given a moment to finish before the function returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_net::io::keyfile;
use ferry_net::io::FramedIo;
use ferry_protocol::timestamp::ReplayGuard;
use ferry_protocol::version::Preamble;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::admission::{Admission, Ticket};
use crate::config::{Limits, RelayConfig};
use crate::data_dir::DataDir;
use crate::pairing_service::PairingContext;
use crate::rates::{local_now, Rates};
use crate::registry::Registry;
use crate::repo::Repo;
use crate::session_service::SessionContext;
use crate::status::StatusSources;

/// How often the server looks for admin changes (e.g. a removed client).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(400);
/// Refused connections being told "busy" at once, per listener; beyond
/// this a refused connection is just dropped.
pub const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// Attempts (100 ms apart) to take the data directory's lock at start.
const LOCK_TRIES: usize = 20;
/// How long open connections get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// `relay.toml`'s sections the server needs, resolved.
struct Settings {
    config: RelayConfig,
    limits: Limits,
    gc: crate::config::GcSchedule,
    verify: crate::config::VerifySchedule,
    alerts: crate::config::Alerts,
    quotas: crate::config::Quotas,
    web: Option<crate::web::WebSettings>,
    recovery_recipient: Option<[u8; 32]>,
}

impl Settings {
    fn resolve(data: &DataDir, web: Option<SocketAddr>) -> Result<Self> {
        let config = data.config()?;
        let mut web_config = config.web.clone();
        // A relative token file is the data directory's, wherever the relay runs.
        web_config.token_file = web_config.token_file.map(|path| data.root().join(path));
        web_config.tls_cert = web_config.tls_cert.map(|path| data.root().join(path));
        web_config.tls_key = web_config.tls_key.map(|path| data.root().join(path));
        Ok(Settings {
            limits: config.limits.resolve()?,
            gc: config.gc.resolve()?,
            verify: config.verify.resolve()?,
            alerts: config.alerts.resolve()?.rooted(data.root()),
            quotas: config.quota.resolve()?,
            web: crate::web::WebSettings::resolve(&web_config, web, crate::web_tokens::path(data))?,
            recovery_recipient: config.sealed.recipient()?,
            config,
        })
    }
}

/// Handshake timestamps saved by the last run (replay protection).
type SavedHandshakes = Vec<(
    ferry_protocol::keys::PublicKey,
    ferry_protocol::timestamp::Timestamp,
)>;

/// The listeners, bound.
struct Listeners {
    sessions: TcpListener,
    pairing: TcpListener,
    web: Option<(crate::web::WebSettings, TcpListener)>,
}

/// What the server's tasks share, each taking the parts it uses.
struct Parts {
    sessions: Arc<SessionContext>,
    pairing: Arc<PairingContext>,
    status: Arc<StatusSources>,
}

/// Serves the relay in `data` until `shutdown` is cancelled; `web`
/// overrides `[web] listen`.
///
/// # Errors
/// When the data directory is unusable or a listener cannot be bound.
pub async fn run(
    data: DataDir,
    web: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut settings = Settings::resolve(&data, web)?;
    let _lock = lock(&data).await?;
    let keys = data.keys()?;
    let (repo, rates, handshakes) = open_repo(&data, &settings)?;
    let listeners = bind(&data, &settings.config, settings.web.take()).await?;
    let serving = (
        listeners.sessions.local_addr()?,
        listeners.pairing.local_addr()?,
    );
    let fingerprint = keys.public.fingerprint();
    info!(
        "relay {fingerprint} listening: sessions on {}, pairing on {}",
        serving.0, serving.1
    );
    let repo = Arc::new(repo);
    let (registry, telemetry) = (Arc::new(Registry::default()), Arc::default());
    let parts = Parts {
        status: Arc::new(StatusSources::new(
            Arc::clone(&repo),
            Arc::clone(&registry),
            Arc::clone(&rates),
            Arc::clone(&telemetry),
            keys.public.fingerprint().to_string(),
            (settings.alerts.clone(), settings.quotas),
        )),
        pairing: Arc::new(PairingContext {
            keys: keys.clone(),
            lan_networks: settings.config.lan_networks.clone(),
            handshake_timeout: settings.limits.handshake_timeout,
            repo: Arc::clone(&repo),
            session_addr: listeners.sessions.local_addr()?,
            public: settings.config.public.clone(),
            registry: Arc::clone(&registry),
            require_sealed: settings.config.clients.require_sealed,
        }),
        sessions: Arc::new(SessionContext {
            keys,
            limits: settings.limits.clone(),
            lan_networks: settings.config.lan_networks.clone(),
            retention: settings.config.retention,
            quotas: settings.quotas,
            suspicion: settings.alerts.suspicious,
            recovery_recipient: settings.recovery_recipient,
            repo,
            rates,
            replay: Mutex::new(ReplayGuard::with_saved(handshakes)),
            registry,
            queued: crate::queue_budget::QueueBudget::relay_wide(),
            joins: crate::queue_budget::joins(),
            telemetry,
            shutdown: shutdown.clone(),
        }),
    };
    let tracker = TaskTracker::new();
    spawn_tasks(&tracker, &data, &settings, listeners, &parts, &shutdown);
    tell_systemd(&tracker, serving, &parts.sessions.repo, &shutdown);
    shutdown.cancelled().await;
    ferry_net::systemd::stopping();
    info!(
        "shutting down: closing {} open session(s)",
        parts.sessions.registry.len()
    );
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        warn!("some connections did not finish within {SHUTDOWN_GRACE:?}; dropping them");
    }
    save_handshake_times(&parts.sessions).await;
    // A missing file is fine: the relay is stopping either way.
    let _ = std::fs::remove_file(data.listen_file());
    info!("relay stopped");
    Ok(())
}

/// Tells systemd the relay is ready, and beats its watchdog while the
/// catalog answers: a relay whose catalog hangs is restarted rather than
/// refusing every session quietly.
fn tell_systemd(
    tracker: &TaskTracker,
    (sessions, pairing): (SocketAddr, SocketAddr),
    repo: &Arc<Repo>,
    shutdown: &CancellationToken,
) {
    ferry_net::systemd::ready(&format!("sessions on {sessions}, pairing on {pairing}"));
    let (repo, shutdown) = (Arc::clone(repo), shutdown.clone());
    tracker.spawn(async move {
        let beats = ferry_net::systemd::watchdog(|| {
            let repo = Arc::clone(&repo);
            async move { repo.db(|c| c.setting("alerts_held")).await.is_ok() }
        });
        tokio::select! {
            () = beats => {}
            () = shutdown.cancelled() => {}
        }
    });
}

/// Takes the data directory's lock. Admin commands take it for an instant
/// to see whether a relay serves (`ferry-relay gc` waiting for one): a
/// start at that instant waits a moment rather than failing.
async fn lock(data: &DataDir) -> Result<crate::data_dir::DataLock> {
    for _ in 0..LOCK_TRIES {
        if let Some(lock) = data.try_lock()? {
            return Ok(lock);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    data.try_lock()?.ok_or_else(|| {
        anyhow::anyhow!(
            "another ferry-relay is serving {} ({} is locked)",
            data.root().display(),
            data.lock_path().display()
        )
    })
}

/// Opens the catalog (finishing an interrupted repair, checking it, using
/// the disk reserve to start on a full disk) and the packs; returns the
/// repo, the rates with the stored limits, and the saved handshake times.
fn open_repo(data: &DataDir, settings: &Settings) -> Result<(Repo, Arc<Rates>, SavedHandshakes)> {
    if let Some(done) = crate::catalog::settle_interrupted_repair(&data.catalog_path())? {
        tracing::warn!("{done}");
    }
    let reserve = Arc::new(crate::reserve::DiskReserve::new(data.reserve_path()));
    let mut catalog = match data.catalog() {
        Ok(catalog) => catalog,
        // Stopped on a full disk: the reserve makes room to start, so
        // restores work while backups are refused until there is room.
        Err(e) if reserve.release() => {
            tracing::warn!(
                "cannot open the catalog ({e:#}); released the disk reserve ({} bytes) to start: the disk is full, so restores are served and backups refused until there is room",
                crate::reserve::RESERVE_BYTES
            );
            data.catalog()?
        }
        Err(e) => return Err(e),
    };
    let checked = catalog.quick_check()?;
    if checked != "ok" {
        anyhow::bail!(
            "the catalog {} is damaged ({checked}); with the relay stopped, run `ferry-relay verify --repair-catalog`",
                        data.catalog_at()
        );
    }
    crate::gc_service::drop_stale_request(&mut catalog)?;
    // Trees staged by uploads this relay left open when killed: none of
    // its uploads is open now (relays sharing the catalog keep theirs).
    let relay = data.relay_id()?;
    catalog.drop_staged_trees_of(crate::repo::upload_ids_of(relay))?;
    catalog.release_leases_of(relay)?;
    let rates = Rates::new(settings.config.rates.resolve()?, local_now());
    rates.set_overrides(catalog.global_limit()?, catalog.client_limits()?);
    let handshakes = catalog.handshake_times()?;
    let storage = data.storage(&settings.config.storage)?;
    let repo = Repo::open(catalog, data.catalog_at(), &storage)?.with_lookups()?;
    repo.set_relay(relay, settings.gc.lease);
    repo.uploads().set_max_age(settings.gc.max_upload_age);
    reserve.ensure();
    Ok((repo.with_reserve(reserve), Arc::new(rates), handshakes))
}

/// Binds the listeners and writes their addresses to `run/listen.json`.
async fn bind(
    data: &DataDir,
    config: &RelayConfig,
    web: Option<crate::web::WebSettings>,
) -> Result<Listeners> {
    let sessions = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen for sessions on {}", config.listen))?;
    let pairing = TcpListener::bind(config.pair_listen)
        .await
        .with_context(|| format!("cannot listen for pairing on {}", config.pair_listen))?;
    let web = match web {
        Some(settings) => {
            let listener = crate::web::bind(&settings).await?;
            Some((settings, listener))
        }
        None => None,
    };
    let web_addr = match &web {
        Some((_, listener)) => Some(listener.local_addr()?),
        None => None,
    };
    let listen = serde_json::json!({
        "session": sessions.local_addr()?,
        "pairing": pairing.local_addr()?,
        "web": web_addr,
    });
    // A full disk must not keep the relay from serving restores: without
    // this file only tools that look for a relay started on port 0 miss it.
    if let Err(e) = keyfile::write_private(&data.listen_file(), listen.to_string().as_bytes()) {
        tracing::error!(
            "cannot write {} ({e:#}); serving anyway (is the disk full? backups are refused until there is room, restores work)",
            data.listen_file().display()
        );
    }
    Ok(Listeners {
        sessions,
        pairing,
        web,
    })
}

/// Starts the listeners' accept loops and the background tasks.
fn spawn_tasks(
    tracker: &TaskTracker,
    data: &DataDir,
    settings: &Settings,
    listeners: Listeners,
    parts: &Parts,
    shutdown: &CancellationToken,
) {
    if let Some((web, listener)) = listeners.web {
        if let Ok(bound) = listener.local_addr() {
            crate::web::announce(&web, bound);
        }
        let status = Arc::clone(&parts.status);
        let services = crate::web::actions::Services::new(
            data.clone(),
            Arc::clone(&parts.sessions.repo),
            settings.gc.grace,
            (data.catalog_at(), settings.verify.options.clone()),
        );
        tracker.spawn(crate::web::serve(
            status,
            services,
            web,
            listener,
            shutdown.clone(),
        ));
    }
    let status = Arc::clone(&parts.status);
    tracker.spawn(crate::alerts::watch(status, shutdown.clone()));
    let admission = Arc::new(Admission::new(&settings.limits));
    tracker.spawn(accept_loop(
        Arc::clone(&parts.sessions),
        Arc::clone(&admission),
        listeners.sessions,
        tracker.clone(),
        shutdown.clone(),
        crate::session_service::serve,
    ));
    tracker.spawn(accept_loop(
        Arc::clone(&parts.pairing),
        Arc::clone(&admission),
        listeners.pairing,
        tracker.clone(),
        shutdown.clone(),
        crate::pairing_service::serve,
    ));
    tracker.spawn(watch_catalog(
        Arc::clone(&parts.sessions),
        admission,
        data.rates_file(),
    ));
    let repo = &parts.sessions.repo;
    if let Some((relay, _)) = repo.relay() {
        tracker.spawn(crate::presence::heartbeat(
            Arc::clone(repo),
            relay,
            shutdown.clone(),
        ));
    }
    if let Some(interval) = settings.gc.interval {
        let gc = crate::gc_service::periodic(
            Arc::clone(repo),
            interval,
            settings.gc.grace,
            shutdown.clone(),
        );
        tracker.spawn(gc);
    }
    if let Some(interval) = settings.verify.interval {
        tracker.spawn(crate::verify::periodic(
            data.catalog_at(),
            repo.blobs().store().reader(),
            settings.verify.options.clone(),
            interval,
            shutdown.clone(),
        ));
    }
}

/// Accepts connections on `listener` until shutdown, handing each one
/// admitted to `handler` with `context`.
async fn accept_loop<C, H, Fut>(
    context: Arc<C>,
    admission: Arc<Admission>,
    listener: TcpListener,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(Arc<C>, TcpStream, SocketAddr, Ticket) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Typically EMFILE: back off rather than spin.
                error!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match admission.admit(peer.ip()) {
            Ok(ticket) => {
                // Nagle would delay small handshake and ping frames.
                let _ = stream.set_nodelay(true);
                tracker.spawn(handler(Arc::clone(&context), stream, peer, ticket));
            }
            Err(refusal) => {
                warn!("refused connection from {peer}: {refusal}");
                // Tell the peer it is busy, closing gracefully so the word
                // arrives; only a bounded number of such goodbyes at once.
                if let Ok(slot) = Arc::clone(&refusals).try_acquire_owned() {
                    tracker.spawn(async move {
                        let _slot = slot;
                        let mut io = FramedIo::new(stream);
                        if io.write_raw(&Preamble::busy()).await.is_ok() {
                            io.close(Duration::from_millis(500)).await;
                        }
                    });
                }
            }
        }
    }
}

/// Notices admin changes made by other processes and acts on them: sessions
/// of removed clients are closed, limits reloaded, `ferry-relay gc` answered.
async fn watch_catalog(
    shared: Arc<SessionContext>,
    admission: Arc<Admission>,
    rates_file: std::path::PathBuf,
) {
    let mut last_version = None;
    let mut gc_started = None;
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
        ticks += 1;
        if ticks % 150 == 0 {
            admission.prune();
        }
        let checked = shared
            .repo
            .db(move |c| {
                let version = c.data_version()?;
                if Some(version) == last_version {
                    return Ok((version, None));
                }
                let limits = (c.global_limit()?, c.client_limits()?);
                let gc = crate::gc_service::pending_request(c)?;
                Ok((version, Some((c.active_client_keys()?, limits, gc))))
            })
            .await;
        match checked {
            Ok((version, active)) => {
                last_version = Some(version);
                if let Some((active, (global, clients), gc)) = active {
                    if let Some(request) = gc.filter(|r| Some(r.id) != gc_started) {
                        gc_started = Some(request.id);
                        tokio::spawn(crate::gc_service::serve_request(
                            Arc::clone(&shared.repo),
                            request,
                        ));
                    }
                    for client in shared.registry.revoke_inactive(&active) {
                        info!("client {client} was removed or moved to a new key: closing the old sessions");
                    }
                    shared.rates.set_overrides(global, clients);
                }
                shared.rates.refresh(local_now());
                publish_rates(&shared, &rates_file);
                save_handshake_times(&shared).await;
            }
            Err(e) => error!("cannot watch the catalog: {e:#}"),
        }
    }
}

/// Saves the handshake timestamps accepted since the last save (one
/// transaction, only when there are any), so replay protection survives a
/// restart; a crash loses at most one watch interval of them.
async fn save_handshake_times(shared: &SessionContext) {
    let times = shared
        .replay
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take_changes();
    if times.is_empty() {
        return;
    }
    if let Err(e) = shared
        .repo
        .db(move |c| c.save_handshake_times(&times))
        .await
    {
        error!("cannot save handshake times (replay protection across restarts): {e:#}");
    }
}

/// Writes `run/rates.json` for `ferry-relay clients list` to show live rates.
/// Ephemeral: written by rename, not fsynced; a failure is only logged.
fn publish_rates(shared: &SessionContext, path: &std::path::Path) {
    let report = shared.rates.report(crate::clock::now_ms());
    let tmp = path.with_extension("tmp");
    let written = serde_json::to_vec(&report)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::debug!("cannot write {}: {e}", path.display());
    }
}
