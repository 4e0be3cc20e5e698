//! The relay's clock: the wall clock everything stamps with, and the one
//! retention reads (which end-to-end tests may move).

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The time retention sees: when a snapshot is committed, and "now" when
/// rules are applied at a commit. The wall clock, unless a test build's
/// hook moves it ([`crate::test_hooks::clock_ahead_ms`]).
pub fn retention_now_ms() -> i64 {
    now_ms().saturating_add(crate::test_hooks::clock_ahead_ms())
}
