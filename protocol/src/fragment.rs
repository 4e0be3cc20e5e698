//! Splitting application messages across Noise messages, and joining them.
//!
//! A Noise message carries at most 65519 bytes of plaintext. Each plaintext
//! starts with one flag byte: [`MORE`] when further fragments of the same
//! application message follow, [`LAST`] on the final one. The
//! [`Reassembler`] refuses to hold more than [`MAX_MESSAGE`] bytes, so a peer
//! cannot make us buffer without bound.

use crate::ProtocolError;

/// Largest plaintext one Noise message can carry (65535 minus the 16-byte tag).
pub const MAX_PLAINTEXT: usize = 65535 - 16;
/// Largest fragment of application bytes per Noise message.
pub const MAX_FRAGMENT: usize = MAX_PLAINTEXT - 1;
/// Largest application message, in encoded bytes.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// Flag byte: more fragments follow.
pub const MORE: u8 = 1;
/// Flag byte: this fragment completes the message.
pub const LAST: u8 = 0;

/// Splits `message` into flagged plaintexts of at most [`MAX_PLAINTEXT`] bytes,
/// calling `emit` for each in order.
///
/// # Errors
/// [`ProtocolError::TooLarge`] for messages over [`MAX_MESSAGE`]; errors from
/// `emit` are passed through.
pub fn split(
    message: &[u8],
    mut emit: impl FnMut(&[u8]) -> Result<(), ProtocolError>,
) -> Result<(), ProtocolError> {
    if message.len() > MAX_MESSAGE {
        return Err(ProtocolError::TooLarge {
            what: "message",
            len: message.len(),
            max: MAX_MESSAGE,
        });
    }
    let mut plaintext = Vec::with_capacity(MAX_PLAINTEXT.min(message.len() + 1));
    let mut pieces = message.chunks(MAX_FRAGMENT).peekable();
    if pieces.peek().is_none() {
        return emit(&[LAST]);
    }
    while let Some(piece) = pieces.next() {
        plaintext.clear();
        plaintext.push(if pieces.peek().is_some() { MORE } else { LAST });
        plaintext.extend_from_slice(piece);
        emit(&plaintext)?;
    }
    Ok(())
}

/// Joins flagged plaintexts back into whole messages.
#[derive(Debug, Default)]
pub struct Reassembler {
    pending: Vec<u8>,
}

impl Reassembler {
    /// Takes one decrypted plaintext; returns the whole message when this was
    /// its last fragment.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for an empty plaintext or an unknown flag,
    /// [`ProtocolError::TooLarge`] when the message would exceed [`MAX_MESSAGE`].
    pub fn handle_plaintext(&mut self, plaintext: &[u8]) -> Result<Option<Vec<u8>>, ProtocolError> {
        let (&flag, body) = plaintext
            .split_first()
            .ok_or(ProtocolError::Malformed("empty fragment"))?;
        if flag != MORE && flag != LAST {
            return Err(ProtocolError::Malformed("fragment flag"));
        }
        let len = self.pending.len() + body.len();
        if len > MAX_MESSAGE {
            return Err(ProtocolError::TooLarge {
                what: "message",
                len,
                max: MAX_MESSAGE,
            });
        }
        self.pending.extend_from_slice(body);
        Ok((flag == LAST).then(|| std::mem::take(&mut self.pending)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn split_then_join(len in 0usize..300_000, seed in any::<u8>()) {
            let message: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let mut plaintexts = Vec::new();
            split(&message, |p| { plaintexts.push(p.to_vec()); Ok(()) }).unwrap();
            prop_assert!(plaintexts.iter().all(|p| p.len() <= MAX_PLAINTEXT));
            let mut joiner = Reassembler::default();
            let mut out = None;
            for (i, p) in plaintexts.iter().enumerate() {
                let got = joiner.handle_plaintext(p).unwrap();
                prop_assert_eq!(got.is_some(), i + 1 == plaintexts.len());
                out = got.or(out);
            }
            prop_assert_eq!(out.unwrap(), message);
        }
    }

    #[test]
    fn refuses_unbounded_messages() {
        let mut joiner = Reassembler::default();
        let piece = vec![MORE; MAX_PLAINTEXT];
        let mut result = Ok(None);
        for _ in 0..(MAX_MESSAGE / MAX_FRAGMENT + 2) {
            result = joiner.handle_plaintext(&piece);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(ProtocolError::TooLarge { .. })));
        assert!(split(&vec![0; MAX_MESSAGE + 1], |_| Ok(())).is_err());
    }
}
