//! Settings changed on a running relay: bandwidth limits, the internet
//! policy per client, and small key/value settings.

use super::{ClientId, Result};
use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

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
            Some(text) => self.conn.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, text],
            )?,
            None => self
                .conn
                .execute("DELETE FROM settings WHERE key = ?1", [key])?,
        };
        Ok(())
    }

    /// A relay-wide setting, if set.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Sets (or with `None` clears) a client's own limit; false if no such client.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_client_limit(&mut self, name: &str, schedule: Option<&str>) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE clients SET rate_limit = ?2 WHERE name = ?1 AND removed_at IS NULL",
            params![name, schedule],
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
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut found = tx.query_row(
            "SELECT COUNT(*) FROM clients WHERE name = ?1 AND removed_at IS NULL",
            [name],
            |r| r.get::<_, i64>(0),
        )? > 0;
        if let Some(full) = full_backups {
            found &= tx.execute(
                "UPDATE clients SET internet_full_backups = ?2 WHERE name = ?1 AND removed_at IS NULL",
                params![name, full],
            )? > 0;
        }
        if let Some(max) = max_file {
            found &= tx.execute(
                "UPDATE clients SET internet_max_file = ?2 WHERE name = ?1 AND removed_at IS NULL",
                params![name, max.map(|m| m as i64)],
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
        let mut stmt =
            self.conn.prepare("SELECT id, rate_limit FROM clients WHERE removed_at IS NULL AND rate_limit IS NOT NULL")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, ClientId>(0)?, r.get::<_, String>(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
