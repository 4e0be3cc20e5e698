//! `ferry verify`: fetch a snapshot end to end and check it, writing
//! nothing: every tree, content and chunk a restore would use is received
//! and hashed against its id, and with `--against DIR` each file is also
//! compared with the local file at its path below `DIR`.
//!
//! A run bounded by `--max-duration` records the last file it checked in
//! `STATE/verify.json`; the next run of the same snapshot resumes after it
//! (files are walked in a fixed order: directories depth first, names
//! sorted, so "after" is the lexicographic order of their paths).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::Result;
use ferry_protocol::ids::{ChunkId, ContentId, TreeId};
use ferry_protocol::message::{Message, ObjectId};
use ferry_protocol::tree::EntryKind;
use serde::{Deserialize, Serialize};

use crate::client::RelayClient;
use crate::restore::{
    chunk_data, chunk_file, decode_content, decode_tree, object_bytes, resolve, show_path, Damaged,
    Selector, WINDOW,
};

/// What to check.
#[derive(Debug, Clone)]
pub struct Request {
    /// The backup set (`None`: any set, for `-b ID`).
    pub set: Option<String>,
    /// Which snapshot.
    pub snapshot: Selector,
    /// Compare with the local files below this directory (the snapshot's
    /// absolute paths appended to it; `/` compares with the originals).
    pub against: Option<PathBuf>,
    /// Stop after this long; the next run resumes.
    pub max_duration: Option<Duration>,
    /// Where the progress of a time-boxed run is kept.
    pub progress: PathBuf,
}

/// What a check found: the `--json` summary.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// The snapshot checked.
    pub snapshot: u64,
    /// Files received and found whole.
    pub files_checked: u64,
    /// Their bytes.
    pub bytes_checked: u64,
    /// Files the relay could not give back whole (named on stderr).
    pub files_damaged: u64,
    /// Files that differ from the local file `--against` names.
    pub files_differ: u64,
    /// Files skipped because an earlier, time-boxed run checked them.
    pub files_resumed: u64,
    /// Whether the whole snapshot was gone through (false: time box hit).
    pub complete: bool,
    /// Bytes sent on the connection.
    pub bytes_sent: u64,
    /// Bytes received on the connection.
    pub bytes_received: u64,
    /// Wall time in seconds.
    pub duration_s: f64,
    /// One line per damaged or differing file.
    #[serde(skip)]
    pub messages: Vec<String>,
}

/// Where a time-boxed run stopped.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    snapshot: u64,
    last: Vec<Vec<u8>>,
}

/// Checks the snapshot `request` names.
///
/// # Errors
/// When the snapshot does not exist or the session breaks.
pub async fn run(client: &mut RelayClient, request: &Request) -> Result<Summary> {
    let started = Instant::now();
    let info = resolve(client, request.set.as_deref(), request.snapshot).await?;
    let resume = std::fs::read(&request.progress)
        .ok()
        .and_then(|b| serde_json::from_slice::<Progress>(&b).ok())
        .filter(|p| p.snapshot == info.id)
        .map(|p| p.last);
    let mut check = Check {
        client,
        request,
        started,
        resume,
        last: Vec::new(),
        stopped: false,
        summary: Summary {
            snapshot: info.id,
            ..Summary::default()
        },
    };
    check.tree(info.root, Vec::new()).await?;
    let progress = Progress {
        snapshot: info.id,
        last: std::mem::take(&mut check.last),
    };
    if check.stopped {
        // Best effort: without it the next run starts over, nothing worse.
        let _ = std::fs::write(&request.progress, serde_json::to_vec(&progress)?);
    } else {
        let _ = std::fs::remove_file(&request.progress);
    }
    let mut summary = check.summary;
    summary.complete = !check.stopped;
    summary.bytes_sent = client.bytes_sent();
    summary.bytes_received = client.bytes_received();
    summary.duration_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

struct Check<'a> {
    client: &'a mut RelayClient,
    request: &'a Request,
    started: Instant,
    /// Files up to this path were checked by the run this one resumes.
    resume: Option<Vec<Vec<u8>>>,
    /// The last file checked.
    last: Vec<Vec<u8>>,
    stopped: bool,
    summary: Summary,
}

type Boxed<'b, T> = Pin<Box<dyn std::future::Future<Output = T> + 'b>>;

impl Check<'_> {
    fn tree(&mut self, id: TreeId, path: Vec<Vec<u8>>) -> Boxed<'_, Result<()>> {
        Box::pin(async move {
            let tree = self.object(ObjectId::Tree(id)).await;
            let tree = match tree.and_then(|raw| decode_tree(&id, &raw)) {
                Ok(tree) => tree,
                Err(e) if e.is::<Damaged>() => {
                    self.report(&path, &format!("{e:#}; nothing below it was checked"));
                    self.summary.files_damaged += 1;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            for entry in tree.entries {
                if self.stopped {
                    return Ok(());
                }
                let mut entry_path = path.clone();
                entry_path.push(entry.name.clone());
                match entry.kind {
                    EntryKind::Dir { tree } => self.tree(tree, entry_path).await?,
                    EntryKind::File { content, size, .. } => {
                        if self.resume.as_ref().is_some_and(|r| entry_path <= *r) {
                            self.summary.files_resumed += 1;
                            continue;
                        }
                        if self
                            .request
                            .max_duration
                            .is_some_and(|max| self.started.elapsed() >= max)
                        {
                            self.stopped = true;
                            return Ok(());
                        }
                        self.file(content, size, &entry_path).await?;
                        self.last = entry_path;
                    }
                    _ => {}
                }
            }
            Ok(())
        })
    }

    async fn object(&mut self, id: ObjectId) -> Result<Vec<u8>> {
        object_bytes(self.client.request(&Message::GetObject { id }).await)
    }

    /// Receives every chunk of a file ([`WINDOW`] in flight) and checks it;
    /// then compares with the local file, if asked.
    async fn file(&mut self, id: ContentId, size: u64, path: &[Vec<u8>]) -> Result<()> {
        let mut damage = None;
        let content = self
            .object(ObjectId::Content(id))
            .await
            .and_then(|raw| decode_content(&id, &raw));
        let mut chunks = Vec::new();
        match content {
            Ok(content) if content.parts.is_empty() => chunks = content.chunks,
            Ok(content) => {
                for part in content.parts {
                    match self.object(ObjectId::Content(part.id)).await {
                        Ok(raw) => match decode_content(&part.id, &raw) {
                            Ok(part) => chunks.extend(part.chunks),
                            Err(e) => damage = Some(e),
                        },
                        Err(e) if e.is::<Damaged>() => damage = Some(e),
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) if e.is::<Damaged>() => damage = Some(e),
            Err(e) => return Err(e),
        }
        let mut asked = std::collections::VecDeque::new();
        for chunk in &chunks {
            self.client
                .ask(&Message::GetChunk {
                    id: chunk.id,
                    base_signature: None,
                })
                .await?;
            asked.push_back(chunk.id);
            if asked.len() >= WINDOW {
                let next = asked.pop_front().expect("not empty");
                self.chunk(next, &mut damage).await?;
            }
        }
        while let Some(next) = asked.pop_front() {
            self.chunk(next, &mut damage).await?;
        }
        if let Some(e) = damage {
            self.summary.files_damaged += 1;
            self.report(path, &format!("{e:#}"));
            return Ok(());
        }
        self.summary.files_checked += 1;
        self.summary.bytes_checked += size;
        if let Some(root) = &self.request.against {
            let local = local_path(root, path);
            match local_content_id(&local) {
                Ok(local_id) if local_id == id => {}
                Ok(_) => self.differs(path, "differs from the local file"),
                Err(e) => self.differs(path, &format!("the local file cannot be read ({e})")),
            }
        }
        Ok(())
    }

    /// Reads one chunk answer; damage is kept in `damage`.
    async fn chunk(&mut self, id: ChunkId, damage: &mut Option<anyhow::Error>) -> Result<()> {
        let answer = self.client.answer().await;
        match chunk_data(answer, &id) {
            Ok(_) => Ok(()),
            Err(e) if e.is::<Damaged>() => {
                damage.get_or_insert(e);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn differs(&mut self, path: &[Vec<u8>], why: &str) {
        self.summary.files_differ += 1;
        self.report(path, why);
    }

    fn report(&mut self, path: &[Vec<u8>], why: &str) {
        self.summary
            .messages
            .push(format!("{}: {why}", show_path(path)));
    }
}

fn local_path(root: &Path, path: &[Vec<u8>]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut local = root.to_path_buf();
    for name in path {
        local.push(std::ffi::OsStr::from_bytes(name));
    }
    local
}

/// The content id of a local file, chunked as a backup would.
fn local_content_id(path: &Path) -> std::io::Result<ContentId> {
    let file = std::fs::File::open(path)?;
    Ok(chunk_file(&file, |_, _, _| {})?.encode().0)
}
