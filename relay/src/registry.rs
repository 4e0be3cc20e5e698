//! Live sessions by client and key, so that revoking a key (a removed
//! client, or one handed to a new machine) closes its sessions at once.

use crate::catalog::ClientId;
use ferry_protocol::keys::PublicKey;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The relay's table of open sessions.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<ClientId, HashMap<u64, Session>>>,
    next_id: AtomicU64,
}

/// A session as the registry holds it.
#[derive(Debug)]
struct Session {
    /// The key it was opened with.
    key: PublicKey,
    revoked: CancellationToken,
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
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, HashMap<u64, Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open sessions per client, for the status page and metrics.
    pub fn open_by_client(&self) -> HashMap<ClientId, usize> {
        self.lock()
            .iter()
            .map(|(client, sessions)| (*client, sessions.len()))
            .collect()
    }

    /// Registers a new session of `client`, opened with `key`; `None` when
    /// it has `max` open already (each holds memory and a worker thread:
    /// one client may not take them all).
    pub fn register(
        self: &Arc<Self>,
        client: ClientId,
        key: PublicKey,
        max: usize,
    ) -> Option<SessionEntry> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let revoked = CancellationToken::new();
        let mut map = self.lock();
        let sessions = map.entry(client).or_default();
        if sessions.len() >= max {
            return None;
        }
        sessions.insert(
            id,
            Session {
                key,
                revoked: revoked.clone(),
            },
        );
        Some(SessionEntry {
            registry: Arc::clone(self),
            client,
            id,
            revoked,
        })
    }

    /// Revokes every session whose client is not in `active` or was opened
    /// with another key than the client's now; returns their clients' ids.
    pub fn revoke_inactive(&self, active: &HashMap<ClientId, PublicKey>) -> Vec<ClientId> {
        let map = self.lock();
        let mut revoked = Vec::new();
        for (client, sessions) in map.iter() {
            let stale = sessions
                .values()
                .filter(|s| active.get(client) != Some(&s.key))
                .inspect(|s| s.revoked.cancel())
                .count();
            if stale > 0 {
                revoked.push(*client);
            }
        }
        revoked
    }

    /// Revokes the sessions of `client` opened with another key than
    /// `key` (it was just handed to a new machine); returns how many.
    pub fn revoke_other_keys(&self, client: ClientId, key: &PublicKey) -> usize {
        self.lock().get(&client).map_or(0, |sessions| {
            sessions
                .values()
                .filter(|s| s.key != *key)
                .inspect(|s| s.revoked.cancel())
                .count()
        })
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
        let (one, two) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let a = registry.register(ClientId(1), one, 1).unwrap();
        assert!(
            registry.register(ClientId(1), one, 1).is_none(),
            "one session per client here"
        );
        let b = registry.register(ClientId(2), two, 1).unwrap();
        assert_eq!(registry.len(), 2);
        let revoked = registry.revoke_inactive(&HashMap::from([(ClientId(2), two)]));
        assert_eq!(revoked, vec![ClientId(1)]);
        assert!(a.revoked.is_cancelled());
        assert!(!b.revoked.is_cancelled());
        drop(a);
        drop(b);
        assert!(registry.is_empty());
    }

    #[test]
    fn a_client_handed_to_a_new_key_loses_the_old_keys_sessions() {
        let registry = Arc::new(Registry::default());
        let (old, new) = (PublicKey([1; 32]), PublicKey([9; 32]));
        let lost = registry.register(ClientId(1), old, 4).unwrap();
        let found = registry.register(ClientId(1), new, 4).unwrap();
        let revoked = registry.revoke_inactive(&HashMap::from([(ClientId(1), new)]));
        assert_eq!(revoked, vec![ClientId(1)]);
        assert!(lost.revoked.is_cancelled());
        assert!(!found.revoked.is_cancelled());
    }
}
