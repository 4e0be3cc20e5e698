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
//!
//! This file holds the schema, the connection and the blob types; the
//! queries are `impl Catalog` blocks split by concern: `pairing`, `clients`,
//! `limits` (and settings), `sets`, `blobs` (the index), `snapshots` (and
//! retention), `garbage` (the collector's side) and `verify`.

use std::path::Path;
use std::time::Duration;

use ferry_protocol::compress::Codec;
use rusqlite::{Connection, TransactionBehavior};

mod blobs;
mod clients;
mod garbage;
mod limits;
mod pairing;
pub mod ports;
mod relays;
mod retention;
pub mod runs;
mod sets;
mod snapshots;
mod staged;
mod suspicious;
mod verify;
pub use clients::ClientRecord;
pub use garbage::PackUsage;
pub use pairing::{PairOutcome, PairingLookup, PairingState, PendingPairing};
pub use ports::{BlobIndex, DamageLog};
pub use relays::{Lease, Registered, RelayRow};
pub use retention::SetDecision;
pub use sets::{SetRemoval, SetSummary, MAX_SETS};
pub use snapshots::SnapshotRow;
pub use suspicious::SuspiciousBackup;
pub use verify::{hex, kind_name, settle_interrupted_repair, DamageRecord};

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
    // 8: the newest handshake timestamp accepted per key, so a captured
    // first message gets no answer after a restart either.
    "CREATE TABLE handshakes (
        public_key BLOB PRIMARY KEY,
        secs INTEGER NOT NULL,
        nanos INTEGER NOT NULL
    );",
    // 9: the trees an open upload sent, durable but not yet checked by its
    // commit (see `staged.rs`); emptied at every start.
    "CREATE TABLE staged_trees (
        upload INTEGER NOT NULL,
        client_id INTEGER NOT NULL,
        id BLOB NOT NULL,
        pack INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        length INTEGER NOT NULL,
        compressed INTEGER NOT NULL,
        PRIMARY KEY (upload, id)
    ) WITHOUT ROWID;",
    // 10: retention decided by the relay: its rules per client (`set_name`
    // '') or per set, the endpoint's last hints per set (they may only add
    // to what the rules keep), snapshots the admin protected, and quotas.
    "CREATE TABLE retention_rules (
        client_id INTEGER NOT NULL,
        set_name TEXT NOT NULL,
        rules TEXT NOT NULL,
        PRIMARY KEY (client_id, set_name)
    );
    ALTER TABLE backup_sets ADD COLUMN hints TEXT;
    ALTER TABLE snapshots ADD COLUMN protected INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE clients ADD COLUMN quota INTEGER;",
    // 11: a snapshot the relay holds until a time (the one before a
    // suspicious backup), whatever retention says.
    "ALTER TABLE snapshots ADD COLUMN held_until INTEGER NOT NULL DEFAULT 0;",
    // 12: bytes a client's uploads appended and never indexed (refused,
    // abandoned): charged to its quota until a collection after them.
    "ALTER TABLE clients ADD COLUMN unindexed_bytes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE clients ADD COLUMN unindexed_at INTEGER NOT NULL DEFAULT 0;",
    // 13: trees and contents are stored twice, one copy right after the
    // other (`copies` 2): `verify` repairs a rotten byte from the copy.
    "ALTER TABLE blobs ADD COLUMN copies INTEGER NOT NULL DEFAULT 1;",
    // 14: a pairing code may hand an existing client to a new machine (a
    // lost laptop's): `replaces` names the client; the keys it had are kept.
    "ALTER TABLE pairings ADD COLUMN replaces INTEGER REFERENCES clients(id);
    CREATE TABLE replaced_keys (
        client_id INTEGER NOT NULL REFERENCES clients(id),
        public_key BLOB NOT NULL,
        hostname TEXT NOT NULL,
        replaced_at INTEGER NOT NULL
    );",
    // 15: each client's vault key wrapped under its owner's passphrase and
    // to the organisation's recovery recipient (opaque here), for a new
    // machine or the operator to recover.
    "CREATE TABLE key_wraps (
        client_id INTEGER PRIMARY KEY REFERENCES clients(id),
        wrapped BLOB,
        recovery BLOB,
        updated_at INTEGER NOT NULL
    );",
    // 16: sealed clients (chosen at pairing) and sealed snapshots, whose
    // root is a sealed object (kind 4) rather than a tree (kind 2).
    "ALTER TABLE clients ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE snapshots ADD COLUMN root_kind INTEGER NOT NULL DEFAULT 2;",
    // 17: each snapshot's label (the host and paths it covers), opaque:
    // sealed under the vault for a sealed client.
    "ALTER TABLE snapshots ADD COLUMN label BLOB;",
    // 18: the relays sharing this catalog (each its own id, in the name of
    // every pack it writes), and leases on work only one may do at a time.
    "CREATE TABLE relays (
        id INTEGER PRIMARY KEY,
        holder TEXT NOT NULL UNIQUE,
        registered_at INTEGER NOT NULL
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        relay INTEGER NOT NULL,
        token INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );",
    // 19: when each relay last said it was up (0: it stopped cleanly).
    "ALTER TABLE relays ADD COLUMN seen_at INTEGER NOT NULL DEFAULT 0;",
    // 20: packs a collection emptied, deleted a grace period later (in a
    // store shared by relays, one may still be reading them).
    "CREATE TABLE condemned_packs (
        pack INTEGER PRIMARY KEY,
        condemned_at INTEGER NOT NULL
    );",
];

/// Declares a row id of the catalog as its own type, stored as SQLite's
/// integer and shown as the number, so ids of different tables are never
/// mixed up.
macro_rules! row_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize,
            serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                let id = i64::try_from(self.0)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                Ok(id.into())
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                let id = i64::column_result(value)?;
                u64::try_from(id)
                    .map($name)
                    .map_err(|_| rusqlite::types::FromSqlError::OutOfRange(id))
            }
        }
    };
}

row_id!(
    /// A client's id (`clients.id`).
    ClientId
);
row_id!(
    /// A snapshot's id (`snapshots.id`): never reused, the number users see.
    SnapshotId
);
row_id!(
    /// A backup set's id (`backup_sets.id`), one per client and set name.
    SetId
);

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
    /// A sealed client's object (`ferry_protocol::sealed`): the relay knows
    /// of it only its clear header (kind, refs, padded length) and its id.
    Sealed = 4,
}

impl BlobKind {
    /// The kind and id of a node a walk reaches.
    pub fn of(node: ferry_protocol::walk::Node) -> (BlobKind, [u8; 32]) {
        match node {
            ferry_protocol::walk::Node::Tree(id) => (BlobKind::Tree, id.0),
            ferry_protocol::walk::Node::Content(id) => (BlobKind::Content, id.0),
        }
    }
}

/// A stored blob's name: its kind and its id. What the walks, the
/// collector, verify, quotas and the commit's closure work with: none of
/// them needs an object's bytes beyond what [`crate::objects::References`]
/// says it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobKey {
    /// What it is.
    pub kind: BlobKind,
    /// Its id (a BLAKE3 hash, or a keyed one).
    pub id: [u8; 32],
}

impl BlobKey {
    /// A tree's key.
    pub fn tree(id: [u8; 32]) -> Self {
        BlobKey {
            kind: BlobKind::Tree,
            id,
        }
    }

    /// The first bytes of its id in hex, and its kind: how logs name it.
    pub fn short(&self) -> String {
        format!("{} {}", kind_name(self.kind), hex(&self.id[..8]))
    }
}

impl BlobRow {
    /// The blob's key.
    pub fn key(&self) -> BlobKey {
        BlobKey {
            kind: self.kind,
            id: self.id,
        }
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// How many copies are stored, one right after the other (`at.len`
    /// bytes each): 2 for trees and contents (small, and every file below
    /// them depends on them), 1 for chunks and rows older than copies.
    pub copies: u8,
}

impl BlobRow {
    /// The copies a blob of `kind` is stored with.
    pub fn copies_of(kind: BlobKind) -> u8 {
        match kind {
            BlobKind::Tree | BlobKind::Content => 2,
            BlobKind::Chunk | BlobKind::Signature | BlobKind::Sealed => 1,
        }
    }

    /// Where all its copies lie, together.
    pub fn span(&self) -> crate::store::BlobLocation {
        crate::store::BlobLocation {
            len: self.at.len.saturating_mul(u32::from(self.copies.max(1))),
            ..self.at
        }
    }
}

impl BlobRow {
    /// The row's owner, key and place as SQL values, in the order the
    /// `blobs` and `damage` tables list them: client, kind, id, pack,
    /// offset, length.
    pub(crate) fn key_and_place(&self, client: ClientId) -> [rusqlite::types::Value; 6] {
        use rusqlite::types::Value;
        [
            Value::Integer(client.0 as i64),
            Value::Integer(self.kind as i64),
            Value::Blob(self.id.to_vec()),
            Value::Integer(self.at.pack.0 as i64),
            Value::Integer(self.at.offset as i64),
            Value::Integer(self.at.len.into()),
        ]
    }
}

/// A catalog failure, as one clear line: a full disk or a damaged file
/// says so first, since that is what the operator must act on.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The disk under the catalog is full.
    #[error("no space left on the relay's disk (catalog: {0})")]
    DiskFull(#[source] rusqlite::Error),
    /// The catalog file is damaged.
    #[error("the relay's catalog is damaged ({0}); the operator can run `ferry-relay verify --repair-catalog`")]
    Damaged(#[source] rusqlite::Error),
    /// Any other SQLite error.
    #[error("catalog error: {0}")]
    Sqlite(#[source] rusqlite::Error),
}

impl From<rusqlite::Error> for CatalogError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => CatalogError::DiskFull(e),
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => CatalogError::Damaged(e),
            _ => CatalogError::Sqlite(e),
        }
    }
}

/// What catalog queries return.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

fn codec_from_sql(code: u8) -> rusqlite::Result<Codec> {
    Codec::from_code(code).ok_or(rusqlite::Error::IntegralValueOutOfRange(0, i64::from(code)))
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
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let mut catalog = Catalog { conn };
        catalog.migrate()?;
        Ok(catalog)
    }

    fn migrate(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(step)?;
            tx.pragma_update(None, "user_version", i + 1)?;
        }
        Ok(tx.commit()?)
    }

    /// The schema version after migration.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn schema_version(&self) -> Result<usize> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Changes whenever another connection commits; cheap to poll.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Runs `PRAGMA quick_check` (the integrity check without index
    /// contents, fast enough for every start); returns its first line.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn quick_check(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))?)
    }

    /// Runs `PRAGMA integrity_check`; returns its first line ("ok" when clean).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    /// Whether the catalog knows no client and no blob (a new relay's, or
    /// one emptied by mistake).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn knows_nothing(&self) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM clients) AND NOT EXISTS (SELECT 1 FROM blobs)",
            [],
            |r| r.get(0),
        )?)
    }

    /// Makes every blob look stored `by_ms` earlier (tests of the grace
    /// period, without waiting for it).
    #[cfg(test)]
    pub fn age_blobs(&mut self, by_ms: i64) -> Result<()> {
        self.conn
            .execute("UPDATE blobs SET stored_at = stored_at - ?1", [by_ms])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameplates_are_drawn_from_the_free_ones_not_handed_out_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
        let pick = |cat: &mut Catalog, name: &str, high: u64| {
            let (_, code) = cat
                .create_pairing(name, 0, i64::MAX, (high << 32) | 7)
                .unwrap()
                .unwrap();
            code.nameplate
        };
        assert_eq!(pick(&mut cat, "a", 500), 501);
        // 501 is taken now: the same draw lands on the next free one.
        assert_eq!(pick(&mut cat, "b", 500), 502);
        assert_eq!(pick(&mut cat, "c", 0), 1);
    }
    use ferry_protocol::keys::PublicKey;

    /// A catalog with one paired client; returns the catalog and its id.
    fn with_client(dir: &Path) -> (Catalog, ClientId) {
        let mut cat = Catalog::open(&dir.join("c.sqlite")).unwrap();
        let (id, _) = cat
            .create_pairing("laptop", 0, i64::MAX, 1)
            .unwrap()
            .unwrap();
        let PairOutcome::Paired(client) = cat
            .complete_pairing(id, &PublicKey([1; 32]), "host", false, 1)
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
        let set = cat.ensure_set(client, "default").unwrap().unwrap();
        let first = cat
            .insert_snapshot(client, set, BlobKey::tree([0; 32]), 0, 1, 0, 0)
            .unwrap();
        let second = cat
            .insert_snapshot(client, set, BlobKey::tree([0; 32]), 0, 1, 0, 0)
            .unwrap();
        assert_eq!(
            cat.forget_snapshots(&[second]).unwrap(),
            (vec![second], vec![])
        );
        drop(cat);
        let mut cat = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
        let third = cat
            .insert_snapshot(client, set, BlobKey::tree([0; 32]), 0, 1, 0, 0)
            .unwrap();
        assert_eq!(
            (first, second, third),
            (SnapshotId(1), SnapshotId(2), SnapshotId(3))
        );
    }

    #[test]
    fn a_damaged_blob_is_missing_until_sent_again_and_then_healed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cat, client) = with_client(dir.path());
        let at = |offset| crate::store::BlobLocation {
            pack: crate::store::PackId(1),
            offset,
            len: 10,
        };
        let row = BlobRow {
            kind: BlobKind::Chunk,
            id: [9; 32],
            at: at(0),
            codec: Codec::None,
            copies: 1,
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
        let PairOutcome::Paired(c) = cat
            .complete_pairing(p.id, &key, "host", false, 1600)
            .unwrap()
        else {
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
