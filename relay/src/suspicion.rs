//! Suspicious backups: a snapshot that drops most of its set's files or
//! bytes, or whose data is mostly new while its size barely moved (what
//! ransomware does when it encrypts a home directory), is flagged at its
//! commit. The relay then holds the snapshot before it for the lock's
//! length (`KeptBy::Held`) and raises a `suspicious` alert with the
//! figures. Judged from counts the relay has anyway (files, bytes, and the
//! bytes the upload had to append), so it works on ids alone.

use serde::{Deserialize, Serialize};

use ferry_protocol::units::format_size;

/// When a backup is suspicious (`[alerts]` in relay.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Thresholds {
    /// A snapshot with this share (percent) fewer files or bytes than the
    /// one before (0: never).
    pub drop_percent: u8,
    /// A snapshot whose upload appended at least this share (percent) of
    /// the set's earlier size, while the set grew by less than that (0:
    /// never).
    pub change_percent: u8,
    /// Sets smaller than this many files are never judged (small sets
    /// change wholesale all the time).
    pub min_files: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            drop_percent: 50,
            change_percent: 50,
            min_files: 20,
        }
    }
}

/// A snapshot's size as the relay records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Files.
    pub files: u64,
    /// Bytes of file data.
    pub bytes: u64,
}

/// Why the snapshot of size `now`, whose upload appended `appended` bytes,
/// is suspicious after one of size `before`; `None` when it is not.
pub fn judge(before: Size, now: Size, appended: u64, limits: &Thresholds) -> Option<String> {
    if before.files < limits.min_files {
        return None;
    }
    let pct = |part: u64, whole: u64| u128::from(part) * 100 / u128::from(whole.max(1));
    let drop = u128::from(limits.drop_percent);
    if drop > 0 && now.files < before.files && pct(before.files - now.files, before.files) >= drop {
        return Some(format!(
            "it holds {} files where the snapshot before held {} ({}% fewer)",
            now.files,
            before.files,
            pct(before.files - now.files, before.files)
        ));
    }
    if drop > 0 && now.bytes < before.bytes && pct(before.bytes - now.bytes, before.bytes) >= drop {
        return Some(format!(
            "it holds {} where the snapshot before held {} ({}% less)",
            format_size(now.bytes),
            format_size(before.bytes),
            pct(before.bytes - now.bytes, before.bytes)
        ));
    }
    let change = u128::from(limits.change_percent);
    let grew = now.bytes.saturating_sub(before.bytes);
    if change > 0 && pct(appended, before.bytes) >= change && pct(grew, before.bytes) < change {
        return Some(format!(
            "{} of its {} is new data while the set barely grew (from {}): most of its files were rewritten, as encryption by ransomware does",
            format_size(appended),
            format_size(now.bytes),
            format_size(before.bytes)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: Size = Size {
        files: 1_000,
        bytes: 100 << 20,
    };

    fn judged(now: Size, appended: u64) -> Option<String> {
        judge(SET, now, appended, &Thresholds::default())
    }

    #[test]
    fn an_emptied_or_halved_set_is_suspicious() {
        assert!(judged(Size { files: 0, bytes: 0 }, 0).is_some());
        assert!(judged(
            Size {
                files: 400,
                bytes: 100 << 20
            },
            0
        )
        .is_some());
        let smaller = judged(
            Size {
                files: 1_000,
                bytes: 30 << 20,
            },
            0,
        )
        .unwrap();
        assert!(smaller.contains("70% less"), "{smaller}");
    }

    #[test]
    fn a_set_rewritten_in_place_is_suspicious_and_one_that_grew_is_not() {
        let encrypted = judged(SET, 99 << 20).unwrap();
        assert!(encrypted.contains("rewritten"), "{encrypted}");
        // A 1 GiB disk image added: new data, but the set grew with it.
        let grown = Size {
            files: 1_001,
            bytes: (100 << 20) + (1 << 30),
        };
        assert_eq!(judged(grown, 1 << 30), None);
    }

    #[test]
    fn an_ordinary_days_edits_are_not() {
        let edited = Size {
            files: 1_010,
            bytes: 101 << 20,
        };
        assert_eq!(judged(edited, 3 << 20), None);
        // Small sets are never judged.
        let tiny = Size {
            files: 3,
            bytes: 10,
        };
        assert_eq!(
            judge(tiny, Size { files: 0, bytes: 0 }, 0, &Thresholds::default()),
            None
        );
    }
}
