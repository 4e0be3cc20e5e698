//! The blob index: where each client's chunks, trees and contents are
//! stored, written only after their pack is durable.

use super::ports::BlobIndex;
use super::sql::args;
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
                Ok((
                    BlobRow {
                        kind,
                        id: *id,
                        at: crate::store::BlobLocation {
                            pack: r.get(0)?,
                            offset: r.get(1)?,
                            len: r.get(2)?,
                        },
                        codec: codec_from_sql(r.get(3)?)?,
                        copies: r.get(4)?,
                    },
                    BlobState::from_code(r.get(5)?),
                ))
            })
    }

    /// See [`BlobIndex::insert_blobs`]: one transaction.
    ///
    /// # Errors
    /// SQLite errors.
    fn insert_blobs(&mut self, client: ClientId, rows: &[BlobRow]) -> Result<()> {
        let tx = self.db.write()?;
        // A blob sent again in place of a damaged or incomplete one
        // takes its row: that is how a backup heals a snapshot.
        let now = now_ms();
        for row in rows {
            let more = [row.codec.code().into(), now.into(), row.copies.into()];
            let values: Vec<_> = row.key_and_place(client).into_iter().chain(more).collect();
            let changed = tx.execute(
                "INSERT INTO blobs (client_id, kind, id, pack, \"offset\", length, compressed, stored_at, copies)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (client_id, kind, id) DO UPDATE SET
                   pack = excluded.pack, \"offset\" = excluded.\"offset\", length = excluded.length,
                   compressed = excluded.compressed, stored_at = excluded.stored_at,
                   copies = excluded.copies,
                   state = 0, verified_at = 0
                 WHERE blobs.state != 0",
                &values,
            )?;
            if changed > 0 {
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
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            let present = tx.execute(
                "UPDATE blobs SET stored_at = ?4
                 WHERE client_id = ?1 AND kind = ?2 AND id = ?3 AND state = 0 AND stored_at < ?5",
                args![client, kind as i64, id, now_ms, since_ms],
            )? > 0
                || tx.exists(
                    "SELECT 1 FROM blobs WHERE client_id = ?1 AND kind = ?2 AND id = ?3 AND state = 0",
                    args![client, kind as i64, id],
                )?;
            found.push(present);
        }
        tx.commit()?;
        Ok(found)
    }
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
