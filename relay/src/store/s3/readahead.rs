//! Reading ahead in the object store: after a read that had to fetch, the
//! block after it is fetched in the background into the cache, so a
//! restore reading a pack in order finds the next block there (or waits for
//! the fetch already running) instead of asking and waiting for each block
//! in turn. At most [`MAX_AHEAD`] fetches at once.

use std::collections::HashMap;
use std::sync::Mutex;

use super::bridge::Outcome;
use crate::store::PackId;

/// Blocks fetched ahead at once, at most (each is a block in memory).
pub const MAX_AHEAD: usize = 4;

/// The blocks being fetched ahead.
#[derive(Debug, Default)]
pub struct Readahead {
    in_flight: Mutex<HashMap<(PackId, u64), Outcome<()>>>,
}

impl Readahead {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<(PackId, u64), Outcome<()>>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fetch of `block` of `pack` running, if one is: the caller waits
    /// for it, then finds the block in the cache.
    pub fn claim(&self, pack: PackId, block: u64) -> Option<Outcome<()>> {
        self.in_flight().remove(&(pack, block))
    }

    /// Whether to fetch `block` of `pack` ahead: not already fetching it,
    /// and room for one more (fetches done are forgotten first).
    pub fn should_start(&self, pack: PackId, block: u64) -> bool {
        let mut in_flight = self.in_flight();
        in_flight
            .retain(|_, done| matches!(done.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty)));
        !in_flight.contains_key(&(pack, block)) && in_flight.len() < MAX_AHEAD
    }

    /// Takes note of a fetch started.
    pub fn started(&self, pack: PackId, block: u64, done: Outcome<()>) {
        self.in_flight().insert((pack, block), done);
    }
}
