//! [`S3Store`]: packs as objects in an S3-compatible store (the
//! `object_store` crate), for relays that keep nothing on their own disk
//! but a cache and the pack being written.
//!
//! A pack is built in `DATA/store/s3/staging/` and uploaded whole — at
//! every [`BlobStore::sync`] (an upload's commit), and in the background
//! when it reaches [`S3_PACK_TARGET`] (a sync waits for those too) — under
//! a name that is never used twice:
//! `PREFIX/packs/<ms>-<relay>.pack`, the time it was started and the relay
//! that wrote it. Its [`PackId`] is the same two numbers (`ms << 10 |
//! relay`), so packs sort by age across relays and no relay needs another's
//! counter. An uploaded object is never written again: a blob is durable
//! once the PUT that holds it returned, and only then does the caller name
//! it in the catalog. A pack whose upload failed is dropped, and the failure
//! counted in [`BlobStore::epoch`] like a failed fsync.
//!
//! Reads are ranged GETs of [`cache::BLOCK`]-sized blocks through a bounded
//! [`cache::BlockCache`]; the relay's own uploads enter it whole.

mod bridge;
pub mod cache;
mod named;
mod readahead;
mod uploads;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use super::pack_files::{append_to, create_pack_file, is_full};
use super::trailer::{self, BlobLabel, TrailerEntry};
use super::{not_sealed, too_large, BlobLocation, BlobReader, BlobStore, PackId};
use bridge::Bridge;
use cache::{blocks_of, BlockCache, BLOCK};

/// Size at which an object-store pack is sent and a new one started:
/// smaller than local packs, so more of a backup's uploading overlaps
/// its reading (a pack uploads in the background while the next fills),
/// and less waits at its commit.
pub const S3_PACK_TARGET: u64 = 16 * 1024 * 1024;

/// Relay ids fit in the low bits of a pack's id.
pub const RELAY_BITS: u32 = 10;

/// The largest relay id.
pub const MAX_RELAY_ID: u16 = (1 << RELAY_BITS) - 1;

/// The pack a relay starts at `ms`.
fn pack_id(ms: u64, relay: u16) -> PackId {
    PackId(ms << RELAY_BITS | u64::from(relay))
}

/// A pack's object name below the prefix: `packs/<ms>-<relay>.pack`.
fn object_name(pack: PackId) -> String {
    format!(
        "packs/{:013}-{:04}.pack",
        pack.0 >> RELAY_BITS,
        pack.0 & u64::from(MAX_RELAY_ID)
    )
}

/// The pack an object name (below the prefix) names, if it is one.
fn pack_of(name: &str) -> Option<PackId> {
    let (ms, relay) = name
        .strip_prefix("packs/")?
        .strip_suffix(".pack")?
        .split_once('-')?;
    let relay: u16 = relay.parse().ok().filter(|r| *r <= MAX_RELAY_ID)?;
    Some(pack_id(ms.parse().ok()?, relay))
}

fn now_ms() -> u64 {
    u64::try_from(crate::clock::now_ms()).unwrap_or(0)
}

/// An object store's failure, inside the I/O error the store returns (so
/// `super::storage_error` names the object store, not a disk).
#[derive(Debug)]
pub struct ObjectStoreFailure(String);

impl std::fmt::Display for ObjectStoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ObjectStoreFailure {}

/// An object store error as an I/O error naming what was done to what.
fn failed(doing: &str, what: &ObjectPath, e: object_store::Error) -> io::Error {
    let kind = match e {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, ObjectStoreFailure(format!("{doing} {what}: {e}")))
}

/// Makes `dir` (and its parents), readable by the relay's user only.
fn make_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The object store's settings: relay.toml's `[storage] kind = "s3"`,
/// checked and resolved (`crate::config::StorageConfig::s3`).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// The object store's URL.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// Where object names start (empty, or ending in `/`).
    pub prefix: String,
    /// The region.
    pub region: String,
    /// Bucket in the path rather than the host name.
    pub path_style: bool,
    /// The access key id.
    pub access_key_id: String,
    /// The secret key (never logged: see the `Debug` impl).
    pub secret_access_key: String,
    /// Bytes of the local read cache.
    pub cache_bytes: u64,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Reads packs from the object store through the cache; never writes to
/// the store.
#[derive(Debug)]
pub struct S3Reader {
    store: Arc<dyn ObjectStore>,
    bridge: Arc<Bridge>,
    prefix: String,
    cache: Arc<BlockCache>,
    readahead: readahead::Readahead,
    staging: PathBuf,
    /// Pack lengths seen in listings and uploads (a pack never changes).
    lengths: Mutex<HashMap<PackId, u64>>,
    /// Requests that failed after their retries.
    errors: Arc<std::sync::atomic::AtomicU64>,
}

impl S3Reader {
    /// Runs a request on the store's runtime, counting it if it failed
    /// (a missing object is an answer, not a failure).
    fn request<T, F>(&self, work: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = io::Result<T>> + Send + 'static,
    {
        let outcome = self.bridge.run(work);
        if outcome
            .as_ref()
            .is_err_and(|e| e.kind() != io::ErrorKind::NotFound)
        {
            self.errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        outcome
    }

    fn path(&self, pack: PackId) -> ObjectPath {
        ObjectPath::from(format!("{}{}", self.prefix, object_name(pack)))
    }

    fn staged_path(&self, pack: PackId) -> PathBuf {
        self.staging.join(format!("{pack}"))
    }

    fn length(&self, pack: PackId) -> io::Result<u64> {
        if let Some(len) = self.lengths().get(&pack) {
            return Ok(*len);
        }
        let (store, path) = (Arc::clone(&self.store), self.path(pack));
        let len = self.request(async move {
            store
                .head(&path)
                .await
                .map(|meta| meta.size)
                .map_err(|e| failed("reading the length of", &path, e))
        })?;
        self.lengths().insert(pack, len);
        Ok(len)
    }

    fn lengths(&self) -> std::sync::MutexGuard<'_, HashMap<PackId, u64>> {
        self.lengths.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get_range(&self, pack: PackId, range: std::ops::Range<u64>) -> io::Result<bytes::Bytes> {
        let (store, path) = (Arc::clone(&self.store), self.path(pack));
        self.request(async move {
            store
                .get_range(&path, range)
                .await
                .map_err(|e| failed("reading", &path, e))
        })
    }

    /// Uploads `bytes` as the whole of `pack`.
    fn put(&self, pack: PackId, bytes: Vec<u8>) -> io::Result<()> {
        bridge::wait(&self.start_put(pack, bytes)?)
    }

    /// Starts uploading `bytes` as the whole of `pack`.
    fn start_put(&self, pack: PackId, bytes: Vec<u8>) -> io::Result<bridge::Outcome<()>> {
        let (store, path) = (Arc::clone(&self.store), self.path(pack));
        let errors = Arc::clone(&self.errors);
        self.bridge.start(async move {
            let outcome = store.put(&path, bytes.into()).await;
            if outcome.is_err() {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            outcome
                .map(|_| ())
                .map_err(|e| failed("uploading", &path, e))
        })
    }

    /// Takes note that `pack` (`len` bytes) is in the store: its staging
    /// file becomes its cached copy.
    fn uploaded(&self, pack: PackId, len: u64) {
        self.lengths().insert(pack, len);
        self.cache.adopt(pack, &self.staged_path(pack), len);
    }

    /// Reads from the pack still being written here, if it is that one.
    fn read_staged(&self, pack: PackId, offset: u64, buffer: &mut [u8]) -> io::Result<bool> {
        match File::open(self.staged_path(pack)) {
            Ok(file) => file.read_exact_at(buffer, offset).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Fetches the blocks `len` bytes at `offset` lie in, keeps them, and
    /// copies the range out of them.
    fn fetch_blocks(&self, pack: PackId, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        let pack_len = self.length(pack)?;
        let end = offset + buffer.len() as u64;
        if end > pack_len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("a read past the end of pack {pack}"),
            ));
        }
        for block in blocks_of(offset, buffer.len() as u64) {
            let start = block * BLOCK;
            let data = self.block(pack, block, start..(start + BLOCK).min(pack_len))?;
            let from = offset.max(start);
            let to = end.min(start + data.len() as u64);
            buffer[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&data[(from - start) as usize..(to - start) as usize]);
        }
        self.read_ahead(pack, (end - 1) / BLOCK + 1, pack_len);
        Ok(())
    }

    /// Block `block` of `pack` (its bytes `range`): from the fetch ahead
    /// that holds it if one runs, else fetched now; kept in the cache.
    fn block(
        &self,
        pack: PackId,
        block: u64,
        range: std::ops::Range<u64>,
    ) -> io::Result<bytes::Bytes> {
        if let Some(done) = self.readahead.claim(pack, block) {
            let mut data = Vec::new();
            let len = range.end - range.start;
            if bridge::wait(&done).is_ok() && self.cache.read(pack, range.start, len, &mut data)? {
                return Ok(data.into());
            }
        }
        let want = range.end - range.start;
        let data = self.get_range(pack, range)?;
        // A store that answers short must not leave zeros in a blob.
        if data.len() as u64 != want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("pack {pack}: the store sent {} of {want} bytes", data.len()),
            ));
        }
        self.cache.put_block(pack, block, &data)?;
        Ok(data)
    }

    /// Starts fetching `block` of `pack` into the cache in the background,
    /// unless it is there, past the pack's end, or fetched already.
    fn read_ahead(&self, pack: PackId, block: u64, pack_len: u64) {
        let start = block * BLOCK;
        if start >= pack_len
            || self.cache.holds(pack, start, 1)
            || !self.readahead.should_start(pack, block)
        {
            return;
        }
        let (store, path, cache) = (
            Arc::clone(&self.store),
            self.path(pack),
            Arc::clone(&self.cache),
        );
        let range = start..(start + BLOCK).min(pack_len);
        let want = range.end - range.start;
        let fetch = async move {
            let data = store
                .get_range(&path, range)
                .await
                .map_err(|e| failed("reading ahead in", &path, e))?;
            if data.len() as u64 != want {
                // Not kept: the reader asks again, and names the short answer.
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            cache.put_block(pack, block, &data)
        };
        if let Ok(done) = self.bridge.start(fetch) {
            self.readahead.started(pack, block, done);
        }
    }
}

impl BlobReader for S3Reader {
    fn read_into(
        &self,
        pack: PackId,
        offset: u64,
        len: u64,
        buffer: &mut Vec<u8>,
    ) -> io::Result<()> {
        if self.cache.read(pack, offset, len, buffer)? {
            return Ok(());
        }
        let len = usize::try_from(len).map_err(|_| too_large())?;
        buffer.resize(len, 0);
        if self.read_staged(pack, offset, buffer)? {
            return Ok(());
        }
        if self.cache.enabled() {
            return self.fetch_blocks(pack, offset, buffer);
        }
        let data = self.get_range(pack, offset..offset + len as u64)?;
        if data.len() != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("a read past the end of pack {pack}"),
            ));
        }
        buffer.copy_from_slice(&data);
        Ok(())
    }

    fn counters(&self) -> Option<super::StoreCounters> {
        let (cache_hits, cache_misses) = self.cache.counts();
        Some(super::StoreCounters {
            cache_hits,
            cache_misses,
            request_errors: self.errors.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    fn trailer(&self, pack: PackId) -> io::Result<Option<Vec<TrailerEntry>>> {
        let len = self.length(pack)?;
        let footer = self.get_range(pack, len.saturating_sub(trailer::FOOTER as u64)..len)?;
        let Some(trailer_len) = trailer::length(&footer, len)? else {
            return Ok(None);
        };
        let bytes = self.get_range(pack, len - trailer_len..len)?;
        trailer::decode(pack, &bytes, len).map(Some)
    }

    fn packs(&self) -> io::Result<Vec<(PackId, u64)>> {
        let mut packs: Vec<(PackId, u64)> = self
            .list_under("packs")?
            .iter()
            .filter_map(|(name, size)| Some((pack_of(name)?, *size)))
            .collect();
        packs.sort_unstable();
        self.lengths().extend(packs.iter().copied());
        Ok(packs)
    }
}

/// Packs in an S3-compatible object store.
#[derive(Debug)]
pub struct S3Store {
    reader: Arc<S3Reader>,
    relay: u16,
    writer: Mutex<Writer>,
    /// Size at which a pack is sent and a new one started.
    pack_target: u64,
    /// How many packs the store held when it was opened.
    packs_at_open: usize,
}

#[derive(Debug, Default)]
struct Writer {
    /// The pack being built, its staging file and its length.
    current: Option<(PackId, File, u64)>,
    /// Its blobs, for its trailer (`super::trailer`).
    trailer: Vec<TrailerEntry>,
    /// Full packs on their way to the store.
    uploads: uploads::InFlight,
    /// When the last pack was started (a new one starts later).
    last_ms: u64,
    epoch: u64,
}

/// How the object store is asked: a few retries with backoff on errors
/// and timeouts (5xx, resets), then the error.
fn client_settings() -> (RetryConfig, ClientOptions) {
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: Duration::from_secs(60),
    };
    let options = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(120));
    (retry, options)
}

/// The object store `settings` name.
///
/// # Errors
/// Settings the client refuses (a malformed endpoint).
fn connect(settings: &S3Settings) -> io::Result<Arc<dyn ObjectStore>> {
    let (retry, options) = client_settings();
    // The client options first: they replace what `with_allow_http` sets.
    let store = AmazonS3Builder::new()
        .with_client_options(options)
        .with_endpoint(&settings.endpoint)
        .with_bucket_name(&settings.bucket)
        .with_region(&settings.region)
        .with_access_key_id(&settings.access_key_id)
        .with_secret_access_key(&settings.secret_access_key)
        .with_allow_http(settings.endpoint.starts_with("http://"))
        .with_virtual_hosted_style_request(!settings.path_style)
        .with_retry(retry)
        .build()
        .map_err(|e| io::Error::other(format!("object store {}: {e}", settings.endpoint)))?;
    Ok(Arc::new(store))
}

/// A reader of the object store `settings` name, its cache in `cache`
/// (emptied now, removed when it is dropped), the packs being written in
/// `staging`.
///
/// # Errors
/// Bad settings, or I/O errors on the cache's directory.
pub fn open_reader(settings: &S3Settings, cache: &Path, staging: &Path) -> io::Result<S3Reader> {
    Ok(S3Reader {
        store: connect(settings)?,
        bridge: Arc::new(Bridge::new()?),
        prefix: settings.prefix.clone(),
        cache: Arc::new(BlockCache::open(cache, settings.cache_bytes)?),
        readahead: readahead::Readahead::default(),
        staging: staging.to_path_buf(),
        lengths: Mutex::default(),
        errors: Arc::default(),
    })
}

impl S3Store {
    /// Opens the store for relay `relay`: drops the packs a stopped relay
    /// was still building (never uploaded, so never named), and lists the
    /// store, which also proves it answers.
    ///
    /// # Errors
    /// Bad settings, an unreachable store or bucket, local I/O errors.
    pub fn open(settings: &S3Settings, dir: &Path, relay: u16) -> io::Result<Self> {
        if relay > MAX_RELAY_ID {
            return Err(io::Error::other(format!(
                "relay id {relay} is above {MAX_RELAY_ID}"
            )));
        }
        let reader = open_reader(settings, &dir.join("cache"), &dir.join("staging"))?;
        match fs::remove_dir_all(&reader.staging) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        make_private_dir(&reader.staging)?;
        let listed = reader.packs().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot list bucket {} at {} ({e})",
                    settings.bucket, settings.endpoint
                ),
            )
        })?;
        Ok(S3Store {
            reader: Arc::new(reader),
            relay,
            writer: Mutex::default(),
            pack_target: S3_PACK_TARGET,
            packs_at_open: listed.len(),
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many packs the store held when it was opened (listed then).
    pub fn packs_at_open(&self) -> usize {
        self.packs_at_open
    }

    /// Sends packs at `bytes` instead of [`S3_PACK_TARGET`] (tests).
    #[cfg(test)]
    pub fn with_pack_target(mut self, bytes: u64) -> Self {
        self.pack_target = bytes;
        self
    }

    /// Starts uploading the pack being built, if it holds anything; the
    /// next append starts another.
    fn send_current(&self, writer: &mut Writer) -> io::Result<()> {
        let Some((pack, file, mut len)) = writer.current.take() else {
            return Ok(());
        };
        let trailer = trailer::encode(&std::mem::take(&mut writer.trailer));
        let Writer { uploads, epoch, .. } = writer;
        if let Err(e) = append_to(&file, &mut len, &trailer) {
            uploads::failed(&self.reader, pack, &e, epoch);
            return Err(e);
        }
        uploads.start(&self.reader, pack, &file, len, epoch)
    }

    /// Uploads the pack being built and waits for every upload: then all
    /// that was appended is in the store. A failed upload drops its pack
    /// and counts in the epoch: nothing in it may be named.
    fn upload_all(&self, writer: &mut Writer) -> io::Result<()> {
        let sent = self.send_current(writer);
        let Writer { uploads, epoch, .. } = writer;
        let finished = uploads.finish_all(&self.reader, epoch);
        sent.and(finished)
    }
}

impl S3Store {
    /// Stores `bytes` as the whole of `pack` (a pack moved in from another
    /// store: `ferry-relay migrate`), unless the store holds it already
    /// with the same bytes. Its id keeps the name it had, so the catalog's
    /// rows name it unchanged.
    ///
    /// # Errors
    /// The object store's errors, or a pack of that id holding other bytes.
    pub fn import(&self, pack: PackId, bytes: Vec<u8>) -> io::Result<()> {
        match self.reader.length(pack) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
            Ok(len) => {
                let mut held = Vec::new();
                if len == bytes.len() as u64 {
                    self.reader.read_into(pack, 0, len, &mut held)?;
                }
                if held == bytes {
                    return Ok(());
                }
                return Err(io::Error::other(format!(
                    "the store already holds a pack {pack} with other bytes; nothing was written over it"
                )));
            }
        }
        self.reader.lengths().remove(&pack);
        let len = bytes.len() as u64;
        self.reader.put(pack, bytes)?;
        self.reader.lengths().insert(pack, len);
        Ok(())
    }
}

impl Writer {
    fn sealed_below(&self) -> PackId {
        self.current.as_ref().map_or_else(
            || PackId(now_ms().max(self.last_ms + 1) << RELAY_BITS),
            |(pack, _, _)| *pack,
        )
    }
}

reads_through_its_reader!(S3Store);

impl BlobStore for S3Store {
    fn reader(&self) -> Arc<dyn BlobReader> {
        Arc::clone(&self.reader) as Arc<dyn BlobReader>
    }

    /// Unlabelled: listed in the trailer as no client's (a rebuild skips
    /// it). The relay labels every blob it appends.
    fn append(&self, data: &[u8]) -> io::Result<BlobLocation> {
        self.append_labelled(
            data,
            &BlobLabel {
                copies: 1,
                ..BlobLabel::default()
            },
        )
    }

    fn append_labelled(&self, data: &[u8], label: &BlobLabel) -> io::Result<BlobLocation> {
        let len = u32::try_from(data.len()).map_err(|_| too_large())?;
        let mut writer = self.writer();
        if is_full(writer.current.as_ref(), self.pack_target) {
            // In the background: appends go on into the next pack.
            self.send_current(&mut writer)?;
        }
        if writer.current.is_none() {
            let ms = now_ms().max(writer.last_ms + 1);
            writer.last_ms = ms;
            let pack = pack_id(ms, self.relay);
            let file = create_pack_file(&self.reader.staged_path(pack))?;
            writer.current = Some((pack, file, 0));
        }
        let (pack, file, size) = writer.current.as_mut().expect("opened above");
        let at = BlobLocation {
            pack: *pack,
            offset: append_to(file, size, data)?,
            len,
        };
        writer.trailer.push(TrailerEntry {
            label: *label,
            at: BlobLocation {
                len: len / u32::from(label.copies.max(1)),
                ..at
            },
        });
        Ok(at)
    }

    fn sync(&self) -> io::Result<()> {
        let mut writer = self.writer();
        self.upload_all(&mut writer)
    }

    fn epoch(&self) -> u64 {
        self.writer().epoch
    }

    fn sealed_below(&self) -> PackId {
        self.writer().sealed_below()
    }

    fn seal(&self) -> io::Result<()> {
        let mut writer = self.writer();
        self.upload_all(&mut writer)
    }

    fn deletes_later(&self) -> bool {
        true
    }

    fn copy_shelf(&self) -> Option<&dyn crate::store::CopyShelf> {
        Some(&*self.reader)
    }

    fn trailer_bytes(&self, blobs: u64) -> u64 {
        blobs * trailer::ENTRY as u64 + trailer::FOOTER as u64
    }

    fn pack_started_ms(&self, pack: PackId) -> Option<i64> {
        i64::try_from(pack.0 >> RELAY_BITS).ok()
    }

    fn remove(&self, pack: PackId) -> io::Result<()> {
        if pack >= self.sealed_below() {
            return Err(not_sealed(pack));
        }
        let (store, path) = (Arc::clone(&self.reader.store), self.reader.path(pack));
        self.reader.request(async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(failed("deleting", &path, e)),
            }
        })?;
        self.reader.cache.forget(pack);
        self.reader.lengths().remove(&pack);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_packs_upload_in_the_background_and_a_sync_waits_for_them() {
        let moto = crate::store::moto::Moto::shared();
        let settings = moto.settings("background", 0);
        let dir = tempfile::tempdir().unwrap();
        let store = S3Store::open(&settings, dir.path(), 1)
            .unwrap()
            .with_pack_target(1000);
        let blobs: Vec<Vec<u8>> = (0..7u8).map(|n| vec![n; 600]).collect();
        let at: Vec<BlobLocation> = blobs.iter().map(|b| store.append(b).unwrap()).collect();
        // Every second blob fills a pack: four packs, three sent already.
        assert_eq!(
            at.iter()
                .map(|a| a.pack)
                .collect::<std::collections::HashSet<_>>()
                .len(),
            4
        );
        store.sync().unwrap();
        assert_eq!(store.epoch(), 0);
        // Another relay, with no cache, reads every blob from the bucket.
        let other = tempfile::tempdir().unwrap();
        let reader = S3Store::open(&settings, other.path(), 2).unwrap();
        assert_eq!(reader.packs().unwrap().len(), 4);
        for (blob, at) in blobs.iter().zip(&at) {
            assert_eq!(&reader.read(at).unwrap(), blob);
        }
    }

    #[test]
    fn a_read_that_fetched_a_block_fetches_the_next_one_ahead() {
        let moto = crate::store::moto::Moto::shared();
        let settings = moto.settings("ahead", 64 << 20);
        let dir = tempfile::tempdir().unwrap();
        let store = S3Store::open(&settings, dir.path(), 1).unwrap();
        let blobs: Vec<Vec<u8>> = (0..3u8).map(|n| vec![n; 4 << 20]).collect();
        let at: Vec<BlobLocation> = blobs.iter().map(|b| store.append(b).unwrap()).collect();
        store.sync().unwrap();
        let other = tempfile::tempdir().unwrap();
        let reader = S3Store::open(&settings, other.path(), 2).unwrap();
        let first = BlobLocation { len: 100, ..at[0] };
        assert_eq!(reader.read(&first).unwrap(), vec![0; 100]);
        // The block after it arrives in the cache without being asked for.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !reader.reader.cache.holds(at[1].pack, cache::BLOCK, 1) {
            assert!(
                std::time::Instant::now() < deadline,
                "block 1 was not read ahead"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for (blob, at) in blobs.iter().zip(&at) {
            assert_eq!(&reader.read(at).unwrap(), blob);
        }
    }

    #[test]
    fn object_names_and_pack_ids_read_back() {
        let pack = pack_id(1_764_000_000_123, 7);
        let name = object_name(pack);
        assert_eq!(name, "packs/1764000000123-0007.pack");
        assert_eq!(pack_of(&name), Some(pack));
        assert!(pack_id(1_764_000_000_124, 0) > pack_id(1_764_000_000_123, MAX_RELAY_ID));
        for bad in [
            "packs/1-2000.pack",
            "packs/x-1.pack",
            "other/1-1.pack",
            "packs/1-1",
        ] {
            assert_eq!(pack_of(bad), None, "{bad}");
        }
    }
}
