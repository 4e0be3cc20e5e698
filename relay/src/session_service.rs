//! One session connection on the relay: preamble, `Noise_IK` handshake with
//! key and replay checks, then the message loop until either side closes,
//! the link idles out, the client is removed or the relay shuts down.
//!
//! A first message that is not for this relay's key, from an unknown or
//! removed key, or replayed, gets no reply at all: the connection is
//! dropped and the operator gets one log line saying why.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use ferry_net::io::{Channel, ChannelError, FramedIo};
use ferry_net::throttle::Throttle;
use ferry_protocol::message::{Hello, Message, WORKING_INTERVAL};
use ferry_protocol::session::{check_first_mac, FirstMac, Responder};
use ferry_protocol::timestamp::{Timestamp, MAX_AHEAD_SECS};
use ferry_protocol::transport::Transport;
use ferry_protocol::version::{ConnectionKind, Preamble, PROTOCOL_MAJOR, PROTOCOL_MINOR};
use ferry_protocol::ProtocolError;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::admission::Ticket;
use crate::catalog::{now_ms, ClientRecord};
use crate::gate::Liveness;
use crate::queue_budget::{QueueBudget, Queued};
use crate::rates::{local_now, PathKind};
use crate::server::Shared;
use crate::transfer::{InternetPolicy, Transfer, TransferError};

/// The software string sent in `Hello`.
pub const SOFTWARE: &str = concat!("ferry-relay ", env!("CARGO_PKG_VERSION"));

/// Serves one session connection from `peer`.
pub async fn serve(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, ticket: Ticket) {
    let mut io = FramedIo::new(stream);
    let handshake = tokio::select! {
        () = ticket.evicted() => {
            info!("handshake from {peer} dropped: newer connections needed its place among those not yet authenticated");
            shared.telemetry.handshake("dropped");
            return;
        }
        done = tokio::time::timeout(shared.limits.handshake_timeout, handshake(&shared, &mut io, &ticket)) => done,
    };
    let (transport, client) = match handshake {
        Err(_) => {
            info!("handshake from {peer} timed out");
            shared.telemetry.handshake("timed_out");
            return;
        }
        Ok(Err(e)) => {
            warn!("refused session from {peer}: {e:#}");
            shared.telemetry.handshake("refused");
            io.close(std::time::Duration::from_secs(1)).await;
            return;
        }
        Ok(Ok(Handshaken::Refused {
            transport,
            client,
            reason,
        })) => {
            warn!("refused session of client {client} from {peer}: {reason}");
            shared.telemetry.handshake("refused");
            let mut channel = Channel::new(io, transport);
            if let Ok(Some(_)) = greet(&mut channel, shared.limits.handshake_timeout).await {
                let _ = close(&mut channel, &reason).await;
            }
            channel.io.close(std::time::Duration::from_secs(1)).await;
            return;
        }
        Ok(Ok(Handshaken::Accepted(transport, client))) => (transport, *client),
    };
    if !ticket.authenticated() {
        info!("session from {peer} dropped: evicted while its handshake finished");
        shared.telemetry.handshake("dropped");
        return;
    }
    shared.telemetry.handshake("accepted");
    let Some(entry) = shared
        .registry
        .register(client.id, shared.limits.max_sessions_per_client)
    else {
        let reason = format!(
            "this client has {} sessions open already, the most the relay allows (limits.max-sessions-per-client); try again when one ends",
            shared.limits.max_sessions_per_client
        );
        warn!(
            "session of client {} from {peer} refused: {reason}",
            client.name
        );
        let mut channel = Channel::new(io, transport);
        if let Ok(Some(_)) = greet(&mut channel, shared.limits.handshake_timeout).await {
            let _ = close(&mut channel, &reason).await;
        }
        channel.io.close(std::time::Duration::from_secs(1)).await;
        return;
    };
    let path = if shared.is_lan(peer.ip()) {
        "lan"
    } else {
        "internet"
    };
    let (id, address) = (client.id, peer.to_string());
    // The limits as stored right now, so a limit set just before this
    // session applies from its first byte.
    let touched = shared
        .db(move |c| {
            c.touch_client(id, &address, now_ms())?;
            c.global_limit()
        })
        .await;
    match touched {
        Ok(global) => {
            shared
                .rates
                .session_starts(client.id, client.limit.clone(), global, local_now())
        }
        Err(e) => warn!("cannot record the session of client {}: {e:#}", client.name),
    }
    info!(
        "session opened: client {} ({}) from {peer} over the {path}",
        client.name, client.fingerprint
    );
    let kind = if path == "lan" {
        PathKind::Lan
    } else {
        PathKind::Internet
    };
    let meter = Meter::new(
        shared.rates.client(client.id, kind, local_now()),
        shared.rates.global(kind),
        &io,
    )
    .counting(shared.telemetry.traffic(&client.name));
    // A client that stops reading is cut off after the idle timeout.
    io.set_write_timeout(Some(shared.limits.idle_timeout));
    let mut channel = Channel::new(io, transport).joining_within(Arc::clone(&shared.joins));
    let policy = (kind == PathKind::Internet).then_some(InternetPolicy {
        full_backups: client.internet_full_backups,
        max_file: client.internet_max_file,
    });
    // Silent half the idle timeout (at most 30 s), its upload may be taken
    // over by a new session of the same client (a dropped Wi-Fi's).
    let life = Arc::new(Liveness::new(
        (shared.limits.idle_timeout / 2).min(std::time::Duration::from_secs(30)),
    ));
    let transfer = Transfer::new(Arc::clone(&shared.repo), client.id, policy)
        .with_liveness(Arc::clone(&life))
        .with_stall_limit(shared.limits.idle_timeout)
        .with_retention_defaults(shared.config.retention)
        .with_quotas(shared.quotas)
        .with_suspicion(shared.alerts.suspicious);
    let mut backup = BackupWatch::default();
    let ended = run_session(
        &shared,
        &mut channel,
        &entry.revoked,
        &life,
        transfer,
        meter,
        &mut backup,
    )
    .await;
    let reason = match &ended {
        Ok(reason) => reason.clone(),
        Err(e) => format!("{e:#}"),
    };
    if ended.is_err() || backup.open {
        let event = shared
            .telemetry
            .session_failed(&client.name, &reason, backup.open);
        let id = client.id;
        // Kept in the catalog, so the status page still says it after a restart.
        if let Err(e) = shared.db(move |c| c.record_client_error(id, &event)).await {
            warn!(
                "cannot record the last error of client {}: {e:#}",
                client.name
            );
        }
    }
    channel.io.close(std::time::Duration::from_secs(1)).await;
    info!(
        "session closed: client {} from {peer}: {reason} ({} bytes in, {} bytes out)",
        client.name,
        channel.io.bytes_read(),
        channel.io.bytes_written()
    );
}

/// How a handshake that proved a paired key ended.
enum Handshaken {
    /// A session may begin.
    Accepted(Transport, Box<ClientRecord>),
    /// The key is paired but its timestamp was refused: the endpoint is
    /// told why over the finished handshake (its clock, not its pairing, is
    /// wrong), and nothing else happens (a replayed message's sender cannot
    /// read it, and no state changes).
    Refused {
        /// The finished handshake's transport.
        transport: Transport,
        /// The client's name.
        client: String,
        /// What to tell the endpoint.
        reason: String,
    },
}

/// Two handshakes of one endpoint this close together may arrive out of
/// order (the daemon and a backup by hand): the later is refused without a
/// word, and the endpoint tries again at once with a new timestamp.
const RACING_HANDSHAKES: std::time::Duration = std::time::Duration::from_secs(5);

/// Why `refused` (a timestamp check's error for a paired key) is told to
/// the endpoint, or `None` when it is dropped without a word.
fn timestamp_refusal(
    refused: &ferry_protocol::ProtocolError,
    sent: Timestamp,
    newest: Option<Timestamp>,
) -> Option<String> {
    let secs = |t: Timestamp| std::time::Duration::new(t.secs, t.nanos);
    match refused {
        ferry_protocol::ProtocolError::ClockAhead { ahead_secs } => Some(format!(
            "this endpoint's clock is {} ahead of the relay's (at most {} is allowed): set its clock right (or the relay's, if the relay's is wrong) and try again",
            crate::web::page::age(*ahead_secs),
            crate::web::page::age(MAX_AHEAD_SECS),
        )),
        ferry_protocol::ProtocolError::Replay => {
            let newest = secs(newest?);
            let behind = newest.saturating_sub(secs(sent));
            (behind >= RACING_HANDSHAKES).then(|| {
                format!(
                    "this endpoint's clock is {} behind a handshake it made before (its clock was ahead, or went back); it is accepted again once its clock passes {}",
                    crate::web::page::age(behind.as_secs()),
                    ferry_protocol::units::format_rfc3339(
                        i64::try_from(newest.as_millis()).unwrap_or(i64::MAX)
                    ),
                )
            })
        }
        _ => None,
    }
}

/// Runs the handshake; returns the transport and the authenticated client.
async fn handshake(
    shared: &Arc<Shared>,
    io: &mut FramedIo<TcpStream>,
    ticket: &Ticket,
) -> Result<Handshaken> {
    let preamble = Preamble::decode(&io.read_preamble().await?, ConnectionKind::Session)?;
    let ours = Preamble::current(ConnectionKind::Session).encode();
    if let Err(mismatch) = preamble.check_version("endpoint", "relay") {
        io.write_raw(&ours).await?;
        return Err(mismatch.into());
    }
    let frame = io.read_frame().await?;
    // Before any key agreement: only holders of this relay's key can make
    // the MAC, and under load a first message without one is dropped.
    let (first, mac) = check_first_mac(&shared.keys.public, &frame);
    // Only first messages that pass the MAC, or carry none, count against
    // the relay-wide handshake rate: junk cannot spend it.
    match mac {
        FirstMac::Valid => {
            ticket.handshake_within_rate();
        }
        FirstMac::Invalid => bail!(
            "the first handshake message's MAC was not made with this relay's key; dropped before any key agreement"
        ),
        FirstMac::Absent if ticket.handshake_within_rate() => {}
        FirstMac::Absent => bail!(
            "under load (past limits.handshakes-per-second): a first handshake message without a MAC (an endpoint older than 1.4) dropped before any key agreement"
        ),
    }
    let responder = Responder::read_first(&shared.keys, first)
        .map_err(|e| anyhow!("first handshake message rejected: {e}"))?;
    let key = responder.peer;
    let client = shared
        .db(move |c| c.client_by_key(&key))
        .await?
        .ok_or_else(|| anyhow!("key {} is not a paired client", key.fingerprint()))?;
    let sent = responder.timestamp;
    let checked = {
        let mut replay = shared.replay.lock().unwrap_or_else(|p| p.into_inner());
        replay
            .check_and_record(key, sent, wall_clock())
            .map_err(|e| (timestamp_refusal(&e, sent, replay.newest(&key)), e))
    };
    let told = match checked {
        Ok(()) => None,
        Err((Some(reason), _)) => Some(reason),
        Err((None, e)) => bail!("client {}: {e}", client.name),
    };
    let mut out = ours.to_vec();
    let mut answer = Vec::new();
    let transport = responder.accept(&mut answer)?;
    ferry_protocol::frame::encode_frame(&answer, &mut out)?;
    io.write_raw(&out).await?;
    Ok(match told {
        None => Handshaken::Accepted(transport, Box::new(client)),
        Some(reason) => Handshaken::Refused {
            transport,
            client: client.name,
            reason,
        },
    })
}

/// The relay's wall clock as a handshake timestamp.
fn wall_clock() -> Timestamp {
    Timestamp::from_unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// The message loop; returns why the session ended when it ended cleanly.
async fn run_session(
    shared: &Arc<Shared>,
    channel: &mut Channel<TcpStream>,
    revoked: &tokio_util::sync::CancellationToken,
    life: &Liveness,
    transfer: Transfer,
    mut meter: Meter,
    backup: &mut BackupWatch,
) -> Result<String> {
    let idle = shared.limits.idle_timeout;
    let Some(peer_minor) = greet(channel, idle).await? else {
        return Ok("no Hello before the idle timeout".into());
    };
    let for_peer = |reply: Message| for_minor(reply, peer_minor);
    let (requests, mut replies, busy) = Worker::start(transfer);
    let budget = QueueBudget::for_session(&shared.queued);
    let mut read_so_far = channel.io.bytes_read();
    // Said when a request has waited a whole interval with nothing sent.
    let mut working = tokio::time::interval(WORKING_INTERVAL);
    working.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent_since_tick = true;
    // One deadline for the whole silence, moved on by what is heard: made
    // anew each turn, the working tick would end every wait before it fired.
    let silence = tokio::time::sleep(idle);
    tokio::pin!(silence);
    let mut heard_bytes = channel.io.bytes_read();
    loop {
        let event = tokio::select! {
            biased;
            _ = revoked.cancelled() => {
                return close(channel, "this endpoint's key was removed from the relay").await;
            }
            _ = shared.shutdown.cancelled() => {
                return close(channel, "the relay is shutting down").await;
            }
            _ = life.replaced().cancelled() => {
                return close(channel, "a newer session of this client took over its backup after this one fell silent").await;
            }
            _ = life.expired().cancelled() => {
                return close(channel, &TransferError::Expired.to_string()).await;
            }
            reply = replies.recv() => Event::Reply(reply),
            received = channel.recv() => Event::Received(Ok(received)),
            _ = working.tick() => Event::Tick,
            () = &mut silence => {
                // Frames of a message still arriving (a large one over a
                // slow link) are not silence.
                let read = channel.io.bytes_read();
                if read > heard_bytes {
                    heard_bytes = read;
                    life.heard();
                    silence.as_mut().reset(tokio::time::Instant::now() + idle);
                    continue;
                }
                Event::Received(Err(()))
            }
        };
        match event {
            Event::Tick => {
                let waiting = busy.load(Ordering::Acquire) > 0;
                if waiting {
                    // Working on its request is not silence.
                    life.heard();
                }
                if waiting && !sent_since_tick && peer_minor >= WORKING_SINCE_MINOR {
                    channel.send(&Message::Working).await?;
                }
                sent_since_tick = false;
            }
            Event::Reply(Some(Ok(reply))) => {
                if matches!(reply, Message::Committed { .. }) {
                    backup.open = false;
                    shared.telemetry.backup_committed();
                }
                channel.send(&for_peer(reply)).await?;
                sent_since_tick = true;
                meter.settle(&channel.io).await;
            }
            Event::Reply(Some(Err(e))) => return refuse(channel, e, peer_minor).await,
            Event::Reply(None) => return Err(anyhow!("the session's worker stopped")),
            Event::Received(received) => {
                meter.settle(&channel.io).await;
                if received.is_ok() {
                    life.heard();
                }
                silence.as_mut().reset(tokio::time::Instant::now() + idle);
                match received {
                    // Not idle while the worker handles a request (a commit,
                    // a backup waiting for a collection to finish).
                    Err(()) if busy.load(Ordering::Acquire) > 0 => {}
                    Err(()) => return close(channel, "idle timeout").await,
                    Ok(Err(ChannelError::Closed)) => return Ok("the endpoint disconnected".into()),
                    Ok(Err(e)) => return Err(e.into()),
                    Ok(Ok(Message::Close { reason })) => {
                        return Ok(format!("the endpoint closed: {}", bounded_text(&reason)))
                    }
                    Ok(Ok(request)) => {
                        if matches!(request, Message::BackupBegin { .. }) {
                            backup.open = true;
                        }
                        busy.fetch_add(1, Ordering::AcqRel);
                        // The bytes that carried it, held until the worker
                        // is done: waits while the budgets are spent, and
                        // only then reads on.
                        let carried = channel.io.bytes_read() - read_so_far;
                        read_so_far = channel.io.bytes_read();
                        let held = budget.hold(carried).await;
                        // Waits only while the worker has QUEUED requests.
                        if requests.send((request, held)).await.is_err() {
                            // It stopped on an error: its last reply says which.
                            while let Some(reply) = replies.recv().await {
                                match reply {
                                    Ok(reply) => channel.send(&for_peer(reply)).await?,
                                    Err(e) => return refuse(channel, e, peer_minor).await,
                                }
                            }
                            return Err(anyhow!("the session's worker stopped"));
                        }
                    }
                }
            }
        }
    }
}

/// Longest text from an endpoint the relay keeps (its `Close` reason): it
/// goes to the log, the catalog, the status page and the alert command.
const MAX_PEER_TEXT: usize = 512;

/// `text` as the relay keeps what an endpoint said: control characters
/// escaped (no forged log lines, no NUL for the alert command), at most
/// [`MAX_PEER_TEXT`] characters.
fn bounded_text(text: &str) -> String {
    let mut kept: String = ferry_protocol::units::printable(text.as_bytes())
        .chars()
        .take(MAX_PEER_TEXT)
        .collect();
    if text.chars().count() > MAX_PEER_TEXT {
        kept.push_str("… (cut)");
    }
    kept
}

/// Exchanges `Hello`s: the endpoint's first, then ours. Returns the
/// endpoint's protocol minor, or `None` when it said nothing for `wait`.
///
/// # Errors
/// Another major version, another first message, or a broken channel.
async fn greet(channel: &mut Channel<TcpStream>, wait: std::time::Duration) -> Result<Option<u16>> {
    let peer_minor = match tokio::time::timeout(wait, channel.recv()).await {
        Ok(Ok(Message::Hello(hello))) if hello.major == PROTOCOL_MAJOR => hello.minor,
        Ok(Ok(Message::Hello(hello))) => {
            return Err(ProtocolError::VersionMismatch {
                peer_role: "endpoint",
                peer: hello.major,
                our_role: "relay",
                ours: PROTOCOL_MAJOR,
            }
            .into())
        }
        Ok(Ok(_)) => return Err(ProtocolError::Unexpected("message before Hello").into()),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Ok(None),
    };
    channel
        .send(&Message::Hello(Hello {
            major: PROTOCOL_MAJOR,
            minor: announced_minor(),
            software: SOFTWARE.into(),
        }))
        .await?;
    Ok(Some(peer_minor))
}

/// The protocol minor the relay announces: its own, unless the test hook
/// `FERRY_ANNOUNCE_MINOR` names an older one (end-to-end tests check that
/// today's endpoint still works with an older relay this way; the relay
/// answers the older requests as before).
fn announced_minor() -> u16 {
    std::env::var("FERRY_ANNOUNCE_MINOR")
        .ok()
        .and_then(|text| text.parse::<u16>().ok())
        .map_or(PROTOCOL_MINOR, |minor| minor.min(PROTOCOL_MINOR))
}

/// A reply as a peer of protocol minor `peer_minor` can decode it: a
/// refusal whose code it does not know becomes `Failed`.
fn for_minor(reply: Message, peer_minor: u16) -> Message {
    match reply {
        Message::Refused { code, message } if peer_minor < code.since_minor() => {
            Message::Failed { message }
        }
        reply => reply,
    }
}

/// Tells the endpoint why its session ends (`Refused` with the error's
/// code), then reads (and drops) what it still pipelines for a moment, so
/// the refusal arrives instead of a reset that would lose it.
async fn refuse(
    channel: &mut Channel<TcpStream>,
    error: TransferError,
    peer_minor: u16,
) -> Result<String> {
    let refusal = Message::Refused {
        code: error.refusal(),
        message: error.to_string(),
    };
    let _ = channel.send(&for_minor(refusal, peer_minor)).await;
    channel.io.close(FAILED_LINGER).await;
    Err(error.into())
}

/// How long a session that failed keeps reading after its `Failed`.
const FAILED_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// The first protocol minor whose endpoints understand [`Message::Working`].
const WORKING_SINCE_MINOR: u16 = 4;

/// What the message loop woke up for.
enum Event {
    /// Time to say [`Message::Working`] if a request has waited all along.
    Tick,
    Reply(Option<Result<Message, TransferError>>),
    /// A message, or `Err(())` when the idle deadline passed first.
    Received(Result<Result<Message, ChannelError>, ()>),
}

/// Requests a session's worker holds at most: the network side reads and
/// decrypts the next ones while it stores (or checks, or reads) this one.
const QUEUED: usize = 4;

/// Where a session's requests go to its worker, with their share of the
/// queue budgets.
type Requests = tokio::sync::mpsc::Sender<(Message, Queued)>;

/// Where the worker's replies (and the error that ends the session) come
/// back, in order.
type Replies = tokio::sync::mpsc::UnboundedReceiver<Result<Message, TransferError>>;

/// A session's requests handled in order on a blocking thread, so storage
/// never runs on the async runtime and a session costs no thread hop per
/// message: while requests keep coming the worker does not sleep.
struct Worker;

impl Worker {
    /// Starts the worker; returns where to send requests, where replies (and
    /// the error that ends the session) come back in order, and the count of
    /// requests sent and not yet handled, which the sender increments.
    fn start(mut transfer: Transfer) -> (Requests, Replies, Arc<AtomicUsize>) {
        let (requests, mut incoming) = tokio::sync::mpsc::channel::<(Message, Queued)>(QUEUED);
        let (outgoing, replies) = tokio::sync::mpsc::unbounded_channel();
        let busy = Arc::new(AtomicUsize::new(0));
        let handled = Arc::clone(&busy);
        tokio::task::spawn_blocking(move || {
            while let Some((request, held)) = incoming.blocking_recv() {
                let result = match request {
                    // Answered in turn, after the replies before it.
                    Message::Ping { nonce } => {
                        transfer.ping().map(|()| Some(Message::Pong { nonce }))
                    }
                    request => transfer.handle(request),
                };
                drop(held);
                handled.fetch_sub(1, Ordering::AcqRel);
                let reply = match result {
                    Ok(None) => continue,
                    Ok(Some(reply)) => Ok(reply),
                    Err(e) => Err(e),
                };
                let failed = reply.is_err();
                if outgoing.send(reply).is_err() || failed {
                    break;
                }
            }
            transfer.finish();
        });
        (requests, replies, busy)
    }
}

/// Whether a session has an upload open: begun, not yet committed. A
/// session that ends so counts as a failed backup.
#[derive(Debug, Default)]
pub struct BackupWatch {
    /// `BackupBegin` received and no `Committed` sent since.
    pub open: bool,
}

/// Makes a session's traffic wait on its client's bucket and the global
/// one, and counts it for the metrics.
#[derive(Debug)]
pub struct Meter {
    client: Arc<Throttle>,
    global: Arc<Throttle>,
    read: u64,
    written: u64,
    counted: Option<(Counter, Counter)>,
}

impl Meter {
    /// Meters through these buckets from now on.
    pub fn new(client: Arc<Throttle>, global: Arc<Throttle>, io: &FramedIo<TcpStream>) -> Self {
        Meter {
            client,
            global,
            read: io.bytes_read(),
            written: io.bytes_written(),
            counted: None,
        }
    }

    /// Also adds the bytes read and written to these counters, those of
    /// the handshake first.
    pub fn counting(mut self, (received, sent): (Counter, Counter)) -> Self {
        received.inc_by(self.read);
        sent.inc_by(self.written);
        self.counted = Some((received, sent));
        self
    }

    /// Waits for the bytes moved since the last call, in both directions.
    /// Waiting after a read delays the next one, so TCP slows the sender.
    pub async fn settle(&mut self, io: &FramedIo<TcpStream>) {
        let (read, written) = (
            io.bytes_read() - self.read,
            io.bytes_written() - self.written,
        );
        let moved = read + written;
        self.read = io.bytes_read();
        self.written = io.bytes_written();
        if let Some((received, sent)) = &self.counted {
            received.inc_by(read);
            sent.inc_by(written);
        }
        if moved > 0 {
            self.client.consume(moved as usize).await;
            self.global.consume(moved as usize).await;
        }
    }
}

async fn close(channel: &mut Channel<TcpStream>, reason: &str) -> Result<String> {
    // Best effort: the peer may already be gone.
    let _ = channel
        .send(&Message::Close {
            reason: reason.into(),
        })
        .await;
    Ok(reason.to_string())
}
