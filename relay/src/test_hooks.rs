//! The hooks end-to-end tests move a running relay with, all in one place:
//! environment variables read only when the relay is built with the
//! `test-hooks` feature (the suite's builds: `ferry-tests` turns it on). A
//! release or package build (`cargo build --release -p ferry-relay`) has
//! none of them, so no environment can make a deployed relay fake a failed
//! fsync, an older protocol or another calendar.

/// Milliseconds the clock retention reads is moved ahead:
/// `FERRY_CLOCK_AHEAD_FILE` names a file holding them (tests of archival
/// and calendar rules move the relay's calendar this way, without sleeping).
pub fn clock_ahead_ms() -> i64 {
    if !cfg!(feature = "test-hooks") {
        return 0;
    }
    std::env::var_os("FERRY_CLOCK_AHEAD_FILE")
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| text.trim().parse::<i64>().ok())
        .unwrap_or(0)
}

/// An older protocol minor to announce: `FERRY_ANNOUNCE_MINOR` (tests that
/// today's endpoint still works with an older relay).
pub fn announced_minor() -> Option<u16> {
    if !cfg!(feature = "test-hooks") {
        return None;
    }
    std::env::var("FERRY_ANNOUNCE_MINOR").ok()?.parse().ok()
}

/// A file whose existence makes every pack fsync fail: `FERRY_FAIL_FSYNC`
/// (tests that a failed fsync is never acknowledged).
pub fn fail_fsync_trigger() -> Option<std::path::PathBuf> {
    if !cfg!(feature = "test-hooks") {
        return None;
    }
    std::env::var_os("FERRY_FAIL_FSYNC").map(std::path::PathBuf::from)
}

/// Holds a collection that took its lease, before its sweep, while the
/// file `FERRY_GC_HOLD` names exists (tests that freeze a lease holder
/// there and let another relay take the lease).
pub fn hold_collection() {
    if !cfg!(feature = "test-hooks") {
        return;
    }
    let Some(path) = std::env::var_os("FERRY_GC_HOLD") else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    if path.exists() {
        tracing::warn!("gc: held before the sweep while {} exists", path.display());
    }
    while path.exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
