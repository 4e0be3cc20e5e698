//! Sealing's rules: round trips, determinism, and every way a hostile
//! relay could alter what it hands back.

use proptest::prelude::*;

use super::*;

fn keys(byte: u8) -> SealingKeys {
    SealingKeys::derive(&VaultKey::from_bytes([byte; 32]))
}

fn refs(bytes: &[u8]) -> Vec<StorageId> {
    bytes.iter().map(|&b| StorageId([b; 32])).collect()
}

#[test]
fn what_is_sealed_opens_with_its_kind_and_refs() {
    let k = keys(1);
    let (id, bytes) = seal(&k, SealedKind::Tree, refs(&[9, 3, 9, 5]), b"a directory").unwrap();
    assert_eq!(StorageId::of(&bytes), id);
    let (header, plain) = open(&k, &id, &bytes, SealedKind::Tree).unwrap();
    assert_eq!(plain, b"a directory");
    assert_eq!(header.refs, refs(&[3, 5, 9]), "sorted, each once");
    let (read, _) = Header::read(&bytes).unwrap();
    assert_eq!(
        read, header,
        "the relay reads the same header without a key"
    );
}

#[test]
fn the_same_plaintext_seals_the_same_within_a_vault_and_not_across() {
    let (a, b) = (keys(1), keys(2));
    let once = seal(&a, SealedKind::Chunk, Vec::new(), b"same data").unwrap();
    let twice = seal(&a, SealedKind::Chunk, Vec::new(), b"same data").unwrap();
    assert_eq!(once, twice, "dedup survives sealing");
    let other = seal(&b, SealedKind::Chunk, Vec::new(), b"same data").unwrap();
    assert_ne!(once.0, other.0, "another vault's chunk is another object");
    let kind = seal(&a, SealedKind::Signature, Vec::new(), b"same data").unwrap();
    assert_ne!(once.0, kind.0, "the kind is part of what is sealed");
}

#[test]
fn nothing_of_the_plaintext_shows_in_the_bytes() {
    let marker = b"UNIQUE-MARKER-3f9a1c7e5b2d4068-visible-if-leaked";
    let (_, bytes) = seal(&keys(1), SealedKind::Content, Vec::new(), marker).unwrap();
    assert!(!bytes
        .windows(16)
        .any(|w| marker.windows(16).any(|m| m == w)));
}

#[test]
fn a_swapped_object_is_refused_by_its_id() {
    let k = keys(1);
    let (asked, _) = seal(&k, SealedKind::Chunk, Vec::new(), b"the one asked for").unwrap();
    let (_, other) = seal(&k, SealedKind::Chunk, Vec::new(), b"another one").unwrap();
    let error = open(&k, &asked, &other, SealedKind::Chunk).unwrap_err();
    assert!(
        error.to_string().contains("not the object asked for"),
        "{error}"
    );
}

#[test]
fn another_kind_than_asked_is_refused() {
    let k = keys(1);
    let (id, bytes) = seal(&k, SealedKind::Patch, Vec::new(), b"a patch").unwrap();
    assert!(open(&k, &id, &bytes, SealedKind::Chunk).is_err());
}

#[test]
fn a_header_whose_refs_lie_fails_the_tag() {
    let k = keys(1);
    let (_, mut bytes) = seal(&k, SealedKind::Tree, refs(&[1, 2]), b"tree").unwrap();
    // The relay rewrites a ref (and so the id it serves under).
    bytes[HEADER_FIXED] ^= 0xff;
    bytes[HEADER_FIXED..HEADER_FIXED + 32].copy_from_slice(&[0; 32]);
    let forged = StorageId::of(&bytes);
    let error = open(&k, &forged, &bytes, SealedKind::Tree).unwrap_err();
    assert_eq!(error, ProtocolError::Crypto("opening a sealed object"));
}

#[test]
fn a_truncated_or_altered_body_is_refused() {
    let k = keys(1);
    let (_, bytes) = seal(&k, SealedKind::Chunk, Vec::new(), &[7; 1000]).unwrap();
    let short = &bytes[..bytes.len() - 1];
    assert!(open(&k, &StorageId::of(short), short, SealedKind::Chunk).is_err());
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(open(&k, &StorageId::of(&flipped), &flipped, SealedKind::Chunk).is_err());
}

#[test]
fn another_vault_cannot_open_it() {
    let (id, bytes) = seal(&keys(1), SealedKind::Chunk, Vec::new(), b"mine").unwrap();
    assert!(open(&keys(2), &id, &bytes, SealedKind::Chunk).is_err());
}

#[test]
fn headers_past_their_bounds_are_refused_before_anything_is_allocated() {
    let mut huge = vec![SEALED_VERSION, 0, 0, 0, 0, 0];
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Header::read(&huge),
        Err(ProtocolError::TooLarge { .. })
    ));
    let mut unsorted = vec![SEALED_VERSION, 4, 0, 0, 0, 0];
    unsorted.extend_from_slice(&2u32.to_le_bytes());
    unsorted.extend_from_slice(&[9; 32]);
    unsorted.extend_from_slice(&[1; 32]);
    assert_eq!(
        Header::read(&unsorted),
        Err(ProtocolError::Malformed("sealed header refs order"))
    );
    assert!(Header::read(&[2, 0, 0]).is_err(), "too short");
    assert!(Header::read(&[9; 40]).is_err(), "another version");
}

#[test]
fn padding_hides_all_but_the_top_bits_of_a_length() {
    assert_eq!(padme(0), 0);
    assert_eq!(padme(1), 1);
    assert_eq!(padme(9), 10);
    assert_eq!(padme(1000), 1024);
    let (_, a) = seal(&keys(1), SealedKind::Chunk, Vec::new(), &[0; 1000]).unwrap();
    let (_, b) = seal(&keys(1), SealedKind::Chunk, Vec::new(), &[0; 1003]).unwrap();
    assert_eq!(a.len(), b.len(), "lengths this close seal to one size");
}

#[test]
fn vault_keys_do_not_print() {
    let vault = VaultKey::from_bytes([0x42; 32]);
    assert_eq!(format!("{vault:?}"), "VaultKey(…)");
    assert_eq!(
        format!("{:?}", SealingKeys::derive(&vault)),
        "SealingKeys(…)"
    );
}

proptest! {
    #[test]
    fn any_plaintext_round_trips(data in proptest::collection::vec(any::<u8>(), 0..5000), r in proptest::collection::vec(any::<u8>(), 0..8)) {
        let k = keys(3);
        let (id, bytes) = seal(&k, SealedKind::Content, refs(&r), &data).unwrap();
        let (_, plain) = open(&k, &id, &bytes, SealedKind::Content).unwrap();
        prop_assert_eq!(plain, data);
    }

    #[test]
    fn padme_never_shrinks_and_costs_at_most_an_eighth(len in 0usize..(1 << 30)) {
        let padded = padme(len);
        prop_assert!(padded >= len);
        prop_assert!(padded - len <= len / 8 + 1);
    }

    #[test]
    fn headers_read_from_any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Header::read(&bytes);
    }
}
