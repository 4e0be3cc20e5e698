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
use sql::{args, Db};

mod blobs;
mod clients;
mod copy;
mod garbage;
mod limits;
mod pairing;
pub mod pg_server;
pub mod ports;
pub mod rebuild;
mod relays;
mod retention;
pub mod runs;
mod schema;
mod sets;
mod snapshots;
pub(crate) mod sql;
mod staged;
mod suspicious;
mod verify;
pub use clients::ClientRecord;
pub use copy::Copied;
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

/// Where a catalog is: an SQLite file, or a PostgreSQL database several
/// relays on several hosts share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogAt {
    /// An SQLite file.
    File(std::path::PathBuf),
    /// A PostgreSQL database: its `postgres://` URL.
    Postgres(String),
}

impl std::fmt::Display for CatalogAt {
    /// The file's path, or the URL without its password (for messages).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatalogAt::File(path) => path.display().fmt(f),
            CatalogAt::Postgres(url) => f.write_str(&without_password(url)),
        }
    }
}

impl From<&std::path::Path> for CatalogAt {
    fn from(path: &std::path::Path) -> Self {
        CatalogAt::File(path.to_path_buf())
    }
}

impl From<&std::path::PathBuf> for CatalogAt {
    fn from(path: &std::path::PathBuf) -> Self {
        CatalogAt::File(path.clone())
    }
}

impl From<&CatalogAt> for CatalogAt {
    fn from(at: &CatalogAt) -> Self {
        at.clone()
    }
}

/// `url` with the password of its `user:password@` part hidden.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:…@{host}")
        }
        _ => url.to_owned(),
    }
}

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
    /// What a pack's trailer says of this blob of `client`'s.
    pub fn label(&self, client: ClientId) -> crate::store::BlobLabel {
        crate::store::BlobLabel {
            client: client.0,
            kind: self.kind as u8,
            codec: self.codec.code(),
            copies: self.copies,
            id: self.id,
        }
    }

    pub(crate) fn key_and_place(&self, client: ClientId) -> [sql::Value; 6] {
        [
            client.into(),
            (self.kind as i64).into(),
            (&self.id).into(),
            self.at.pack.into(),
            self.at.offset.into(),
            self.at.len.into(),
        ]
    }
}

/// A catalog failure, as one clear line: a full disk or a damaged file
/// says so first, since that is what the operator must act on.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The disk under the catalog is full.
    #[error("no space left on the relay's disk (catalog: {0})")]
    DiskFull(String),
    /// The catalog file is damaged.
    #[error("the relay's catalog is damaged ({0}); the operator can run `ferry-relay verify --repair-catalog`")]
    Damaged(String),
    /// Any other SQLite error.
    #[error("catalog error: {0}")]
    Sqlite(#[source] rusqlite::Error),
    /// PostgreSQL refused a statement.
    #[error("catalog error (PostgreSQL): {0}")]
    Postgres(String),
    /// The connection to PostgreSQL is lost or was never made.
    #[error("the relay's catalog (PostgreSQL) cannot be reached: {0}")]
    Unreachable(String),
    /// A row that would break a uniqueness or reference rule.
    #[error("catalog error: {0}")]
    Conflict(String),
    /// A value that is not what its column holds.
    #[error("catalog error: {0}")]
    Value(String),
}

impl From<rusqlite::Error> for CatalogError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => CatalogError::DiskFull(e.to_string()),
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => CatalogError::Damaged(e.to_string()),
            Some(rusqlite::ErrorCode::ConstraintViolation) => CatalogError::Conflict(e.to_string()),
            _ => CatalogError::Sqlite(e),
        }
    }
}

/// What catalog queries return.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

fn codec_from_sql(code: u8) -> Result<Codec> {
    Codec::from_code(code).ok_or_else(|| CatalogError::Value(format!("no codec numbered {code}")))
}

/// One connection to the catalog.
#[derive(Debug)]
pub struct Catalog {
    db: Db,
}

impl Catalog {
    /// Opens (creating if needed) and migrates the catalog `at`.
    ///
    /// # Errors
    /// SQLite errors (a file that is not a database); an unreachable
    /// PostgreSQL, refused credentials.
    pub fn open_at(at: &CatalogAt) -> Result<Self> {
        match at {
            CatalogAt::File(path) => Self::open(path),
            CatalogAt::Postgres(url) => {
                let mut catalog = Catalog {
                    db: Db::connect_postgres(url)?,
                };
                catalog.migrate_postgres()?;
                Ok(catalog)
            }
        }
    }

    /// Which engine holds this catalog.
    pub fn engine(&self) -> sql::Engine {
        self.db.engine()
    }

    /// Opens (creating if needed) and migrates the catalog at `path`.
    ///
    /// # Errors
    /// SQLite errors, e.g. a file that is not a database.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.set_prepared_statement_cache_capacity(256);
        let mut catalog = Catalog {
            db: Db::Sqlite(conn),
        };
        catalog.migrate()?;
        Ok(catalog)
    }

    /// The schema version after migration.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn schema_version(&self) -> Result<usize> {
        match self.engine() {
            sql::Engine::Sqlite => self.db.value("PRAGMA user_version", args![]),
            sql::Engine::Postgres => self.db.value("SELECT version FROM ferry_schema", args![]),
        }
    }

    /// Changes whenever another connection commits; cheap to poll.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn data_version(&self) -> Result<i64> {
        match self.engine() {
            sql::Engine::Sqlite => self.db.value("PRAGMA data_version", args![]),
            // The next transaction id: it moves with every write anywhere.
            sql::Engine::Postgres => self.db.value(
                "SELECT CAST(CAST(pg_snapshot_xmax(pg_current_snapshot()) AS TEXT) AS BIGINT)",
                args![],
            ),
        }
    }

    /// Runs `PRAGMA quick_check` (the integrity check without index
    /// contents, fast enough for every start); returns its first line.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn quick_check(&self) -> Result<String> {
        match self.engine() {
            sql::Engine::Sqlite => self.db.value("PRAGMA quick_check", args![]),
            // PostgreSQL checks its pages itself (and `pg_amcheck` more).
            sql::Engine::Postgres => Ok("ok".into()),
        }
    }

    /// Runs `PRAGMA integrity_check`; returns its first line ("ok" when clean).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn integrity_check(&self) -> Result<String> {
        match self.engine() {
            sql::Engine::Sqlite => self.db.value("PRAGMA integrity_check", args![]),
            sql::Engine::Postgres => Ok("ok".into()),
        }
    }

    /// Whether the catalog knows no client and no blob (a new relay's, or
    /// one emptied by mistake).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn knows_nothing(&self) -> Result<bool> {
        self.db.value(
            "SELECT NOT EXISTS (SELECT 1 FROM clients) AND NOT EXISTS (SELECT 1 FROM blobs)",
            args![],
        )
    }

    /// Makes every blob look stored `by_ms` earlier (tests of the grace
    /// period, without waiting for it).
    #[cfg(test)]
    pub fn age_blobs(&mut self, by_ms: i64) -> Result<()> {
        self.db
            .execute("UPDATE blobs SET stored_at = stored_at - ?1", args![by_ms])?;
        Ok(())
    }
}

/// A fresh catalog on each engine, with what holds it: an SQLite file,
/// and a database in the tests' PostgreSQL ([`pg_server::PgServer`]).
#[cfg(test)]
pub(crate) fn test_catalogs() -> Vec<(CatalogAt, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = CatalogAt::File(dir.path().join("c.sqlite"));
    let postgres = CatalogAt::Postgres(pg_server::PgServer::shared().database());
    vec![(sqlite, Some(dir)), (postgres, None)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameplates_are_drawn_from_the_free_ones_not_handed_out_in_order() {
        for (at, _dir) in test_catalogs() {
            let mut cat = Catalog::open_at(&at).unwrap();
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
    }
    use ferry_protocol::keys::PublicKey;

    /// Adds one paired client; returns its id.
    fn with_client(cat: &mut Catalog) -> ClientId {
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
        client.id
    }

    #[test]
    fn a_forgotten_snapshots_id_is_never_given_again() {
        for (at, _dir) in test_catalogs() {
            let mut cat = Catalog::open_at(&at).unwrap();
            let client = with_client(&mut cat);
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
            let mut cat = Catalog::open_at(&at).unwrap();
            let third = cat
                .insert_snapshot(client, set, BlobKey::tree([0; 32]), 0, 1, 0, 0)
                .unwrap();
            assert_eq!(
                (first, second, third),
                (SnapshotId(1), SnapshotId(2), SnapshotId(3)),
                "{at}"
            );
        }
    }

    #[test]
    fn a_snapshots_counts_read_back_as_the_client_sent_them_however_large() {
        // The counts are the client's word: a hostile one may send any u64,
        // and that must not make its snapshots unreadable to the admin.
        for (at, _dir) in test_catalogs() {
            let mut cat = Catalog::open_at(&at).unwrap();
            let client = with_client(&mut cat);
            let set = cat.ensure_set(client, "default").unwrap().unwrap();
            let id = cat
                .insert_snapshot(
                    client,
                    set,
                    BlobKey::tree([0; 32]),
                    0,
                    1,
                    u64::MAX,
                    u64::MAX - 1,
                )
                .unwrap();
            let listed = cat.list_snapshots(Some(client), None).unwrap();
            assert_eq!(
                (listed[0].files, listed[0].bytes),
                (u64::MAX, u64::MAX - 1),
                "{at}"
            );
            let later = cat
                .insert_snapshot(client, set, BlobKey::tree([0; 32]), 2, 3, 1, 1)
                .unwrap();
            let (before, size) = cat.snapshot_before(set, later).unwrap().unwrap();
            assert_eq!((before, size.files), (id, u64::MAX), "{at}");
        }
    }

    #[test]
    fn a_damaged_blob_is_missing_until_sent_again_and_then_healed() {
        for (at, _dir) in test_catalogs() {
            let mut cat = Catalog::open_at(&at).unwrap();
            let client = with_client(&mut cat);
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
    }

    #[test]
    fn pairing_lifecycle() {
        for (at, _dir) in test_catalogs() {
            let mut cat = Catalog::open_at(&at).unwrap();
            assert_eq!(cat.schema_version().unwrap(), schema::MIGRATIONS.len());
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
}
