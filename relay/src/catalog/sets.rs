//! Backup sets: a client's named sets of paths.

use super::{ClientId, Result, SetId};
use rusqlite::params;

use super::Catalog;

impl Catalog {
    /// The id of `client`'s backup set `name`, created if new.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn ensure_set(&mut self, client: ClientId, name: &str) -> Result<SetId> {
        self.conn.execute(
            "INSERT OR IGNORE INTO backup_sets (client_id, name) VALUES (?1, ?2)",
            params![client, name],
        )?;
        Ok(self.conn.query_row(
            "SELECT id FROM backup_sets WHERE client_id = ?1 AND name = ?2",
            params![client, name],
            |r| r.get(0),
        )?)
    }
}
