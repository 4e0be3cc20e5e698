//! What a backup leaves out, and why.
//!
//! - Patterns (`exclude`): without `/` a pattern matches a name anywhere
//!   (`*.tmp`, `node_modules`); with one, the whole absolute path, where `*`
//!   stops at `/` and `**` crosses directories (`/home/*/cache/**`). A
//!   trailing `/` matches directories only (`target/`).
//! - Exclude files (`exclude-file`): patterns in `.gitignore` syntax (the
//!   `ignore` crate's), rooted at `/`: `target/`, `*.o`, `!keep.o`,
//!   `/home/me/Downloads`.
//! - `exclude-caches` (on unless turned off): directories holding a valid
//!   `CACHEDIR.TAG` (<https://bford.info/cachedir/>).
//! - `exclude-if-present`: directories holding a file of one of these names.
//! - `one-file-system`: entries on another filesystem than their directory
//!   (mount points) are left out.
//!
//! An excluded directory is not descended into.

use std::ffi::OsStr;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// The first bytes of a valid `CACHEDIR.TAG`.
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// What a set leaves out, as configured.
#[derive(Debug, Clone, Default)]
pub struct ExcludeConfig {
    /// Glob patterns.
    pub patterns: Vec<String>,
    /// Files of `.gitignore`-syntax patterns.
    pub files: Vec<PathBuf>,
    /// Leave out directories tagged with `CACHEDIR.TAG`.
    pub caches: bool,
    /// Leave out directories holding a file of one of these names.
    pub if_present: Vec<String>,
    /// Stay on the filesystem of each path backed up.
    pub one_file_system: bool,
}

/// Why a path is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// An `exclude` pattern.
    Pattern(String),
    /// A pattern of an exclude file.
    ExcludeFile(PathBuf, String),
    /// A directory tagged as a cache.
    CacheTag,
    /// A directory holding this marker file.
    IfPresent(String),
    /// On another filesystem.
    OtherFileSystem,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Pattern(p) => write!(f, "exclude {p:?}"),
            Why::ExcludeFile(file, p) => write!(f, "exclude-file {}: {p:?}", file.display()),
            Why::CacheTag => write!(f, "exclude-caches (CACHEDIR.TAG)"),
            Why::IfPresent(name) => write!(f, "exclude-if-present {name:?}"),
            Why::OtherFileSystem => write!(f, "one-file-system (a mount point)"),
        }
    }
}

/// One `exclude` pattern as compiled.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    dirs_only: bool,
}

/// Compiled exclude rules.
#[derive(Debug, Clone)]
pub struct Excludes {
    names: GlobSet,
    name_patterns: Vec<Pattern>,
    paths: GlobSet,
    path_patterns: Vec<Pattern>,
    files: Vec<(PathBuf, Gitignore)>,
    caches: bool,
    if_present: Vec<String>,
    one_file_system: bool,
}

impl Excludes {
    /// Patterns only (no files, tags or markers).
    ///
    /// # Errors
    /// A message naming the pattern that does not compile.
    pub fn new(patterns: &[String]) -> Result<Self> {
        Self::from_config(&ExcludeConfig {
            patterns: patterns.to_vec(),
            ..ExcludeConfig::default()
        })
    }

    /// Compiles `config`.
    ///
    /// # Errors
    /// A pattern that does not compile, an exclude file that cannot be read
    /// or holds a bad line (each named).
    pub fn from_config(config: &ExcludeConfig) -> Result<Self> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        let (mut name_patterns, mut path_patterns) = (Vec::new(), Vec::new());
        for text in &config.patterns {
            let dirs_only = text.len() > 1 && text.ends_with('/');
            let body = if dirs_only {
                &text[..text.len() - 1]
            } else {
                &text[..]
            };
            let glob = GlobBuilder::new(body)
                .literal_separator(true)
                .build()
                .with_context(|| format!("invalid exclude pattern {text:?}"))?;
            let pattern = Pattern {
                text: text.clone(),
                dirs_only,
            };
            if body.contains('/') {
                paths.add(glob);
                path_patterns.push(pattern);
            } else {
                names.add(glob);
                name_patterns.push(pattern);
            }
        }
        let mut files = Vec::new();
        for file in &config.files {
            let mut builder = GitignoreBuilder::new("/");
            if let Some(e) = builder.add(file) {
                return Err(anyhow::anyhow!("exclude-file {}: {e}", file.display()));
            }
            let rules = builder
                .build()
                .with_context(|| format!("exclude-file {}", file.display()))?;
            files.push((file.clone(), rules));
        }
        Ok(Excludes {
            names: names.build()?,
            name_patterns,
            paths: paths.build()?,
            path_patterns,
            files,
            caches: config.caches,
            if_present: config.if_present.clone(),
            one_file_system: config.one_file_system,
        })
    }

    /// Why `recorded` (the absolute path the snapshot records; `real` is
    /// where it is read, the same but under a filesystem snapshot) is
    /// left out, if it is. `parent_dev` is its directory's device.
    pub fn why(
        &self,
        recorded: &Path,
        real: &Path,
        meta: &Metadata,
        parent_dev: u64,
    ) -> Option<Why> {
        let is_dir = meta.is_dir();
        if let Some(why) = self.by_pattern(recorded, is_dir) {
            return Some(why);
        }
        for (file, rules) in &self.files {
            if let ignore::Match::Ignore(glob) = rules.matched(recorded, is_dir) {
                return Some(Why::ExcludeFile(file.clone(), glob.original().to_string()));
            }
        }
        if self.one_file_system && meta.dev() != parent_dev {
            return Some(Why::OtherFileSystem);
        }
        if is_dir {
            if self.caches && is_cache_dir(real) {
                return Some(Why::CacheTag);
            }
            if let Some(name) = self
                .if_present
                .iter()
                .find(|n| real.join(n).symlink_metadata().is_ok())
            {
                return Some(Why::IfPresent(name.clone()));
            }
        }
        None
    }

    /// The pattern that leaves `path` out, if one does.
    fn by_pattern(&self, path: &Path, is_dir: bool) -> Option<Why> {
        let first = |set: &GlobSet, patterns: &[Pattern], subject: &Path| {
            set.matches(subject)
                .into_iter()
                .map(|i| &patterns[i])
                .find(|p| is_dir || !p.dirs_only)
                .map(|p| Why::Pattern(p.text.clone()))
        };
        let by_name = path.file_name().and_then(|name| {
            first(
                &self.names,
                &self.name_patterns,
                Path::new(OsStr::from_bytes(name.as_bytes())),
            )
        });
        by_name.or_else(|| first(&self.paths, &self.path_patterns, path))
    }
}

/// Whether `dir` holds a `CACHEDIR.TAG` that starts with the signature.
fn is_cache_dir(dir: &Path) -> bool {
    let Ok(mut file) = std::fs::File::open(dir.join("CACHEDIR.TAG")) else {
        return false;
    };
    let mut head = [0u8; CACHEDIR_SIGNATURE.len()];
    file.read_exact(&mut head).is_ok() && head == CACHEDIR_SIGNATURE
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
        let check = |p: &str| ex.by_pattern(Path::new(p), false).is_some();
        assert!(check("/a/b/x.tmp"));
        assert!(check("/a/node_modules"));
        assert!(!check("/a/node_modules2"));
        assert!(check("/home/me/cache/deep/file"));
        assert!(!check("/home/me/x/cache/file"));
        assert!(!check("/a/b/x.tmpl"));
        assert!(Excludes::new(&["[".into()]).is_err());
    }

    #[test]
    fn a_trailing_slash_matches_directories_only() {
        let ex = Excludes::new(&["target/".into(), "/srv/cache/".into()]).unwrap();
        assert_eq!(
            ex.by_pattern(Path::new("/p/target"), true),
            Some(Why::Pattern("target/".into()))
        );
        assert_eq!(ex.by_pattern(Path::new("/p/target"), false), None);
        assert!(ex.by_pattern(Path::new("/srv/cache"), true).is_some());
    }

    #[test]
    fn exclude_files_caches_markers_and_other_filesystems() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let rules = root.join("ignore");
        std::fs::write(&rules, "# comment\n*.o\n!keep.o\nbuild/\n").unwrap();
        for d in ["build", "cache", "marked", "plain"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        let mut tag = CACHEDIR_SIGNATURE.to_vec();
        tag.extend_from_slice(b"\n# a cache\n");
        std::fs::write(root.join("cache/CACHEDIR.TAG"), tag).unwrap();
        std::fs::write(root.join("plain/CACHEDIR.TAG"), "not the signature").unwrap();
        std::fs::write(root.join("marked/.nobackup"), "").unwrap();
        for f in ["a.o", "keep.o"] {
            std::fs::write(root.join(f), "x").unwrap();
        }
        let ex = Excludes::from_config(&ExcludeConfig {
            files: vec![rules.clone()],
            caches: true,
            if_present: vec![".nobackup".into()],
            ..ExcludeConfig::default()
        })
        .unwrap();
        let why = |name: &str| {
            let path = root.join(name);
            let meta = std::fs::symlink_metadata(&path).unwrap();
            ex.why(&path, &path, &meta, meta.dev())
        };
        assert_eq!(
            why("a.o"),
            Some(Why::ExcludeFile(rules.clone(), "*.o".into()))
        );
        assert_eq!(why("keep.o"), None, "a negated pattern keeps it");
        assert_eq!(why("build"), Some(Why::ExcludeFile(rules, "build/".into())));
        assert_eq!(why("cache"), Some(Why::CacheTag));
        assert_eq!(why("plain"), None, "a tag without the signature is no tag");
        assert_eq!(why("marked"), Some(Why::IfPresent(".nobackup".into())));
        // Another device than the parent's: a mount point.
        let one_fs = Excludes::from_config(&ExcludeConfig {
            one_file_system: true,
            ..ExcludeConfig::default()
        })
        .unwrap();
        let plain = root.join("plain");
        let meta = std::fs::symlink_metadata(&plain).unwrap();
        assert_eq!(
            one_fs.why(&plain, &plain, &meta, meta.dev() + 1),
            Some(Why::OtherFileSystem)
        );
        assert_eq!(one_fs.why(&plain, &plain, &meta, meta.dev()), None);
    }
}
