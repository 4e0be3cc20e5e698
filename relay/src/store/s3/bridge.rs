//! Runs the object store's async calls for the store's blocking callers.
//!
//! The stores' callers are blocking threads (the catalog workers, the
//! collector, verify), so the object store gets a small runtime of its own:
//! a call is spawned there and its caller waits on a channel. This never
//! nests one runtime in another, so it cannot panic whatever thread asks.

use std::future::Future;
use std::io;

/// A private runtime for the object store's requests.
#[derive(Debug)]
pub struct Bridge {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Bridge {
    /// Starts the runtime (two worker threads: requests are I/O bound).
    ///
    /// # Errors
    /// The runtime's start failing.
    pub fn new() -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-object-store")
            .enable_all()
            .build()?;
        Ok(Bridge {
            runtime: Some(runtime),
        })
    }

    /// Runs `work` on the runtime and waits for its outcome.
    ///
    /// # Errors
    /// What `work` returns, or the runtime having stopped.
    pub fn run<T, F>(&self, work: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: Future<Output = io::Result<T>> + Send + 'static,
    {
        wait(&self.start(work)?)
    }

    /// Starts `work` on the runtime; its outcome arrives on the channel
    /// returned (see [`wait`]).
    ///
    /// # Errors
    /// The runtime having stopped.
    pub fn start<T, F>(&self, work: F) -> io::Result<Outcome<T>>
    where
        T: Send + 'static,
        F: Future<Output = io::Result<T>> + Send + 'static,
    {
        let runtime = self.runtime.as_ref().ok_or_else(stopped)?;
        let (done, outcome) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = done.send(work.await);
        });
        Ok(outcome)
    }
}

/// Where a started call's outcome arrives.
pub type Outcome<T> = std::sync::mpsc::Receiver<io::Result<T>>;

/// Waits for a started call's outcome.
///
/// # Errors
/// What the call returned, or the runtime having stopped.
pub fn wait<T>(outcome: &Outcome<T>) -> io::Result<T> {
    outcome.recv().map_err(|_| stopped())?
}

fn stopped() -> io::Error {
    io::Error::other("the object store's runtime stopped")
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's task would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
