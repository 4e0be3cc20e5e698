//! The relay as a sealed client sees it: a store of opaque objects named
//! by storage id. Queries and fetches go in batches, several in flight, so
//! a thousand objects cost a round trip or two, not a thousand.

use std::collections::HashMap;

use anyhow::{bail, Result};
use ferry_protocol::message::{is_missing, Message, StorageId, MAX_BATCH};
use ferry_protocol::sealed::{open, Header, SealedKind, SealingKeys};
use ferry_protocol::sealed_objects::MAX_SEALED_OBJECT;

use crate::client::{unexpected, RelayClient};

/// Bytes of objects gathered before they go in one `PutSealed`.
const PUT_BYTES: usize = 2 * 1024 * 1024;
/// Fetch batches in flight at once.
const IN_FLIGHT: usize = 4;
/// Ids asked for in one `GetSealed` (small objects: many; the relay sends
/// fewer when they do not fit one message).
const GET_BATCH: usize = 64;

/// Sealed objects out and in through one session.
pub struct Remote<'c> {
    client: &'c mut RelayClient,
    /// Objects waiting to be sent together.
    outgoing: Vec<serde_bytes::ByteBuf>,
    outgoing_bytes: usize,
    /// Objects sent since the last sync.
    unsynced: usize,
    /// Bytes of sealed objects sent, in all.
    pub bytes_put: u64,
}

impl<'c> Remote<'c> {
    /// Sealed objects through `client`'s session.
    pub fn new(client: &'c mut RelayClient) -> Self {
        Remote {
            client,
            outgoing: Vec::new(),
            outgoing_bytes: 0,
            unsynced: 0,
            bytes_put: 0,
        }
    }

    /// The session back, once done.
    pub fn into_client(self) -> &'c mut RelayClient {
        self.client
    }

    /// The session, for the requests that are not about objects.
    pub fn client(&mut self) -> &mut RelayClient {
        self.client
    }

    /// Which of `ids` the relay lacks, in order.
    ///
    /// # Errors
    /// Session failures and answers that are not bitmaps.
    pub async fn missing(&mut self, ids: &[StorageId]) -> Result<Vec<bool>> {
        let mut missing = Vec::with_capacity(ids.len());
        let batches: Vec<&[StorageId]> = ids.chunks(MAX_BATCH).collect();
        for batch in &batches {
            self.client
                .ask(&Message::QuerySealed {
                    ids: batch.to_vec(),
                })
                .await?;
        }
        for batch in batches {
            match self.client.answer().await? {
                Message::ChunksMissing { missing: bitmap } => {
                    missing.extend((0..batch.len()).map(|i| is_missing(&bitmap, i)));
                }
                other => return Err(unexpected("ChunksMissing", &other)),
            }
        }
        Ok(missing)
    }

    /// Queues `object` for the relay; objects go in the order queued, so
    /// queue what an object names before it.
    ///
    /// # Errors
    /// Session failures.
    pub async fn put(&mut self, object: Vec<u8>) -> Result<()> {
        self.outgoing_bytes += object.len();
        self.outgoing.push(serde_bytes::ByteBuf::from(object));
        if self.outgoing_bytes >= PUT_BYTES || self.outgoing.len() >= MAX_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends what is queued.
    ///
    /// # Errors
    /// Session failures.
    pub async fn flush(&mut self) -> Result<()> {
        if self.outgoing.is_empty() {
            return Ok(());
        }
        let objects = std::mem::take(&mut self.outgoing);
        self.unsynced += objects.len();
        self.bytes_put += self.outgoing_bytes as u64;
        self.outgoing_bytes = 0;
        self.client.send(&Message::PutSealed { objects }).await?;
        // The relay holds a row per object until a sync.
        if self.unsynced >= ferry_protocol::message::MAX_PENDING_OBJECTS / 8 {
            self.client.sync_later().await?;
            self.unsynced = 0;
        }
        Ok(())
    }

    /// Fetches the objects `ids` (each once), as stored: the caller opens them.
    ///
    /// # Errors
    /// Session failures, an object the relay does not have, and more
    /// objects than asked.
    pub async fn get(&mut self, ids: &[StorageId]) -> Result<HashMap<StorageId, Vec<u8>>> {
        let mut wanted: Vec<StorageId> = ids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut got = HashMap::with_capacity(wanted.len());
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
        let fetched = self.get(ids).await?;
        fetched
            .into_iter()
            .map(|(id, bytes)| {
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

    /// Queued objects sent, and all sent made durable.
    ///
    /// # Errors
    /// Session failures.
    pub async fn sync(&mut self) -> Result<()> {
        self.flush().await?;
        match self.client.request(&Message::Sync).await? {
            Message::Synced { .. } => {}
            other => return Err(unexpected("Synced", &other)),
        }
        self.client.take_rejected();
        self.unsynced = 0;
        Ok(())
    }
}

/// A storage id as people see it in messages.
pub fn short(id: &StorageId) -> String {
    id.0[..6].iter().map(|b| format!("{b:02x}")).collect()
}
