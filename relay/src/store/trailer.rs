//! A pack's trailer: the list of the blobs it holds, written at its end
//! by stores whose packs are written once (the object store's), so that a
//! catalog lost with its engine can be rebuilt from the store alone
//! (`ferry-relay catalog rebuild`). Blobs are read by their catalog rows,
//! never through the trailer, so it changes no read.
//!
//! Layout: the entries, [`ENTRY`] bytes each (client, kind, codec, copies,
//! id, offset, length, all little-endian), then the footer: their count
//! (u32) and [`MAGIC`]. A pack without the footer (written before
//! trailers, or by a store that writes none) has no trailer.

use std::io;

use super::{BlobLocation, PackId};

/// The last bytes of a pack with a trailer.
pub const MAGIC: &[u8; 8] = b"FRYTRLR1";

/// Bytes of one entry.
pub const ENTRY: usize = 8 + 1 + 1 + 1 + 32 + 8 + 4;

/// Bytes of the footer.
pub const FOOTER: usize = 4 + MAGIC.len();

/// What a pack's trailer says of one blob: whose it is and how it is
/// stored, as its catalog row says (the catalog's codes, so the store
/// knows nothing of the catalog's types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlobLabel {
    /// The client's catalog id.
    pub client: u64,
    /// The blob's kind (`BlobKind` as stored in the catalog).
    pub kind: u8,
    /// Its codec (`Codec::code`).
    pub codec: u8,
    /// Copies stored one after another.
    pub copies: u8,
    /// Its id.
    pub id: [u8; 32],
}

/// One blob of a pack, as its trailer lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrailerEntry {
    /// Whose blob and how stored.
    pub label: BlobLabel,
    /// Where its first copy is.
    pub at: BlobLocation,
}

/// The trailer of `entries`.
pub fn encode(entries: &[TrailerEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY + FOOTER);
    for TrailerEntry { label, at } in entries {
        out.extend_from_slice(&label.client.to_le_bytes());
        out.extend_from_slice(&[label.kind, label.codec, label.copies]);
        out.extend_from_slice(&label.id);
        out.extend_from_slice(&at.offset.to_le_bytes());
        out.extend_from_slice(&at.len.to_le_bytes());
    }
    let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(MAGIC);
    out
}

/// How many bytes the trailer of a pack `pack_len` long takes, read from
/// its footer; `None` when it has none.
///
/// # Errors
/// A footer whose count does not fit in the pack.
pub fn length(footer: &[u8], pack_len: u64) -> io::Result<Option<u64>> {
    let Some((count, magic)) = footer.split_last_chunk::<8>() else {
        return Ok(None);
    };
    if magic != MAGIC || count.len() < 4 {
        return Ok(None);
    }
    let count = u32::from_le_bytes(count[count.len() - 4..].try_into().expect("four bytes"));
    let len = u64::from(count) * ENTRY as u64 + FOOTER as u64;
    if len > pack_len {
        return Err(malformed(format!(
            "a trailer of {count} blobs does not fit in a pack of {pack_len} bytes"
        )));
    }
    Ok(Some(len))
}

/// The entries of `pack`'s trailer (`trailer`: its bytes, footer
/// included), each checked to lie before the trailer.
///
/// # Errors
/// A trailer that does not decode, or names bytes outside the pack.
pub fn decode(pack: PackId, trailer: &[u8], pack_len: u64) -> io::Result<Vec<TrailerEntry>> {
    let body = trailer
        .len()
        .checked_sub(FOOTER)
        .filter(|body| body % ENTRY == 0)
        .ok_or_else(|| malformed(format!("pack {pack}: a trailer of {} bytes", trailer.len())))?;
    let data_end = pack_len.saturating_sub(trailer.len() as u64);
    trailer[..body]
        .chunks_exact(ENTRY)
        .map(|e| {
            let (client, e) = e.split_at(8);
            let (codes, e) = e.split_at(3);
            let (id, e) = e.split_at(32);
            let (offset, len) = e.split_at(8);
            let at = BlobLocation {
                pack,
                offset: u64::from_le_bytes(offset.try_into().expect("eight bytes")),
                len: u32::from_le_bytes(len.try_into().expect("four bytes")),
            };
            let copies = codes[2];
            let end = u64::from(at.len)
                .checked_mul(u64::from(copies))
                .and_then(|bytes| bytes.checked_add(at.offset));
            if copies == 0 || end.is_none_or(|end| end > data_end) {
                return Err(malformed(format!(
                    "pack {pack}: a trailer entry outside the pack's data"
                )));
            }
            Ok(TrailerEntry {
                label: BlobLabel {
                    client: u64::from_le_bytes(client.try_into().expect("eight bytes")),
                    kind: codes[0],
                    codec: codes[1],
                    copies,
                    id: id.try_into().expect("32 bytes"),
                },
                at,
            })
        })
        .collect()
}

fn malformed(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(n: u8, offset: u64, len: u32) -> TrailerEntry {
        TrailerEntry {
            label: BlobLabel {
                client: u64::from(n) << 40 | 7,
                kind: n % 5,
                codec: n % 3,
                copies: 1 + n % 2,
                id: [n; 32],
            },
            at: BlobLocation {
                pack: PackId(9),
                offset,
                len,
            },
        }
    }

    proptest! {
        #[test]
        fn a_trailer_reads_back_from_the_end_of_its_pack(
            lens in proptest::collection::vec(1u32..5000, 0..40),
        ) {
            let mut data = Vec::new();
            let mut entries = Vec::new();
            for (n, len) in lens.iter().enumerate() {
                let e = entry(n as u8, data.len() as u64, *len);
                data.resize(data.len() + (*len as usize) * usize::from(e.label.copies), n as u8);
                entries.push(e);
            }
            data.extend_from_slice(&encode(&entries));
            let pack_len = data.len() as u64;
            let footer = &data[data.len() - FOOTER..];
            let trailer_len = length(footer, pack_len).unwrap().unwrap();
            let trailer = &data[data.len() - trailer_len as usize..];
            prop_assert_eq!(decode(PackId(9), trailer, pack_len).unwrap(), entries);
        }
    }

    #[test]
    fn a_pack_without_a_trailer_has_none_and_a_lying_one_is_refused() {
        assert_eq!(length(b"just some blob bytes", 20).unwrap(), None);
        let mut lying = 1000u32.to_le_bytes().to_vec();
        lying.extend_from_slice(MAGIC);
        assert!(length(&lying, 500).is_err());
        // An entry past the trailer's start.
        let trailer = encode(&[entry(1, 10, 100)]);
        assert!(decode(PackId(9), &trailer, 50 + trailer.len() as u64).is_err());
        assert!(decode(PackId(9), &trailer[1..], 500).is_err());
    }
}
