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
}
