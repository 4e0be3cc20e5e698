//! Packs on their way to the object store: a full pack is uploaded in the
//! background while appends go on into the next one, and a sync waits for
//! every upload before it returns, so "durable" still means "in the store".
//! At most [`MAX_IN_FLIGHT`] at once (each holds its pack in memory).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::bridge::{wait, Outcome};
use super::{too_large, S3Reader};
use crate::store::PackId;

/// Uploads running at once, at most.
pub const MAX_IN_FLIGHT: usize = 2;

/// The uploads started and not yet waited for, oldest first.
#[derive(Debug, Default)]
pub struct InFlight {
    uploads: VecDeque<Upload>,
}

#[derive(Debug)]
struct Upload {
    pack: PackId,
    len: u64,
    done: Outcome<()>,
}

impl InFlight {
    /// Starts uploading `pack` (`len` bytes of `file`), first waiting for
    /// the oldest upload if [`MAX_IN_FLIGHT`] run.
    ///
    /// # Errors
    /// The oldest upload's failure (see [`InFlight::finish_all`]), or
    /// reading the pack.
    pub fn start(
        &mut self,
        reader: &S3Reader,
        pack: PackId,
        file: &File,
        len: u64,
        epoch: &mut u64,
    ) -> io::Result<()> {
        let waited = if self.uploads.len() >= MAX_IN_FLIGHT {
            self.finish_oldest(reader, epoch)
        } else {
            Ok(())
        };
        let mut bytes = vec![0; usize::try_from(len).map_err(|_| too_large())?];
        let started = file
            .read_exact_at(&mut bytes, 0)
            .and_then(|()| reader.start_put(pack, bytes));
        match started {
            Ok(done) => self.uploads.push_back(Upload { pack, len, done }),
            Err(e) => {
                failed(reader, pack, &e, epoch);
                return Err(e);
            }
        }
        waited
    }

    /// Waits for every upload; the first failure, after all are done.
    ///
    /// # Errors
    /// An upload's failure: its pack is dropped and the epoch moved, so
    /// nothing in it is indexed.
    pub fn finish_all(&mut self, reader: &S3Reader, epoch: &mut u64) -> io::Result<()> {
        let mut first = Ok(());
        while !self.uploads.is_empty() {
            let outcome = self.finish_oldest(reader, epoch);
            if first.is_ok() {
                first = outcome;
            }
        }
        first
    }

    fn finish_oldest(&mut self, reader: &S3Reader, epoch: &mut u64) -> io::Result<()> {
        let Some(upload) = self.uploads.pop_front() else {
            return Ok(());
        };
        match wait(&upload.done) {
            Ok(()) => {
                reader.uploaded(upload.pack, upload.len);
                Ok(())
            }
            Err(e) => {
                failed(reader, upload.pack, &e, epoch);
                Err(e)
            }
        }
    }
}

/// A pack that will not be in the store: its staging file goes, and the
/// epoch moves (what was appended to it may not be named).
pub fn failed(reader: &S3Reader, pack: PackId, e: &io::Error, epoch: &mut u64) {
    let _ = std::fs::remove_file(reader.staged_path(pack));
    *epoch += 1;
    tracing::error!("pack {pack}: its upload failed ({e}); nothing in it is indexed");
}
