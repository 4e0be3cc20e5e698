//! A session's conversation after the handshake: `Hello`s, then requests
//! handed to the session's worker in order and its replies sent back, until
//! either side closes, the link idles out, the client is removed, a newer
//! session takes its upload over or the relay shuts down.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use ferry_net::io::Stream;
use ferry_net::io::{Channel, ChannelError};
use ferry_protocol::message::{Hello, Message, WORKING_INTERVAL};
use ferry_protocol::version::{PROTOCOL_MAJOR, PROTOCOL_MINOR};
use ferry_protocol::ProtocolError;
use tokio_util::sync::CancellationToken;

use super::meter::{BackupWatch, Meter};
use super::worker::{Replies, Requests, Worker};
use super::{SessionContext, SOFTWARE};
use crate::gate::Liveness;
use crate::queue_budget::QueueBudget;
use crate::transfer::{Transfer, TransferError};

/// What ends a conversation from outside it.
pub(super) struct Ends<'a> {
    /// Cancelled when the client's key is removed.
    pub revoked: &'a CancellationToken,
    /// Tells when a newer session took the upload over, or it expired.
    pub life: &'a Liveness,
}

/// The message loop, once the Hellos are exchanged (`peer_minor`: the
/// endpoint's protocol minor); returns why the session ended when it
/// ended cleanly.
pub(super) async fn run<S: Stream>(
    ctx: &SessionContext,
    channel: &mut Channel<S>,
    ends: Ends<'_>,
    (transfer, meter, peer_minor): (Transfer, Meter, u16),
    backup: &mut BackupWatch,
) -> Result<String> {
    let idle = ctx.limits.idle_timeout;
    let (requests, replies, busy) = Worker::start(transfer);
    let mut talk = Conversation {
        ctx,
        channel,
        ends,
        meter,
        backup,
        peer_minor,
        idle,
        requests,
        replies,
        busy,
        budget: QueueBudget::for_session(&ctx.queued),
        read_so_far: 0,
        heard_bytes: 0,
        sent_since_tick: true,
    };
    talk.read_so_far = talk.channel.io.bytes_read();
    talk.heard_bytes = talk.read_so_far;
    talk.run().await
}

/// One session's message loop and what it keeps between turns.
struct Conversation<'a, S> {
    ctx: &'a SessionContext,
    channel: &'a mut Channel<S>,
    ends: Ends<'a>,
    meter: Meter,
    backup: &'a mut BackupWatch,
    peer_minor: u16,
    idle: Duration,
    requests: Requests,
    replies: Replies,
    /// Requests sent to the worker and not yet handled.
    busy: Arc<std::sync::atomic::AtomicUsize>,
    budget: QueueBudget,
    /// Bytes read when the last request was handed on.
    read_so_far: u64,
    /// Bytes read when the link was last heard.
    heard_bytes: u64,
    /// Whether anything was sent since the last working tick.
    sent_since_tick: bool,
}

/// What the message loop woke up for.
enum Event {
    /// The session ends for this reason (told to the endpoint).
    Ended(String),
    /// Time to say [`Message::Working`] if a request has waited all along.
    Tick,
    Reply(Option<Result<Message, TransferError>>),
    /// A message, or `Err(())` when the idle deadline passed first.
    Received(Result<Result<Message, ChannelError>, ()>),
}

/// Waits for what ends the session from outside; returns the reason.
async fn ended(ctx: &SessionContext, ends: &Ends<'_>) -> String {
    tokio::select! {
        biased;
        _ = ends.revoked.cancelled() => "this endpoint's key was removed from the relay, or its client was moved to a new machine (`ferry-relay pair --replace`)".into(),
        _ = ctx.shutdown.cancelled() => "the relay is shutting down".into(),
        _ = ends.life.replaced().cancelled() => "a newer session of this client took over its backup after this one fell silent".into(),
        _ = ends.life.expired().cancelled() => TransferError::Expired.to_string(),
    }
}

impl<S: Stream> Conversation<'_, S> {
    async fn run(&mut self) -> Result<String> {
        // Said when a request has waited a whole interval with nothing sent.
        let mut working = tokio::time::interval(WORKING_INTERVAL);
        working.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One deadline for the whole silence, moved on by what is heard: made
        // anew each turn, the working tick would end every wait before it fired.
        let silence = tokio::time::sleep(self.idle);
        tokio::pin!(silence);
        loop {
            let event = tokio::select! {
                biased;
                ended = ended(self.ctx, &self.ends) => Event::Ended(ended),
                reply = self.replies.recv() => Event::Reply(reply),
                received = self.channel.recv() => Event::Received(Ok(received)),
                _ = working.tick() => Event::Tick,
                () = &mut silence => {
                    // Frames of a message still arriving (a large one over a
                    // slow link) are not silence.
                    if self.heard_more() {
                        silence.as_mut().reset(tokio::time::Instant::now() + self.idle);
                        continue;
                    }
                    Event::Received(Err(()))
                }
            };
            if matches!(event, Event::Received(_)) {
                silence
                    .as_mut()
                    .reset(tokio::time::Instant::now() + self.idle);
            }
            if let Some(ended) = self.handle(event).await? {
                return Ok(ended);
            }
        }
    }

    /// Whether bytes arrived since the link was last heard (and notes them).
    fn heard_more(&mut self) -> bool {
        let read = self.channel.io.bytes_read();
        if read > self.heard_bytes {
            self.heard_bytes = read;
            self.ends.life.heard();
            return true;
        }
        false
    }

    fn waiting(&self) -> bool {
        self.busy.load(Ordering::Acquire) > 0
    }

    /// Handles one event; `Some(reason)` when the session ended cleanly.
    async fn handle(&mut self, event: Event) -> Result<Option<String>> {
        match event {
            Event::Ended(reason) => close(self.channel, &reason).await.map(Some),
            Event::Tick => {
                if self.waiting() {
                    // Working on its request is not silence.
                    self.ends.life.heard();
                }
                if self.waiting() && !self.sent_since_tick && self.peer_minor >= WORKING_SINCE_MINOR
                {
                    self.channel.send(&Message::Working).await?;
                }
                self.sent_since_tick = false;
                Ok(None)
            }
            Event::Reply(Some(Ok(reply))) => {
                if matches!(reply, Message::Committed { .. }) {
                    self.backup.open = false;
                    self.ctx.telemetry.backup_committed();
                }
                self.channel
                    .send(&for_minor(reply, self.peer_minor))
                    .await?;
                self.sent_since_tick = true;
                self.meter.settle(&self.channel.io).await;
                Ok(None)
            }
            Event::Reply(Some(Err(e))) => refuse(self.channel, e, self.peer_minor).await.map(Some),
            Event::Reply(None) => Err(anyhow!("the session's worker stopped")),
            Event::Received(received) => self.received(received).await,
        }
    }

    /// Handles what was received, or the idle deadline (`Err(())`).
    async fn received(
        &mut self,
        received: Result<Result<Message, ChannelError>, ()>,
    ) -> Result<Option<String>> {
        self.meter.settle(&self.channel.io).await;
        if received.is_ok() {
            self.ends.life.heard();
        }
        match received {
            // Not idle while the worker handles a request (a commit,
            // a backup waiting for a collection to finish).
            Err(()) if self.waiting() => Ok(None),
            Err(()) => close(self.channel, "idle timeout").await.map(Some),
            Ok(Err(ChannelError::Closed)) => Ok(Some("the endpoint disconnected".into())),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(Message::Close { reason })) => Ok(Some(format!(
                "the endpoint closed: {}",
                bounded_text(&reason)
            ))),
            Ok(Ok(request)) => self.hand_on(request).await,
        }
    }

    /// Gives `request` to the worker, with the bytes that carried it held
    /// until the worker is done: waits while the budgets are spent, and
    /// only then reads on.
    async fn hand_on(&mut self, request: Message) -> Result<Option<String>> {
        if matches!(request, Message::BackupBegin { .. }) {
            self.backup.open = true;
        }
        self.busy.fetch_add(1, Ordering::AcqRel);
        let carried = self.channel.io.bytes_read() - self.read_so_far;
        self.read_so_far = self.channel.io.bytes_read();
        let held = self.budget.hold(carried).await;
        // Waits only while the worker has QUEUED requests.
        if self.requests.send((request, held)).await.is_ok() {
            return Ok(None);
        }
        // It stopped on an error: its last reply says which.
        while let Some(reply) = self.replies.recv().await {
            match reply {
                Ok(reply) => {
                    self.channel
                        .send(&for_minor(reply, self.peer_minor))
                        .await?
                }
                Err(e) => return refuse(self.channel, e, self.peer_minor).await.map(Some),
            }
        }
        Err(anyhow!("the session's worker stopped"))
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
pub(super) async fn greet<S: Stream>(
    channel: &mut Channel<S>,
    wait: Duration,
) -> Result<Option<u16>> {
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

/// The protocol minor the relay announces: its own, unless a test build's
/// hook names an older one ([`crate::test_hooks::announced_minor`]; the
/// relay answers the older requests as before).
fn announced_minor() -> u16 {
    crate::test_hooks::announced_minor().map_or(PROTOCOL_MINOR, |minor| minor.min(PROTOCOL_MINOR))
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
async fn refuse<S: Stream>(
    channel: &mut Channel<S>,
    error: TransferError,
    peer_minor: u16,
) -> Result<String> {
    let refusal = Message::Refused {
        code: error.refusal(),
        message: error.told(),
    };
    let _ = channel.send(&for_minor(refusal, peer_minor)).await;
    channel.io.close(FAILED_LINGER).await;
    Err(error.into())
}

/// How long a session that failed keeps reading after its `Failed`.
const FAILED_LINGER: Duration = Duration::from_secs(2);

/// The first protocol minor whose endpoints understand [`Message::Working`].
const WORKING_SINCE_MINOR: u16 = 4;

/// Tells the endpoint why the session ends; returns the reason.
///
/// # Errors
/// None: the peer may already be gone.
pub(super) async fn close<S: Stream>(channel: &mut Channel<S>, reason: &str) -> Result<String> {
    // Best effort: the peer may already be gone.
    let _ = channel
        .send(&Message::Close {
            reason: reason.into(),
        })
        .await;
    Ok(reason.to_string())
}
