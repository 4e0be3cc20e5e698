//! Snapshot labels on the endpoint: each backup tells the relay the host
//! and the paths it covers (sealed under the vault for a sealed client),
//! and `ferry snapshots` shows them, each checked against its snapshot's
//! root (see `ferry_protocol::label`). A relay older than protocol 1.8
//! keeps none, and the listing shows none.

use std::collections::HashMap;

use anyhow::Result;
use ferry_protocol::label::SnapshotLabel;
use ferry_protocol::message::{Message, SnapshotInfo, LABEL_SINCE_MINOR, MAX_LABELS};
use ferry_protocol::sealed::SealingKeys;

use crate::client::{unexpected, ClientError, RelayClient};
use crate::state::StateDir;

/// This machine's host name.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Asks the relay to keep the label of the snapshot the open upload will
/// commit (`root`: its root tree id, or its sealed root's storage id;
/// `paths`: what it covers, see `backup::label_paths`),
/// sealed under `keys` for a sealed client, without waiting: its answer
/// is read by [`commit`]. Nothing to a relay that keeps none; returns
/// whether it was asked.
///
/// # Errors
/// Session failures.
pub async fn ask(
    client: &mut RelayClient,
    root: [u8; 32],
    paths: &[String],
    keys: Option<&SealingKeys>,
) -> Result<bool> {
    if client.relay_minor() < LABEL_SINCE_MINOR {
        return Ok(false);
    }
    let label = SnapshotLabel::new(root, &host(), paths);
    let label = match keys {
        Some(keys) => label.seal(keys)?,
        None => label.encode(),
    };
    client.ask(&Message::SetLabel { label }).await?;
    Ok(true)
}

/// Sends `commit` behind the label [`ask`] sent (`labelled`), and returns
/// the commit's answer: the label costs no round trip of its own.
///
/// # Errors
/// Session failures; a label the relay did not keep.
pub async fn commit(
    client: &mut RelayClient,
    labelled: bool,
    commit: &Message,
) -> crate::client::Result<Message> {
    client.ask(commit).await?;
    if labelled {
        match client.answer().await? {
            Message::LabelKept => {}
            other => {
                return Err(ClientError::Unexpected {
                    expected: "LabelKept",
                    got: other.name(),
                })
            }
        }
    }
    client.answer().await
}

/// The labels of `snapshots` that have one and that check out (a sealed
/// client's opened with the vault key kept here; none without it, rather
/// than asking for a passphrase to list snapshots).
///
/// # Errors
/// Session failures and unexpected answers.
pub async fn fetch(
    state: &StateDir,
    client: &mut RelayClient,
    snapshots: &[SnapshotInfo],
) -> Result<HashMap<u64, SnapshotLabel>> {
    let mut found = HashMap::new();
    if client.relay_minor() < LABEL_SINCE_MINOR {
        return Ok(found);
    }
    let keys = if state.relay()?.is_some_and(|r| r.sealed) {
        match crate::key::load_vault(state)? {
            Some(vault) => Some(SealingKeys::derive(&vault)),
            None => return Ok(found),
        }
    } else {
        None
    };
    let roots: HashMap<u64, [u8; 32]> = snapshots.iter().map(|s| (s.id, s.root.0)).collect();
    for batch in snapshots.chunks(MAX_LABELS) {
        let ids = batch.iter().map(|s| s.id).collect();
        let labels = match client
            .request(&Message::GetLabels { snapshots: ids })
            .await?
        {
            Message::Labels { labels } => labels,
            other => return Err(unexpected("Labels", &other)),
        };
        for (id, bytes) in labels {
            let Some(root) = roots.get(&id) else { continue };
            let opened = match &keys {
                Some(keys) => SnapshotLabel::open(&bytes, keys, root),
                None => SnapshotLabel::decode(&bytes, root),
            };
            match opened {
                Ok(label) => {
                    found.insert(id, label);
                }
                Err(e) => tracing::warn!("snapshot {id}: its label is not shown: {e}"),
            }
        }
    }
    Ok(found)
}

/// A label's paths for people: joined, with how many more there were.
pub fn shown_paths(label: &SnapshotLabel) -> String {
    let mut text = label
        .paths
        .iter()
        .map(|p| ferry_protocol::units::printable(p.as_bytes()))
        .collect::<Vec<_>>()
        .join(", ");
    if label.more > 0 {
        text.push_str(&format!(" and {} more", label.more));
    }
    text
}
