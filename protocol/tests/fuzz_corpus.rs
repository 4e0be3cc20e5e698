//! Replays every fuzz target's seed corpus (`protocol/fuzz/corpus/<target>/`)
//! through the same entry points the fuzzers call, so the suite catches a
//! decoder that panics on a known input without running a fuzzer.
//!
//! `FERRY_WRITE_CORPUS=1 cargo test -p ferry-protocol --test fuzz_corpus`
//! rewrites the seeds from real protocol output.

use std::fs;
use std::path::PathBuf;

use ferry_protocol::compress::Method;
use ferry_protocol::frame::encode_frame;
use ferry_protocol::fuzzing;
use ferry_protocol::ids::{ContentId, TreeId};
use ferry_protocol::message::{Hello, Message};
use ferry_protocol::pairing::EndpointStart;
use ferry_protocol::sealed::{seal, SealedKind, StorageId};
use ferry_protocol::sealed_objects::{
    encode_tree, ChunkEntry, Patch, SealedContent, SignaturePatch,
};
use ferry_protocol::session::Initiator;
use ferry_protocol::timestamp::Timestamp;
use ferry_protocol::tree::{Entry, EntryKind, Tree};

type Target = (&'static str, fn(&[u8]));

const TARGETS: &[Target] = &[
    ("frames", fuzzing::frames_and_messages),
    ("message", fuzzing::message),
    ("session_first", fuzzing::session_first_message),
    ("pairing_first", fuzzing::pairing_first_frame),
    ("delta_apply", fuzzing::delta_apply),
    ("signature_diff", fuzzing::signature_diff),
    ("lz4", fuzzing::lz4),
    ("zstd", fuzzing::zstd),
    ("chunk_batch", fuzzing::chunk_batch),
    ("fetch_replies", fuzzing::fetch_replies),
    ("objects", fuzzing::objects),
    ("object_patch", fuzzing::object_patch),
    ("sealed", fuzzing::sealed),
    ("sealed_plaintexts", fuzzing::sealed_plaintexts),
];

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let messages = [
        Message::Hello(Hello {
            major: 1,
            minor: 0,
            software: "ferry 0.1.0".into(),
        }),
        Message::Ping { nonce: 7 },
        Message::Pong { nonce: u64::MAX },
        Message::Close {
            reason: "client removed".into(),
        },
    ];
    let mut out = Vec::new();
    let mut stream = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let bytes = m.encode().unwrap();
        encode_frame(&bytes, &mut stream).unwrap();
        out.push(("message", ["hello", "ping", "pong", "close"][i], bytes));
    }
    out.push(("frames", "four-messages", stream));
    let mut first = Vec::new();
    Initiator::start(
        &fuzzing::fixed_endpoint_keys(),
        &fuzzing::fixed_relay_keys().public,
        Timestamp {
            secs: 1_795_000_000,
            nanos: 1,
        },
        &mut first,
    )
    .unwrap();
    out.push(("session_first", "valid", first));
    let (_, start) =
        EndpointStart::begin(&fuzzing::fixed_code(), &fuzzing::fixed_endpoint_keys()).unwrap();
    out.push(("pairing_first", "valid", start.encode().unwrap()));
    let base: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut edited = base.clone();
    edited[100..110].fill(0);
    let delta =
        ferry_protocol::delta::diff(ferry_protocol::delta::signature(&base), &edited).unwrap();
    out.push(("delta_apply", "small-edit", delta));
    out.push((
        "signature_diff",
        "valid",
        ferry_protocol::delta::signature(&base),
    ));
    // Block size 0, hash size 0, one block of CRC 0: fast_rsync's endless loop.
    let mut endless = 0x7273_0136u32.to_be_bytes().to_vec();
    endless.extend_from_slice(&[0; 12]);
    out.push(("signature_diff", "block-size-zero", endless));
    out.push((
        "lz4",
        "text",
        ferry_protocol::compress::compress(&b"ferry ".repeat(500)).1,
    ));
    out.push((
        "zstd",
        "text",
        ferry_protocol::compress::compress_with(
            ferry_protocol::compress::Method::Zstd(3),
            &b"ferry relay ".repeat(500),
        )
        .1,
    ));
    let batch = ferry_protocol::message::ChunkBatch(vec![
        ferry_protocol::message::ChunkPut::Whole(b"small file".to_vec()),
        ferry_protocol::message::ChunkPut::Delta {
            id: ferry_protocol::ids::ChunkId::of(b"new"),
            base: ferry_protocol::ids::ChunkId::of(b"old"),
            delta: vec![0x72, 0x73, 0x02, 0x36, 0, 0, 0, 1],
        },
    ]);
    out.push(("chunk_batch", "whole-and-delta", batch.encode().unwrap()));
    let replies = ferry_protocol::fetch::FetchReplies(vec![
        ferry_protocol::fetch::FetchReply::Data {
            codec: ferry_protocol::compress::Codec::None,
            data: b"small file".to_vec(),
        },
        ferry_protocol::fetch::FetchReply::Delta {
            codec: ferry_protocol::compress::Codec::None,
            delta: vec![0x72, 0x73, 0x02, 0x36, 0, 0, 0, 1],
        },
        ferry_protocol::fetch::FetchReply::Refused {
            code: ferry_protocol::message::Refusal::NoSuchObject,
            message: "no such chunk".into(),
        },
    ]);
    out.push((
        "fetch_replies",
        "data-delta-refused",
        replies.encode().unwrap(),
    ));
    let tree = ferry_protocol::tree::Tree {
        entries: vec![ferry_protocol::tree::Entry {
            name: b"file".to_vec(),
            kind: ferry_protocol::tree::EntryKind::Symlink {
                target: b"target".to_vec(),
            },
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime_ns: 1,
            xattrs: vec![(b"user.a".to_vec(), b"b".to_vec())],
        }],
    };
    out.push(("objects", "tree", tree.encode().unwrap().1));
    let mut changed = base.clone();
    changed[2000..2032].fill(7);
    out.push((
        "object_patch",
        "small-edit",
        ferry_protocol::patch::diff(&base, &changed),
    ));
    let keys = fuzzing::fixed_sealing_keys();
    let tree_refs = vec![StorageId([1; 32]), StorageId([2; 32])];
    let (_, tree) = seal(&keys, SealedKind::Tree, tree_refs, b"a sealed tree").unwrap();
    out.push(("sealed", "tree-with-refs", tree));
    let (_, chunk) = seal(&keys, SealedKind::Chunk, Vec::new(), &changed[..3000]).unwrap();
    out.push(("sealed", "chunk", chunk));
    let label = ferry_protocol::label::SnapshotLabel::new([1; 32], "laptop", &["/home/me".into()]);
    out.push(("sealed", "label", label.seal(&keys).unwrap()));
    out.push(("sealed_plaintexts", "open-label", label.encode()));
    let content = SealedContent {
        chunks: vec![ChunkEntry {
            data: StorageId([0; 32]),
            len: 3000,
            depth: 1,
        }],
        parts: Vec::new(),
    };
    let mut plain = vec![1];
    plain.extend(content.encode().unwrap());
    out.push(("sealed_plaintexts", "content", plain));
    let old = ferry_protocol::delta::signature(&[7; 5000]);
    let mut edited = [7u8; 5000];
    edited[2500] = 8;
    let new = ferry_protocol::delta::signature(&edited);
    let mut plain = vec![0];
    plain.extend(SignaturePatch::between(&old, &new).encode().unwrap());
    out.push(("sealed_plaintexts", "signature-patch", plain));
    // A directory of a file and a subdirectory, naming refs 0 and 1.
    let entry = |name: &str, kind| Entry {
        name: name.as_bytes().to_vec(),
        kind,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        xattrs: Vec::new(),
    };
    let file = EntryKind::File {
        size: 3000,
        content: ContentId([0; 32]),
        sparse: None,
    };
    let dir = EntryKind::Dir {
        tree: TreeId([1; 32]),
    };
    let tree = Tree {
        entries: vec![entry("a.txt", file), entry("sub", dir)],
    };
    let mut plain = vec![2];
    plain.extend(encode_tree(tree).unwrap().1);
    out.push(("sealed_plaintexts", "tree", plain));
    // A patch against ref 0, its delta compressed.
    let delta = ferry_protocol::delta::diff(old.clone(), &edited).unwrap();
    let patch = Patch {
        base: StorageId([0; 32]),
        keyed: [5; 32],
        depth: 1,
        delta,
    };
    let mut plain = vec![2];
    plain.extend(patch.encode(Method::Zstd(3)).unwrap());
    out.push(("sealed_plaintexts", "patch", plain));
    out
}

#[test]
fn seed_corpora_run_clean() {
    if std::env::var_os("FERRY_WRITE_CORPUS").is_some() {
        for (target, name, bytes) in seeds() {
            fs::create_dir_all(corpus_dir(target)).unwrap();
            fs::write(corpus_dir(target).join(name), bytes).unwrap();
        }
    }
    for (target, run) in TARGETS {
        let files: Vec<_> = fs::read_dir(corpus_dir(target))
            .unwrap_or_else(|e| panic!("corpus of {target}: {e}"))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!files.is_empty(), "corpus of {target} is empty");
        for file in files {
            let data = fs::read(&file).unwrap();
            run(&data);
            // Truncations and single flips of each seed, as a fuzzer's first steps would make.
            for cut in 0..data.len().min(200) {
                run(&data[..cut]);
            }
            for i in 0..data.len().min(200) {
                let mut flipped = data.clone();
                flipped[i] ^= 0xff;
                run(&flipped);
            }
        }
    }
}
