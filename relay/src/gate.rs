//! The open uploads: what a collection running beside them must keep, and
//! one upload per backup set.
//!
//! Uploads and collections run side by side; neither waits for the other.
//! An upload may name a blob it was told exists, or one it appended and has
//! not indexed yet (trees wait for the commit), so the collector keeps both:
//!
//! - every blob an upload is told exists is stamped no older than the
//!   upload's start (`Catalog::reuse`), and a collection sweeps only what
//!   is stamped before the oldest open upload began ([`OpenUploads::oldest`]);
//! - an upload appends only to packs from the one current when it began,
//!   and a collection rewrites or deletes only packs below the lowest such
//!   pack (a pack sealed since may hold blobs no row names yet).
//!
//! It also keeps two uploads of the same backup set apart (the daemon's
//! scheduled run and one started by hand): the second is refused at once,
//! never queued behind the first; and it counts, per client, the bytes its
//! uploads append, so concurrent uploads of one client (other sets, other
//! sessions) share its quota instead of each having it whole.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::catalog::{ClientId, SetId};

/// The uploads open right now, shared by the sessions and the collector.
#[derive(Debug, Default)]
pub struct OpenUploads {
    open: Mutex<HashMap<(ClientId, SetId), Opened>>,
    /// Each client's bytes appended by its uploads (see [`ClientAppends`]).
    appended: Mutex<HashMap<ClientId, Arc<ClientAppends>>>,
}

/// One client's appended bytes, shared by its uploads, so that concurrent
/// uploads (other sets, other sessions) share its quota: an upload counts
/// what the client stored when it began, what uploads that ended since
/// retired, and what open uploads hold now. Never less than the truth: a
/// blob counted twice (stored and still held, say) only makes the quota
/// stricter for as long as the uploads that see it twice stay open.
#[derive(Debug, Default)]
pub struct ClientAppends {
    /// Bytes appended by this client's open uploads.
    pub open: AtomicU64,
    /// Bytes appended by its uploads that have ended since the relay
    /// started (never decreases).
    pub retired: AtomicU64,
}

/// When an upload began, in the terms the collector needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The catalog time (ms) it began: what it reuses is stamped no older.
    pub since_ms: i64,
    /// The pack current when it began: it appends to none below.
    pub first_pack: u32,
}

/// Held by an open upload; released on drop.
#[derive(Debug)]
pub struct UploadPermit {
    uploads: Arc<OpenUploads>,
    set: (ClientId, SetId),
    opened: Opened,
    appended: Arc<ClientAppends>,
}

impl UploadPermit {
    /// When this upload began.
    pub fn opened(&self) -> Opened {
        self.opened
    }

    /// The bytes this client's uploads appended, shared by all of them.
    pub fn client_appends(&self) -> &Arc<ClientAppends> {
        &self.appended
    }
}

impl OpenUploads {
    fn lock(&self) -> MutexGuard<'_, HashMap<(ClientId, SetId), Opened>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens an upload of `set`; `None` when that set has one open already.
    pub fn enter(self: &Arc<Self>, set: (ClientId, SetId), opened: Opened) -> Option<UploadPermit> {
        let mut open = self.lock();
        if open.contains_key(&set) {
            return None;
        }
        open.insert(set, opened);
        drop(open);
        let appended = Arc::clone(
            self.appended
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(set.0)
                .or_default(),
        );
        Some(UploadPermit {
            uploads: Arc::clone(self),
            set,
            opened,
            appended,
        })
    }

    /// The earliest start and the lowest first pack among open uploads
    /// (each the minimum on its own), `None` when none is open.
    pub fn oldest(&self) -> Option<Opened> {
        let open = self.lock();
        let since_ms = open.values().map(|o| o.since_ms).min()?;
        let first_pack = open.values().map(|o| o.first_pack).min()?;
        Some(Opened {
            since_ms,
            first_pack,
        })
    }

    /// Uploads open right now.
    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for UploadPermit {
    fn drop(&mut self) {
        self.uploads.lock().remove(&self.set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: (ClientId, SetId) = (ClientId(1), SetId(1));

    fn at(since_ms: i64, first_pack: u32) -> Opened {
        Opened {
            since_ms,
            first_pack,
        }
    }

    #[test]
    fn a_second_upload_of_the_same_set_is_refused_until_the_first_ends() {
        let uploads = Arc::new(OpenUploads::default());
        let first = uploads.enter(SET, at(1, 1)).unwrap();
        assert!(uploads.enter(SET, at(2, 1)).is_none());
        let other_set = uploads.enter((ClientId(1), SetId(2)), at(2, 1)).unwrap();
        let other_client = uploads.enter((ClientId(2), SetId(1)), at(2, 1)).unwrap();
        drop(first);
        let again = uploads.enter(SET, at(3, 1)).unwrap();
        assert_eq!(uploads.count(), 3);
        drop((again, other_set, other_client));
        assert_eq!(uploads.count(), 0);
    }

    #[test]
    fn the_oldest_is_the_earliest_start_and_the_lowest_pack() {
        let uploads = Arc::new(OpenUploads::default());
        assert_eq!(uploads.oldest(), None);
        let early = uploads.enter(SET, at(100, 7)).unwrap();
        let late = uploads.enter((ClientId(2), SetId(1)), at(200, 5)).unwrap();
        assert_eq!(uploads.oldest(), Some(at(100, 5)));
        drop(early);
        assert_eq!(uploads.oldest(), Some(at(200, 5)));
        assert_eq!(late.opened(), at(200, 5));
    }
}
