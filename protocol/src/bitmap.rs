//! The bitmap of a `ChunksMissing` answer: bit `i % 8` of byte `i / 8` is
//! set when the `i`-th id asked is missing.

/// Sets bit `i` of a `ChunksMissing` bitmap.
pub fn set_missing(bitmap: &mut Vec<u8>, i: usize) {
    if bitmap.len() <= i / 8 {
        bitmap.resize(i / 8 + 1, 0);
    }
    bitmap[i / 8] |= 1 << (i % 8);
}

/// Whether bit `i` of a `ChunksMissing` bitmap is set.
pub fn is_missing(bitmap: &[u8], i: usize) -> bool {
    bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}
