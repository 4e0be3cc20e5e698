//! Batched fetches from the relay, for restores and checks: asks go
//! together in one `Fetch` (protocol 1.5; one message back, its replies
//! compressed together as the downlink calls for), or to older relays one
//! by one, answered in order either way. And a snapshot's trees fetched
//! ahead as subtrees, so walking its directories costs no round trip each.

use std::collections::{HashMap, HashSet, VecDeque};

use anyhow::{bail, Context, Result};
use ferry_protocol::compress::{decompress, Codec};
use ferry_protocol::fetch::{FetchItem, FetchReplies, FetchReply, FETCH_BYTES};
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::TreeId;
use ferry_protocol::message::{Message, ObjectId, Refusal};
use ferry_protocol::tree::{EntryKind, Tree};

use crate::client::{unexpected, ClientError, RelayClient};

/// Asks sent together in one `Fetch`, at most.
const BATCH_ITEMS: usize = 256;

/// Trees asked for and not yet received, at most.
const TREES_IN_FLIGHT: usize = 256;

/// Trees asked for in one `Fetch`, at most (the relay puts off what
/// passes its bound).
const BATCH_TREES: usize = 64;

/// Directories deeper than this are not fetched ahead nor restored: no
/// path of more components fits Linux's PATH_MAX (4,096 bytes, each
/// component and its slash at least two), and a relay could otherwise make
/// up a chain of a million directories to exhaust a walk's stack and time.
pub const MAX_DEPTH: usize = 2048;

/// Asks batched and sent, and the answers to come.
#[derive(Default)]
pub struct Fetcher {
    /// Asks not sent yet.
    batch: Vec<FetchItem>,
    /// Their estimated reply bytes.
    batch_bytes: u64,
    /// Replies each answer message to come carries, in order (one each
    /// from relays before 1.5, which answer every ask on its own).
    messages: VecDeque<usize>,
    /// How replies are to be compressed.
    downlink: Downlink,
}

impl Fetcher {
    /// Adds an ask to the batch (its reply estimated at `estimate` bytes),
    /// which goes once it is full or an answer is waited for.
    ///
    /// # Errors
    /// When the session breaks.
    pub async fn add(
        &mut self,
        client: &mut RelayClient,
        item: FetchItem,
        estimate: u64,
    ) -> Result<()> {
        self.batch.push(item);
        self.batch_bytes += estimate;
        if self.batch.len() >= BATCH_ITEMS || self.batch_bytes >= FETCH_BYTES {
            self.flush(client).await?;
        }
        Ok(())
    }

    /// Whether asks are batched or answers awaited.
    pub fn pending(&self) -> bool {
        !self.batch.is_empty() || !self.messages.is_empty()
    }

    /// Sends the batch: one `Fetch`, or to a relay before 1.5 each ask on its own.
    ///
    /// # Errors
    /// When the session breaks.
    pub async fn flush(&mut self, client: &mut RelayClient) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let items = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if client.relay_minor() >= 5 {
            let codec = self.downlink.codec(client.bytes_received());
            self.messages.push_back(items.len());
            return Ok(client.ask(&Message::Fetch { items, codec }).await?);
        }
        for item in items {
            let message = match item {
                FetchItem::Object(id) => Message::GetObject { id },
                FetchItem::Trees(id) => Message::GetObject {
                    id: ObjectId::Tree(id),
                },
                FetchItem::Chunk { id, base_signature } => Message::GetChunk { id, base_signature },
            };
            self.messages.push_back(1);
            client.ask(&message).await?;
        }
        Ok(())
    }

    /// The replies of the next answer message, in the order asked (what
    /// is batched is sent first); `None` when nothing is asked.
    ///
    /// # Errors
    /// When the session breaks, or the relay's answer is not replies to
    /// what was asked: too few or too many, undecodable, or a batch whose
    /// first item it put off (it must answer one, so asking again ends).
    pub async fn next(&mut self, client: &mut RelayClient) -> Result<Option<Vec<FetchReply>>> {
        if self.messages.is_empty() {
            self.flush(client).await?;
        }
        let Some(count) = self.messages.pop_front() else {
            return Ok(None);
        };
        let answer = client.answer().await;
        if client.relay_minor() < 5 {
            let reply = match answer {
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
            };
            return Ok(Some(vec![reply]));
        }
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
        Ok(Some(replies.0))
    }
}

/// Fetches a snapshot's trees from `root` down before they are walked:
/// each ask is for a tree and those below it (the relay sends as many as
/// fit a batch; relays before 1.5 send the one), then for what is still
/// missing below, breadth-first, only where `wanted` says the walk will go
/// (a directory's path in the snapshot). Returns what came, at most
/// `bound` bytes of it; a damaged or undecodable tree is left out (the
/// walk asks again and reports it).
///
/// # Errors
/// When the session breaks or the relay's answers are not replies.
pub async fn prefetch_trees(
    fetcher: &mut Fetcher,
    client: &mut RelayClient,
    root: TreeId,
    bound: usize,
    wanted: impl Fn(&[Vec<u8>]) -> bool,
) -> Result<HashMap<TreeId, Vec<u8>>> {
    let mut trees = HashMap::new();
    let mut frontier = VecDeque::from([(root, Vec::<Vec<u8>>::new())]);
    let mut asked = VecDeque::new();
    let mut held = 0;
    let mut seen = HashSet::new();
    let mut expanded = HashSet::new();
    loop {
        // Batches of what the frontier holds, while there is room.
        while asked.len() < TREES_IN_FLIGHT && held < bound {
            let mut batch = 0;
            while batch < BATCH_TREES && asked.len() < TREES_IN_FLIGHT {
                let Some((id, path)) = frontier.pop_front() else {
                    break;
                };
                if seen.insert(id) {
                    fetcher.batch.push(FetchItem::Trees(id));
                    asked.push_back((id, path));
                    batch += 1;
                }
            }
            if batch == 0 {
                break;
            }
            fetcher.flush(client).await?;
        }
        let Some(replies) = fetcher.next(client).await? else {
            return Ok(trees);
        };
        for reply in replies {
            let (id, path) = asked.pop_front().context("a reply to nothing asked")?;
            let came = match reply {
                FetchReply::Trees(came) => came.into_iter().map(|t| t.into_vec()).collect(),
                FetchReply::Data { codec, data } => match decompress(codec, data, MAX_MESSAGE) {
                    Ok(raw) => vec![raw],
                    Err(_) => continue,
                },
                FetchReply::Later => {
                    // Asked again in a later batch.
                    seen.remove(&id);
                    frontier.push_front((id, path));
                    continue;
                }
                // Damaged, or not a tree: the walk asks again and reports it.
                FetchReply::Refused { .. } | FetchReply::Delta { .. } => continue,
            };
            // Past the bound what came is dropped.
            for raw in came {
                if held < bound {
                    held += raw.len();
                    trees.insert(TreeId::of(&raw), raw);
                }
            }
            // What below is neither held nor asked joins the frontier,
            // looking through what is held; each tree is looked through once.
            let mut stack = vec![(id, path)];
            while let Some((id, path)) = stack.pop() {
                let Some(raw) = trees.get(&id) else {
                    if !seen.contains(&id) {
                        frontier.push_back((id, path));
                    }
                    continue;
                };
                if !expanded.insert(id) {
                    continue;
                }
                let Ok(tree) = Tree::decode(&id, raw) else {
                    continue;
                };
                for entry in tree.entries {
                    if let EntryKind::Dir { tree: sub } = entry.kind {
                        let mut sub_path = path.clone();
                        sub_path.push(entry.name);
                        if sub_path.len() <= MAX_DEPTH && wanted(&sub_path) {
                            stack.push((sub, sub_path));
                        }
                    }
                }
            }
        }
    }
}

/// Chooses how the relay compresses replies, by the rate they arrive at:
/// zstd (packed tighter, the relay's CPU spent) while the downlink is
/// slow, lz4 once it carries more than [`FAST_DOWNLINK`].
#[derive(Default)]
struct Downlink {
    /// Bytes received and when, at the start of the current window.
    since: Option<(u64, std::time::Instant)>,
    fast: bool,
}

/// Bytes received between two decisions.
const DOWNLINK_WINDOW: u64 = 8 << 20;

/// Bytes per second past which the downlink is fast: zstd at the relay
/// would then set the pace.
const FAST_DOWNLINK: f64 = 40e6;

impl Downlink {
    /// The codec for the next batch, `received` bytes into the session.
    fn codec(&mut self, received: u64) -> Codec {
        self.codec_at(received, std::time::Instant::now())
    }

    /// [`Downlink::codec`] at `now`.
    fn codec_at(&mut self, received: u64, now: std::time::Instant) -> Codec {
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
mod tests {
    use super::*;

    #[test]
    fn replies_come_zstd_on_a_slow_downlink_and_lz4_on_a_fast_one() {
        use std::time::{Duration, Instant};
        let start = Instant::now();
        let mut downlink = Downlink::default();
        assert_eq!(downlink.codec_at(0, start), Codec::Zstd, "unknown: zstd");
        // 16 MiB in 0.1 s: 168 MB/s, zstd would set the pace.
        let fast = downlink.codec_at(16 << 20, start + Duration::from_millis(100));
        assert_eq!(fast, Codec::Lz4);
        // Then 16 MiB in 4 s: 4 MB/s.
        let slow = downlink.codec_at(32 << 20, start + Duration::from_millis(4100));
        assert_eq!(slow, Codec::Zstd);
        // Less than a window since: no new decision.
        assert_eq!(
            downlink.codec_at(33 << 20, start + Duration::from_secs(5)),
            Codec::Zstd
        );
    }
}
