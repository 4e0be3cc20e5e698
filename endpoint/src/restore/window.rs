//! How much a restore's stream holds at once: chunk bytes and contents
//! asked for and not yet received, and files open.

use super::settle::HELD_FILES;
use super::*;

use ferry_protocol::tree::PART_CHUNKS;

/// Chunk bytes asked for and not yet received, at most: several times a
/// fast link's bandwidth-delay product (50 Mbit/s × 200 ms is 1.25 MB), so
/// the link does not idle while answers are written.
pub(super) const WINDOW_BYTES: u64 = 16 << 20;

/// Estimated bytes of file contents asked for and not yet received, at
/// most (each file's estimate is the largest content its size allows).
pub(super) const CONTENT_WINDOW_BYTES: u64 = 16 << 20;

/// Files in the stream at once, at most: each holds its temporary file and
/// perhaps the target's current version open (see [`max_files`]).
pub(super) const MAX_FILES: usize = 512;

/// Bytes a content's encoding takes per chunk or part it lists, at most
/// (a 32-byte id and a varint length), and for itself.
const BYTES_PER_REF: u64 = 48;
const CONTENT_OVERHEAD: u64 = 16;

/// The largest content a file of `data` bytes can have: a chunk list, or
/// for more than [`PART_CHUNKS`] chunks a list of parts.
pub(super) fn content_estimate(data: u64) -> u64 {
    let chunks = max_chunks(data);
    let refs = if chunks > PART_CHUNKS as u64 {
        chunks / PART_CHUNKS as u64 + 1
    } else {
        chunks
    };
    CONTENT_OVERHEAD + refs * BYTES_PER_REF
}

/// The largest content of one part of a large file.
pub(super) fn part_estimate() -> u64 {
    CONTENT_OVERHEAD + PART_CHUNKS as u64 * BYTES_PER_REF
}

/// The most files the stream may hold given this process's limit on open
/// files (raised to its hard limit when it can be): two descriptors each
/// at most (its temporary file, the target's copy), beside the written
/// files waiting to settle (a file and its directory each) and room for
/// everything else.
pub(super) fn max_files() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum {
        if limit.current.is_some_and(|soft| soft < hard) {
            limit.current = Some(hard.min(1 << 16));
            // If it cannot be raised, the current limit decides below.
            let _ = setrlimit(Resource::Nofile, limit);
        }
    }
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(1 << 16);
    let room = usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(256);
    (room.saturating_sub(HELD_FILES * 2) / 2).clamp(8, MAX_FILES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_estimates_cover_what_a_size_allows() {
        // A small file: a short chunk list.
        assert!(content_estimate(100) >= CONTENT_OVERHEAD + BYTES_PER_REF);
        // Past PART_CHUNKS chunks, a list of parts, never a huge estimate.
        let huge = content_estimate(1 << 40);
        assert!(huge < 1 << 20, "{huge}");
        assert!(
            max_chunks(1 << 20)
                > u64::from(1u32 << 20) / u64::from(ferry_protocol::chunking::MIN_CHUNK)
        );
    }
}
