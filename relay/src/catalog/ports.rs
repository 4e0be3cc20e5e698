//! The catalog as the ports the rules use. SQLite implements them
//! ([`Catalog`](super::Catalog), in `blobs.rs` and `verify.rs`); another
//! catalog (PostgreSQL) is one more implementation, and must pass the same
//! rules tests (`ports/tests.rs`, run against SQLite and an in-memory
//! fake). The rest of the catalog (clients, sets, snapshots, retention,
//! garbage) is still `Catalog`'s own methods: the next ports to draw.

use super::{BlobKind, BlobRow, BlobState, ClientId, Result};

/// Where each client's blobs are, and whether they are whole: what uploads
/// look up, index and reuse.
pub trait BlobIndex {
    /// `client`'s blob with its state (a damaged one too), if stored.
    ///
    /// # Errors
    /// The catalog's errors.
    fn find_blob_state(
        &self,
        client: ClientId,
        kind: BlobKind,
        id: &[u8; 32],
    ) -> Result<Option<(BlobRow, BlobState)>>;

    /// Where `client`'s blob is, if stored and not damaged.
    ///
    /// # Errors
    /// The catalog's errors.
    fn find_blob(
        &self,
        client: ClientId,
        kind: BlobKind,
        id: &[u8; 32],
    ) -> Result<Option<BlobRow>> {
        Ok(self
            .find_blob_state(client, kind, id)?
            .filter(|(_, state)| *state != BlobState::Damaged)
            .map(|(row, _)| row))
    }

    /// Where each of `client`'s blobs `ids` of `kind` is, for those stored
    /// and not damaged (as [`BlobIndex::find_blob`] says of each).
    ///
    /// # Errors
    /// The catalog's errors.
    fn find_blobs(
        &self,
        client: ClientId,
        kind: BlobKind,
        ids: &[[u8; 32]],
    ) -> Result<std::collections::HashMap<[u8; 32], BlobRow>> {
        let mut found = std::collections::HashMap::new();
        for id in ids {
            if let Some(row) = self.find_blob(client, kind, id)? {
                found.insert(*id, row);
            }
        }
        Ok(found)
    }

    /// Records durable blobs, all or none. A blob sent again in place of a
    /// damaged or incomplete one takes its row (whole again: that is how a
    /// backup heals a snapshot); a whole row is kept as it is.
    ///
    /// # Errors
    /// The catalog's errors.
    fn insert_blobs(&mut self, client: ClientId, rows: &[BlobRow]) -> Result<()>;

    /// Which of `client`'s blobs `ids` are stored whole, for an upload that
    /// began at `since_ms` and will name the ones that are: each is stamped
    /// `now_ms` unless stamped since the upload began, so a collection
    /// running beside the upload keeps it (see `crate::gate`).
    ///
    /// # Errors
    /// The catalog's errors.
    fn reuse(
        &mut self,
        client: ClientId,
        kind: BlobKind,
        ids: &[[u8; 32]],
        since_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<bool>>;

    /// Which of `client`'s blobs `ids` of `kind` are stored whole (a
    /// damaged or incomplete one is not): many lookups in one.
    ///
    /// # Errors
    /// The catalog's errors.
    fn whole_among(
        &self,
        client: ClientId,
        kind: BlobKind,
        ids: &[[u8; 32]],
    ) -> Result<std::collections::HashSet<[u8; 32]>> {
        let mut whole = std::collections::HashSet::new();
        for id in ids {
            if let Some((_, BlobState::Whole)) = self.find_blob_state(client, kind, id)? {
                whole.insert(*id);
            }
        }
        Ok(whole)
    }
}

/// What verification found rotten.
pub trait DamageLog {
    /// Marks a blob damaged, if its row is still the one read (same place),
    /// and records why (once per blob until it is healed); true when it
    /// was marked.
    ///
    /// # Errors
    /// The catalog's errors.
    fn mark_damaged(&mut self, client: ClientId, row: &BlobRow, reason: &str) -> Result<bool>;

    /// Whether any blob of `client` is damaged or incomplete.
    ///
    /// # Errors
    /// The catalog's errors.
    fn has_damage(&self, client: ClientId) -> Result<bool>;
}

#[cfg(test)]
mod tests;
