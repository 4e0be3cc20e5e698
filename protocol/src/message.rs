//! Application messages exchanged inside an established session.
//!
//! One `postcard`-encoded [`Message`] enum. The first message each side sends
//! is [`Message::Hello`], which carries the minor version and software name
//! (the major version was settled by the preamble before the handshake).
//! Decoding reads from a buffer already bounded by
//! [`crate::fragment::MAX_MESSAGE`], and postcard never allocates more than
//! the input holds, so a hostile length cannot force a large allocation.

mod names;

use serde::{Deserialize, Serialize};

use crate::compress::Codec;
use crate::decoding::{decode_counted, decode_exact};
pub use crate::ids::ObjectId;
use crate::ids::{ChunkId, TreeId};
pub use crate::refusal::Refusal;
use crate::retention::Retention;
pub use crate::sealed::StorageId;
use crate::ProtocolError;

/// One snapshot as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The relay's id for it.
    pub id: u64,
    /// Its backup set.
    pub set: String,
    /// Root tree.
    pub root: TreeId,
    /// Start and end, milliseconds since the Unix epoch.
    pub started_ms: i64,
    /// End of the backup.
    pub finished_ms: i64,
    /// Files in the snapshot.
    pub files: u64,
    /// Bytes of file data in the snapshot.
    pub bytes: u64,
}

/// Greeting sent first by both sides of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Major protocol version (must match the preamble's).
    pub major: u16,
    /// Minor protocol version: features the sender understands.
    pub minor: u16,
    /// Sender's software and version, for logs.
    pub software: String,
}

/// Everything that travels inside a session.
///
/// The order of the variants is part of the wire format (postcard encodes
/// a variant by its index): add new ones at the end, never reorder or
/// remove one without a new major protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// First message of each side.
    Hello(Hello),
    /// Liveness and round-trip probe; answered by `Pong` with the same nonce.
    Ping {
        /// Echoed back unchanged.
        nonce: u64,
    },
    /// Answer to `Ping`.
    Pong {
        /// The nonce of the `Ping` answered.
        nonce: u64,
    },
    /// Starts a backup of a set; answered by `BackupReady`.
    BackupBegin {
        /// The backup set's name.
        set: String,
        /// Which of the set's snapshots the relay keeps after this one commits.
        retention: Retention,
    },
    /// The relay is ready for the upload.
    BackupReady {
        /// The largest single file this session may store (the relay's
        /// policy for this client over the internet); larger files are
        /// skipped and reported.
        max_file: Option<u64>,
    },
    /// Which of these chunks does the relay lack? Answered by `ChunksMissing`.
    QueryChunks {
        /// Chunk ids, at most [`MAX_BATCH`].
        ids: Vec<ChunkId>,
    },
    /// Which chunks of a `QueryChunks` the relay lacks: bit `i % 8` of
    /// byte `i / 8` is set when the `i`-th id asked is missing (a bitmap
    /// costs 1/256 of listing the ids).
    ChunksMissing {
        /// The bitmap, `ceil(n / 8)` bytes for `n` ids asked.
        #[serde(with = "serde_bytes")]
        missing: Vec<u8>,
    },
    /// Signatures of stored chunks, to compute deltas against; answered by `Signatures`.
    GetSignatures {
        /// Chunk ids, at most [`MAX_BATCH`].
        ids: Vec<ChunkId>,
    },
    /// Answer to `GetSignatures`, one per id asked (`None` when unknown).
    Signatures {
        /// Serialized rsync signatures.
        signatures: Vec<Option<serde_bytes::ByteBuf>>,
    },
    /// A whole chunk (compressed as `codec` says).
    PutChunk {
        /// Its id, checked by the relay.
        id: ChunkId,
        /// How `data` is compressed.
        codec: Codec,
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A chunk as an rsync delta against a chunk the relay holds.
    PutDelta {
        /// The id of the rebuilt chunk, checked by the relay.
        id: ChunkId,
        /// The chunk the delta applies to.
        base: ChunkId,
        /// How `delta` is compressed.
        codec: Codec,
        /// The delta.
        #[serde(with = "serde_bytes")]
        delta: Vec<u8>,
    },
    /// Which of these objects does the relay lack? Answered by `ObjectsMissing`.
    QueryObjects {
        /// Object ids, at most [`MAX_BATCH`].
        ids: Vec<ObjectId>,
    },
    /// The subset of a `QueryObjects` the relay lacks.
    ObjectsMissing {
        /// Missing object ids.
        ids: Vec<ObjectId>,
    },
    /// A tree or content (compressed as `codec` says).
    PutObject {
        /// Its id, checked by the relay.
        id: ObjectId,
        /// How `data` is compressed.
        codec: Codec,
        /// The encoded object.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Make everything sent so far durable; answered by `Synced`.
    Sync,
    /// Everything before the `Sync` is durable, except these chunks, whose
    /// deltas did not rebuild them: send them whole.
    Synced {
        /// Chunks to send again as `PutChunk`.
        rejected: Vec<ChunkId>,
    },
    /// Commit the snapshot with this root; answered by `Committed`.
    Commit {
        /// Root tree.
        root: TreeId,
        /// Files in the snapshot.
        files: u64,
        /// Bytes of file data.
        bytes: u64,
        /// Start of the backup, ms since the epoch.
        started_ms: i64,
    },
    /// The snapshot is committed.
    Committed {
        /// Its id.
        snapshot: u64,
    },
    /// Lists snapshots, of one set or all; answered by `SnapshotList`.
    ListSnapshots {
        /// Only this set, if given.
        set: Option<String>,
    },
    /// Snapshots, oldest first.
    SnapshotList {
        /// The snapshots.
        snapshots: Vec<SnapshotInfo>,
    },
    /// Fetches a tree or content; answered by `Object`.
    GetObject {
        /// The object.
        id: ObjectId,
    },
    /// A stored object (compressed as `codec` says).
    Object {
        /// How `data` is compressed.
        codec: Codec,
        /// The encoded object.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Fetches a chunk, as a delta against the caller's chunk when its
    /// signature is given; answered by `ChunkData` or `ChunkDelta`.
    GetChunk {
        /// The chunk wanted.
        id: ChunkId,
        /// Signature of a similar chunk the caller holds.
        #[serde(with = "serde_bytes")]
        base_signature: Option<Vec<u8>>,
    },
    /// A whole chunk.
    ChunkData {
        /// How `data` is compressed.
        codec: Codec,
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A chunk as a delta against the caller's base.
    ChunkDelta {
        /// How `delta` is compressed.
        codec: Codec,
        /// The delta.
        #[serde(with = "serde_bytes")]
        delta: Vec<u8>,
    },
    /// Chunks for the open backup, compressed together so zstd sees
    /// across small files; `data` decompresses (to at most
    /// [`MAX_MESSAGE`](crate::fragment::MAX_MESSAGE)) to a [`ChunkBatch`].
    /// The relay names whole chunks by their hash and reports deltas that do
    /// not rebuild their chunk in `Synced.rejected`.
    PutChunks {
        /// How `data` is compressed.
        codec: Codec,
        /// The encoded batch.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The request failed and the session ends; the message is for the
    /// user. Sent to endpoints before protocol 1.2, and to those before 1.3
    /// for a [`Refusal`] they do not know; later ones get `Refused`.
    Failed {
        /// What went wrong.
        message: String,
    },
    /// The sender is closing the session; the reason is shown to the user.
    Close {
        /// Human-readable reason, e.g. "client removed".
        reason: String,
    },
    /// A tree or content as a patch (see [`crate::patch`]) against an
    /// earlier object of the same kind that the relay holds: the previous
    /// version of the same directory or file. The relay checks the rebuilt
    /// object against `id`; when it lacks the base it drops the patch and
    /// logs it, and the commit then refuses the snapshot as incomplete.
    PutObjectPatch {
        /// The rebuilt object's id.
        id: ObjectId,
        /// The object the patch applies to.
        base: ObjectId,
        /// The patch.
        #[serde(with = "serde_bytes")]
        patch: Vec<u8>,
    },
    /// Asks which of this client's snapshots `ferry-relay verify` found
    /// damaged, and which a backup healed since (protocol 1.1); answered
    /// by `Damage`.
    GetDamage,
    /// This client's damaged and healed snapshots.
    Damage {
        /// Snapshots that reach damage not healed yet.
        damaged: Vec<u64>,
        /// Snapshots that reached damage a backup has healed since.
        healed: Vec<u64>,
    },
    /// The request was refused, for a reason the endpoint acts on (`code`)
    /// and one for people (`message`); sent to endpoints that know the code
    /// ([`Refusal::since_minor`]), others get `Failed` with the message.
    /// The codes that end the session are followed by the relay closing it.
    Refused {
        /// Why, as the endpoint decides on it.
        code: Refusal,
        /// Why, for the user.
        message: String,
    },
    /// The relay is still working on the oldest request not yet answered
    /// (a long commit, an fsync): sent every [`WORKING_INTERVAL`] while it
    /// is, to endpoints of protocol 1.4 on, so their read timeout tells a
    /// relay that went silent from one that is busy.
    Working,
    /// Asks how much this client stores on the relay and its quota
    /// (protocol 1.4); answered by `Usage`.
    GetUsage,
    /// What this client's data takes on the relay's disk (after dedup and
    /// compression, until the next collection frees what no snapshot
    /// reaches), and its quota.
    Usage {
        /// Bytes stored.
        stored: u64,
        /// The quota in bytes, if it has one.
        quota: Option<u64>,
        /// The share of the quota past which the relay warns, in percent.
        warn_percent: u8,
    },
    /// Asks why the relay keeps each snapshot of this client (of one set),
    /// as its retention decides now (protocol 1.4); answered by `KeptBy`.
    GetKeptBy {
        /// Only this set's.
        set: Option<String>,
    },
    /// Each snapshot's reasons to be kept (`last`, `daily`, `archived`,
    /// `protected`, `hint`, …; see `crate::keep::KeptBy::name`); none: the
    /// next backup of its set forgets it.
    KeptBy {
        /// (snapshot id, reasons).
        snapshots: Vec<(u64, Vec<String>)>,
    },
    /// Asks for many objects and chunks at once (protocol 1.5; at most
    /// [`MAX_FETCH`](crate::fetch::MAX_FETCH) items), the batch of replies
    /// compressed as `codec` says; answered by `Fetched`.
    Fetch {
        /// What is asked for, in order.
        items: Vec<crate::fetch::FetchItem>,
        /// How the endpoint wants the replies compressed (for its downlink).
        codec: Codec,
    },
    /// The replies to a `Fetch`: `data` decompresses (to at most
    /// [`MAX_FETCH_RAW`](crate::fetch::MAX_FETCH_RAW)) to a
    /// [`FetchReplies`](crate::fetch::FetchReplies), one per item, in order.
    Fetched {
        /// How `data` is compressed.
        codec: Codec,
        /// The encoded replies.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Asks for the signatures of joined bases (protocol 1.5): each the
    /// chunks named, one after another (at most
    /// [`MAX_BASE_CHUNKS`](crate::delta::MAX_BASE_CHUNKS) of them,
    /// [`MAX_BASE`](crate::delta::MAX_BASE) bytes), [`MAX_SIGNATURES`]
    /// chunks in all; answered by `Signatures` (none for a base the relay
    /// cannot join).
    GetBaseSignatures {
        /// The bases, each a run of chunks.
        bases: Vec<Vec<ChunkId>>,
    },
    /// Keeps this client's wrapped vault key on the relay (protocol 1.6):
    /// the vault key sealed under a key made from the owner's passphrase,
    /// opaque to the relay, at most [`MAX_KEY_WRAP`] bytes; it replaces
    /// the one kept before. Answered by `KeyWrapKept`.
    SetKeyWrap {
        /// The wrapped key.
        #[serde(with = "serde_bytes")]
        wrapped: Vec<u8>,
    },
    /// The wrapped key was kept (made durable).
    KeyWrapKept,
    /// Asks for this client's wrapped vault key (protocol 1.6): a new
    /// machine that took over the client opens it with the passphrase.
    /// Answered by `KeyWrap`.
    GetKeyWrap,
    /// The client's wrapped vault keys, as kept, and the relay's recovery
    /// recipient, if its operator set one (the endpoint wraps its vault key
    /// to it too, with `SetRecoveryWrap`).
    KeyWrap {
        /// Under the owner's passphrase.
        wrapped: Option<serde_bytes::ByteBuf>,
        /// To the organisation's recovery recipient.
        recovery: Option<serde_bytes::ByteBuf>,
        /// The recovery recipient (an X25519 public key, 32 bytes).
        recipient: Option<serde_bytes::ByteBuf>,
    },
    /// Keeps this client's vault key wrapped to the relay's recovery
    /// recipient (protocol 1.6), at most [`MAX_KEY_WRAP`] bytes. Answered
    /// by `KeyWrapKept`.
    SetRecoveryWrap {
        /// The wrapped key.
        #[serde(with = "serde_bytes")]
        wrapped: Vec<u8>,
    },
    /// Which of these sealed objects does the relay lack (protocol 1.7)?
    /// At most [`MAX_BATCH`] ids; answered by `ChunksMissing`, a bit per id.
    QuerySealed {
        /// Storage ids.
        ids: Vec<StorageId>,
    },
    /// Sealed objects for the open backup (protocol 1.7), children before
    /// what names them; the relay names each by its hash, reads only its
    /// clear header, and indexes it at the next `Sync` once everything it
    /// names is stored. No answer.
    PutSealed {
        /// The objects, header and body each.
        objects: Vec<serde_bytes::ByteBuf>,
    },
    /// Fetches sealed objects (protocol 1.7), at most [`MAX_BATCH`];
    /// answered by `SealedObjects`.
    GetSealed {
        /// Storage ids.
        ids: Vec<StorageId>,
    },
    /// Sealed objects, in the order asked: `None` for one the client does
    /// not hold. Fewer than asked when the rest would not fit one message:
    /// ask again for those.
    SealedObjects {
        /// The objects' bytes.
        objects: Vec<Option<serde_bytes::ByteBuf>>,
    },
    /// Commits the open backup as a sealed snapshot whose root object is
    /// `root` (protocol 1.7): the relay checks that the root and all it
    /// reaches are stored; answered by `Committed` or refused as incomplete.
    CommitSealed {
        /// The root object's storage id.
        root: StorageId,
        /// Files in the snapshot (for listings, quotas' context and the
        /// suspicion check; the relay could count contents from the
        /// reference graph anyway).
        files: u64,
        /// Bytes of file data (about what the padded chunks add up to).
        bytes: u64,
        /// Start of the backup, ms since the epoch.
        started_ms: i64,
    },
    /// Fetches the sealed roots, trees and contents at and below `roots`
    /// (protocol 1.7), at most [`MAX_BATCH`]: the relay follows the clear
    /// headers' refs breadth-first and sends each root, tree and content it
    /// reaches once (chunks, patches and signatures it passes over), as
    /// many as fit one reply, so a restore learns a snapshot's shape in a
    /// round trip or two instead of one per level. Answered by
    /// `SealedBelow`.
    GetSealedBelow {
        /// Where to start (snapshot roots, trees or contents).
        roots: Vec<StorageId>,
        /// Bytes of objects the endpoint wants at most in the reply (the
        /// relay sends no more than a message holds).
        room: u32,
        /// Whether file contents are wanted too, or only roots and trees
        /// (a restore onto files the target mostly holds needs few).
        contents: bool,
    },
    /// Trees and contents reached, each with its storage id, breadth
    /// first. Those past the reply's room are not sent: the endpoint asks
    /// for what it still lacks (below it, or one by one).
    SealedBelow {
        /// The objects sent.
        objects: Vec<(StorageId, serde_bytes::ByteBuf)>,
    },
    /// Says where the snapshot this upload will commit was made and what
    /// it covers (protocol 1.8): a [`crate::label::SnapshotLabel`], at
    /// most [`MAX_LABEL`] bytes, opaque to the relay (sealed under the
    /// vault for a sealed client). Kept with the snapshot at its commit;
    /// answered by `LabelKept`.
    SetLabel {
        /// The encoded (or sealed) label.
        #[serde(with = "serde_bytes")]
        label: Vec<u8>,
    },
    /// The label will be kept with the snapshot the upload commits.
    LabelKept,
    /// Asks for the labels of these snapshots of this client (protocol
    /// 1.8; at most [`MAX_LABELS`] ids). Answered by `Labels`.
    GetLabels {
        /// Snapshot ids.
        snapshots: Vec<u64>,
    },
    /// The labels of the snapshots asked for that have one.
    Labels {
        /// (snapshot id, label as it was set).
        labels: Vec<(u64, serde_bytes::ByteBuf)>,
    },
}

/// The first protocol minor whose relays keep snapshot labels.
pub const LABEL_SINCE_MINOR: u16 = 8;

/// The most bytes a snapshot's label may take on the relay.
pub const MAX_LABEL: usize = 4096;

/// The most snapshots one `GetLabels` may name.
pub const MAX_LABELS: usize = 256;

/// The first protocol minor whose relays store sealed objects.
pub const SEALED_SINCE_MINOR: u16 = 7;

/// Most refs the sealed objects sent between two `Sync`s may name in all:
/// the relay holds them (32 bytes each) until the sync checks them.
pub const MAX_UNSYNCED_REFS: usize = 1 << 22;

/// The most bytes a wrapped vault key may take on the relay.
pub const MAX_KEY_WRAP: usize = 1024;

/// The first protocol minor whose relays keep wrapped vault keys.
pub const KEY_WRAP_SINCE_MINOR: u16 = 6;

/// How often the relay says [`Message::Working`] while a request waits.
pub const WORKING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest number of ids in one query, and of chunks in one
/// [`ChunkBatch`].
pub const MAX_BATCH: usize = 4096;

/// Most signatures asked for at once, each of a different chunk: each
/// costs the relay a read and an MD4 pass over up to 256 KiB.
pub const MAX_SIGNATURES: usize = 512;

/// Most chunks a sender may put between two `Sync`s: the relay holds a row
/// for each until the sync, so it refuses more (the endpoint syncs at a
/// quarter of this).
pub const MAX_UNSYNCED_CHUNKS: usize = 32_768;

/// Most trees and contents a sender may have pending between two `Sync`s
/// (contents held for chunks not yet stored count too): the relay holds a
/// row for each in memory, so it refuses more (the endpoint syncs at a
/// thirty-second of this).
pub const MAX_PENDING_OBJECTS: usize = 1 << 18;

/// One chunk in a [`ChunkBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkPut {
    /// The chunk's bytes; its id is their BLAKE3, computed by the receiver.
    Whole(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The chunk compressed on its own, which the relay stores as it came
    /// (used with lz4, where a batch gains little from shared context and
    /// the relay is spared compressing it again).
    Packed {
        /// How `data` is compressed.
        codec: Codec,
        /// The compressed chunk.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A chunk as an rsync delta against a chunk the relay holds.
    Delta {
        /// The id of the rebuilt chunk, checked by the relay.
        id: ChunkId,
        /// The chunk the delta applies to.
        base: ChunkId,
        /// The delta.
        #[serde(with = "serde_bytes")]
        delta: Vec<u8>,
    },
    /// A chunk as an rsync delta against chunks the relay holds, joined
    /// one after another (protocol 1.5; see `GetBaseSignatures`).
    DeltaOver {
        /// The id of the rebuilt chunk, checked by the relay.
        id: ChunkId,
        /// The chunks the delta applies to, in order.
        bases: Vec<ChunkId>,
        /// The delta.
        #[serde(with = "serde_bytes")]
        delta: Vec<u8>,
    },
}

/// The payload of `PutChunks`, before compression.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkBatch(pub Vec<ChunkPut>);

impl ChunkBatch {
    /// Encodes the batch.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] if serialization fails (it cannot).
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        postcard::to_allocvec(self).map_err(|_| ProtocolError::Malformed("chunk batch encoding"))
    }

    /// Decodes exactly one batch of at most [`MAX_BATCH`] chunks. The
    /// count is read before anything is decoded: a few bytes of empty
    /// entries must not become millions of them.
    ///
    /// # Errors
    /// [`ProtocolError::TooLarge`] for more chunks, [`ProtocolError::Malformed`]
    /// for anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        decode_counted(bytes, MAX_BATCH, "chunk batch")
    }
}

pub use crate::bitmap::{is_missing, set_missing};

/// How a `Failed` answer to `Commit` begins when the snapshot names data the
/// relay does not have (for example data the endpoint's files cache
/// remembers but the relay has since collected); the endpoint then forgets
/// its files cache for the set.
pub const INCOMPLETE_SNAPSHOT: &str = "snapshot incomplete, not committed";

impl Message {
    /// Encodes the message into its postcard bytes.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] if serialization fails (it cannot for these types).
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        postcard::to_allocvec(self).map_err(|_| ProtocolError::Malformed("message encoding"))
    }

    /// Decodes one whole message; trailing bytes are an error.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for anything that is not exactly one message.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        decode_exact(bytes, "message")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ContentId;

    #[test]
    fn names_are_the_variants() {
        assert_eq!(Message::Sync.name(), "Sync");
        assert_eq!(Message::Ping { nonce: 1 }.name(), "Ping");
        let failed = Message::Failed {
            message: "x".into(),
        };
        assert_eq!(failed.name(), "Failed");
    }
    #[test]
    fn a_batch_of_more_chunks_than_allowed_is_refused_before_decoding() {
        let full = ChunkBatch(vec![ChunkPut::Whole(Vec::new()); MAX_BATCH]);
        assert_eq!(ChunkBatch::decode(&full.encode().unwrap()), Ok(full));
        // A few kilobytes of empty entries claiming two million chunks.
        let mut hostile = Vec::new();
        let mut count = 2_000_000u64;
        while count >= 0x80 {
            hostile.push((count as u8) | 0x80);
            count >>= 7;
        }
        hostile.push(count as u8);
        hostile.extend(std::iter::repeat_n([0u8, 0u8], 4096).flatten());
        assert!(matches!(
            ChunkBatch::decode(&hostile),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(ChunkBatch::decode(&[0x80]).is_err());
    }

    #[test]
    fn refusal_codes_keep_their_wire_numbers_and_versions() {
        let codes = [
            Refusal::IncompleteSnapshot,
            Refusal::FullBackupNeedsLan,
            Refusal::NoSuchObject,
            Refusal::DiskFull,
            Refusal::StorageFailed,
            Refusal::ProtocolViolation,
            Refusal::SetBusy,
            Refusal::QuotaExceeded,
        ];
        for (number, code) in codes.into_iter().enumerate() {
            let message = Message::Refused {
                code,
                message: String::new(),
            };
            let bytes = message.encode().unwrap();
            // The variant index of `Refused`, then the code's.
            assert_eq!(usize::from(bytes[1]), number, "{code:?}");
            assert_eq!(Message::decode(&bytes).unwrap(), message);
            assert!(code.since_minor() <= crate::version::PROTOCOL_MINOR);
        }
    }

    use proptest::prelude::*;

    fn any_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u16>(), any::<u16>(), ".{0,40}").prop_map(|(major, minor, software)| {
                Message::Hello(Hello {
                    major,
                    minor,
                    software,
                })
            }),
            any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
            any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
            ".{0,200}".prop_map(|reason| Message::Close { reason }),
            Just(Message::Working),
            Just(Message::GetUsage),
            proptest::option::of(".{0,20}").prop_map(|set| Message::GetKeptBy { set }),
            proptest::collection::vec(any::<u8>(), 0..64)
                .prop_map(|label| Message::SetLabel { label }),
            Just(Message::LabelKept),
            proptest::collection::vec(any::<u64>(), 0..8)
                .prop_map(|snapshots| Message::GetLabels { snapshots }),
            proptest::collection::vec(
                (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..16)),
                0..4
            )
            .prop_map(|labels| Message::Labels {
                labels: labels
                    .into_iter()
                    .map(|(id, l)| (id, serde_bytes::ByteBuf::from(l)))
                    .collect()
            }),
            proptest::collection::vec(
                (any::<u64>(), proptest::collection::vec(".{0,9}", 0..3)),
                0..4
            )
            .prop_map(|snapshots| Message::KeptBy { snapshots }),
            (any::<u64>(), any::<Option<u64>>(), any::<u8>()).prop_map(
                |(stored, quota, warn_percent)| {
                    Message::Usage {
                        stored,
                        quota,
                        warn_percent,
                    }
                }
            ),
            (
                any::<[u8; 32]>(),
                any::<[u8; 32]>(),
                proptest::collection::vec(any::<u8>(), 0..100)
            )
                .prop_map(|(id, base, patch)| Message::PutObjectPatch {
                    id: ObjectId::Tree(TreeId(id)),
                    base: ObjectId::Content(ContentId(base)),
                    patch
                }),
            proptest::collection::vec(any::<[u8; 32]>(), 0..5).prop_map(|ids| {
                Message::QueryChunks {
                    ids: ids.into_iter().map(ChunkId).collect(),
                }
            }),
            (
                any::<[u8; 32]>(),
                0u8..3,
                proptest::collection::vec(any::<u8>(), 0..100)
            )
                .prop_map(|(id, codec, data)| Message::PutChunk {
                    id: ChunkId(id),
                    codec: Codec::from_code(codec).unwrap_or_default(),
                    data
                }),
            (
                any::<[u8; 32]>(),
                any::<[u8; 32]>(),
                proptest::collection::vec(any::<u8>(), 0..100)
            )
                .prop_map(|(id, base, delta)| Message::PutDelta {
                    id: ChunkId(id),
                    base: ChunkId(base),
                    codec: Codec::None,
                    delta
                }),
            any::<[u8; 32]>().prop_map(|id| Message::GetObject {
                id: ObjectId::Tree(TreeId(id))
            }),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..50)).prop_map(
                |base_signature| Message::GetChunk {
                    id: ChunkId([1; 32]),
                    base_signature
                }
            ),
            (
                proptest::collection::vec(
                    (
                        any::<[u8; 32]>(),
                        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20))
                    ),
                    0..5
                ),
                0u8..3
            )
                .prop_map(|(items, codec)| Message::Fetch {
                    items: items
                        .into_iter()
                        .map(|(id, base_signature)| match base_signature {
                            Some(_) => crate::fetch::FetchItem::Chunk {
                                id: ChunkId(id),
                                base_signature
                            },
                            None =>
                                crate::fetch::FetchItem::Object(ObjectId::Content(ContentId(id))),
                        })
                        .collect(),
                    codec: Codec::from_code(codec).unwrap_or_default(),
                }),
            proptest::collection::vec(any::<u8>(), 0..100).prop_map(|data| Message::Fetched {
                codec: Codec::Zstd,
                data
            }),
            proptest::collection::vec(proptest::collection::vec(any::<[u8; 32]>(), 0..4), 0..4)
                .prop_map(|bases| Message::GetBaseSignatures {
                    bases: bases
                        .into_iter()
                        .map(|b| b.into_iter().map(ChunkId).collect())
                        .collect()
                }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(message in any_message()) {
            let bytes = message.encode().unwrap();
            prop_assert_eq!(Message::decode(&bytes).unwrap(), message);
        }

        #[test]
        fn trailing_bytes_are_rejected(message in any_message(), extra in 1u8..) {
            let mut bytes = message.encode().unwrap();
            bytes.push(extra);
            prop_assert!(Message::decode(&bytes).is_err());
        }
    }

    #[test]
    fn huge_declared_string_does_not_allocate() {
        // Close with a string length of 2^62: must fail, not allocate.
        let bytes = [3u8, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40];
        assert!(Message::decode(&bytes).is_err());
    }
}
