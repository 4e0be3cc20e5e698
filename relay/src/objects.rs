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
    let mut stack = vec![root];
    while let Some(key) = stack.pop() {
        if !visitor.enter(key)? || key.kind == BlobKind::Chunk {
            continue;
        }
        let Some(raw) = visitor.load(key)? else {
            continue;
        };
        match references.references(key, &raw) {
            // Reversed, so they come off the stack in order.
            Ok(named) => stack.extend(named.into_iter().rev()),
            Err(e) => visitor.undecodable(key, e)?,
        }
    }
    Ok(())
}
