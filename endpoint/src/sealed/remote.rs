//! The relay as a sealed client sees it: a store of opaque objects named
//! by storage id. Queries and fetches go in batches, several in flight, so
//! a thousand objects cost a round trip or two, not a thousand.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Result};
use ferry_protocol::message::{is_missing, Message, StorageId, MAX_BATCH};
use ferry_protocol::sealed::{open, Header, SealedKind, SealingKeys};
use ferry_protocol::sealed_objects::MAX_SEALED_OBJECT;

use crate::client::{unexpected, RelayClient};

/// Bytes of objects gathered before they go in one `PutSealed`.
const PUT_BYTES: usize = 2 * 1024 * 1024;
/// Bytes of objects queued before they become a stage: asked about at
/// once, sent once the answer is read (a few stages later), so sealing
/// goes on while the relay answers and the link carries what went before.
const STAGE_BYTES: usize = 512 * 1024;
/// Stages asked about and not yet sent, at most.
const STAGES: usize = 4;
/// Fetch batches in flight at once.
const IN_FLIGHT: usize = 16;
/// Ids asked for in one `GetSealed` (small objects: many; the relay sends
/// fewer when they do not fit one message).
const GET_BATCH: usize = 64;
/// Bytes of roots, trees and contents kept from `GetSealedBelow` replies,
/// at most: past it, what is missing is fetched as it is needed.
const BELOW_BYTES: usize = 64 << 20;

/// Sealed objects out and in through one session.
pub struct Remote<'c> {
    client: &'c mut RelayClient,
    /// Objects queued, in the order they must reach the relay.
    queued: Vec<Outgoing>,
    queued_bytes: usize,
    /// Stages asked about, oldest first: sent in this order.
    stages: std::collections::VecDeque<Stage>,
    /// Objects sent since the last sync.
    unsynced: usize,
    /// What they name, in all.
    unsynced_refs: usize,
    /// Ids sent in this session (an object queued twice goes once).
    sent: HashSet<StorageId>,
    /// Whole chunks sent (the others the relay held).
    pub whole_chunks_sent: u64,
    /// Objects sent and their bytes, by kind (chunk, patch, signature,
    /// content, tree, root, dictionary): what the debug log shows at the end.
    pub sent_by_kind: [(u64, u64); 7],
    /// Roots, trees and contents the relay sent ahead.
    ahead: HashMap<StorageId, Vec<u8>>,
    /// Their bytes.
    ahead_bytes: usize,
}

/// Objects asked about together, sent once the relay answered.
struct Stage {
    objects: Vec<Outgoing>,
    /// The ids asked about, in the order of the queries' answers.
    asked: Vec<StorageId>,
}

/// One object waiting to be sent.
struct Outgoing {
    id: StorageId,
    bytes: Vec<u8>,
    /// Sent only if the relay lacks it (asked in one batch at the drain).
    ask: bool,
    /// A whole chunk, counted when it is sent.
    whole_chunk: bool,
}

/// How an object is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Send {
    /// Always (it names something new, so the relay cannot hold it).
    Always,
    /// Only if the relay lacks it.
    IfMissing,
    /// A whole chunk, only if the relay lacks it (counted when sent).
    ChunkIfMissing,
}

impl<'c> Remote<'c> {
    /// Sealed objects through `client`'s session.
    pub fn new(client: &'c mut RelayClient) -> Self {
        Remote {
            client,
            queued: Vec::new(),
            queued_bytes: 0,
            stages: std::collections::VecDeque::new(),
            unsynced: 0,
            unsynced_refs: 0,
            sent: HashSet::new(),
            whole_chunks_sent: 0,
            sent_by_kind: [(0, 0); 7],
            ahead: HashMap::new(),
            ahead_bytes: 0,
        }
    }

    /// The session back, once done.
    pub fn into_client(self) -> &'c mut RelayClient {
        self.client
    }

    /// The session, for the requests that are not about objects (none
    /// may be asked while stages wait: [`Remote::drain`] first).
    pub fn client(&mut self) -> &mut RelayClient {
        debug_assert!(self.stages.is_empty(), "objects still wait for answers");
        self.client
    }

    /// Which of `ids` the relay lacks, in order: one round trip for all.
    ///
    /// # Errors
    /// Session failures and answers that are not bitmaps.
    pub async fn missing(&mut self, ids: &[StorageId]) -> Result<Vec<bool>> {
        self.settle().await?;
        self.ask_missing(ids).await?;
        self.read_missing(ids).await
    }

    /// Asks which of `ids` the relay lacks (answers read by
    /// [`Remote::read_missing`], in order).
    async fn ask_missing(&mut self, ids: &[StorageId]) -> Result<()> {
        for batch in ids.chunks(MAX_BATCH) {
            self.client
                .ask(&Message::QuerySealed {
                    ids: batch.to_vec(),
                })
                .await?;
        }
        Ok(())
    }

    /// The answers to [`Remote::ask_missing`] for `ids`.
    async fn read_missing(&mut self, ids: &[StorageId]) -> Result<Vec<bool>> {
        let mut missing = Vec::with_capacity(ids.len());
        for batch in ids.chunks(MAX_BATCH) {
            match self.client.answer().await? {
                Message::ChunksMissing { missing: bitmap } => {
                    missing.extend((0..batch.len()).map(|i| is_missing(&bitmap, i)));
                }
                other => return Err(unexpected("ChunksMissing", &other)),
            }
        }
        Ok(missing)
    }

    /// Queues the object `id`; objects reach the relay in the order queued
    /// (queue what an object names before it), those queued `IfMissing`
    /// only when a query, one per drain, says the relay lacks them.
    ///
    /// # Errors
    /// Session failures of a drain.
    pub async fn queue(&mut self, id: StorageId, bytes: Vec<u8>, how: Send) -> Result<()> {
        self.queued_bytes += bytes.len();
        self.queued.push(Outgoing {
            id,
            bytes,
            ask: how != Send::Always,
            whole_chunk: how == Send::ChunkIfMissing,
        });
        if self.queued_bytes >= STAGE_BYTES || self.queued.len() >= MAX_BATCH {
            self.stage().await?;
        }
        Ok(())
    }

    /// Sends everything queued: the stages asked about, then what is left
    /// (one query for those that may be held, then the objects in order, a
    /// few megabytes per message).
    ///
    /// # Errors
    /// Session failures.
    pub async fn drain(&mut self) -> Result<()> {
        self.stage().await?;
        self.settle().await
    }

    /// What is queued becomes a stage: asked about now, sent when its
    /// answer is read, once more than [`STAGES`] stages wait.
    async fn stage(&mut self) -> Result<()> {
        let objects = std::mem::take(&mut self.queued);
        self.queued_bytes = 0;
        if objects.is_empty() {
            return Ok(());
        }
        let asked: Vec<StorageId> = objects
            .iter()
            .filter(|o| o.ask && !self.sent.contains(&o.id))
            .map(|o| o.id)
            .collect();
        self.ask_missing(&asked).await?;
        self.stages.push_back(Stage { objects, asked });
        while self.stages.len() > STAGES {
            self.send_oldest().await?;
        }
        Ok(())
    }

    /// Sends every stage waiting (before any other request is asked: the
    /// answers come in order).
    async fn settle(&mut self) -> Result<()> {
        while !self.stages.is_empty() {
            self.send_oldest().await?;
        }
        Ok(())
    }

    /// Reads the oldest stage's answer and sends its objects the relay
    /// lacks (or was not asked about), in order.
    async fn send_oldest(&mut self) -> Result<()> {
        let Some(Stage { objects, asked }) = self.stages.pop_front() else {
            return Ok(());
        };
        let missing = self.read_missing(&asked).await?;
        let lacking: HashSet<StorageId> = asked
            .into_iter()
            .zip(missing)
            .filter(|(_, m)| *m)
            .map(|(id, _)| id)
            .collect();
        let mut message = Vec::new();
        let mut message_bytes = 0;
        for object in objects {
            if (object.ask && !lacking.contains(&object.id)) || !self.sent.insert(object.id) {
                continue;
            }
            self.whole_chunks_sent += u64::from(object.whole_chunk);
            if let Ok((header, _)) = Header::read(&object.bytes) {
                let sent = &mut self.sent_by_kind[header.kind as usize];
                (sent.0, sent.1) = (sent.0 + 1, sent.1 + object.bytes.len() as u64);
            }

            message_bytes += object.bytes.len();
            message.push(serde_bytes::ByteBuf::from(object.bytes));
            if message_bytes >= PUT_BYTES {
                self.put(std::mem::take(&mut message)).await?;
                message_bytes = 0;
            }
        }
        self.put(message).await
    }

    async fn put(&mut self, objects: Vec<serde_bytes::ByteBuf>) -> Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        self.unsynced += objects.len();
        self.unsynced_refs += objects
            .iter()
            .map(|o| Header::read(o).map_or(0, |(h, _)| h.refs.len()))
            .sum::<usize>();
        self.client.send(&Message::PutSealed { objects }).await?;
        // The relay holds a row per object, and what it names, until a sync.
        if self.unsynced >= ferry_protocol::message::MAX_PENDING_OBJECTS / 8
            || self.unsynced_refs >= ferry_protocol::message::MAX_UNSYNCED_REFS / 4
        {
            self.client.sync_later().await?;
            (self.unsynced, self.unsynced_refs) = (0, 0);
        }
        Ok(())
    }

    /// Asks the relay for the trees and contents at and below those of
    /// `roots` not already at hand (contents only if `contents`), up to
    /// `room` bytes a reply, in one
    /// round trip (a batch per [`MAX_BATCH`] roots, all in flight); later
    /// fetches take them from what came. Nothing is trusted until opened.
    ///
    /// # Errors
    /// Session failures and answers that are not `SealedBelow`.
    pub async fn ahead_below(
        &mut self,
        roots: &[StorageId],
        room: u32,
        contents: bool,
    ) -> Result<()> {
        self.settle().await?;
        let missing: Vec<StorageId> = roots
            .iter()
            .filter(|id| !self.ahead.contains_key(id))
            .copied()
            .collect();
        let asked = self.ask_below(&missing, room, contents).await?;
        self.read_below(asked).await
    }

    /// The relay's snapshots of `set` (of every set for `None`), with
    /// what lies below `guess` — the root this endpoint saw last, usually
    /// the one restored — asked for in the same round trip (as
    /// [`Remote::ahead_below`]; a wrong guess costs at most `room` bytes).
    ///
    /// # Errors
    /// Session failures and answers of the wrong kind.
    pub async fn list_guessing(
        &mut self,
        set: Option<&str>,
        guess: Option<StorageId>,
        (room, contents): (u32, bool),
    ) -> Result<Vec<ferry_protocol::message::SnapshotInfo>> {
        self.settle().await?;
        self.client
            .ask(&Message::ListSnapshots {
                set: set.map(str::to_string),
            })
            .await?;
        let guess: Vec<StorageId> = guess
            .filter(|id| !self.ahead.contains_key(id))
            .into_iter()
            .collect();
        let asked = self.ask_below(&guess, room, contents).await?;
        let listed = match self.client.answer().await? {
            Message::SnapshotList { snapshots } => snapshots,
            other => return Err(unexpected("SnapshotList", &other)),
        };
        self.read_below(asked).await?;
        Ok(listed)
    }

    /// Asks for what lies below `roots` (nothing once [`BELOW_BYTES`] are
    /// kept); returns how many answers to read.
    async fn ask_below(&mut self, roots: &[StorageId], room: u32, contents: bool) -> Result<usize> {
        if roots.is_empty() || self.ahead_bytes >= BELOW_BYTES {
            return Ok(0);
        }
        let batches: Vec<&[StorageId]> = roots.chunks(MAX_BATCH).collect();
        for batch in &batches {
            self.client
                .ask(&Message::GetSealedBelow {
                    roots: batch.to_vec(),
                    room,
                    contents,
                })
                .await?;
        }
        Ok(batches.len())
    }

    /// Reads `answers` replies to [`Remote::ask_below`] into what was sent
    /// ahead.
    async fn read_below(&mut self, answers: usize) -> Result<()> {
        for _ in 0..answers {
            let objects = match self.client.answer().await? {
                Message::SealedBelow { objects } => objects,
                other => return Err(unexpected("SealedBelow", &other)),
            };
            for (id, bytes) in objects {
                if bytes.len() > MAX_SEALED_OBJECT || self.ahead_bytes >= BELOW_BYTES {
                    continue;
                }
                self.ahead_bytes += bytes.len();
                self.ahead.insert(id, bytes.into_vec());
            }
        }
        Ok(())
    }

    /// Fetches the objects `ids` (each once), as stored: the caller opens them.
    ///
    /// # Errors
    /// Session failures, an object the relay does not have, and more
    /// objects than asked.
    pub async fn get(&mut self, ids: &[StorageId]) -> Result<HashMap<StorageId, Vec<u8>>> {
        self.settle().await?;
        let mut wanted: Vec<StorageId> = ids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut got = HashMap::with_capacity(wanted.len());
        // What the relay sent ahead first (kept: a root or a tree may be
        // asked for twice; all of it within BELOW_BYTES).
        wanted.retain(|id| match self.ahead.get(id) {
            Some(bytes) => {
                got.insert(*id, bytes.clone());
                false
            }
            None => true,
        });
        let mut queue: std::collections::VecDeque<Vec<StorageId>> =
            wanted.chunks(GET_BATCH).map(<[_]>::to_vec).collect();
        let mut flying: std::collections::VecDeque<Vec<StorageId>> = Default::default();
        while !queue.is_empty() || !flying.is_empty() {
            while flying.len() < IN_FLIGHT {
                let Some(batch) = queue.pop_front() else {
                    break;
                };
                self.client
                    .ask(&Message::GetSealed { ids: batch.clone() })
                    .await?;
                flying.push_back(batch);
            }
            let Some(batch) = flying.pop_front() else {
                break;
            };
            let objects = match self.client.answer().await? {
                Message::SealedObjects { objects } => objects,
                other => return Err(unexpected("SealedObjects", &other)),
            };
            if objects.len() > batch.len() || (objects.is_empty() && !batch.is_empty()) {
                bail!(
                    "the relay answered a fetch of {} objects with {}",
                    batch.len(),
                    objects.len()
                );
            }
            for (id, object) in batch.iter().zip(&objects) {
                let Some(bytes) = object else {
                    bail!(
                        "the relay does not hold sealed object {} (lost or collected): run `ferry-relay verify`, then back up again",
                        short(id)
                    );
                };
                if bytes.len() > MAX_SEALED_OBJECT {
                    bail!("the relay sent an oversized sealed object");
                }
                got.insert(*id, bytes.to_vec());
            }
            // What did not fit the reply: asked for again.
            if objects.len() < batch.len() {
                queue.push_front(batch[objects.len()..].to_vec());
            }
        }
        Ok(got)
    }

    /// Fetches and opens objects that must all be of `kind`; returns each
    /// one's header and plaintext.
    ///
    /// # Errors
    /// As [`Remote::get`], and an object that does not open: swapped,
    /// altered, of another kind or another vault — one line naming it.
    pub async fn open_all(
        &mut self,
        keys: &SealingKeys,
        kind: SealedKind,
        ids: &[StorageId],
    ) -> Result<HashMap<StorageId, (Header, Vec<u8>)>> {
        self.open_any(keys, &[kind], ids).await
    }

    /// As [`Remote::open_all`], each object being of one of `kinds` (a
    /// small file's chunk is a chunk or a patch).
    ///
    /// # Errors
    /// As [`Remote::open_all`].
    pub async fn open_any(
        &mut self,
        keys: &SealingKeys,
        kinds: &[SealedKind],
        ids: &[StorageId],
    ) -> Result<HashMap<StorageId, (Header, Vec<u8>)>> {
        let fetched = self.get(ids).await?;
        fetched
            .into_iter()
            .map(|(id, bytes)| {
                // The kind its header claims when it is one of those asked
                // for (opening checks the claim), else the first.
                let kind = Header::read(&bytes)
                    .ok()
                    .map(|(header, _)| header.kind)
                    .filter(|kind| kinds.contains(kind))
                    .or(kinds.first().copied())
                    .ok_or_else(|| anyhow::anyhow!("no kind of sealed object asked for"))?;
                let opened = open(keys, &id, &bytes, kind).map_err(|e| {
                    anyhow::anyhow!(
                        "the relay served sealed {kind:?} {} that does not open: {e}; nothing more is trusted from it",
                        short(&id)
                    )
                })?;
                Ok((id, opened))
            })
            .collect()
    }

    /// Follows chains of objects, each naming the next (a patch its base):
    /// every start opened, then what `link` says each names, level by
    /// level, one batch of fetches per link, until every chain ends.
    /// Returns each chain, start first, and everything opened.
    ///
    /// # Errors
    /// As [`Remote::open_all`], what `link` refuses, and a chain longer
    /// than `longest`.
    pub async fn chains(
        &mut self,
        keys: &SealingKeys,
        starts: &[(StorageId, Kinds)],
        longest: usize,
        link: impl Fn(&Header, &[u8]) -> Result<Option<(StorageId, Kinds)>>,
    ) -> Result<(Vec<Vec<StorageId>>, Opened)> {
        let mut chains: Vec<Vec<(StorageId, Kinds)>> =
            starts.iter().map(|start| vec![*start]).collect();
        let mut ended = vec![false; chains.len()];
        let mut opened: Opened = HashMap::new();
        for _ in 0..=longest {
            let mut wanted: HashMap<Kinds, Vec<StorageId>> = HashMap::new();
            for (chain, _) in chains.iter().zip(&ended).filter(|(_, e)| !**e) {
                let (id, kind) = *chain.last().expect("not empty");
                if !opened.contains_key(&id) {
                    wanted.entry(kind).or_default().push(id);
                }
            }
            for (kinds, ids) in wanted {
                opened.extend(self.open_any(keys, kinds, &ids).await?);
            }
            for (chain, ended) in chains.iter_mut().zip(ended.iter_mut()) {
                if *ended {
                    continue;
                }
                let (id, _) = *chain.last().expect("not empty");
                let (header, plain) = &opened[&id];
                match link(header, plain)? {
                    Some(next) => chain.push(next),
                    None => *ended = true,
                }
            }
            if ended.iter().all(|e| *e) {
                let chains = chains
                    .into_iter()
                    .map(|c| c.into_iter().map(|(id, _)| id).collect())
                    .collect();
                return Ok((chains, opened));
            }
        }
        bail!("the relay serves a chain of sealed objects longer than {longest}")
    }
}

/// The kinds an object asked for may be (its header says which).
pub type Kinds = &'static [SealedKind];

/// Sealed objects opened: each one's header and plaintext.
pub type Opened = HashMap<StorageId, (Header, Vec<u8>)>;

/// A storage id as people see it in messages.
pub fn short(id: &StorageId) -> String {
    id.0[..6].iter().map(|b| format!("{b:02x}")).collect()
}
