//! The pair harness: an endpoint and a relay in one process, joined by an
//! in-memory pipe (`tokio::io::duplex`) instead of a socket.
//!
//! The relay side is the real session service (handshake, conversation,
//! worker, `Transfer`) over a real SQLite catalog in a temporary directory
//! and the in-memory blob store; the endpoint side is the real
//! `RelayClient` and the pipelines that drive it (backup, restore, verify,
//! the uploader and the fetcher). A test runs in milliseconds, counts what
//! crossed the pipe and the round trips, and can damage what the relay
//! stores or set its rules between two steps.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_endpoint::backup::{self, Control, Job, Source};
use ferry_endpoint::cache::FilesCache;
use ferry_endpoint::client::RelayClient;
use ferry_endpoint::exclude::Excludes;
use ferry_endpoint::restore::{self, Selector};
use ferry_protocol::keys::StaticKeypair;
use ferry_protocol::timestamp::ReplayGuard;
use ferry_relay::admission::Admission;
use ferry_relay::catalog::{BlobKind, Catalog, ClientId, PairOutcome};
use ferry_relay::config::{LimitsConfig, Quotas, RatesConfig};
use ferry_relay::net::IpNet;
use ferry_relay::rates::{local_now, Rates};
use ferry_relay::registry::Registry;
use ferry_relay::repo::Repo;
use ferry_relay::session_service::SessionContext;
use ferry_relay::store::MemoryStore;

/// Bytes the in-memory pipe holds in each direction before a writer waits
/// (a socket's buffers, roughly).
const PIPE_BYTES: usize = 256 * 1024;

/// A relay and one paired endpoint, in this process.
pub struct Pair {
    /// Holds the relay's catalog and the endpoint's files and cache.
    pub dir: tempfile::TempDir,
    /// The relay's catalog and store.
    pub repo: Arc<Repo>,
    /// What the relay's sessions use.
    pub relay: Arc<SessionContext>,
    /// The endpoint's key.
    pub keys: StaticKeypair,
    /// The endpoint's client id on the relay.
    pub client: ClientId,
    /// The relay's blob store (shared with `repo`), to damage.
    pub store: MemoryStore,
    admission: Admission,
}

impl Pair {
    /// A relay with one paired client, `laptop`.
    pub fn new() -> Pair {
        Pair::with_quotas(Quotas::default())
    }

    /// [`Pair::new`] with the relay's quotas.
    pub fn with_quotas(quotas: Quotas) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let keys = StaticKeypair::generate().unwrap();
        let relay_keys = StaticKeypair::generate().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let mut catalog = Catalog::open(&path).unwrap();
        let (pairing, _) = catalog
            .create_pairing("laptop", 0, i64::MAX, 7)
            .unwrap()
            .unwrap();
        let PairOutcome::Paired(record) = catalog
            .complete_pairing(pairing, &keys.public, "host", false, 1)
            .unwrap()
        else {
            panic!("pairing failed")
        };
        let store = MemoryStore::default();
        let repo = Arc::new(Repo::new(catalog, &path, store.clone()));
        let limits = LimitsConfig::default().resolve().unwrap();
        let rates = Rates::new(RatesConfig::default().resolve().unwrap(), local_now());
        let relay = Arc::new(SessionContext {
            keys: relay_keys,
            limits: limits.clone(),
            lan_networks: IpNet::default_lan(),
            retention: Default::default(),
            quotas,
            suspicion: Default::default(),
            recovery_recipient: None,
            repo: Arc::clone(&repo),
            rates: Arc::new(rates),
            replay: Mutex::new(ReplayGuard::default()),
            registry: Arc::new(Registry::default()),
            queued: ferry_relay::queue_budget::QueueBudget::relay_wide(),
            joins: ferry_relay::queue_budget::joins(),
            telemetry: Arc::default(),
            shutdown: Default::default(),
        });
        Pair {
            dir,
            repo,
            relay,
            keys,
            client: record.id,
            store,
            admission: Admission::new(&limits),
        }
    }

    /// Opens a session: the relay's service on one end of a pipe, the
    /// endpoint's handshake on the other.
    pub async fn connect(&self) -> RelayClient {
        let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
        let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000);
        let ticket = self.admission.admit(peer.ip()).unwrap();
        let relay = Arc::clone(&self.relay);
        tokio::spawn(ferry_relay::session_service::serve(
            relay, theirs, peer, ticket,
        ));
        let session = ferry_endpoint::connect::over(
            Box::new(ours),
            &self.keys,
            &self.relay.keys.public,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        RelayClient::new(session)
    }

    /// A directory under the harness's temporary directory, made.
    pub fn path(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// The endpoint's files cache.
    pub fn cache(&self) -> FilesCache {
        FilesCache::open(&self.dir.path().join("files-cache.sqlite")).unwrap()
    }

    /// A backup job of `paths` into `set`, with the defaults.
    pub fn job(&self, set: &str, paths: &[&Path]) -> Job {
        Job {
            set: set.into(),
            source: Source::Paths(paths.iter().map(|p| p.to_path_buf()).collect()),
            excludes: Excludes::new(&[]).unwrap(),
            hooks: None,
            limit: Default::default(),
            retention: Default::default(),
            compression: Default::default(),
        }
    }

    /// Backs `paths` up into `set` over `client`.
    pub async fn backup(
        &self,
        client: &mut RelayClient,
        set: &str,
        paths: &[&Path],
    ) -> anyhow::Result<backup::Summary> {
        let mut cache = self.cache();
        let job = self.job(set, paths);
        backup::run(client, &mut cache, &job, &Control::default()).await
    }

    /// Backs `paths` up into `set` in a session of its own.
    pub async fn backup_once(&self, set: &str, paths: &[&Path]) -> backup::Summary {
        let mut client = self.connect().await;
        let summary = self.backup(&mut client, set, paths).await.unwrap();
        client.close().await;
        summary
    }

    /// A restore of `set`'s newest snapshot of what was under `from` into `to`.
    pub fn restore_request(&self, set: &str, from: &Path, to: &Path) -> restore::Request {
        restore::Request {
            set: Some(set.into()),
            snapshot: Selector::Last,
            map_from: Some(from.to_path_buf()),
            map_to: to.to_path_buf(),
            paths: Vec::new(),
            checksum: false,
            preserve_privileges: false,
            overwrite: Default::default(),
        }
    }

    /// Restores `set`'s newest snapshot of `from` into `to` over `client`.
    pub async fn restore(
        &self,
        client: &mut RelayClient,
        set: &str,
        from: &Path,
        to: &Path,
    ) -> anyhow::Result<restore::Summary> {
        let request = self.restore_request(set, from, to);
        restore::run(client, &request, &Default::default()).await
    }

    /// Flips one bit of every stored blob of `kind` that `pick` chooses,
    /// as rot on the relay's disk would; returns how many.
    pub fn damage(&self, kind: BlobKind, pick: impl Fn(&[u8; 32]) -> bool) -> usize {
        let client = self.client;
        let rows = self
            .repo
            .catalog(|c| {
                let mut rows = Vec::new();
                for (pack, _) in c.packs_by_verification()? {
                    rows.extend(c.rows_to_verify(pack, i64::MAX)?);
                }
                Ok(rows)
            })
            .unwrap()
            .into_iter()
            .filter(|(owner, r, _)| *owner == client && r.kind == kind && pick(&r.id))
            .map(|(_, r, _)| r)
            .collect::<Vec<_>>();
        for row in &rows {
            self.store.flip(&row.at, u64::from(row.at.len) / 2);
        }
        rows.len()
    }
}

/// Writes `files` (relative path, contents) under `root`.
pub fn write_tree(root: &Path, files: &[(&str, Vec<u8>)]) {
    for (name, data) in files {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
}

/// `len` bytes that do not compress and do not repeat, from `seed`.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Whether every file under `a` has its twin under `b` with the same bytes
/// (and no file of `b` is missing from `a`).
pub fn same_files(a: &Path, b: &Path) -> bool {
    fn files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let data = std::fs::read(&path).unwrap();
                    out.push((path.strip_prefix(root).unwrap().to_path_buf(), data));
                }
            }
        }
        out.sort();
        out
    }
    files(a) == files(b)
}
