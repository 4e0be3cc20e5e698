//! The handshake timestamp that makes replayed first messages worthless.
//!
//! As in WireGuard, the first `Noise_IK` message carries the initiator's wall
//! clock as 12 bytes (big-endian seconds and nanoseconds since the Unix
//! epoch, TAI64N-like). The relay remembers the newest timestamp per client
//! and drops any first message that is not strictly newer ([`ReplayGuard`]).
//!
//! Unlike WireGuard, the relay also refuses a timestamp more than
//! [`MAX_AHEAD_SECS`] ahead of its own clock, and never holds a newest
//! timestamp further ahead than that: an endpoint whose clock was once
//! ahead (a dead RTC battery, a VM restored) and then corrected is locked
//! out for at most that long, not until its clock catches up with the
//! mistake, and a captured message from the future is worthless too.
//! The caller supplies the time: this crate reads no clock.

use std::collections::{HashMap, HashSet};

use crate::keys::PublicKey;
use crate::ProtocolError;

/// How far ahead of the relay's clock a handshake timestamp may be: five
/// minutes, Kerberos's clock skew (laptops that keep time by NTP are within
/// seconds; one that does not drifts minutes in a month).
pub const MAX_AHEAD_SECS: u64 = 300;

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

    /// Accepts `ts` for `peer` if it is strictly newer than any accepted
    /// before and not further ahead of `now` than [`MAX_AHEAD_SECS`];
    /// remembers it. A newest one further ahead than that (saved by an
    /// older relay, or before the relay's clock went back) is brought back
    /// to `now` + [`MAX_AHEAD_SECS`] for good.
    ///
    /// # Errors
    /// [`ProtocolError::ClockAhead`] for a timestamp too far ahead;
    /// [`ProtocolError::Replay`] for one equal to or older than the newest.
    pub fn check_and_record(
        &mut self,
        peer: PublicKey,
        ts: Timestamp,
        now: Timestamp,
    ) -> Result<(), ProtocolError> {
        let limit = Timestamp {
            secs: now.secs.saturating_add(MAX_AHEAD_SECS),
            nanos: now.nanos,
        };
        if ts > limit {
            return Err(ProtocolError::ClockAhead {
                ahead_secs: ts.secs.saturating_sub(now.secs),
            });
        }
        if let Some(newest) = self.newest.get_mut(&peer).filter(|n| **n > limit) {
            *newest = limit;
            self.changed.insert(peer);
        }
        match self.newest.get(&peer) {
            Some(newest) if ts <= *newest => Err(ProtocolError::Replay),
            _ => {
                self.newest.insert(peer, ts);
                self.changed.insert(peer);
                Ok(())
            }
        }
    }

    /// The newest timestamp accepted from `peer`: a clock that went back
    /// is accepted again once it passes this.
    pub fn newest(&self, peer: &PublicKey) -> Option<Timestamp> {
        self.newest.get(peer).copied()
    }

    /// Forgets a peer, e.g. when its key is removed.
    pub fn forget(&mut self, peer: &PublicKey) {
        self.newest.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp { secs: 20, nanos: 0 };

    #[test]
    fn a_clock_once_ahead_is_locked_out_for_minutes_at_most_not_until_it_catches_up() {
        let key = PublicKey([1; 32]);
        let year = 365 * 86_400;
        let now = Timestamp {
            secs: 1_000_000_000,
            nanos: 0,
        };
        let at = |secs: u64| Timestamp { secs, nanos: 0 };
        // Saved by an older relay, which took any future time.
        let mut guard = ReplayGuard::with_saved([(key, at(now.secs + year))]);
        // A year ahead is refused and says so; the corrected clock is
        // refused only until the relay's clock passes now + MAX_AHEAD_SECS.
        assert_eq!(
            guard.check_and_record(key, at(now.secs + year + 1), now),
            Err(ProtocolError::ClockAhead {
                ahead_secs: year + 1
            })
        );
        assert_eq!(
            guard.check_and_record(key, at(now.secs + 1), now),
            Err(ProtocolError::Replay)
        );
        assert_eq!(guard.newest(&key), Some(at(now.secs + MAX_AHEAD_SECS)));
        let later = at(now.secs + MAX_AHEAD_SECS + 1);
        guard.check_and_record(key, later, later).unwrap();
        // A little ahead is fine.
        let ahead = at(later.secs + MAX_AHEAD_SECS);
        guard.check_and_record(key, ahead, later).unwrap();
        assert_eq!(
            guard.check_and_record(key, ahead, later),
            Err(ProtocolError::Replay)
        );
    }

    #[test]
    fn saved_times_still_refuse_and_changes_are_handed_out_once() {
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let old = Timestamp { secs: 10, nanos: 0 };
        let mut guard = ReplayGuard::with_saved([(a, old)]);
        assert_eq!(
            guard.check_and_record(a, old, NOW),
            Err(ProtocolError::Replay)
        );
        let newer = Timestamp { secs: 11, nanos: 0 };
        guard.check_and_record(a, newer, NOW).unwrap();
        guard.check_and_record(b, old, NOW).unwrap();
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
        guard.check_and_record(key, t1, NOW).unwrap();
        assert_eq!(
            guard.check_and_record(key, t1, NOW),
            Err(ProtocolError::Replay)
        );
        guard.check_and_record(key, t2, NOW).unwrap();
        assert_eq!(
            guard.check_and_record(key, t1, NOW),
            Err(ProtocolError::Replay)
        );
        assert_eq!(Timestamp::decode(&t2.encode()).unwrap(), t2);
        let mut bad = t2.encode();
        bad[8..].copy_from_slice(&2_000_000_000u32.to_be_bytes());
        assert!(Timestamp::decode(&bad).is_err());
    }
}
