//! The fetch pipeline's rules, with no relay and no socket.

use std::time::{Duration, Instant};

use ferry_protocol::compress::{compress, Codec};
use ferry_protocol::fetch::{FetchItem, FetchReplies, FetchReply, FETCH_BYTES};
use ferry_protocol::ids::{ChunkId, ContentId};
use ferry_protocol::message::{Message, ObjectId, Refusal};

use super::{Downlink, FetchQueue, BATCH_ITEMS};
use crate::client::{ClientError, Refused};

fn chunk(i: u8) -> FetchItem {
    FetchItem::Chunk {
        id: ChunkId([i; 32]),
        base_signature: None,
    }
}

/// The `Fetched` answer a relay gives with `replies`.
fn fetched(replies: Vec<FetchReply>) -> Message {
    let raw = FetchReplies(replies).encode().unwrap();
    let (codec, data) = compress(&raw);
    Message::Fetched { codec, data }
}

fn data(byte: u8) -> FetchReply {
    FetchReply::Data {
        codec: Codec::None,
        data: vec![byte],
    }
}

#[test]
fn asks_wait_in_the_batch_until_it_is_full_or_flushed() {
    let mut queue = FetchQueue::default();
    for i in 0..BATCH_ITEMS - 1 {
        assert!(!queue.push(chunk(i as u8), 100), "full after {i}");
    }
    assert!(queue.poll_request().is_none(), "nothing is sent unflushed");
    assert!(queue.push(chunk(0), 100), "the last ask fills it");
    queue.flush(5, 0, Instant::now());
    match queue.poll_request() {
        Some(Message::Fetch { items, .. }) => assert_eq!(items.len(), BATCH_ITEMS),
        other => panic!("{other:?}"),
    }
    assert!(queue.poll_request().is_none());
    assert!(queue.awaiting());
}

#[test]
fn a_batch_of_large_estimates_is_full_before_its_count() {
    let mut queue = FetchQueue::default();
    assert!(!queue.push(chunk(1), FETCH_BYTES / 2));
    assert!(
        queue.push(chunk(2), FETCH_BYTES / 2),
        "the bytes one answer carries"
    );
}

#[test]
fn an_older_relay_is_asked_one_request_per_ask_and_answered_one_by_one() {
    let mut queue = FetchQueue::default();
    queue.push(chunk(1), 10);
    queue.push(FetchItem::Object(ObjectId::Content(ContentId([2; 32]))), 10);
    queue.flush(4, 0, Instant::now());
    assert!(matches!(
        queue.poll_request(),
        Some(Message::GetChunk { .. })
    ));
    assert!(matches!(
        queue.poll_request(),
        Some(Message::GetObject { .. })
    ));
    let first = queue
        .handle(Ok(Message::ChunkData {
            codec: Codec::None,
            data: vec![1],
        }))
        .unwrap();
    assert_eq!(first, vec![data(1)]);
    let refusal = ClientError::Refused(Refused {
        code: Some(Refusal::NoSuchObject),
        message: "no such object".into(),
    });
    let second = queue.handle(Err(refusal)).unwrap();
    assert!(matches!(
        second[..],
        [FetchReply::Refused {
            code: Refusal::NoSuchObject,
            ..
        }]
    ));
    assert!(!queue.pending());
}

#[test]
fn a_batchs_answer_gives_its_replies_in_the_order_asked() {
    let mut queue = FetchQueue::default();
    for i in 0..3 {
        queue.push(chunk(i), 10);
    }
    queue.flush(5, 0, Instant::now());
    queue.poll_request().unwrap();
    let replies = queue
        .handle(Ok(fetched(vec![data(7), data(8), data(9)])))
        .unwrap();
    assert_eq!(replies, vec![data(7), data(8), data(9)]);
}

#[test]
fn answers_are_matched_to_batches_in_the_order_sent() {
    let mut queue = FetchQueue::default();
    queue.push(chunk(1), 10);
    queue.flush(5, 0, Instant::now());
    queue.push(chunk(2), 10);
    queue.push(chunk(3), 10);
    queue.flush(5, 0, Instant::now());
    assert!(queue.poll_request().is_some() && queue.poll_request().is_some());
    assert_eq!(queue.handle(Ok(fetched(vec![data(1)]))).unwrap().len(), 1);
    let second = queue.handle(Ok(fetched(vec![data(2)])));
    assert!(second.is_err(), "one reply to a fetch of two");
}

#[test]
fn a_relay_that_puts_off_a_batchs_first_item_is_an_error() {
    let mut queue = FetchQueue::default();
    queue.push(chunk(1), 10);
    queue.push(chunk(2), 10);
    queue.flush(5, 0, Instant::now());
    let error = queue
        .handle(Ok(fetched(vec![FetchReply::Later, data(2)])))
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("put off the first item"),
        "{error:#}"
    );
}

#[test]
fn an_answer_of_the_wrong_kind_or_to_nothing_asked_is_an_error() {
    let mut queue = FetchQueue::default();
    assert!(
        queue.handle(Ok(Message::Pong { nonce: 1 })).is_err(),
        "nothing asked"
    );
    queue.push(chunk(1), 10);
    queue.flush(5, 0, Instant::now());
    let error = queue.handle(Ok(Message::Pong { nonce: 1 })).unwrap_err();
    assert!(format!("{error:#}").contains("Fetched"), "{error:#}");
}

#[test]
fn replies_that_do_not_decode_are_an_error() {
    let mut queue = FetchQueue::default();
    queue.push(chunk(1), 10);
    queue.flush(5, 0, Instant::now());
    let garbage = Message::Fetched {
        codec: Codec::None,
        data: vec![0xff; 9],
    };
    assert!(queue.handle(Ok(garbage)).is_err());
}

#[test]
fn replies_come_zstd_on_a_slow_downlink_and_lz4_on_a_fast_one() {
    let start = Instant::now();
    let mut downlink = Downlink::default();
    assert_eq!(downlink.codec_at(0, start), Codec::Zstd, "unknown: zstd");
    // 16 MiB in 0.1 s: 168 MB/s, zstd would set the pace.
    let fast = downlink.codec_at(16 << 20, start + Duration::from_millis(100));
    assert_eq!(fast, Codec::Lz4);
    // Then 16 MiB in 4 s: 4 MB/s.
    let slow = downlink.codec_at(32 << 20, start + Duration::from_millis(4100));
    assert_eq!(slow, Codec::Zstd);
    // Less than a window since: no new decision.
    assert_eq!(
        downlink.codec_at(33 << 20, start + Duration::from_secs(5)),
        Codec::Zstd
    );
}
