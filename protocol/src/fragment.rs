//! Splitting application messages across Noise messages, and joining them.
//!
//! A Noise message carries at most 65519 bytes of plaintext. Each plaintext
//! is a piece of one application message followed by one flag byte: [`MORE`]
//! when further pieces of the same message follow, [`LAST`] on the final
//! one. The flag trails the piece so that a message that fits one Noise
//! message is encrypted straight from, and decrypted straight into, its own
//! buffer, with no copy to make room for a header. The [`Reassembler`]
//! refuses to hold more than [`MAX_MESSAGE`] bytes, so a peer cannot make us
//! buffer without bound.

use crate::ProtocolError;

/// Largest plaintext one Noise message can carry (65535 minus the 16-byte tag).
pub const MAX_PLAINTEXT: usize = 65535 - 16;
/// Largest piece of application bytes per Noise message.
pub const MAX_FRAGMENT: usize = MAX_PLAINTEXT - 1;
/// Largest application message, in encoded bytes.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// Flag byte: more pieces follow.
pub const MORE: u8 = 1;
/// Flag byte: this piece completes the message.
pub const LAST: u8 = 0;

/// Checks that a message may be sent at all.
///
/// # Errors
/// [`ProtocolError::TooLarge`] for messages over [`MAX_MESSAGE`].
pub fn check_size(len: usize) -> Result<(), ProtocolError> {
    if len > MAX_MESSAGE {
        return Err(ProtocolError::TooLarge {
            what: "message",
            len,
            max: MAX_MESSAGE,
        });
    }
    Ok(())
}

/// Splits `message` into flagged plaintexts of at most [`MAX_PLAINTEXT`] bytes,
/// calling `emit` for each in order, each a slice of `message` itself with
/// its flag in place (no piece is copied).
///
/// # Errors
/// [`ProtocolError::TooLarge`] for messages over [`MAX_MESSAGE`]; errors from
/// `emit` are passed through.
pub fn split(
    mut message: Vec<u8>,
    mut emit: impl FnMut(&[u8]) -> Result<(), ProtocolError>,
) -> Result<(), ProtocolError> {
    check_size(message.len())?;
    let total = message.len();
    // The last piece's flag, after the message; every other piece borrows
    // the byte after it for its flag while it is emitted, so no piece is
    // copied.
    message.push(LAST);
    let mut start = 0;
    loop {
        let end = (start + MAX_FRAGMENT).min(total);
        if end == total {
            return emit(&message[start..]);
        }
        let next = message[end];
        message[end] = MORE;
        emit(&message[start..=end])?;
        message[end] = next;
        start = end;
    }
}

/// Joins flagged plaintexts back into whole messages.
#[derive(Debug, Default)]
pub struct Reassembler {
    pending: Vec<u8>,
}

impl Reassembler {
    /// Takes one decrypted plaintext; returns the whole message when this was
    /// its last piece. A single-piece message is returned in its own buffer.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for an empty plaintext or an unknown flag,
    /// [`ProtocolError::TooLarge`] when the message would exceed [`MAX_MESSAGE`].
    pub fn handle_plaintext(
        &mut self,
        plaintext: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, ProtocolError> {
        self.push_with(plaintext.len(), |room| {
            room.copy_from_slice(&plaintext);
            Ok(plaintext.len())
        })
    }

    /// Takes one plaintext that `fill` writes (at most `len` bytes, returning
    /// how many) straight after the pieces joined so far: a decryption
    /// lands where the message is being joined, with no buffer of its own
    /// and no copy. Returns the whole message when this was its last piece.
    ///
    /// # Errors
    /// As [`Reassembler::handle_plaintext`], and `fill`'s.
    pub fn push_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, ProtocolError>,
    ) -> Result<Option<Vec<u8>>, ProtocolError> {
        let start = self.pending.len();
        self.pending.resize(start + len, 0);
        let written = match fill(&mut self.pending[start..]) {
            Ok(written) => written.min(len),
            Err(e) => {
                self.pending.truncate(start);
                return Err(e);
            }
        };
        self.pending.truncate(start + written);
        if written == 0 {
            return Err(ProtocolError::Malformed("empty fragment"));
        }
        let flag = self.pending.pop().unwrap_or(LAST);
        if flag != MORE && flag != LAST {
            return Err(ProtocolError::Malformed("fragment flag"));
        }
        check_size(self.pending.len())?;
        if flag == LAST {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        Ok(None)
    }

    /// Whether a message of several pieces is being joined.
    pub fn joining(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Makes room for a batch's worth of a message of several pieces at
    /// once, rather than growing (and copying) piece by piece. The caller
    /// decides when: a relay does it only once the memory is granted.
    pub fn reserve_join(&mut self) {
        if self.joining() && self.pending.capacity() < JOIN_RESERVE {
            self.pending.reserve(JOIN_RESERVE - self.pending.len());
        }
    }
}

/// Bytes reserved when a message turns out to come in several pieces.
const JOIN_RESERVE: usize = 2 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn split_then_join(len in 0usize..300_000, seed in any::<u8>()) {
            let message: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let mut plaintexts = Vec::new();
            split(message.clone(), |p| { plaintexts.push(p.to_vec()); Ok(()) }).unwrap();
            prop_assert!(plaintexts.iter().all(|p| p.len() <= MAX_PLAINTEXT));
            let mut joiner = Reassembler::default();
            let mut out = None;
            let count = plaintexts.len();
            for (i, p) in plaintexts.into_iter().enumerate() {
                let got = joiner.handle_plaintext(p).unwrap();
                prop_assert_eq!(got.is_some(), i + 1 == count);
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
            result = joiner.handle_plaintext(piece.clone());
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(ProtocolError::TooLarge { .. })));
        assert!(split(vec![0; MAX_MESSAGE + 1], |_| Ok(())).is_err());
        assert!(joiner.handle_plaintext(Vec::new()).is_err());
        assert!(Reassembler::default()
            .handle_plaintext(vec![1, 2, 7])
            .is_err());
    }
}
