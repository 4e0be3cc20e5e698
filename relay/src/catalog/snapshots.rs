//! Snapshots: committed, listed, forgotten, and kept by retention rules.

use super::sql::args;
use super::{BlobKey, ClientId, Result, SetId, SnapshotId};
use serde::Serialize;

use super::Catalog;

/// A snapshot row, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRow {
    /// Its id.
    pub id: SnapshotId,
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
    /// Protected by the admin (`ferry-relay snapshots protect`).
    pub protected: bool,
    /// Why retention keeps it (filled by the listings that decide it).
    pub kept_by: Vec<&'static str>,
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

impl Catalog {
    /// Commits a snapshot; returns its id.
    ///
    /// # Errors
    /// SQLite errors.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_snapshot(
        &mut self,
        client: ClientId,
        set_id: SetId,
        root: BlobKey,
        started_ms: i64,
        finished_ms: i64,
        files: u64,
        bytes: u64,
    ) -> Result<SnapshotId> {
        self.db.value(
            "INSERT INTO snapshots (client_id, set_id, root, started_at, finished_at, files, bytes, root_kind)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
            args![
                client,
                set_id,
                &root.id,
                started_ms,
                finished_ms,
                files,
                bytes,
                root.kind as i64
            ],
        )
    }

    /// Keeps `label` (opaque, bounded by the session) with `snapshot`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_snapshot_label(&mut self, snapshot: SnapshotId, label: &[u8]) -> Result<()> {
        self.db.execute(
            "UPDATE snapshots SET label = ?2 WHERE id = ?1",
            args![snapshot, label],
        )?;
        Ok(())
    }

    /// The labels of `client`'s snapshots among `ids` that have one.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn snapshot_labels(&self, client: ClientId, ids: &[u64]) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut labels = Vec::new();
        for id in ids {
            let label: Option<Vec<u8>> = self.db.row(
                "SELECT label FROM snapshots WHERE id = ?1 AND client_id = ?2 AND label IS NOT NULL",
                args![*id, client],
                |r| r.get(0),
            )?;
            if let Some(label) = label {
                labels.push((*id, label));
            }
        }
        Ok(labels)
    }

    /// Forgets the given snapshots, except protected ones; returns the ids
    /// forgotten and the ids protected (the others do not exist).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn forget_snapshots(
        &mut self,
        ids: &[SnapshotId],
    ) -> Result<(Vec<SnapshotId>, Vec<SnapshotId>)> {
        let tx = self.db.write()?;
        let (mut forgotten, mut protected) = (Vec::new(), Vec::new());
        for id in ids {
            if tx.execute(
                "DELETE FROM snapshots WHERE id = ?1 AND protected = 0",
                args![id],
            )? > 0
            {
                forgotten.push(*id);
            } else if tx.exists("SELECT 1 FROM snapshots WHERE id = ?1", args![id])? {
                protected.push(*id);
            }
        }
        tx.commit()?;
        Ok((forgotten, protected))
    }

    /// Snapshots, oldest first, optionally of one client and one set name.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn list_snapshots(
        &self,
        client: Option<ClientId>,
        set: Option<&str>,
    ) -> Result<Vec<SnapshotRow>> {
        let rows = self.db.rows("SELECT s.id, c.name, b.name, s.root, s.started_at, s.finished_at, s.files, s.bytes, s.protected
             FROM snapshots s JOIN clients c ON c.id = s.client_id JOIN backup_sets b ON b.id = s.set_id
             WHERE (CAST(?1 AS BIGINT) IS NULL OR s.client_id = ?1) AND (CAST(?2 AS TEXT) IS NULL OR b.name = ?2)
             ORDER BY s.id", args![client, set], |r| {
            let root: Vec<u8> = r.get(3)?;
            let root_id: [u8; 32] = root.as_slice().try_into().unwrap_or([0; 32]);
            let (started_ms, finished_ms): (i64, i64) = (r.get(4)?, r.get(5)?);
            Ok(SnapshotRow {
                id: r.get(0)?,
                client: r.get(1)?,
                set: r.get(2)?,
                root: root_id.iter().map(|b| format!("{b:02x}")).collect(),
                started_at: ferry_protocol::units::format_rfc3339(started_ms),
                finished_at: ferry_protocol::units::format_rfc3339(finished_ms),
                files: r.get(6)?,
                bytes: r.get(7)?,
                protected: r.get(8)?,
                kept_by: Vec::new(),
                root_id,
                started_ms,
                finished_ms,
            })
        })?;
        Ok(rows)
    }
}
