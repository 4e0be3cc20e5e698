//! The codes a relay refuses a request with.

use serde::{Deserialize, Serialize};

/// Why the relay refused a request. Its variant order is part of the wire
/// format, as `Message`'s is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// A commit whose snapshot names something the relay lacks or holds
    /// damaged: the endpoint clears its files cache and backs up again.
    IncompleteSnapshot,
    /// A set's first (full) backup over the internet, which this client's
    /// policy forbids.
    FullBackupNeedsLan,
    /// No such object or chunk for this client (whether another client
    /// has it is never said).
    NoSuchObject,
    /// The relay's disk is full (protocol 1.3): try again once the
    /// operator made room; what was committed before is intact.
    DiskFull,
    /// The relay's disk or catalog failed (protocol 1.3); the operator
    /// has the details in the relay's log.
    StorageFailed,
    /// The request broke the protocol's rules (protocol 1.3): a bug, or a
    /// client that is not ferry.
    ProtocolViolation,
    /// The backup set is being backed up by another session of the same
    /// client (protocol 1.3): try again when that one ends.
    SetBusy,
    /// The backup would pass the client's quota (protocol 1.4): what was
    /// stored before is untouched; the admin raises the quota, or older
    /// snapshots go.
    QuotaExceeded,
}

impl Refusal {
    /// The protocol minor version that introduced the code: a peer of an
    /// older minor cannot decode it and is sent `Failed` instead.
    pub fn since_minor(self) -> u16 {
        match self {
            Refusal::IncompleteSnapshot | Refusal::FullBackupNeedsLan | Refusal::NoSuchObject => 2,
            Refusal::DiskFull
            | Refusal::StorageFailed
            | Refusal::ProtocolViolation
            | Refusal::SetBusy => 3,
            Refusal::QuotaExceeded => 4,
        }
    }
}
