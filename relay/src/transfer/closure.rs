//! What a commit must reach: the root, and every tree this upload sent
//! names only what the client holds whole (a walk over references from the
//! root, see `crate::objects`).

use std::collections::HashSet;

use ferry_protocol::ids::TreeId;
use ferry_protocol::ProtocolError;

use super::{Transfer, TransferError};
use crate::catalog::DamageLog;
use crate::catalog::{kind_name, BlobKey, BlobKind};
use crate::objects::{walk_by_level, Reach};
use crate::stored_objects::StoredObjects;

/// Why a snapshot cannot be committed.
#[derive(Debug)]
pub(super) enum Gap {
    /// Something it names is missing, damaged or undecodable: the commit is
    /// refused as incomplete (the endpoint sends again).
    Missing(String),
    /// The check itself failed: the session ends.
    Failed(TransferError),
}

impl Gap {
    fn undecodable(e: ProtocolError) -> Self {
        Gap::Missing(format!("an object does not decode ({e})"))
    }
}

impl From<TransferError> for Gap {
    fn from(e: TransferError) -> Self {
        Gap::Failed(e)
    }
}

impl Transfer {
    /// Checks that the root exists and that every tree this upload sent,
    /// walked down from the root, names only what the client holds whole.
    /// A tree in the catalog was complete when it was indexed (a tree is
    /// indexed only by the commit that checked it), and a content in the
    /// catalog has its chunks and parts (it is indexed only once they are,
    /// see `sync`): the walk does not go below either. Once something this
    /// client stored was found damaged, an object that exists may not be
    /// whole below it, so the whole snapshot is walked instead.
    ///
    /// A sealed object is indexed only once everything it names is stored
    /// (see `sync`), so below a sealed root the walk requires what it names
    /// and goes no deeper unless the client has damage.
    pub(super) fn check_closure(&self, root: BlobKey) -> Result<(), Gap> {
        self.require(root.kind, &root.id, "root")?;
        let client = self.client;
        let deep = self.catalog(|c| c.has_damage(client))?;
        let mut check = Closure {
            transfer: self,
            deep,
            seen: HashSet::new(),
            root,
            unlooked: std::collections::VecDeque::new(),
            whole: HashSet::new(),
        };
        walk_by_level(root, &StoredObjects, &mut check)
    }

    /// Fails naming the blob when the client does not hold it whole.
    fn require(&self, kind: BlobKind, id: &[u8; 32], what: &str) -> Result<(), Gap> {
        if self.has(kind, id)? {
            Ok(())
        } else {
            Err(missing(id, what))
        }
    }
}

/// The gap of a blob the client does not hold whole.
fn missing(id: &[u8; 32], what: &str) -> Gap {
    Gap::Missing(format!(
        "{what} {} is missing",
        crate::catalog::hex(&id[..8])
    ))
}

/// Blobs looked up together at most, when the walk enters one it has not
/// looked up yet.
const LOOKUP_BATCH: usize = 1024;

/// Blobs found whole that a closure check remembers at most (some 64 MiB):
/// past it, it forgets them and looks up again.
const REMEMBERED_WHOLE: usize = 1 << 20;

/// The closure check as a walk from the root, a level at a time: what each tree of this
/// upload names is required, and only those trees are walked below; with
/// `deep`, everything is.
struct Closure<'t> {
    transfer: &'t Transfer,
    deep: bool,
    seen: HashSet<BlobKey>,
    root: BlobKey,
    /// Named by the trees loaded and not looked up yet, in the order the
    /// walk enters them (each is also waiting in the walk, so this grows no
    /// larger than the walk does).
    unlooked: std::collections::VecDeque<BlobKey>,
    /// Looked up and found whole (kept for the blobs a snapshot names
    /// many times: a file in many directories).
    whole: HashSet<BlobKey>,
}

impl Closure<'_> {
    /// Whether the client holds `key` whole: looked up with up to
    /// [`LOOKUP_BATCH`] others the walk will enter next (one statement per
    /// kind and batch, not one per blob; the walk goes a level at a time,
    /// so a batch spans many trees).
    fn is_whole(&mut self, key: BlobKey) -> Result<bool, Gap> {
        if self.whole.contains(&key) {
            return Ok(true);
        }
        if self.whole.len() >= REMEMBERED_WHOLE {
            self.whole.clear();
        }
        let take = self.unlooked.len().min(LOOKUP_BATCH - 1);
        let mut batch: Vec<BlobKey> = self.unlooked.drain(..take).collect();
        batch.push(key);
        for kind in [
            BlobKind::Tree,
            BlobKind::Content,
            BlobKind::Chunk,
            BlobKind::Sealed,
        ] {
            let ids: Vec<[u8; 32]> = batch
                .iter()
                .filter(|k| k.kind == kind)
                .map(|k| k.id)
                .collect();
            if !ids.is_empty() {
                let found = self.transfer.whole_among(kind, &ids)?;
                self.whole
                    .extend(found.into_iter().map(|id| BlobKey { kind, id }));
            }
        }
        Ok(self.whole.contains(&key))
    }
}

impl Reach for Closure<'_> {
    type Error = Gap;

    fn enter(&mut self, key: BlobKey) -> Result<bool, Gap> {
        if key != self.root {
            if !self.is_whole(key)? {
                return Err(missing(&key.id, kind_name(key.kind)));
            }
            let sent_now =
                key.kind == BlobKind::Tree && self.transfer.is_new_tree(&TreeId(key.id))?;
            if !self.deep && !sent_now {
                return Ok(false);
            }
        }
        Ok(self.seen.insert(key))
    }

    fn load(&mut self, key: BlobKey) -> Result<Option<Vec<u8>>, Gap> {
        match self.transfer.load(key.kind, &key.id)? {
            Some(bytes) => Ok(Some(bytes)),
            None => Err(Gap::Missing(format!("{} is missing", key.short()))),
        }
    }

    fn undecodable(&mut self, _: BlobKey, error: ProtocolError) -> Result<(), Gap> {
        Err(Gap::undecodable(error))
    }

    fn named(&mut self, named: &[BlobKey]) -> Result<(), Gap> {
        self.unlooked.extend(named.iter().copied());
        Ok(())
    }
}
