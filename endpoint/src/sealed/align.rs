//! Where a changed file's new chunks meet its previous version's.
//!
//! An edit can remove a cut of the keyed chunker, so one new chunk covers
//! two old ones. A sealed patch has one base (the relay cannot join what
//! it cannot read), so against either old chunk the other's bytes would be
//! literals and the chunk would go whole. Cutting such a chunk again where
//! an old chunk began gives pieces that each lie within one old chunk, and
//! each patches small against it; the next version, cut the same way,
//! finds the same pieces. Boundaries then follow the file's history as
//! well as its bytes, which tells the relay nothing it had not seen (the
//! old chunks' lengths).

/// The smallest piece worth its own objects: a cut nearer than this to a
/// chunk's end is not made (the sliver goes as a literal of the patch).
pub(super) const MIN_PIECE: usize = 4096;

/// `batch` (chunks of the new version, the first at `offset`) with each
/// chunk that `fresh` marks cut where a chunk of the previous version
/// began (`old_starts`, ascending) inside it, pieces of at least
/// [`MIN_PIECE`] bytes.
pub(super) fn cut_at_old_starts(
    batch: Vec<Vec<u8>>,
    fresh: &[bool],
    offset: u64,
    old_starts: &[u64],
) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(batch.len());
    let mut at = offset;
    for (data, fresh) in batch.into_iter().zip(fresh) {
        let (start, end) = (at, at + data.len() as u64);
        at = end;
        if !fresh {
            out.push(data);
            continue;
        }
        let min = MIN_PIECE as u64;
        let first = old_starts.partition_point(|s| *s < start + min);
        let mut cut_from = start;
        let mut rest = data.as_slice();
        for &cut in &old_starts[first..] {
            if cut + min > end {
                break;
            }
            if cut < cut_from + min {
                continue;
            }
            let (piece, tail) = rest.split_at((cut - cut_from) as usize);
            out.push(piece.to_vec());
            (rest, cut_from) = (tail, cut);
        }
        out.push(rest.to_vec());
    }
    out
}

/// Where each of chunks of lengths `lens` starts, the first at `from`.
pub(super) fn starts_of(lens: impl Iterator<Item = u64>, from: u64) -> Vec<u64> {
    lens.scan(from, |at, len| {
        let start = *at;
        *at += len;
        Some(start)
    })
    .collect()
}

/// Of the previous version's chunks (`old_starts`, with their lengths
/// `old_lens`), the one that overlaps `start..end` the most, if any does.
pub(super) fn most_overlapping(
    old_starts: &[u64],
    old_lens: &[u64],
    start: u64,
    end: u64,
) -> Option<usize> {
    let first = old_starts
        .partition_point(|s| *s <= start)
        .saturating_sub(1);
    (first..old_starts.len())
        .take_while(|j| old_starts[*j] < end)
        .map(|j| {
            let (s, e) = (old_starts[j], old_starts[j] + old_lens[j]);
            (j, e.min(end).saturating_sub(s.max(start)))
        })
        .filter(|(_, overlap)| *overlap > 0)
        .max_by_key(|(j, overlap)| (*overlap, std::cmp::Reverse(*j)))
        .map(|(j, _)| j)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Cutting again keeps every byte in order, cuts only fresh
        /// chunks, only where an old chunk began, and makes no sliver.
        #[test]
        fn cutting_again_keeps_the_bytes_and_cuts_only_at_old_starts(
            lens in proptest::collection::vec(1usize..200_000, 1..8),
            old in proptest::collection::vec(1u64..200_000, 0..12),
            fresh in proptest::collection::vec(any::<bool>(), 8),
            offset in 0u64..100_000,
        ) {
            let batch: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, len)| (0..*len).map(|b| (b * 7 + i) as u8).collect())
                .collect();
            let old_starts = starts_of(old.iter().copied(), 0);
            let fresh = &fresh[..batch.len()];
            let out = cut_at_old_starts(batch.clone(), fresh, offset, &old_starts);
            prop_assert_eq!(out.concat(), batch.concat());
            let new_starts = starts_of(batch.iter().map(|c| c.len() as u64), offset);
            let out_starts = starts_of(out.iter().map(|c| c.len() as u64), offset);
            for (start, piece) in out_starts.iter().zip(&out) {
                if new_starts.contains(start) {
                    continue;
                }
                // A new cut: at an old start, inside a fresh chunk, no sliver.
                prop_assert!(old_starts.contains(start));
                let owner = new_starts.partition_point(|s| s <= start) - 1;
                prop_assert!(fresh[owner]);
                prop_assert!(piece.len() >= MIN_PIECE);
            }
        }
    }

    fn lens(pieces: &[Vec<u8>]) -> Vec<usize> {
        pieces.iter().map(Vec::len).collect()
    }

    #[test]
    fn a_chunk_over_a_removed_cut_is_cut_there_again() {
        // Old chunks at 0, 50,000 and 120,000; the new first chunk covers
        // the first two (the cut at 50,000 was edited away).
        let batch = vec![vec![1u8; 120_000], vec![2u8; 30_000]];
        let out = cut_at_old_starts(batch, &[true, false], 0, &[0, 50_000, 120_000]);
        assert_eq!(lens(&out), vec![50_000, 70_000, 30_000]);
        assert!(out[0].iter().all(|b| *b == 1) && out[2].iter().all(|b| *b == 2));
    }

    #[test]
    fn slivers_reused_and_far_cuts_are_left_alone() {
        let old = [0, 10_000, 13_000, 60_000, 61_000];
        // A fresh chunk at 9,000..65,000: old starts 1,000 and 4,000 in
        // would cut slivers, 61,000 would leave 4,000 after it; 60,000
        // leaves pieces of 51,000 and 5,000.
        let out = cut_at_old_starts(vec![vec![0; 56_000]], &[true], 9_000, &old);
        assert_eq!(lens(&out), vec![51_000, 5_000]);
        assert_eq!(lens(&out).iter().sum::<usize>(), 56_000);
        // A chunk not marked fresh (the relay holds it) is never cut.
        let kept = cut_at_old_starts(vec![vec![0; 56_000]], &[false], 9_000, &old);
        assert_eq!(lens(&kept), vec![56_000]);
        // Nothing old: nothing cut.
        let new = cut_at_old_starts(vec![vec![0; 56_000]], &[true], 0, &[]);
        assert_eq!(lens(&new), vec![56_000]);
    }

    #[test]
    fn the_base_is_the_old_chunk_a_new_one_overlaps_most() {
        let starts = [0, 50_000, 120_000];
        let lens = [50_000, 70_000, 30_000];
        // Starts in the first, mostly in the second.
        assert_eq!(most_overlapping(&starts, &lens, 45_000, 110_000), Some(1));
        assert_eq!(most_overlapping(&starts, &lens, 0, 50_000), Some(0));
        assert_eq!(most_overlapping(&starts, &lens, 125_000, 140_000), Some(2));
        // Past the old version's end, or no old version.
        assert_eq!(most_overlapping(&starts, &lens, 150_000, 160_000), None);
        assert_eq!(most_overlapping(&[], &[], 0, 10), None);
    }
}
