//! The blob index: where each client's chunks, trees and contents are
//! stored, written only after their pack is durable.

use super::ports::BlobIndex;
use std::collections::{HashMap, HashSet};

use super::sql::{args, values_list, Db, Engine, Row, Value, ROWS_PER_INSERT};
use super::{codec_from_sql, BlobKind, BlobRow, BlobState, Catalog, ClientId, Result};
use crate::clock::now_ms;

impl BlobIndex for Catalog {
    /// See [`BlobIndex::find_blob_state`].
    ///
    /// # Errors
    /// SQLite errors.
    fn find_blob_state(
        &self,
        client: ClientId,
        kind: BlobKind,
        id: &[u8; 32],
    ) -> Result<Option<(BlobRow, BlobState)>> {
        self.db.row(
                "SELECT pack, \"offset\", length, compressed, copies, state FROM blobs WHERE client_id = ?1 AND kind = ?2 AND id = ?3",
            args![client, kind as i64, id], |r| {
                Ok((placed(kind, *id, r, 0)?, BlobState::from_code(r.get(5)?)))
            })
    }

    /// See [`BlobIndex::insert_blobs`]: one transaction.
    ///
    /// # Errors
    /// SQLite errors.
    fn insert_blobs(&mut self, client: ClientId, rows: &[BlobRow]) -> Result<()> {
        let tx = self.db.write()?;
        // A blob sent again in place of a damaged or incomplete one
        // takes its row: that is how a backup heals a snapshot (and its
        // damage record, if the client has one open, is marked healed).
        let now = now_ms();
        let open_damage = tx.exists(
            "SELECT 1 FROM damage WHERE client_id = ?1 AND healed_at IS NULL LIMIT 1",
            args![client],
        )?;
        // One row per key (the first, as a whole row is kept): PostgreSQL
        // refuses a statement that would update a row twice.
        let mut seen = HashSet::new();
        let rows: Vec<&BlobRow> = rows.iter().filter(|r| seen.insert(r.key())).collect();
        // With damage to heal, row by row: each row that changed heals.
        let per_statement = if open_damage { 1 } else { ROWS_PER_INSERT };
        for run in rows.chunks(per_statement) {
            let values: Vec<Value> = run
                .iter()
                .flat_map(|row| {
                    let more = [row.codec.code().into(), now.into(), row.copies.into()];
                    row.key_and_place(client).into_iter().chain(more)
                })
                .collect();
            let changed = tx.execute(
                &format!(
                    "INSERT INTO blobs (client_id, kind, id, pack, \"offset\", length, compressed, stored_at, copies)
                     VALUES {}
                     {TAKES_A_DAMAGED_ROW}",
                    values_list(run.len(), 9)
                ),
                &values,
            )?;
            if changed > 0 && open_damage {
                let row = run[0];
                tx.execute(
                    "UPDATE damage SET healed_at = ?4
                     WHERE client_id = ?1 AND kind = ?2 AND blob = ?3 AND healed_at IS NULL",
                    args![client, row.kind as i64, &row.id, now],
                )?;
            }
        }
        tx.commit()
    }

    /// See [`BlobIndex::reuse`]: one transaction holding the write lock,
    /// so a sweep deletes a blob either before this looks (it is missing,
    /// and sent again) or after the upload is done with it.
    ///
    /// # Errors
    /// SQLite errors.
    fn reuse(
        &mut self,
        client: ClientId,
        kind: BlobKind,
        ids: &[[u8; 32]],
        since_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<bool>> {
        let tx = self.db.write()?;
        let whole = whole_among(&tx, client, kind, ids)?;
        // Only what is there is stamped (a first backup's finds nothing).
        let found: Vec<[u8; 32]> = ids
            .iter()
            .filter(|id| whole.contains(*id))
            .copied()
            .collect();
        if tx.engine() == Engine::Postgres && !found.is_empty() {
            // Rows taken by their place (`among`), never by a scan of the
            // table, however small the planner thinks it is.
            tx.batch("SET LOCAL enable_seqscan = off")?;
        }
        for run in found.chunks(IN_LIST) {
            let (list, mut values) = id_list(run, 5);
            values[..4].clone_from_slice(args![client, kind as i64, now_ms, since_ms]);
            tx.execute(
                &format!(
                    "UPDATE blobs SET stored_at = ?3 WHERE {} AND state = 0 AND stored_at < ?4",
                    among(tx.engine(), &list)
                ),
                &values,
            )?;
        }
        tx.commit()?;
        Ok(ids.iter().map(|id| whole.contains(id)).collect())
    }

    /// See [`BlobIndex::find_blobs`]: a statement per 256 ids.
    ///
    /// # Errors
    /// The engine's errors.
    fn find_blobs(
        &self,
        client: ClientId,
        kind: BlobKind,
        ids: &[[u8; 32]],
    ) -> Result<HashMap<[u8; 32], BlobRow>> {
        let mut found = HashMap::new();
        for run in ids.chunks(IN_LIST) {
            let (list, mut values) = id_list(run, 3);
            values[..2].clone_from_slice(args![client, kind as i64]);
            let columns: Vec<String> = ["pack", "\"offset\"", "length", "compressed", "copies"]
                .iter()
                .map(|c| lookup(c))
                .collect();
            self.db.each(
                &format!(
                    "SELECT v.column1, {} FROM (VALUES {}) AS v WHERE {} != ?{}",
                    columns.join(", "),
                    rows_of(&list),
                    lookup("state"),
                    values.len() + 1
                ),
                &[values, args![BlobState::Damaged.code()].to_vec()].concat(),
                |r| {
                    let id: [u8; 32] = r.get(0)?;
                    found.insert(id, placed(kind, id, r, 1)?);
                    Ok(())
                },
            )?;
        }
        Ok(found)
    }

    /// See [`BlobIndex::whole_among`]: a statement per 256 ids.
    ///
    /// # Errors
    /// The engine's errors.
    fn whole_among(
        &self,
        client: ClientId,
        kind: BlobKind,
        ids: &[[u8; 32]],
    ) -> Result<HashSet<[u8; 32]>> {
        whole_among(&self.db, client, kind, ids)
    }
}

/// Blob `id` of `kind` as the row `r` places it: pack, offset, length,
/// compressed and copies from column `from` on.
fn placed(kind: BlobKind, id: [u8; 32], r: &Row, from: usize) -> Result<BlobRow> {
    Ok(BlobRow {
        kind,
        id,
        at: crate::store::BlobLocation {
            pack: r.get(from)?,
            offset: r.get(from + 1)?,
            len: r.get(from + 2)?,
        },
        codec: codec_from_sql(r.get(from + 3)?)?,
        copies: r.get(from + 4)?,
    })
}

/// What an insert of blob rows does with a row the client has already: a
/// blob sent again in place of a damaged or incomplete one takes its row
/// (whole again); a whole row is kept as it is.
pub(super) const TAKES_A_DAMAGED_ROW: &str = "ON CONFLICT (client_id, kind, id) DO UPDATE SET
   pack = excluded.pack, \"offset\" = excluded.\"offset\", length = excluded.length,
   compressed = excluded.compressed, stored_at = excluded.stored_at,
   copies = excluded.copies,
   state = 0, verified_at = 0
 WHERE blobs.state != 0";

/// Ids in one `IN (…)` list at most: far below SQLite's and PostgreSQL's
/// limits on parameters.
const IN_LIST: usize = 256;

/// `?from, ?from+1, …` for `run`'s ids, padded with its last id to a power
/// of two (so a query has a few shapes, each prepared once), and the
/// values: `from - 1` placeholders for the caller's first parameters, then
/// the ids.
///
/// A statement over such a list must find each id through the whole key
/// `(client_id, kind, id)`. Written `client_id = ?1 AND kind = ?2 AND id
/// IN (…)`, PostgreSQL plans it on a catalog without statistics yet (a
/// fresh one, during its first backups) as a scan of all the client's
/// blobs of that kind, filtered by the list: one statement per batch, each
/// slower as the catalog grows.
fn id_list(run: &[[u8; 32]], from: usize) -> (Vec<String>, Vec<Value>) {
    let len = run.len().next_power_of_two().max(8);
    let last = run.last().copied().unwrap_or_default();
    let ids = run.iter().copied().chain(std::iter::repeat(last));
    let mut values = vec![Value::Null; from - 1];
    values.extend(ids.take(len).map(|id| Value::from(&id)));
    let list: Vec<String> = (from..from + len).map(|i| format!("?{i}")).collect();
    (list, values)
}

/// `(?a), (?b), …`: a `VALUES` list of the ids `list` names.
fn rows_of(list: &[String]) -> String {
    list.iter()
        .map(|id| format!("({id})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Column `column` of the blob of client `?1` and kind `?2` whose id is
/// `v.column1` (a `VALUES` row), as a correlated subquery: each a lookup of
/// the whole key, whatever the planner knows of the table (both engines
/// run it once per row; neither turns it into a join).
fn lookup(column: &str) -> String {
    format!(
        "(SELECT b.{column} FROM blobs b WHERE b.client_id = ?1 AND b.kind = ?2 AND b.id = v.column1)"
    )
}

/// The condition that picks the blobs of client `?1` and kind `?2` whose
/// ids `list` names, each found through the whole key `(client_id, kind,
/// id)` (see [`id_list`]), as each engine does so. SQLite searches its key
/// for each listed id. PostgreSQL, without statistics, plans `id IN (…)`
/// as a scan of all the client's blobs of that kind, and a join with a
/// list as a scan of the table once it is large: so each row is found by
/// a subquery of its own, and taken by its place (`ctid`; the caller turns
/// sequential scans off for its transaction, or a small table is scanned
/// for the places instead).
fn among(engine: Engine, list: &[String]) -> String {
    match engine {
        Engine::Sqlite => format!(
            "client_id = ?1 AND kind = ?2 AND id IN ({})",
            list.join(", ")
        ),
        Engine::Postgres => format!(
            "ctid = ANY (ARRAY(
               SELECT (SELECT b.ctid FROM blobs b
                       WHERE b.client_id = ?1 AND b.kind = ?2 AND b.id = v.column1)
               FROM (VALUES {}) AS v))",
            rows_of(list)
        ),
    }
}

/// Which of `client`'s blobs `ids` of `kind` are stored whole.
fn whole_among(
    db: &Db,
    client: ClientId,
    kind: BlobKind,
    ids: &[[u8; 32]],
) -> Result<HashSet<[u8; 32]>> {
    let mut whole = HashSet::new();
    for run in ids.chunks(IN_LIST) {
        let (list, mut values) = id_list(run, 3);
        values[..2].clone_from_slice(args![client, kind as i64]);
        db.each(
            &format!(
                "SELECT v.column1 FROM (VALUES {}) AS v WHERE {} = 0",
                rows_of(&list),
                lookup("state")
            ),
            &values,
            |r| {
                whole.insert(r.get(0)?);
                Ok(())
            },
        )?;
    }
    Ok(whole)
}

impl Catalog {
    /// For each pack, the end of its last indexed blob (for cutting torn tails).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn committed_pack_ends(
        &self,
    ) -> Result<std::collections::HashMap<crate::store::PackId, u64>> {
        let rows = self.db.rows(
            "SELECT pack, MAX(\"offset\" + length * copies) FROM blobs GROUP BY pack",
            args![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(rows.into_iter().collect())
    }
}
