//! The figures every `--json` summary of `backup` and `restore` carries:
//! the command-line contract of DESIGN.md, defined once.

use serde::Serialize;

/// Counts shared by backup and restore summaries.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Totals {
    /// The snapshot made or restored.
    pub snapshot: u64,
    /// Files the other side did not have (backup: not in the last backup of
    /// the set; restore: not in the target).
    pub files_new: u64,
    /// Files the other side had in another version.
    pub files_changed: u64,
    /// Files the other side already had (backup: the files cache knew them
    /// unchanged; restore: only their metadata was set).
    pub files_unchanged: u64,
    /// File bytes read (backup: source files; restore: the target's existing files).
    pub bytes_scanned: u64,
    /// Bytes sent on the connection (handshake, framing and encryption included).
    pub bytes_sent: u64,
    /// Bytes received on the connection.
    pub bytes_received: u64,
    /// Times this side waited a whole round trip for the relay: answers to
    /// requests sent while no other answer was awaited (see
    /// `RelayClient::round_trips`). What a link's round-trip time multiplies.
    pub round_trips: u64,
    /// Wall time in seconds.
    pub duration_s: f64,
}
