//! Phase 2 of `verify`: the packs' structure, and every blob due read and
//! hashed against its id by two workers.

use std::collections::HashMap;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferry_protocol::chunking::MAX_CHUNK;
use ferry_protocol::compress::decompress;
use ferry_protocol::fragment::MAX_MESSAGE;

use super::{Options, Report};
use crate::catalog::DamageLog;
use crate::catalog::{hex, kind_name, BlobKey, BlobKind, BlobRow, BlobState, Catalog, ClientId};
use crate::clock::now_ms;
use crate::store::{BlobReader, PackId};

/// The packs' structure: what lies past the last blob each names, and
/// packs nothing names. (Rows past a pack's end are found with the blobs.)
pub(super) fn check_structure(
    catalog: &Catalog,
    store: &dyn BlobReader,
    report: &mut Report,
) -> Result<()> {
    let ends = catalog.committed_pack_ends()?;
    for (pack, len) in store.packs()? {
        match ends.get(&pack) {
            Some(end) => report.unindexed_tail_bytes += len.saturating_sub(*end),
            None => report.packs_unnamed += 1,
        }
    }
    Ok(())
}

/// Phase 2: read and hash the rows due, pack by pack: [`WORKERS`]
/// threads each read and hash whole packs, least recently verified first,
/// while this one loads their rows and records what they found.
pub(super) fn check_blobs(
    catalog: &mut Catalog,
    store: &dyn BlobReader,
    options: &Options,
    started: Instant,
    report: &mut Report,
    found: &mut Vec<(ClientId, BlobRow, String)>,
) -> Result<()> {
    let cutoff = match options.since_verified {
        Some(since) => {
            now_ms().saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        }
        None => i64::MAX,
    };
    let lengths: HashMap<PackId, u64> = store.packs()?.into_iter().collect();
    let mut due = Vec::new();
    let mut due_bytes = 0u64;
    for (pack, oldest) in catalog.packs_by_verification()? {
        if oldest < cutoff {
            let (rows, bytes) = catalog.due_in_pack(pack, cutoff)?;
            due_bytes += bytes;
            due.push((pack, rows));
        }
    }
    let budget = options
        .subset_percent
        .map(|p| (due_bytes as f64 * p.clamp(0.0, 100.0) / 100.0).ceil() as u64);
    let pacer = std::sync::Mutex::new(Pacer {
        rate: options.rate.filter(|r| *r > 0),
        started,
        bytes: 0,
    });
    let (send_job, jobs) = sync_channel::<PackJob>(1);
    let jobs = std::sync::Mutex::new(jobs);
    let (send_done, done) = std::sync::mpsc::channel::<(PackJob, std::io::Result<Vec<Verdict>>)>();
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..WORKERS {
            let (jobs, pacer, send_done, lengths) = (&jobs, &pacer, send_done.clone(), &lengths);
            scope.spawn(move || {
                let mut buffer = Vec::new();
                while let Ok(Ok(job)) = jobs.lock().map(|j| j.recv()) {
                    let len = lengths.get(&job.pack).copied();
                    let verdicts = check_pack(store, job.pack, len, &job.rows, &mut buffer, pacer);
                    if send_done.send((job, verdicts)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(send_done);
        let mut dispatched = 0;
        let mut stopped = false;
        for (pack, count) in due {
            let over_time = options
                .max_duration
                .is_some_and(|max| started.elapsed() >= max);
            let over_budget = budget.is_some_and(|b| report.bytes_checked >= b);
            if stopped || over_time || over_budget {
                stopped = true;
                report.blobs_left += count;
                continue;
            }
            let rows = catalog.rows_to_verify(pack, cutoff)?;
            report.bytes_checked += rows
                .iter()
                .map(|(_, r, _)| u64::from(r.span().len))
                .sum::<u64>();
            if send_job.send(PackJob { pack, rows }).is_err() {
                break;
            }
            dispatched += 1;
            while let Ok((job, verdicts)) = done.try_recv() {
                record(catalog, store, job, verdicts, cutoff, report, found)?;
                dispatched -= 1;
            }
        }
        drop(send_job);
        for _ in 0..dispatched {
            let (job, verdicts) = done.recv().expect("every job is answered");
            record(catalog, store, job, verdicts, cutoff, report, found)?;
        }
        Ok(())
    })
}

/// Threads that read and hash packs.
const WORKERS: usize = 2;

/// The rows of one pack to check.
struct PackJob {
    pack: PackId,
    rows: Vec<(ClientId, BlobRow, BlobState)>,
}

/// What a worker found of one blob.
enum Verdict {
    /// Every copy is whole.
    Whole,
    /// One copy is rotten and the other whole: write these bytes (the
    /// whole one) at this offset (over the rotten one).
    Repair(u64, Vec<u8>),
    /// What is wrong (with every copy).
    Damaged(String),
}

/// Records what a worker found in one pack: damage marked (when the row is
/// still where it was read: a collection may have moved it meanwhile),
/// the rest verified now.
fn record(
    catalog: &mut Catalog,
    store: &dyn BlobReader,
    job: PackJob,
    verdicts: std::io::Result<Vec<Verdict>>,
    cutoff: i64,
    report: &mut Report,
    found: &mut Vec<(ClientId, BlobRow, String)>,
) -> Result<()> {
    let pack = job.pack;
    let verdicts = verdicts.with_context(|| format!("cannot read pack {pack:08}"))?;
    report.packs += 1;
    for ((client, row, _), verdict) in job.rows.iter().zip(verdicts) {
        report.blobs_checked += 1;
        let reason = match verdict {
            Verdict::Whole => continue,
            Verdict::Repair(offset, bytes) => match store.repair_in_place(pack, offset, &bytes) {
                Ok(()) => {
                    tracing::warn!(
                        "verify: {} {} of client {client} in pack {pack:08}: the copy at {offset} was rotten; written over from its twin",
                        kind_name(row.kind),
                        hex(&row.id[..8])
                    );
                    report.repaired.push(crate::verify::RepairedCopy {
                        kind: kind_name(row.kind),
                        blob: hex(&row.id),
                        pack,
                        offset,
                        length: row.at.len,
                    });
                    continue;
                }
                // A collection may have moved the row (and deleted the
                // pack) meanwhile: the next run looks again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => format!("a copy is rotten and could not be repaired from its twin ({e})"),
            },
            Verdict::Damaged(reason) => reason,
        };
        if catalog.mark_damaged(*client, row, &reason)? {
            tracing::error!(
                "verify: {} {} of client {client} in pack {pack:08} at {}: {reason}",
                kind_name(row.kind),
                hex(&row.id[..8]),
                row.at.offset
            );
            found.push((*client, *row, reason));
        }
    }
    if let Some(last) = job.rows.iter().map(|(_, row, _)| row.at.offset).max() {
        catalog.mark_pack_verified(pack, last, cutoff)?;
    }
    Ok(())
}

/// Keeps reads under a rate over the whole run.
struct Pacer {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    /// Counts `bytes` read; returns how long to wait to stay under the rate.
    fn read(&mut self, bytes: u64) -> Option<Duration> {
        self.bytes += bytes;
        let rate = self.rate?;
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        due.checked_sub(self.started.elapsed())
    }
}

/// Bytes of a pack read at once (several blobs, and the dead space
/// between them).
const SEGMENT: u64 = 2 << 20;

/// Reads `rows` (in offset order) from one pack, a segment of [`SEGMENT`]
/// bytes at a time into `buffer`; for each, `None` when its bytes
/// decompress and hash to its id, else what is wrong.
fn check_pack(
    store: &dyn BlobReader,
    pack: PackId,
    len: Option<u64>,
    rows: &[(ClientId, BlobRow, BlobState)],
    buffer: &mut Vec<u8>,
    pacer: &std::sync::Mutex<Pacer>,
) -> std::io::Result<Vec<Verdict>> {
    let Some(len) = len else {
        return Ok(rows
            .iter()
            .map(|_| Verdict::Damaged("its pack is missing".into()))
            .collect());
    };
    let end_of = |i: usize| rows[i].1.at.offset + u64::from(rows[i].1.span().len);
    let mut verdicts = Vec::with_capacity(rows.len());
    let mut first = 0;
    while first < rows.len() {
        if end_of(first) > len {
            verdicts.push(Verdict::Damaged(format!(
                "it ends at {}, past the end of its pack ({len} bytes)",
                end_of(first)
            )));
            first += 1;
            continue;
        }
        let start = rows[first].1.at.offset;
        let mut last = first + 1;
        while last < rows.len() && end_of(last) <= len && end_of(last) - start <= SEGMENT {
            last += 1;
        }
        let want = end_of(last - 1) - start;
        store.read_into(pack, start, want, buffer)?;
        let wait = pacer.lock().map_or(None, |mut p| p.read(want));
        if let Some(wait) = wait {
            std::thread::sleep(wait);
        }
        for (_, row, _) in &rows[first..last] {
            let at = (row.at.offset - start) as usize;
            verdicts.push(check_copies(row, &buffer[at..at + row.span().len as usize]));
        }
        first = last;
    }
    Ok(verdicts)
}

/// The verdict on every copy of `row`, stored as `span`.
fn check_copies(row: &BlobRow, span: &[u8]) -> Verdict {
    let len = row.at.len as usize;
    let check = |copy: usize| {
        check_blob(
            row.kind,
            &row.id,
            row.codec,
            &span[copy * len..(copy + 1) * len],
        )
    };
    let Some(first_wrong) = check(0) else {
        if row.copies < 2 || check(1).is_none() {
            return Verdict::Whole;
        }
        return Verdict::Repair(row.at.offset + len as u64, span[..len].to_vec());
    };
    if row.copies < 2 {
        return Verdict::Damaged(first_wrong);
    }
    match check(1) {
        None => Verdict::Repair(row.at.offset, span[len..2 * len].to_vec()),
        Some(_) => Verdict::Damaged(format!("{first_wrong}, and so does its second copy")),
    }
}

/// `None` when the stored bytes are the blob they are named for.
fn check_blob(
    kind: BlobKind,
    id: &[u8; 32],
    codec: ferry_protocol::compress::Codec,
    stored: &[u8],
) -> Option<String> {
    let limit = if kind == BlobKind::Chunk {
        MAX_CHUNK as usize
    } else {
        MAX_MESSAGE
    };
    let decompressed;
    let raw = if codec == ferry_protocol::compress::Codec::None && stored.len() <= limit {
        stored
    } else {
        match decompress(codec, stored.to_vec(), limit) {
            Ok(raw) => {
                decompressed = raw;
                &decompressed[..]
            }
            Err(e) => return Some(format!("it does not decompress ({e})")),
        }
    };
    let whole = crate::stored_objects::is_whole(BlobKey { kind, id: *id }, raw);
    (!whole).then(|| "its bytes do not match its id".into())
}
