//! Where blob bytes live, behind two traits: [`BlobReader`] (read a blob,
//! list packs) and [`BlobStore`] (append, make durable, seal, delete).
//!
//! Blobs (chunks, trees, contents) are appended to a current *pack*, which
//! rolls over at [`PACK_TARGET`] bytes; their index lives in the catalog,
//! not in the packs. Write order, as restic does: append, then
//! [`BlobStore::sync`], and only then do catalog rows name the blobs. What
//! no row names is garbage a store may drop at open.
//!
//! Three stores: [`PackStore`], pack files in a directory (a relay's own
//! disk, the default); [`S3Store`], objects in an S3-compatible store (see
//! `s3.rs`); and [`MemoryStore`], in memory (the unit tests').

/// Implements [`BlobReader`] for a store by its `reader` field: a store
/// reads as its reader does.
macro_rules! reads_through_its_reader {
    ($store:ty) => {
        impl $crate::store::BlobReader for $store {
            fn read_into(
                &self,
                pack: $crate::store::PackId,
                offset: u64,
                len: u64,
                buffer: &mut Vec<u8>,
            ) -> std::io::Result<()> {
                self.reader.read_into(pack, offset, len, buffer)
            }

            fn packs(&self) -> std::io::Result<Vec<($crate::store::PackId, u64)>> {
                self.reader.packs()
            }

            fn repair_in_place(
                &self,
                pack: $crate::store::PackId,
                offset: u64,
                bytes: &[u8],
            ) -> std::io::Result<()> {
                self.reader.repair_in_place(pack, offset, bytes)
            }

            fn counters(&self) -> Option<$crate::store::StoreCounters> {
                self.reader.counters()
            }

            fn trailer(
                &self,
                pack: $crate::store::PackId,
            ) -> std::io::Result<Option<Vec<$crate::store::trailer::TrailerEntry>>> {
                self.reader.trailer(pack)
            }
        }
    };
}

mod memory;
#[cfg(any(test, feature = "test-hooks"))]
pub mod moto;
mod pack_files;
pub mod s3;
pub mod trailer;

use std::io;

pub use memory::MemoryStore;
pub use pack_files::{count_packs, pack_number, quarantine_dir, PackReader, PackStore};
pub use s3::{open_reader, S3Reader, S3Store};
pub use trailer::BlobLabel;

/// Size at which a pack is closed and a new one started.
pub const PACK_TARGET: u64 = 64 * 1024 * 1024;

/// A pack's number: packs are numbered in the order they were started, so
/// "below" means older (the collector's floor, the sealed ones).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct PackId(pub u64);

impl PackId {
    /// The pack after this one.
    pub fn next(self) -> PackId {
        PackId(self.0 + 1)
    }
}

impl std::fmt::Display for PackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08}", self.0)
    }
}

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Its pack.
    pub pack: PackId,
    /// Offset in the pack.
    pub offset: u64,
    /// Stored length.
    pub len: u32,
}

/// How an object store has been doing since the relay started (the
/// status page and `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreCounters {
    /// Reads served whole by the local cache.
    pub cache_hits: u64,
    /// Reads that had to ask the store.
    pub cache_misses: u64,
    /// Requests that failed after their retries.
    pub request_errors: u64,
}

/// Reading what a store holds: all `verify` needs, so it can run beside a
/// relay that writes.
pub trait BlobReader: Send + Sync + std::fmt::Debug {
    /// Reads `len` bytes of `pack` at `offset` into `buffer` (replacing
    /// what it held; its capacity is reused).
    ///
    /// # Errors
    /// I/O errors; `UnexpectedEof` when the range passes the pack's end;
    /// `NotFound` when the pack does not exist.
    fn read_into(
        &self,
        pack: PackId,
        offset: u64,
        len: u64,
        buffer: &mut Vec<u8>,
    ) -> io::Result<()>;

    /// Every pack with its length, in number order.
    ///
    /// # Errors
    /// I/O errors.
    fn packs(&self) -> io::Result<Vec<(PackId, u64)>>;

    /// Reads a blob back.
    ///
    /// # Errors
    /// I/O errors, or a location past the end of its pack.
    fn read(&self, at: &BlobLocation) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(at.pack, at.offset, u64::from(at.len), &mut out)?;
        Ok(out)
    }

    /// The object store's counters (`None` for stores on local disk).
    fn counters(&self) -> Option<StoreCounters> {
        None
    }

    /// The blobs `pack`'s trailer lists (`None`: it has none; see
    /// [`trailer`]).
    ///
    /// # Errors
    /// I/O errors, or a trailer that does not decode.
    fn trailer(&self, pack: PackId) -> io::Result<Option<Vec<trailer::TrailerEntry>>> {
        let _ = pack;
        Ok(None)
    }

    /// Writes `bytes` over what `pack` holds at `offset` (the same length,
    /// inside what is stored), durably: a rotten copy of a blob repaired
    /// from its good copy. Nothing else moves, so readers and writers
    /// beside it are unaffected.
    ///
    /// # Errors
    /// I/O errors; `Unsupported` for a store that cannot.
    fn repair_in_place(&self, pack: PackId, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let _ = (pack, offset, bytes);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this store cannot repair in place",
        ))
    }
}

/// Storage for immutable blobs: everything uploads, restores, the garbage
/// collector and repair do to bytes. Shared (`Send + Sync`, `&self`): a
/// store keeps its own writer state behind its own lock, and reads through
/// [`BlobStore::reader`] never take it.
pub trait BlobStore: BlobReader {
    /// A reader of what this store holds that shares none of its writer's
    /// state: reads through it never wait on an append, a sync or a seal
    /// (`repo::Blobs` reads through it while the writer is locked).
    fn reader(&self) -> std::sync::Arc<dyn BlobReader>;

    /// Appends a blob to the current pack; it is durable only after
    /// [`BlobStore::sync`].
    ///
    /// # Errors
    /// I/O errors (a full disk among them).
    fn append(&self, data: &[u8]) -> io::Result<BlobLocation>;

    /// Appends a blob as [`BlobStore::append`] does, saying whose it is:
    /// a store that writes trailers (the object store's) lists it in its
    /// pack's. `data` holds `label.copies` copies one after another.
    ///
    /// # Errors
    /// As [`BlobStore::append`].
    fn append_labelled(&self, data: &[u8], label: &BlobLabel) -> io::Result<BlobLocation> {
        let _ = label;
        self.append(data)
    }

    /// Makes every appended blob durable.
    ///
    /// # Errors
    /// I/O errors; an fsync error must fail the backup, never be retried.
    fn sync(&self) -> io::Result<()>;

    /// Counts the failures that may have lost appended, not yet durable
    /// blobs (a failed fsync). A writer that appended in one epoch and
    /// syncs in another must not index what it appended: a later fsync
    /// can succeed after the kernel dropped the pages an earlier one failed on.
    fn epoch(&self) -> u64;

    /// Packs numbered below this are sealed: nothing is appended to them
    /// any more, so the garbage collector may rewrite or delete them.
    fn sealed_below(&self) -> PackId;

    /// Makes the current pack durable and sealed; the next append starts
    /// a new one.
    ///
    /// # Errors
    /// I/O errors (the pack is sealed either way).
    fn seal(&self) -> io::Result<()>;

    /// When `pack` was started (ms since the epoch), for stores whose pack
    /// ids say so (the object store's); `None`: not known.
    fn pack_started_ms(&self, pack: PackId) -> Option<i64> {
        let _ = pack;
        None
    }

    /// Where this store keeps copies of the catalog, if it does (the
    /// object store).
    fn copy_shelf(&self) -> Option<&dyn CopyShelf> {
        None
    }

    /// The bytes a pack's trailer takes for `blobs` blobs (0 for a store
    /// that writes none): live bytes, to the collector.
    fn trailer_bytes(&self, blobs: u64) -> u64 {
        let _ = blobs;
        0
    }

    /// Whether a pack no row names is deleted only a grace period after it
    /// was emptied: the store is shared by relays, and one may still read
    /// it from a row it looked up before (the object store's). Local packs
    /// are read by this process alone, held in place while read.
    fn deletes_later(&self) -> bool {
        false
    }

    /// Deletes a sealed pack durably. The caller has made sure no catalog
    /// row names it any more.
    ///
    /// # Errors
    /// I/O errors, or `pack` is not sealed.
    fn remove(&self, pack: PackId) -> io::Result<()>;
}

/// Where copies of the catalog are kept and found, beside the packs
/// (`crate::catalog_copies`).
pub trait CopyShelf {
    /// Stores `bytes` as `name`.
    ///
    /// # Errors
    /// The store's errors.
    fn put(&self, name: &str, bytes: Vec<u8>) -> io::Result<()>;

    /// The names below `folder`, sorted.
    ///
    /// # Errors
    /// The store's errors.
    fn list(&self, folder: &str) -> io::Result<Vec<String>>;

    /// Deletes `name`.
    ///
    /// # Errors
    /// The store's errors.
    fn delete(&self, name: &str) -> io::Result<()>;
}

/// Where a relay's packs live: its `[storage]`, resolved.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Pack files in this directory (`DATA/store/packs`).
    Local(std::path::PathBuf),
    /// Objects in an S3-compatible store.
    S3 {
        /// The store and its keys.
        settings: s3::S3Settings,
        /// The read cache and the packs being built (`DATA/store/s3`).
        dir: std::path::PathBuf,
        /// This relay's id, in the name of every pack it writes.
        relay: u16,
    },
}

impl Storage {
    /// A reader of what the store holds, sharing nothing with a writer (a
    /// `verify` beside a serving relay).
    ///
    /// # Errors
    /// The store's settings refused, or local I/O errors.
    pub fn reader(&self) -> io::Result<std::sync::Arc<dyn BlobReader>> {
        Ok(match self {
            Storage::Local(packs) => std::sync::Arc::new(PackReader::new(packs)),
            Storage::S3 { settings, dir, .. } => {
                // Its own cache: a serving relay's is not shared across processes.
                let cache = dir.join(format!("cache-{}", std::process::id()));
                std::sync::Arc::new(s3::open_reader(settings, &cache, &dir.join("staging"))?)
            }
        })
    }

    /// What and where, for messages: `pack files in DIR`, `bucket B at URL`.
    pub fn describe(&self) -> String {
        match self {
            Storage::Local(packs) => format!("the pack files in {}", packs.display()),
            Storage::S3 { settings, .. } => {
                format!("bucket {} at {}", settings.bucket, settings.endpoint)
            }
        }
    }
}

/// The error of removing a pack that is still being written.
fn not_sealed(pack: PackId) -> io::Error {
    io::Error::other(format!("pack {pack} is still being written"))
}

/// The error of a blob larger than a location can name.
fn too_large() -> io::Error {
    io::Error::other("blob too large")
}

/// Whether an I/O error means the disk (or the quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// A failure of the store, as one clear line: a full disk says so first,
/// since that is what the user and the operator must act on.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The disk (or the quota) is full.
    #[error("no space left on the relay's disk ({doing}: {source})")]
    Full {
        /// What the relay was doing.
        doing: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The object store failed (after its retries).
    #[error("the relay's object store failed ({doing}: {source})")]
    Remote {
        /// What the relay was doing.
        doing: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// Any other I/O failure.
    #[error("the relay's disk failed ({doing}: {source})")]
    Failed {
        /// What the relay was doing.
        doing: &'static str,
        /// The underlying error.
        source: io::Error,
    },
}

/// Names an I/O error of the store by what the relay was `doing`.
pub fn storage_error(source: io::Error, doing: &'static str) -> StorageError {
    let remote = source
        .get_ref()
        .is_some_and(|inner| inner.is::<s3::ObjectStoreFailure>());
    if is_disk_full(&source) {
        StorageError::Full { doing, source }
    } else if remote {
        StorageError::Remote { doing, source }
    } else {
        StorageError::Failed { doing, source }
    }
}

#[cfg(test)]
mod tests;
