//! A walk of a backup's paths that reads metadata only (no file is
//! opened), skipping what the excludes skip and never following a symlink:
//! how many bytes a backup will cover (the progress bar's ETA, beside the
//! backup, which does not wait for it), what `backup --dry-run` lists, and
//! where the sealed dictionary's samples come from.

use std::fs::Metadata;
use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::exclude::{Excludes, Why};

/// What [`walk`] meets.
pub enum Seen<'a> {
    /// An entry the backup takes (a directory is entered after).
    Taken(&'a Path, &'a Metadata),
    /// An entry the excludes leave out, and why (never entered).
    Left(&'a Path, Why),
}

/// Walks `paths` (absolute) depth first in the backup's order (names
/// sorted), reading metadata only, never following a symlink, the
/// excludes applied as the backup applies them (to what is below each
/// path, not to the path itself). Entries that cannot be read are
/// skipped. `visit` may stop the walk.
pub fn walk(
    paths: &[PathBuf],
    excludes: &Excludes,
    mut visit: impl FnMut(Seen) -> ControlFlow<()>,
) {
    // (path, its directory's device; none for the paths themselves)
    let mut stack: Vec<(PathBuf, Option<u64>)> =
        paths.iter().rev().map(|p| (p.clone(), None)).collect();
    while let Some((path, parent_dev)) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if let Some(why) = parent_dev.and_then(|dev| excludes.why(&path, &path, &meta, dev)) {
            if visit(Seen::Left(&path, why)).is_break() {
                return;
            }
            continue;
        }
        if visit(Seen::Taken(&path, &meta)).is_break() {
            return;
        }
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
                children.sort();
                stack.extend(children.into_iter().rev().map(|c| (c, Some(meta.dev()))));
            }
        }
    }
}

/// The bytes of the regular files under `paths` that `excludes` leaves in.
/// Entries that cannot be read count as nothing.
pub fn bytes_under(paths: &[PathBuf], excludes: &Excludes) -> u64 {
    let mut total = 0u64;
    walk(paths, excludes, |seen| {
        if let Seen::Taken(_, meta) = seen {
            if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
        ControlFlow::Continue(())
    });
    total
}

/// [`bytes_under`] on a thread of its own; `publish` gets the sum when the
/// walk ends.
pub fn in_background(
    paths: Vec<PathBuf>,
    excludes: Excludes,
    publish: impl FnOnce(u64) + Send + 'static,
) {
    std::thread::spawn(move || publish(bytes_under(&paths, &excludes)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_regular_files_minus_the_excluded_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        std::fs::create_dir_all(root.join("cache")).unwrap();
        std::fs::write(root.join("a"), vec![0u8; 1000]).unwrap();
        std::fs::write(root.join("cache").join("big"), vec![0u8; 5000]).unwrap();
        std::os::unix::fs::symlink("/usr", root.join("link")).unwrap();
        let none = Excludes::new(&[]).unwrap();
        assert_eq!(bytes_under(std::slice::from_ref(&root), &none), 6000);
        let excludes = Excludes::new(&["cache".to_string()]).unwrap();
        assert_eq!(bytes_under(&[root], &excludes), 1000);
    }
}
