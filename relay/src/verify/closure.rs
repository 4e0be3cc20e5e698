//! Phase 3 of `verify`: every snapshot's closure walked, damage attributed
//! to the snapshots and paths that reach it, and each tree and content
//! marked incomplete or whole by what lies below it.

use std::collections::{BTreeSet, HashMap};

use anyhow::Result;
use ferry_protocol::compress::decompress;
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::{ContentId, TreeId};
use ferry_protocol::tree::{Content, EntryKind, Tree};

use super::Report;
use crate::catalog::{BlobKind, BlobRow, BlobState, Catalog};
use crate::store::BlobReader;

/// Paths listed per damaged blob, at most.
const PATHS_SHOWN: usize = 10;

/// What verify knows is wrong with one blob.
pub(super) struct Finding {
    pub(super) at: Option<(u32, u64, u32)>,
    pub(super) reason: String,
    pub(super) snapshots: BTreeSet<u64>,
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

pub(super) type Key = (u64, BlobKind, [u8; 32]);

/// Phase 3: the snapshots' closure.
pub(super) struct Walk<'c, 'p> {
    pub(super) catalog: &'c mut Catalog,
    pub(super) store: &'p dyn BlobReader,
    /// Damaged or missing blobs.
    pub(super) found: HashMap<Key, Finding>,
    /// Trees and contents walked, with the damaged blobs under them (none:
    /// everything under them is whole).
    pub(super) below: HashMap<Key, Vec<Key>>,
}

impl Walk<'_, '_> {
    pub(super) fn snapshots(&mut self, report: &mut Report) -> Result<()> {
        let roots = self.catalog.snapshot_roots()?;
        report.snapshots = roots.len() as u64;
        for (client, snapshot, root) in roots {
            let mut reach = Reach {
                snapshot,
                path: String::new(),
            };
            if !self.tree(client, TreeId(root), &mut reach)?.is_empty() {
                report.snapshots_damaged.push(snapshot);
            }
        }
        Ok(())
    }

    /// The damaged blobs under a tree; records the state of each tree and
    /// content it walks (incomplete when something under it is damaged).
    fn tree(&mut self, client: u64, id: TreeId, reach: &mut Reach) -> Result<Vec<Key>> {
        let key = (client, BlobKind::Tree, id.0);
        if let Some(below) = self.seen(&key, reach) {
            return Ok(below);
        }
        let Some((row, state, raw)) = self.load(key, reach)? else {
            return Ok(self.below.get(&key).cloned().unwrap_or_default());
        };
        let tree = match Tree::decode(&id, &raw) {
            Ok(tree) => tree,
            Err(e) => return self.damaged(key, &row, &format!("{e}"), reach),
        };
        let mut below = Vec::new();
        let base = reach.path.clone();
        for entry in tree.entries {
            reach.path = format!("{base}/{}", String::from_utf8_lossy(&entry.name));
            match entry.kind {
                EntryKind::Dir { tree } => below.extend(self.tree(client, tree, reach)?),
                EntryKind::File { content, .. } => {
                    below.extend(self.content(client, content, reach)?);
                }
                _ => {}
            }
        }
        reach.path = base;
        self.settle(key, state, below)
    }

    fn content(&mut self, client: u64, id: ContentId, reach: &mut Reach) -> Result<Vec<Key>> {
        let key = (client, BlobKind::Content, id.0);
        if let Some(below) = self.seen(&key, reach) {
            return Ok(below);
        }
        let Some((row, state, raw)) = self.load(key, reach)? else {
            return Ok(self.below.get(&key).cloned().unwrap_or_default());
        };
        let content = match Content::decode(&id, &raw) {
            Ok(content) => content,
            Err(e) => return self.damaged(key, &row, &format!("{e}"), reach),
        };
        let mut below = Vec::new();
        for chunk in &content.chunks {
            let chunk_key = (client, BlobKind::Chunk, chunk.id.0);
            if let Some(finding) = self.found.get_mut(&chunk_key) {
                finding.reached(reach);
                below.push(chunk_key);
                continue;
            }
            let found = self
                .catalog
                .find_blob_state(client, BlobKind::Chunk, &chunk.id.0)?;
            let reason = match found {
                Some((_, BlobState::Damaged)) => "found damaged by an earlier verify",
                Some(_) => continue,
                None => "no row names it",
            };
            let row = found.map(|(row, _)| row);
            self.record(chunk_key, row.as_ref(), reason.into(), reach);
            below.push(chunk_key);
        }
        for part in content.parts {
            below.extend(self.content(client, part.id, reach)?);
        }
        self.settle(key, state, below)
    }

    /// A tree or content walked before: the damage under it, now reached
    /// from this snapshot too.
    fn seen(&mut self, key: &Key, reach: &Reach) -> Option<Vec<Key>> {
        let below = self.below.get(key)?.clone();
        for damaged in &below {
            if let Some(finding) = self.found.get_mut(damaged) {
                finding.snapshots.insert(reach.snapshot);
            }
        }
        Some(below)
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

    /// A tree's or content's row, state and bytes, or `None` when it is damaged or
    /// missing (recorded). A row a collection moves while it is read is
    /// read again where it went.
    fn load(
        &mut self,
        key: Key,
        reach: &mut Reach,
    ) -> Result<Option<(BlobRow, BlobState, Vec<u8>)>> {
        let (client, kind, id) = key;
        let mut attempts = 0;
        loop {
            let Some((row, state)) = self.catalog.find_blob_state(client, kind, &id)? else {
                self.record(key, None, "no row names it".into(), reach);
                self.below.insert(key, vec![key]);
                return Ok(None);
            };
            if state == BlobState::Damaged {
                let reason = "found damaged by an earlier verify".to_string();
                self.record(key, Some(&row), reason, reach);
                self.below.insert(key, vec![key]);
                return Ok(None);
            }
            let raw = self
                .read(&row)
                .map_err(|e| format!("cannot be read ({e})"))
                .and_then(|stored| {
                    decompress(row.codec, stored, MAX_MESSAGE).map_err(|e| format!("{e}"))
                });
            let reason = match raw {
                Ok(raw) => return Ok(Some((row, state, raw))),
                Err(reason) => reason,
            };
            let moved = self
                .catalog
                .find_blob_state(client, kind, &id)?
                .is_some_and(|(now, _)| now.at != row.at);
            attempts += 1;
            if !moved || attempts >= 3 {
                self.damaged(key, &row, &reason, reach)?;
                return Ok(None);
            }
        }
    }

    /// The stored bytes of a row.
    fn read(&mut self, row: &BlobRow) -> std::io::Result<Vec<u8>> {
        self.store.read(&row.at)
    }

    /// Marks a tree or content whose bytes (read from `row`) are wrong
    /// damaged, and records it, when its row is still where it was read.
    fn damaged(
        &mut self,
        key: Key,
        row: &BlobRow,
        reason: &str,
        reach: &mut Reach,
    ) -> Result<Vec<Key>> {
        if !self.catalog.mark_damaged(key.0, row, reason)? {
            // Moved meanwhile: checked where it went by a later run.
            return Ok(Vec::new());
        }
        self.record(key, Some(row), reason.to_string(), reach);
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

/// Where the walk is: which snapshot, which path.
struct Reach {
    snapshot: u64,
    path: String,
}

impl Finding {
    fn reached(&mut self, reach: &Reach) {
        self.snapshots.insert(reach.snapshot);
        if self.paths.len() < PATHS_SHOWN && !self.paths.contains(&reach.path) {
            self.paths.push(if reach.path.is_empty() {
                "/".into()
            } else {
                reach.path.clone()
            });
        }
    }
}
