//! The blobs' index rebuilt from the packs' trailers (`ferry-relay
//! catalog rebuild`), into a catalog that holds the rest already (the copy
//! `ferry-relay catalog dump` kept).

use std::collections::{BTreeMap, HashSet};

use ferry_protocol::compress::Codec;

use super::ports::BlobIndex;
use super::sql::args;
use super::{BlobKind, BlobRow, Catalog, ClientId, Result};
use crate::store::trailer::TrailerEntry;

/// What one pack's trailer added to the index.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FromTrailer {
    /// Blobs indexed (a blob already indexed from a newer pack counts
    /// here too, and keeps its row).
    pub indexed: u64,
    /// Entries of no client the catalog knows, or that do not decode.
    pub skipped: u64,
}

impl Catalog {
    /// Every client's id, removed ones too (their snapshots keep their data).
    ///
    /// # Errors
    /// The engine's errors.
    pub fn client_ids(&self) -> Result<HashSet<u64>> {
        Ok(self
            .db
            .rows("SELECT id FROM clients", args![], |r| r.get::<u64>(0))?
            .into_iter()
            .collect())
    }

    /// Indexes the blobs a pack's trailer lists, each for its client of
    /// `clients` (the others are skipped). Call
    /// it with the newest pack first: a pack the collector rewrote may
    /// still be in the store (its grace period), and the newer copy is the
    /// one that stays.
    ///
    /// # Errors
    /// The engine's errors.
    pub fn index_trailer(
        &mut self,
        entries: &[TrailerEntry],
        clients: &HashSet<u64>,
    ) -> Result<FromTrailer> {
        let mut rows: BTreeMap<u64, Vec<BlobRow>> = BTreeMap::new();
        let mut found = FromTrailer::default();
        for entry in entries {
            let label = entry.label;
            let kind = BlobKind::from_code(i64::from(label.kind)).ok();
            let codec = Codec::from_code(label.codec);
            match (kind, codec) {
                (Some(kind), Some(codec)) if clients.contains(&label.client) => {
                    rows.entry(label.client).or_default().push(BlobRow {
                        kind,
                        id: label.id,
                        at: entry.at,
                        codec,
                        copies: label.copies,
                    });
                }
                _ => found.skipped += 1,
            }
        }
        for (client, rows) in rows {
            self.insert_blobs(ClientId(client), &rows)?;
            found.indexed += rows.len() as u64;
        }
        Ok(found)
    }
}
