//! Sending chunks: batched across files, asked about once per batch,
//! compressed together.
//!
//! Chunks queue here from every file the backup reads, so a tree of small
//! files costs one `QueryChunks` per [`BATCH_CHUNKS`] chunks, not one per
//! file; and its answer is read only when the next queue is full (or at a
//! flush), so the round trip passes while the backup reads on. The chunks the relay lacks go in `PutChunks` messages of
//! about [`PUT_BYTES`] before compression, so zstd sees across small files
//! as rsync's compressed stream does. A missing chunk goes as an rsync delta
//! against the chunk at the same place in the file's previous version when
//! the delta is smaller. With lz4 each chunk is compressed on its own
//! instead (lz4 gains little from shared context), so the relay stores it as
//! it came rather than compressing it again. Every [`SYNC_BYTES`] the relay is asked to make what
//! it got durable: also how much a cut-off backup sends again.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context, Result};
use ferry_protocol::chunking::Chunk;
use ferry_protocol::compress::{compress_with, Codec, Method, ZSTD_LEVEL};
use ferry_protocol::delta;
use ferry_protocol::ids::ChunkId;
use ferry_protocol::message::{
    is_missing, ChunkBatch, ChunkPut, Message, MAX_BATCH, MAX_SIGNATURES,
};

use crate::client::{unexpected, RelayClient};
use crate::compression::Chooser;

/// Chunks per query.
pub const BATCH_CHUNKS: usize = 512;
/// Raw bytes queued before a query, whatever the count.
pub const BATCH_BYTES: usize = 8 << 20;
/// Raw bytes per `PutChunks` message (its limit is 4 MiB decompressed).
pub const PUT_BYTES: usize = 2 << 20;
/// The same with the slow zstd levels of slow links: a batch there takes a
/// second or more to compress and send, and level 15's memory grows with it.
pub const SLOW_PUT_BYTES: usize = 1 << 20;
/// Sent bytes after which the relay is asked to make them durable.
pub const SYNC_BYTES: usize = 16 << 20;
/// Delta-sent chunk bytes kept for resending, after which a sync is forced.
pub const SYNC_DELTA_BYTES: usize = 16 << 20;
/// Chunks sent before a sync, whatever their size: the relay holds a row
/// for each until then and refuses more than
/// [`MAX_UNSYNCED_CHUNKS`](ferry_protocol::message::MAX_UNSYNCED_CHUNKS).
pub const SYNC_CHUNKS: usize = ferry_protocol::message::MAX_UNSYNCED_CHUNKS / 4;

/// What went, counted for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    /// Chunks sent whole.
    pub whole: u64,
    /// Chunks sent as deltas.
    pub deltas: u64,
}

/// The chunk queue of one backup.
#[derive(Debug)]
pub struct Uploader {
    queue: Vec<(Chunk, Vec<ChunkId>)>,
    queued_bytes: usize,
    /// Chunks sent as deltas since the last sync, to resend whole if rejected.
    deltas: HashMap<ChunkId, Vec<u8>>,
    delta_bytes: usize,
    unsynced_bytes: usize,
    /// Chunks sent since the last sync.
    unsynced_chunks: usize,
    chooser: Chooser,
    sent: Sent,
    /// The last batch, being compressed on a blocking thread, and its raw size.
    compressing: Option<(Compressing, usize)>,
    /// The queue asked about last, whose answers are not read yet.
    asked: Option<Asked>,
}

/// A queue whose `QueryChunks` and base signatures were asked for.
#[derive(Debug)]
struct Asked {
    queue: Vec<(Chunk, Vec<ChunkId>)>,
    signatures: Vec<Vec<Vec<ChunkId>>>,
}

/// A batch being compressed: its codec, bytes and the time it took.
type Compressing = tokio::task::JoinHandle<(
    ferry_protocol::compress::Codec,
    Vec<u8>,
    std::time::Duration,
)>;

impl Uploader {
    /// An empty queue compressing as `chooser` says.
    pub fn new(chooser: Chooser) -> Self {
        Uploader {
            queue: Vec::new(),
            queued_bytes: 0,
            deltas: HashMap::new(),
            delta_bytes: 0,
            unsynced_bytes: 0,
            unsynced_chunks: 0,
            chooser,
            sent: Sent::default(),
            compressing: None,
            asked: None,
        }
    }

    /// The counts so far.
    pub fn sent(&self) -> Sent {
        self.sent
    }

    /// The compression in use.
    pub fn chooser(&self) -> &Chooser {
        &self.chooser
    }

    /// Queues a chunk with the previous version's chunks that covered its
    /// place (the delta base, if any); sends the queue when it is full.
    ///
    /// # Errors
    /// When the session breaks.
    pub async fn push(
        &mut self,
        client: &mut RelayClient,
        chunk: Chunk,
        base: Vec<ChunkId>,
    ) -> Result<()> {
        self.queued_bytes += chunk.data.len();
        self.queue.push((chunk, base));
        if self.queue.len() >= BATCH_CHUNKS || self.queued_bytes >= BATCH_BYTES {
            self.send_queue(client).await?;
        }
        Ok(())
    }

    /// Sends what the relay lacks of the queue asked about before, then
    /// asks about this one (its answers are read by the next call, or by
    /// [`Uploader::settle`]).
    ///
    /// # Errors
    /// When the session breaks or the relay refuses.
    pub async fn send_queue(&mut self, client: &mut RelayClient) -> Result<()> {
        self.settle(client).await?;
        let mut unique = HashSet::new();
        let mut queue: Vec<(Chunk, Vec<ChunkId>)> = std::mem::take(&mut self.queue)
            .into_iter()
            .filter(|(c, _)| unique.insert(c.id))
            .collect();
        self.queued_bytes = 0;
        if queue.is_empty() {
            return Ok(());
        }
        let ids = queue.iter().map(|(c, _)| c.id).collect();
        client.ask(&Message::QueryChunks { ids }).await?;
        // The bases' signatures are asked for at once, before knowing which
        // chunks are missing: one round trip, not two (a base of a chunk
        // the relay turns out to have costs its signature).
        // Relays before 1.5 join no bases: the first chunk alone is the base.
        let joins = client.relay_minor() >= 5;
        let bases: Vec<Vec<ChunkId>> = queue
            .iter_mut()
            .filter(|(_, b)| !b.is_empty())
            .map(|(_, b)| {
                b.truncate(if joins { delta::MAX_BASE_CHUNKS } else { 1 });
                b.clone()
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let signatures = ask_signatures(client, &bases).await?;
        self.asked = Some(Asked { queue, signatures });
        Ok(())
    }

    /// Reads the answers about the queue asked about last, if any, and
    /// sends the chunks the relay lacks. Whoever waits for another answer
    /// of the relay calls this first: answers come in order.
    ///
    /// # Errors
    /// When the session breaks or the relay refuses.
    pub async fn settle(&mut self, client: &mut RelayClient) -> Result<()> {
        let Some(Asked {
            queue,
            signatures: asked,
        }) = self.asked.take()
        else {
            return Ok(());
        };
        // The last batch compressed goes out while the answers come back:
        // held until the next batch, it would leave the link idle.
        self.drain(client).await?;
        let bitmap = match client.answer().await? {
            Message::ChunksMissing { missing } => missing,
            other => return Err(unexpected("ChunksMissing", &other)),
        };
        let signatures = read_signatures(client, asked).await?;
        let missing: Vec<(Chunk, Vec<ChunkId>)> = queue
            .into_iter()
            .enumerate()
            .filter(|(i, _)| is_missing(&bitmap, *i))
            .map(|(_, c)| c)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        for (chunk, base) in missing {
            let put = match signatures.get(&base) {
                Some(signature) => {
                    let delta = delta::diff_over(signature.clone(), &chunk.data)?;
                    if delta.len() < chunk.data.len() {
                        self.sent.deltas += 1;
                        self.delta_bytes += chunk.data.len();
                        self.deltas.insert(chunk.id, chunk.data);
                        match base.as_slice() {
                            [one] => ChunkPut::Delta {
                                id: chunk.id,
                                base: *one,
                                delta,
                            },
                            _ => ChunkPut::DeltaOver {
                                id: chunk.id,
                                bases: base,
                                delta,
                            },
                        }
                    } else {
                        self.whole(chunk.data)
                    }
                }
                None => self.whole(chunk.data),
            };
            batch_bytes += match &put {
                ChunkPut::Whole(data) | ChunkPut::Packed { data, .. } => data.len(),
                ChunkPut::Delta { delta, .. } | ChunkPut::DeltaOver { delta, .. } => delta.len(),
            };
            batch.push(put);
            self.unsynced_chunks += 1;
            if batch_bytes >= self.put_bytes() {
                self.put(client, std::mem::take(&mut batch), batch_bytes)
                    .await?;
                batch_bytes = 0;
            }
        }
        self.put(client, batch, batch_bytes).await?;
        if self.delta_bytes >= SYNC_DELTA_BYTES {
            self.sync_sent(client).await?;
        } else if self.unsynced_bytes >= SYNC_BYTES || self.unsynced_chunks >= SYNC_CHUNKS {
            if self.deltas.is_empty() {
                // Nothing to resend if rejected: no need to wait while the
                // relay flushes.
                client.sync_later().await?;
                self.unsynced_bytes = 0;
                self.unsynced_chunks = 0;
            } else {
                self.sync_sent(client).await?;
            }
        }
        Ok(())
    }

    /// How many raw bytes go in one `PutChunks` with the current method.
    fn put_bytes(&self) -> usize {
        match self.chooser.method() {
            Method::Zstd(level) if level > ZSTD_LEVEL => SLOW_PUT_BYTES,
            _ => PUT_BYTES,
        }
    }

    /// A chunk sent whole (compressed with its batch in [`Uploader::put`]).
    fn whole(&mut self, data: Vec<u8>) -> ChunkPut {
        self.sent.whole += 1;
        ChunkPut::Whole(data)
    }

    /// Starts compressing one `PutChunks` on a blocking thread and sends
    /// the one compressed before it: compression of a batch overlaps the
    /// sending (and any throttling) of the previous one.
    async fn put(
        &mut self,
        client: &mut RelayClient,
        batch: Vec<ChunkPut>,
        raw: usize,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let method = self.chooser.method();
        let compressing = if method == Method::None {
            // Nothing to compress: no copy, no thread hop.
            let encoded = ChunkBatch(batch).encode()?;
            tokio::spawn(async move { (Codec::None, encoded, std::time::Duration::ZERO) })
        } else {
            tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let (codec, data) = compress_batch(method, batch);
                (codec, data, started.elapsed())
            })
        };
        if let Some(previous) = self.compressing.replace((compressing, raw)) {
            self.send_compressed(client, previous).await?;
        }
        Ok(())
    }

    /// Sends the batch still being compressed, if any.
    async fn drain(&mut self, client: &mut RelayClient) -> Result<()> {
        if let Some(previous) = self.compressing.take() {
            self.send_compressed(client, previous).await?;
        }
        Ok(())
    }

    async fn send_compressed(
        &mut self,
        client: &mut RelayClient,
        (compressing, raw): (Compressing, usize),
    ) -> Result<()> {
        let (codec, data, took) = compressing.await.context("compression failed")?;
        self.unsynced_bytes += data.len();
        client.send(&Message::PutChunks { codec, data }).await?;
        self.chooser.observe(raw as u64, took, client.write_time());
        Ok(())
    }

    /// Sends the queue and what is being compressed; when deltas were sent
    /// since the last sync, makes everything durable on the relay, resending
    /// whole any chunk whose delta it could not apply. Otherwise nothing
    /// sent can be rejected, and the commit's own sync makes it durable:
    /// no round trip.
    ///
    /// # Errors
    /// When the session breaks or the relay rejects whole chunks.
    pub async fn flush(&mut self, client: &mut RelayClient) -> Result<()> {
        // Sends the queue; it syncs by itself if it crossed SYNC_BYTES.
        self.send_queue(client).await?;
        self.settle(client).await?;
        if self.deltas.is_empty() {
            return self.drain(client).await;
        }
        self.sync_sent(client).await
    }

    /// Makes everything sent so far durable, resending whole any chunk
    /// whose delta the relay could not apply.
    async fn sync_sent(&mut self, client: &mut RelayClient) -> Result<()> {
        self.drain(client).await?;
        let rejected = sync(client).await?;
        let mut deltas = std::mem::take(&mut self.deltas);
        self.delta_bytes = 0;
        self.unsynced_bytes = 0;
        self.unsynced_chunks = 0;
        if rejected.is_empty() {
            return Ok(());
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        for id in rejected {
            let data = deltas
                .remove(&id)
                .context("the relay rejected a chunk that was not sent as a delta")?;
            bytes += data.len();
            let put = self.whole(data);
            batch.push(put);
            if batch.len() == MAX_BATCH {
                self.put(client, std::mem::take(&mut batch), bytes).await?;
                bytes = 0;
            }
        }
        self.put(client, batch, bytes).await?;
        self.drain(client).await?;
        if !sync(client).await?.is_empty() {
            bail!("the relay rejected whole chunks");
        }
        self.unsynced_bytes = 0;
        Ok(())
    }
}

/// Encodes and compresses a batch: with lz4 each whole chunk is packed on
/// its own (lz4 gains little from shared context, and the relay stores a
/// packed chunk as it came) and the batch is not compressed again; with
/// zstd the batch is compressed as a whole.
fn compress_batch(method: Method, batch: Vec<ChunkPut>) -> (Codec, Vec<u8>) {
    let encode = |batch: ChunkBatch| batch.encode().expect("a chunk batch always encodes");
    if method != Method::Lz4 {
        return compress_with(method, &encode(ChunkBatch(batch)));
    }
    let packed = batch
        .into_iter()
        .map(|put| match put {
            ChunkPut::Whole(data) => {
                let (codec, data) = compress_with(Method::Lz4, &data);
                ChunkPut::Packed { codec, data }
            }
            other => other,
        })
        .collect();
    (Codec::None, encode(ChunkBatch(packed)))
}

/// Asks the relay to make what it got durable and waits for it; returns the
/// rejected chunks, also those of earlier syncs not waited for.
///
/// # Errors
/// When the session breaks or the answer is not `Synced`.
pub async fn sync(client: &mut RelayClient) -> Result<Vec<ChunkId>> {
    match client.request(&Message::Sync).await? {
        Message::Synced { rejected } => {
            let mut all = client.take_rejected();
            all.extend(rejected);
            Ok(all)
        }
        other => Err(unexpected("Synced", &other)),
    }
}

/// Asks for the relay's signatures of `bases` (each a run of chunks,
/// joined), [`MAX_SIGNATURES`] chunks per request; returns the requests'
/// bases, in order. Relays before 1.5 are asked for single chunks.
async fn ask_signatures(
    client: &mut RelayClient,
    bases: &[Vec<ChunkId>],
) -> Result<Vec<Vec<Vec<ChunkId>>>> {
    let mut requests: Vec<Vec<Vec<ChunkId>>> = Vec::new();
    let mut chunks = 0;
    for base in bases {
        if requests.is_empty() || chunks + base.len() > MAX_SIGNATURES {
            requests.push(Vec::new());
            chunks = 0;
        }
        chunks += base.len();
        requests.last_mut().expect("one request").push(base.clone());
    }
    for request in &requests {
        let message = if client.relay_minor() >= 5 {
            Message::GetBaseSignatures {
                bases: request.clone(),
            }
        } else {
            Message::GetSignatures {
                ids: request.iter().map(|b| b[0]).collect(),
            }
        };
        client.ask(&message).await?;
    }
    Ok(requests)
}

/// Reads the answers to [`ask_signatures`]: the signatures of the bases
/// the relay has.
async fn read_signatures(
    client: &mut RelayClient,
    requests: Vec<Vec<Vec<ChunkId>>>,
) -> Result<HashMap<Vec<ChunkId>, Vec<u8>>> {
    let mut found = HashMap::new();
    for bases in requests {
        match client.answer().await? {
            Message::Signatures { signatures } if signatures.len() == bases.len() => {
                for (base, signature) in bases.into_iter().zip(signatures) {
                    if let Some(signature) = signature {
                        found.insert(base, signature.into_vec());
                    }
                }
            }
            other => return Err(unexpected("Signatures", &other)),
        }
    }
    Ok(found)
}
