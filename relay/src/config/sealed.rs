//! `[sealed]`: what the relay tells sealed clients; `[clients]`: which
//! modes it pairs.

use anyhow::{Context, Result};
use ferry_protocol::recovery::Recipient;
use serde::{Deserialize, Serialize};

/// `[sealed]` as written in `relay.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SealedConfig {
    /// The organisation's recovery recipient (`ferry-recipient-…`, from
    /// `ferry-relay recovery-key new`): every endpoint also wraps its vault
    /// key to it, so the operator's offline identity can open any client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_recipient: Option<String>,
}

impl SealedConfig {
    /// The recovery recipient's key, if one is set.
    ///
    /// # Errors
    /// A recipient that does not read back (a typo: its checksum fails).
    pub fn recipient(&self) -> Result<Option<[u8; 32]>> {
        self.recovery_recipient
            .as_deref()
            .map(|text| {
                Recipient::decode(text)
                    .map(|r| r.0)
                    .context("relay.toml [sealed] recovery-recipient")
            })
            .transpose()
    }
}

/// `[clients]` as written in `relay.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClientsConfig {
    /// Refuse open-mode pairings (`ferry pair --open`): every new client
    /// keeps its data sealed.
    #[serde(default)]
    pub require_sealed: bool,
}
