//! Entry points shared by the cargo-fuzz targets (`protocol/fuzz/`) and the
//! ordinary test that replays their seed corpora (`tests/fuzz_corpus.rs`).
//!
//! Each function feeds arbitrary bytes to one decoder that reads from the
//! network and must return an error, never panic or allocate without bound.

use crate::frame::parse_frame;
use crate::keys::StaticKeypair;
use crate::message::Message;
use crate::pairing::{relay_reply, PairFrame, PairingCode};
use crate::session::Responder;

/// A fixed relay key so that fuzz runs are deterministic.
pub fn fixed_relay_keys() -> StaticKeypair {
    // A constant secret: fuzzing needs determinism, not secrecy.
    StaticKeypair::from_secret_slice(&[0x42; 32]).expect("32-byte secret")
}

/// A fixed endpoint key, the initiator in corpus seeds.
pub fn fixed_endpoint_keys() -> StaticKeypair {
    StaticKeypair::from_secret_slice(&[0x24; 32]).expect("32-byte secret")
}

/// The pairing code the pairing target answers for.
pub fn fixed_code() -> PairingCode {
    PairingCode::new(4, 72_913_385).expect("valid nameplate")
}

/// Splits a byte stream into frames and decodes each frame as a message.
pub fn frames_and_messages(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((payload, used))) = parse_frame(rest) {
        let _ = Message::decode(payload);
        rest = &rest[used..];
    }
}

/// Decodes bytes as one application message; re-encodes what decodes.
///
/// # Panics
/// When a decoded message does not re-encode to the same bytes, which
/// would be a codec bug the fuzzer should report.
pub fn message(data: &[u8]) {
    if let Ok(message) = Message::decode(data) {
        let again = message.encode().expect("a decoded message encodes");
        assert_eq!(Message::decode(&again).as_ref(), Ok(&message));
    }
}

/// Decodes bytes as the payload of `PutChunks`; re-encodes what decodes.
///
/// # Panics
/// As [`message`].
pub fn chunk_batch(data: &[u8]) {
    if let Ok(batch) = crate::message::ChunkBatch::decode(data) {
        let again = batch.encode().expect("a decoded batch encodes");
        assert_eq!(
            crate::message::ChunkBatch::decode(&again).as_ref(),
            Ok(&batch)
        );
    }
}

/// Treats bytes as the replies of a `Fetched` (decompressed): a batch
/// that decodes encodes back to itself.
///
/// # Panics
/// As [`message`].
pub fn fetch_replies(data: &[u8]) {
    if let Ok(replies) = crate::fetch::FetchReplies::decode(data) {
        let again = replies.encode().expect("decoded replies encode");
        assert_eq!(
            crate::fetch::FetchReplies::decode(&again).as_ref(),
            Ok(&replies)
        );
    }
}

/// Treats bytes as the first `Noise_IK` frame arriving at the relay: the
/// MAC check, then the message.
pub fn session_first_message(data: &[u8]) {
    let keys = fixed_relay_keys();
    let (message, _) = crate::session::check_first_mac(&keys.public, data);
    let _ = Responder::read_first(&keys, message);
}

/// Treats bytes as the first pairing frame arriving at the relay.
pub fn pairing_first_frame(data: &[u8]) {
    if let Ok(PairFrame::Start { spake, noise, .. }) = PairFrame::decode(data) {
        let _ = relay_reply(&fixed_code(), &fixed_relay_keys(), &spake, &noise);
    }
}

/// Treats bytes as an rsync signature from the network (the relay gets one
/// in `GetChunk`, the endpoint in `Signatures`) and diffs a fixed chunk
/// against it: must answer within the time a real signature takes.
pub fn signature_diff(data: &[u8]) {
    let new: Vec<u8> = (0..8192u32).map(|i| (i * 37 % 253) as u8).collect();
    let _ = crate::delta::diff(data.to_vec(), &new);
}

/// Treats bytes as an rsync delta from the network, applied to a fixed base.
pub fn delta_apply(data: &[u8]) {
    let base: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
    let _ = crate::delta::apply(&base, data, &crate::ids::ChunkId::of(b""));
}

/// Treats bytes as an lz4 payload from the network.
pub fn lz4(data: &[u8]) {
    let _ = crate::compress::decompress(
        crate::compress::Codec::Lz4,
        data.to_vec(),
        crate::chunking::MAX_CHUNK as usize,
    );
}

/// Treats bytes as a zstd payload from the network.
pub fn zstd(data: &[u8]) {
    let _ = crate::compress::decompress(
        crate::compress::Codec::Zstd,
        data.to_vec(),
        crate::chunking::MAX_CHUNK as usize,
    );
}

/// Treats bytes as an object patch from the network, applied to a fixed base.
pub fn object_patch(data: &[u8]) {
    let base: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
    let _ = crate::patch::apply(&base, data, crate::fragment::MAX_MESSAGE);
}

/// Treats bytes as a tree and as a content from the network (named by their
/// hash, so the structural checks are what is exercised).
pub fn objects(data: &[u8]) {
    let _ = crate::tree::Tree::decode(&crate::ids::TreeId::of(data), data);
    let _ = crate::tree::Content::decode(&crate::ids::ContentId::of(data), data);
}

/// The vault the sealed target opens objects with, fixed for determinism.
pub fn fixed_sealing_keys() -> crate::sealed::SealingKeys {
    crate::sealed::SealingKeys::derive(&crate::sealed::VaultKey::from_bytes([0x5e; 32]))
}

/// Reads bytes as a sealed object's header (what the relay does, with no
/// key), then opens them as each kind under the fixed vault (what an
/// endpoint does with what a relay hands back), a snapshot label among
/// them.
pub fn sealed(data: &[u8]) {
    use crate::sealed::{open, Header, SealedKind, StorageId};
    let _ = Header::read(data);
    let _ = crate::root::Root::decode(data);
    let keys = fixed_sealing_keys();
    let id = StorageId::of(data);
    for kind in [SealedKind::Chunk, SealedKind::Tree, SealedKind::Content] {
        let _ = open(&keys, &id, data, kind);
    }
    // A sealed snapshot label, as `ferry snapshots` opens what a relay
    // hands back (protocol 1.8).
    let _ = crate::label::SnapshotLabel::open(data, &keys, &[1; 32]);
}

/// Decodes bytes as each sealed plaintext an endpoint reads once an object
/// opened (a stolen laptop's key seals anything): contents (against refs
/// taken from the first bytes), patches, signature patches (applied to a
/// real signature), chunks (with and without a dictionary read from the
/// same bytes), trees, roots, and an open client's snapshot label.
pub fn sealed_plaintexts(data: &[u8]) {
    use crate::compress::Method;
    use crate::sealed::StorageId;
    use crate::sealed_dictionary::Dictionary;
    use crate::sealed_objects::{
        decode_chunk, decode_sealed_tree, Patch, SealedContent, SignaturePatch,
    };
    let count = usize::from(data.first().copied().unwrap_or(0) % 12);
    let refs: Vec<StorageId> = (0..count).map(|i| StorageId([i as u8; 32])).collect();
    let body = data.get(1..).unwrap_or_default();
    let _ = SealedContent::decode(body, &refs);
    let _ = Patch::decode(body, &refs);
    if let Ok(patch) = SignaturePatch::decode(body) {
        let _ = patch.apply(&crate::delta::signature(&[7; 5000]));
    }
    let _ = decode_chunk(data, None);
    if let Ok(dictionary) = Dictionary::new(body, Method::Zstd(3)) {
        let _ = decode_chunk(body, Some(&dictionary));
    }
    let _ = decode_sealed_tree(body, &refs);
    let _ = crate::root::Root::decode(data);
    // An open client's snapshot label, as the relay hands it back.
    let _ = crate::label::SnapshotLabel::decode(data, &[1; 32]);
}
