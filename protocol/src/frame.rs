//! The 2-byte length framing that carries Noise messages over TCP.
//!
//! A frame is a big-endian `u16` length followed by that many bytes (1 to
//! 65535, Noise's own message limit). [`parse_frame`] works over a byte
//! buffer and returns `Ok(None)` while the frame is incomplete, so a socket
//! reader can keep filling its buffer; it never allocates, so no length read
//! from the network can make it allocate.

use crate::ProtocolError;

/// The largest frame payload: Noise's maximum message size.
pub const MAX_FRAME: usize = 65535;
/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 2;

/// Appends one frame carrying `payload` to `dst`.
///
/// # Errors
/// [`ProtocolError::TooLarge`] for payloads over [`MAX_FRAME`], and
/// [`ProtocolError::Malformed`] for an empty payload.
pub fn encode_frame(payload: &[u8], dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
    if payload.is_empty() {
        return Err(ProtocolError::Malformed("empty frame"));
    }
    let len = u16::try_from(payload.len()).map_err(|_| ProtocolError::TooLarge {
        what: "frame",
        len: payload.len(),
        max: MAX_FRAME,
    })?;
    dst.extend_from_slice(&len.to_be_bytes());
    dst.extend_from_slice(payload);
    Ok(())
}

/// Looks for one whole frame at the start of `buf`.
///
/// Returns the payload and the number of bytes the frame occupies in `buf`,
/// or `Ok(None)` when more bytes are needed.
///
/// # Errors
/// [`ProtocolError::Malformed`] for a zero-length frame, which no sender
/// produces.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
    if len == 0 {
        return Err(ProtocolError::Malformed("empty frame"));
    }
    Ok(buf
        .get(HEADER_LEN..HEADER_LEN + len)
        .map(|payload| (payload, HEADER_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn frames_round_trip_through_any_split(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..2000), 1..8),
            split in 0usize..20000,
        ) {
            let mut wire = Vec::new();
            for p in &payloads {
                encode_frame(p, &mut wire).unwrap();
            }
            // Feed the bytes in two pieces, as a socket might deliver them.
            let split = split.min(wire.len());
            let mut buf = wire[..split].to_vec();
            let mut got = Vec::new();
            let mut rest = &wire[split..];
            loop {
                while let Some((payload, used)) = parse_frame(&buf).unwrap() {
                    got.push(payload.to_vec());
                    buf.drain(..used);
                }
                if rest.is_empty() { break; }
                buf.extend_from_slice(rest);
                rest = &[];
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, payloads);
        }
    }

    #[test]
    fn limits() {
        let mut out = Vec::new();
        assert!(encode_frame(&vec![0; MAX_FRAME], &mut out).is_ok());
        assert!(matches!(
            encode_frame(&vec![0; MAX_FRAME + 1], &mut Vec::new()),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(encode_frame(&[], &mut Vec::new()).is_err());
        assert!(parse_frame(&[0, 0]).is_err());
        assert_eq!(parse_frame(&[0xff, 0xff, 1]).unwrap(), None);
    }
}
