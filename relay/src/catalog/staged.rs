//! Trees an open upload sent, staged apart from the blob index.
//!
//! A tree in `blobs` is one whose closure a commit checked, so a later
//! backup told it exists skips all that is under it. An upload's own trees
//! therefore wait for its commit; they wait here, on disk, rather than in
//! the relay's memory (a backup of a million directories would otherwise
//! hold a million rows in RAM until it ends). The commit moves them into
//! `blobs`; an upload that ends without one drops them, and a start drops
//! what a killed relay left.

use super::sql::{args, values_list, Value, ROWS_PER_INSERT};

use super::{codec_from_sql, BlobKind, BlobRow, Catalog, ClientId, Result};
use crate::clock::now_ms;
use crate::store::BlobLocation;

impl Catalog {
    /// Stages `client`'s trees `rows` (durable in their packs) for `upload`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn stage_trees(&mut self, upload: u64, client: ClientId, rows: &[BlobRow]) -> Result<()> {
        let tx = self.db.write()?;
        for run in rows.chunks(ROWS_PER_INSERT) {
            let values: Vec<Value> = run
                .iter()
                .flat_map(|row| {
                    args![
                        upload,
                        client,
                        &row.id,
                        row.at.pack,
                        row.at.offset,
                        row.at.len,
                        row.codec.code()
                    ]
                    .to_vec()
                })
                .collect();
            tx.execute(
                &format!(
                    "INSERT INTO staged_trees (upload, client_id, id, pack, \"offset\", length, compressed)
                     VALUES {} ON CONFLICT DO NOTHING",
                    values_list(run.len(), 7)
                ),
                &values,
            )?;
        }
        tx.commit()
    }

    /// A tree staged by `upload`, if it is.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn staged_tree(&self, upload: u64, id: &[u8; 32]) -> Result<Option<BlobRow>> {
        self.db.row(
                "SELECT pack, \"offset\", length, compressed FROM staged_trees WHERE upload = ?1 AND id = ?2",
            args![upload, id], |r| {
                Ok(BlobRow {
                    kind: BlobKind::Tree,
                    id: *id,
                    at: BlobLocation {
                        pack: r.get(0)?,
                        offset: r.get(1)?,
                        len: r.get(2)?,
                    },
                    codec: codec_from_sql(r.get(3)?)?,
                    // Staged only by this version, which stores trees twice.
                                        copies: BlobRow::copies_of(BlobKind::Tree),
                })
            })
    }

    /// Moves `upload`'s staged trees into the blob index (its commit
    /// checked them), in one transaction; as `insert_blobs` does, a tree
    /// sent again in place of a damaged one takes its row and heals it.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn index_staged_trees(&mut self, upload: u64) -> Result<()> {
        let tx = self.db.write()?;
        let now = now_ms();
        tx.execute(
            "UPDATE damage SET healed_at = ?3
             WHERE kind = ?2 AND healed_at IS NULL AND EXISTS (SELECT 1 FROM staged_trees s
                 WHERE s.upload = ?1 AND s.client_id = damage.client_id AND s.id = damage.blob)",
            args![upload, BlobKind::Tree as i64, now],
        )?;
        tx.execute(
            &format!(
                "INSERT INTO blobs (client_id, kind, id, pack, \"offset\", length, compressed, stored_at, copies)
                 SELECT client_id, ?2, id, pack, \"offset\", length, compressed, ?3, ?4
                 FROM staged_trees WHERE upload = ?1 AND true
                 {}",
                super::blobs::TAKES_A_DAMAGED_ROW
            ),
            args![
                upload,
                BlobKind::Tree as i64,
                now,
                BlobRow::copies_of(BlobKind::Tree)
            ],
        )?;
        tx.execute("DELETE FROM staged_trees WHERE upload = ?1", args![upload])?;
        tx.commit()
    }

    /// Drops `upload`'s staged trees (it ended without a commit).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn drop_staged_trees(&mut self, upload: u64) -> Result<()> {
        self.db
            .execute("DELETE FROM staged_trees WHERE upload = ?1", args![upload])?;
        Ok(())
    }

    /// Drops the trees staged under the upload ids `uploads` (one relay's):
    /// at its start none of its uploads is open (other relays' may be).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn drop_staged_trees_of(&mut self, uploads: std::ops::Range<u64>) -> Result<()> {
        self.db.execute(
            "DELETE FROM staged_trees WHERE upload >= ?1 AND upload < ?2",
            args![uploads.start, uploads.end],
        )?;
        Ok(())
    }
}
