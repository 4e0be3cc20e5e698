//! `ferry find`: which snapshots hold paths matching a pattern, with the
//! size and modification time each had there.

use anyhow::{Context, Result};
use ferry_protocol::message::SnapshotInfo;
use ferry_protocol::units::{format_rfc3339, printable};
use globset::{Glob, GlobMatcher};

use super::{list, to_json, ListRequest, Listed, Reader};
use crate::client::RelayClient;
use crate::restore::Selector;
use crate::state::StateDir;

/// What to look for, and in which snapshots.
#[derive(Debug, Clone)]
pub struct FindRequest {
    /// A glob: matched against each entry's name, or, when it holds a `/`,
    /// against its whole path (`*` stays within a name, `**` crosses).
    pub pattern: String,
    /// Only this set's snapshots (every set's without one).
    pub set: Option<String>,
    /// Only snapshots finished at or after this time (ms since the epoch)...
    pub since_ms: Option<i64>,
    /// ...and at or before this one.
    pub until_ms: Option<i64>,
}

/// A pattern as [`FindRequest`] describes it.
pub struct Pattern {
    matcher: GlobMatcher,
    whole_path: bool,
}

impl Pattern {
    /// Compiles `pattern`.
    ///
    /// # Errors
    /// A pattern that is not a glob.
    pub fn new(pattern: &str) -> Result<Self> {
        let matcher = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map(|g: Glob| g.compile_matcher())
            .with_context(|| format!("{pattern:?} is not a pattern"))?;
        Ok(Self {
            matcher,
            whole_path: pattern.contains('/'),
        })
    }

    /// Whether `listed` matches.
    pub fn matches(&self, listed: &Listed) -> bool {
        if self.whole_path {
            self.matcher
                .is_match(crate::snapshot::show_path(&listed.path))
        } else {
            self.matcher.is_match(printable(&listed.entry.name))
        }
    }
}

/// Each snapshot `request` covers, oldest first, with its entries that
/// match (snapshots without any are left out).
///
/// # Errors
/// A bad pattern, session failures, a tree damaged or (sealed) altered.
pub async fn find(
    state: &StateDir,
    client: &mut RelayClient,
    request: &FindRequest,
) -> Result<Vec<(SnapshotInfo, Vec<Listed>)>> {
    let pattern = Pattern::new(&request.pattern)?;
    let reader = Reader::new(state, client).await?;
    let snapshots = crate::snapshot::list(client, request.set.as_deref()).await?;
    let mut found = Vec::new();
    for info in snapshots {
        let after_since = request.since_ms.is_none_or(|t| info.finished_ms >= t);
        let before_until = request.until_ms.is_none_or(|t| info.finished_ms <= t);
        if !(after_since && before_until) {
            continue;
        }
        let whole = ListRequest {
            set: Some(info.set.clone()),
            snapshot: Selector::Id(info.id),
            path: None,
            recursive: true,
        };
        let (info, listed) = list(state, client, &reader, &whole).await?;
        let matching: Vec<Listed> = listed.into_iter().filter(|l| pattern.matches(l)).collect();
        if !matching.is_empty() {
            found.push((info, matching));
        }
    }
    Ok(found)
}

/// Prints what [`find`] found: per snapshot a heading and `ls -l`-style
/// lines, or one JSON array of matches (each with its snapshot and set).
///
/// # Errors
/// As [`find`].
pub async fn print_found(state: &StateDir, request: &FindRequest, json: bool) -> Result<()> {
    let mut client = crate::jobs::open_client(state).await?;
    let found = find(state, &mut client, request).await?;
    client.close().await;
    if json {
        let mut rows = Vec::new();
        for (info, listed) in &found {
            for mut row in as_rows(to_json(listed)) {
                row["snapshot"] = info.id.into();
                row["set"] = printable(info.set.as_bytes()).into();
                row["finished_at"] = format_rfc3339(info.finished_ms).into();
                rows.push(row);
            }
        }
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if found.is_empty() {
        println!("no snapshot holds a path matching {:?}", request.pattern);
    }
    for (info, listed) in &found {
        println!(
            "snapshot {} of set {:?}, {}:",
            info.id,
            printable(info.set.as_bytes()),
            format_rfc3339(info.finished_ms)
        );
        for line in super::lines(listed, true) {
            println!("  {line}");
        }
    }
    Ok(())
}

/// A JSON array's elements.
fn as_rows(value: serde_json::Value) -> Vec<serde_json::Value> {
    match value {
        serde_json::Value::Array(rows) => rows,
        other => vec![other],
    }
}
