//! The catalog's side of `verify`: which packs to check first, when each
//! blob was last found whole, what was found damaged, and which snapshots a
//! backup healed since. The checks themselves live in `crate::verify`.

use super::sql::args;
use serde::Serialize;

use super::ports::DamageLog;
use super::{BlobKind, BlobRow, BlobState, Catalog, ClientId, Result, SnapshotId};
use crate::clock::now_ms;
use crate::store::PackId;

/// One damaged blob as recorded in the `damage` table.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DamageRecord {
    /// The client whose blob it is.
    pub client: String,
    /// `chunk`, `tree`, `content` or `signature`.
    pub kind: &'static str,
    /// The blob id, hex.
    pub blob: String,
    /// Where it was.
    pub pack: PackId,
    /// Its offset in the pack.
    pub offset: u64,
    /// Its stored length.
    pub length: u32,
    /// What was wrong.
    pub reason: String,
    /// When it was found (RFC 3339).
    pub found_at: String,
    /// When a backup sent it again (RFC 3339), if one has.
    pub healed_at: Option<String>,
}

/// A blob's kind as `verify` names it.
pub fn kind_name(kind: BlobKind) -> &'static str {
    match kind {
        BlobKind::Chunk => "chunk",
        BlobKind::Signature => "signature",
        BlobKind::Tree => "tree",
        BlobKind::Content => "content",
        BlobKind::Sealed => "sealed object",
    }
}

/// Lower-case hex of an id.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

impl Catalog {
    /// Every pack named by a row, with the oldest `verified_at` of its
    /// rows: least recently verified first, so a time-boxed run resumes
    /// where the last one stopped.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn packs_by_verification(&self) -> Result<Vec<(PackId, i64)>> {
        let rows = self.db.rows("SELECT pack, MIN(verified_at) FROM blobs GROUP BY pack ORDER BY MIN(verified_at), pack", args![], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows)
    }

    /// The rows of `pack` last verified before `cutoff_ms`, in pack order,
    /// with their clients and states.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn rows_to_verify(
        &self,
        pack: PackId,
        cutoff_ms: i64,
    ) -> Result<Vec<(ClientId, BlobRow, BlobState)>> {
        let rows = self.db.rows(
            "SELECT client_id, kind, id, \"offset\", length, compressed, copies, state FROM blobs
             WHERE pack = ?1 AND verified_at < ?2 ORDER BY \"offset\"",
            args![pack, cutoff_ms],
            |r| {
                let (client, row) = super::garbage::blob_in_pack(r, pack)?;
                Ok((client, row, BlobState::from_code(r.get(7)?)))
            },
        )?;
        Ok(rows)
    }

    /// How many rows of `pack` were last verified before `cutoff_ms`, and
    /// their bytes.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn due_in_pack(&self, pack: PackId, cutoff_ms: i64) -> Result<(u64, u64)> {
        self.db.row("SELECT COUNT(*), CAST(COALESCE(SUM(length * copies), 0) AS BIGINT) FROM blobs WHERE pack = ?1 AND verified_at < ?2", args![pack, cutoff_ms], |r| Ok((r.get::<i64>(0)? as u64, r.get::<i64>(1)? as u64)))?.ok_or_else(|| super::CatalogError::Value("no such row".into()))
    }

    /// Records the rows of `pack` up to offset `last` that were due (last
    /// verified before `cutoff_ms`) as verified now, but for those found
    /// damaged. Rows a collection or an upload added to the pack since it
    /// was read lie past `last`, so they stay due.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn mark_pack_verified(&mut self, pack: PackId, last: u64, cutoff_ms: i64) -> Result<()> {
        self.db.execute(
            "UPDATE blobs SET verified_at = ?4
             WHERE pack = ?1 AND \"offset\" <= ?2 AND verified_at < ?3 AND state != 1",
            args![pack, last, cutoff_ms, now_ms()],
        )?;
        Ok(())
    }

    /// Sets a whole-or-incomplete state (never touches a damaged row).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_complete(
        &mut self,
        client: ClientId,
        kind: BlobKind,
        id: &[u8; 32],
        complete: bool,
    ) -> Result<()> {
        let (from, to) = if complete {
            (BlobState::Incomplete, BlobState::Whole)
        } else {
            (BlobState::Whole, BlobState::Incomplete)
        };
        self.db.execute(
            "UPDATE blobs SET state = ?5 WHERE client_id = ?1 AND kind = ?2 AND id = ?3 AND state = ?4",
            args![client, kind as i64, id, from.code(), to.code()],
        )?;
        Ok(())
    }

    /// Records which snapshots reach a damaged blob (as `verify` found).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_damage_snapshots(
        &mut self,
        client: ClientId,
        kind: BlobKind,
        id: &[u8; 32],
        snapshots: &[SnapshotId],
    ) -> Result<()> {
        let text = serde_json::to_string(snapshots).unwrap_or_else(|_| "[]".into());
        self.db.execute(
            "UPDATE damage SET snapshots = ?4
             WHERE client_id = ?1 AND kind = ?2 AND blob = ?3 AND healed_at IS NULL",
            args![client, kind as i64, id, text],
        )?;
        Ok(())
    }

    /// The client's snapshots that reach damage not yet healed, and those
    /// whose damage a backup healed since (each still existing, sorted).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn client_damage(&self, client: ClientId) -> Result<(Vec<u64>, Vec<u64>)> {
        let mut damaged = std::collections::BTreeSet::new();
        let mut healed = std::collections::BTreeSet::new();
        let rows = self.db.rows(
            "SELECT snapshots, healed_at IS NOT NULL FROM damage WHERE client_id = ?1",
            args![client],
            |r| Ok((r.get::<String>(0)?, r.get::<bool>(1)?)),
        )?;
        for (text, was_healed) in rows {
            let ids: Vec<u64> = serde_json::from_str(&text).unwrap_or_default();
            if was_healed {
                healed.extend(ids);
            } else {
                damaged.extend(ids);
            }
        }
        let existing: std::collections::HashSet<u64> = self
            .db
            .rows(
                "SELECT id FROM snapshots WHERE client_id = ?1",
                args![client],
                |r| r.get(0),
            )?
            .into_iter()
            .collect();
        let keep = |set: std::collections::BTreeSet<u64>| -> Vec<u64> {
            set.into_iter().filter(|id| existing.contains(id)).collect()
        };
        let damaged = keep(damaged);
        let healed = keep(healed)
            .into_iter()
            .filter(|id| !damaged.contains(id))
            .collect();
        Ok((damaged, healed))
    }

    /// Damaged blobs not yet sent again, counted per client name.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn open_damage_by_client(&self) -> Result<std::collections::HashMap<String, u64>> {
        let rows = self.db.rows(
            "SELECT c.name, COUNT(*) FROM damage d JOIN clients c ON c.id = d.client_id
             WHERE d.healed_at IS NULL GROUP BY c.id, c.name",
            args![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(rows.into_iter().collect())
    }

    /// Damage records, oldest first: every one, or with `healed_since`
    /// only those healed since then.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn damage_records(&self, healed_since: Option<i64>) -> Result<Vec<DamageRecord>> {
        let rows = self.db.rows("SELECT c.name, d.kind, d.blob, d.pack, d.\"offset\", d.length, d.reason, d.found_at, d.healed_at
             FROM damage d JOIN clients c ON c.id = d.client_id
             WHERE CAST(?1 AS BIGINT) IS NULL OR d.healed_at >= ?1 ORDER BY d.id", args![healed_since], |r| {
            let blob: Vec<u8> = r.get(2)?;
            Ok(DamageRecord {
                client: r.get(0)?,
                kind: kind_name(BlobKind::from_code(r.get(1)?)?),
                blob: hex(&blob),
                pack: r.get(3)?,
                offset: r.get::<i64>(4)? as u64,
                length: r.get(5)?,
                reason: r.get(6)?,
                found_at: ferry_protocol::units::format_rfc3339(r.get(7)?),
                healed_at: r
                    .get::<Option<i64>>(8)?
                    .map(ferry_protocol::units::format_rfc3339),
            })
        })?;
        Ok(rows)
    }

    /// Repairs the catalog file at `path` (the relay stopped): first by
    /// rebuilding every index in place (`REINDEX`); when that fails, by
    /// copying every table into a fresh file (`VACUUM INTO`, which reads
    /// the tables, never the old indexes) that then replaces it, the damaged
    /// file kept beside it as `catalog.sqlite.damaged`. Returns the repaired
    /// file's `integrity_check` ("ok"); damage in a table's own pages is
    /// not repaired (the error says so).
    ///
    /// # Errors
    /// SQLite or I/O errors.
    pub fn repair_file(path: &std::path::Path) -> anyhow::Result<String> {
        if let Some(done) = settle_interrupted_repair(path)? {
            tracing::warn!("{done}");
        }
        // Never created: a missing catalog is an error, not an empty one.
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| anyhow::anyhow!("cannot open the catalog {}: {e}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let reindexed = conn
            .execute_batch("REINDEX")
            .and_then(|()| conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)));
        if let Ok(outcome) = &reindexed {
            if outcome == "ok" {
                return Ok(outcome.clone());
            }
        }
        tracing::warn!("REINDEX did not repair the catalog ({reindexed:?}); copying its tables into a new file");
        let fresh = path.with_extension("sqlite.repaired");
        let _ = std::fs::remove_file(&fresh);
        copy_tables(&conn, &fresh).map_err(|e| {
            anyhow::anyhow!(
                "its tables cannot be read back either ({e}): restore catalog.sqlite from a copy"
            )
        })?;
        drop(conn);
        let outcome: String =
            rusqlite::Connection::open(&fresh)?
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if outcome != "ok" {
            anyhow::bail!("the copy of its tables does not check clean either ({outcome})");
        }
        std::fs::File::open(&fresh)?.sync_all()?;
        let damaged = path.with_extension("sqlite.damaged");
        std::fs::rename(path, &damaged)?;
        for suffix in ["-wal", "-shm"] {
            // Absent when SQLite closed cleanly; an old WAL must never meet the new file.
            let _ = std::fs::rename(with_suffix(path, suffix), with_suffix(&damaged, suffix));
        }
        std::fs::rename(&fresh, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(outcome)
    }

    /// The client's name, for reports.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn client_name(&self, client: ClientId) -> Result<String> {
        Ok(super::clients::client_where(&self.db, "id = ?1", client)?
            .map_or_else(|| format!("#{client}"), |c| c.name))
    }
}

/// `path` with `suffix` after its name (`catalog.sqlite` + `-wal`).
fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Finishes, or rolls back, the file swap of a catalog repair that a kill
/// (or a power cut) interrupted; says what it did. Call it only while
/// holding the data directory's lock.
///
/// The repair writes and checks `catalog.sqlite.repaired`, then renames
/// the catalog to `.damaged`, then the copy to the catalog. So: a catalog
/// beside a `.repaired` is the original (the copy is unfinished: dropped);
/// no catalog but a `.repaired` and a `.damaged` means the copy was whole
/// (it is put in place); no catalog but a `.damaged` alone means the
/// original is put back.
///
/// # Errors
/// I/O errors.
pub fn settle_interrupted_repair(path: &std::path::Path) -> anyhow::Result<Option<String>> {
    let fresh = path.with_extension("sqlite.repaired");
    let damaged = path.with_extension("sqlite.damaged");
    let sync_dir = || -> std::io::Result<()> {
        match path.parent() {
            Some(dir) => std::fs::File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    };
    if path.exists() {
        if !fresh.exists() {
            return Ok(None);
        }
        std::fs::remove_file(&fresh)?;
        sync_dir()?;
        return Ok(Some(format!(
            "removed {}: an unfinished copy left by an interrupted catalog repair (the catalog itself was never replaced)",
            fresh.display()
        )));
    }
    if fresh.exists() && damaged.exists() {
        std::fs::rename(&fresh, path)?;
        sync_dir()?;
        return Ok(Some(format!(
            "finished an interrupted catalog repair: its checked copy is now {} (the damaged one stays as {})",
            path.display(),
            damaged.display()
        )));
    }
    if damaged.exists() && !fresh.exists() {
        for suffix in ["-wal", "-shm"] {
            let side = with_suffix(&damaged, suffix);
            if side.exists() {
                std::fs::rename(&side, with_suffix(path, suffix))?;
            }
        }
        std::fs::rename(&damaged, path)?;
        sync_dir()?;
        return Ok(Some(format!(
            "rolled back an interrupted catalog repair: {} is the catalog again",
            path.display()
        )));
    }
    Ok(None)
}

/// Copies every table of `from` (read by table scans, never through an
/// index) into a new database at `to`, then builds the indexes there anew.
fn copy_tables(from: &rusqlite::Connection, to: &std::path::Path) -> rusqlite::Result<()> {
    let schema: Vec<(String, String, String)> = from
        .prepare(
            "SELECT type, name, sql FROM sqlite_master
             WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let version: i64 = from.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    {
        let fresh = rusqlite::Connection::open(to)?;
        for (kind, _, sql) in &schema {
            if kind == "table" {
                fresh.execute_batch(sql)?;
            }
        }
        fresh.pragma_update(None, "user_version", version)?;
    }
    from.execute("ATTACH DATABASE ?1 AS fresh", [to.to_string_lossy()])?;
    for (kind, name, _) in &schema {
        if kind == "table" {
            from.execute_batch(&format!(
                "INSERT INTO fresh.\"{name}\" SELECT * FROM main.\"{name}\" NOT INDEXED"
            ))?;
        }
    }
    let sequences: bool = from.query_row(
        "SELECT COUNT(*) > 0 FROM main.sqlite_master WHERE name = 'sqlite_sequence'",
        [],
        |r| r.get(0),
    )?;
    if sequences {
        from.execute_batch(
            "DELETE FROM fresh.sqlite_sequence; INSERT INTO fresh.sqlite_sequence SELECT * FROM main.sqlite_sequence",
        )?;
    }
    from.execute_batch("DETACH DATABASE fresh")?;
    let fresh = rusqlite::Connection::open(to)?;
    for (kind, _, sql) in &schema {
        if kind == "index" {
            fresh.execute_batch(sql)?;
        }
    }
    Ok(())
}

impl DamageLog for Catalog {
    /// Marks a blob damaged, if its row is still the one read, and records
    /// why (once per blob until it is healed); true when it was marked.
    ///
    /// # Errors
    /// SQLite errors.
    fn mark_damaged(&mut self, client: ClientId, row: &BlobRow, reason: &str) -> Result<bool> {
        let tx = self.db.write()?;
        let changed = tx.execute(
            "UPDATE blobs SET state = 1
             WHERE client_id = ?1 AND kind = ?2 AND id = ?3 AND pack = ?4 AND \"offset\" = ?5",
            args![client, row.kind as i64, &row.id, row.at.pack, row.at.offset],
        )?;
        if changed > 0 {
            let known: Option<i64> = tx
                .row("SELECT id FROM damage WHERE client_id = ?1 AND kind = ?2 AND blob = ?3 AND healed_at IS NULL", args![client, row.kind as i64, &row.id], |r| r.get(0))?;
            if known.is_none() {
                tx.execute(
                    "INSERT INTO damage (client_id, kind, blob, pack, \"offset\", length, reason, found_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    &row
                        .key_and_place(client)
                        .into_iter()
                        .chain([reason.into(), now_ms().into()])
                        .collect::<Vec<_>>(),
                )?;
            }
        }
        tx.commit()?;
        Ok(changed > 0)
    }

    /// Whether any of the client's blobs is damaged or incomplete (then a
    /// commit checks its snapshot's whole closure).
    ///
    /// # Errors
    /// SQLite errors.
    fn has_damage(&self, client: ClientId) -> Result<bool> {
        self.db.exists(
            "SELECT 1 FROM blobs WHERE client_id = ?1 AND state != 0 LIMIT 1",
            args![client],
        )
    }
}
