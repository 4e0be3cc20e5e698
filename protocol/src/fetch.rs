//! Batched fetches (protocol 1.5): a restore asks for many objects and
//! chunks in one [`Message::Fetch`](crate::message::Message::Fetch), and the
//! relay answers with one [`Message::Fetched`](crate::message::Message::Fetched)
//! whose payload, compressed as a whole, is a [`FetchReplies`]: a reply per
//! item, in order. Small files' contents and chunks then share one message
//! and one compression context (zstd across the batch, as rsync -z shares
//! zlib's across its stream) instead of a message and a compression each;
//! the endpoint picks the batch's codec for its downlink.

use serde::{Deserialize, Serialize};

use crate::compress::Codec;
use crate::decoding::decode_counted;
use crate::fragment::MAX_MESSAGE;
use crate::ids::ObjectId;
use crate::ids::{ChunkId, TreeId};
use crate::refusal::Refusal;
use crate::ProtocolError;

/// Items in one `Fetch`, at most.
pub const MAX_FETCH: usize = 1024;

/// Bytes of a batch's replies before compression, at most (a message
/// less room for its framing), except a batch whose first reply alone is
/// larger: that one goes as stored, as it would in an answer of its own,
/// so a batch decompresses to at most a message. The endpoint keeps its
/// asks well below (at most [`FETCH_BYTES`] of chunks and estimated
/// contents); past it the relay answers the rest [`FetchReply::Later`].
pub const MAX_FETCH_RAW: usize = MAX_MESSAGE - 4096;

/// Bytes of chunks (by their listed lengths) and estimated contents the
/// endpoint asks for in one `Fetch`, at most: a reply is never larger
/// than what it answers plus a little per item, so this leaves
/// [`MAX_FETCH_RAW`] room to spare.
pub const FETCH_BYTES: u64 = 1 << 20;

/// One thing asked for in a `Fetch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FetchItem {
    /// A tree or content.
    Object(ObjectId),
    /// A chunk, as a delta against the caller's when its signature is given.
    Chunk {
        /// The chunk wanted.
        id: ChunkId,
        /// Signature of a similar chunk the caller holds.
        #[serde(with = "serde_bytes")]
        base_signature: Option<Vec<u8>>,
    },
    /// A tree and the trees below it, breadth-first, as many as the
    /// batch has room for (answered by [`FetchReply::Trees`]): a
    /// snapshot's directories in one round trip rather than one per level.
    Trees(TreeId),
}

/// The reply to one item of a `Fetch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FetchReply {
    /// The object or whole chunk (its own compression; `None` inside a
    /// batch the relay compressed as a whole).
    Data {
        /// How `data` is compressed.
        codec: Codec,
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The chunk as a delta against the caller's base.
    Delta {
        /// How `delta` is compressed.
        codec: Codec,
        /// The delta.
        #[serde(with = "serde_bytes")]
        delta: Vec<u8>,
    },
    /// The relay cannot give it (it lacks it, or holds it damaged).
    Refused {
        /// Why, as the endpoint decides on it.
        code: Refusal,
        /// Why, for the user.
        message: String,
    },
    /// Not in this batch, which is full ([`MAX_FETCH_RAW`]): ask again.
    /// The first item of a batch is always answered.
    Later,
    /// The encoded trees asked for with [`FetchItem::Trees`], the first
    /// the one named, the rest below it breadth-first (at most
    /// [`MAX_SUBTREES`]); each is named by its hash.
    Trees(Vec<serde_bytes::ByteBuf>),
}

/// Trees in one [`FetchReply::Trees`], at most.
pub const MAX_SUBTREES: usize = 65_536;

impl FetchReply {
    /// Bytes it carries.
    pub fn len(&self) -> usize {
        match self {
            FetchReply::Data { data, .. } => data.len(),
            FetchReply::Delta { delta, .. } => delta.len(),
            FetchReply::Refused { message, .. } => message.len(),
            FetchReply::Later => 0,
            FetchReply::Trees(trees) => trees.iter().map(|t| t.len() + 4).sum(),
        }
    }

    /// Whether it carries no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The payload of `Fetched`, before compression: a reply per item asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchReplies(pub Vec<FetchReply>);

impl FetchReplies {
    /// Encodes the replies.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] if serialization fails (it cannot).
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        postcard::to_allocvec(self).map_err(|_| ProtocolError::Malformed("fetch replies encoding"))
    }

    /// Decodes exactly one batch of at most [`MAX_FETCH`] replies; the
    /// count is read before anything is decoded.
    ///
    /// # Errors
    /// [`ProtocolError::TooLarge`] for more replies,
    /// [`ProtocolError::Malformed`] for anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        decode_counted(bytes, MAX_FETCH, "fetch replies")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_reply() -> impl Strategy<Value = FetchReply> {
        prop_oneof![
            (0u8..3, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(c, data)| {
                FetchReply::Data {
                    codec: Codec::from_code(c).unwrap_or_default(),
                    data,
                }
            }),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|delta| FetchReply::Delta {
                codec: Codec::None,
                delta
            }),
            ".{0,30}".prop_map(|message| FetchReply::Refused {
                code: Refusal::NoSuchObject,
                message
            }),
            Just(FetchReply::Later),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4)
                .prop_map(|trees| FetchReply::Trees(
                    trees.into_iter().map(serde_bytes::ByteBuf::from).collect()
                )),
        ]
    }

    proptest! {
        #[test]
        fn replies_round_trip(replies in proptest::collection::vec(any_reply(), 0..20)) {
            let batch = FetchReplies(replies);
            prop_assert_eq!(FetchReplies::decode(&batch.encode().unwrap()).unwrap(), batch);
        }
    }

    #[test]
    fn more_replies_than_allowed_are_refused_before_decoding() {
        let full = FetchReplies(vec![
            FetchReply::Delta {
                codec: Codec::None,
                delta: Vec::new()
            };
            MAX_FETCH
        ]);
        assert_eq!(FetchReplies::decode(&full.encode().unwrap()), Ok(full));
        let mut over = FetchReplies(Vec::new()).encode().unwrap();
        over[0] = 0x81;
        over.push(0x08); // 1025
        assert!(matches!(
            FetchReplies::decode(&over),
            Err(ProtocolError::TooLarge { .. })
        ));
    }
}
