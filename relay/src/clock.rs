//! The relay's clock: the wall clock everything stamps with, and the one
//! retention reads (which end-to-end tests may move).

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The time retention sees: when a snapshot is committed, and "now" when
/// rules are applied at a commit. The wall clock, unless the test hook
/// `FERRY_CLOCK_AHEAD_FILE` names a file holding a number of milliseconds
/// to add (end-to-end tests of archival and calendar rules move the
/// relay's calendar this way, without sleeping).
pub fn retention_now_ms() -> i64 {
    let ahead = std::env::var_os("FERRY_CLOCK_AHEAD_FILE")
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| text.trim().parse::<i64>().ok())
        .unwrap_or(0);
    now_ms().saturating_add(ahead)
}
