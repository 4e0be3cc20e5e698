//! What the relay stores, in either mode: references and the id check
//! dispatched by kind, so no rule needs to know whether a client is sealed.

use ferry_protocol::ProtocolError;

use crate::catalog::{BlobKey, BlobKind};
use crate::objects::{sealed_is_whole, References, SealedObjects};
use crate::plaintext::OpenObjects;

/// References of whatever the relay stores: sealed objects from their
/// headers, open-mode objects by [`OpenObjects`]. The walks use this one,
/// so no rule needs to know which mode a client is in.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoredObjects;

impl References for StoredObjects {
    fn references(&self, key: BlobKey, raw: &[u8]) -> Result<Vec<BlobKey>, ProtocolError> {
        match key.kind {
            BlobKind::Sealed => SealedObjects.references(key, raw),
            _ => OpenObjects.references(key, raw),
        }
    }
}

/// Whether `raw` is the blob `key` names (verify's check), in either mode.
pub fn is_whole(key: BlobKey, raw: &[u8]) -> bool {
    match key.kind {
        BlobKind::Sealed => sealed_is_whole(key, raw),
        _ => OpenObjects::is_whole(key, raw),
    }
}
