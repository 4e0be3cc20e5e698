//! A sealed snapshot's root, and the endpoint's defence against a relay
//! that rolls a set back, forks it or swaps roots between sets.
//!
//! Each snapshot of a sealed client is named by a root object (kind
//! [`SealedKind::Root`](crate::sealed::SealedKind::Root)) holding the set,
//! a sequence number that grows by one per snapshot of the set, the
//! previous root's storage id, the time and the tree. Sealing authenticates
//! it under the vault (only the vault's holder can make one the AEAD
//! accepts), which is what a signature would give here: the only parties
//! that ever check a root hold the vault, so a keyed MAC, the AEAD's tag,
//! is enough and no public signing key needs to exist.
//!
//! The endpoint remembers, per set, the newest root it has seen
//! ([`Seen`]); a relay serving anything as the newest must serve a chain
//! from it back to what was seen. Refused, each with one line: an older
//! root (a rollback), another root at a sequence seen (a fork), a chain
//! whose links or sequence numbers do not follow, a root of another set.

use serde::{Deserialize, Serialize};

use crate::decoding::decode_exact;
use crate::sealed::StorageId;
use crate::ProtocolError;

/// The longest set name a root holds.
const MAX_SET_NAME: usize = 64;

/// What a root object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// The backup set.
    pub set: String,
    /// 1 for the set's first snapshot, one more for each after.
    pub sequence: u64,
    /// The root before it (none for the first).
    pub previous: Option<[u8; 32]>,
    /// When the backup began, ms since the Unix epoch (the endpoint's clock).
    pub time_ms: i64,
    /// The snapshot's tree.
    pub tree: [u8; 32],
}

impl Root {
    /// The root's plaintext, to seal.
    ///
    /// # Errors
    /// A set name over 64 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        if self.set.len() > MAX_SET_NAME {
            return Err(ProtocolError::TooLarge {
                what: "root's set name",
                len: self.set.len(),
                max: MAX_SET_NAME,
            });
        }
        postcard::to_allocvec(self).map_err(|_| ProtocolError::Malformed("root"))
    }

    /// A root read back from its opened plaintext.
    ///
    /// # Errors
    /// Bytes that are not exactly one root, or a set name over 64 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let root: Root = decode_exact(bytes, "root")?;
        if root.set.len() > MAX_SET_NAME || root.sequence == 0 {
            return Err(ProtocolError::Malformed("root"));
        }
        Ok(root)
    }

    /// The dictionary a root's header names beside its tree (see
    /// [`crate::sealed_dictionary`]), if any.
    ///
    /// # Errors
    /// Refs that do not name the root's tree, or name more than one other.
    pub fn dictionary(&self, refs: &[StorageId]) -> Result<Option<StorageId>, ProtocolError> {
        let mut others = refs.iter().filter(|r| r.0 != self.tree);
        match (refs.len(), others.next(), others.next()) {
            (1, None, _) => Ok(None),
            (2, Some(dictionary), None) => Ok(Some(*dictionary)),
            _ => Err(ProtocolError::Malformed(
                "a root whose header does not name its tree and at most a dictionary",
            )),
        }
    }
}

/// The newest root of a set the endpoint has seen: its sequence and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Its sequence number.
    pub sequence: u64,
    /// Its storage id.
    pub id: [u8; 32],
}

/// Why a root served as a set's newest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootError {
    /// Older than one already seen.
    #[error("the relay served snapshot {served} of set {set:?} as its newest, but this endpoint has seen snapshot {seen}: a rollback")]
    Rollback {
        /// The set.
        set: String,
        /// The sequence served.
        served: u64,
        /// The newest sequence seen.
        seen: u64,
    },
    /// Another root at a sequence already seen, or a chain that does not
    /// reach the one seen.
    #[error("the relay served a history of set {0:?} that is not the one this endpoint has seen: a fork")]
    Fork(String),
    /// Links or sequence numbers that do not follow.
    #[error("the relay served a broken chain of roots for set {0:?}")]
    Broken(String),
    /// A root of another set than asked.
    #[error("the relay served a root of set {served:?} for set {asked:?}")]
    OtherSet {
        /// The set asked for.
        asked: String,
        /// The set it named.
        served: String,
    },
}

/// Checks what a relay serves as `set`'s newest root: `chain` is that root
/// and the ones before it, newest first, each with its storage id, back to
/// (and including) the root `seen` names, or to the set's first when
/// nothing was seen. Returns what to remember now.
///
/// # Errors
/// A [`RootError`] naming the rollback, fork, broken chain or swapped set.
pub fn check_newest(
    set: &str,
    seen: Option<Seen>,
    chain: &[(StorageId, Root)],
) -> Result<Seen, RootError> {
    let broken = || RootError::Broken(set.to_string());
    let (newest_id, newest) = chain.first().ok_or_else(broken)?;
    if let Some((_, other)) = chain.iter().find(|(_, r)| r.set != set) {
        return Err(RootError::OtherSet {
            asked: set.to_string(),
            served: other.set.clone(),
        });
    }
    if let Some(seen) = seen {
        if newest.sequence < seen.sequence {
            return Err(RootError::Rollback {
                set: set.to_string(),
                served: newest.sequence,
                seen: seen.sequence,
            });
        }
    }
    for pair in chain.windows(2) {
        let ((_, later), (id, earlier)) = (&pair[0], &pair[1]);
        if later.previous != Some(id.0) || later.sequence != earlier.sequence + 1 {
            return Err(broken());
        }
    }
    let (oldest_id, oldest) = chain.last().expect("not empty");
    match seen {
        Some(seen) if oldest.sequence != seen.sequence || oldest_id.0 != seen.id => {
            return Err(RootError::Fork(set.to_string()))
        }
        // Nothing seen (a new machine): trusted on first use, from
        // wherever the relay's retention left the history.
        _ => {}
    }
    Ok(Seen {
        sequence: newest.sequence,
        id: newest_id.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_names_its_tree_and_at_most_a_dictionary() {
        let root = &chain("docs", 1)[0].1;
        let (tree, dictionary, other) = (
            StorageId(root.tree),
            StorageId([0xd1; 32]),
            StorageId([0x07; 32]),
        );
        assert_eq!(root.dictionary(&[tree]).unwrap(), None);
        let mut both = vec![tree, dictionary];
        both.sort();
        assert_eq!(root.dictionary(&both).unwrap(), Some(dictionary));
        assert!(root.dictionary(&[]).is_err());
        assert!(root.dictionary(&[other]).is_err());
        assert!(root.dictionary(&[other, dictionary]).is_err());
        let mut three = vec![tree, dictionary, other];
        three.sort();
        assert!(root.dictionary(&three).is_err());
    }

    /// A chain of `n` roots of `set`, newest first, ids made up.
    fn chain(set: &str, n: u64) -> Vec<(StorageId, Root)> {
        let mut out = Vec::new();
        let mut previous = None;
        for sequence in 1..=n {
            let root = Root {
                set: set.into(),
                sequence,
                previous,
                time_ms: sequence as i64,
                tree: [sequence as u8; 32],
            };
            let id = StorageId::of(&root.encode().unwrap());
            previous = Some(id.0);
            out.push((id, root));
        }
        out.reverse();
        out
    }

    fn seen_at(chain: &[(StorageId, Root)], sequence: u64) -> Seen {
        let (id, _) = chain.iter().find(|(_, r)| r.sequence == sequence).unwrap();
        Seen { sequence, id: id.0 }
    }

    #[test]
    fn a_chain_from_what_was_seen_is_accepted_and_remembered() {
        let full = chain("home", 5);
        let first = check_newest("home", None, &full).unwrap();
        assert_eq!(first.sequence, 5);
        let seen = seen_at(&full, 3);
        assert_eq!(check_newest("home", Some(seen), &full[..3]).unwrap(), first);
        assert_eq!(
            check_newest("home", Some(first), &full[..1]).unwrap(),
            first
        );
    }

    #[test]
    fn an_older_root_served_as_newest_is_a_rollback() {
        let full = chain("home", 5);
        let error = check_newest("home", Some(seen_at(&full, 5)), &full[2..]).unwrap_err();
        assert!(
            matches!(
                error,
                RootError::Rollback {
                    served: 3,
                    seen: 5,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("rollback"));
    }

    #[test]
    fn another_history_at_the_same_sequence_is_a_fork() {
        let ours = chain("home", 4);
        let mut theirs = chain("home", 4);
        theirs[0].1.time_ms = 99;
        theirs[0].0 = StorageId::of(&theirs[0].1.encode().unwrap());
        let error = check_newest("home", Some(seen_at(&ours, 4)), &theirs[..1]).unwrap_err();
        assert_eq!(error, RootError::Fork("home".into()));
    }

    #[test]
    fn a_chain_with_a_missing_link_or_another_sets_root_is_refused() {
        let mut full = chain("home", 5);
        full.remove(2);
        assert_eq!(
            check_newest("home", None, &full).unwrap_err(),
            RootError::Broken("home".into())
        );
        let work = chain("work", 2);
        assert!(matches!(
            check_newest("home", None, &work),
            Err(RootError::OtherSet { .. })
        ));
        assert!(check_newest("home", None, &[]).is_err());
    }

    #[test]
    fn roots_round_trip_and_bad_ones_do_not_decode() {
        let (_, root) = chain("home", 2).remove(0);
        assert_eq!(Root::decode(&root.encode().unwrap()).unwrap(), root);
        let long = Root {
            set: "x".repeat(65),
            ..root.clone()
        };
        assert!(long.encode().is_err());
        let mut bytes = root.encode().unwrap();
        bytes.push(0);
        assert!(Root::decode(&bytes).is_err(), "trailing bytes");
    }
}
