//! A snapshot as the relay hands it back, checked: which snapshot a
//! request names, its trees and contents decoded (each checked against its
//! id and against the file it describes), chunks checked against theirs,
//! and what could not be had named [`Damaged`]. Restore and verify read
//! snapshots through here, and browsing will.

use std::collections::HashMap;
use std::fs::File;

use anyhow::{Context, Result};
use ferry_protocol::chunking::{Chunker, MAX_CHUNK};
use ferry_protocol::compress::decompress;
use ferry_protocol::fragment::MAX_MESSAGE;
use ferry_protocol::ids::{ChunkId, ContentId, TreeId};
use ferry_protocol::message::{Message, SnapshotInfo};
use ferry_protocol::tree::{ChunkRef, Content, ContentBuilder, Tree};
use ferry_protocol::units::printable;

use crate::client::{self, unexpected, ClientError, RelayClient};

/// The set's snapshots (every set's without one), oldest first, and why
/// the relay keeps each (relays from protocol 1.4 say; printable text).
///
/// # Errors
/// Session failures and unexpected answers.
pub async fn list_kept_by(
    client: &mut RelayClient,
    set: Option<String>,
) -> Result<(Vec<SnapshotInfo>, HashMap<u64, Vec<String>>)> {
    let list = list(client, set.as_deref()).await?;
    if client.relay_minor() < 4 {
        return Ok((list, HashMap::new()));
    }
    let kept_by = match client.request(&Message::GetKeptBy { set }).await? {
        Message::KeptBy { snapshots } => snapshots
            .into_iter()
            .map(|(id, why)| {
                let why = why.iter().map(|w| printable(w.as_bytes())).collect();
                (id, why)
            })
            .collect(),
        other => return Err(unexpected("KeptBy", &other)),
    };
    Ok((list, kept_by))
}

/// Something the snapshot names that the relay could not give back whole
/// (it lacks it, or its bytes do not match their id): the entries that need
/// it fail and are named, the rest of the restore goes on.
#[derive(Debug, thiserror::Error)]
#[error("damaged on the relay: {0}")]
pub struct Damaged(pub(crate) String);

/// The bytes of an answer to `GetObject`: a refusal (no such object) is
/// damage, as is an answer that does not decompress.
pub(crate) fn object_bytes(answer: client::Result<Message>) -> Result<Vec<u8>> {
    match answer {
        Ok(Message::Object { codec, data }) => decompress(codec, data, MAX_MESSAGE)
            .map_err(|e| Damaged(format!("an object that does not decompress ({e})")).into()),
        Ok(other) => Err(unexpected("Object", &other)),
        Err(e) => Err(as_damage(e)),
    }
}

/// A relay's refusal of one request becomes [`Damaged`]; other errors (the
/// session broke) stay as they are and end the restore.
pub(crate) fn as_damage(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Refused(refused) => Damaged(refused.message).into(),
        e => e.into(),
    }
}

pub(crate) fn chunk_damaged(id: &ChunkId, why: String) -> anyhow::Error {
    Damaged(format!("chunk {}: {why}", id.short())).into()
}

/// The bytes of an answer to `GetChunk` sent without a base, checked
/// against `id`; a refusal or wrong bytes are [`Damaged`].
pub(crate) fn chunk_data(answer: client::Result<Message>, id: &ChunkId) -> Result<Vec<u8>> {
    match answer.map_err(as_damage)? {
        Message::ChunkData { codec, data } => {
            let data = decompress(codec, data, MAX_CHUNK as usize)
                .map_err(|e| chunk_damaged(id, format!("does not decompress ({e})")))?;
            if ChunkId::of(&data) != *id {
                return Err(chunk_damaged(
                    id,
                    "the relay's copy does not match its id".into(),
                ));
            }
            Ok(data)
        }
        other => Err(unexpected("ChunkData", &other)),
    }
}

/// Decodes a tree, or reports it damaged.
pub(crate) fn decode_tree(id: &TreeId, raw: &[u8]) -> Result<Tree> {
    Tree::decode(id, raw).map_err(|e| Damaged(format!("directory {}: {e}", id.short())).into())
}

/// The most chunks a file of `data` bytes can have: every chunk but the
/// last is at least [`MIN_CHUNK`](ferry_protocol::chunking::MIN_CHUNK)
/// (doubled, with room, so no honest snapshot is refused). A relay's chunk
/// list longer than this is damage, which bounds what a file's chunk list
/// can cost in memory.
pub(crate) fn max_chunks(data: u64) -> u64 {
    2 * (data / u64::from(ferry_protocol::chunking::MIN_CHUNK)) + 16
}

/// `content` (named `id`), a file's content or (`part`) one of its parts
/// after `listed` chunks, if it fits a file of `data` bytes: no more
/// bytes, no more chunks than [`max_chunks`] allows, no nested parts.
pub(crate) fn fits_file(
    content: Content,
    id: &ContentId,
    part: bool,
    listed: u64,
    data: u64,
) -> Result<Content> {
    let limit = max_chunks(data);
    let fits = if part {
        content.parts.is_empty() && listed + content.chunks.len() as u64 <= limit
    } else {
        content.len() <= data
            && content.chunks.len() as u64 <= limit
            && content.parts.len() as u64 <= limit / ferry_protocol::tree::PART_CHUNKS as u64 + 1
    };
    if fits {
        Ok(content)
    } else {
        Err(Damaged(format!(
            "file list {} does not fit a file of {data} bytes",
            id.short()
        ))
        .into())
    }
}

/// Decodes a content, or reports it damaged.
pub(crate) fn decode_content(id: &ContentId, raw: &[u8]) -> Result<Content> {
    Content::decode(id, raw).map_err(|e| Damaged(format!("file list {}: {e}", id.short())).into())
}

/// Which snapshot to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// The newest of the set.
    Last,
    /// A snapshot id.
    Id(u64),
}

/// Finds the snapshot a request names.
///
/// # Errors
/// When there is none.
pub async fn resolve(
    client: &mut RelayClient,
    set: Option<&str>,
    selector: Selector,
) -> Result<SnapshotInfo> {
    choose(list(client, set).await?, set, selector)
}

/// The set's snapshots (every set's without one), oldest first.
///
/// # Errors
/// Session failures and unexpected answers.
pub async fn list(client: &mut RelayClient, set: Option<&str>) -> Result<Vec<SnapshotInfo>> {
    match client
        .request(&Message::ListSnapshots {
            set: set.map(str::to_string),
        })
        .await?
    {
        Message::SnapshotList { snapshots } => Ok(snapshots),
        other => Err(unexpected("SnapshotList", &other)),
    }
}

impl std::str::FromStr for Selector {
    type Err = String;

    /// `last`, or a snapshot id.
    fn from_str(text: &str) -> Result<Self, String> {
        if text == "last" {
            return Ok(Self::Last);
        }
        text.parse()
            .map(Self::Id)
            .map_err(|_| format!("expected a snapshot id or `last`, not {text:?}"))
    }
}

/// The set a snapshot is looked up in: the one named, else `default` for
/// `last`, else any (an id is unique across sets).
pub fn set_of(set: Option<String>, selector: Selector) -> Option<String> {
    match (set, selector) {
        (Some(set), _) => Some(set),
        (None, Selector::Last) => Some("default".to_string()),
        (None, Selector::Id(_)) => None,
    }
}

/// The snapshot `selector` picks from `list` (the relay's listing of
/// `set`, or of every set).
///
/// # Errors
/// No such snapshot.
pub fn choose(
    list: Vec<SnapshotInfo>,
    set: Option<&str>,
    selector: Selector,
) -> Result<SnapshotInfo> {
    let found = match selector {
        Selector::Last => list.into_iter().last(),
        Selector::Id(id) => list.into_iter().find(|s| s.id == id),
    };
    found.with_context(|| match (selector, set) {
        (Selector::Last, Some(set)) => format!("no snapshot in set {set:?}"),
        (Selector::Last, None) => "no snapshot".to_string(),
        (Selector::Id(id), _) => format!("no snapshot {id}"),
    })
}

/// Chunks `file` as a backup would and returns its content (chunk list);
/// `each` sees every chunk's offset, length and id.
pub(crate) fn chunk_file(
    file: &File,
    mut each: impl FnMut(u64, u32, ChunkId),
) -> std::io::Result<Content> {
    let mut builder = ContentBuilder::default();
    for chunk in Chunker::new(std::io::BufReader::new(file)) {
        let chunk = chunk?;
        let len = chunk.data.len() as u32;
        each(chunk.offset, len, chunk.id);
        builder.push(ChunkRef { id: chunk.id, len });
    }
    Ok(builder.finish().0)
}

/// A path of the snapshot as `/a/b`, for messages.
pub(crate) fn show_path(path: &[Vec<u8>]) -> String {
    let shown: Vec<String> = path
        .iter()
        .map(|c| ferry_protocol::units::printable(c))
        .collect();
    format!("/{}", shown.join("/"))
}
