//! Settings changed on a running relay: bandwidth limits, the internet
//! policy per client, and small key/value settings.

use super::{ClientId, Result};
use std::collections::HashMap;

use super::sql::args;

use super::Catalog;

impl Catalog {
    /// Sets (or with `None` clears) the global limit override.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_global_limit(&mut self, schedule: Option<&str>) -> Result<()> {
        self.set_setting("global_limit", schedule)
    }

    /// The global limit override, if set.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn global_limit(&self) -> Result<Option<String>> {
        self.setting("global_limit")
    }

    /// Sets (or with `None` clears) a relay-wide setting.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_setting(&mut self, key: &str, value: Option<&str>) -> Result<()> {
        match value {
            Some(text) => self.db.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                args![key, text],
            )?,
            None => self
                .db
                .execute("DELETE FROM settings WHERE key = ?1", args![key])?,
        };
        Ok(())
    }

    /// A relay-wide setting, if set.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.db.row(
            "SELECT value FROM settings WHERE key = ?1",
            args![key],
            |r| r.get(0),
        )
    }

    /// Sets (or with `None` clears) a client's own limit; false if no such client.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_client_limit(&mut self, name: &str, schedule: Option<&str>) -> Result<bool> {
        let n = self.db.execute(
            "UPDATE clients SET rate_limit = ?2 WHERE name = ?1 AND removed_at IS NULL",
            args![name, schedule],
        )?;
        Ok(n > 0)
    }

    /// Sets what a client may do over the internet; false if no such client.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_internet_policy(
        &mut self,
        name: &str,
        full_backups: Option<bool>,
        max_file: Option<Option<u64>>,
    ) -> Result<bool> {
        let tx = self.db.write()?;
        let mut found = tx.value::<i64>(
            "SELECT COUNT(*) FROM clients WHERE name = ?1 AND removed_at IS NULL",
            args![name],
        )? > 0;
        if let Some(full) = full_backups {
            found &= tx.execute(
                "UPDATE clients SET internet_full_backups = ?2 WHERE name = ?1 AND removed_at IS NULL",
                args![name, full],
            )? > 0;
        }
        if let Some(max) = max_file {
            found &= tx.execute(
                "UPDATE clients SET internet_max_file = ?2 WHERE name = ?1 AND removed_at IS NULL",
                args![name, max],
            )? > 0;
        }
        tx.commit()?;
        Ok(found)
    }

    /// Every active client's own limit.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn client_limits(&self) -> Result<HashMap<ClientId, String>> {
        let rows = self.db.rows(
            "SELECT id, rate_limit FROM clients WHERE removed_at IS NULL AND rate_limit IS NOT NULL",
            args![],
            |r| Ok((r.get::<ClientId>(0)?, r.get::<String>(1)?)),
        )?;
        Ok(rows.into_iter().collect())
    }
}
