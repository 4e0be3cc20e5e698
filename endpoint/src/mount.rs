//! `ferry mount MOUNTPOINT`: the relay's snapshots as a read-only
//! filesystem (FUSE), `sets/SET/ID-TIME/…` with a `latest` link in each
//! set, for open and sealed clients alike; snapshots made while it is
//! mounted appear (the relay is asked again, at most every 5 s, when the
//! list of sets or snapshots is looked at). Directories come from the
//! snapshots' trees, read the first time one is entered; a file's bytes
//! are fetched when it is first opened, into a bounded local cache. The
//! mount ends cleanly on SIGINT, SIGTERM or `fusermount -u`.

mod cache;
mod fs;
pub mod nodes;
mod remote;

use std::path::PathBuf;

use anyhow::{Context, Result};
use fuser::{Config, MountOption, SessionACL};

use crate::browse::dump::Scratch;
use crate::browse::Reader;
use crate::state::StateDir;

/// What to mount.
#[derive(Debug, Clone)]
pub struct MountRequest {
    /// An empty directory.
    pub mountpoint: PathBuf,
    /// Only this set's snapshots (every set's without one).
    pub set: Option<String>,
    /// Bytes of fetched files kept at most (beyond files open now).
    pub cache_bytes: u64,
}

/// Threads that answer the kernel: a file being fetched does not stop
/// another from being listed or read.
const THREADS: usize = 4;

/// Mounts, serves until unmounted or signalled, and unmounts.
///
/// # Errors
/// The relay cannot be reached, the mountpoint cannot be mounted (no
/// `/dev/fuse`, not a directory, not permitted), a sealed client's keys
/// cannot be had.
pub async fn run(state: &StateDir, request: &MountRequest) -> Result<()> {
    let mut client = crate::jobs::open_client(state).await?;
    let reader = Reader::new(state, &mut client).await?;
    let snapshots = crate::snapshot::list(&mut client, request.set.as_deref()).await?;
    let nodes = nodes::Nodes::new(&snapshots);
    let cache = cache::Cache::new(Scratch::new(&std::env::temp_dir())?, request.cache_bytes);
    let remote = remote::Remote::new(state.clone(), reader, client);
    let runtime = tokio::runtime::Handle::current();
    let filesystem = fs::SnapshotFs::new(nodes, (cache, remote), runtime, request.set.clone());
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoAtime,
        MountOption::FSName("ferry".into()),
        MountOption::Subtype("ferry".into()),
    ];
    config.acl = SessionACL::Owner;
    config.n_threads = Some(THREADS);
    let mountpoint = &request.mountpoint;
    let mut session = fuser::Session::new(filesystem, mountpoint, &config).with_context(|| {
        format!(
            "cannot mount at {} (it must be an empty directory, and FUSE usable: /dev/fuse and fusermount3 from Debian's fuse3)",
            mountpoint.display()
        )
    })?;
    let mut unmounter = session.unmount_callable();
    let (ended, served) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ferry-mount".into())
        .spawn(move || {
            let _ = ended.send(session.run());
        })?;
    eprintln!(
        "ferry: {} snapshot(s) mounted at {}; end with Ctrl-C or `fusermount -u {}`",
        snapshots.len(),
        mountpoint.display(),
        mountpoint.display()
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::pin!(served);
    let result = tokio::select! {
        result = &mut served => result,
        _ = tokio::signal::ctrl_c() => unmount(&mut unmounter, &mut served).await,
        _ = terminate.recv() => unmount(&mut unmounter, &mut served).await,
    };
    match result {
        Ok(Ok(())) => {
            eprintln!("ferry: unmounted {}", mountpoint.display());
            Ok(())
        }
        Ok(Err(e)) => Err(e).context("the mount ended with an error"),
        Err(_) => anyhow::bail!("the mount's thread ended without a word"),
    }
}

/// Unmounts, then waits for the serving threads to end.
async fn unmount(
    unmounter: &mut fuser::SessionUnmounter,
    served: &mut std::pin::Pin<&mut tokio::sync::oneshot::Receiver<std::io::Result<()>>>,
) -> Result<std::io::Result<()>, tokio::sync::oneshot::error::RecvError> {
    if let Err(e) = unmounter.unmount() {
        tracing::warn!("cannot unmount: {e}");
    }
    served.await
}
