//! Downloads from an open-mode snapshot: a file as it was, a directory as
//! a tar stream. Both are written by a blocking thread into a small
//! channel the response body drains, so a download of any size holds a
//! chunk and a few pieces in memory, never the whole; a store error
//! midway aborts the response (the browser sees a failed download, never
//! a short file that looks whole).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use ferry_protocol::tree::{Entry, EntryKind};
use tokio::sync::mpsc;

use crate::snapshot_files::{Found, SnapshotFiles, MAX_DEPTH};
use crate::web::percent;

/// Pieces in flight between the writer and the response.
const IN_FLIGHT: usize = 8;

/// The response for `found` at `path` (names from the root).
pub fn respond(files: SnapshotFiles, path: Vec<Vec<u8>>, found: Found) -> Result<Response> {
    let name = path.last().map_or_else(
        || "snapshot".to_string(),
        |n| String::from_utf8_lossy(n).into_owned(),
    );
    match found {
        Found::Other(entry) => {
            let Some(bytes) = files.open(&entry)? else {
                anyhow::bail!("{name:?} is not a regular file or a directory");
            };
            let len = bytes.len();
            let body = stream(move |out| {
                let mut bytes = bytes;
                std::io::copy(&mut bytes, out).map(|_| ())
            });
            let mut response = (attachment(&name), body).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            Ok(response)
        }
        Found::Dir(tree) => {
            let body = stream(move |out| {
                let mut archive = tar::Builder::new(out);
                archive.mode(tar::HeaderMode::Complete);
                let base: PathBuf = path.iter().map(|n| bytes_path(n)).collect();
                add_tree(&files, &mut archive, &base, &tree.entries, 0)?;
                archive.finish()
            });
            Ok((attachment(&format!("{name}.tar")), body).into_response())
        }
    }
}

/// The headers of a download named `name`.
fn attachment(name: &str) -> [(header::HeaderName, String); 2] {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    [
        (header::CONTENT_TYPE, "application/octet-stream".into()),
        (
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
                percent::encode(name.as_bytes())
            ),
        ),
    ]
}

/// A body that `write` fills from a blocking thread.
fn stream(write: impl FnOnce(&mut Pipe) -> std::io::Result<()> + Send + 'static) -> Body {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut pipe = Pipe {
            tx: tx.clone(),
            buf: Vec::with_capacity(Pipe::PIECE),
        };
        let outcome = write(&mut pipe).and_then(|()| pipe.flush());
        if let Err(e) = outcome {
            tracing::warn!("web: a download ended early: {e}");
            let _ = tx.blocking_send(Err(e));
        }
    });
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    }))
}

/// The writing end: pieces of [`Pipe::PIECE`] bytes into the channel; a
/// closed channel (the browser went away) fails the write, which stops
/// the reading.
pub struct Pipe {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Pipe {
    const PIECE: usize = 64 * 1024;
}

impl Write for Pipe {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::PIECE {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.blocking_send(Ok(piece)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the download was cancelled")
        })
    }
}

/// A name's bytes as a path component (any bytes, on Unix).
fn bytes_path(name: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(name))
}

/// Adds `entries` under `dir` to the archive, directories first-order.
fn add_tree(
    files: &SnapshotFiles,
    archive: &mut tar::Builder<&mut Pipe>,
    dir: &std::path::Path,
    entries: &[Entry],
    depth: usize,
) -> std::io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(std::io::Error::other(format!(
            "the snapshot nests directories deeper than {MAX_DEPTH}"
        )));
    }
    for entry in entries {
        if entry.name.is_empty()
            || entry.name.contains(&b'/')
            || entry.name == b"."
            || entry.name == b".."
        {
            return Err(std::io::Error::other(
                "the snapshot holds a name that is not a file name",
            ));
        }
        let path = dir.join(bytes_path(&entry.name));
        let mut head = tar::Header::new_gnu();
        head.set_mode(entry.mode & 0o7777);
        head.set_uid(u64::from(entry.uid));
        head.set_gid(u64::from(entry.gid));
        head.set_mtime(u64::try_from(entry.mtime_ns.div_euclid(1_000_000_000)).unwrap_or(0));
        head.set_size(0);
        match &entry.kind {
            EntryKind::Dir { tree } => {
                head.set_entry_type(tar::EntryType::Directory);
                archive.append_data(&mut head, &path, std::io::empty())?;
                let tree = files.tree(tree).map_err(std::io::Error::other)?;
                add_tree(files, archive, &path, &tree.entries, depth + 1)?;
            }
            EntryKind::File { .. } => {
                let bytes = files
                    .open(entry)
                    .map_err(std::io::Error::other)?
                    .context("a file")
                    .map_err(std::io::Error::other)?;
                head.set_entry_type(tar::EntryType::Regular);
                head.set_size(bytes.len());
                archive.append_data(&mut head, &path, bytes)?;
            }
            EntryKind::Symlink { target } => {
                head.set_entry_type(tar::EntryType::Symlink);
                archive.append_link(&mut head, &path, bytes_path(target))?;
            }
            EntryKind::Hardlink { target } => {
                head.set_entry_type(tar::EntryType::Link);
                archive.append_link(&mut head, &path, bytes_path(target))?;
            }
            // Pipes and devices: nothing a download can carry.
            EntryKind::Fifo | EntryKind::Device { .. } => {}
        }
    }
    Ok(())
}

/// The names of a path asked of a snapshot (`a/b/c`, from its root),
/// checked for hostile names; the walk is the caller's (blocking).
///
/// # Errors
/// A path deeper than [`MAX_DEPTH`], or with `.`/`..`/empty names.
pub fn parse_path(raw: &[u8]) -> Result<Vec<Vec<u8>>> {
    let names: Vec<Vec<u8>> = raw
        .split(|b| *b == b'/')
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if names.iter().any(|n| n == b"." || n == b"..") {
        anyhow::bail!("a path in a snapshot has no . or .. in it");
    }
    if names.len() > MAX_DEPTH {
        anyhow::bail!("the path is deeper than {MAX_DEPTH} directories");
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_asked_never_climbs_out_of_the_snapshot() {
        assert_eq!(
            parse_path(b"/home//anna/docs/").unwrap(),
            vec![b"home".to_vec(), b"anna".to_vec(), b"docs".to_vec()]
        );
        assert!(parse_path(b"").unwrap().is_empty());
        assert!(parse_path(b"home/../etc").is_err());
        assert!(parse_path(b"./home").is_err());
        let deep = "a/".repeat(MAX_DEPTH + 1);
        assert!(parse_path(deep.as_bytes()).is_err());
    }
}
