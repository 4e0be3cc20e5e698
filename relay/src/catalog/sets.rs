//! Backup sets: a client's named sets of paths.

use super::sql::args;
use super::{ClientId, Result, SetId};

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
        self.db.execute(
            "INSERT INTO backup_sets (client_id, name)
             SELECT ?1, ?2 WHERE (SELECT COUNT(*) FROM backup_sets WHERE client_id = ?1) < ?3
             ON CONFLICT DO NOTHING",
            args![client, name, MAX_SETS],
        )?;
        self.db.row(
            "SELECT id FROM backup_sets WHERE client_id = ?1 AND name = ?2",
            args![client, name],
            |r| r.get(0),
        )
    }

    /// Removes `client`'s set `name`, retired: its snapshots are forgotten
    /// (their data goes at the next collection), its retention rules and
    /// hints dropped, and the set itself, so no staleness alert follows.
    /// Refused, changing nothing, while it holds protected snapshots.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn remove_set(&mut self, client: ClientId, name: &str) -> Result<SetRemoval> {
        let tx = self.db.write()?;
        let id: Option<SetId> = tx.row(
            "SELECT id FROM backup_sets WHERE client_id = ?1 AND name = ?2",
            args![client, name],
            |r| r.get(0),
        )?;
        let Some(id) = id else {
            return Ok(SetRemoval::NoSuchSet);
        };
        let protected: i64 = tx.value(
            "SELECT COUNT(*) FROM snapshots WHERE set_id = ?1 AND protected = 1",
            args![id],
        )?;
        if protected > 0 {
            return Ok(SetRemoval::Protected(protected as u64));
        }
        let forgotten = tx.execute("DELETE FROM snapshots WHERE set_id = ?1", args![id])?;
        tx.execute(
            "DELETE FROM retention_rules WHERE client_id = ?1 AND set_name = ?2",
            args![client, name],
        )?;
        tx.execute("DELETE FROM backup_sets WHERE id = ?1", args![id])?;
        tx.commit()?;
        Ok(SetRemoval::Removed {
            snapshots: forgotten,
        })
    }

    /// Every set of every active client with its snapshot count and the end
    /// of its newest snapshot (what the status page, the metrics and the
    /// staleness alerts report), in client then set order.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_summaries(&self) -> Result<Vec<SetSummary>> {
        let rows = self.db.rows(
            "SELECT bs.client_id, bs.name, COUNT(s.id), MAX(s.finished_at), bs.id
             FROM backup_sets bs
             JOIN clients c ON c.id = bs.client_id AND c.removed_at IS NULL
             LEFT JOIN snapshots s ON s.set_id = bs.id
             GROUP BY bs.id ORDER BY bs.client_id, bs.name",
            args![],
            |r| {
                Ok(SetSummary {
                    client: r.get(0)?,
                    set: r.get(1)?,
                    snapshots: r.get::<i64>(2)? as u64,
                    last_success_ms: r.get(3)?,
                    id: r.get(4)?,
                })
            },
        )?;
        Ok(rows)
    }

    /// Bytes each client is charged for (see
    /// [`Catalog::client_stored_bytes`]), in one pass over the blob index.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn stored_bytes_by_client(&self) -> Result<std::collections::HashMap<ClientId, u64>> {
        let rows = self.db.rows(
            "SELECT client_id, CAST(SUM(length * copies) AS BIGINT) FROM blobs GROUP BY client_id",
            args![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut stored: std::collections::HashMap<ClientId, u64> = rows.into_iter().collect();
        let unindexed = self.db.rows(
            "SELECT id, unindexed_bytes FROM clients WHERE unindexed_bytes > 0",
            args![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for (client, bytes) in unindexed {
            let (client, bytes): (ClientId, u64) = (client, bytes);
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
    /// Its id.
    pub id: SetId,
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
