//! The contract every blob store keeps, run against each of them (the pack
//! files the relay uses and the in-memory packs the rules' tests use): a
//! new backend passes these before the relay may use it. And the property
//! the shared handle (`repo::Blobs`) adds: reads never wait on a writer.

use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::repo::Blobs;

fn moto() -> &'static moto::Moto {
    moto::Moto::shared()
}

/// A fresh bucket's name.
fn bucket() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("store-{}-{n}", std::process::id())
}

/// Every store, fresh, with the directory that holds it when it has one:
/// the object store twice, with its read cache and without.
fn stores() -> Vec<(Box<dyn BlobStore>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let packs = PackStore::open(dir.path(), &HashMap::new()).unwrap();
    let mut all: Vec<(Box<dyn BlobStore>, Option<tempfile::TempDir>)> = vec![
        (Box::new(MemoryStore::default()), None),
        (Box::new(packs), Some(dir)),
    ];
    for cache in [0, 1 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let settings = moto().settings(&bucket(), cache);
        let store = S3Store::open(&settings, dir.path(), 3).unwrap();
        all.push((Box::new(store), Some(dir)));
    }
    all
}

#[test]
fn what_is_appended_reads_back_before_and_after_a_sync() {
    for (store, _dir) in stores() {
        let a = store.append(b"first blob").unwrap();
        let b = store.append(b"second").unwrap();
        assert_eq!(store.read(&a).unwrap(), b"first blob", "{store:?}");
        store.sync().unwrap();
        assert_eq!(store.read(&b).unwrap(), b"second", "{store:?}");
        assert_eq!(store.reader().read(&a).unwrap(), b"first blob", "{store:?}");
        assert_eq!((a.pack, b.offset), (b.pack, 10), "{store:?}");
    }
}

#[test]
fn only_sealed_packs_are_removed_and_then_they_are_gone() {
    for (store, _dir) in stores() {
        let a = store.append(b"blob").unwrap();
        assert!(store.sealed_below() <= a.pack, "{store:?}");
        assert!(
            store.remove(a.pack).is_err(),
            "{store:?}: removed while written"
        );
        // A sync may seal the pack (the object store's does: an object is
        // never written again).
        store.sync().unwrap();
        store.seal().unwrap();
        assert!(store.sealed_below() > a.pack, "{store:?}");
        let next = store.append(b"next").unwrap();
        assert!(next.pack > a.pack, "{store:?}: a sealed pack got more");
        store.remove(a.pack).unwrap();
        assert!(store.read(&a).is_err(), "{store:?}: read a removed pack");
        assert_eq!(store.read(&next).unwrap(), b"next", "{store:?}");
    }
}

#[test]
fn the_pack_list_has_every_pack_with_its_length() {
    for (store, _dir) in stores() {
        let a = store.append(&[1; 100]).unwrap();
        store.seal().unwrap();
        let b = store.append(&[2; 50]).unwrap();
        store.sync().unwrap();
        let packs = store.packs().unwrap();
        // Each pack's length is its blobs' and, when the store writes one,
        // its trailer's, which lists them.
        let trailer = store.trailer_bytes(1);
        assert_eq!(
            packs,
            vec![(a.pack, 100 + trailer), (b.pack, 50 + trailer)],
            "{store:?}"
        );
        for (pack, at) in [(a.pack, a), (b.pack, b)] {
            match store.trailer(pack).unwrap() {
                Some(entries) => assert_eq!(
                    entries.iter().map(|e| e.at).collect::<Vec<_>>(),
                    vec![at],
                    "{store:?}"
                ),
                None => assert_eq!(trailer, 0, "{store:?}"),
            }
        }
    }
}

#[test]
fn a_read_past_a_packs_end_fails_and_a_successful_sync_keeps_the_epoch() {
    for (store, _dir) in stores() {
        let a = store.append(b"12345").unwrap();
        let epoch = store.epoch();
        store.sync().unwrap();
        assert_eq!(store.epoch(), epoch, "{store:?}");
        let end = store.packs().unwrap()[0].1;
        let past = BlobLocation {
            len: u32::try_from(end - a.offset + 1).unwrap(),
            ..a
        };
        assert!(store.read(&past).is_err(), "{store:?}");
    }
}

/// A store whose syncs wait until the test lets them go: a slow disk.
#[derive(Debug)]
struct SlowSync {
    inner: MemoryStore,
    started: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl BlobReader for SlowSync {
    fn read_into(
        &self,
        pack: PackId,
        offset: u64,
        len: u64,
        buffer: &mut Vec<u8>,
    ) -> io::Result<()> {
        self.inner.read_into(pack, offset, len, buffer)
    }

    fn packs(&self) -> io::Result<Vec<(PackId, u64)>> {
        self.inner.packs()
    }
}

impl BlobStore for SlowSync {
    fn reader(&self) -> Arc<dyn BlobReader> {
        self.inner.reader()
    }

    fn append(&self, data: &[u8]) -> io::Result<BlobLocation> {
        self.inner.append(data)
    }

    fn sync(&self) -> io::Result<()> {
        self.started.lock().unwrap().send(()).unwrap();
        self.release.lock().unwrap().recv().unwrap();
        self.inner.sync()
    }

    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }

    fn sealed_below(&self) -> PackId {
        self.inner.sealed_below()
    }

    fn seal(&self) -> io::Result<()> {
        self.inner.seal()
    }

    fn remove(&self, pack: PackId) -> io::Result<()> {
        self.inner.remove(pack)
    }
}

#[test]
fn a_read_does_not_wait_for_another_sessions_fsync() {
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let blobs = Arc::new(Blobs::new(Box::new(SlowSync {
        inner: MemoryStore::default(),
        started: Mutex::new(started_tx),
        release: Mutex::new(release_rx),
    })));
    let (at, _) = blobs
        .append(b"committed earlier", &super::BlobLabel::default())
        .unwrap();
    let syncing = {
        let blobs = Arc::clone(&blobs);
        std::thread::spawn(move || blobs.sync())
    };
    started.recv_timeout(Duration::from_secs(60)).unwrap();
    // The writer is inside its fsync, holding the store: a restore's read
    // goes on regardless (on a thread of its own, so a read that waits
    // fails this test instead of hanging it).
    let (read_tx, read) = mpsc::channel();
    let reading = {
        let blobs = Arc::clone(&blobs);
        std::thread::spawn(move || read_tx.send(blobs.read(&at)).unwrap())
    };
    let got = read.recv_timeout(Duration::from_secs(30));
    release.send(()).unwrap();
    syncing.join().unwrap().unwrap();
    reading.join().unwrap();
    let got = got.expect("the read waited for the other session's fsync");
    assert_eq!(got.unwrap(), b"committed earlier");
}

#[test]
fn stores_are_shared_by_reference_across_threads() {
    fn shared<T: BlobStore + Send + Sync + 'static>() {}
    shared::<PackStore>();
    shared::<MemoryStore>();
    // Appends from two threads at once through `&self` land whole.
    for (store, _dir) in stores() {
        let store: Arc<dyn BlobStore> = Arc::from(store);
        let threads: Vec<_> = (0..2u8)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    (0..50u8)
                        .map(|i| (store.append(&[t, i, t, i]).unwrap(), [t, i, t, i]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for thread in threads {
            for (at, bytes) in thread.join().unwrap() {
                assert_eq!(store.read(&at).unwrap(), bytes, "{store:?}");
            }
        }
    }
}
