//! Paired clients: looked up by key, name or id, listed, removed, seen.

use super::{ClientId, Result};
use ferry_protocol::keys::PublicKey;
use ferry_protocol::timestamp::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::Catalog;

/// A paired client as the catalog knows it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRecord {
    /// The relay's id for the client.
    pub id: ClientId,
    /// The operator's name for it.
    pub name: String,
    /// Its static key's fingerprint.
    pub fingerprint: String,
    /// The host name the endpoint reported when pairing.
    pub hostname: String,
    /// When it was paired (RFC 3339).
    pub paired_at: String,
    /// The same, ms since the epoch.
    #[serde(skip)]
    pub paired_ms: i64,
    /// When it last opened a session (RFC 3339), if ever.
    pub last_seen_at: Option<String>,
    /// The source address of its last session.
    pub last_address: Option<String>,
    /// Its own bandwidth limit (schedule text), replacing the configured
    /// per-client rate; `None` when it has none.
    pub limit: Option<String>,
    /// Whether a set's first (full) backup may run over the internet.
    pub internet_full_backups: bool,
    /// The largest single file it may back up over the internet.
    pub internet_max_file: Option<u64>,
    /// Its own quota: `None` the relay's default, `Some(None)` unlimited.
    #[serde(skip)]
    pub own_quota: Option<Option<u64>>,
    /// Its static public key.
    #[serde(skip)]
    pub public_key: PublicKey,
    /// How it keeps its data: `sealed` (the relay cannot read it) or `open`.
    pub mode: &'static str,
}

impl PartialEq for ClientRecord {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for ClientRecord {}

const CLIENT_COLUMNS: &str =
    "SELECT id, name, public_key, hostname, created_at, last_seen_at, last_address, rate_limit,
     internet_full_backups, internet_max_file, quota, sealed FROM clients";

pub(super) fn client_where(
    conn: &Connection,
    condition: &str,
    param: impl rusqlite::ToSql,
) -> rusqlite::Result<Option<ClientRecord>> {
    conn.query_row(
        &format!("{CLIENT_COLUMNS} WHERE {condition}"),
        [param],
        client_from_row,
    )
    .optional()
}

fn client_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClientRecord> {
    let key: Vec<u8> = r.get(2)?;
    let public_key = PublicKey::from_slice(&key).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            2,
            rusqlite::types::Type::Blob,
            "bad key length".into(),
        )
    })?;
    Ok(ClientRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        fingerprint: public_key.fingerprint().to_string(),
        hostname: r.get(3)?,
        paired_at: ferry_protocol::units::format_rfc3339(r.get(4)?),
        paired_ms: r.get(4)?,
        last_seen_at: r
            .get::<_, Option<i64>>(5)?
            .map(ferry_protocol::units::format_rfc3339),
        last_address: r.get(6)?,
        limit: r.get(7)?,
        internet_full_backups: r.get(8)?,
        internet_max_file: r.get::<_, Option<i64>>(9)?.map(|n| n as u64),
        own_quota: r
            .get::<_, Option<i64>>(10)?
            .map(|n| u64::try_from(n).ok().filter(|n| *n > 0)),
        public_key,
        mode: if r.get::<_, bool>(11)? {
            "sealed"
        } else {
            "open"
        },
    })
}

/// A client's vault key as kept: (under its passphrase, to the recovery
/// recipient).
pub type KeyWraps = (Option<Vec<u8>>, Option<Vec<u8>>);

impl Catalog {
    /// The newest handshake timestamp accepted per key, as last saved.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn handshake_times(&self) -> Result<Vec<(PublicKey, Timestamp)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT public_key, secs, nanos FROM handshakes")?;
        let rows = stmt.query_map([], |r| {
            let key: Vec<u8> = r.get(0)?;
            let secs: i64 = r.get(1)?;
            let nanos: i64 = r.get(2)?;
            Ok((key, secs, nanos))
        })?;
        let mut times = Vec::new();
        for row in rows {
            let (key, secs, nanos) = row?;
            // A row that does not parse protects nothing; it is skipped.
            if let (Ok(key), Ok(secs), Ok(nanos)) = (
                PublicKey::from_slice(&key),
                u64::try_from(secs),
                u32::try_from(nanos),
            ) {
                times.push((key, Timestamp { secs, nanos }));
            }
        }
        Ok(times)
    }

    /// Saves newer handshake timestamps (an older one never replaces a
    /// newer), in one transaction.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn save_handshake_times(&mut self, times: &[(PublicKey, Timestamp)]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO handshakes (public_key, secs, nanos) VALUES (?1, ?2, ?3)
                 ON CONFLICT (public_key) DO UPDATE SET secs = excluded.secs, nanos = excluded.nanos
                 WHERE excluded.secs > handshakes.secs
                    OR (excluded.secs = handshakes.secs AND excluded.nanos > handshakes.nanos)",
            )?;
            for (key, ts) in times {
                let secs = i64::try_from(ts.secs).unwrap_or(i64::MAX);
                upsert.execute(params![&key.0[..], secs, ts.nanos])?;
            }
        }
        Ok(tx.commit()?)
    }

    /// The active client with this key.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn client_by_key(&self, key: &PublicKey) -> Result<Option<ClientRecord>> {
        Ok(client_where(
            &self.conn,
            "public_key = ?1 AND removed_at IS NULL",
            &key.0[..],
        )?)
    }

    /// The active client with this name.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn client_by_name(&self, name: &str) -> Result<Option<ClientRecord>> {
        Ok(client_where(
            &self.conn,
            "name = ?1 AND removed_at IS NULL",
            name,
        )?)
    }

    /// All active clients, by name.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn list_clients(&self) -> Result<Vec<ClientRecord>> {
        let mut stmt = self.conn.prepare(&format!(
            "{CLIENT_COLUMNS} WHERE removed_at IS NULL ORDER BY name"
        ))?;
        let rows = stmt.query_map([], client_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Keeps `client`'s vault key wrapped under its passphrase (`recovery`
    /// false) or to the recovery recipient (true), replacing the one kept.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_key_wrap(
        &mut self,
        client: ClientId,
        recovery: bool,
        wrapped: &[u8],
        now: i64,
    ) -> Result<()> {
        let column = if recovery { "recovery" } else { "wrapped" };
        self.conn.execute(
            &format!(
                "INSERT INTO key_wraps (client_id, {column}, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (client_id) DO UPDATE SET {column} = excluded.{column}, updated_at = excluded.updated_at"
            ),
            params![client, wrapped, now],
        )?;
        Ok(())
    }

    /// `client`'s wrapped vault keys: under its passphrase, and to the
    /// recovery recipient.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn key_wraps(&self, client: ClientId) -> Result<KeyWraps> {
        Ok(self
            .conn
            .query_row(
                "SELECT wrapped, recovery FROM key_wraps WHERE client_id = ?1",
                [client],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or_default())
    }

    /// Every active client with its key.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn active_client_keys(&self) -> Result<std::collections::HashMap<ClientId, PublicKey>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, public_key FROM clients WHERE removed_at IS NULL")?;
        let rows = stmt.query_map([], |r| {
            let key: Vec<u8> = r.get(1)?;
            let key = <[u8; 32]>::try_from(key.as_slice())
                .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(1, key.len() as i64))?;
            Ok((r.get::<_, ClientId>(0)?, PublicKey(key)))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Revokes a client's key; returns whether an active client had that name.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn remove_client(&mut self, name: &str, now: i64) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE clients SET removed_at = ?2 WHERE name = ?1 AND removed_at IS NULL",
            params![name, now],
        )?;
        Ok(n > 0)
    }

    /// Records a session opening. Skipped (no write, no fsync) when the same
    /// address was recorded less than a minute ago, so a client reconnecting
    /// in a loop does not cost a synchronous disk write per handshake.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn touch_client(&mut self, id: ClientId, address: &str, now: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE clients SET last_seen_at = ?2, last_address = ?3 WHERE id = ?1
             AND (last_seen_at IS NULL OR last_seen_at < ?2 - 60000 OR last_address IS NOT ?3)",
            params![id, now, address],
        )?;
        Ok(())
    }
}
