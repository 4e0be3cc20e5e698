//! Decoding postcard bytes from the network: exactly one value, and
//! batches whose count is checked before anything is decoded.

use serde::Deserialize;

use crate::ProtocolError;

/// Decodes exactly one postcard value from `bytes`: trailing bytes are an
/// error, as is anything that does not decode. Every decoder of network
/// bytes in this crate goes through here.
///
/// # Errors
/// [`ProtocolError::Malformed`] naming `what`.
pub(crate) fn decode_exact<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, ProtocolError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        _ => Err(ProtocolError::Malformed(what)),
    }
}

/// Decodes exactly one sequence-led value (a batch) of at most `max`
/// entries, reading the count before anything is decoded: a few bytes of
/// empty entries must not become millions of them.
///
/// # Errors
/// [`ProtocolError::TooLarge`] for more entries, [`ProtocolError::Malformed`]
/// for anything else.
pub(crate) fn decode_counted<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    max: usize,
    what: &'static str,
) -> Result<T, ProtocolError> {
    let count = leading_varint(bytes).ok_or(ProtocolError::Malformed(what))?;
    if count > max as u64 {
        return Err(ProtocolError::TooLarge {
            what,
            len: usize::try_from(count).unwrap_or(usize::MAX),
            max,
        });
    }
    decode_exact(bytes, what)
}

/// The varint postcard starts a sequence with (its length), if `bytes`
/// begins with a whole one.
fn leading_varint(bytes: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}
