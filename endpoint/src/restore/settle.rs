//! Making written files durable and giving them their names, on a thread
//! of its own: each batch is made durable and renamed while the next files
//! are received and written, instead of stopping the stream. A batch's
//! files are fsynced by [`SYNC_WORKERS`] threads at once (one after another
//! they cost a journal commit and a disk flush each: 4,545 of them were
//! 4.3 s of a 7.5 s restore; at once, the filesystem joins them into
//! fewer commits), then renamed in order. A file under its final name
//! still always has durable data (what an interrupted restore's quick
//! check relies on): it is renamed only after its own fsync succeeded.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use super::files::{Written, SETTLE_FILES};
use crate::target::Target;

/// Batches handed over and not yet taken up by the thread, at most: past
/// this, handing one over waits (each batch holds its files open).
const QUEUED_BATCHES: usize = 1;

/// Written files held open at most, each with its directory: the batch
/// being filled, the queued ones and the one being settled.
pub(super) const HELD_FILES: usize = SETTLE_FILES * (QUEUED_BATCHES + 2);

/// A file that could not be made durable or renamed: its path in the
/// snapshot, and why.
pub(super) type Failure = (Vec<Vec<u8>>, std::io::Error);

/// The thread that settles batches of written files, in order.
pub(super) struct Settler {
    batches: Option<SyncSender<Vec<Written>>>,
    results: Receiver<Vec<Failure>>,
    /// Batches handed over whose results are not taken yet.
    pending: usize,
    thread: Option<JoinHandle<()>>,
}

impl Settler {
    /// Starts the thread.
    pub(super) fn start() -> Self {
        let (batches, to_settle) = sync_channel::<Vec<Written>>(QUEUED_BATCHES);
        let (report, results) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("settle".into())
            .spawn(move || {
                for batch in to_settle {
                    let failed = settle(batch);
                    if report.send(failed).is_err() {
                        return;
                    }
                }
            })
            .ok();
        Settler {
            batches: Some(batches),
            results,
            pending: 0,
            thread,
        }
    }

    /// Hands a batch over; returns what earlier batches failed, if known yet.
    pub(super) fn hand_over(&mut self, batch: Vec<Written>) -> Vec<Failure> {
        if batch.is_empty() {
            return Vec::new();
        }
        match self.batches.as_ref().filter(|_| self.thread.is_some()) {
            Some(batches) => match batches.send(batch) {
                Ok(()) => self.pending += 1,
                // The thread is gone: settled here instead.
                Err(e) => return settle(e.0),
            },
            // No thread could start: settled here.
            None => return settle(batch),
        }
        let mut failed = Vec::new();
        while let Ok(more) = self.results.try_recv() {
            self.pending -= 1;
            failed.extend(more);
        }
        failed
    }

    /// Waits until every batch handed over is settled; returns what failed.
    pub(super) fn wait(&mut self) -> Vec<Failure> {
        let mut failed = Vec::new();
        while self.pending > 0 {
            match self.results.recv() {
                Ok(more) => failed.extend(more),
                Err(_) => break,
            }
            self.pending -= 1;
        }
        failed
    }
}

impl Drop for Settler {
    fn drop(&mut self) {
        // The thread ends once the batches it holds are settled.
        self.batches.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Threads that fsync a batch's files at once.
const SYNC_WORKERS: usize = 4;

/// Makes a batch durable, then renames each file over its name; a file
/// that could not be made durable keeps its temporary name for the next
/// run to reuse.
fn settle(batch: Vec<Written>) -> Vec<Failure> {
    let fsync_all = |files: &[Written]| -> Vec<std::io::Result<()>> {
        files.iter().map(|w| w.file.sync_all()).collect()
    };
    let per_worker = batch.len().div_ceil(SYNC_WORKERS).max(1);
    let synced: Vec<std::io::Result<()>> = std::thread::scope(|scope| {
        // A thread that cannot start leaves its files to this one.
        let workers: Vec<_> = batch
            .chunks(per_worker)
            .map(|files| {
                let worker = std::thread::Builder::new()
                    .name("fsync".into())
                    .spawn_scoped(scope, move || fsync_all(files));
                (files, worker)
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|(files, worker)| match worker {
                Ok(worker) => worker.join().unwrap_or_else(|_| fsync_all(files)),
                Err(_) => fsync_all(files),
            })
            .collect()
    });
    let mut failed = Vec::new();
    let mut synced = synced.into_iter();
    for w in batch {
        let synced = synced
            .next()
            .unwrap_or_else(|| Err(std::io::Error::other("not fsynced")));
        let settled = synced.and_then(|()| Target::commit_temp(&w.dir, &w.tmp, &w.name));
        if let Err(e) = settled {
            failed.push((w.snapshot_path, e));
        }
    }
    failed
}
