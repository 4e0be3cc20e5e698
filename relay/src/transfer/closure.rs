//! What a commit must reach: the root, and everything new in this upload
//! names only what the client holds whole (a [`walk`] over them).

use std::collections::HashSet;

use ferry_protocol::ids::{ContentId, TreeId};
use ferry_protocol::tree::ChunkRef;
use ferry_protocol::walk::{walk, Node, Visitor};
use ferry_protocol::ProtocolError;

use super::{Transfer, TransferError};
use crate::catalog::{kind_name, BlobKind};

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
    /// Checks that the root exists and that every tree and content uploaded
    /// in this backup references only what exists. Trees in the catalog
    /// were complete when they were indexed: a tree is indexed only by the
    /// commit that checked it (see `sync`). Once something this client
    /// stored was found damaged, a tree that exists may not be whole below
    /// it, so the whole snapshot is walked instead.
    pub(super) fn check_closure(
        &self,
        root: &TreeId,
        new_trees: &HashSet<TreeId>,
        new_contents: &HashSet<ContentId>,
    ) -> Result<(), Gap> {
        self.require(BlobKind::Tree, &root.0, "root tree")?;
        let client = self.client;
        let deep = self.catalog(|c| c.has_damage(client))?;
        let roots: Vec<Node> = if deep {
            vec![Node::Tree(*root)]
        } else {
            let trees = new_trees.iter().copied().map(Node::Tree);
            trees
                .chain(new_contents.iter().copied().map(Node::Content))
                .collect()
        };
        let mut check = Closure {
            transfer: self,
            deep,
            seen: HashSet::new(),
            root: None,
        };
        for node in roots {
            check.root = Some(node);
            walk(node, &mut check)?;
        }
        Ok(())
    }

    /// Fails naming the blob when the client does not hold it whole.
    fn require(&self, kind: BlobKind, id: &[u8; 32], what: &str) -> Result<(), Gap> {
        if self.has(kind, id)? {
            Ok(())
        } else {
            Err(Gap::Missing(format!(
                "{what} {} is missing",
                crate::catalog::hex(&id[..8])
            )))
        }
    }
}

/// The closure check as a walk: each object it starts from is loaded and
/// what it names required; with `deep`, everything below is walked too.
struct Closure<'t> {
    transfer: &'t Transfer,
    deep: bool,
    seen: HashSet<Node>,
    /// The object the current walk starts from.
    root: Option<Node>,
}

impl Visitor for Closure<'_> {
    type Error = Gap;

    fn enter(&mut self, node: Node, _: &[Vec<u8>]) -> Result<bool, Gap> {
        if Some(node) != self.root {
            let (kind, id) = BlobKind::of(node);
            self.transfer.require(kind, &id, kind_name(kind))?;
            if !self.deep {
                return Ok(false);
            }
        }
        Ok(self.seen.insert(node))
    }

    fn load(&mut self, node: Node, _: &[Vec<u8>]) -> Result<Option<Vec<u8>>, Gap> {
        let (kind, id) = BlobKind::of(node);
        match self.transfer.load(kind, &id)? {
            Some(bytes) => Ok(Some(bytes)),
            None => Err(Gap::Missing(format!(
                "{} {} is missing",
                kind_name(kind),
                crate::catalog::hex(&id[..8])
            ))),
        }
    }

    fn undecodable(&mut self, _: Node, error: ProtocolError, _: &[Vec<u8>]) -> Result<(), Gap> {
        Err(Gap::undecodable(error))
    }

    fn chunk(&mut self, _: ContentId, chunk: &ChunkRef, _: &[Vec<u8>]) -> Result<(), Gap> {
        self.transfer.require(BlobKind::Chunk, &chunk.id.0, "chunk")
    }
}
