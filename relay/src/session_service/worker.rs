//! A session's worker: its requests handled in order off the async threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ferry_protocol::message::Message;

use crate::queue_budget::Queued;
use crate::transfer::{Transfer, TransferError};

/// Requests a session's worker holds at most: the network side reads and
/// decrypts the next ones while it stores (or checks, or reads) this one.
const QUEUED: usize = 4;

/// Where a session's requests go to its worker, with their share of the
/// queue budgets.
pub(super) type Requests = tokio::sync::mpsc::Sender<(Message, Queued)>;

/// Where the worker's replies (and the error that ends the session) come
/// back, in order.
pub(super) type Replies = tokio::sync::mpsc::UnboundedReceiver<Result<Message, TransferError>>;

/// A session's requests handled in order on a blocking thread, so storage
/// never runs on the async runtime and a session costs no thread hop per
/// message: while requests keep coming the worker does not sleep.
pub(super) struct Worker;

impl Worker {
    /// Starts the worker; returns where to send requests, where replies (and
    /// the error that ends the session) come back in order, and the count of
    /// requests sent and not yet handled, which the sender increments.
    pub(super) fn start(mut transfer: Transfer) -> (Requests, Replies, Arc<AtomicUsize>) {
        let (requests, mut incoming) = tokio::sync::mpsc::channel::<(Message, Queued)>(QUEUED);
        let (outgoing, replies) = tokio::sync::mpsc::unbounded_channel();
        let busy = Arc::new(AtomicUsize::new(0));
        let handled = Arc::clone(&busy);
        tokio::task::spawn_blocking(move || {
            while let Some((request, held)) = incoming.blocking_recv() {
                let result = match request {
                    // Answered in turn, after the replies before it.
                    Message::Ping { nonce } => {
                        transfer.ping().map(|()| Some(Message::Pong { nonce }))
                    }
                    request => transfer.handle(request),
                };
                drop(held);
                handled.fetch_sub(1, Ordering::AcqRel);
                let reply = match result {
                    Ok(None) => continue,
                    Ok(Some(reply)) => Ok(reply),
                    Err(e) => Err(e),
                };
                let failed = reply.is_err();
                if outgoing.send(reply).is_err() || failed {
                    break;
                }
            }
            transfer.finish();
        });
        (requests, replies, busy)
    }
}
