//! Phase 3 of `verify`: every snapshot's closure walked, damage attributed
//! to the snapshots and paths that reach it, and each tree and content
//! marked incomplete or whole by what lies below it.

use crate::catalog::ClientId;
use crate::catalog::{BlobIndex, DamageLog};
use std::collections::{BTreeSet, HashMap};

use anyhow::Result;
use ferry_protocol::compress::decompress;
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::{ContentId, TreeId};
use ferry_protocol::tree::ChunkRef;
use ferry_protocol::walk::{walk, Node, Visitor};
use ferry_protocol::ProtocolError;

use super::Report;
use crate::catalog::{BlobKey, BlobKind, BlobRow, BlobState, Catalog, SnapshotId};
use crate::store::BlobReader;
use crate::stored_objects::StoredObjects;

/// Paths listed per damaged blob, at most.
const PATHS_SHOWN: usize = 10;

/// What verify knows is wrong with one blob.
pub(super) struct Finding {
    pub(super) at: Option<(crate::store::PackId, u64, u32)>,
    pub(super) reason: String,
    pub(super) snapshots: BTreeSet<SnapshotId>,
    pub(super) paths: Vec<String>,
}

impl Finding {
    pub(super) fn new(row: Option<&BlobRow>, reason: String) -> Self {
        Finding {
            at: row.map(|r| (r.at.pack, r.at.offset, r.at.len)),
            reason,
            snapshots: BTreeSet::new(),
            paths: Vec::new(),
        }
    }
}

pub(super) type Key = (ClientId, BlobKind, [u8; 32]);

/// Phase 3: the snapshots' closure, as a [`walk`] over each.
pub(super) struct Walk<'c, 'p> {
    pub(super) catalog: &'c mut Catalog,
    pub(super) store: &'p dyn BlobReader,
    /// Damaged or missing blobs.
    pub(super) found: HashMap<Key, Finding>,
    /// Trees and contents walked, with the damaged blobs under them (none:
    /// everything under them is whole).
    pub(super) below: HashMap<Key, Vec<Key>>,
    /// The snapshot being walked, and its client.
    snapshot: SnapshotId,
    client: ClientId,
    /// The trees and contents entered and not yet left, innermost last.
    open: Vec<Open>,
    /// The damage below the snapshot's root.
    reached: Vec<Key>,
}

/// A tree or content being walked.
struct Open {
    key: Key,
    /// Its state, once loaded.
    state: BlobState,
    /// The damaged blobs found below it so far.
    below: Vec<Key>,
    /// When it could not be read or decoded: the damage it is, instead of
    /// what lies below.
    unread: Option<Vec<Key>>,
}

impl<'c, 'p> Walk<'c, 'p> {
    /// A walk that records into `found` (what phase 2 found already).
    pub(super) fn new(
        catalog: &'c mut Catalog,
        store: &'p dyn BlobReader,
        found: HashMap<Key, Finding>,
    ) -> Self {
        Walk {
            catalog,
            store,
            found,
            below: HashMap::new(),
            snapshot: SnapshotId(0),
            client: ClientId(0),
            open: Vec::new(),
            reached: Vec::new(),
        }
    }

    pub(super) fn snapshots(&mut self, report: &mut Report) -> Result<()> {
        let roots = self.catalog.snapshot_roots()?;
        report.snapshots = roots.len() as u64;
        for (client, snapshot, root) in roots {
            (self.client, self.snapshot) = (client, snapshot);
            match root.kind {
                BlobKind::Sealed => {
                    let mut sealed = SealedWalk { walk: self };
                    crate::objects::walk(root, &StoredObjects, &mut sealed)?;
                }
                _ => walk(Node::Tree(TreeId(root.id)), self)?,
            }
            if !std::mem::take(&mut self.reached).is_empty() {
                report.snapshots_damaged.push(snapshot);
            }
        }
        Ok(())
    }

    fn key(&self, node: Node) -> Key {
        let (kind, id) = BlobKind::of(node);
        (self.client, kind, id)
    }

    fn reach(&self, path: &[Vec<u8>]) -> Reach {
        let names: Vec<String> = path
            .iter()
            .map(|n| ferry_protocol::units::printable(n))
            .collect();
        Reach {
            snapshot: self.snapshot,
            path: format!("/{}", names.join("/")),
        }
    }

    /// Adds damage to what lies below the innermost open node (or the root).
    fn add_below(&mut self, keys: &[Key]) {
        match self.open.last_mut() {
            Some(open) => open.below.extend_from_slice(keys),
            None => self.reached.extend_from_slice(keys),
        }
    }

    /// The innermost open node could not be read or decoded: it is `damage`.
    fn unread(&mut self, damage: Vec<Key>) {
        if let Some(open) = self.open.last_mut() {
            open.unread = Some(damage);
        }
    }

    /// Records what lies below a tree or content, and its state when that
    /// changes (incomplete with damage below, whole again without).
    fn settle(&mut self, key: Key, state: BlobState, mut below: Vec<Key>) -> Result<Vec<Key>> {
        below.sort_unstable_by_key(|k| (k.1 as u8, k.2));
        below.dedup();
        let clean = below.is_empty();
        if clean == (state == BlobState::Incomplete) {
            self.catalog.set_complete(key.0, key.1, &key.2, clean)?;
        }
        self.below.insert(key, below.clone());
        Ok(below)
    }

    /// A missing or known-damaged blob, recorded as reached here.
    fn lacking(&mut self, key: Key, row: Option<&BlobRow>, reason: &str, path: &[Vec<u8>]) {
        let reach = self.reach(path);
        self.record(key, row, reason.into(), &reach);
        self.below.insert(key, vec![key]);
    }

    /// Marks a tree or content whose bytes (read from `row`) are wrong
    /// damaged, and records it, when its row is still where it was read.
    fn damaged(
        &mut self,
        key: Key,
        row: &BlobRow,
        reason: &str,
        path: &[Vec<u8>],
    ) -> Result<Vec<Key>> {
        if !self.catalog.mark_damaged(key.0, row, reason)? {
            // Moved meanwhile: checked where it went by a later run.
            return Ok(Vec::new());
        }
        let reach = self.reach(path);
        self.record(key, Some(row), reason.to_string(), &reach);
        self.below.insert(key, vec![key]);
        Ok(vec![key])
    }

    fn record(&mut self, key: Key, row: Option<&BlobRow>, reason: String, reach: &Reach) {
        self.found
            .entry(key)
            .or_insert_with(|| Finding::new(row, reason))
            .reached(reach);
    }
}

impl Visitor for Walk<'_, '_> {
    type Error = anyhow::Error;

    /// A node walked before adds the damage under it, now reached from
    /// this snapshot too; a new one is opened.
    fn enter(&mut self, node: Node, _: &[Vec<u8>]) -> Result<bool> {
        let key = self.key(node);
        if let Some(below) = self.below.get(&key).cloned() {
            for damaged in &below {
                if let Some(finding) = self.found.get_mut(damaged) {
                    finding.snapshots.insert(self.snapshot);
                }
            }
            self.add_below(&below);
            return Ok(false);
        }
        self.open.push(Open {
            key,
            state: BlobState::Whole,
            below: Vec::new(),
            unread: None,
        });
        Ok(true)
    }

    /// The bytes, or `None` when the blob is missing or damaged (recorded).
    /// A row a collection moves while it is read is read again where it went.
    fn load(&mut self, node: Node, path: &[Vec<u8>]) -> Result<Option<Vec<u8>>> {
        let key = self.key(node);
        let (client, kind, id) = key;
        let mut attempts = 0;
        loop {
            let Some((row, state)) = self.catalog.find_blob_state(client, kind, &id)? else {
                self.lacking(key, None, "no row names it", path);
                self.unread(vec![key]);
                return Ok(None);
            };
            if state == BlobState::Damaged {
                self.lacking(key, Some(&row), "found damaged by an earlier verify", path);
                self.unread(vec![key]);
                return Ok(None);
            }
            let raw = self
                .store
                .read(&row.at)
                .map_err(|e| format!("cannot be read ({e})"))
                .and_then(|stored| {
                    decompress(row.codec, stored, MAX_MESSAGE).map_err(|e| format!("{e}"))
                });
            let reason = match raw {
                Ok(raw) => {
                    if let Some(open) = self.open.last_mut() {
                        open.state = state;
                    }
                    return Ok(Some(raw));
                }
                Err(reason) => reason,
            };
            let moved = self
                .catalog
                .find_blob_state(client, kind, &id)?
                .is_some_and(|(now, _)| now.at != row.at);
            attempts += 1;
            if !moved || attempts >= 3 {
                let damage = self.damaged(key, &row, &reason, path)?;
                self.unread(damage);
                return Ok(None);
            }
        }
    }

    fn undecodable(&mut self, node: Node, error: ProtocolError, path: &[Vec<u8>]) -> Result<()> {
        let key = self.key(node);
        let (client, kind, id) = key;
        let damage = match self.catalog.find_blob_state(client, kind, &id)? {
            Some((row, _)) => self.damaged(key, &row, &error.to_string(), path)?,
            None => Vec::new(),
        };
        self.unread(damage);
        Ok(())
    }

    /// A chunk that is missing or found damaged is damage below its content.
    fn chunk(&mut self, _: ContentId, chunk: &ChunkRef, path: &[Vec<u8>]) -> Result<()> {
        let chunk_key = (self.client, BlobKind::Chunk, chunk.id.0);
        if self.found.contains_key(&chunk_key) {
            let reach = self.reach(path);
            if let Some(finding) = self.found.get_mut(&chunk_key) {
                finding.reached(&reach);
            }
            self.add_below(&[chunk_key]);
            return Ok(());
        }
        let found = self
            .catalog
            .find_blob_state(self.client, BlobKind::Chunk, &chunk.id.0)?;
        let reason = match found {
            Some((_, BlobState::Damaged)) => "found damaged by an earlier verify",
            Some(_) => return Ok(()),
            None => "no row names it",
        };
        let row = found.map(|(row, _)| row);
        let reach = self.reach(path);
        self.record(chunk_key, row.as_ref(), reason.into(), &reach);
        self.add_below(&[chunk_key]);
        Ok(())
    }

    /// What lies below a node settles its state, and counts for its parent.
    fn leave(&mut self, _: Node) -> Result<()> {
        let Some(open) = self.open.pop() else {
            return Ok(());
        };
        let below = match open.unread {
            Some(damage) => damage,
            None => self.settle(open.key, open.state, open.below)?,
        };
        self.add_below(&below);
        Ok(())
    }
}

/// A sealed snapshot's closure: what its objects' headers name, every
/// object loaded once per verify (names and paths are the endpoint's
/// secret: damage is reported by snapshot alone). Each object is walked
/// once per verify: a damaged blob is attributed to the snapshots that
/// reach it first or directly, not yet to later snapshots that reach it
/// only through an object an earlier one walked (their commits still
/// walk deep once the client has damage, so healing does not depend on it).
struct SealedWalk<'w, 'c, 'p> {
    walk: &'w mut Walk<'c, 'p>,
}

impl crate::objects::Reach for SealedWalk<'_, '_, '_> {
    type Error = anyhow::Error;

    fn enter(&mut self, key: BlobKey) -> Result<bool> {
        let key = (self.walk.client, key.kind, key.id);
        if let Some(finding) = self.walk.found.get_mut(&key) {
            finding.snapshots.insert(self.walk.snapshot);
            self.walk.reached.push(key);
            return Ok(false);
        }
        // Walked for an earlier snapshot: its damage (none, or recorded
        // above) is known.
        Ok(self.walk.below.insert(key, Vec::new()).is_none())
    }

    fn load(&mut self, key: BlobKey) -> Result<Option<Vec<u8>>> {
        let node = (self.walk.client, key.kind, key.id);
        let found = self.walk.catalog.find_blob_state(node.0, node.1, &node.2)?;
        let raw = match &found {
            Some((row, BlobState::Whole | BlobState::Incomplete)) => self
                .walk
                .store
                .read(&row.at)
                .ok()
                .and_then(|stored| decompress(row.codec, stored, MAX_MESSAGE).ok()),
            _ => None,
        };
        if raw.is_none() {
            let reason = match &found {
                None => "no row names it",
                Some((_, BlobState::Damaged)) => "found damaged by an earlier verify",
                Some(_) => "cannot be read",
            };
            self.walk
                .lacking(node, found.as_ref().map(|(row, _)| row), reason, &[]);
            self.walk.reached.push(node);
        }
        Ok(raw)
    }

    fn undecodable(&mut self, key: BlobKey, error: ProtocolError) -> Result<()> {
        let node = (self.walk.client, key.kind, key.id);
        if let Some((row, _)) = self.walk.catalog.find_blob_state(node.0, node.1, &node.2)? {
            self.walk.damaged(node, &row, &error.to_string(), &[])?;
            self.walk.reached.push(node);
        }
        Ok(())
    }
}

/// Where the walk is: which snapshot, which path.
struct Reach {
    snapshot: SnapshotId,
    path: String,
}

impl Finding {
    fn reached(&mut self, reach: &Reach) {
        self.snapshots.insert(reach.snapshot);
        if self.paths.len() < PATHS_SHOWN && !self.paths.contains(&reach.path) {
            self.paths.push(reach.path.clone());
        }
    }
}
