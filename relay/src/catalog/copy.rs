//! Copying a whole catalog into an empty one on another engine (`ferry-
//! relay migrate --to-catalog`): every table row for row, ids kept, then
//! each table's rows compared by a digest on both sides, and the target's
//! id counters moved past every id the source ever handed out (a forgotten
//! snapshot's number is never given again).

use super::sql::{args, Db, Engine, Value};
use super::{Catalog, CatalogError, Result};

/// Each table, its columns (in the order copied and compared) and the
/// key it is read in order of. Parents before children.
const TABLES: &[(&str, &str, &str)] = &[
    ("clients", "id, name, public_key, hostname, created_at, removed_at, last_seen_at, last_address, rate_limit, internet_full_backups, internet_max_file, quota, unindexed_bytes, unindexed_at, sealed", "id"),
    ("pairings", "id, nameplate, secret, client_name, created_at, expires_at, failures, state, client_id, replaces", "id"),
    ("backup_sets", "id, client_id, name, hints", "id"),
    ("blobs", "client_id, kind, id, pack, \"offset\", length, compressed, stored_at, state, verified_at, copies", "client_id, kind, id"),
    ("snapshots", "id, client_id, set_id, root, started_at, finished_at, files, bytes, protected, held_until, root_kind, label", "id"),
    ("settings", "key, value", "key"),
    ("damage", "id, client_id, kind, blob, pack, \"offset\", length, reason, found_at, healed_at, snapshots", "id"),
    ("handshakes", "public_key, secs, nanos", "public_key"),
    ("staged_trees", "upload, client_id, id, pack, \"offset\", length, compressed", "upload, id"),
    ("retention_rules", "client_id, set_name, rules", "client_id, set_name"),
    ("replaced_keys", "client_id, public_key, hostname, replaced_at", "rowid"),
    ("key_wraps", "client_id, wrapped, recovery, updated_at", "client_id"),
    ("relays", "id, holder, registered_at, seen_at", "id"),
    ("leases", "name, relay, token, expires_at", "name"),
    ("condemned_packs", "pack, condemned_at", "pack"),
];

/// The tables a copy of the catalog beside the blobs holds (see
/// [`Catalog::copy_all_but_blobs_into`]).
const BESIDE_BLOBS: &[&str] = &[
    "clients",
    "backup_sets",
    "snapshots",
    "settings",
    "retention_rules",
    "replaced_keys",
    "key_wraps",
];

/// Tables whose `id` the engine hands out.
const COUNTED: &[&str] = &["clients", "pairings", "backup_sets", "snapshots", "damage"];

/// What [`Catalog::copy_into`] copied: rows per table.
pub type Copied = Vec<(&'static str, u64)>;

impl Catalog {
    /// Copies every row into `to` (which must hold none) in one of its
    /// transactions, then checks each table reads back the same.
    ///
    /// # Errors
    /// A target that is not empty; the engines' errors; a table that does
    /// not read back the same (nothing is committed then).
    pub fn copy_into(&self, to: &Catalog) -> Result<Copied> {
        self.copy_tables_into(to, |_| true)
    }

    /// Copies what a catalog holds beside the blobs' index into `to` (an
    /// empty SQLite file: the copy `ferry-relay catalog dump` keeps in the
    /// object store): clients and their keys, sets, snapshots, rules and
    /// settings; not the blobs (each pack's trailer lists its own), nor
    /// what only a running relay needs (staged trees, handshakes, relays,
    /// leases, damage found, pending pairings).
    ///
    /// # Errors
    /// As [`Catalog::copy_into`].
    pub fn copy_all_but_blobs_into(&self, to: &Catalog) -> Result<Copied> {
        self.copy_tables_into(to, |table| BESIDE_BLOBS.contains(&table))
    }

    fn copy_tables_into(
        &self,
        to: &Catalog,
        copied_table: impl Fn(&str) -> bool,
    ) -> Result<Copied> {
        let tx = to.db.write()?;
        for (table, ..) in TABLES {
            if tx.exists(&format!("SELECT 1 FROM {table}"), args![])? {
                return Err(CatalogError::Conflict(format!(
                    "the target catalog is not empty (its {table} has rows)"
                )));
            }
        }
        let mut copied = Vec::new();
        let tables = || TABLES.iter().filter(|(table, ..)| copied_table(table));
        for (table, columns, order) in tables() {
            let marks: Vec<String> = (1..=columns.split(',').count())
                .map(|i| format!("?{i}"))
                .collect();
            let insert = format!(
                "INSERT INTO {table} ({columns}) VALUES ({})",
                marks.join(", ")
            );
            let mut rows = 0;
            self.db.each(
                &format!("SELECT {columns} FROM {table} ORDER BY {order}"),
                args![],
                |row| {
                    let values: Vec<Value> = (0..marks.len())
                        .map(|i| row.get(i))
                        .collect::<Result<_>>()?;
                    tx.execute(&insert, &values)?;
                    rows += 1;
                    Ok(())
                },
            )?;
            copied.push((*table, rows));
        }
        for (table, columns, _) in tables() {
            if digest(&self.db, table, columns)? != digest(&tx, table, columns)? {
                return Err(CatalogError::Value(format!(
                    "table {table} does not read back the same from the target; nothing was committed"
                )));
            }
        }
        for table in COUNTED {
            let next = self.next_id(table)?;
            match tx.engine() {
                Engine::Postgres => {
                    tx.value::<i64>(
                        &format!(
                            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), ?1, false)"
                        ),
                        args![next],
                    )?;
                }
                Engine::Sqlite => {
                    tx.execute("DELETE FROM sqlite_sequence WHERE name = ?1", args![*table])?;
                    tx.execute(
                        "INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)",
                        args![*table, next - 1],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(copied)
    }

    /// The id `table` hands out next: past its rows, and past every id
    /// it ever gave (SQLite's `AUTOINCREMENT` counter, PostgreSQL's
    /// sequence).
    fn next_id(&self, table: &str) -> Result<i64> {
        let max: i64 = self.db.value(
            &format!("SELECT COALESCE(MAX(id), 0) FROM {table}"),
            args![],
        )?;
        let ever: i64 = match self.db.engine() {
            Engine::Sqlite => self
                .db
                .row(
                    "SELECT seq FROM sqlite_sequence WHERE name = ?1",
                    args![table],
                    |r| r.get(0),
                )?
                .unwrap_or(0),
            Engine::Postgres => self.db.value(
                &format!(
                    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {}",
                    pg_sequence(table)
                ),
                args![],
            )?,
        };
        Ok(max.max(ever) + 1)
    }
}

/// The sequence behind PostgreSQL's identity column `table.id`.
fn pg_sequence(table: &str) -> String {
    format!("{table}_id_seq")
}

/// A BLAKE3 digest of a table's rows, whatever order each engine sorts
/// its text in: the sorted digests of its rows, digested.
fn digest(db: &Db, table: &str, columns: &str) -> Result<[u8; 32]> {
    let count = columns.split(',').count();
    let mut rows = Vec::new();
    db.each(&format!("SELECT {columns} FROM {table}"), args![], |row| {
        let mut hasher = blake3::Hasher::new();
        for i in 0..count {
            hasher.update(format!("{:?}\u{1f}", row.get::<Value>(i)?).as_bytes());
        }
        rows.push(*hasher.finalize().as_bytes());
        Ok(())
    })?;
    rows.sort_unstable();
    let mut all = blake3::Hasher::new();
    for row in &rows {
        all.update(row);
    }
    Ok(*all.finalize().as_bytes())
}
