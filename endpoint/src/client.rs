//! Request/response over an open session, for backup and restore.
//!
//! [`RelayClient::request`] sends one message and waits for its answer;
//! [`RelayClient::send`] sends one that has none (chunk and object uploads),
//! so uploads stream without a round trip each. Errors are a [`ClientError`]:
//! a `Refused` (or `Failed`) answer is [`ClientError::Refused`] with the
//! relay's code and message, a `Close` ends the session with the relay's
//! reason, and a broken link keeps its [`ChannelError`].

use std::time::{Duration, Instant};

use ferry_net::io::ChannelError;
use ferry_net::throttle::{local_now, Throttle};
use ferry_protocol::ids::ChunkId;
use ferry_protocol::message::{Message, Refusal};
use ferry_protocol::schedule::Schedule;

use crate::connect::Session;

/// Bytes written between two waits of a rate limit.
const PACED_SLICE: usize = 16 * 1024;

/// What a request to the relay can end in, other than its answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The relay refused the request.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The relay closed the session, for this reason.
    #[error("the relay closed the session: {0}")]
    Closed(String),
    /// The link broke.
    #[error("the session with the relay broke: {0}")]
    Broken(#[source] ChannelError),
    /// The relay sent nothing for this long while a request waited.
    #[error("the relay sent nothing for {0:?} while a request waited: the relay or the link stopped, and the session was ended")]
    Silent(Duration),
    /// An answer of the wrong kind.
    #[error("the relay answered {got} where {expected} was expected")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
}

/// What [`RelayClient`]'s calls return.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// An open session used for transfers.
#[derive(Debug)]
pub struct RelayClient {
    session: Session,
    limit: Option<UploadLimit>,
    /// Time spent waiting on this endpoint's own upload limit.
    throttled: Duration,
    /// Chunks the answers to [`RelayClient::sync_later`] rejected.
    rejected: Vec<ChunkId>,
    /// Times an answer was waited for (see [`RelayClient::round_trips`]).
    waits: u64,
    /// Each request whose answer is not read yet, in order.
    awaited: std::collections::VecDeque<Awaited>,
}

/// A request whose answer is not read yet.
#[derive(Debug, Clone, Copy)]
struct Awaited {
    /// Sent with no other answer awaited: it opened a flight.
    opened_flight: bool,
    /// A [`RelayClient::sync_later`]: its answer is taken in passing.
    sync_later: bool,
}

/// The endpoint's own upload limit: a schedule, re-read every second.
#[derive(Debug)]
struct UploadLimit {
    schedule: Schedule,
    throttle: Throttle,
    checked: Instant,
}

impl RelayClient {
    /// Wraps an open session.
    pub fn new(session: Session) -> Self {
        RelayClient {
            session,
            limit: None,
            throttled: Duration::ZERO,
            rejected: Vec::new(),
            waits: 0,
            awaited: std::collections::VecDeque::new(),
        }
    }

    /// Limits what this client sends to `schedule`'s rate at each moment.
    pub fn limit_uploads(&mut self, schedule: Schedule) {
        let (day, minute) = local_now();
        let throttle = Throttle::new(schedule.rate_at(day, minute));
        self.limit = Some(UploadLimit {
            schedule,
            throttle,
            checked: Instant::now(),
        });
    }

    /// Sends a message that has no answer.
    ///
    /// # Errors
    /// When the session breaks.
    pub async fn send(&mut self, message: &Message) -> Result<()> {
        let Some(limit) = &mut self.limit else {
            return match self.session.channel.send(message).await {
                Ok(()) => Ok(()),
                Err(e) => Err(self.why_broken(e).await),
            };
        };
        if limit.checked.elapsed() >= Duration::from_secs(1) {
            let (day, minute) = local_now();
            limit.throttle.set_rate(limit.schedule.rate_at(day, minute));
            limit.checked = Instant::now();
        }
        // Paced a slice at a time: the relay sees the bytes trickle in at
        // the limit instead of a burst and then silence.
        let started = Instant::now();
        let throttle = &limit.throttle;
        let sent = self
            .session
            .channel
            .send_paced(message, PACED_SLICE, |n| throttle.consume(n))
            .await;
        self.throttled += started.elapsed();
        match sent {
            Ok(()) => Ok(()),
            Err(e) => Err(self.why_broken(e).await),
        }
    }

    /// Sends a request and returns its answer; a `Failed` answer is a
    /// [`Refused`] error.
    ///
    /// # Errors
    /// When the session breaks, the relay closes it, or answers `Failed`.
    pub async fn request(&mut self, message: &Message) -> Result<Message> {
        self.ask(message).await?;
        self.answer().await
    }

    /// Sends a request whose answer is read later with
    /// [`RelayClient::answer`], so requests can be pipelined.
    ///
    /// # Errors
    /// As [`RelayClient::send`].
    pub async fn ask(&mut self, message: &Message) -> Result<()> {
        self.awaited.push_back(Awaited {
            opened_flight: self.awaited.is_empty(),
            sync_later: false,
        });
        self.send(message).await
    }

    /// Answers asked for with [`RelayClient::ask`] and not read yet.
    pub fn awaited(&self) -> usize {
        self.awaited.len()
    }

    /// Receives the answer to the oldest request sent with [`RelayClient::ask`]
    /// and not yet answered (answers come in order).
    ///
    /// # Errors
    /// As [`RelayClient::request`].
    pub async fn answer(&mut self) -> Result<Message> {
        loop {
            let awaited = self.awaited.pop_front();
            // A request sent when no other answer was awaited left the
            // link empty: its answer costs a whole round trip.
            if awaited.is_none_or(|a| a.opened_flight) {
                self.waits += 1;
            }
            let answer = self.next_answer().await?;
            // Answers come in the order asked: a `sync_later`'s is taken
            // here, where it falls, and the next one read.
            if !awaited.is_some_and(|a| a.sync_later) {
                return Ok(answer);
            }
            match answer {
                Message::Synced { rejected } => self.rejected.extend(rejected),
                other => {
                    return Err(ClientError::Unexpected {
                        expected: "Synced",
                        got: other.name(),
                    })
                }
            }
        }
    }

    /// Sends a `Sync` without waiting for its answer, so the upload goes on
    /// while the relay flushes; its answer is taken in passing by the
    /// [`RelayClient::answer`] that reaches it, and the chunks it rejects
    /// are kept for [`RelayClient::take_rejected`].
    ///
    /// # Errors
    /// As [`RelayClient::send`].
    pub async fn sync_later(&mut self) -> Result<()> {
        self.ask(&Message::Sync).await?;
        if let Some(sync) = self.awaited.back_mut() {
            sync.sync_later = true;
        }
        Ok(())
    }

    /// The chunks rejected by answered [`RelayClient::sync_later`] syncs.
    pub fn take_rejected(&mut self) -> Vec<ChunkId> {
        std::mem::take(&mut self.rejected)
    }

    /// A write failed: the relay may have refused something and closed.
    /// Its last words are read (for a moment) so the user sees the reason,
    /// not a broken pipe.
    async fn why_broken(&mut self, error: ChannelError) -> ClientError {
        let last_words = async {
            loop {
                match self.session.channel.recv().await {
                    Ok(answer) => {
                        if let Err(reason) = answer_or_end(answer) {
                            return Some(reason);
                        }
                    }
                    Err(_) => return None,
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(3), last_words).await {
            Ok(Some(reason)) => reason,
            _ => ClientError::Broken(error),
        }
    }

    /// The next answer; [`Message::Working`] in between only resets the
    /// wait, and a relay silent for [`RelayClient::silence_limit`] ends it.
    async fn next_answer(&mut self) -> Result<Message> {
        let limit = self.silence_limit();
        loop {
            let answer = tokio::time::timeout(limit, self.session.channel.recv())
                .await
                .map_err(|_| ClientError::Silent(limit))?
                .map_err(ClientError::Broken)?;
            if answer != Message::Working {
                return answer_or_end(answer);
            }
        }
    }

    /// How long the relay may send nothing while a request waits: the
    /// configured silence timeout, or, from relays older than 1.4 which do
    /// not say they are working, at least as long as a write may stall.
    fn silence_limit(&self) -> Duration {
        if self.session.relay_hello.minor >= 4 {
            self.session.silence
        } else {
            crate::connect::WRITE_STALL.max(self.session.silence)
        }
    }

    /// Times this side waited a whole round trip for the relay: answers to
    /// requests sent while no other answer was awaited (the link had
    /// nothing of ours in flight). Answers to requests pipelined behind
    /// others cost none: they come while earlier ones are read. What a
    /// link's round-trip time multiplies.
    pub fn round_trips(&self) -> u64 {
        self.waits
    }

    /// The relay's protocol minor version (what it can answer).
    pub fn relay_minor(&self) -> u16 {
        self.session.relay_hello.minor
    }

    /// Bytes sent on the connection so far (handshake, framing and encryption included).
    pub fn bytes_sent(&self) -> u64 {
        self.session.channel.io.bytes_written()
    }

    /// Time spent waiting for the link so far: in socket writes (see
    /// `FramedIo::write_time`) and on this endpoint's own upload limit.
    pub fn write_time(&self) -> Duration {
        self.session.channel.io.write_time() + self.throttled
    }

    /// Bytes received on the connection so far.
    pub fn bytes_received(&self) -> u64 {
        self.session.channel.io.bytes_read()
    }

    /// Ends the session politely.
    pub async fn close(mut self) {
        // The work is done; a failure to say goodbye changes nothing.
        let _ = self
            .session
            .channel
            .send(&Message::Close {
                reason: "done".into(),
            })
            .await;
    }
}

/// An answer, or the refusal or close that ends the request instead.
fn answer_or_end(answer: Message) -> Result<Message> {
    match answer {
        Message::Failed { message } => Err(Refused::other(message).into()),
        Message::Refused { code, message } => Err(Refused::new(code, message).into()),
        Message::Close { reason } => Err(ClientError::Closed(reason)),
        other => Ok(other),
    }
}

/// Fails with a clear message when an answer is not the expected kind.
pub fn unexpected(expected: &'static str, got: &Message) -> anyhow::Error {
    ClientError::Unexpected {
        expected,
        got: got.name(),
    }
    .into()
}

/// The relay refused a request: callers match [`ClientError::Refused`] to
/// act on its code, never on its text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the relay refused: {message}")]
pub struct Refused {
    /// Why, as the relay coded it (`None`: a `Failed` with text only,
    /// from a relay before protocol 1.2 or an error that ends the session).
    pub code: Option<Refusal>,
    /// Why, for the user.
    pub message: String,
}

impl Refused {
    fn new(code: Refusal, message: String) -> Self {
        Refused {
            code: Some(code),
            message,
        }
    }

    fn other(message: String) -> Self {
        Refused {
            code: None,
            message,
        }
    }
}

/// Opens a session with the paired relay (LAN address first).
///
/// # Errors
/// When the endpoint is not paired or no address answers.
pub async fn open_client(state: &crate::state::StateDir) -> anyhow::Result<RelayClient> {
    let record = state.paired_relay()?;
    let keys = state.keys()?;
    let timeouts = state.config()?.connect.resolve()?;
    let relay_key = record.relay_public_key()?;
    let session = crate::connect::connect(&keys, &relay_key, &record.addresses, timeouts).await?;
    Ok(RelayClient::new(session))
}
