//! [`MemoryStore`]: packs held in memory, for the upload and collection
//! rules' unit tests. It keeps the file store's contract (packs roll over,
//! only sealed packs are removed, a failed sync seals the pack and moves
//! the epoch) so a rule that holds here holds on disk. Clones share the
//! packs, so a test keeps one to damage what the relay stored.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{not_sealed, too_large, BlobLocation, BlobReader, BlobStore, PackId};

/// Packs in memory; clones share them.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    packs: Arc<Mutex<Packs>>,
}

#[derive(Debug, Default)]
struct Packs {
    packs: BTreeMap<PackId, Vec<u8>>,
    /// The pack being appended to.
    current: Option<PackId>,
    next_pack: PackId,
    /// Roll over to a new pack at this size (0: the file store's target).
    pack_target: u64,
    epoch: u64,
    /// Fail the next sync (as a disk would with EIO).
    fail_next_sync: bool,
}

impl MemoryStore {
    /// An empty store whose packs roll over at `pack_target` bytes.
    pub fn with_pack_target(pack_target: u64) -> Self {
        let store = MemoryStore::default();
        store.lock().pack_target = pack_target;
        store
    }

    /// Makes the next [`BlobStore::sync`] fail, sealing the current pack
    /// and moving the epoch, as a failed fsync does on disk.
    pub fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
    }

    /// Flips one bit of a stored blob's byte at `offset` (a rotting disk).
    pub fn flip(&self, at: &BlobLocation, offset: u64) {
        let mut packs = self.lock();
        if let Some(byte) = packs
            .packs
            .get_mut(&at.pack)
            .and_then(|p| p.get_mut((at.offset + offset) as usize))
        {
            *byte ^= 1;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Packs> {
        self.packs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Packs {
    fn target(&self) -> u64 {
        if self.pack_target == 0 {
            super::PACK_TARGET
        } else {
            self.pack_target
        }
    }

    fn seal(&mut self) {
        self.current = None;
    }

    fn sealed_below(&self) -> PackId {
        self.current.unwrap_or(self.next_pack.next())
    }
}

impl BlobReader for MemoryStore {
    fn read_into(
        &self,
        pack: PackId,
        offset: u64,
        len: u64,
        buffer: &mut Vec<u8>,
    ) -> io::Result<()> {
        let packs = self.lock();
        let bytes = packs
            .packs
            .get(&pack)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let range = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(offset.saturating_add(len)).ok())
            .and_then(|(start, end)| bytes.get(start..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buffer.clear();
        buffer.extend_from_slice(range);
        Ok(())
    }

    fn packs(&self) -> io::Result<Vec<(PackId, u64)>> {
        Ok(self
            .lock()
            .packs
            .iter()
            .map(|(pack, bytes)| (*pack, bytes.len() as u64))
            .collect())
    }
}

impl BlobStore for MemoryStore {
    /// Clones share the packs, so a clone reads what this one writes.
    fn reader(&self) -> Arc<dyn BlobReader> {
        Arc::new(self.clone())
    }

    fn append(&self, data: &[u8]) -> io::Result<BlobLocation> {
        let len = u32::try_from(data.len()).map_err(|_| too_large())?;
        let mut packs = self.lock();
        let full = packs
            .current
            .is_some_and(|pack| packs.packs[&pack].len() as u64 >= packs.target());
        if full {
            packs.seal();
        }
        let pack = match packs.current {
            Some(pack) => pack,
            None => {
                packs.next_pack = packs.next_pack.next();
                packs.current = Some(packs.next_pack);
                packs.next_pack
            }
        };
        let bytes = packs.packs.entry(pack).or_default();
        let offset = bytes.len() as u64;
        bytes.extend_from_slice(data);
        Ok(BlobLocation { pack, offset, len })
    }

    fn sync(&self) -> io::Result<()> {
        let mut packs = self.lock();
        if std::mem::take(&mut packs.fail_next_sync) {
            packs.seal();
            packs.epoch += 1;
            return Err(io::Error::from_raw_os_error(5));
        }
        Ok(())
    }

    fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    fn sealed_below(&self) -> PackId {
        self.lock().sealed_below()
    }

    fn seal(&self) -> io::Result<()> {
        self.lock().seal();
        Ok(())
    }

    fn remove(&self, pack: PackId) -> io::Result<()> {
        let mut packs = self.lock();
        if pack >= packs.sealed_below() {
            return Err(not_sealed(pack));
        }
        packs.packs.remove(&pack);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_roll_over_and_only_sealed_ones_go() {
        let store = MemoryStore::with_pack_target(8);
        let a = store.append(b"0123456789").unwrap();
        let b = store.append(b"next").unwrap();
        assert_ne!(a.pack, b.pack, "a full pack rolls over");
        assert_eq!(store.read(&a).unwrap(), b"0123456789");
        assert!(store.remove(b.pack).is_err(), "the current pack stays");
        store.remove(a.pack).unwrap();
        assert_eq!(store.read(&a).unwrap_err().kind(), io::ErrorKind::NotFound);
        let past = BlobLocation { len: 9, ..b };
        assert_eq!(
            store.read(&past).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        store.fail_next_sync();
        assert!(store.sync().is_err());
        assert_eq!(store.epoch(), 1);
        assert_ne!(store.append(b"x").unwrap().pack, b.pack, "sealed");
    }
}
