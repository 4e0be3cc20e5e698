//! Where a file's content lies in the file: a sparse file's content is
//! its data regions ([`Extent`]s) concatenated, and everything between
//! them is a hole. The endpoint uses this to write a restored chunk at
//! its place, in whatever order chunks arrive; the relay to read a
//! snapshot's file back with its holes as zeros.

use crate::tree::Extent;

/// A content's places in its file.
#[derive(Debug, Clone)]
pub struct Layout {
    extents: Vec<Extent>,
    /// The content offset at which each extent begins.
    starts: Vec<u64>,
    /// Content bytes the extents hold.
    total: u64,
}

/// Where a stretch of content lands in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The offset in the file.
    pub file_offset: u64,
    /// How many bytes.
    pub len: u64,
}

impl Layout {
    /// The layout of a file of `size` bytes: its data extents when sparse,
    /// else the whole file as one.
    pub fn new(size: u64, sparse: Option<&[Extent]>) -> Self {
        let extents = sparse.map_or_else(
            || {
                vec![Extent {
                    offset: 0,
                    len: size,
                }]
            },
            <[Extent]>::to_vec,
        );
        let mut starts = Vec::with_capacity(extents.len());
        let mut total = 0u64;
        for extent in &extents {
            starts.push(total);
            total = total.saturating_add(extent.len);
        }
        Layout {
            extents,
            starts,
            total,
        }
    }

    /// Content bytes the file's data regions hold.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether content offsets are file offsets (not sparse).
    pub fn is_whole(&self) -> bool {
        self.extents.len() == 1 && self.extents[0].offset == 0
    }

    /// Where the `len` content bytes from content offset `offset` land, in
    /// order (one place per extent they touch); `None` when they run past
    /// the extents.
    pub fn places(&self, offset: u64, len: u64) -> Option<Vec<Place>> {
        if offset.checked_add(len)? > self.total {
            return None;
        }
        let mut places = Vec::new();
        let (mut at, mut left) = (offset, len);
        let mut i = self.starts.partition_point(|&s| s <= at).saturating_sub(1);
        while left > 0 {
            let extent = self.extents.get(i)?;
            let inside = at - self.starts[i];
            let n = left.min(extent.len - inside);
            if n > 0 {
                places.push(Place {
                    file_offset: extent.offset + inside,
                    len: n,
                });
            }
            at += n;
            left -= n;
            i += 1;
        }
        Some(places)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn extent(offset: u64, len: u64) -> Extent {
        Extent { offset, len }
    }

    #[test]
    fn a_stretch_across_extents_lands_in_pieces() {
        let layout = Layout::new(40, Some(&[extent(2, 3), extent(10, 5), extent(30, 4)]));
        assert_eq!(layout.total(), 12);
        assert!(!layout.is_whole());
        let place = |file_offset, len| Place { file_offset, len };
        assert_eq!(
            layout.places(1, 9).unwrap(),
            [place(3, 2), place(10, 5), place(30, 2)]
        );
        assert_eq!(layout.places(12, 0).unwrap(), []);
        assert_eq!(layout.places(10, 3), None, "past the extents");
        assert_eq!(layout.places(u64::MAX, 2), None);
        let whole = Layout::new(7, None);
        assert!(whole.is_whole());
        assert_eq!(whole.places(2, 5).unwrap(), [place(2, 5)]);
    }

    proptest! {
        /// Content cut anywhere lands byte for byte where the extents say:
        /// the places of every cut, in order, are the extents' bytes.
        #[test]
        fn any_cut_of_the_content_fills_exactly_the_extents(
            gaps_and_lens in prop::collection::vec((0u64..50, 1u64..50), 0..8),
            cuts in prop::collection::vec(0u64..400, 0..10),
        ) {
            let mut extents = Vec::new();
            let mut at = 0;
            for (gap, len) in gaps_and_lens {
                extents.push(extent(at + gap, len));
                at += gap + len;
            }
            let layout = Layout::new(at + 3, Some(&extents));
            let mut bounds: Vec<u64> = cuts.into_iter().filter(|c| *c < layout.total()).collect();
            bounds.extend([0, layout.total()]);
            bounds.sort_unstable();
            bounds.dedup();
            let mut file_bytes = Vec::new();
            for pair in bounds.windows(2) {
                let places = layout.places(pair[0], pair[1] - pair[0]).unwrap();
                prop_assert_eq!(places.iter().map(|p| p.len).sum::<u64>(), pair[1] - pair[0]);
                for p in places {
                    file_bytes.extend(p.file_offset..p.file_offset + p.len);
                }
            }
            let expected: Vec<u64> = extents.iter().flat_map(|e| e.offset..e.offset + e.len).collect();
            prop_assert_eq!(file_bytes, expected);
        }
    }
}
