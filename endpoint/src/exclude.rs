//! Exclude patterns of a backup set.
//!
//! A pattern without `/` matches a file name anywhere (`*.tmp`,
//! `node_modules`); a pattern with `/` matches the whole absolute path, where
//! `*` stops at `/` and `**` crosses directories (`/home/*/cache/**`). An
//! excluded directory is not descended into.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Compiled exclude patterns.
#[derive(Debug, Clone)]
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
}

impl Excludes {
    /// Compiles `patterns`.
    ///
    /// # Errors
    /// A message naming the pattern that does not compile.
    pub fn new(patterns: &[String]) -> Result<Self> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for pattern in patterns {
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .with_context(|| format!("invalid exclude pattern {pattern:?}"))?;
            if pattern.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        Ok(Excludes {
            names: names.build()?,
            paths: paths.build()?,
        })
    }

    /// Whether `path` (absolute) is excluded.
    pub fn excludes(&self, path: &Path) -> bool {
        let by_name = path.file_name().is_some_and(|name| {
            self.names
                .is_match(std::ffi::OsStr::from_bytes(name.as_bytes()))
        });
        by_name || self.paths.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_anywhere_and_whole_paths() {
        let ex = Excludes::new(&[
            "*.tmp".into(),
            "node_modules".into(),
            "/home/*/cache/**".into(),
        ])
        .unwrap();
        assert!(ex.excludes(Path::new("/a/b/x.tmp")));
        assert!(ex.excludes(Path::new("/a/node_modules")));
        assert!(!ex.excludes(Path::new("/a/node_modules2")));
        assert!(ex.excludes(Path::new("/home/me/cache/deep/file")));
        assert!(!ex.excludes(Path::new("/home/me/x/cache/file")));
        assert!(!ex.excludes(Path::new("/a/b/x.tmpl")));
        assert!(Excludes::new(&["[".into()]).is_err());
    }
}
