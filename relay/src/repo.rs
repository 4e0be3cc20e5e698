//! The storage handle: the catalog, the blob store and what keeps their
//! users apart, behind one type.
//!
//! [`Repo`] is what the upload and restore rules ([`crate::transfer`]) and
//! the garbage collector ([`crate::gc`]) work on; nothing else of the
//! server reaches them. Uploads, restores and collections run side by side:
//!
//! - the *open uploads* ([`crate::gate`]) tell a collection what it must
//!   keep for uploads that have not committed yet;
//! - the *pack files* lock: readers hold it shared around each lookup and
//!   read, the collector exclusively only while it deletes a pack.

use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use anyhow::Context;

use crate::catalog::{self, Catalog, CatalogAt, ClientId, SetId};
use crate::gate::{OpenUploads, Opened, UploadPermit};
use crate::store::{
    storage_error, BlobLabel, BlobLocation, BlobReader, BlobStore, PackId, PackStore, StorageError,
};

/// The catalog and the blob store of one relay.
#[derive(Debug)]
pub struct Repo {
    /// The shared connection; only ever locked off the async threads.
    catalog: Mutex<Catalog>,
    /// Where the catalog is, for the collector's own connection.
    catalog_at: CatalogAt,
    blobs: Blobs,
    uploads: Arc<OpenUploads>,
    /// The last upload id handed out (staged trees are keyed by it).
    last_upload: std::sync::atomic::AtomicU64,
    /// The disk reserve (the relay's; none in unit tests).
    reserve: Option<Arc<crate::reserve::DiskReserve>>,
    /// This relay's id and collection lease (none in unit tests).
    relay: std::sync::OnceLock<(u16, std::time::Duration)>,
    /// A second connection for the handshake's key lookups (see
    /// [`Repo::look_up`]; none in unit tests).
    lookups: Option<Mutex<Catalog>>,
}

impl Repo {
    /// A repo over `catalog` (opened from `at`) and `store`.
    pub fn new(
        catalog: Catalog,
        at: impl Into<CatalogAt>,
        store: impl BlobStore + 'static,
    ) -> Self {
        Self::with_store(catalog, at, Box::new(store))
    }

    /// A repo over `catalog` (opened from `at`) and `store`.
    pub fn with_store(
        catalog: Catalog,
        at: impl Into<CatalogAt>,
        store: Box<dyn BlobStore>,
    ) -> Self {
        Repo {
            catalog: Mutex::new(catalog),
            catalog_at: at.into(),
            blobs: Blobs::new(store),
            uploads: Arc::default(),
            last_upload: std::sync::atomic::AtomicU64::new(0),
            reserve: None,
            relay: std::sync::OnceLock::new(),
            lookups: None,
        }
    }

    /// Opens the connection [`Repo::look_up`] reads through.
    ///
    /// # Errors
    /// The catalog's, opening it again.
    pub fn with_lookups(mut self) -> catalog::Result<Self> {
        self.lookups = Some(Mutex::new(Catalog::open_at(&self.catalog_at)?));
        Ok(self)
    }

    /// Keeps `reserve`: while it is released, backups are refused.
    pub fn with_reserve(mut self, reserve: Arc<crate::reserve::DiskReserve>) -> Self {
        self.reserve = Some(reserve);
        self
    }

    /// Whether a backup may begin (see `crate::reserve`).
    pub fn accepts_backups(&self) -> bool {
        self.reserve
            .as_ref()
            .is_none_or(|reserve| reserve.accepts_backups())
    }

    /// The relay's repo: `catalog` and the packs `storage` names (pack
    /// files are cut back to what the catalog names).
    ///
    /// # Errors
    /// SQLite or storage errors, or a catalog that cannot be this store's.
    pub fn open(
        catalog: Catalog,
        at: impl Into<CatalogAt>,
        storage: &crate::store::Storage,
    ) -> anyhow::Result<Self> {
        let at = at.into();
        let opened = |e: std::io::Error| {
            anyhow::Error::new(e).context(format!("cannot open {}", storage.describe()))
        };
        let store: Box<dyn BlobStore> = match storage {
            crate::store::Storage::Local(dir) => {
                let packs = crate::store::count_packs(dir)?;
                refuse_a_stranger(&catalog, &at, packs, storage)?;
                let ends = catalog.committed_pack_ends()?;
                Box::new(PackStore::open(dir, &ends).map_err(opened)?)
            }
            crate::store::Storage::S3 {
                settings,
                dir,
                relay,
            } => {
                let store = crate::store::S3Store::open(settings, dir, *relay).map_err(opened)?;
                let packs = store.packs_at_open();
                refuse_a_stranger(&catalog, &at, packs, storage)?;
                Box::new(store)
            }
        };
        Ok(Repo::with_store(catalog, at, store))
    }

    /// Runs `f` on the shared catalog connection, here (a blocking call).
    ///
    /// # Errors
    /// What `f` returns.
    pub fn catalog<T>(
        &self,
        f: impl FnOnce(&mut Catalog) -> catalog::Result<T>,
    ) -> catalog::Result<T> {
        f(&mut lock(&self.catalog))
    }

    /// Runs `f` on the shared catalog connection off the async threads.
    ///
    /// # Errors
    /// What `f` returns, or a panicked worker.
    pub async fn db<T, F>(self: &Arc<Self>, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Catalog) -> catalog::Result<T> + Send + 'static,
    {
        let repo = Arc::clone(self);
        Ok(tokio::task::spawn_blocking(move || repo.catalog(f))
            .await
            .context("catalog worker failed")??)
    }

    /// Runs the read `f` off the async threads on a connection of its own
    /// (the shared one without [`Repo::with_lookups`]): a handshake's key
    /// lookup must not queue behind the shared connection's writes (a
    /// commit's fsync, a write waiting for a busy catalog), which would
    /// spend the endpoint's handshake deadline.
    ///
    /// # Errors
    /// What `f` returns, or a panicked worker.
    pub async fn look_up<T, F>(self: &Arc<Self>, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Catalog) -> catalog::Result<T> + Send + 'static,
    {
        let repo = Arc::clone(self);
        let read = move || match &repo.lookups {
            Some(own) => f(&lock(own)),
            None => repo.catalog(|c| f(c)),
        };
        Ok(tokio::task::spawn_blocking(read)
            .await
            .context("catalog worker failed")??)
    }

    /// The blob store.
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// Makes this repo relay `relay`'s: its id in the top bits of its
    /// upload ids (relays sharing a catalog never stage under the same
    /// one), and its collections taken in turn under the catalog's lease,
    /// renewed for `gc_lease`.
    pub fn set_relay(&self, relay: u16, gc_lease: std::time::Duration) {
        self.last_upload.store(
            upload_ids_of(relay).start,
            std::sync::atomic::Ordering::Relaxed,
        );
        let _ = self.relay.set((relay, gc_lease));
    }

    /// This relay's id and collection lease, once set.
    pub fn relay(&self) -> Option<(u16, std::time::Duration)> {
        self.relay.get().copied()
    }

    /// A new upload's id, unique while this process runs (staged trees
    /// are dropped at every start).
    pub fn next_upload_id(&self) -> u64 {
        self.last_upload
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// Opens an upload of `client`'s set `set`, at once, collection or
    /// not; what it reuses and appends is kept by collections until the
    /// permit is dropped. `None` when that set has an open upload already.
    pub fn enter_upload(
        &self,
        client: ClientId,
        set: SetId,
        life: &Arc<crate::gate::Liveness>,
    ) -> Option<UploadPermit> {
        // Read before registering: a pack sealed in between holds nothing
        // of this upload, and it appends only to packs from this one on.
        let first_pack = self.blobs.store().sealed_below();
        let opened = Opened {
            since_ms: crate::clock::now_ms(),
            first_pack,
        };
        self.uploads.enter((client, set), opened, life)
    }

    /// The open uploads.
    pub fn uploads(&self) -> &OpenUploads {
        &self.uploads
    }

    /// Where the catalog lives, for work that opens its own connection
    /// (the collector, so sessions are not blocked on the shared one).
    pub fn catalog_at(&self) -> &CatalogAt {
        &self.catalog_at
    }
}

/// The upload ids relay `relay` hands out (its id in the top bits).
pub fn upload_ids_of(relay: u16) -> std::ops::Range<u64> {
    let start = u64::from(relay) << UPLOAD_ID_BITS;
    start..start + (1 << UPLOAD_ID_BITS)
}

/// Bits of an upload id below the relay's id.
const UPLOAD_ID_BITS: u32 = 52;

/// Refuses a catalog that knows nothing beside a store holding `packs`
/// packs: the wrong catalog, or an emptied one, must never be taken as
/// the truth about them.
fn refuse_a_stranger(
    catalog: &Catalog,
    at: &CatalogAt,
    packs: usize,
    storage: &crate::store::Storage,
) -> anyhow::Result<()> {
    if packs > 0 && catalog.knows_nothing()? {
        anyhow::bail!(
            "the catalog {} knows no client and no blob, but {} hold(s) {packs} pack(s): it is not this store's catalog, or it was emptied. Nothing was changed. Put the right catalog back (from a copy), or point [storage] at an empty store",
                        at,
            storage.describe(),
        );
    }
    Ok(())
}

/// A blob store shared by sessions and the collector.
#[derive(Debug)]
pub struct Blobs {
    store: Box<dyn BlobStore>,
    /// The store's reader: reads never take a writer's lock, so they never
    /// wait on a session's fsync.
    reader: Arc<dyn BlobReader>,
    /// Held while an append or a sync reads the epoch after it, so a
    /// failed fsync in between (another session's) cannot go unseen.
    writes: Mutex<()>,
    /// Held shared by readers, exclusively while a pack is deleted.
    files: RwLock<()>,
}

/// Pack files held in place: a blob found in the catalog while this lives
/// can be read, whatever the collector does meanwhile.
#[derive(Debug)]
pub struct Reading<'a> {
    blobs: &'a Blobs,
    _files: RwLockReadGuard<'a, ()>,
}

impl Reading<'_> {
    /// Reads a blob.
    ///
    /// # Errors
    /// The store's errors, named.
    pub fn read(&self, at: &BlobLocation) -> Result<Vec<u8>, StorageError> {
        self.blobs.read(at)
    }
}

impl Blobs {
    /// Shares `store`.
    pub fn new(store: Box<dyn BlobStore>) -> Self {
        Blobs {
            reader: store.reader(),
            store,
            writes: Mutex::new(()),
            files: RwLock::new(()),
        }
    }

    /// Holds the packs in place for a lookup and the reads that follow it.
    pub fn reading(&self) -> Reading<'_> {
        Reading {
            blobs: self,
            _files: self.files.read().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Reads a blob (the caller keeps the pack in place: it holds
    /// [`Blobs::reading`], or it is the collector).
    ///
    /// # Errors
    /// The store's errors, named.
    pub fn read(&self, at: &BlobLocation) -> Result<Vec<u8>, StorageError> {
        self.reader
            .read(at)
            .map_err(|e| storage_error(e, "reading a pack"))
    }

    /// Appends a blob (`label` says whose, for the pack's trailer);
    /// returns where, and the store's epoch after it.
    ///
    /// # Errors
    /// The store's errors, named (a full disk first).
    pub fn append(
        &self,
        data: &[u8],
        label: &BlobLabel,
    ) -> Result<(BlobLocation, u64), StorageError> {
        let _writes = lock(&self.writes);
        let at = self
            .store
            .append_labelled(data, label)
            .map_err(|e| storage_error(e, "writing a pack"))?;
        Ok((at, self.store.epoch()))
    }

    /// Makes every appended blob durable; returns the epoch after it.
    ///
    /// # Errors
    /// The store's errors, named.
    pub fn sync(&self) -> Result<u64, StorageError> {
        let _writes = lock(&self.writes);
        self.store
            .sync()
            .map_err(|e| storage_error(e, "making a pack durable"))?;
        Ok(self.store.epoch())
    }

    /// Copies a blob to the current pack (the collector's rewrite).
    ///
    /// # Errors
    /// The store's errors, named.
    pub fn copy(&self, at: &BlobLocation, label: &BlobLabel) -> Result<BlobLocation, StorageError> {
        let data = self.read(at)?;
        let _writes = lock(&self.writes);
        self.store
            .append_labelled(&data, label)
            .map_err(|e| storage_error(e, "writing a pack"))
    }

    /// The sealed packs (those the collector may rewrite or delete) with
    /// their lengths.
    ///
    /// # Errors
    /// The store's errors, named.
    pub fn sealed_packs(&self) -> Result<Vec<(PackId, u64)>, StorageError> {
        let below = self.store.sealed_below();
        let packs = self
            .store
            .packs()
            .map_err(|e| storage_error(e, "listing packs"))?;
        Ok(packs.into_iter().filter(|(p, _)| *p < below).collect())
    }

    /// Seals the current pack.
    ///
    /// # Errors
    /// The store's errors, named.
    pub fn seal(&self) -> Result<(), StorageError> {
        self.store
            .seal()
            .map_err(|e| storage_error(e, "sealing a pack"))
    }

    /// Deletes a sealed pack once no reader holds the packs in place.
    ///
    /// # Errors
    /// The store's errors, named.
    pub fn remove(&self, pack: PackId) -> Result<(), StorageError> {
        let _no_readers = self.files.write().unwrap_or_else(|p| p.into_inner());
        self.store
            .remove(pack)
            .map_err(|e| storage_error(e, "deleting a pack"))
    }

    /// The store itself (tests reach through it to damage blobs).
    pub fn store(&self) -> &dyn BlobStore {
        self.store.as_ref()
    }
}

/// Locks `mutex`, going on after a panic elsewhere: every holder leaves
/// the state consistent between calls.
fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
