//! Backup sets: a client's named sets of paths.

use super::{ClientId, Result, SetId};
use rusqlite::{params, OptionalExtension};

/// Backup sets one client may have: each is a catalog row and a retention
/// scope, so a client must not create them without end.
pub const MAX_SETS: i64 = 256;

use super::Catalog;

impl Catalog {
    /// The id of `client`'s backup set `name`, created if new; `None` when
    /// it is new and the client has [`MAX_SETS`] already.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn ensure_set(&mut self, client: ClientId, name: &str) -> Result<Option<SetId>> {
        // Only a name the client does not have yet counts against the cap.
        self.conn.execute(
            "INSERT INTO backup_sets (client_id, name)
             SELECT ?1, ?2 WHERE (SELECT COUNT(*) FROM backup_sets WHERE client_id = ?1) < ?3
             ON CONFLICT DO NOTHING",
            params![client, name, MAX_SETS],
        )?;
        Ok(self
            .conn
            .query_row(
                "SELECT id FROM backup_sets WHERE client_id = ?1 AND name = ?2",
                params![client, name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Removes `client`'s set `name`, retired: its snapshots are forgotten
    /// (their data goes at the next collection), its retention rules and
    /// hints dropped, and the set itself, so no staleness alert follows.
    /// Refused, changing nothing, while it holds protected snapshots.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn remove_set(&mut self, client: ClientId, name: &str) -> Result<SetRemoval> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let id: Option<SetId> = tx
            .query_row(
                "SELECT id FROM backup_sets WHERE client_id = ?1 AND name = ?2",
                params![client, name],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = id else {
            return Ok(SetRemoval::NoSuchSet);
        };
        let protected: i64 = tx.query_row(
            "SELECT COUNT(*) FROM snapshots WHERE set_id = ?1 AND protected = 1",
            [id],
            |r| r.get(0),
        )?;
        if protected > 0 {
            return Ok(SetRemoval::Protected(protected as u64));
        }
        let forgotten = tx.execute("DELETE FROM snapshots WHERE set_id = ?1", [id])?;
        tx.execute(
            "DELETE FROM retention_rules WHERE client_id = ?1 AND set_name = ?2",
            params![client, name],
        )?;
        tx.execute("DELETE FROM backup_sets WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(SetRemoval::Removed {
            snapshots: forgotten as u64,
        })
    }

    /// Every set of every active client with its snapshot count and the end
    /// of its newest snapshot (what the status page, the metrics and the
    /// staleness alerts report), in client then set order.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_summaries(&self) -> Result<Vec<SetSummary>> {
        let mut stmt = self.conn.prepare(
            "SELECT bs.client_id, bs.name, COUNT(s.id), MAX(s.finished_at)
             FROM backup_sets bs
             JOIN clients c ON c.id = bs.client_id AND c.removed_at IS NULL
             LEFT JOIN snapshots s ON s.set_id = bs.id
             GROUP BY bs.id ORDER BY bs.client_id, bs.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SetSummary {
                client: r.get(0)?,
                set: r.get(1)?,
                snapshots: r.get::<_, i64>(2)? as u64,
                last_success_ms: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Bytes each client is charged for (see
    /// [`Catalog::client_stored_bytes`]), in one pass over the blob index.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn stored_bytes_by_client(&self) -> Result<std::collections::HashMap<ClientId, u64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT client_id, SUM(length * copies) FROM blobs GROUP BY client_id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        let mut stored: std::collections::HashMap<ClientId, u64> =
            rows.collect::<rusqlite::Result<_>>()?;
        let mut unindexed = self
            .conn
            .prepare("SELECT id, unindexed_bytes FROM clients WHERE unindexed_bytes > 0")?;
        for row in unindexed.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))? {
            let (client, bytes): (ClientId, u64) = row?;
            *stored.entry(client).or_default() += bytes;
        }
        Ok(stored)
    }
}

/// One backup set as [`Catalog::set_summaries`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSummary {
    /// Its client.
    pub client: ClientId,
    /// Its name.
    pub set: String,
    /// Snapshots it holds.
    pub snapshots: u64,
    /// When its newest snapshot was committed (ms), if it has one.
    pub last_success_ms: Option<i64>,
}

/// What [`Catalog::remove_set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetRemoval {
    /// The set is gone, and this many snapshots with it.
    Removed {
        /// Snapshots forgotten.
        snapshots: u64,
    },
    /// Nothing: the client has no such set.
    NoSuchSet,
    /// Nothing: this many of its snapshots are protected.
    Protected(u64),
}
