//! What a commit must reach: the root, and every tree this upload sent
//! names only what the client holds whole (a [`walk`] from the root).

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
    /// Checks that the root exists and that every tree this upload sent,
    /// walked down from the root, names only what the client holds whole.
    /// A tree in the catalog was complete when it was indexed (a tree is
    /// indexed only by the commit that checked it), and a content in the
    /// catalog has its chunks and parts (it is indexed only once they are,
    /// see `sync`): the walk does not go below either. Once something this
    /// client stored was found damaged, an object that exists may not be
    /// whole below it, so the whole snapshot is walked instead.
    pub(super) fn check_closure(&self, root: &TreeId) -> Result<(), Gap> {
        self.require(BlobKind::Tree, &root.0, "root tree")?;
        let client = self.client;
        let deep = self.catalog(|c| c.has_damage(client))?;
        let root = Node::Tree(*root);
        let mut check = Closure {
            transfer: self,
            deep,
            seen: HashSet::new(),
            root,
        };
        walk(root, &mut check)
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

/// The closure check as a walk from the root: what each tree of this
/// upload names is required, and only those trees are walked below; with
/// `deep`, everything is.
struct Closure<'t> {
    transfer: &'t Transfer,
    deep: bool,
    seen: HashSet<Node>,
    root: Node,
}

impl Visitor for Closure<'_> {
    type Error = Gap;

    fn enter(&mut self, node: Node, _: &[Vec<u8>]) -> Result<bool, Gap> {
        if node != self.root {
            let (kind, id) = BlobKind::of(node);
            self.transfer.require(kind, &id, kind_name(kind))?;
            let sent_now = matches!(node, Node::Tree(tree) if self.transfer.is_new_tree(&tree)?);
            if !self.deep && !sent_now {
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
