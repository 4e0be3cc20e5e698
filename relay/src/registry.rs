//! Live sessions by client, so that revoking a key closes its sessions at once.

use crate::catalog::ClientId;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The relay's table of open sessions.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<ClientId, HashMap<u64, CancellationToken>>>,
    next_id: AtomicU64,
}

/// One registered session; unregisters itself on drop.
#[derive(Debug)]
pub struct SessionEntry {
    registry: Arc<Registry>,
    client: ClientId,
    id: u64,
    /// Cancelled when the client's key is revoked.
    pub revoked: CancellationToken,
}

impl Drop for SessionEntry {
    fn drop(&mut self) {
        let mut map = self.registry.lock();
        if let Some(sessions) = map.get_mut(&self.client) {
            sessions.remove(&self.id);
            if sessions.is_empty() {
                map.remove(&self.client);
            }
        }
    }
}

impl Registry {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ClientId, HashMap<u64, CancellationToken>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open sessions per client, for the status page and metrics.
    pub fn open_by_client(&self) -> HashMap<ClientId, usize> {
        self.lock()
            .iter()
            .map(|(client, sessions)| (*client, sessions.len()))
            .collect()
    }

    /// Registers a new session of `client`; `None` when it has `max` open
    /// already (each holds memory and a worker thread: one client may not
    /// take them all).
    pub fn register(self: &Arc<Self>, client: ClientId, max: usize) -> Option<SessionEntry> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let revoked = CancellationToken::new();
        let mut map = self.lock();
        let sessions = map.entry(client).or_default();
        if sessions.len() >= max {
            return None;
        }
        sessions.insert(id, revoked.clone());
        Some(SessionEntry {
            registry: Arc::clone(self),
            client,
            id,
            revoked,
        })
    }

    /// Revokes every session whose client is not in `active`; returns the
    /// revoked clients' ids.
    pub fn revoke_inactive(&self, active: &HashSet<ClientId>) -> Vec<ClientId> {
        let map = self.lock();
        let mut revoked = Vec::new();
        for (client, sessions) in map.iter().filter(|(c, _)| !active.contains(c)) {
            sessions.values().for_each(CancellationToken::cancel);
            revoked.push(*client);
        }
        revoked
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_and_unregister() {
        let registry = Arc::new(Registry::default());
        let a = registry.register(ClientId(1), 1).unwrap();
        assert!(
            registry.register(ClientId(1), 1).is_none(),
            "one session per client here"
        );
        let b = registry.register(ClientId(2), 1).unwrap();
        assert_eq!(registry.len(), 2);
        let revoked = registry.revoke_inactive(&HashSet::from([ClientId(2)]));
        assert_eq!(revoked, vec![ClientId(1)]);
        assert!(a.revoked.is_cancelled());
        assert!(!b.revoked.is_cancelled());
        drop(a);
        drop(b);
        assert!(registry.is_empty());
    }
}
