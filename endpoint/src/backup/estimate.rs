//! How many bytes a backup will cover, for the progress bar's ETA: a walk
//! of the paths that only reads metadata (no file is opened), skipping
//! what the excludes skip and never following a symlink. It runs beside
//! the backup, which does not wait for it.

use std::path::PathBuf;

use crate::exclude::Excludes;

/// The bytes of the regular files under `paths` that `excludes` leaves in.
/// Entries that cannot be read count as nothing.
pub fn bytes_under(paths: &[PathBuf], excludes: &Excludes) -> u64 {
    let mut total = 0u64;
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        if excludes.excludes(&path) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            total = total.saturating_add(meta.len());
        } else if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
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
