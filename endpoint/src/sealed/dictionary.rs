//! The vault's compression dictionary on this endpoint
//! (`ferry_protocol::sealed_dictionary`): kept here once made or found
//! (`STATE/sealed-dictionary`, 0600: it is made of file data), else read
//! from the dictionary the set's newest root names (a machine that took the
//! client over), else trained by a backup on the first bytes of the files
//! it is about to read, before it seals any.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ferry_protocol::compress::Method;
use ferry_protocol::message::StorageId;
use ferry_protocol::root::Seen;
use ferry_protocol::sealed::{seal, SealedKind, SealingKeys};
use ferry_protocol::sealed_dictionary::{check, Dictionary, Samples, SAMPLE_PIECE};

use super::remote::{Remote, Send};
use crate::backup::estimate::Seen as Walked;
use crate::exclude::Excludes;
use crate::state::StateDir;
use std::ops::ControlFlow;

/// The vault's dictionary: its storage id, its bytes sealed, and its
/// prepared form.
pub(super) struct VaultDictionary {
    /// Its sealed object's storage id (what roots name).
    pub(super) id: StorageId,
    /// Its sealed object.
    pub(super) sealed: Vec<u8>,
    /// Ready to pack and unpack chunks.
    pub(super) prepared: Dictionary,
}

impl VaultDictionary {
    /// `bytes` sealed and prepared for `method`.
    ///
    /// # Errors
    /// A dictionary that is not one ([`check`]).
    pub(super) fn new(keys: &SealingKeys, bytes: &[u8], method: Method) -> Result<Self> {
        let prepared = Dictionary::new(bytes, method)?;
        let (id, sealed) = seal(keys, SealedKind::Dictionary, Vec::new(), bytes)?;
        Ok(VaultDictionary {
            id,
            sealed,
            prepared,
        })
    }
}

fn path(state: &StateDir) -> PathBuf {
    state.root().join("sealed-dictionary")
}

fn named_path(state: &StateDir) -> PathBuf {
    state.root().join("sealed-dictionary-roots.json")
}

/// The dictionary kept here, if any.
///
/// # Errors
/// A file that cannot be read or is not a dictionary.
pub(super) fn load(state: &StateDir) -> Result<Option<Vec<u8>>> {
    let path = path(state);
    match std::fs::read(&path) {
        Ok(bytes) => {
            check(&bytes).with_context(|| format!("{} is damaged", path.display()))?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Keeps `bytes` as this vault's dictionary (written whole, then renamed).
///
/// # Errors
/// The file cannot be written.
pub(super) fn save(state: &StateDir, bytes: &[u8]) -> Result<()> {
    let path = path(state);
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

/// The dictionary object `id` a root names, fetched and opened.
///
/// # Errors
/// An object that does not open as a dictionary, or is not one.
pub(super) async fn fetch(
    remote: &mut Remote<'_>,
    keys: &SealingKeys,
    id: StorageId,
) -> Result<Vec<u8>> {
    let mut opened = remote.open_all(keys, SealedKind::Dictionary, &[id]).await?;
    let Some((_, bytes)) = opened.remove(&id) else {
        bail!("the relay did not serve the dictionary a root names");
    };
    check(&bytes)
        .map_err(|e| anyhow::anyhow!("the relay served a dictionary that is not one: {e}"))?;
    Ok(bytes)
}

/// The dictionary `id` a restored snapshot's root names: this endpoint's
/// copy when it is that one (sealing is deterministic: the same bytes
/// seal to the same id), else fetched, checked, and kept here when this
/// endpoint has none (a machine that took the client over).
///
/// # Errors
/// As [`fetch`]; a damaged copy here.
pub(super) async fn for_restore(
    state: &StateDir,
    remote: &mut Remote<'_>,
    keys: &SealingKeys,
    id: StorageId,
) -> Result<Vec<u8>> {
    let kept = load(state)?;
    if let Some(bytes) = &kept {
        if seal(keys, SealedKind::Dictionary, Vec::new(), bytes)?.0 == id {
            return Ok(kept.unwrap_or_default());
        }
    }
    let bytes = fetch(remote, keys, id).await?;
    if kept.is_none() {
        save(state, &bytes)?;
    }
    Ok(bytes)
}

/// The roots this endpoint committed naming a dictionary, by set: the
/// root's id and the dictionary's, in hex.
fn read_named(state: &StateDir) -> Result<BTreeMap<String, (String, String)>> {
    crate::state::read_json(&named_path(state))
}

fn pair(root: &[u8; 32], dictionary: &StorageId) -> (String, String) {
    let hex = ferry_protocol::keys::to_hex;
    (hex(root), hex(&dictionary.0))
}

/// Whether `root`, this set's newest on the relay, is one this endpoint
/// committed naming `dictionary`: the relay then holds the dictionary
/// (what a listed root names is kept), and it need not be asked about.
///
/// # Errors
/// A damaged file.
pub(super) fn named_by(
    state: &StateDir,
    set: &str,
    root: &[u8; 32],
    dictionary: &StorageId,
) -> Result<bool> {
    Ok(read_named(state)?.get(set) == Some(&pair(root, dictionary)))
}

/// Remembers that `root`, committed for `set`, names `dictionary`.
///
/// # Errors
/// The file cannot be written.
pub(super) fn remember_named(
    state: &StateDir,
    set: &str,
    root: &[u8; 32],
    dictionary: &StorageId,
) -> Result<()> {
    let mut named = read_named(state)?;
    named.insert(set.to_string(), pair(root, dictionary));
    crate::state::write_json(&named_path(state), &named)
}

/// The dictionary a backup of `set` packs with, found as the module says
/// or trained now on the files under `paths` (`None` when they are too
/// few to learn from), and queued for the relay unless it holds it for
/// sure. `newest` is the set's newest root on the relay.
///
/// # Errors
/// A damaged local copy, a root or dictionary the relay altered.
pub(super) async fn for_backup(
    state: &StateDir,
    remote: &mut Remote<'_>,
    keys: &SealingKeys,
    (set, newest): (&str, Option<Seen>),
    (paths, excludes): (&[PathBuf], &Excludes),
    method: Method,
) -> Result<Option<VaultDictionary>> {
    if let Some(bytes) = load(state)? {
        let dictionary = VaultDictionary::new(keys, &bytes, method)?;
        let held = match newest {
            Some(root) => named_by(state, set, &root.id, &dictionary.id)?,
            None => false,
        };
        if !held {
            remote
                .queue(dictionary.id, dictionary.sealed.clone(), Send::IfMissing)
                .await?;
        }
        return Ok(Some(dictionary));
    }
    if let Some(root) = newest {
        let roots = super::roots::open_roots(remote, keys, &[StorageId(root.id)]).await?;
        if let Some(id) = roots.values().find_map(|opened| opened.dictionary) {
            let bytes = fetch(remote, keys, id).await?;
            save(state, &bytes)?;
            return Ok(Some(VaultDictionary::new(keys, &bytes, method)?));
        }
    }
    let Some(bytes) = sample(paths, excludes).train() else {
        return Ok(None);
    };
    save(state, &bytes)?;
    let dictionary = VaultDictionary::new(keys, &bytes, method)?;
    remote
        .queue(dictionary.id, dictionary.sealed.clone(), Send::Always)
        .await?;
    tracing::debug!(
        "trained the vault's compression dictionary ({} bytes)",
        bytes.len()
    );
    Ok(Some(dictionary))
}

/// Most entries looked at for samples: a tree of many tiny files is not
/// walked twice in full.
const SAMPLE_ENTRIES: usize = 20_000;

/// Samples for a dictionary: the first bytes of the regular files under
/// `paths` that the backup reads (the same excludes, in the walk's order),
/// until there are enough or [`SAMPLE_ENTRIES`] were looked at. Read
/// before anything is sealed, so every chunk of the first backup is packed
/// with the dictionary, as a later machine packs it again.
fn sample(paths: &[PathBuf], excludes: &Excludes) -> Samples {
    let mut samples = Samples::default();
    // As the walk names them: absolute, so the excludes match alike.
    let roots: Vec<PathBuf> = paths
        .iter()
        .filter_map(|path| crate::backup::absolute(path).ok())
        .collect();
    let mut looked = 0;
    crate::backup::estimate::walk(&roots, excludes, |seen| {
        looked += 1;
        if samples.full() || looked > SAMPLE_ENTRIES {
            return ControlFlow::Break(());
        }
        if let Walked::Taken(path, meta) = seen {
            if meta.is_file() {
                let mut piece = Vec::with_capacity(SAMPLE_PIECE);
                let read = std::fs::File::open(path)
                    .and_then(|f| f.take(SAMPLE_PIECE as u64).read_to_end(&mut piece));
                if read.is_ok() {
                    samples.add(&piece);
                }
            }
        }
        ControlFlow::Continue(())
    });
    samples
}
