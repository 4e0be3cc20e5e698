//! Trees and contents sent as patches against what the client stored
//! before (`PutObjectPatch`: an incremental backup patches every changed
//! directory's tree and changed file's chunk list): held, like the objects
//! sent whole (`reused`), so that their bases are looked up together, not
//! one round trip to the catalog each. Whatever may read one — every
//! request `reused::reads_held` names, a sync — applies them first.

use std::collections::HashMap;

use ferry_protocol::compress::compress;
use ferry_protocol::message::ObjectId;

use super::lookup::object_key;
use super::{check, violation, Result, Transfer};
use crate::catalog::{BlobKey, BlobKind};
use crate::plaintext::OpenObjects;

/// Patches held at most before they are applied.
const HELD_PATCHES: usize = 256;

/// Bytes of patches held at most before the same.
const HELD_PATCH_BYTES: usize = 1 << 20;

/// One patch as it came: the object it makes, its base, the patch.
#[derive(Debug)]
struct HeldPatch {
    id: ObjectId,
    base: ObjectId,
    patch: Vec<u8>,
}

/// The patches an upload holds until they are applied.
#[derive(Debug, Default)]
pub(super) struct HeldPatches {
    patches: Vec<HeldPatch>,
    bytes: usize,
}

impl Transfer {
    /// Holds a patch of an object against an object of the same kind this
    /// client stored before; applies the held ones when enough are held.
    pub(super) fn put_object_patch(
        &mut self,
        id: ObjectId,
        base: ObjectId,
        patch: Vec<u8>,
    ) -> Result<()> {
        let (kind, base_kind) = (object_key(&id).kind, object_key(&base).kind);
        check!(
            kind == base_kind,
            "a patch of a {kind:?} against a {base_kind:?}"
        );
        let held = &mut self.upload()?.patches;
        held.bytes += patch.len();
        held.patches.push(HeldPatch { id, base, patch });
        if held.patches.len() >= HELD_PATCHES || held.bytes >= HELD_PATCH_BYTES {
            self.apply_patches()?;
        }
        Ok(())
    }

    /// Applies the held patches, in the order they came: their bases
    /// looked up together (one made by an earlier patch of the same batch
    /// is taken from it). Without its base a patch is dropped and logged:
    /// the commit will name the object missing.
    pub(super) fn apply_patches(&mut self) -> Result<()> {
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        let held = std::mem::take(&mut upload.patches).patches;
        if held.is_empty() {
            return Ok(());
        }
        // A base among the objects held unstamped is read once they are.
        if held
            .iter()
            .any(|p| upload.reused.holds(&object_key(&p.base)))
        {
            self.stamp_reused()?;
        }
        let mut bases: HashMap<BlobKey, Vec<u8>> = HashMap::new();
        for kind in [BlobKind::Tree, BlobKind::Content] {
            let ids: Vec<[u8; 32]> = held
                .iter()
                .map(|p| object_key(&p.base))
                .filter(|key| key.kind == kind)
                .map(|key| key.id)
                .collect();
            if !ids.is_empty() {
                let loaded = self.load_among(kind, &ids)?;
                bases.extend(
                    loaded
                        .into_iter()
                        .map(|(id, raw)| (BlobKey { kind, id }, raw)),
                );
            }
        }
        for HeldPatch { id, base, patch } in held {
            let Some(base_bytes) = bases.get(&object_key(&base)) else {
                self.dropped_patch(base)?;
                continue;
            };
            let raw = OpenObjects::patched(base_bytes, &patch)?;
            let (codec, data) = compress(&raw);
            self.put_object(id, &raw, codec, data)?;
            bases.insert(object_key(&id), raw);
        }
        Ok(())
    }

    /// Logs a patch dropped for want of its base, once per upload (a
    /// client must not be able to flood the log).
    fn dropped_patch(&mut self, base: ObjectId) -> Result<()> {
        let client = self.client;
        let upload = self.upload()?;
        if !std::mem::replace(&mut upload.told_missing_base, true) {
            tracing::warn!(
                client = %client,
                ?base,
                "object patch against a missing base dropped (the commit will name what is missing; further ones in this upload are not logged)"
            );
        }
        Ok(())
    }
}
