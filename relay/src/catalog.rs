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

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use ferry_protocol::compress::Codec;
use ferry_protocol::keys::PublicKey;
use ferry_protocol::pairing::PairingCode;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

mod garbage;
mod verify;
pub use garbage::PackUsage;
pub use verify::{hex, kind_name, DamageRecord};

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
    // 2: backup sets, the blob index (chunks, signatures, trees, contents) and snapshots.
    "CREATE TABLE backup_sets (
        id INTEGER PRIMARY KEY,
        client_id INTEGER NOT NULL REFERENCES clients(id),
        name TEXT NOT NULL,
        UNIQUE (client_id, name)
    );
    CREATE TABLE blobs (
        client_id INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        id BLOB NOT NULL,
        pack INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        length INTEGER NOT NULL,
        compressed INTEGER NOT NULL,
        PRIMARY KEY (client_id, kind, id)
    ) WITHOUT ROWID;
    CREATE INDEX blobs_by_pack ON blobs(pack);
    CREATE TABLE snapshots (
        id INTEGER PRIMARY KEY,
        client_id INTEGER NOT NULL REFERENCES clients(id),
        set_id INTEGER NOT NULL REFERENCES backup_sets(id),
        root BLOB NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER NOT NULL,
        files INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    );
    CREATE INDEX snapshots_by_set ON snapshots(client_id, set_id, id);",
    // 3: bandwidth limits set on a running relay.
    "ALTER TABLE clients ADD COLUMN rate_limit TEXT;
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 4: what a client may do over the internet.
    "ALTER TABLE clients ADD COLUMN internet_full_backups INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE clients ADD COLUMN internet_max_file INTEGER;",
    // 5: when each blob was indexed, for the garbage collector's grace period.
    "ALTER TABLE blobs ADD COLUMN stored_at INTEGER NOT NULL DEFAULT 0;",
    // 6: snapshot ids are never reused (a `restore -b 7` written down last
    // week must never restore another snapshot that took the number).
    "CREATE TABLE snapshots_v6 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        client_id INTEGER NOT NULL REFERENCES clients(id),
        set_id INTEGER NOT NULL REFERENCES backup_sets(id),
        root BLOB NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER NOT NULL,
        files INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    );
    INSERT INTO snapshots_v6 SELECT id, client_id, set_id, root, started_at, finished_at, files, bytes FROM snapshots;
    DROP TABLE snapshots;
    ALTER TABLE snapshots_v6 RENAME TO snapshots;
    CREATE INDEX snapshots_by_set ON snapshots(client_id, set_id, id);",
    // 7: verification. `state`: 0 whole, 1 damaged (its bytes are wrong:
    // treated as missing, so a backup that holds the data sends it again),
    // 2 incomplete (whole, but something it reaches is damaged: readable for
    // restores, missing to uploads so they send it again). `damage`: what
    // verify found, and when a backup healed it.
    "ALTER TABLE blobs ADD COLUMN state INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE blobs ADD COLUMN verified_at INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE damage (
        id INTEGER PRIMARY KEY,
        client_id INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        blob BLOB NOT NULL,
        pack INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        length INTEGER NOT NULL,
        reason TEXT NOT NULL,
        found_at INTEGER NOT NULL,
        healed_at INTEGER,
        snapshots TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX damage_by_blob ON damage(client_id, kind, blob);
    CREATE INDEX blobs_not_whole ON blobs(client_id) WHERE state != 0;",
];

/// What a blob is; part of its key, so a chunk and a tree never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobKind {
    /// File data.
    Chunk = 0,
    /// The rsync signature of the chunk with the same id (stored by
    /// earlier versions; now computed when asked, and collected as garbage).
    Signature = 1,
    /// A directory.
    Tree = 2,
    /// A file version's chunk list.
    Content = 3,
}

/// Whether a stored blob can be trusted (column `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    /// Verified or never found wrong.
    Whole,
    /// Its bytes do not match its id: missing to everyone, until a backup
    /// sends it again.
    Damaged,
    /// Whole itself, but it reaches a damaged blob: restores read it,
    /// uploads see it missing and so send it (and what is under it) again.
    Incomplete,
}

impl BlobState {
    fn from_code(code: i64) -> Self {
        match code {
            0 => BlobState::Whole,
            2 => BlobState::Incomplete,
            _ => BlobState::Damaged,
        }
    }

    /// The `state` column's value.
    pub fn code(self) -> i64 {
        match self {
            BlobState::Whole => 0,
            BlobState::Damaged => 1,
            BlobState::Incomplete => 2,
        }
    }
}

/// A blob's index row.
#[derive(Debug, Clone, Copy)]
pub struct BlobRow {
    /// What it is.
    pub kind: BlobKind,
    /// Its id (a BLAKE3 hash).
    pub id: [u8; 32],
    /// Where it is stored.
    pub at: crate::store::BlobLocation,
    /// How the stored bytes are compressed (column `compressed`: 0 none,
    /// 1 lz4, 2 zstd).
    pub codec: Codec,
}

/// A catalog error as one clear line; a full disk says so first.
pub fn describe_error(e: rusqlite::Error) -> anyhow::Error {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => {
            anyhow::anyhow!("no space left on the relay's disk (catalog: {e})")
        }
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => anyhow::anyhow!(
            "the relay's catalog is damaged ({e}); the operator can run `ferry-relay verify --repair-catalog`"
        ),
        _ => anyhow::anyhow!("catalog error: {e}"),
    }
}

fn codec_from_sql(code: u8) -> rusqlite::Result<Codec> {
    Codec::from_code(code).ok_or(rusqlite::Error::IntegralValueOutOfRange(0, i64::from(code)))
}

/// A snapshot row, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRow {
    /// Its id.
    pub id: u64,
    /// Its client's name.
    pub client: String,
    /// Its backup set.
    pub set: String,
    /// Root tree id (hex).
    pub root: String,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    pub finished_at: String,
    /// Files in it.
    pub files: u64,
    /// Bytes of file data in it.
    pub bytes: u64,
    #[serde(skip)]
    /// Root tree id.
    pub root_id: [u8; 32],
    #[serde(skip)]
    /// Start, ms.
    pub started_ms: i64,
    #[serde(skip)]
    /// End, ms.
    pub finished_ms: i64,
}

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
    /// Its own bandwidth limit (schedule text), replacing the configured
    /// per-client rate; `None` when it has none.
    pub limit: Option<String>,
    /// Whether a set's first (full) backup may run over the internet.
    pub internet_full_backups: bool,
    /// The largest single file it may back up over the internet.
    pub internet_max_file: Option<u64>,
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
    Paired(Box<ClientRecord>),
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
        Ok(PairOutcome::Paired(Box::new(record)))
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

    /// Runs `PRAGMA quick_check` (the integrity check without index
    /// contents, fast enough for every start); returns its first line.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn quick_check(&self) -> rusqlite::Result<String> {
        self.conn.query_row("PRAGMA quick_check", [], |r| r.get(0))
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

impl Catalog {
    /// Sets (or with `None` clears) the global limit override.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_global_limit(&mut self, schedule: Option<&str>) -> rusqlite::Result<()> {
        self.set_setting("global_limit", schedule)
    }

    /// The global limit override, if set.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn global_limit(&self) -> rusqlite::Result<Option<String>> {
        self.setting("global_limit")
    }

    /// Sets (or with `None` clears) a relay-wide setting.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_setting(&mut self, key: &str, value: Option<&str>) -> rusqlite::Result<()> {
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
    pub fn setting(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
    }

    /// Sets (or with `None` clears) a client's own limit; false if no such client.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_client_limit(
        &mut self,
        name: &str,
        schedule: Option<&str>,
    ) -> rusqlite::Result<bool> {
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
    ) -> rusqlite::Result<bool> {
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
    pub fn client_limits(&self) -> rusqlite::Result<HashMap<u64, String>> {
        let mut stmt =
            self.conn.prepare("SELECT id, rate_limit FROM clients WHERE removed_at IS NULL AND rate_limit IS NOT NULL")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })?;
        rows.collect()
    }

    /// The id of `client`'s backup set `name`, created if new.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn ensure_set(&mut self, client: u64, name: &str) -> rusqlite::Result<i64> {
        self.conn.execute(
            "INSERT OR IGNORE INTO backup_sets (client_id, name) VALUES (?1, ?2)",
            params![client as i64, name],
        )?;
        self.conn.query_row(
            "SELECT id FROM backup_sets WHERE client_id = ?1 AND name = ?2",
            params![client as i64, name],
            |r| r.get(0),
        )
    }

    /// Where `client`'s blob is, if stored.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn find_blob(
        &self,
        client: u64,
        kind: BlobKind,
        id: &[u8; 32],
    ) -> rusqlite::Result<Option<BlobRow>> {
        Ok(self
            .find_blob_state(client, kind, id)?
            .filter(|(_, state)| *state != BlobState::Damaged)
            .map(|(row, _)| row))
    }

    /// Like [`Catalog::find_blob`], also for a damaged blob, with its state.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn find_blob_state(
        &self,
        client: u64,
        kind: BlobKind,
        id: &[u8; 32],
    ) -> rusqlite::Result<Option<(BlobRow, BlobState)>> {
        self.conn
            .prepare_cached(
                "SELECT pack, offset, length, compressed, state FROM blobs WHERE client_id = ?1 AND kind = ?2 AND id = ?3",
            )?
            .query_row(params![client as i64, kind as i64, &id[..]], |r| {
                Ok((
                    BlobRow {
                        kind,
                        id: *id,
                        at: crate::store::BlobLocation {
                            pack: r.get(0)?,
                            offset: r.get::<_, i64>(1)? as u64,
                            len: r.get(2)?,
                        },
                        codec: codec_from_sql(r.get(3)?)?,
                    },
                    BlobState::from_code(r.get(4)?),
                ))
            })
            .optional()
    }

    /// Records durable blobs, in one transaction.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn insert_blobs(&mut self, client: u64, rows: &[BlobRow]) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            // A blob sent again in place of a damaged or incomplete one
            // takes its row: that is how a backup heals a snapshot.
            let mut insert = tx.prepare_cached(
                "INSERT INTO blobs (client_id, kind, id, pack, offset, length, compressed, stored_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (client_id, kind, id) DO UPDATE SET
                   pack = excluded.pack, offset = excluded.offset, length = excluded.length,
                   compressed = excluded.compressed, stored_at = excluded.stored_at,
                   state = 0, verified_at = 0
                 WHERE blobs.state != 0",
            )?;
            let mut healed = tx.prepare_cached(
                "UPDATE damage SET healed_at = ?4
                 WHERE client_id = ?1 AND kind = ?2 AND blob = ?3 AND healed_at IS NULL",
            )?;
            let now = now_ms();
            for row in rows {
                let changed = insert.execute(params![
                    client as i64,
                    row.kind as i64,
                    &row.id[..],
                    row.at.pack,
                    row.at.offset as i64,
                    row.at.len,
                    row.codec.code(),
                    now
                ])?;
                if changed > 0 {
                    healed.execute(params![client as i64, row.kind as i64, &row.id[..], now])?;
                }
            }
        }
        tx.commit()
    }

    /// For each pack, the end of its last indexed blob (for cutting torn tails).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn committed_pack_ends(&self) -> rusqlite::Result<std::collections::HashMap<u32, u64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT pack, MAX(offset + length) FROM blobs GROUP BY pack")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        rows.collect()
    }

    /// Commits a snapshot; returns its id.
    ///
    /// # Errors
    /// SQLite errors.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_snapshot(
        &mut self,
        client: u64,
        set_id: i64,
        root: &[u8; 32],
        started_ms: i64,
        finished_ms: i64,
        files: u64,
        bytes: u64,
    ) -> rusqlite::Result<u64> {
        self.conn.execute(
            "INSERT INTO snapshots (client_id, set_id, root, started_at, finished_at, files, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                client as i64,
                set_id,
                &root[..],
                started_ms,
                finished_ms,
                files as i64,
                bytes as i64
            ],
        )?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    /// Forgets the snapshots of `client`'s set `set_id` that `retention` does
    /// not keep, in one transaction; returns how many. Their data stays in
    /// the store until the garbage collector finds it unreferenced.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn apply_retention(
        &mut self,
        client: u64,
        set_id: i64,
        retention: &ferry_protocol::retention::Retention,
    ) -> rusqlite::Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let snapshots: Vec<(u64, i64)> = tx
            .prepare("SELECT id, finished_at FROM snapshots WHERE client_id = ?1 AND set_id = ?2")?
            .query_map(params![client as i64, set_id], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let keep: std::collections::HashSet<u64> = retention.keep(&snapshots).into_iter().collect();
        let mut forgotten = 0;
        for (id, _) in snapshots.iter().filter(|(id, _)| !keep.contains(id)) {
            forgotten += tx.execute("DELETE FROM snapshots WHERE id = ?1", [*id as i64])?;
        }
        tx.commit()?;
        Ok(forgotten)
    }

    /// Forgets the given snapshots; returns the ids that existed.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn forget_snapshots(&mut self, ids: &[u64]) -> rusqlite::Result<Vec<u64>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut forgotten = Vec::new();
        for id in ids {
            if tx.execute("DELETE FROM snapshots WHERE id = ?1", [*id as i64])? > 0 {
                forgotten.push(*id);
            }
        }
        tx.commit()?;
        Ok(forgotten)
    }

    /// Snapshots, oldest first, optionally of one client and one set name.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn list_snapshots(
        &self,
        client: Option<u64>,
        set: Option<&str>,
    ) -> rusqlite::Result<Vec<SnapshotRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT s.id, c.name, b.name, s.root, s.started_at, s.finished_at, s.files, s.bytes
             FROM snapshots s JOIN clients c ON c.id = s.client_id JOIN backup_sets b ON b.id = s.set_id
             WHERE (?1 IS NULL OR s.client_id = ?1) AND (?2 IS NULL OR b.name = ?2)
             ORDER BY s.id",
        )?;
        let rows = stmt.query_map(params![client.map(|c| c as i64), set], |r| {
            let root: Vec<u8> = r.get(3)?;
            let root_id: [u8; 32] = root.as_slice().try_into().unwrap_or([0; 32]);
            let (started_ms, finished_ms): (i64, i64) = (r.get(4)?, r.get(5)?);
            Ok(SnapshotRow {
                id: r.get::<_, i64>(0)? as u64,
                client: r.get(1)?,
                set: r.get(2)?,
                root: root_id.iter().map(|b| format!("{b:02x}")).collect(),
                started_at: ferry_protocol::units::format_rfc3339(started_ms),
                finished_at: ferry_protocol::units::format_rfc3339(finished_ms),
                files: r.get::<_, i64>(6)? as u64,
                bytes: r.get::<_, i64>(7)? as u64,
                root_id,
                started_ms,
                finished_ms,
            })
        })?;
        rows.collect()
    }
}

const CLIENT_COLUMNS: &str =
    "SELECT id, name, public_key, hostname, created_at, last_seen_at, last_address, rate_limit,
     internet_full_backups, internet_max_file FROM clients";

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
        limit: r.get(7)?,
        internet_full_backups: r.get(8)?,
        internet_max_file: r.get::<_, Option<i64>>(9)?.map(|n| n as u64),
        public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalog with one paired client; returns the catalog and its id.
    fn with_client(dir: &Path) -> (Catalog, u64) {
        let mut cat = Catalog::open(&dir.join("c.sqlite")).unwrap();
        let (id, _) = cat
            .create_pairing("laptop", 0, i64::MAX, 1)
            .unwrap()
            .unwrap();
        let PairOutcome::Paired(client) = cat
            .complete_pairing(id, &PublicKey([1; 32]), "host", 1)
            .unwrap()
        else {
            panic!()
        };
        (cat, client.id)
    }

    #[test]
    fn a_forgotten_snapshots_id_is_never_given_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cat, client) = with_client(dir.path());
        let set = cat.ensure_set(client, "default").unwrap();
        let first = cat
            .insert_snapshot(client, set, &[0; 32], 0, 1, 0, 0)
            .unwrap();
        let second = cat
            .insert_snapshot(client, set, &[0; 32], 0, 1, 0, 0)
            .unwrap();
        assert_eq!(cat.forget_snapshots(&[second]).unwrap(), vec![second]);
        drop(cat);
        let mut cat = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
        let third = cat
            .insert_snapshot(client, set, &[0; 32], 0, 1, 0, 0)
            .unwrap();
        assert_eq!((first, second, third), (1, 2, 3));
    }

    #[test]
    fn a_damaged_blob_is_missing_until_sent_again_and_then_healed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cat, client) = with_client(dir.path());
        let at = |offset| crate::store::BlobLocation {
            pack: 1,
            offset,
            len: 10,
        };
        let row = BlobRow {
            kind: BlobKind::Chunk,
            id: [9; 32],
            at: at(0),
            codec: Codec::None,
        };
        cat.insert_blobs(client, &[row]).unwrap();
        assert!(!cat.has_damage(client).unwrap());
        // A row that moved meanwhile is not marked.
        let moved = BlobRow { at: at(5), ..row };
        assert!(!cat.mark_damaged(client, &moved, "bad").unwrap());
        assert!(cat.mark_damaged(client, &row, "bad").unwrap());
        assert!(cat
            .find_blob(client, BlobKind::Chunk, &[9; 32])
            .unwrap()
            .is_none());
        assert!(cat.has_damage(client).unwrap());
        assert_eq!(cat.damage_records(None).unwrap()[0].healed_at, None);
        // A backup sends it again: the new copy takes the row.
        let again = BlobRow { at: at(100), ..row };
        cat.insert_blobs(client, &[again]).unwrap();
        let found = cat.find_blob(client, BlobKind::Chunk, &[9; 32]).unwrap();
        assert_eq!(found.map(|r| r.at), Some(at(100)));
        assert!(!cat.has_damage(client).unwrap());
        assert!(cat.damage_records(None).unwrap()[0].healed_at.is_some());
        // A whole blob sent again keeps its row.
        cat.insert_blobs(client, &[row]).unwrap();
        let found = cat.find_blob(client, BlobKind::Chunk, &[9; 32]).unwrap();
        assert_eq!(found.map(|r| r.at), Some(at(100)));
    }

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
