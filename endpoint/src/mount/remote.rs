//! The mount's side of the session: one session to the relay, opened
//! again when it breaks (a laptop that slept, a relay restarted), used
//! to read a snapshot's entries and to fetch one file at a time.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use anyhow::{bail, Result};
use ferry_protocol::message::SnapshotInfo;

use crate::browse::{Listed, Reader};
use crate::client::RelayClient;
use crate::restore::{Request, Selection, Selector};
use crate::state::StateDir;

/// A boxed future borrowing the session.
type OnSession<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + 'a>>;

/// The session and what reads through it.
pub struct Remote {
    state: StateDir,
    reader: Reader,
    client: tokio::sync::Mutex<Option<RelayClient>>,
    fetching: tokio::sync::Mutex<()>,
}

impl Remote {
    /// Reads through `client`, as `reader` says (open or sealed).
    pub fn new(state: StateDir, reader: Reader, client: RelayClient) -> Self {
        Self {
            state,
            reader,
            client: tokio::sync::Mutex::new(Some(client)),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Held while a file is fetched (one at a time: they share the session).
    pub async fn fetching(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.fetching.lock().await
    }

    /// Runs `work` on the session; once more on a new session if it fails.
    async fn on_session<T>(
        &self,
        mut work: impl for<'a> FnMut(&'a mut RelayClient, &'a StateDir, &'a Reader) -> OnSession<'a, T>,
    ) -> Result<T> {
        let mut guard = self.client.lock().await;
        let mut failure = None;
        for _ in 0..2 {
            let client = match guard.as_mut() {
                Some(client) => client,
                None => guard.insert(crate::jobs::open_client(&self.state).await?),
            };
            match work(client, &self.state, &self.reader).await {
                Ok(done) => return Ok(done),
                Err(e) => {
                    tracing::warn!("mount: {e:#}; trying once more on a new session");
                    *guard = None;
                    failure = Some(e);
                }
            }
        }
        Err(failure.expect("tried"))
    }

    /// The snapshots of `set` (every set's without one), oldest first.
    ///
    /// # Errors
    /// Session failures.
    pub async fn snapshots(&self, set: Option<String>) -> Result<Vec<SnapshotInfo>> {
        self.on_session(|client, _, _| {
            let set = set.clone();
            Box::pin(async move { crate::snapshot::list(client, set.as_deref()).await })
        })
        .await
    }

    /// Every entry of snapshot `snapshot`, parents first.
    ///
    /// # Errors
    /// Session failures; a tree damaged or (sealed) altered.
    pub async fn listing(&self, snapshot: u64) -> Result<Vec<Listed>> {
        self.on_session(|client, state, reader| {
            Box::pin(async move {
                let which = (None, Selector::Id(snapshot));
                let all = Selection::under(None);
                let (_, listed) = reader
                    .entries(state, client, which, &all, usize::MAX)
                    .await?;
                Ok(listed)
            })
        })
        .await
    }

    /// Restores files `paths` of snapshot `snapshot` below `into` (at
    /// their absolute paths there).
    ///
    /// # Errors
    /// Session failures; a file the relay could not give back whole.
    pub async fn fetch(&self, snapshot: u64, paths: Vec<PathBuf>, into: PathBuf) -> Result<()> {
        let request = Request {
            set: None,
            snapshot: Selector::Id(snapshot),
            map_from: None,
            map_to: into,
            paths,
            checksum: false,
            preserve_privileges: false,
            overwrite: crate::overwrite::Overwrite::Always,
        };
        self.on_session(|client, state, reader| {
            let request = request.clone();
            Box::pin(async move {
                let live = crate::progress::Live::default();
                let summary = reader.restore(state, client, &request, &live).await?;
                if summary.errors > 0 {
                    bail!("{}", summary.lines().join("; "));
                }
                Ok(())
            })
        })
        .await
    }
}
