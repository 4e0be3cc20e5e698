//! One session connection on the relay: preamble, `Noise_IK` handshake with
//! key and replay checks, then the message loop until either side closes,
//! the link idles out, the client is removed or the relay shuts down.
//!
//! A first message that is not for this relay's key, from an unknown or
//! removed key, or replayed, gets no reply at all: the connection is
//! dropped and the operator gets one log line saying why.
//!
//! The service takes only what it uses ([`SessionContext`], built once by
//! `server::run`); the handshake, the conversation, the worker and the
//! meter are its parts.

mod conversation;
mod handshake;
mod meter;
mod worker;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use ferry_net::io::Stream;
use ferry_net::io::{Channel, FramedIo};
use ferry_protocol::keys::StaticKeypair;
use ferry_protocol::timestamp::ReplayGuard;
use ferry_protocol::transport::Transport;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admission::Ticket;
use crate::catalog::ClientRecord;
use crate::clock::now_ms;
use crate::config::{Limits, Quotas};
use crate::gate::Liveness;
use crate::net::IpNet;
use crate::rates::{local_now, PathKind, Rates};
use crate::registry::Registry;
use crate::repo::Repo;
use crate::telemetry::Telemetry;
use crate::transfer::{InternetPolicy, Transfer};
use conversation::{close, greet, Ends};
use handshake::Handshaken;
pub use meter::{BackupWatch, Meter};

/// The software string sent in `Hello`.
pub const SOFTWARE: &str = concat!("ferry-relay ", env!("CARGO_PKG_VERSION"));

/// What sessions need of the relay, built once by `server::run`.
#[derive(Debug)]
pub struct SessionContext {
    /// The relay's static key.
    pub keys: StaticKeypair,
    /// Resolved limits.
    pub limits: Limits,
    /// Sources counted as LAN (their sessions use the LAN rates).
    pub lan_networks: Vec<IpNet>,
    /// The relay's retention rules for sets without their own.
    pub retention: ferry_protocol::keep::Rules,
    /// `[quota]`, resolved.
    pub quotas: Quotas,
    /// `[alerts.suspicious]`: when a backup is held as suspicious.
    pub suspicion: crate::suspicion::Thresholds,
    /// `[sealed] recovery-recipient`, read.
    pub recovery_recipient: Option<[u8; 32]>,
    /// The catalog and the blob store.
    pub repo: Arc<Repo>,
    /// Bandwidth buckets.
    pub rates: Arc<Rates>,
    /// Newest handshake timestamp per client key.
    pub replay: Mutex<ReplayGuard>,
    /// Open sessions.
    pub registry: Arc<Registry>,
    /// Received bytes all sessions together may hold waiting for their
    /// workers (see `crate::queue_budget`).
    pub queued: Arc<Semaphore>,
    /// Sessions joining a message of several frames at once (see
    /// `crate::queue_budget::MAX_JOINING`).
    pub joins: Arc<Semaphore>,
    /// Counters for the metrics, the status page and the alerts.
    pub telemetry: Arc<Telemetry>,
    /// Cancelled when the relay shuts down.
    pub shutdown: CancellationToken,
}

impl SessionContext {
    fn path_of(&self, peer: SocketAddr) -> PathKind {
        if self.lan_networks.iter().any(|net| net.contains(peer.ip())) {
            PathKind::Lan
        } else {
            PathKind::Internet
        }
    }

    /// The upload and restore rules for one session of `client`.
    fn transfer_for(
        &self,
        client: &ClientRecord,
        kind: PathKind,
        life: &Arc<Liveness>,
    ) -> Transfer {
        let policy = (kind == PathKind::Internet).then_some(InternetPolicy {
            full_backups: client.internet_full_backups,
            max_file: client.internet_max_file,
        });
        Transfer::new(Arc::clone(&self.repo), client.id, policy)
            .with_liveness(Arc::clone(life))
            .with_stall_limit(self.limits.idle_timeout)
            .with_retention_defaults(self.retention)
            .with_quotas(self.quotas)
            .with_suspicion(self.suspicion)
            .with_recovery_recipient(self.recovery_recipient)
    }
}

/// Serves one session connection from `peer`.
pub async fn serve<S: Stream>(
    ctx: Arc<SessionContext>,
    stream: S,
    peer: SocketAddr,
    ticket: Ticket,
) {
    let io = FramedIo::new(stream);
    let Some((mut io, transport, client)) = authenticate(&ctx, io, peer, &ticket).await else {
        return;
    };
    let max = ctx.limits.max_sessions_per_client;
    let Some(entry) = ctx.registry.register(client.id, client.public_key, max) else {
        let reason = format!(
            "this client has {max} sessions open already, the most the relay allows (limits.max-sessions-per-client); try again when one ends"
        );
        warn!(
            "session of client {} from {peer} refused: {reason}",
            client.name
        );
        tell_and_close(
            Channel::new(io, transport),
            &reason,
            ctx.limits.handshake_timeout,
        )
        .await;
        return;
    };
    let kind = ctx.path_of(peer);
    // A client that stops reading is cut off after the idle timeout.
    io.set_write_timeout(Some(ctx.limits.idle_timeout));
    let mut channel = Channel::new(io, transport).joining_within(Arc::clone(&ctx.joins));
    // The Hellos before any bookkeeping: the endpoint's handshake deadline
    // covers the key exchange and the greeting, never a catalog write.
    let greeted = greet(&mut channel, ctx.limits.idle_timeout).await;
    record_start(&ctx, &client, peer).await;
    info!(
        "session opened: client {} ({}) from {peer} over the {}",
        client.name,
        client.fingerprint,
        if kind == PathKind::Lan {
            "lan"
        } else {
            "internet"
        }
    );
    let meter = Meter::new(
        ctx.rates.client(client.id, kind, local_now()),
        ctx.rates.global(kind),
        &channel.io,
    )
    .counting(ctx.telemetry.traffic(&client.name));
    // Silent half the idle timeout (at most 30 s), its upload may be taken
    // over by a new session of the same client (a dropped Wi-Fi's).
    let life = Arc::new(Liveness::new(
        (ctx.limits.idle_timeout / 2).min(Duration::from_secs(30)),
    ));
    let transfer = ctx.transfer_for(&client, kind, &life);
    let mut backup = BackupWatch::default();
    let ends = Ends {
        revoked: &entry.revoked,
        life: &life,
    };
    let ended = match greeted {
        Ok(Some(peer_minor)) => {
            let parts = (transfer, meter, peer_minor);
            conversation::run(&ctx, &mut channel, ends, parts, &mut backup).await
        }
        Ok(None) => Ok("no Hello before the idle timeout".into()),
        Err(e) => Err(e),
    };
    finish(&ctx, &client, peer, channel, ended, &backup).await;
}

/// Runs the handshake within its timeout and says how it went (log and
/// telemetry); the transport and client when a session may begin.
async fn authenticate<S: Stream>(
    ctx: &SessionContext,
    mut io: FramedIo<S>,
    peer: SocketAddr,
    ticket: &Ticket,
) -> Option<(FramedIo<S>, Transport, ClientRecord)> {
    let timeout = ctx.limits.handshake_timeout;
    let handshake = tokio::select! {
        () = ticket.evicted() => {
            info!("handshake from {peer} dropped: newer connections needed its place among those not yet authenticated");
            ctx.telemetry.handshake("dropped");
            return None;
        }
        done = tokio::time::timeout(timeout, handshake::handshake(ctx, &mut io, ticket)) => done,
    };
    let (transport, client) = match handshake {
        Err(_) => {
            info!("handshake from {peer} timed out");
            ctx.telemetry.handshake("timed_out");
            return None;
        }
        Ok(Err(e)) => {
            warn!("refused session from {peer}: {e:#}");
            ctx.telemetry.handshake("refused");
            io.close(Duration::from_secs(1)).await;
            return None;
        }
        Ok(Ok(Handshaken::Refused {
            transport,
            client,
            reason,
        })) => {
            warn!("refused session of client {client} from {peer}: {reason}");
            ctx.telemetry.handshake("refused");
            tell_and_close(Channel::new(io, transport), &reason, timeout).await;
            return None;
        }
        Ok(Ok(Handshaken::Accepted(transport, client))) => (transport, *client),
    };
    if !ticket.authenticated() {
        info!("session from {peer} dropped: evicted while its handshake finished");
        ctx.telemetry.handshake("dropped");
        return None;
    }
    ctx.telemetry.handshake("accepted");
    Some((io, transport, client))
}

/// Greets the endpoint, tells it `reason` and closes.
async fn tell_and_close<S: Stream>(mut channel: Channel<S>, reason: &str, wait: Duration) {
    if let Ok(Some(_)) = greet(&mut channel, wait).await {
        let _ = close(&mut channel, reason).await;
    }
    channel.io.close(Duration::from_secs(1)).await;
}

/// Records that `client` opened a session from `peer`, and starts its
/// rates from the limits as stored right now, so a limit set just before
/// this session applies from its first byte.
async fn record_start(ctx: &SessionContext, client: &ClientRecord, peer: SocketAddr) {
    let (id, address) = (client.id, peer.to_string());
    let touched = ctx
        .repo
        .db(move |c| {
            c.touch_client(id, &address, now_ms())?;
            c.global_limit()
        })
        .await;
    match touched {
        Ok(global) => {
            ctx.rates
                .session_starts(client.id, client.limit.clone(), global, local_now())
        }
        Err(e) => warn!("cannot record the session of client {}: {e:#}", client.name),
    }
}

/// Records a failed session as the client's last error, closes the
/// connection and logs how the session ended.
async fn finish<S: Stream>(
    ctx: &SessionContext,
    client: &ClientRecord,
    peer: SocketAddr,
    mut channel: Channel<S>,
    ended: Result<String>,
    backup: &BackupWatch,
) {
    let reason = match &ended {
        Ok(reason) => reason.clone(),
        Err(e) => format!("{e:#}"),
    };
    if ended.is_err() || backup.open {
        let event = ctx
            .telemetry
            .session_failed(&client.name, &reason, backup.open);
        let id = client.id;
        // Kept in the catalog, so the status page still says it after a restart.
        if let Err(e) = ctx
            .repo
            .db(move |c| c.record_client_error(id, &event))
            .await
        {
            warn!(
                "cannot record the last error of client {}: {e:#}",
                client.name
            );
        }
    }
    channel.io.close(Duration::from_secs(1)).await;
    info!(
        "session closed: client {} from {peer}: {reason} ({} bytes in, {} bytes out)",
        client.name,
        channel.io.bytes_read(),
        channel.io.bytes_written()
    );
}
