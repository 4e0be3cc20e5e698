//! What an upload is sent: which chunks and objects the relay lacks, the
//! signatures deltas are made against, and the chunks themselves (whole,
//! compressed, or as deltas), each checked before it is stored.

use ferry_protocol::chunking::MAX_CHUNK;
use ferry_protocol::compress::{decompress, decompress_slice, Codec};
use ferry_protocol::delta;
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::ChunkId;
use ferry_protocol::message::{
    set_missing, ChunkBatch, ChunkPut, Message, ObjectId, MAX_BATCH, MAX_SIGNATURES,
};

use super::lookup::object_key;
use super::upload::{joined, LOADED_TOGETHER};
use super::{check, violation, Result, Transfer};
use crate::catalog::BlobKind;
use crate::plaintext::OpenObjects;
use std::collections::HashMap;

impl Transfer {
    /// Which of `ids` the client lacks (a bit each).
    pub(super) fn query_chunks(&mut self, ids: &[ChunkId]) -> Result<Message> {
        check_batch(ids.len())?;
        let ids: Vec<[u8; 32]> = ids.iter().map(|id| id.0).collect();
        let mut missing = vec![0u8; ids.len().div_ceil(8)];
        for (i, found) in self.reuse(BlobKind::Chunk, &ids)?.into_iter().enumerate() {
            if !found {
                set_missing(&mut missing, i);
                self.told_missing(BlobKind::Chunk, ids[i]);
            }
        }
        Ok(Message::ChunksMissing { missing })
    }

    /// The rsync signatures of stored chunks, computed when asked (most
    /// chunks are never a delta base, so ingest skips it).
    pub(super) fn signatures(&self, ids: &[ChunkId]) -> Result<Message> {
        check!(
            ids.len() <= MAX_SIGNATURES,
            "{} signatures asked for at once; the limit is {MAX_SIGNATURES}",
            ids.len()
        );
        let distinct: std::collections::HashSet<&ChunkId> = ids.iter().collect();
        check!(
            distinct.len() == ids.len(),
            "the same chunk's signature asked for twice in one request"
        );
        let each: Vec<Vec<ChunkId>> = ids.iter().map(|id| vec![*id]).collect();
        self.signatures_of(&each)
    }

    /// The signatures of bases of several chunks joined.
    pub(super) fn base_signatures(&self, bases: &[Vec<ChunkId>]) -> Result<Message> {
        let chunks: usize = bases.iter().map(Vec::len).sum();
        check!(
            chunks <= MAX_SIGNATURES,
            "{chunks} chunks' signatures asked for at once; the limit is {MAX_SIGNATURES}"
        );
        check!(
            bases
                .iter()
                .all(|b| (1..=delta::MAX_BASE_CHUNKS).contains(&b.len())),
            "a base of no chunk or more than {}",
            delta::MAX_BASE_CHUNKS
        );
        self.signatures_of(bases)
    }

    /// The signature of each base (its chunks joined), `None` for one the
    /// client lacks; the chunks looked up and read in groups.
    fn signatures_of(&self, bases: &[Vec<ChunkId>]) -> Result<Message> {
        let mut signatures = Vec::with_capacity(bases.len());
        // Groups of bases naming LOADED_TOGETHER chunks at most (a request's
        // memory stays bounded whatever it names).
        let mut start = 0;
        while start < bases.len() {
            let mut ids: Vec<[u8; 32]> = Vec::new();
            let mut end = start;
            while let Some(base) = bases.get(end) {
                let new: Vec<[u8; 32]> = base
                    .iter()
                    .map(|c| c.0)
                    .filter(|id| !ids.contains(id))
                    .collect();
                if end > start && ids.len() + new.len() > LOADED_TOGETHER {
                    break;
                }
                ids.extend(new);
                end += 1;
            }
            let loaded = self.load_among(BlobKind::Chunk, &ids)?;
            signatures.extend(bases[start..end].iter().map(|base| {
                joined(base, &loaded)
                    .map(|raw| serde_bytes::ByteBuf::from(OpenObjects::signature(&raw)))
            }));
            start = end;
        }
        Ok(Message::Signatures { signatures })
    }

    /// One chunk, compressed by `codec`: checked against its id and stored
    /// as it came (no second compression).
    pub(super) fn put_chunk(&mut self, id: ChunkId, codec: Codec, data: Vec<u8>) -> Result<()> {
        let raw = decompress_slice(codec, &data, MAX_CHUNK as usize)?;
        check!(
            ChunkId::of(&raw) == id,
            "chunk {} does not match its id",
            id.short()
        );
        self.store_chunk(id, &raw, Some((codec, data)))
    }

    /// One chunk as a delta against `base`, compressed by `codec`.
    pub(super) fn put_delta_message(
        &mut self,
        id: ChunkId,
        base: ChunkId,
        codec: Codec,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let delta = decompress(codec, bytes, delta::MAX_DELTA)?;
        self.put_delta(id, &[base], &delta)
    }

    /// A batch of chunks, whole, compressed or as deltas.
    pub(super) fn put_chunks(&mut self, codec: Codec, data: Vec<u8>) -> Result<()> {
        let raw = decompress(codec, data, MAX_MESSAGE)?;
        let puts = ChunkBatch::decode(&raw)?.0;
        let loaded = self.first_bases(&puts)?;
        for put in puts {
            match put {
                ChunkPut::Whole(data) => {
                    check!(
                        data.len() <= MAX_CHUNK as usize,
                        "a chunk of {} bytes exceeds the largest chunk",
                        data.len()
                    );
                    self.store_chunk(ChunkId::of(&data), &data, None)?;
                }
                ChunkPut::Packed { codec, data } => {
                    let raw = decompress_slice(codec, &data, MAX_CHUNK as usize)?;
                    self.store_chunk(ChunkId::of(&raw), &raw, Some((codec, data)))?;
                }
                ChunkPut::Delta { id, base, delta } => {
                    check_delta(&delta)?;
                    self.put_delta_over(id, &[base], &delta, &loaded)?;
                }
                ChunkPut::DeltaOver { id, bases, delta } => {
                    check_delta(&delta)?;
                    check!(
                        (1..=delta::MAX_BASE_CHUNKS).contains(&bases.len()),
                        "a delta over {} chunks; the limit is {}",
                        bases.len(),
                        delta::MAX_BASE_CHUNKS
                    );
                    self.put_delta_over(id, &bases, &delta, &loaded)?;
                }
            }
        }
        Ok(())
    }

    /// The chunks the batch's first deltas are made against, loaded
    /// together ([`LOADED_TOGETHER`] at most; the rest are looked up as
    /// they come).
    fn first_bases(&self, puts: &[ChunkPut]) -> Result<HashMap<[u8; 32], Vec<u8>>> {
        let mut ids: Vec<[u8; 32]> = Vec::new();
        let named = puts.iter().flat_map(|put| match put {
            ChunkPut::Delta { base, .. } => std::slice::from_ref(base),
            ChunkPut::DeltaOver { bases, .. } => bases.as_slice(),
            _ => &[],
        });
        for base in named {
            if ids.len() == LOADED_TOGETHER {
                break;
            }
            if !ids.contains(&base.0) {
                ids.push(base.0);
            }
        }
        self.load_among(BlobKind::Chunk, &ids)
    }

    /// Remembers, in the open upload, that `id` was told missing.
    fn told_missing(&mut self, kind: BlobKind, id: [u8; 32]) {
        if let Some(upload) = self.upload.as_mut() {
            upload
                .told_missing
                .told(crate::catalog::BlobKey { kind, id });
        }
    }

    /// Which of the trees and contents `ids` the client lacks, in the order
    /// asked.
    pub(super) fn query_objects(&mut self, ids: &[ObjectId]) -> Result<Message> {
        check_batch(ids.len())?;
        let mut missing = Vec::new();
        for kind in [BlobKind::Tree, BlobKind::Content] {
            let asked: Vec<&ObjectId> = ids
                .iter()
                .filter(|id| object_key(id).kind == kind)
                .collect();
            let keys: Vec<[u8; 32]> = asked.iter().map(|id| object_key(id).id).collect();
            let found = self.reuse(kind, &keys)?;
            for (id, _) in keys.iter().zip(&found).filter(|(_, f)| !**f) {
                self.told_missing(kind, *id);
            }
            missing.extend(
                asked
                    .into_iter()
                    .zip(found)
                    .filter(|(_, f)| !f)
                    .map(|(id, _)| *id),
            );
        }
        let order: std::collections::HashMap<ObjectId, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        missing.sort_by_key(|id| order[id]);
        Ok(Message::ObjectsMissing { ids: missing })
    }
}

fn check_batch(len: usize) -> Result<()> {
    check!(
        len <= MAX_BATCH,
        "batch of {len} ids exceeds the limit of {MAX_BATCH}"
    );
    Ok(())
}

fn check_delta(delta: &[u8]) -> Result<()> {
    check!(
        delta.len() <= delta::MAX_DELTA,
        "a delta of {} bytes exceeds the limit",
        delta.len()
    );
    Ok(())
}
