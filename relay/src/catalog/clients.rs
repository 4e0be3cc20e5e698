//! Paired clients: looked up by key, name or id, listed, removed, seen.

use super::sql::{args, Db, Row, Value};
use super::{ClientId, Result};
use ferry_protocol::keys::PublicKey;
use ferry_protocol::timestamp::Timestamp;
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
    db: &Db,
    condition: &str,
    param: impl Into<Value>,
) -> Result<Option<ClientRecord>> {
    db.row(
        &format!("{CLIENT_COLUMNS} WHERE {condition}"),
        &[param.into()],
        client_from_row,
    )
}

fn client_from_row(r: &Row) -> Result<ClientRecord> {
    let public_key = PublicKey(r.get(2)?);
    Ok(ClientRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        fingerprint: public_key.fingerprint().to_string(),
        hostname: r.get(3)?,
        paired_at: ferry_protocol::units::format_rfc3339(r.get(4)?),
        paired_ms: r.get(4)?,
        last_seen_at: r
            .get::<Option<i64>>(5)?
            .map(ferry_protocol::units::format_rfc3339),
        last_address: r.get(6)?,
        limit: r.get(7)?,
        internet_full_backups: r.get(8)?,
        internet_max_file: r.get(9)?,
        own_quota: r
            .get::<Option<i64>>(10)?
            .map(|n| u64::try_from(n).ok().filter(|n| *n > 0)),
        public_key,
        mode: if r.get::<bool>(11)? { "sealed" } else { "open" },
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
        let rows = self.db.rows(
            "SELECT public_key, secs, nanos FROM handshakes",
            args![],
            |r| {
                let key: Vec<u8> = r.get(0)?;
                let secs: i64 = r.get(1)?;
                let nanos: i64 = r.get(2)?;
                Ok((key, secs, nanos))
            },
        )?;
        let mut times = Vec::new();
        for (key, secs, nanos) in rows {
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
        let tx = self.db.write()?;
        for (key, ts) in times {
            let secs = i64::try_from(ts.secs).unwrap_or(i64::MAX);
            tx.execute(
                "INSERT INTO handshakes (public_key, secs, nanos) VALUES (?1, ?2, ?3)
                 ON CONFLICT (public_key) DO UPDATE SET secs = excluded.secs, nanos = excluded.nanos
                 WHERE excluded.secs > handshakes.secs
                    OR (excluded.secs = handshakes.secs AND excluded.nanos > handshakes.nanos)",
                args![&key.0, secs, ts.nanos],
            )?;
        }
        tx.commit()
    }

    /// The active client with this key.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn client_by_key(&self, key: &PublicKey) -> Result<Option<ClientRecord>> {
        client_where(&self.db, "public_key = ?1 AND removed_at IS NULL", &key.0)
    }

    /// The active client with this name.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn client_by_name(&self, name: &str) -> Result<Option<ClientRecord>> {
        client_where(&self.db, "name = ?1 AND removed_at IS NULL", name)
    }

    /// All active clients, by name.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn list_clients(&self) -> Result<Vec<ClientRecord>> {
        self.db.rows(
            &format!("{CLIENT_COLUMNS} WHERE removed_at IS NULL ORDER BY name"),
            args![],
            client_from_row,
        )
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
        self.db.execute(
            &format!(
                "INSERT INTO key_wraps (client_id, {column}, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (client_id) DO UPDATE SET {column} = excluded.{column}, updated_at = excluded.updated_at"
            ),
            args![client, wrapped, now],
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
            .db
            .row(
                "SELECT wrapped, recovery FROM key_wraps WHERE client_id = ?1",
                args![client],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .unwrap_or_default())
    }

    /// Every active client with its key.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn active_client_keys(&self) -> Result<std::collections::HashMap<ClientId, PublicKey>> {
        let rows = self.db.rows(
            "SELECT id, public_key FROM clients WHERE removed_at IS NULL",
            args![],
            |r| Ok((r.get::<ClientId>(0)?, PublicKey(r.get(1)?))),
        )?;
        Ok(rows.into_iter().collect())
    }

    /// Revokes a client's key; returns whether an active client had that name.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn remove_client(&mut self, name: &str, now: i64) -> Result<bool> {
        let n = self.db.execute(
            "UPDATE clients SET removed_at = ?2 WHERE name = ?1 AND removed_at IS NULL",
            args![name, now],
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
        self.db.execute(
            "UPDATE clients SET last_seen_at = ?2, last_address = ?3 WHERE id = ?1
             AND (last_seen_at IS NULL OR last_seen_at < ?2 - 60000 OR last_address IS DISTINCT FROM ?3)",
            args![id, now, address],
        )?;
        Ok(())
    }
}
