//! How many received bytes the relay holds in memory waiting for its
//! workers: per session and all sessions together.
//!
//! A session's network side reads and decrypts the next requests while its
//! worker stores the current one. Each request waiting holds a share of
//! both budgets, by the bytes that carried it, until the worker is done
//! with it; when either is spent the session stops reading, so TCP slows
//! the sender (back-pressure, not buffering). With the cap on sessions per
//! client, that also bounds what one client can make the relay hold.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Received bytes one session may have waiting for its worker.
pub const SESSION_QUEUE_BYTES: usize = 8 << 20;

/// Received bytes all sessions together may have waiting.
pub const RELAY_QUEUE_BYTES: usize = 256 << 20;

/// Sessions that may be joining a message of several frames at once: each
/// holds up to a message's 4 MiB while it does, so together at most
/// 256 MiB; the others wait with one frame read (see
/// `ferry_net::io::Channel::joining_within`).
pub const MAX_JOINING: usize = 64;

/// The relay-wide permits of [`MAX_JOINING`].
pub fn joins() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_JOINING))
}

/// The budgets a session draws on.
#[derive(Debug, Clone)]
pub struct QueueBudget {
    session: Arc<Semaphore>,
    relay: Arc<Semaphore>,
}

/// A request's share of both budgets, given back on drop.
#[derive(Debug)]
pub struct Queued {
    _session: OwnedSemaphorePermit,
    _relay: OwnedSemaphorePermit,
}

impl QueueBudget {
    /// A new session's budget, drawing on the relay's `relay` one.
    pub fn for_session(relay: &Arc<Semaphore>) -> Self {
        QueueBudget {
            session: Arc::new(Semaphore::new(SESSION_QUEUE_BYTES)),
            relay: Arc::clone(relay),
        }
    }

    /// The relay-wide budget, shared by every session.
    pub fn relay_wide() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(RELAY_QUEUE_BYTES))
    }

    /// Waits until `bytes` (at most the session's whole budget) fit in both
    /// budgets, and holds them.
    pub async fn hold(&self, bytes: u64) -> Queued {
        let bytes = u32::try_from(bytes.min(SESSION_QUEUE_BYTES as u64)).unwrap_or(u32::MAX);
        let session = Arc::clone(&self.session)
            .acquire_many_owned(bytes)
            .await
            .expect("the session's budget is never closed");
        let relay = Arc::clone(&self.relay)
            .acquire_many_owned(bytes)
            .await
            .expect("the relay's budget is never closed");
        Queued {
            _session: session,
            _relay: relay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_session_waits_when_its_budget_or_the_relays_is_spent() {
        let relay = QueueBudget::relay_wide();
        let one = QueueBudget::for_session(&relay);
        let held = one.hold(SESSION_QUEUE_BYTES as u64 - 10).await;
        let blocked = tokio::time::timeout(Duration::from_millis(50), one.hold(11)).await;
        assert!(blocked.is_err(), "the session's budget is spent");
        drop(held);
        let small = tokio::time::timeout(Duration::from_secs(1), one.hold(11))
            .await
            .expect("given back on drop");
        drop(small);
        // Many sessions together stop at the relay's budget.
        let sessions: Vec<QueueBudget> = (0..RELAY_QUEUE_BYTES / SESSION_QUEUE_BYTES)
            .map(|_| QueueBudget::for_session(&relay))
            .collect();
        let mut holds = Vec::new();
        for session in &sessions {
            holds.push(session.hold(SESSION_QUEUE_BYTES as u64).await);
        }
        let another = QueueBudget::for_session(&relay);
        let blocked = tokio::time::timeout(Duration::from_millis(50), another.hold(1)).await;
        assert!(blocked.is_err(), "the relay's budget is spent");
    }
}
