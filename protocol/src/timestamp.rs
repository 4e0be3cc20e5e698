//! The handshake timestamp that makes replayed first messages worthless.
//!
//! As in WireGuard, the first `Noise_IK` message carries the initiator's wall
//! clock as 12 bytes (big-endian seconds and nanoseconds since the Unix
//! epoch, TAI64N-like). The relay remembers the newest timestamp per client
//! and drops any first message that is not strictly newer ([`ReplayGuard`]).
//! The caller supplies the time: this crate reads no clock.

use std::collections::{HashMap, HashSet};

use crate::keys::PublicKey;
use crate::ProtocolError;

/// Encoded length of a [`Timestamp`].
pub const TIMESTAMP_LEN: usize = 12;

/// A wall-clock instant with nanosecond resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub secs: u64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Timestamp {
    /// Builds a timestamp from a duration since the Unix epoch.
    pub fn from_unix(since_epoch: std::time::Duration) -> Self {
        Timestamp {
            secs: since_epoch.as_secs(),
            nanos: since_epoch.subsec_nanos(),
        }
    }

    /// Wire form.
    pub fn encode(&self) -> [u8; TIMESTAMP_LEN] {
        let mut out = [0u8; TIMESTAMP_LEN];
        out[..8].copy_from_slice(&self.secs.to_be_bytes());
        out[8..].copy_from_slice(&self.nanos.to_be_bytes());
        out
    }

    /// Parses the wire form.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for a wrong length or nanoseconds ≥ 10⁹.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let bytes: &[u8; TIMESTAMP_LEN] = bytes
            .try_into()
            .map_err(|_| ProtocolError::Malformed("handshake timestamp"))?;
        let mut secs = [0u8; 8];
        secs.copy_from_slice(&bytes[..8]);
        let mut nanos = [0u8; 4];
        nanos.copy_from_slice(&bytes[8..]);
        let ts = Timestamp {
            secs: u64::from_be_bytes(secs),
            nanos: u32::from_be_bytes(nanos),
        };
        if ts.nanos >= 1_000_000_000 {
            return Err(ProtocolError::Malformed("handshake timestamp"));
        }
        Ok(ts)
    }
}

/// The newest handshake timestamp accepted per peer key.
///
/// Memory grows with the number of paired clients only: the relay records a
/// timestamp after it has authenticated the key as a paired client.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    newest: HashMap<PublicKey, Timestamp>,
    /// Peers whose newest timestamp changed since [`ReplayGuard::take_changes`].
    changed: HashSet<PublicKey>,
}

impl ReplayGuard {
    /// A guard that starts from timestamps saved earlier (so a first
    /// message captured before a restart is still refused after it).
    pub fn with_saved(saved: impl IntoIterator<Item = (PublicKey, Timestamp)>) -> Self {
        ReplayGuard {
            newest: saved.into_iter().collect(),
            changed: HashSet::new(),
        }
    }

    /// The timestamps accepted since the last call, to be saved.
    pub fn take_changes(&mut self) -> Vec<(PublicKey, Timestamp)> {
        let changed = std::mem::take(&mut self.changed);
        changed
            .into_iter()
            .filter_map(|key| self.newest.get(&key).map(|ts| (key, *ts)))
            .collect()
    }

    /// Accepts `ts` for `peer` if it is strictly newer than any accepted before,
    /// and remembers it.
    ///
    /// # Errors
    /// [`ProtocolError::Replay`] for a timestamp equal to or older than the newest.
    pub fn check_and_record(
        &mut self,
        peer: PublicKey,
        ts: Timestamp,
    ) -> Result<(), ProtocolError> {
        match self.newest.get(&peer) {
            Some(newest) if ts <= *newest => Err(ProtocolError::Replay),
            _ => {
                self.newest.insert(peer, ts);
                self.changed.insert(peer);
                Ok(())
            }
        }
    }

    /// Forgets a peer, e.g. when its key is removed.
    pub fn forget(&mut self, peer: &PublicKey) {
        self.newest.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_times_still_refuse_and_changes_are_handed_out_once() {
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let old = Timestamp { secs: 10, nanos: 0 };
        let mut guard = ReplayGuard::with_saved([(a, old)]);
        assert_eq!(guard.check_and_record(a, old), Err(ProtocolError::Replay));
        let newer = Timestamp { secs: 11, nanos: 0 };
        guard.check_and_record(a, newer).unwrap();
        guard.check_and_record(b, old).unwrap();
        let mut changes = guard.take_changes();
        changes.sort();
        assert_eq!(changes, vec![(a, newer), (b, old)]);
        assert!(guard.take_changes().is_empty());
    }

    #[test]
    fn replay_and_order() {
        let key = PublicKey([1; 32]);
        let mut guard = ReplayGuard::default();
        let t1 = Timestamp { secs: 10, nanos: 5 };
        let t2 = Timestamp { secs: 10, nanos: 6 };
        guard.check_and_record(key, t1).unwrap();
        assert_eq!(guard.check_and_record(key, t1), Err(ProtocolError::Replay));
        guard.check_and_record(key, t2).unwrap();
        assert_eq!(guard.check_and_record(key, t1), Err(ProtocolError::Replay));
        assert_eq!(Timestamp::decode(&t2.encode()).unwrap(), t2);
        let mut bad = t2.encode();
        bad[8..].copy_from_slice(&2_000_000_000u32.to_be_bytes());
        assert!(Timestamp::decode(&bad).is_err());
    }
}
