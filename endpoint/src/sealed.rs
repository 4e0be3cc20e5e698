//! Sealed mode: everything this client stores on the relay is sealed here
//! under its vault key (`ferry_protocol::sealed`), and the relay keeps,
//! links, collects and heals objects it cannot read.
//!
//! The pieces: `remote` (sealed objects out and in, batched and
//! pipelined), `roots` (the set's history checked against what this
//! endpoint has seen), `backup` and `restore`.

mod align;
pub mod backup;
mod dictionary;
mod files;
mod local;
mod objects;
pub mod remote;
pub mod restore;
pub mod roots;
mod scan;

use anyhow::{bail, Result};
use ferry_protocol::message::SEALED_SINCE_MINOR;
use ferry_protocol::sealed::SealingKeys;

use crate::client::RelayClient;
use crate::state::StateDir;

/// What a sealed job needs before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// A backup: a client with no history and no key yet gets a new vault key.
    Backup,
    /// A restore: the key must exist (here, or on the relay under a passphrase).
    Restore,
}

/// The sealing keys of this client: from its vault key here, else from the
/// copy the relay keeps under the owner's passphrase (asked for as
/// `ferry key recover` asks), else — for the first backup of a client
/// with no history — a new vault key.
///
/// # Errors
/// A relay too old for sealed clients, a wrong passphrase, or a client
/// whose vault key is elsewhere.
pub async fn keys(
    state: &StateDir,
    client: &mut RelayClient,
    usage: KeyUse,
) -> Result<SealingKeys> {
    if client.relay_minor() < SEALED_SINCE_MINOR {
        bail!(
            "this client is sealed, and the relay speaks protocol 1.{}; sealed clients need 1.{SEALED_SINCE_MINOR}: upgrade the relay",
            client.relay_minor()
        );
    }
    let vault = crate::key::vault_for(state, client, usage == KeyUse::Backup).await?;
    Ok(SealingKeys::derive(&vault))
}
