//! A snapshot's label: the host that made it and the paths it covers, so
//! `ferry snapshots` can say what each holds without reading its trees.
//! The relay keeps it beside the snapshot, opaque: an open client's is
//! plain, a sealed client's is sealed under the vault (kind
//! [`SealedKind::Label`], naming the snapshot's root), so the relay of a
//! sealed client learns no path. Either names its root, and a label that
//! names another root than its snapshot's is not shown: a relay cannot
//! move one snapshot's label onto another.

use serde::{Deserialize, Serialize};

use crate::message::MAX_LABEL;
use crate::sealed::{open, seal, SealedKind, SealingKeys, StorageId};
use crate::ProtocolError;

/// What a label says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotLabel {
    /// The root it describes (a tree id, or a sealed root's storage id).
    pub root: [u8; 32],
    /// The host name of the machine that made the snapshot.
    pub host: String,
    /// The paths backed up (absolute), or `command:NAME` for a command's
    /// output.
    pub paths: Vec<String>,
    /// Paths left out of `paths` to fit [`MAX_LABEL`].
    pub more: u32,
}

/// Room kept for a sealed label's header, nonce, tag and padding.
const SEALING_ROOM: usize = 512;

impl SnapshotLabel {
    /// The label of `root`, made on `host`, covering `paths`: as many of
    /// them as fit (the rest counted in `more`).
    pub fn new(root: [u8; 32], host: &str, paths: &[String]) -> Self {
        let host: String = host.chars().take(255).collect();
        let mut label = SnapshotLabel {
            root,
            host,
            paths: Vec::new(),
            more: 0,
        };
        for (i, path) in paths.iter().enumerate() {
            label.paths.push(path.clone());
            if label.encode().len() > MAX_LABEL - SEALING_ROOM {
                label.paths.pop();
                label.more = (paths.len() - i) as u32;
                break;
            }
        }
        label
    }

    /// Its bytes (an open client's label as the relay keeps it).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a label encodes")
    }

    /// The label in `bytes`, if it describes `root`.
    ///
    /// # Errors
    /// Bytes over [`MAX_LABEL`], that do not decode, or that name another
    /// root.
    pub fn decode(bytes: &[u8], root: &[u8; 32]) -> Result<Self, ProtocolError> {
        if bytes.len() > MAX_LABEL {
            return Err(ProtocolError::TooLarge {
                what: "snapshot label",
                len: bytes.len(),
                max: MAX_LABEL,
            });
        }
        let label: SnapshotLabel =
            postcard::from_bytes(bytes).map_err(|_| ProtocolError::Malformed("snapshot label"))?;
        if label.root != *root {
            return Err(ProtocolError::Malformed("a label of another snapshot"));
        }
        Ok(label)
    }

    /// Its bytes sealed under `keys` (a sealed client's label).
    ///
    /// # Errors
    /// None in practice: a label is far below the sealing limits.
    pub fn seal(&self, keys: &SealingKeys) -> Result<Vec<u8>, ProtocolError> {
        let refs = vec![StorageId(self.root)];
        Ok(seal(keys, SealedKind::Label, refs, &self.encode())?.1)
    }

    /// The sealed label in `bytes`, if it opens under `keys` and
    /// describes `root`.
    ///
    /// # Errors
    /// Bytes over [`MAX_LABEL`], altered or of another vault, of another
    /// kind, or naming another root.
    pub fn open(bytes: &[u8], keys: &SealingKeys, root: &[u8; 32]) -> Result<Self, ProtocolError> {
        if bytes.len() > MAX_LABEL {
            return Err(ProtocolError::TooLarge {
                what: "snapshot label",
                len: bytes.len(),
                max: MAX_LABEL,
            });
        }
        let (header, plain) = open(keys, &StorageId::of(bytes), bytes, SealedKind::Label)?;
        if header.refs != [StorageId(*root)] {
            return Err(ProtocolError::Malformed("a label of another snapshot"));
        }
        Self::decode(&plain, root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealed::VaultKey;

    #[test]
    fn labels_fit_their_bound_and_name_their_root() {
        let paths: Vec<String> = (0..1000)
            .map(|i| format!("/home/me/project-{i:04}"))
            .collect();
        let label = SnapshotLabel::new([7; 32], "laptop", &paths);
        assert!(label.more > 0 && label.paths.len() + label.more as usize == 1000);
        let bytes = label.encode();
        assert!(bytes.len() <= MAX_LABEL);
        assert_eq!(SnapshotLabel::decode(&bytes, &[7; 32]).unwrap(), label);
        assert!(
            SnapshotLabel::decode(&bytes, &[8; 32]).is_err(),
            "another root"
        );
        assert!(SnapshotLabel::decode(&[0xff; 10], &[7; 32]).is_err());
    }

    #[test]
    fn a_sealed_label_opens_only_under_its_vault_and_for_its_root() {
        let keys = SealingKeys::derive(&VaultKey::from_bytes([1; 32]));
        let other = SealingKeys::derive(&VaultKey::from_bytes([2; 32]));
        let label = SnapshotLabel::new([9; 32], "laptop", &["/home/me".into()]);
        let sealed = label.seal(&keys).unwrap();
        assert!(sealed.len() <= MAX_LABEL);
        assert!(
            !sealed.windows(8).any(|w| w == b"/home/me"),
            "the path is not in the clear"
        );
        assert_eq!(
            SnapshotLabel::open(&sealed, &keys, &[9; 32]).unwrap(),
            label
        );
        assert!(SnapshotLabel::open(&sealed, &other, &[9; 32]).is_err());
        assert!(SnapshotLabel::open(&sealed, &keys, &[3; 32]).is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(SnapshotLabel::open(&flipped, &keys, &[9; 32]).is_err());
    }
}
