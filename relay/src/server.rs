//! The relay server: both listeners, the catalog watcher, graceful shutdown.
//!
//! [`run`] binds the session and pairing listeners, writes their actual
//! addresses to `run/listen.json`, and serves until `shutdown` is cancelled
//! (SIGINT/SIGTERM in the binary). Open sessions are then told the relay is
//! shutting down and given a moment to finish before the function returns.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_net::io::keyfile;
use ferry_net::io::FramedIo;
use ferry_protocol::keys::StaticKeypair;
use ferry_protocol::timestamp::ReplayGuard;
use ferry_protocol::version::Preamble;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::admission::{Admission, Ticket};
use crate::catalog::Catalog;
use crate::config::{Limits, RelayConfig};
use crate::data_dir::DataDir;
use crate::rates::{local_now, Rates};
use crate::registry::Registry;
use crate::repo::Repo;

/// How often the server looks for admin changes (e.g. a removed client).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(400);
/// Refused connections being told "busy" at once, per listener; beyond
/// this a refused connection is just dropped.
pub const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// Attempts (100 ms apart) to take the data directory's lock at start.
const LOCK_TRIES: usize = 20;
/// How long open connections get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// State shared by every connection handler.
#[derive(Debug)]
pub struct Shared {
    /// The relay's static key.
    pub keys: StaticKeypair,
    /// The loaded configuration.
    pub config: RelayConfig,
    /// Resolved limits.
    pub limits: Limits,
    /// The catalog and the blob store.
    pub repo: Arc<Repo>,
    /// Bandwidth buckets.
    pub rates: Rates,
    /// Newest handshake timestamp per client key.
    pub replay: Mutex<ReplayGuard>,
    /// Open sessions.
    pub registry: Arc<Registry>,
    /// Received bytes all sessions together may hold waiting for their
    /// workers (see `crate::queue_budget`).
    pub queued: Arc<tokio::sync::Semaphore>,
    /// The bound session listener address.
    pub session_addr: SocketAddr,
    /// Cancelled when the relay shuts down.
    pub shutdown: CancellationToken,
    /// `[alerts]`, resolved.
    pub alerts: crate::config::Alerts,
    /// `[quota]`, resolved.
    pub quotas: crate::config::Quotas,
    /// Counters for the metrics, the status page and the alerts.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// The storage sums the status reads, cached briefly.
    pub storage_sums: crate::web::status::StorageSums,
    /// Sessions joining a message of several frames at once (see
    /// `crate::queue_budget::MAX_JOINING`).
    pub joins: Arc<Semaphore>,
}

impl Shared {
    /// Whether `ip` is in the configured LAN networks.
    pub fn is_lan(&self, ip: IpAddr) -> bool {
        self.config.lan_networks.iter().any(|net| net.contains(ip))
    }

    /// Runs `f` on the catalog off the async threads.
    ///
    /// # Errors
    /// Catalog errors, or a panicked worker.
    pub async fn db<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Catalog) -> crate::catalog::Result<T> + Send + 'static,
    {
        self.repo.db(f).await
    }
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
    let config = data.config()?;
    let limits = config.limits.resolve()?;
    let gc = config.gc.resolve()?;
    let verify = config.verify.resolve()?;
    let alerts = config.alerts.resolve()?;
    let quotas = config.quota.resolve()?;
    let mut web_config = config.web.clone();
    // A relative token file is the data directory's, wherever the relay runs.
    web_config.token_file = web_config.token_file.map(|path| data.root().join(path));
    let web = crate::web::WebSettings::resolve(&web_config, web)?;
    // Admin commands take the lock for an instant to see whether a relay
    // serves (`ferry-relay gc` waiting for one): a start at that instant
    // waits a moment rather than failing.
    let mut lock = data.try_lock()?;
    for _ in 0..LOCK_TRIES {
        if lock.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        lock = data.try_lock()?;
    }
    let Some(_lock) = lock else {
        anyhow::bail!(
            "another ferry-relay is serving {} ({} is locked)",
            data.root().display(),
            data.lock_path().display()
        );
    };
    let keys = data.keys()?;
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
            data.catalog_path().display()
        );
    }
    crate::gc_service::drop_stale_request(&mut catalog)?;
    // Trees staged by uploads a killed relay left open: no upload is open now.
    catalog.drop_all_staged_trees()?;
    let rates = Rates::new(config.rates.resolve()?, local_now());
    rates.set_overrides(catalog.global_limit()?, catalog.client_limits()?);
    let handshakes = catalog.handshake_times()?;
    let repo = Repo::open_packs(catalog, &data.catalog_path(), &data.store_dir())?;
    repo.uploads().set_max_age(gc.max_upload_age);
    reserve.ensure();
    let repo = repo.with_reserve(reserve);
    let sessions = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen for sessions on {}", config.listen))?;
    let pairing = TcpListener::bind(config.pair_listen)
        .await
        .with_context(|| format!("cannot listen for pairing on {}", config.pair_listen))?;
    let session_addr = sessions.local_addr()?;
    let pair_addr = pairing.local_addr()?;
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
    let listen =
        serde_json::json!({"session": session_addr, "pairing": pair_addr, "web": web_addr});
    // A full disk must not keep the relay from serving restores: without
    // this file only tools that look for a relay started on port 0 miss it.
    if let Err(e) = keyfile::write_private(&data.listen_file(), listen.to_string().as_bytes()) {
        tracing::error!(
            "cannot write {} ({e:#}); serving anyway (is the disk full? backups are refused until there is room, restores work)",
            data.listen_file().display()
        );
    }
    info!(
        "relay {} listening: sessions on {session_addr}, pairing on {pair_addr}",
        keys.public.fingerprint()
    );

    let tracker = TaskTracker::new();
    let shared = Arc::new(Shared {
        keys,
        config,
        limits: limits.clone(),
        repo: Arc::new(repo),
        rates,
        replay: Mutex::new(ReplayGuard::with_saved(handshakes)),
        registry: Arc::new(Registry::default()),
        queued: crate::queue_budget::QueueBudget::relay_wide(),
        session_addr,
        shutdown: shutdown.clone(),
        alerts,
        quotas,
        telemetry: Arc::default(),
        storage_sums: Default::default(),
        joins: crate::queue_budget::joins(),
    });
    if let (Some((settings, listener)), Some(bound)) = (web, web_addr) {
        crate::web::announce(&settings, bound);
        tracker.spawn(crate::web::serve(Arc::clone(&shared), settings, listener));
    }
    tracker.spawn(crate::alerts::watch(Arc::clone(&shared)));
    let admission = Arc::new(Admission::new(&limits));
    tracker.spawn(accept_loop(
        Arc::clone(&shared),
        Arc::clone(&admission),
        sessions,
        tracker.clone(),
        crate::session_service::serve,
    ));
    tracker.spawn(accept_loop(
        Arc::clone(&shared),
        Arc::clone(&admission),
        pairing,
        tracker.clone(),
        crate::pairing_service::serve,
    ));
    tracker.spawn(watch_catalog(
        Arc::clone(&shared),
        admission,
        data.rates_file(),
    ));
    if let Some(interval) = gc.interval {
        tracker.spawn(crate::gc_service::periodic(
            Arc::clone(&shared),
            interval,
            gc.grace,
        ));
    }

    if let Some(interval) = verify.interval {
        tracker.spawn(crate::verify::periodic(
            data.catalog_path(),
            data.store_dir(),
            verify.options,
            interval,
            shutdown.clone(),
        ));
    }

    shutdown.cancelled().await;
    info!(
        "shutting down: closing {} open session(s)",
        shared.registry.len()
    );
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        warn!("some connections did not finish within {SHUTDOWN_GRACE:?}; dropping them");
    }
    save_handshake_times(&shared).await;
    // A missing file is fine: the relay is stopping either way.
    let _ = std::fs::remove_file(data.listen_file());
    info!("relay stopped");
    Ok(())
}

async fn accept_loop<H, Fut>(
    shared: Arc<Shared>,
    admission: Arc<Admission>,
    listener: TcpListener,
    tracker: TaskTracker,
    handler: H,
) where
    H: Fn(Arc<Shared>, TcpStream, SocketAddr, Ticket) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
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
                tracker.spawn(handler(Arc::clone(&shared), stream, peer, ticket));
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
    shared: Arc<Shared>,
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
            .db(move |c| {
                let version = c.data_version()?;
                if Some(version) == last_version {
                    return Ok((version, None));
                }
                let limits = (c.global_limit()?, c.client_limits()?);
                let gc = crate::gc_service::pending_request(c)?;
                Ok((version, Some((c.active_client_ids()?, limits, gc))))
            })
            .await;
        match checked {
            Ok((version, active)) => {
                last_version = Some(version);
                if let Some((active, (global, clients), gc)) = active {
                    if let Some(request) = gc.filter(|r| Some(r.id) != gc_started) {
                        gc_started = Some(request.id);
                        tokio::spawn(crate::gc_service::serve_request(
                            Arc::clone(&shared),
                            request,
                        ));
                    }
                    for client in shared.registry.revoke_inactive(&active) {
                        info!("client {client} was removed: closing its sessions");
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
async fn save_handshake_times(shared: &Shared) {
    let times = shared
        .replay
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take_changes();
    if times.is_empty() {
        return;
    }
    if let Err(e) = shared.db(move |c| c.save_handshake_times(&times)).await {
        error!("cannot save handshake times (replay protection across restarts): {e:#}");
    }
}

/// Writes `run/rates.json` for `ferry-relay clients list` to show live rates.
/// Ephemeral: written by rename, not fsynced; a failure is only logged.
fn publish_rates(shared: &Shared, path: &std::path::Path) {
    let report = shared.rates.report(crate::catalog::now_ms());
    let tmp = path.with_extension("tmp");
    let written = serde_json::to_vec(&report)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::debug!("cannot write {}: {e}", path.display());
    }
}
