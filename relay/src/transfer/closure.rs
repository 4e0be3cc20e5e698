//! What a commit must reach: the root, and everything new in this upload
//! names only what the client holds whole.

use std::collections::HashSet;

use ferry_protocol::ids::{ContentId, TreeId};
use ferry_protocol::tree::{Content, EntryKind, Tree};
use ferry_protocol::ProtocolError;

use super::{Transfer, TransferError};
use crate::catalog::BlobKind;

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
    /// it, so the whole snapshot is checked instead.
    pub(super) fn check_closure(
        &self,
        root: &TreeId,
        new_trees: &HashSet<TreeId>,
        new_contents: &HashSet<ContentId>,
    ) -> Result<(), Gap> {
        self.require(BlobKind::Tree, &root.0, "root tree")?;
        let client = self.client;
        if self.catalog(|c| c.has_damage(client))? {
            let contents = self.check_trees(vec![*root], true)?;
            return self.check_contents(contents.into_iter().collect(), true);
        }
        self.check_trees(new_trees.iter().copied().collect(), false)?;
        self.check_contents(new_contents.iter().copied().collect(), false)
    }

    /// Checks that what each tree names exists; with `descend`, walks into
    /// the subtrees too and returns every content reached.
    fn check_trees(
        &self,
        mut trees: Vec<TreeId>,
        descend: bool,
    ) -> Result<HashSet<ContentId>, Gap> {
        let mut seen = HashSet::new();
        let mut contents = HashSet::new();
        while let Some(tree) = trees.pop() {
            if !seen.insert(tree) {
                continue;
            }
            let raw = self
                .load(BlobKind::Tree, &tree.0)?
                .ok_or_else(|| Gap::Missing(format!("tree {} is missing", tree.short())))?;
            for entry in Tree::decode(&tree, &raw).map_err(Gap::undecodable)?.entries {
                match entry.kind {
                    EntryKind::Dir { tree } => {
                        self.require(BlobKind::Tree, &tree.0, "tree")?;
                        if descend {
                            trees.push(tree);
                        }
                    }
                    EntryKind::File { content, .. } => {
                        self.require(BlobKind::Content, &content.0, "content")?;
                        if descend {
                            contents.insert(content);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(contents)
    }

    /// Checks the chunks (and parts) of `contents`; with `deep`, the chunks
    /// of the parts too.
    fn check_contents(&self, mut contents: Vec<ContentId>, deep: bool) -> Result<(), Gap> {
        while let Some(content_id) = contents.pop() {
            let raw = self
                .load(BlobKind::Content, &content_id.0)?
                .ok_or_else(|| {
                    Gap::Missing(format!("content {} is missing", content_id.short()))
                })?;
            let content = Content::decode(&content_id, &raw).map_err(Gap::undecodable)?;
            for chunk in &content.chunks {
                self.require(BlobKind::Chunk, &chunk.id.0, "chunk")?;
            }
            for part in &content.parts {
                self.require(BlobKind::Content, &part.id.0, "content part")?;
                if deep {
                    contents.push(part.id);
                }
            }
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
