//! Secrets kept in files (tokens, passwords): read only when no other
//! user can, their first line trimmed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The first line of `path`, trimmed; `what` names the setting in errors.
///
/// # Errors
/// A file that cannot be read, that other users can read, or whose first
/// line is empty.
pub fn first_line(path: &Path, what: &str) -> Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{what} {}: cannot read it", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{what} {} can be read by other users: chmod 600 it",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{what} {}: cannot read it", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    if line.is_empty() {
        bail!("{what} {} is empty", path.display());
    }
    Ok(line)
}
