//! The relay's catalog: `DATA/catalog.sqlite`.
//!
//! SQLite in WAL mode with `synchronous=FULL`, so a commit that was
//! acknowledged survives power loss. The schema is versioned with
//! `PRAGMA user_version` and migrated forward in one transaction per step.
//! Several processes share the file (the server and the admin commands);
//! each write is one short `BEGIN IMMEDIATE` transaction and readers wait on
//! a busy timeout. The server watches `PRAGMA data_version` to notice the
//! admin commands' changes (a removed client) within a poll interval.
//!
//! Every query about clients is by id, key or name of one client, never a
//! join across clients: isolation starts here.

use std::path::Path;
use std::time::Duration;

use ferry_protocol::keys::PublicKey;
use ferry_protocol::pairing::PairingCode;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

/// Failed attempts after which a pairing code is burned.
pub const MAX_PAIRING_FAILURES: u32 = 3;

const MIGRATIONS: &[&str] = &[
    // 1: clients and pairings.
    "CREATE TABLE clients (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        public_key BLOB NOT NULL,
        hostname TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        removed_at INTEGER,
        last_seen_at INTEGER,
        last_address TEXT
    );
    CREATE UNIQUE INDEX clients_active_name ON clients(name) WHERE removed_at IS NULL;
    CREATE UNIQUE INDEX clients_active_key ON clients(public_key) WHERE removed_at IS NULL;
    CREATE TABLE pairings (
        id INTEGER PRIMARY KEY,
        nameplate INTEGER NOT NULL,
        secret TEXT NOT NULL,
        client_name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL CHECK (state IN ('pending', 'used', 'burned', 'expired')),
        client_id INTEGER REFERENCES clients(id)
    );
    CREATE UNIQUE INDEX pairings_pending_nameplate ON pairings(nameplate) WHERE state = 'pending';",
];

/// A paired client as the catalog knows it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRecord {
    /// The relay's id for the client.
    pub id: u64,
    /// The operator's name for it.
    pub name: String,
    /// Its static key's fingerprint.
    pub fingerprint: String,
    /// The host name the endpoint reported when pairing.
    pub hostname: String,
    /// When it was paired (RFC 3339).
    pub paired_at: String,
    /// When it last opened a session (RFC 3339), if ever.
    pub last_seen_at: Option<String>,
    /// The source address of its last session.
    pub last_address: Option<String>,
    /// Its static public key.
    #[serde(skip)]
    pub public_key: PublicKey,
}

/// A pending pairing found by nameplate.
#[derive(Debug)]
pub struct PendingPairing {
    /// Row id.
    pub id: i64,
    /// The full code.
    pub code: PairingCode,
    /// The client name the operator chose.
    pub client_name: String,
}

/// What a nameplate leads to.
#[derive(Debug)]
pub enum PairingLookup {
    /// A live code.
    Pending(PendingPairing),
    /// The newest code with this nameplate has expired.
    Expired,
    /// The newest code with this nameplate was burned by wrong attempts.
    Burned,
    /// The newest code with this nameplate has been used.
    Used,
    /// No code has this nameplate.
    Unknown,
}

/// The state of one pairing, for `ferry-relay pair` waiting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairingState {
    /// Still waiting for the endpoint.
    Pending,
    /// Used by the client with this record.
    Used(Box<ClientRecord>),
    /// Burned by wrong attempts.
    Burned,
    /// Expired unused.
    Expired,
}

impl PartialEq for ClientRecord {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for ClientRecord {}

/// Outcome of completing a pairing.
#[derive(Debug)]
pub enum PairOutcome {
    /// The client was created.
    Paired(ClientRecord),
    /// The code stopped being valid meanwhile (expired, burned or used).
    NoLongerValid,
    /// This key already belongs to an active client of that name.
    KeyAlreadyPaired(String),
    /// Another active client took the name meanwhile.
    NameTaken,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One connection to the catalog.
#[derive(Debug)]
pub struct Catalog {
    conn: Connection,
}

impl Catalog {
    /// Opens (creating if needed) and migrates the catalog at `path`.
    ///
    /// # Errors
    /// SQLite errors, e.g. a file that is not a database.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let mut catalog = Catalog { conn };
        catalog.migrate()?;
        Ok(catalog)
    }

    fn migrate(&mut self) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(step)?;
            tx.pragma_update(None, "user_version", i + 1)?;
        }
        tx.commit()
    }

    /// The schema version after migration.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn schema_version(&self) -> rusqlite::Result<usize> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))
    }

    /// Changes whenever another connection commits; cheap to poll.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn data_version(&self) -> rusqlite::Result<i64> {
        self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))
    }

    /// Registers a pending pairing for `client_name`, valid until `expires_ms`.
    /// A pending code for the same name is replaced. Returns its id and code.
    ///
    /// # Errors
    /// `Ok(Err(message))` when the name is taken by an active client or every
    /// nameplate is in use; SQLite errors otherwise.
    pub fn create_pairing(
        &mut self,
        client_name: &str,
        now: i64,
        expires_ms: i64,
        random: u32,
    ) -> rusqlite::Result<Result<(i64, PairingCode), String>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let taken: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM clients WHERE name = ?1 AND removed_at IS NULL)",
            [client_name],
            |r| r.get(0),
        )?;
        if taken {
            return Ok(Err(format!(
                "a client named {client_name:?} is already paired; remove it first with `ferry-relay clients remove {client_name}`"
            )));
        }
        tx.execute(
            "UPDATE pairings SET state = 'expired' WHERE state = 'pending' AND (expires_at <= ?1 OR client_name = ?2)",
            params![now, client_name],
        )?;
        let used: Vec<u32> = tx
            .prepare("SELECT nameplate FROM pairings WHERE state = 'pending'")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let Some(nameplate) =
            (1..=ferry_protocol::pairing::MAX_NAMEPLATE).find(|n| !used.contains(n))
        else {
            return Ok(Err(
                "too many pending pairings; wait for some to expire".into()
            ));
        };
        let code = PairingCode::new(nameplate, random).expect("nameplate in range");
        tx.execute(
            "INSERT INTO pairings (nameplate, secret, client_name, created_at, expires_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending')",
            params![
                nameplate,
                code.secret_digits(),
                client_name,
                now,
                expires_ms
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Ok((id, code)))
    }

    /// Finds the newest pairing with `nameplate`, expiring it if its time is up.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn find_pairing(&mut self, nameplate: u32, now: i64) -> rusqlite::Result<PairingLookup> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row = tx
            .query_row(
                "SELECT id, secret, client_name, expires_at, state FROM pairings
                 WHERE nameplate = ?1 ORDER BY id DESC LIMIT 1",
                [nameplate],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                },
            )
            .optional()?;
        let lookup = match row {
            None => PairingLookup::Unknown,
            Some((id, _, _, expires, state)) if state == "pending" && expires <= now => {
                tx.execute("UPDATE pairings SET state = 'expired' WHERE id = ?1", [id])?;
                PairingLookup::Expired
            }
            Some((id, secret, client_name, _, state)) if state == "pending" => {
                match PairingCode::from_parts(nameplate, &secret) {
                    Ok(code) => PairingLookup::Pending(PendingPairing {
                        id,
                        code,
                        client_name,
                    }),
                    Err(_) => PairingLookup::Unknown,
                }
            }
            Some((.., state)) if state == "burned" => PairingLookup::Burned,
            Some((.., state)) if state == "used" => PairingLookup::Used,
            Some(_) => PairingLookup::Expired,
        };
        tx.commit()?;
        Ok(lookup)
    }

    /// Counts a wrong attempt; returns the attempts left (0: now burned).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn record_pairing_failure(&mut self, id: i64) -> rusqlite::Result<u32> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let failures: u32 = tx.query_row(
            "UPDATE pairings SET failures = failures + 1 WHERE id = ?1 RETURNING failures",
            [id],
            |r| r.get(0),
        )?;
        if failures >= MAX_PAIRING_FAILURES {
            tx.execute(
                "UPDATE pairings SET state = 'burned' WHERE id = ?1 AND state = 'pending'",
                [id],
            )?;
        }
        tx.commit()?;
        Ok(MAX_PAIRING_FAILURES.saturating_sub(failures))
    }

    /// Turns a proven pairing into a client, in one transaction.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn complete_pairing(
        &mut self,
        pairing_id: i64,
        key: &PublicKey,
        hostname: &str,
        now: i64,
    ) -> rusqlite::Result<PairOutcome> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(String, i64, String)> = tx
            .query_row(
                "SELECT client_name, expires_at, state FROM pairings WHERE id = ?1",
                [pairing_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((name, expires, state)) = row else {
            return Ok(PairOutcome::NoLongerValid);
        };
        if state != "pending" || expires <= now {
            return Ok(PairOutcome::NoLongerValid);
        }
        if let Some(existing) = tx
            .query_row(
                "SELECT name FROM clients WHERE public_key = ?1 AND removed_at IS NULL",
                [&key.0[..]],
                |r| r.get::<_, String>(0),
            )
            .optional()?
        {
            return Ok(PairOutcome::KeyAlreadyPaired(existing));
        }
        let inserted = tx.execute(
            "INSERT INTO clients (name, public_key, hostname, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, &key.0[..], hostname, now],
        );
        if let Err(rusqlite::Error::SqliteFailure(e, _)) = &inserted {
            if e.code == rusqlite::ErrorCode::ConstraintViolation {
                return Ok(PairOutcome::NameTaken);
            }
        }
        inserted?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE pairings SET state = 'used', client_id = ?2 WHERE id = ?1",
            params![pairing_id, id],
        )?;
        let record = client_where(&tx, "id = ?1", id)?.expect("just inserted");
        tx.commit()?;
        Ok(PairOutcome::Paired(record))
    }

    /// The state of the pairing with row `id`, for waiting on it.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn pairing_state(&self, id: i64, now: i64) -> rusqlite::Result<PairingState> {
        let (state, expires, client): (String, i64, Option<i64>) = self.conn.query_row(
            "SELECT state, expires_at, client_id FROM pairings WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(match state.as_str() {
            "pending" if expires > now => PairingState::Pending,
            "used" => match client {
                Some(id) => client_where(&self.conn, "id = ?1", id)?
                    .map_or(PairingState::Expired, |c| PairingState::Used(Box::new(c))),
                None => PairingState::Expired,
            },
            "burned" => PairingState::Burned,
            _ => PairingState::Expired,
        })
    }

    /// The active client with this key.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn client_by_key(&self, key: &PublicKey) -> rusqlite::Result<Option<ClientRecord>> {
        client_where(
            &self.conn,
            "public_key = ?1 AND removed_at IS NULL",
            &key.0[..],
        )
    }

    /// The active client with this name.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn client_by_name(&self, name: &str) -> rusqlite::Result<Option<ClientRecord>> {
        client_where(&self.conn, "name = ?1 AND removed_at IS NULL", name)
    }

    /// All active clients, by name.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn list_clients(&self) -> rusqlite::Result<Vec<ClientRecord>> {
        let mut stmt = self.conn.prepare(&format!(
            "{CLIENT_COLUMNS} WHERE removed_at IS NULL ORDER BY name"
        ))?;
        let rows = stmt.query_map([], client_from_row)?;
        rows.collect()
    }

    /// Ids of all active clients.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn active_client_ids(&self) -> rusqlite::Result<std::collections::HashSet<u64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM clients WHERE removed_at IS NULL")?;
        let rows = stmt.query_map([], |r| r.get::<_, i64>(0).map(|id| id as u64))?;
        rows.collect()
    }

    /// Revokes a client's key; returns whether an active client had that name.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn remove_client(&mut self, name: &str, now: i64) -> rusqlite::Result<bool> {
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
    pub fn touch_client(&mut self, id: u64, address: &str, now: i64) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE clients SET last_seen_at = ?2, last_address = ?3 WHERE id = ?1
             AND (last_seen_at IS NULL OR last_seen_at < ?2 - 60000 OR last_address IS NOT ?3)",
            params![id as i64, now, address],
        )?;
        Ok(())
    }

    /// Runs `PRAGMA integrity_check`; returns its first line ("ok" when clean).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn integrity_check(&self) -> rusqlite::Result<String> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
    }
}

const CLIENT_COLUMNS: &str =
    "SELECT id, name, public_key, hostname, created_at, last_seen_at, last_address FROM clients";

fn client_where(
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
        id: r.get::<_, i64>(0)? as u64,
        name: r.get(1)?,
        fingerprint: public_key.fingerprint().to_string(),
        hostname: r.get(3)?,
        paired_at: ferry_protocol::units::format_rfc3339(r.get(4)?),
        last_seen_at: r
            .get::<_, Option<i64>>(5)?
            .map(ferry_protocol::units::format_rfc3339),
        last_address: r.get(6)?,
        public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
        assert_eq!(cat.schema_version().unwrap(), MIGRATIONS.len());
        let (id, code) = cat
            .create_pairing("laptop", 1000, 2000, 12345678)
            .unwrap()
            .unwrap();
        assert_eq!(code.nameplate, 1);
        let PairingLookup::Pending(p) = cat.find_pairing(1, 1500).unwrap() else {
            panic!()
        };
        assert_eq!(p.code, code);
        assert_eq!(cat.record_pairing_failure(p.id).unwrap(), 2);
        let key = PublicKey([7; 32]);
        let PairOutcome::Paired(c) = cat.complete_pairing(p.id, &key, "host", 1600).unwrap() else {
            panic!()
        };
        assert_eq!(cat.client_by_key(&key).unwrap().unwrap().name, "laptop");
        assert!(matches!(
            cat.find_pairing(1, 1700).unwrap(),
            PairingLookup::Used
        ));
        assert!(
            matches!(cat.pairing_state(id, 1700).unwrap(), PairingState::Used(r) if r.id == c.id)
        );
        assert!(cat
            .create_pairing("laptop", 1800, 2800, 1)
            .unwrap()
            .is_err());
        assert!(cat.remove_client("laptop", 1900).unwrap());
        assert!(cat.client_by_key(&key).unwrap().is_none());
        // Expiry and burning.
        let (_, code) = cat.create_pairing("other", 3000, 4000, 1).unwrap().unwrap();
        assert!(matches!(
            cat.find_pairing(code.nameplate, 4000).unwrap(),
            PairingLookup::Expired
        ));
        let (_, code) = cat.create_pairing("third", 5000, 9000, 1).unwrap().unwrap();
        let PairingLookup::Pending(p) = cat.find_pairing(code.nameplate, 5001).unwrap() else {
            panic!()
        };
        for left in [2, 1, 0] {
            assert_eq!(cat.record_pairing_failure(p.id).unwrap(), left);
        }
        assert!(matches!(
            cat.find_pairing(code.nameplate, 5002).unwrap(),
            PairingLookup::Burned
        ));
        assert_eq!(cat.integrity_check().unwrap(), "ok");
    }
}
