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
//! never queued behind the first — unless the first one's session has been
//! silent for a while (a laptop whose Wi-Fi dropped without a word): then
//! the new one takes the set and the silent session is told to end
//! ([`Liveness`]); and it counts, per client, the bytes its
//! uploads append, so concurrent uploads of one client (other sets, other
//! sessions) share its quota instead of each having it whole.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use crate::catalog::{ClientId, SetId};

/// A session's signs of life, shared by its message loop (which marks
/// what it hears) and the uploads it opens (which another session of the
/// same client may take over once it has been silent long enough).
#[derive(Debug)]
pub struct Liveness {
    /// When the session last heard from its endpoint, or last worked on
    /// one of its requests (ms, catalog clock).
    heard_ms: AtomicI64,
    /// Silent this long, the session's upload may be taken over (ms).
    dead_after_ms: i64,
    /// Cancelled when another session took its upload over.
    replaced: CancellationToken,
    /// Cancelled when a collection expired its upload (open too long).
    expired: CancellationToken,
}

impl Liveness {
    /// A session heard from now, that may be replaced after `dead_after`
    /// of silence.
    pub fn new(dead_after: std::time::Duration) -> Self {
        Liveness {
            heard_ms: AtomicI64::new(crate::clock::now_ms()),
            dead_after_ms: i64::try_from(dead_after.as_millis()).unwrap_or(i64::MAX),
            replaced: CancellationToken::new(),
            expired: CancellationToken::new(),
        }
    }

    /// Marks the session alive now.
    pub fn heard(&self) {
        self.heard_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
    }

    /// Whether it has been silent for at least its dead-after at `now_ms`.
    fn is_silent(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.heard_ms.load(Ordering::Relaxed)) >= self.dead_after_ms
    }

    /// Cancelled when another session took this one's upload over.
    pub fn replaced(&self) -> &CancellationToken {
        &self.replaced
    }

    /// Cancelled when a collection expired this session's upload.
    pub fn expired(&self) -> &CancellationToken {
        &self.expired
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::new(std::time::Duration::from_secs(30))
    }
}

/// An upload's standing with collections. An upload open longer than the
/// relay's maximum age ([`OpenUploads::set_max_age`]) is expired: from then
/// on collections no longer keep what it appended or reused, so it may
/// never index anything again. Its catalog writes run inside
/// [`UploadFence::run`], which expiry waits for: what was indexed before is
/// an ordinary row the collection sees, nothing is indexed after.
#[derive(Debug, Default)]
pub struct UploadFence {
    expired: Mutex<bool>,
    /// The same, read without waiting (by collections holding the catalog).
    expired_now: std::sync::atomic::AtomicBool,
}

impl UploadFence {
    /// Runs `f` (the upload's catalog writes) unless the upload expired;
    /// expiry waits until `f` is done.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let expired = self.expired.lock().unwrap_or_else(|p| p.into_inner());
        (!*expired).then(f)
    }

    /// Whether the upload expired.
    pub fn is_expired(&self) -> bool {
        self.expired_now.load(Ordering::Acquire)
    }

    fn expire(&self) {
        let mut expired = self.expired.lock().unwrap_or_else(|p| p.into_inner());
        *expired = true;
        self.expired_now.store(true, Ordering::Release);
    }
}

/// A client's backup set, as uploads are keyed.
type SetKey = (ClientId, SetId);

/// Who holds a set's upload.
#[derive(Debug)]
struct Holder {
    opened: Opened,
    fence: Arc<UploadFence>,
    /// Tells this holder from a later one of the same set.
    serial: u64,
    life: Arc<Liveness>,
    /// Bytes the upload has appended so far.
    appended: Arc<AtomicU64>,
}

/// The uploads open right now, shared by the sessions and the collector.
#[derive(Debug, Default)]
pub struct OpenUploads {
    open: Mutex<HashMap<(ClientId, SetId), Holder>>,
    serials: AtomicU64,
    /// Uploads open longer than this (ms; 0: no limit) are expired by the
    /// next collection ([`OpenUploads::expire_overdue`]).
    max_age_ms: AtomicI64,
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
    pub first_pack: crate::store::PackId,
}

/// Held by an open upload; released on drop.
#[derive(Debug)]
pub struct UploadPermit {
    uploads: Arc<OpenUploads>,
    set: (ClientId, SetId),
    serial: u64,
    opened: Opened,
    fence: Arc<UploadFence>,
    appended: Arc<ClientAppends>,
    progress: Arc<AtomicU64>,
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

    /// The client whose upload this is.
    pub fn client(&self) -> ClientId {
        self.set.0
    }

    /// This upload's standing with collections.
    pub fn fence(&self) -> &UploadFence {
        &self.fence
    }

    /// Counts `bytes` this upload appended, for the status page.
    pub fn note_appended(&self, bytes: u64) {
        self.progress.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl OpenUploads {
    fn lock(&self) -> MutexGuard<'_, HashMap<(ClientId, SetId), Holder>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens an upload of `set` for the session living by `life`; `None`
    /// when another session that is not silent has that set open. A
    /// silent one is told to end (its [`Liveness::replaced`]) and loses it.
    pub fn enter(
        self: &Arc<Self>,
        set: (ClientId, SetId),
        opened: Opened,
        life: &Arc<Liveness>,
    ) -> Option<UploadPermit> {
        let mut open = self.lock();
        if let Some(holder) = open.get(&set) {
            if !holder.life.is_silent(crate::clock::now_ms()) {
                return None;
            }
            tracing::warn!(
                "client {}: a silent session's upload of set {} is taken over by a newer session",
                set.0,
                set.1
            );
            holder.life.replaced.cancel();
        }
        let serial = self.serials.fetch_add(1, Ordering::Relaxed);
        let fence = Arc::new(UploadFence::default());
        let progress = Arc::new(AtomicU64::new(0));
        open.insert(
            set,
            Holder {
                opened,
                fence: Arc::clone(&fence),
                serial,
                life: Arc::clone(life),
                appended: Arc::clone(&progress),
            },
        );
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
            serial,
            opened,
            fence,
            appended,
            progress,
        })
    }

    /// Collections keep nothing for an upload open longer than `max_age`
    /// (a stock backup throttled to a trickle would otherwise hold every
    /// collection for as long as it runs); such an upload is ended.
    pub fn set_max_age(&self, max_age: std::time::Duration) {
        self.max_age_ms.store(
            i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Expires every upload open longer than the maximum age at `now_ms`
    /// (waiting for any catalog write it is making); returns how many.
    /// A collection calls it first, then keeps nothing for them.
    pub fn expire_overdue(&self, now_ms: i64) -> usize {
        let max_age = self.max_age_ms.load(Ordering::Relaxed);
        if max_age <= 0 {
            return 0;
        }
        let overdue: Vec<(SetKey, Arc<UploadFence>, Arc<Liveness>)> = self
            .lock()
            .iter()
            .filter(|(_, h)| {
                !h.fence.is_expired() && now_ms.saturating_sub(h.opened.since_ms) > max_age
            })
            .map(|(set, h)| (*set, Arc::clone(&h.fence), Arc::clone(&h.life)))
            .collect();
        for (set, fence, life) in &overdue {
            fence.expire();
            // Its session is told and closed now, not when its next
            // (perhaps minutes-long) message arrives.
            life.expired.cancel();
            tracing::warn!(
                "client {}: the upload of set {} has been open longer than gc.max-upload-age; collections no longer wait for it, and it is ended",
                set.0,
                set.1
            );
        }
        overdue.len()
    }

    /// The earliest start and the lowest first pack among open uploads
    /// (each the minimum on its own), `None` when none is open.
    pub fn oldest(&self) -> Option<Opened> {
        let open = self.lock();
        let held = || open.values().filter(|h| !h.fence.is_expired());
        let since_ms = held().map(|h| h.opened.since_ms).min()?;
        let first_pack = held().map(|h| h.opened.first_pack).min()?;
        Some(Opened {
            since_ms,
            first_pack,
        })
    }

    /// Uploads open right now.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Each upload open now (and not expired), by its client's set: what
    /// the status page shows as running.
    pub fn in_flight(&self) -> HashMap<(ClientId, SetId), InFlight> {
        self.lock()
            .iter()
            .filter(|(_, h)| !h.fence.is_expired())
            .map(|(set, h)| {
                let flight = InFlight {
                    since_ms: h.opened.since_ms,
                    appended: h.appended.load(Ordering::Relaxed),
                };
                (*set, flight)
            })
            .collect()
    }
}

/// An upload open now, as the status page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// When it began (catalog ms).
    pub since_ms: i64,
    /// Bytes it has appended so far (new data, after compression).
    pub appended: u64,
}

impl Drop for UploadPermit {
    fn drop(&mut self) {
        let mut open = self.uploads.lock();
        // A replaced permit leaves its successor's entry alone.
        if open.get(&self.set).is_some_and(|h| h.serial == self.serial) {
            open.remove(&self.set);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: (ClientId, SetId) = (ClientId(1), SetId(1));

    fn at(since_ms: i64, first_pack: u64) -> Opened {
        Opened {
            since_ms,
            first_pack: crate::store::PackId(first_pack),
        }
    }

    fn alive() -> Arc<Liveness> {
        Arc::new(Liveness::default())
    }

    #[test]
    fn a_second_upload_of_the_same_set_is_refused_until_the_first_ends() {
        let uploads = Arc::new(OpenUploads::default());
        let first = uploads.enter(SET, at(1, 1), &alive()).unwrap();
        assert!(uploads.enter(SET, at(2, 1), &alive()).is_none());
        let other_set = uploads
            .enter((ClientId(1), SetId(2)), at(2, 1), &alive())
            .unwrap();
        let other_client = uploads
            .enter((ClientId(2), SetId(1)), at(2, 1), &alive())
            .unwrap();
        drop(first);
        let again = uploads.enter(SET, at(3, 1), &alive()).unwrap();
        assert_eq!(uploads.count(), 3);
        drop((again, other_set, other_client));
        assert_eq!(uploads.count(), 0);
    }

    #[test]
    fn the_oldest_is_the_earliest_start_and_the_lowest_pack() {
        let uploads = Arc::new(OpenUploads::default());
        assert_eq!(uploads.oldest(), None);
        let early = uploads.enter(SET, at(100, 7), &alive()).unwrap();
        let late = uploads
            .enter((ClientId(2), SetId(1)), at(200, 5), &alive())
            .unwrap();
        assert_eq!(uploads.oldest(), Some(at(100, 5)));
        drop(early);
        assert_eq!(uploads.oldest(), Some(at(200, 5)));
        assert_eq!(late.opened(), at(200, 5));
    }

    #[test]
    fn a_silent_sessions_upload_is_taken_over_and_its_permit_leaves_the_new_one() {
        let uploads = Arc::new(OpenUploads::default());
        let silent = Arc::new(Liveness::new(std::time::Duration::ZERO));
        let dead = uploads.enter(SET, at(1, 1), &silent).unwrap();
        let fresh = alive();
        let taken = uploads.enter(SET, at(2, 1), &fresh).unwrap();
        assert!(silent.replaced().is_cancelled());
        // The replaced permit ends later: the new upload stays registered.
        drop(dead);
        assert_eq!(uploads.count(), 1);
        assert!(uploads.enter(SET, at(3, 1), &alive()).is_none());
        drop(taken);
        assert_eq!(uploads.count(), 0);
    }

    #[test]
    fn an_upload_past_the_maximum_age_is_expired_and_no_longer_holds_collections() {
        let uploads = Arc::new(OpenUploads::default());
        uploads.set_max_age(std::time::Duration::from_millis(1_000));
        let old = uploads.enter(SET, at(100, 3), &alive()).unwrap();
        let young = uploads
            .enter((ClientId(2), SetId(1)), at(5_000, 7), &alive())
            .unwrap();
        assert_eq!(uploads.oldest(), Some(at(100, 3)));
        assert_eq!(uploads.expire_overdue(5_500), 1);
        assert!(old.fence().is_expired());
        assert_eq!(
            old.fence().run(|| "indexed"),
            None,
            "nothing is indexed after"
        );
        assert_eq!(young.fence().run(|| "indexed"), Some("indexed"));
        assert_eq!(uploads.oldest(), Some(at(5_000, 7)));
        // Still open: the set stays busy until the expired upload ends.
        assert_eq!(uploads.count(), 2);
    }
}
