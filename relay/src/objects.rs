//! The object model the relay's rules run on: blobs named by a
//! [`BlobKey`], and what each object names ([`References`]). The commit's
//! closure and the collector's mark walk references alone, through
//! [`walk`]; how references are read out of an object's bytes is the one
//! thing that depends on the objects being readable. Open mode reads them
//! from the decoded trees and contents ([`crate::plaintext::OpenObjects`],
//! the only place these walks decode plaintext); sealed objects will carry
//! them in a clear header, and the same walks will run over them.
//!
//! `verify`'s snapshot walk still walks the decoded trees: it names the
//! files a damaged blob belongs to, which only a readable tree can give.

use ferry_protocol::sealed::{Header, StorageId};
use ferry_protocol::ProtocolError;

use crate::catalog::{BlobKey, BlobKind};

/// What an object names, read from its (decompressed) bytes.
pub trait References: Send + Sync + std::fmt::Debug {
    /// The blobs the object `key` (its bytes `raw`) names, in order: a
    /// tree its directories' trees and its files' contents, a content its
    /// chunks and then its parts.
    ///
    /// # Errors
    /// The bytes are not the object `key` names: they do not decode, or
    /// they hash to another id.
    fn references(&self, key: BlobKey, raw: &[u8]) -> Result<Vec<BlobKey>, ProtocolError>;
}

/// References read from sealed objects' clear headers: no key, no
/// plaintext. An object whose bytes do not hash to its id names nothing
/// (it is not the object named).
#[derive(Debug, Clone, Copy, Default)]
pub struct SealedObjects;

impl References for SealedObjects {
    fn references(&self, key: BlobKey, raw: &[u8]) -> Result<Vec<BlobKey>, ProtocolError> {
        if !sealed_is_whole(key, raw) {
            return Err(ProtocolError::Crypto("a sealed object's id"));
        }
        let (header, _) = Header::read(raw)?;
        Ok(header
            .refs
            .into_iter()
            .map(|id| BlobKey {
                kind: BlobKind::Sealed,
                id: id.0,
            })
            .collect())
    }
}

/// Whether a sealed object's bytes are the ones its id names.
pub fn sealed_is_whole(key: BlobKey, raw: &[u8]) -> bool {
    StorageId::of(raw).0 == key.id
}

/// What a walk over references does at each blob; see [`walk`].
pub trait Reach {
    /// The error that stops the walk.
    type Error;

    /// Reached `key` (named by an object already walked, or the root).
    /// Returns whether to load it and walk what it names; a chunk names
    /// nothing, so it is never loaded whatever this returns.
    ///
    /// # Errors
    /// Whatever stops the walk.
    fn enter(&mut self, key: BlobKey) -> Result<bool, Self::Error>;

    /// The object's bytes, decompressed, or `None` when they cannot be had
    /// (the visitor recorded why; nothing it names is walked).
    ///
    /// # Errors
    /// Whatever stops the walk.
    fn load(&mut self, key: BlobKey) -> Result<Option<Vec<u8>>, Self::Error>;

    /// The object's bytes are not what its key names.
    ///
    /// # Errors
    /// Whatever stops the walk.
    fn undecodable(&mut self, key: BlobKey, error: ProtocolError) -> Result<(), Self::Error>;

    /// What an object just loaded names, before any of it is entered (so
    /// a visitor may look them up together).
    ///
    /// # Errors
    /// Whatever stops the walk.
    fn named(&mut self, _named: &[BlobKey]) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Walks from `root` over what each object names, depth first and in the
/// order named, with an explicit stack (a hostile object graph nested a
/// million levels deep costs heap, never the call stack).
///
/// # Errors
/// The first error the visitor returns.
pub fn walk<R: Reach>(
    root: BlobKey,
    references: &dyn References,
    visitor: &mut R,
) -> Result<(), R::Error> {
    walk_in(Order::DepthFirst, root, references, visitor)
}

/// Walks as [`walk`] does, but a level at a time: everything an object
/// names is entered after everything named before it, so what a whole
/// level names is known (see [`Reach::named`]) before the first of it is
/// entered. Holds a level's names at once, where the depth-first walk
/// holds a path's.
///
/// # Errors
/// The first error the visitor returns.
pub fn walk_by_level<R: Reach>(
    root: BlobKey,
    references: &dyn References,
    visitor: &mut R,
) -> Result<(), R::Error> {
    walk_in(Order::ByLevel, root, references, visitor)
}

/// Which of the named keys a walk enters next.
#[derive(Clone, Copy, PartialEq)]
enum Order {
    /// The first named by the object loaded last.
    DepthFirst,
    /// The first named of all not yet entered.
    ByLevel,
}

fn walk_in<R: Reach>(
    order: Order,
    root: BlobKey,
    references: &dyn References,
    visitor: &mut R,
) -> Result<(), R::Error> {
    let mut waiting = std::collections::VecDeque::from([root]);
    let next = |waiting: &mut std::collections::VecDeque<BlobKey>| match order {
        Order::DepthFirst => waiting.pop_back(),
        Order::ByLevel => waiting.pop_front(),
    };
    while let Some(key) = next(&mut waiting) {
        if !visitor.enter(key)? || key.kind == BlobKind::Chunk {
            continue;
        }
        let Some(raw) = visitor.load(key)? else {
            continue;
        };
        match references.references(key, &raw) {
            Ok(named) => {
                visitor.named(&named)?;
                match order {
                    // Reversed, so they come off the back in order.
                    Order::DepthFirst => waiting.extend(named.into_iter().rev()),
                    Order::ByLevel => waiting.extend(named),
                }
            }
            Err(e) => visitor.undecodable(key, e)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ferry_protocol::sealed::{seal, SealedKind, SealingKeys, VaultKey};

    use super::*;

    /// Sealed objects by key, and the walk's record: a relay's view.
    #[derive(Default)]
    struct Store {
        objects: HashMap<BlobKey, Vec<u8>>,
        entered: Vec<BlobKey>,
        gaps: Vec<BlobKey>,
    }

    impl Reach for Store {
        type Error = ();

        fn enter(&mut self, key: BlobKey) -> Result<bool, ()> {
            self.entered.push(key);
            Ok(true)
        }

        fn load(&mut self, key: BlobKey) -> Result<Option<Vec<u8>>, ()> {
            Ok(self.objects.get(&key).cloned())
        }

        fn undecodable(&mut self, key: BlobKey, _: ProtocolError) -> Result<(), ()> {
            self.gaps.push(key);
            Ok(())
        }
    }

    fn sealed(
        store: &mut Store,
        keys: &SealingKeys,
        kind: SealedKind,
        refs: &[BlobKey],
        text: &[u8],
    ) -> BlobKey {
        let refs = refs.iter().map(|k| StorageId(k.id)).collect();
        let (id, bytes) = seal(keys, kind, refs, text).unwrap();
        let key = BlobKey {
            kind: BlobKind::Sealed,
            id: id.0,
        };
        store.objects.insert(key, bytes);
        key
    }

    #[test]
    fn a_sealed_snapshot_is_walked_by_its_headers_alone() {
        let keys = SealingKeys::derive(&VaultKey::from_bytes([1; 32]));
        let mut store = Store::default();
        let chunk = sealed(&mut store, &keys, SealedKind::Chunk, &[], b"file data");
        let content = sealed(
            &mut store,
            &keys,
            SealedKind::Content,
            &[chunk],
            b"chunk list",
        );
        let tree = sealed(
            &mut store,
            &keys,
            SealedKind::Tree,
            &[content],
            b"a directory",
        );
        let root = sealed(&mut store, &keys, SealedKind::Root, &[tree], b"snapshot 1");
        walk(root, &SealedObjects, &mut store).unwrap();
        assert_eq!(store.entered, vec![root, tree, content, chunk]);
        assert!(store.gaps.is_empty());
    }

    #[test]
    fn a_walk_by_level_enters_a_level_before_what_it_names() {
        let keys = SealingKeys::derive(&VaultKey::from_bytes([1; 32]));
        let mut store = Store::default();
        let c1 = sealed(&mut store, &keys, SealedKind::Chunk, &[], b"one");
        let c2 = sealed(&mut store, &keys, SealedKind::Chunk, &[], b"two");
        let t1 = sealed(&mut store, &keys, SealedKind::Tree, &[c1], b"first");
        let t2 = sealed(&mut store, &keys, SealedKind::Tree, &[c2], b"second");
        let root = sealed(&mut store, &keys, SealedKind::Root, &[t1, t2], b"root");
        let trees = [t1, t2];
        // Which of the five entered are trees (the root's order of what it
        // names is the seal's).
        let shape = |entered: &[BlobKey]| -> Vec<bool> {
            entered.iter().map(|k| trees.contains(k)).collect()
        };
        walk(root, &SealedObjects, &mut store).unwrap();
        assert_eq!(shape(&store.entered), [false, true, false, true, false]);
        store.entered.clear();
        walk_by_level(root, &SealedObjects, &mut store).unwrap();
        assert_eq!(shape(&store.entered), [false, true, true, false, false]);
        assert_eq!(store.entered.len(), 5);
    }

    #[test]
    fn a_sealed_object_that_is_not_its_id_names_nothing() {
        let keys = SealingKeys::derive(&VaultKey::from_bytes([1; 32]));
        let mut store = Store::default();
        let chunk = sealed(&mut store, &keys, SealedKind::Chunk, &[], b"data");
        let tree = sealed(&mut store, &keys, SealedKind::Tree, &[chunk], b"dir");
        // Rot (or a swap) in the tree: its refs can no longer be trusted.
        store.objects.get_mut(&tree).unwrap()[12] ^= 1;
        walk(tree, &SealedObjects, &mut store).unwrap();
        assert_eq!(store.entered, vec![tree]);
        assert_eq!(store.gaps, vec![tree]);
        assert!(!sealed_is_whole(tree, &store.objects[&tree]));
        assert!(sealed_is_whole(chunk, &store.objects[&chunk]));
    }
}
