//! One file: left alone when the target holds it, else given a temporary
//! file and put into the stream; once written, made durable and renamed
//! over its name in batches.

use super::*;

/// Files written before they are made durable and take their names (each
/// holds itself and its directory open: well under the usual 1024 fds).
pub(super) const SETTLE_FILES: usize = 128;

/// Bytes written before the same.
pub(super) const SETTLE_BYTES: u64 = 128 << 20;

/// A file written to a temporary name, waiting to be made durable and renamed.
pub(super) struct Written {
    pub(super) file: File,
    pub(super) dir: Arc<OwnedFd>,
    pub(super) tmp: Vec<u8>,
    pub(super) name: Vec<u8>,
    pub(super) snapshot_path: Vec<Vec<u8>>,
}

/// The temporary file a file is written to.
pub(super) struct Output {
    pub(super) file: File,
    pub(super) tmp: Vec<u8>,
    /// It is an interrupted restore's: chunks already at their place stay.
    pub(super) in_place: bool,
}

impl Restore<'_> {
    /// [`Target::quick_match`], unless `--checksum` asks to compare content.
    pub(super) fn quick_match(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        entry: &Entry,
        size: u64,
    ) -> std::io::Result<Option<bool>> {
        if self.checksum {
            return Ok(None);
        }
        self.target.quick_match(dir, name, entry, size)
    }

    /// The open directory `parent` (below the target), reused when the
    /// previous entry went there too.
    pub(super) fn parent_dir(&mut self, parent: &[Vec<u8>]) -> std::io::Result<Arc<OwnedFd>> {
        if let Some((path, fd)) = &self.last_dir {
            if path.as_slice() == parent {
                return Ok(Arc::clone(fd));
            }
        }
        let fd = Arc::new(self.target.dir(parent)?);
        self.last_dir = Some((parent.to_vec(), Arc::clone(&fd)));
        Ok(fd)
    }

    /// Hands the written files to the settling thread (see `settle`),
    /// which makes each durable and then renames it over its name; a file
    /// that fails either is counted once known.
    pub(super) fn settle(&mut self) {
        let failed = self.settler.hand_over(std::mem::take(&mut self.written));
        self.written_bytes = 0;
        self.settle_failed(failed);
    }

    /// [`Restore::settle`], and waits until every file written so far is
    /// under its name (or counted as failed).
    pub(super) fn settle_all(&mut self) {
        self.settle();
        let failed = self.settler.wait();
        self.settle_failed(failed);
    }

    fn settle_failed(&mut self, failed: Vec<Failure>) {
        for (path, e) in failed {
            self.restored.remove(&path);
            self.fail(&path, e);
        }
    }

    /// Restores one regular file: when the target holds it already, sets
    /// its metadata; otherwise opens its temporary file (an interrupted
    /// restore's, completed in place, or a new one) and puts it into the
    /// stream.
    pub(super) async fn file(&mut self, file: FileEntry) -> Result<()> {
        let FileEntry {
            dir,
            name,
            entry,
            snapshot_path,
            at,
        } = file;
        let EntryKind::File {
            size,
            content,
            sparse,
        } = &entry.kind
        else {
            bail!("not a file");
        };
        let (size, content) = (*size, *content);
        self.live
            .file_done(size, self.client.bytes_sent(), self.client.bytes_received());
        let layout = Layout::new(size, sparse.as_deref());
        if let Some(metadata_too) = self.quick_match(&dir, &name, &entry, size)? {
            // rsync's quick check: same size and modification time, same file.
            self.summary.totals.files_unchanged += 1;
            if !metadata_too {
                if let Some(file) = Target::existing_file(&dir, &name)? {
                    self.target.apply_to_fd(&file, &entry)?;
                }
            }
            self.restored.insert(snapshot_path, at);
            return Ok(());
        }
        if self.overwrite.keeps(&dir, &name, &entry)? {
            self.summary.kept.add(show_path(&snapshot_path));
            // A hard link to it links to the file kept.
            self.restored.insert(snapshot_path, at);
            return Ok(());
        }
        let existing = Target::existing_file(&dir, &name)?;
        // An interrupted restore of this file: its temporary file is
        // completed in place, so no later interruption loses what it holds.
        let leftover = match sparse {
            None => Target::leftover_temp(&dir, &name)?,
            Some(_) => None,
        };
        let (local, out) = if let Some((file, tmp)) = leftover {
            let partial = LocalFile::scan(file.try_clone()?)?;
            self.summary.totals.bytes_scanned += partial.len;
            match existing {
                Some(_) => self.summary.totals.files_changed += 1,
                None => self.summary.totals.files_new += 1,
            }
            let out = Output {
                file,
                tmp,
                in_place: true,
            };
            (Some(partial), out)
        } else {
            let local = existing.map(LocalFile::scan).transpose()?;
            if let Some(local) = &local {
                self.summary.totals.bytes_scanned += local.len;
                let same =
                    local.content.encode().0 == content && local.len == size && sparse.is_none();
                if same {
                    self.summary.totals.files_unchanged += 1;
                    self.target.apply_to_fd(&local.file, &entry)?;
                    self.restored.insert(snapshot_path, at);
                    return Ok(());
                }
                self.summary.totals.files_changed += 1;
            } else {
                self.summary.totals.files_new += 1;
            }
            let (file, tmp) = Target::temp_file(&dir, &name)?;
            let out = Output {
                file,
                tmp,
                in_place: false,
            };
            (local, out)
        };
        self.stream_file(Job {
            snapshot_path,
            at,
            name,
            dir,
            size,
            content,
            layout,
            local,
            out,
            entry,
        })
        .await
    }

    /// A file whose data is all written: its length and metadata are set
    /// and its writeback started.
    pub(super) fn complete(&self, job: &Job) -> Result<()> {
        let file = &job.out.file;
        file.set_len(job.size)?;
        let failed = self.target.apply_to_fd(file, &job.entry)?;
        if !failed.is_empty() && failed.iter().any(|x| x.starts_with("user.")) {
            bail!("cannot set extended attributes {failed:?}");
        }
        // Writeback starts now, so the fsync of the batch finds it done
        // (only a hint: an error here changes nothing).
        let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
        Ok(())
    }

    /// A completed file waits to be made durable and renamed; a batch
    /// settles once it is large enough.
    pub(super) fn written_file(&mut self, job: Job) {
        self.restored.insert(job.snapshot_path.clone(), job.at);
        self.written_bytes += job.size;
        self.written.push(Written {
            file: job.out.file,
            dir: job.dir,
            tmp: job.out.tmp,
            name: job.name,
            snapshot_path: job.snapshot_path,
        });
        if self.written.len() >= SETTLE_FILES || self.written_bytes >= SETTLE_BYTES {
            self.settle();
        }
    }
}

/// A regular file the walk reached, and where it goes.
pub(super) struct FileEntry {
    /// The directory it goes into.
    pub(super) dir: Arc<OwnedFd>,
    /// Its name there.
    pub(super) name: Vec<u8>,
    /// Its entry.
    pub(super) entry: Entry,
    /// Its path in the snapshot.
    pub(super) snapshot_path: Vec<Vec<u8>>,
    /// Its path below the target.
    pub(super) at: Vec<Vec<u8>>,
}
