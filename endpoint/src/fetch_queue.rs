//! The fetch pipeline as a state machine, sans IO (quinn-proto's shape):
//! asks are pushed, the messages to send are polled, and each answer the
//! relay sends back is handled in the order asked. No socket, no clock of
//! its own (the time and the bytes received so far come in as arguments),
//! so its rules are tested in microseconds; `crate::fetcher::Fetcher` is
//! the driver that moves its messages over a `RelayClient`.
//!
//! To relays of protocol 1.5 on, asks go together in one `Fetch` (one
//! answer back, its replies compressed together as the downlink calls
//! for); to older relays one by one. Either way answers come in order, and
//! the queue knows how many replies each one carries.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ferry_protocol::compress::{decompress, Codec};
use ferry_protocol::fetch::{FetchItem, FetchReplies, FetchReply, FETCH_BYTES};
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::message::{Message, ObjectId, Refusal};

use crate::client::{unexpected, ClientError};

/// Asks sent together in one `Fetch`, at most.
pub const BATCH_ITEMS: usize = 256;

/// The first protocol minor whose relays answer `Fetch`.
const FETCH_SINCE_MINOR: u16 = 5;

/// An answer to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// `Fetched`, with this many replies.
    Batch(usize),
    /// An older relay's answer to one `GetObject` or `GetChunk`.
    One,
}

/// Asks batched, messages to send, and the answers to come.
#[derive(Debug, Default)]
pub struct FetchQueue {
    /// Asks not sent yet.
    pub(crate) batch: Vec<FetchItem>,
    /// Their estimated reply bytes.
    batch_bytes: u64,
    /// Messages made of sent batches, waiting to be sent.
    outgoing: VecDeque<Message>,
    /// The answers to come, in order.
    expected: VecDeque<Expected>,
    /// How replies are to be compressed.
    downlink: Downlink,
}

impl FetchQueue {
    /// Adds an ask (its reply estimated at `estimate` bytes); true when the
    /// batch is full and should be flushed.
    pub fn push(&mut self, item: FetchItem, estimate: u64) -> bool {
        self.batch.push(item);
        self.batch_bytes += estimate;
        self.batch.len() >= BATCH_ITEMS || self.batch_bytes >= FETCH_BYTES
    }

    /// Whether asks are batched, unsent or answers awaited.
    pub fn pending(&self) -> bool {
        !self.batch.is_empty() || !self.outgoing.is_empty() || !self.expected.is_empty()
    }

    /// Whether an answer is expected.
    pub fn awaiting(&self) -> bool {
        !self.expected.is_empty()
    }

    /// Turns the batch into messages for a relay of protocol minor
    /// `relay_minor`, `received` bytes into the session at `now`: one
    /// `Fetch`, or one request per ask to relays before 1.5.
    pub fn flush(&mut self, relay_minor: u16, received: u64, now: Instant) {
        if self.batch.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if relay_minor >= FETCH_SINCE_MINOR {
            let codec = self.downlink.codec_at(received, now);
            self.expected.push_back(Expected::Batch(items.len()));
            self.outgoing.push_back(Message::Fetch { items, codec });
            return;
        }
        for item in items {
            self.expected.push_back(Expected::One);
            self.outgoing.push_back(match item {
                FetchItem::Object(id) => Message::GetObject { id },
                FetchItem::Trees(id) => Message::GetObject {
                    id: ObjectId::Tree(id),
                },
                FetchItem::Chunk { id, base_signature } => Message::GetChunk { id, base_signature },
            });
        }
    }

    /// The next message to send, if any.
    pub fn poll_request(&mut self) -> Option<Message> {
        self.outgoing.pop_front()
    }

    /// Handles the answer to the oldest message sent and not answered
    /// (`answer` as the client read it: a refusal is an error there);
    /// returns its replies, in the order asked.
    ///
    /// # Errors
    /// No answer was expected, or the answer is not replies to what was
    /// asked: too few or too many, undecodable, a batch whose first item
    /// the relay put off (it must answer one, so asking again would never
    /// end), or an error that ends the session.
    pub fn handle(&mut self, answer: Result<Message, ClientError>) -> Result<Vec<FetchReply>> {
        let expected = self
            .expected
            .pop_front()
            .context("an answer to a fetch that was not asked")?;
        let Expected::Batch(count) = expected else {
            return one_reply(answer).map(|reply| vec![reply]);
        };
        let (codec, data) = match answer? {
            Message::Fetched { codec, data } => (codec, data),
            other => return Err(unexpected("Fetched", &other)),
        };
        // Within a message, not MAX_FETCH_RAW: a batch's first reply goes
        // as stored even past that, as it would fit an answer of its own.
        let raw = decompress(codec, data, MAX_MESSAGE)
            .context("the relay's replies do not decompress")?;
        let replies = FetchReplies::decode(&raw).context("the relay's replies do not decode")?;
        if replies.0.len() != count {
            bail!(
                "the relay sent {} replies to a fetch of {count}",
                replies.0.len()
            );
        }
        if replies.0.first() == Some(&FetchReply::Later) {
            bail!("the relay put off the first item of a fetch, which it must answer");
        }
        Ok(replies.0)
    }
}

/// The reply an older relay's answer to one `GetObject` or `GetChunk` is.
fn one_reply(answer: Result<Message, ClientError>) -> Result<FetchReply> {
    Ok(match answer {
        Ok(Message::Object { codec, data } | Message::ChunkData { codec, data }) => {
            FetchReply::Data { codec, data }
        }
        Ok(Message::ChunkDelta { codec, delta }) => FetchReply::Delta { codec, delta },
        Ok(other) => return Err(unexpected("Object or ChunkData", &other)),
        Err(ClientError::Refused(refused)) => FetchReply::Refused {
            code: refused.code.unwrap_or(Refusal::NoSuchObject),
            message: refused.message,
        },
        Err(e) => return Err(e.into()),
    })
}

/// Chooses how the relay compresses replies, by the rate they arrive at:
/// zstd (packed tighter, the relay's CPU spent) while the downlink is
/// slow, lz4 once it carries more than [`FAST_DOWNLINK`].
#[derive(Debug, Default)]
struct Downlink {
    /// Bytes received and when, at the start of the current window.
    since: Option<(u64, Instant)>,
    fast: bool,
}

/// Bytes received between two decisions.
const DOWNLINK_WINDOW: u64 = 8 << 20;

/// Bytes per second past which the downlink is fast: zstd at the relay
/// would then set the pace.
const FAST_DOWNLINK: f64 = 40e6;

impl Downlink {
    /// The codec for the next batch, `received` bytes into the session at `now`.
    fn codec_at(&mut self, received: u64, now: Instant) -> Codec {
        let (start, at) = *self.since.get_or_insert((received, now));
        if received - start >= DOWNLINK_WINDOW {
            let rate = (received - start) as f64 / now.duration_since(at).as_secs_f64().max(1e-6);
            self.fast = rate > FAST_DOWNLINK;
            self.since = Some((received, now));
        }
        if self.fast {
            Codec::Lz4
        } else {
            Codec::Zstd
        }
    }
}

#[cfg(test)]
mod tests;
