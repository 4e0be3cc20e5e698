//! What a suspicious backup (`crate::suspicion`) leaves in the catalog: the
//! snapshot before it held until a time, and an alert waiting to be said
//! (kept in the settings, so a restart between the commit and the alert
//! check still says it).

use super::sql::args;
use super::{Catalog, ClientId, Result, SetId, SnapshotId};
use crate::suspicion::Size;

/// The settings keys of alerts waiting to be said: this, then the
/// suspicious snapshot's id.
const KEY: &str = "suspicious/";

/// A `suspicious` alert waiting to be said.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SuspiciousBackup {
    /// The client's name.
    pub client: String,
    /// The set's name.
    pub set: String,
    /// The suspicious snapshot.
    pub snapshot: u64,
    /// The snapshot held because of it.
    pub held: u64,
    /// Why, with the figures.
    pub message: String,
}

impl Catalog {
    /// The snapshot of `set_id` committed last before `snapshot`, with its size.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn snapshot_before(
        &self,
        set_id: SetId,
        snapshot: SnapshotId,
    ) -> Result<Option<(SnapshotId, Size)>> {
        self.db.row(
            "SELECT id, files, bytes FROM snapshots WHERE set_id = ?1 AND id < ?2
                 ORDER BY id DESC LIMIT 1",
            args![set_id, snapshot],
            |r| {
                Ok((
                    r.get(0)?,
                    Size {
                        files: r.get(1)?,
                        bytes: r.get(2)?,
                    },
                ))
            },
        )
    }

    /// Holds `snapshot` until `until_ms` at least (retention keeps it).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn hold_snapshot(&mut self, snapshot: SnapshotId, until_ms: i64) -> Result<()> {
        self.db.execute(
            "UPDATE snapshots SET held_until = CASE WHEN held_until > ?2 THEN held_until ELSE ?2 END
             WHERE id = ?1",
            args![snapshot, until_ms],
        )?;
        Ok(())
    }

    /// Keeps a `suspicious` alert about `client`'s set `set_id` to be said.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn record_suspicious(
        &mut self,
        client: ClientId,
        set_id: SetId,
        snapshot: SnapshotId,
        held: SnapshotId,
        message: &str,
    ) -> Result<()> {
        let (client_name, set): (String, String) = self
            .db
            .row(
                "SELECT c.name, s.name FROM clients c JOIN backup_sets s ON s.client_id = c.id
             WHERE c.id = ?1 AND s.id = ?2",
                args![client, set_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .ok_or_else(|| super::CatalogError::Value("no such row".into()))?;
        let record = SuspiciousBackup {
            client: client_name,
            set,
            snapshot: snapshot.0,
            held: held.0,
            message: message.to_string(),
        };
        let text = serde_json::to_string(&record).unwrap_or_default();
        self.set_setting(&format!("{KEY}{snapshot}"), Some(&text))
    }

    /// The `suspicious` alerts waiting to be said.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn suspicious_backups(&self) -> Result<Vec<SuspiciousBackup>> {
        let rows = self.db.rows(
            "SELECT value FROM settings WHERE substr(key, 1, CAST(?2 AS INTEGER)) = ?1 ORDER BY key",
            args![KEY, KEY.len() as u64],
            |r| r.get::<String>(0),
        )?;
        let mut found = Vec::new();
        for text in rows {
            if let Ok(record) = serde_json::from_str(&text) {
                found.push(record);
            }
        }
        Ok(found)
    }

    /// Forgets the alert about `snapshot` once it was said.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn said_suspicious(&mut self, snapshot: u64) -> Result<()> {
        self.set_setting(&format!("{KEY}{snapshot}"), None)
    }
}
