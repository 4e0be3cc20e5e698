//! The rules every catalog keeps, run against each implementation: SQLite
//! (the relay's default), PostgreSQL (relays on several hosts) and an
//! in-memory fake.

use std::collections::HashMap;

use ferry_protocol::compress::Codec;

use super::{BlobIndex, DamageLog};
use crate::catalog::{BlobKey, BlobKind, BlobRow, BlobState, Catalog, ClientId, Result};
use crate::store::{BlobLocation, PackId};

/// The blob index and damage log in memory: what the rules need and
/// nothing of SQLite.
#[derive(Debug, Default)]
struct MemoryCatalog {
    rows: HashMap<(ClientId, BlobKey), (BlobRow, BlobState, i64)>,
}

impl BlobIndex for MemoryCatalog {
    fn find_blob_state(
        &self,
        client: ClientId,
        kind: BlobKind,
        id: &[u8; 32],
    ) -> Result<Option<(BlobRow, BlobState)>> {
        let key = (client, BlobKey { kind, id: *id });
        Ok(self.rows.get(&key).map(|(row, state, _)| (*row, *state)))
    }

    fn insert_blobs(&mut self, client: ClientId, rows: &[BlobRow]) -> Result<()> {
        for row in rows {
            let key = (client, row.key());
            let keep = self
                .rows
                .get(&key)
                .is_some_and(|(_, state, _)| *state == BlobState::Whole);
            if !keep {
                self.rows.insert(key, (*row, BlobState::Whole, 0));
            }
        }
        Ok(())
    }

    fn reuse(
        &mut self,
        client: ClientId,
        kind: BlobKind,
        ids: &[[u8; 32]],
        since_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<bool>> {
        Ok(ids
            .iter()
            .map(
                |id| match self.rows.get_mut(&(client, BlobKey { kind, id: *id })) {
                    Some((_, BlobState::Whole, stamped)) => {
                        if *stamped < since_ms {
                            *stamped = now_ms;
                        }
                        true
                    }
                    _ => false,
                },
            )
            .collect())
    }
}

impl DamageLog for MemoryCatalog {
    fn mark_damaged(&mut self, client: ClientId, row: &BlobRow, _: &str) -> Result<bool> {
        match self.rows.get_mut(&(client, row.key())) {
            Some((stored, state, _))
                if stored.at.pack == row.at.pack && stored.at.offset == row.at.offset =>
            {
                *state = BlobState::Damaged;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn has_damage(&self, client: ClientId) -> Result<bool> {
        Ok(self
            .rows
            .iter()
            .any(|((owner, _), (_, state, _))| *owner == client && *state != BlobState::Whole))
    }
}

/// A catalog of each kind, fresh, with what holds it: the fake, SQLite
/// and PostgreSQL.
fn catalogs() -> Vec<(Box<dyn Rules>, Option<tempfile::TempDir>)> {
    let mut all: Vec<(Box<dyn Rules>, _)> = vec![(Box::new(MemoryCatalog::default()), None)];
    for (at, dir) in crate::catalog::test_catalogs() {
        all.push((Box::new(Catalog::open_at(&at).unwrap()), dir));
    }
    all
}

/// Both ports, as one object the rules tests drive.
trait Rules: BlobIndex + DamageLog + std::fmt::Debug {}
impl<T: BlobIndex + DamageLog + std::fmt::Debug> Rules for T {}

const A: ClientId = ClientId(1);
const B: ClientId = ClientId(2);

fn row(kind: BlobKind, id: u8, pack: u64, offset: u64) -> BlobRow {
    BlobRow {
        kind,
        id: [id; 32],
        at: BlobLocation {
            pack: PackId(pack),
            offset,
            len: 10,
        },
        codec: Codec::None,
        copies: 1,
    }
}

#[test]
fn blobs_found_together_are_those_found_one_by_one_and_damaged_ones_are_not() {
    for (mut catalog, _dir) in catalogs() {
        let rows: Vec<BlobRow> = (1..=5)
            .map(|n| row(BlobKind::Chunk, n, 1, u64::from(n) * 10))
            .collect();
        catalog.insert_blobs(A, &rows).unwrap();
        catalog
            .insert_blobs(B, &[row(BlobKind::Chunk, 6, 1, 60)])
            .unwrap();
        catalog.mark_damaged(A, &rows[1], "rot").unwrap();
        let asked: Vec<[u8; 32]> = (0..=7).map(|n| [n; 32]).collect();
        let found = catalog.find_blobs(A, BlobKind::Chunk, &asked).unwrap();
        let one_by_one: HashMap<[u8; 32], BlobRow> = asked
            .iter()
            .filter_map(|id| {
                let row = catalog.find_blob(A, BlobKind::Chunk, id).unwrap()?;
                Some((*id, row))
            })
            .collect();
        assert_eq!(found, one_by_one, "{catalog:?}");
        let mut ids: Vec<u8> = found.keys().map(|id| id[0]).collect();
        ids.sort_unstable();
        assert_eq!(
            ids,
            vec![1, 3, 4, 5],
            "{catalog:?}: not 2 (damaged), not b's 6"
        );
    }
}

#[test]
fn a_blob_is_found_by_its_own_client_only() {
    for (mut catalog, _dir) in catalogs() {
        let chunk = row(BlobKind::Chunk, 1, 1, 0);
        catalog.insert_blobs(A, &[chunk]).unwrap();
        assert_eq!(
            catalog.find_blob(A, BlobKind::Chunk, &[1; 32]).unwrap(),
            Some(chunk),
            "{catalog:?}"
        );
        assert_eq!(
            catalog.find_blob(B, BlobKind::Chunk, &[1; 32]).unwrap(),
            None,
            "{catalog:?}"
        );
        assert_eq!(
            catalog.find_blob(A, BlobKind::Tree, &[1; 32]).unwrap(),
            None,
            "{catalog:?}: kinds never collide"
        );
    }
}

#[test]
fn a_damaged_blob_is_missing_to_uploads_and_found_with_its_state() {
    for (mut catalog, _dir) in catalogs() {
        let chunk = row(BlobKind::Chunk, 2, 1, 0);
        catalog.insert_blobs(A, &[chunk]).unwrap();
        assert!(!catalog.has_damage(A).unwrap());
        assert!(
            catalog.mark_damaged(A, &chunk, "rot").unwrap(),
            "{catalog:?}"
        );
        assert_eq!(
            catalog.find_blob(A, BlobKind::Chunk, &[2; 32]).unwrap(),
            None,
            "{catalog:?}"
        );
        assert_eq!(
            catalog
                .find_blob_state(A, BlobKind::Chunk, &[2; 32])
                .unwrap(),
            Some((chunk, BlobState::Damaged)),
            "{catalog:?}"
        );
        assert_eq!(
            catalog.reuse(A, BlobKind::Chunk, &[[2; 32]], 0, 1).unwrap(),
            vec![false]
        );
        assert!(catalog.has_damage(A).unwrap(), "{catalog:?}");
        assert!(!catalog.has_damage(B).unwrap(), "{catalog:?}");
    }
}

#[test]
fn sending_a_damaged_blob_again_heals_it_and_a_whole_one_never_moves() {
    for (mut catalog, _dir) in catalogs() {
        let first = row(BlobKind::Content, 3, 1, 0);
        catalog.insert_blobs(A, &[first]).unwrap();
        let elsewhere = row(BlobKind::Content, 3, 2, 40);
        catalog.insert_blobs(A, &[elsewhere]).unwrap();
        assert_eq!(
            catalog.find_blob(A, BlobKind::Content, &[3; 32]).unwrap(),
            Some(first),
            "{catalog:?}"
        );
        catalog.mark_damaged(A, &first, "rot").unwrap();
        catalog.insert_blobs(A, &[elsewhere]).unwrap();
        assert_eq!(
            catalog
                .find_blob_state(A, BlobKind::Content, &[3; 32])
                .unwrap(),
            Some((elsewhere, BlobState::Whole)),
            "{catalog:?}"
        );
        assert!(!catalog.has_damage(A).unwrap(), "{catalog:?}");
    }
}

#[test]
fn a_row_that_moved_since_it_was_read_is_not_marked() {
    for (mut catalog, _dir) in catalogs() {
        let read = row(BlobKind::Chunk, 4, 1, 0);
        catalog.insert_blobs(A, &[read]).unwrap();
        let stale = row(BlobKind::Chunk, 4, 9, 90);
        assert!(
            !catalog.mark_damaged(A, &stale, "rot").unwrap(),
            "{catalog:?}"
        );
        assert!(!catalog.has_damage(A).unwrap(), "{catalog:?}");
    }
}

#[test]
fn reuse_says_which_blobs_are_whole_in_the_order_asked() {
    for (mut catalog, _dir) in catalogs() {
        let rows = [
            row(BlobKind::Chunk, 5, 1, 0),
            row(BlobKind::Chunk, 6, 1, 10),
        ];
        catalog.insert_blobs(A, &rows).unwrap();
        let found = catalog
            .reuse(A, BlobKind::Chunk, &[[6; 32], [7; 32], [5; 32]], 0, 1)
            .unwrap();
        assert_eq!(found, vec![true, false, true], "{catalog:?}");
        let other = catalog.reuse(B, BlobKind::Chunk, &[[5; 32]], 0, 1).unwrap();
        assert_eq!(other, vec![false], "{catalog:?}: another client's blob");
    }
}

#[test]
fn whole_among_names_the_whole_blobs_of_many_at_once() {
    for (mut catalog, _dir) in catalogs() {
        // More than one IN list's worth, and not a power of two.
        let rows: Vec<BlobRow> = (0..300u32)
            .map(|n| {
                let mut r = row(BlobKind::Chunk, 0, 1, u64::from(n) * 10);
                r.id[..4].copy_from_slice(&n.to_be_bytes());
                r
            })
            .collect();
        catalog.insert_blobs(A, &rows).unwrap();
        catalog.mark_damaged(A, &rows[7], "rot").unwrap();
        let mut asked: Vec<[u8; 32]> = rows.iter().map(|r| r.id).collect();
        asked.push([0xee; 32]);
        let whole = catalog.whole_among(A, BlobKind::Chunk, &asked).unwrap();
        assert_eq!(whole.len(), 299, "{catalog:?}");
        assert!(!whole.contains(&rows[7].id), "{catalog:?}: damaged");
        assert!(!whole.contains(&[0xee; 32]), "{catalog:?}: absent");
        assert!(
            catalog
                .whole_among(B, BlobKind::Chunk, &asked)
                .unwrap()
                .is_empty(),
            "{catalog:?}: another client's"
        );
        let reused = catalog.reuse(A, BlobKind::Chunk, &asked, 0, 5).unwrap();
        assert_eq!(reused.iter().filter(|r| **r).count(), 299, "{catalog:?}");
        assert!(!reused[7] && !reused[300], "{catalog:?}");
    }
}

#[test]
fn a_blob_twice_in_one_batch_keeps_its_first_place() {
    for (mut catalog, _dir) in catalogs() {
        let first = row(BlobKind::Tree, 9, 1, 0);
        let again = row(BlobKind::Tree, 9, 1, 40);
        catalog.insert_blobs(A, &[first, again]).unwrap();
        assert_eq!(
            catalog.find_blob(A, BlobKind::Tree, &[9; 32]).unwrap(),
            Some(first),
            "{catalog:?}"
        );
        // Damaged, then sent twice in one batch: the first copy heals it.
        catalog.mark_damaged(A, &first, "rot").unwrap();
        let healed = row(BlobKind::Tree, 9, 2, 0);
        let later = row(BlobKind::Tree, 9, 2, 80);
        catalog.insert_blobs(A, &[healed, later]).unwrap();
        assert_eq!(
            catalog
                .find_blob_state(A, BlobKind::Tree, &[9; 32])
                .unwrap(),
            Some((healed, BlobState::Whole)),
            "{catalog:?}"
        );
        assert!(!catalog.has_damage(A).unwrap(), "{catalog:?}");
    }
}
