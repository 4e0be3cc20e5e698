//! Batched fetches from the relay, for restores and checks: the driver of
//! the sans-IO [`FetchQueue`] (whose rules say how asks are batched and
//! answers read), and a snapshot's trees fetched ahead as subtrees, so
//! walking its directories costs no round trip each.

use std::collections::{HashMap, HashSet, VecDeque};

use anyhow::{Context, Result};
use ferry_protocol::compress::decompress;
use ferry_protocol::fetch::{FetchItem, FetchReply};
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::TreeId;
use ferry_protocol::tree::{EntryKind, Tree};

use crate::client::RelayClient;
use crate::fetch_queue::FetchQueue;

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

/// The driver of a [`FetchQueue`]: moves its messages over a
/// `RelayClient` and hands it the answers, in order.
#[derive(Debug, Default)]
pub struct Fetcher {
    queue: FetchQueue,
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
        if self.queue.push(item, estimate) {
            self.flush(client).await?;
        }
        Ok(())
    }

    /// Whether asks are batched or answers awaited.
    pub fn pending(&self) -> bool {
        self.queue.pending()
    }

    /// Sends the batch: one `Fetch`, or to a relay before 1.5 each ask on its own.
    ///
    /// # Errors
    /// When the session breaks.
    pub async fn flush(&mut self, client: &mut RelayClient) -> Result<()> {
        let received = client.bytes_received();
        self.queue
            .flush(client.relay_minor(), received, std::time::Instant::now());
        while let Some(message) = self.queue.poll_request() {
            client.ask(&message).await?;
        }
        Ok(())
    }

    /// The replies of the next answer message, in the order asked (what
    /// is batched is sent first); `None` when nothing is asked.
    ///
    /// # Errors
    /// When the session breaks, or the relay's answer is not replies to
    /// what was asked (see [`FetchQueue::handle`]).
    pub async fn next(&mut self, client: &mut RelayClient) -> Result<Option<Vec<FetchReply>>> {
        if !self.queue.awaiting() {
            self.flush(client).await?;
        }
        if !self.queue.awaiting() {
            return Ok(None);
        }
        let answer = client.answer().await;
        self.queue.handle(answer).map(Some)
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
                    fetcher.queue.batch.push(FetchItem::Trees(id));
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
