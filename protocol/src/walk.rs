//! One walk over a snapshot's Merkle tree, for everyone who walks one on
//! the relay: the garbage collector's mark, the commit's closure check and
//! `verify`'s snapshot walk. The walk decodes; the [`Visitor`] decides
//! what to enter, supplies the bytes, and records what it finds.
//!
//! Depth first, entries in tree order, with an explicit stack: a hostile
//! tree nested a million levels deep costs heap, never the call stack.
//! Every node the visitor enters is left once, after all below it
//! (post-order), so a visitor can sum what lies below a node.

use crate::ids::{ContentId, TreeId};
use crate::tree::{ChunkRef, Content, EntryKind, Tree};
use crate::ProtocolError;

/// A tree or a content: what the walk loads and decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// A directory.
    Tree(TreeId),
    /// A file's content, or one part of a large file's content.
    Content(ContentId),
}

/// What a walk does at each step; see [`walk`].
pub trait Visitor {
    /// The error that stops the walk.
    type Error;

    /// Reached `node` at `path` (the entry names from the root; a content
    /// part has its file's path). Returns whether to load it and walk
    /// below it; if so, [`Visitor::leave`] follows once all below is done.
    ///
    /// # Errors
    /// Whatever stops the walk.
    fn enter(&mut self, node: Node, path: &[Vec<u8>]) -> Result<bool, Self::Error>;

    /// The node's bytes, decompressed, or `None` when they cannot be had
    /// (the visitor recorded why; nothing below it is walked).
    ///
    /// # Errors
    /// Whatever stops the walk.
    fn load(&mut self, node: Node, path: &[Vec<u8>]) -> Result<Option<Vec<u8>>, Self::Error>;

    /// The node's bytes do not decode as what it is named for.
    ///
    /// # Errors
    /// Whatever stops the walk.
    fn undecodable(
        &mut self,
        node: Node,
        error: ProtocolError,
        path: &[Vec<u8>],
    ) -> Result<(), Self::Error>;

    /// A chunk of `content`, in order.
    ///
    /// # Errors
    /// Whatever stops the walk.
    fn chunk(
        &mut self,
        content: ContentId,
        chunk: &ChunkRef,
        path: &[Vec<u8>],
    ) -> Result<(), Self::Error> {
        let _ = (content, chunk, path);
        Ok(())
    }

    /// Everything below an entered node was walked.
    ///
    /// # Errors
    /// Whatever stops the walk.
    fn leave(&mut self, node: Node) -> Result<(), Self::Error> {
        let _ = node;
        Ok(())
    }
}

/// A step still to take.
enum Step {
    /// Reach a node, under this entry name (`None`: a content part).
    Reach(Node, Option<Vec<u8>>),
    /// Leave a node, dropping its name from the path if it had one.
    Leave(Node, bool),
}

/// Walks from `root` (at the empty path), as the visitor directs.
///
/// # Errors
/// The first error the visitor returns.
pub fn walk<V: Visitor>(root: Node, visitor: &mut V) -> Result<(), V::Error> {
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut steps = vec![Step::Reach(root, None)];
    while let Some(step) = steps.pop() {
        let (node, name) = match step {
            Step::Leave(node, named) => {
                visitor.leave(node)?;
                if named {
                    path.pop();
                }
                continue;
            }
            Step::Reach(node, name) => (node, name),
        };
        let named = name.is_some();
        path.extend(name);
        if !visitor.enter(node, &path)? {
            if named {
                path.pop();
            }
            continue;
        }
        steps.push(Step::Leave(node, named));
        let Some(bytes) = visitor.load(node, &path)? else {
            continue;
        };
        let below = match node {
            Node::Tree(id) => Tree::decode(&id, &bytes).map(below_tree),
            Node::Content(id) => Content::decode(&id, &bytes).map(|content| {
                (
                    content.chunks,
                    content
                        .parts
                        .iter()
                        .map(|p| Step::Reach(Node::Content(p.id), None))
                        .collect(),
                )
            }),
        };
        let (chunks, children) = match below {
            Ok(below) => below,
            Err(e) => {
                visitor.undecodable(node, e, &path)?;
                continue;
            }
        };
        if let Node::Content(id) = node {
            for chunk in &chunks {
                visitor.chunk(id, chunk, &path)?;
            }
        }
        // Reversed, so they come off the stack in order.
        steps.extend(children.into_iter().rev());
    }
    Ok(())
}

/// A tree's directories and files, as steps (it has no chunks).
fn below_tree(tree: Tree) -> (Vec<ChunkRef>, Vec<Step>) {
    let steps = tree
        .entries
        .into_iter()
        .filter_map(|entry| match entry.kind {
            EntryKind::Dir { tree } => Some(Step::Reach(Node::Tree(tree), Some(entry.name))),
            EntryKind::File { content, .. } => {
                Some(Step::Reach(Node::Content(content), Some(entry.name)))
            }
            _ => None,
        })
        .collect();
    (Vec::new(), steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChunkId;
    use crate::tree::{ContentPart, Entry};
    use std::collections::HashMap;

    /// Objects by node, and what the walk saw.
    #[derive(Default)]
    struct Store {
        objects: HashMap<Node, Vec<u8>>,
        events: Vec<String>,
        skip: Option<Node>,
    }

    fn show(path: &[Vec<u8>]) -> String {
        let names: Vec<String> = path
            .iter()
            .map(|n| String::from_utf8_lossy(n).into())
            .collect();
        format!("/{}", names.join("/"))
    }

    impl Visitor for Store {
        type Error = String;
        fn enter(&mut self, node: Node, path: &[Vec<u8>]) -> Result<bool, String> {
            self.events.push(format!("enter {}", show(path)));
            Ok(Some(node) != self.skip)
        }
        fn load(&mut self, node: Node, _: &[Vec<u8>]) -> Result<Option<Vec<u8>>, String> {
            Ok(self.objects.get(&node).cloned())
        }
        fn undecodable(
            &mut self,
            _: Node,
            e: ProtocolError,
            path: &[Vec<u8>],
        ) -> Result<(), String> {
            self.events.push(format!("undecodable {}: {e}", show(path)));
            Ok(())
        }
        fn chunk(
            &mut self,
            _: ContentId,
            chunk: &ChunkRef,
            path: &[Vec<u8>],
        ) -> Result<(), String> {
            self.events
                .push(format!("chunk {} at {}", chunk.len, show(path)));
            Ok(())
        }
        fn leave(&mut self, _: Node) -> Result<(), String> {
            self.events.push("leave".into());
            Ok(())
        }
    }

    fn content(store: &mut Store, lens: &[u32]) -> ContentId {
        let chunks = lens
            .iter()
            .map(|&len| ChunkRef {
                id: ChunkId::of(&len.to_le_bytes()),
                len,
            })
            .collect();
        let (id, bytes) = Content {
            chunks,
            parts: Vec::new(),
        }
        .encode();
        store.objects.insert(Node::Content(id), bytes);
        id
    }

    fn tree(store: &mut Store, entries: Vec<(&str, EntryKind)>) -> TreeId {
        let entries = entries
            .into_iter()
            .map(|(name, kind)| Entry {
                name: name.as_bytes().to_vec(),
                kind,
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime_ns: 0,
                xattrs: Vec::new(),
            })
            .collect();
        let (id, bytes) = Tree { entries }.encode().unwrap();
        store.objects.insert(Node::Tree(id), bytes);
        id
    }

    fn file(content: ContentId) -> EntryKind {
        EntryKind::File {
            content,
            size: 0,
            sparse: None,
        }
    }

    #[test]
    fn walks_in_tree_order_with_paths_and_leaves_after_all_below() {
        let mut store = Store::default();
        let a = content(&mut store, &[1, 2]);
        let part = content(&mut store, &[3]);
        let (big, bytes) = Content {
            chunks: Vec::new(),
            parts: vec![ContentPart { id: part, len: 3 }],
        }
        .encode();
        store.objects.insert(Node::Content(big), bytes);
        let sub = tree(&mut store, vec![("big", file(big))]);
        let root = tree(
            &mut store,
            vec![("a", file(a)), ("sub", EntryKind::Dir { tree: sub })],
        );
        walk(Node::Tree(root), &mut store).unwrap();
        assert_eq!(
            store.events,
            [
                "enter /",
                "enter /a",
                "chunk 1 at /a",
                "chunk 2 at /a",
                "leave",
                "enter /sub",
                "enter /sub/big",
                "enter /sub/big",
                "chunk 3 at /sub/big",
                "leave",
                "leave",
                "leave",
                "leave",
            ]
        );
    }

    #[test]
    fn a_node_not_entered_or_missing_or_undecodable_has_nothing_walked_below() {
        let mut store = Store::default();
        let a = content(&mut store, &[1]);
        let b = content(&mut store, &[2]);
        let garbled = ContentId([9; 32]);
        store.objects.insert(Node::Content(garbled), vec![0xff; 3]);
        let root = tree(
            &mut store,
            vec![
                ("a", file(a)),
                ("b", file(b)),
                ("c", file(ContentId([7; 32]))),
                ("d", file(garbled)),
            ],
        );
        store.skip = Some(Node::Content(a));
        walk(Node::Tree(root), &mut store).unwrap();
        let events = store.events.join("; ");
        assert!(!events.contains("chunk 1"), "{events}");
        assert!(events.contains("chunk 2 at /b"), "{events}");
        assert!(events.contains("enter /c; leave"), "{events}");
        assert!(events.contains("undecodable /d"), "{events}");
    }

    /// Counts what it is shown, looking at nothing else.
    struct Counter<'s> {
        objects: &'s HashMap<Node, Vec<u8>>,
        entered: usize,
        deepest: usize,
    }

    impl Visitor for Counter<'_> {
        type Error = String;
        fn enter(&mut self, _: Node, path: &[Vec<u8>]) -> Result<bool, String> {
            self.entered += 1;
            self.deepest = self.deepest.max(path.len());
            Ok(true)
        }
        fn load(&mut self, node: Node, _: &[Vec<u8>]) -> Result<Option<Vec<u8>>, String> {
            Ok(self.objects.get(&node).cloned())
        }
        fn undecodable(&mut self, _: Node, e: ProtocolError, _: &[Vec<u8>]) -> Result<(), String> {
            Err(e.to_string())
        }
    }

    #[test]
    fn a_very_deep_tree_does_not_overflow_the_stack() {
        let mut store = Store::default();
        let mut below = tree(&mut store, Vec::new());
        for _ in 0..100_000 {
            below = tree(&mut store, vec![("d", EntryKind::Dir { tree: below })]);
        }
        let mut counter = Counter {
            objects: &store.objects,
            entered: 0,
            deepest: 0,
        };
        walk(Node::Tree(below), &mut counter).unwrap();
        assert_eq!((counter.entered, counter.deepest), (100_001, 100_000));
    }
}
