//! Making written files durable and giving them their names, on a thread
//! of its own: each batch's fsyncs and renames overlap with receiving and
//! writing the next files, instead of stopping the stream. A file under
//! its final name still always has durable data (what an interrupted
//! restore's quick check relies on): it is renamed only after its fsync.

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
                    let failed = batch.into_iter().filter_map(settle_one).collect();
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
                Err(e) => return e.0.into_iter().filter_map(settle_one).collect(),
            },
            // No thread could start: settled here.
            None => return batch.into_iter().filter_map(settle_one).collect(),
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

/// Makes one file durable, then renames it over its name; when its fsync
/// fails, its temporary file stays for the next run to reuse.
fn settle_one(w: Written) -> Option<Failure> {
    w.file
        .sync_all()
        .and_then(|()| Target::commit_temp(&w.dir, &w.tmp, &w.name))
        .err()
        .map(|e| (w.snapshot_path, e))
}
