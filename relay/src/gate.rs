//! Keeps uploads and garbage collection apart.
//!
//! An upload may skip a chunk because the relay said it has it; if a
//! collection deleted that chunk before the upload's snapshot named it, the
//! snapshot would be incomplete. So each upload holds an [`UploadPermit`]
//! from `BackupBegin` to its end, and a collection runs only while none is
//! held. A waiting collection goes first: new uploads wait for it, so a
//! steady stream of backups cannot starve it. Waits happen on the blocking
//! pool, never on the async threads.
//!
//! It also keeps two uploads of the same backup set apart (the daemon's
//! scheduled run and one started by hand): the second is refused at once,
//! never queued behind the first.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::catalog::{ClientId, SetId};

/// The gate shared by the sessions and the collector.
#[derive(Debug, Default)]
pub struct UploadGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    uploads: usize,
    collecting: bool,
    /// The sets with an open upload.
    sets: HashSet<(ClientId, SetId)>,
}

/// Held by an open upload; released on drop.
#[derive(Debug)]
pub struct UploadPermit {
    gate: Arc<UploadGate>,
    set: (ClientId, SetId),
}

/// Held by a running collection; released on drop.
#[derive(Debug)]
pub struct CollectPermit<'g> {
    gate: &'g UploadGate,
}

impl UploadGate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, GateState>) -> MutexGuard<'a, GateState> {
        self.changed.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    /// Admits an upload of `set`, waiting while a collection runs or waits
    /// to run; `None` at once when that set has an open upload already.
    pub fn enter(self: &Arc<Self>, set: (ClientId, SetId)) -> Option<UploadPermit> {
        let mut state = self.lock();
        if state.sets.contains(&set) {
            return None;
        }
        while state.collecting {
            state = self.wait(state);
        }
        if !state.sets.insert(set) {
            return None;
        }
        state.uploads += 1;
        Some(UploadPermit {
            gate: Arc::clone(self),
            set,
        })
    }

    /// Waits for any other collection, then for every open upload to end.
    pub fn exclusive(&self) -> CollectPermit<'_> {
        let mut state = self.lock();
        while state.collecting {
            state = self.wait(state);
        }
        state.collecting = true;
        while state.uploads > 0 {
            state = self.wait(state);
        }
        CollectPermit { gate: self }
    }

    /// Uploads open right now.
    pub fn uploads(&self) -> usize {
        self.lock().uploads
    }
}

impl Drop for UploadPermit {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.uploads -= 1;
        state.sets.remove(&self.set);
        drop(state);
        self.gate.changed.notify_all();
    }
}

impl Drop for CollectPermit<'_> {
    fn drop(&mut self) {
        self.gate.lock().collecting = false;
        self.gate.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn collection_waits_for_uploads_and_new_uploads_wait_for_it() {
        let gate = Arc::new(UploadGate::default());
        let upload = gate.enter(SET).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let collector = {
            let (gate, done) = (Arc::clone(&gate), Arc::clone(&done));
            std::thread::spawn(move || {
                let permit = gate.exclusive();
                tx.send("collecting").unwrap();
                std::thread::sleep(Duration::from_millis(50));
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                drop(permit);
            })
        };
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the collection must wait for the open upload"
        );
        drop(upload);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok("collecting"));
        // The collection holds the gate: a new upload waits until it is done.
        let second = gate.enter(SET).unwrap();
        assert!(
            done.load(std::sync::atomic::Ordering::SeqCst),
            "the upload entered during the collection"
        );
        assert_eq!(gate.uploads(), 1);
        drop(second);
        collector.join().unwrap();
    }

    const SET: (ClientId, SetId) = (ClientId(1), SetId(1));

    #[test]
    fn a_second_upload_of_the_same_set_is_refused_until_the_first_ends() {
        let gate = Arc::new(UploadGate::default());
        let first = gate.enter(SET).unwrap();
        assert!(gate.enter(SET).is_none());
        let other_set = gate.enter((ClientId(1), SetId(2))).unwrap();
        let other_client = gate.enter((ClientId(2), SetId(1))).unwrap();
        drop(first);
        let again = gate.enter(SET).unwrap();
        assert_eq!(gate.uploads(), 3);
        drop((again, other_set, other_client));
        assert_eq!(gate.uploads(), 0);
    }
}
