//! The catalog's side of garbage collection: marking what snapshots reach,
//! dropping the rows of what they do not, and moving rows when packs are
//! rewritten. The walk itself lives in `crate::gc`.
//!
//! The mark set is a temporary table on this connection, not a hash set in
//! memory: a terabyte of 64 KiB chunks is sixteen million ids.

use std::collections::HashMap;

use super::sql::{args, Engine, Row};
use super::{BlobKey, BlobKind, BlobRow, Catalog, ClientId, Result, SnapshotId};
use crate::store::{BlobLocation, PackId};

/// What remains in one pack after the sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackUsage {
    /// Blobs still indexed in it.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl BlobKind {
    pub(super) fn from_code(code: i64) -> Result<Self> {
        Ok(match code {
            0 => BlobKind::Chunk,
            1 => BlobKind::Signature,
            2 => BlobKind::Tree,
            3 => BlobKind::Content,
            4 => BlobKind::Sealed,
            other => {
                return Err(super::CatalogError::Value(format!(
                    "no blob kind numbered {other}"
                )));
            }
        })
    }
}

/// A row of `SELECT client_id, kind, id, offset, length, compressed,
/// copies` (in that order, first) of blobs in `pack`.
pub(super) fn blob_in_pack(r: &Row, pack: PackId) -> Result<(ClientId, BlobRow)> {
    Ok((
        r.get::<ClientId>(0)?,
        BlobRow {
            kind: BlobKind::from_code(r.get(1)?)?,
            id: r.get(2)?,
            at: BlobLocation {
                pack,
                offset: r.get(3)?,
                len: r.get(4)?,
            },
            codec: super::codec_from_sql(r.get(5)?)?,
            copies: r.get(6)?,
        },
    ))
}

impl Catalog {
    /// Every snapshot as (client, snapshot id, root tree id): the roots of
    /// the mark phase. Snapshots of removed clients count: their data stays.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn snapshot_roots(&self) -> Result<Vec<(ClientId, SnapshotId, BlobKey)>> {
        let rows = self.db.rows(
            "SELECT client_id, id, root, root_kind FROM snapshots ORDER BY id",
            args![],
            |r| {
                let id: [u8; 32] = r.get(2)?;
                let kind = match r.get::<i64>(3)? {
                    4 => BlobKind::Sealed,
                    _ => BlobKind::Tree,
                };
                let root = BlobKey { kind, id };
                Ok((r.get::<ClientId>(0)?, r.get::<SnapshotId>(1)?, root))
            },
        )?;
        Ok(rows)
    }

    /// Starts a mark phase with an empty mark set.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn begin_mark(&mut self) -> Result<()> {
        // SQLite keeps it as its key alone (no rowid beside it).
        let (bytes, rowless) = match self.db.engine() {
            Engine::Sqlite => ("BLOB", " WITHOUT ROWID"),
            Engine::Postgres => ("BYTEA", ""),
        };
        self.db.batch("DROP TABLE IF EXISTS marked")?;
        self.db.batch(&format!(
            "CREATE TEMP TABLE marked (
                 client_id BIGINT NOT NULL,
                 kind BIGINT NOT NULL,
                 id {bytes} NOT NULL,
                 PRIMARY KEY (client_id, kind, id)
             ){rowless}"
        ))
    }

    /// Marks a blob reachable; true when it was not marked before (so the
    /// walk descends into it once, however many snapshots share it).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn mark(&mut self, client: ClientId, kind: BlobKind, id: &[u8; 32]) -> Result<bool> {
        let added = self.db.execute(
            "INSERT INTO marked (client_id, kind, id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            args![client, kind as i64, id],
        )?;
        Ok(added == 1)
    }

    /// Trees and contents indexed at or after `cutoff_ms` that are not
    /// marked: the roots of what the grace period keeps.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn young_unmarked_objects(
        &self,
        cutoff_ms: i64,
    ) -> Result<Vec<(ClientId, BlobKind, [u8; 32])>> {
        let rows = self.db.rows(
            "SELECT client_id, kind, id FROM blobs b WHERE stored_at >= ?1 AND kind IN (2, 3)
             AND NOT EXISTS (SELECT 1 FROM marked m
                 WHERE m.client_id = b.client_id AND m.kind = b.kind AND m.id = b.id)",
            args![cutoff_ms],
            |r| {
                Ok((
                    r.get::<ClientId>(0)?,
                    BlobKind::from_code(r.get(1)?)?,
                    r.get(2)?,
                ))
            },
        )?;
        Ok(rows)
    }

    /// Runs `f` holding the catalog's write lock (`BEGIN IMMEDIATE`): no
    /// upload indexes, commits or reuses a blob meanwhile. Committed when
    /// `f` succeeds, rolled back when it fails.
    ///
    /// # Errors
    /// SQLite errors, or what `f` returns.
    pub fn write_locked<T, E: From<super::CatalogError>>(
        &mut self,
        f: impl FnOnce(&mut Catalog) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.db.begin_write().map_err(E::from)?;
        match f(self) {
            Ok(value) => {
                self.db.batch("COMMIT").map_err(E::from)?;
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = self.db.batch("ROLLBACK") {
                    tracing::warn!("catalog: a rollback failed: {rollback}");
                }
                Err(e)
            }
        }
    }

    /// Deletes the rows of every unmarked blob indexed before `cutoff_ms`;
    /// returns how many and their stored bytes. Younger unmarked blobs (an
    /// upload that may yet resume) are kept and counted in the third
    /// figure. Runs inside [`Catalog::write_locked`], after the last marks.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn sweep(&mut self, cutoff_ms: i64) -> Result<(u64, u64, u64)> {
        const UNMARKED: &str = "NOT EXISTS (SELECT 1 FROM marked m
            WHERE m.client_id = b.client_id AND m.kind = b.kind AND m.id = b.id)";
        let count: u64 = self.db.value(
            &format!("SELECT COUNT(*) FROM blobs b WHERE stored_at < ?1 AND {UNMARKED}"),
            args![cutoff_ms],
        )?;
        let bytes: u64 = self.db.value(
            &format!("SELECT CAST(COALESCE(SUM(length), 0) AS BIGINT) FROM blobs b WHERE stored_at < ?1 AND {UNMARKED}"),
            args![cutoff_ms],
        )?;
        let young: u64 = self.db.value(
            &format!("SELECT COUNT(*) FROM blobs b WHERE stored_at >= ?1 AND {UNMARKED}"),
            args![cutoff_ms],
        )?;
        self.db.execute(
            &format!("DELETE FROM blobs AS b WHERE stored_at < ?1 AND {UNMARKED}"),
            args![cutoff_ms],
        )?;
        Ok((count, bytes, young))
    }

    /// Ends a mark phase: drops the mark set.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn end_mark(&mut self) -> Result<()> {
        self.db.batch("DROP TABLE IF EXISTS marked")
    }

    /// Condemns `pack` at `now_ms` (no row names it any more) unless it is
    /// already; returns when it was condemned first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn condemn_pack(&self, pack: PackId, now_ms: i64) -> Result<i64> {
        self.db.execute(
            "INSERT INTO condemned_packs (pack, condemned_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            args![pack, now_ms],
        )?;
        self.db.value(
            "SELECT condemned_at FROM condemned_packs WHERE pack = ?1",
            args![pack],
        )
    }

    /// Forgets a condemned pack (deleted).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn forget_condemned_pack(&self, pack: PackId) -> Result<()> {
        self.db
            .execute("DELETE FROM condemned_packs WHERE pack = ?1", args![pack])?;
        Ok(())
    }

    /// For each pack that still holds indexed blobs, how many and how many bytes.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn pack_usage(&self) -> Result<HashMap<PackId, PackUsage>> {
        let rows = self.db.rows(
            "SELECT pack, COUNT(*), CAST(SUM(length * copies) AS BIGINT) FROM blobs GROUP BY pack",
            args![],
            |r| {
                Ok((
                    r.get(0)?,
                    PackUsage {
                        blobs: r.get(1)?,
                        bytes: r.get(2)?,
                    },
                ))
            },
        )?;
        Ok(rows.into_iter().collect())
    }

    /// Every blob indexed in `pack`, with its client, in pack order.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn blobs_in_pack(&self, pack: PackId) -> Result<Vec<(ClientId, BlobRow)>> {
        let rows = self.db.rows("SELECT client_id, kind, id, \"offset\", length, compressed, copies FROM blobs WHERE pack = ?1 ORDER BY \"offset\"", args![pack], |r| blob_in_pack(r, pack))?;
        Ok(rows)
    }

    /// Points rows at their blobs' new copies, in one transaction. Only rows
    /// still at `from` move: a row deleted meanwhile stays deleted.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn relocate(&mut self, from: PackId, moved: &[(ClientId, BlobRow)]) -> Result<()> {
        let tx = self.db.write()?;
        for (client, row) in moved {
            tx.execute(
                "UPDATE blobs SET pack = ?4, \"offset\" = ?5
                 WHERE client_id = ?1 AND kind = ?2 AND id = ?3 AND pack = ?6",
                args![
                    client,
                    row.kind as i64,
                    &row.id,
                    row.at.pack,
                    row.at.offset,
                    from
                ],
            )?;
        }
        tx.commit()
    }
}
