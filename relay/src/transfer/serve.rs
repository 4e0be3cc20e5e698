//! Serving restores: objects and chunks one at a time (`GetObject`,
//! `GetChunk`), or many in one `Fetch` whose replies travel compressed
//! together, as the endpoint asks for its downlink.

use ferry_protocol::compress::{compress_with, decompress_slice, Codec, Method, ZSTD_LEVEL};
use ferry_protocol::fetch::{
    FetchItem, FetchReplies, FetchReply, MAX_FETCH, MAX_FETCH_RAW, MAX_SUBTREES,
};
use ferry_protocol::ids::{ChunkId, TreeId};
use ferry_protocol::message::{Message, ObjectId, Refusal};

use super::lookup::object_key;
use super::*;
use crate::catalog::BlobKey;
use crate::plaintext::OpenObjects;

impl Transfer {
    /// A tree or content, as stored.
    pub(super) fn get_object(&self, id: &ObjectId) -> Result<Message> {
        let BlobKey { kind, id: key } = object_key(id);
        Ok(match self.fetch(kind, &key)? {
            Some((row, data)) => Message::Object {
                codec: row.codec,
                data,
            },
            None => Message::Refused {
                code: Refusal::NoSuchObject,
                message: format!("no such object {id:?}"),
            },
        })
    }

    /// A chunk for a restore: as a delta against the caller's similar chunk
    /// when that is smaller, else whole.
    pub(super) fn get_chunk(
        &self,
        id: &ChunkId,
        base_signature: Option<Vec<u8>>,
    ) -> Result<Message> {
        let Some((row, stored)) = self.fetch(BlobKind::Chunk, &id.0)? else {
            return Ok(Message::Refused {
                code: Refusal::NoSuchObject,
                message: format!("no such chunk {}", id.short()),
            });
        };
        if let Some(signature) = base_signature {
            let raw = decompress_slice(row.codec, &stored, MAX_CHUNK as usize)?;
            let delta = OpenObjects::delta_for(signature, &raw)?;
            let (codec, delta) = compress(&delta);
            if delta.len() < stored.len() {
                return Ok(Message::ChunkDelta { codec, delta });
            }
        }
        Ok(Message::ChunkData {
            codec: row.codec,
            data: stored,
        })
    }

    /// The replies to a `Fetch`, in order, compressed together as `codec`
    /// asks: for zstd each is decompressed first, so the batch's context
    /// spans them all (small files compress as a stream, not one by one);
    /// otherwise each goes as stored and the batch as it is. Past
    /// [`MAX_FETCH_RAW`] bytes the rest are answered [`FetchReply::Later`].
    pub(super) fn fetch_batch(&self, items: Vec<FetchItem>, codec: Codec) -> Result<Message> {
        check!(
            items.len() <= MAX_FETCH,
            "a fetch of {} items exceeds the limit of {MAX_FETCH}",
            items.len()
        );
        let together = codec == Codec::Zstd;
        let mut replies = Vec::with_capacity(items.len());
        let mut raw = 0usize;
        for item in items {
            if raw >= MAX_FETCH_RAW {
                replies.push(FetchReply::Later);
                continue;
            }
            let answer = match item {
                FetchItem::Object(id) => self.get_object(&id)?,
                FetchItem::Chunk { id, base_signature } => self.get_chunk(&id, base_signature)?,
                FetchItem::Trees(root) => {
                    let reply = self.subtrees(root, MAX_FETCH_RAW - raw, replies.is_empty())?;
                    if reply == FetchReply::Later {
                        raw = MAX_FETCH_RAW;
                    }
                    raw += reply.len() + 16;
                    replies.push(reply);
                    continue;
                }
            };
            let (codec, data, delta) = match answer {
                Message::Object { codec, data } | Message::ChunkData { codec, data } => {
                    (codec, data, false)
                }
                Message::ChunkDelta { codec, delta } => (codec, delta, true),
                Message::Refused { code, message } => {
                    replies.push(FetchReply::Refused { code, message });
                    continue;
                }
                other => return Err(violation!("no reply to fetch as {}", other.name())),
            };
            let unpacked = if together && codec != Codec::None {
                Some(decompress_slice(codec, &data, MAX_MESSAGE)?)
            } else {
                None
            };
            // Each reply's framing is a few bytes besides.
            let fits = |len: usize| raw + len + 16 <= MAX_FETCH_RAW;
            let (codec, data) = match unpacked {
                Some(unpacked) if fits(unpacked.len()) => (Codec::None, unpacked),
                None if fits(data.len()) => (codec, data),
                // The first is answered as stored, which fits a message as
                // it did alone; later ones wait for the next batch.
                _ if replies.is_empty() => (codec, data),
                _ => {
                    raw = MAX_FETCH_RAW;
                    replies.push(FetchReply::Later);
                    continue;
                }
            };
            raw += data.len() + 16;
            replies.push(if delta {
                FetchReply::Delta { codec, delta: data }
            } else {
                FetchReply::Data { codec, data }
            });
        }
        let encoded = FetchReplies(replies).encode()?;
        // Otherwise each reply is as stored (compressed on its own or not
        // worth it): compressing the batch again would only cost time.
        let (codec, data) = if together {
            compress_with(Method::Zstd(ZSTD_LEVEL), &encoded)
        } else {
            (Codec::None, encoded)
        };
        Ok(Message::Fetched { codec, data })
    }

    /// `root` and the trees below it, breadth-first, while they fit in
    /// `room` bytes; a tree this client lacks, or that does not decode, is
    /// left out with what is below it. When `root` alone does not fit, it
    /// is put off, or as the batch's `first` reply sent as stored (it fits
    /// a message as it did alone).
    fn subtrees(&self, root: TreeId, room: usize, first: bool) -> Result<FetchReply> {
        let mut queue = std::collections::VecDeque::from([root]);
        let mut seen = std::collections::HashSet::from([root]);
        let mut trees = Vec::new();
        let mut used = 0usize;
        while let Some(id) = queue.pop_front() {
            if trees.len() >= MAX_SUBTREES {
                break;
            }
            let Some(raw) = self.load(BlobKind::Tree, &id.0)? else {
                if id == root {
                    return Ok(FetchReply::Refused {
                        code: Refusal::NoSuchObject,
                        message: format!("no such directory {}", id.short()),
                    });
                }
                continue;
            };
            if used + raw.len() + 4 > room {
                if !trees.is_empty() {
                    break;
                }
                if !first {
                    return Ok(FetchReply::Later);
                }
                return Ok(match self.get_object(&ObjectId::Tree(root))? {
                    Message::Object { codec, data } => FetchReply::Data { codec, data },
                    _ => FetchReply::Refused {
                        code: Refusal::NoSuchObject,
                        message: format!("no such directory {}", root.short()),
                    },
                });
            }
            for tree in OpenObjects::subtrees(id, &raw) {
                if seen.insert(tree) {
                    queue.push_back(tree);
                }
            }
            used += raw.len() + 4;
            trees.push(serde_bytes::ByteBuf::from(raw));
        }
        Ok(FetchReply::Trees(trees))
    }
}
