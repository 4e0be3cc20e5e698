//! `[gc]`: when the relay collects garbage, and how relays sharing a
//! catalog take turns.

use std::time::Duration;

use anyhow::Result;
use ferry_protocol::units::parse_duration;
use serde::{Deserialize, Serialize};

/// `[gc]`: when the server collects garbage by itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct GcConfig {
    /// Time between collections (`off`: only `ferry-relay gc`).
    pub interval: String,
    /// Unreferenced data younger than this is kept, so an interrupted
    /// upload can resume without sending it again.
    pub grace: String,
    /// An upload open longer than this no longer holds collections back
    /// and is ended (the next run resumes it): a backup throttled to a
    /// trickle cannot stop collection for everyone.
    pub max_upload_age: String,
    /// How long a relay's claim to collect lasts among relays sharing a
    /// catalog, renewed before each deletion: a relay stopped longer than
    /// this loses it to another, and deletes nothing more.
    pub lease: String,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval: "1d".into(),
            grace: "1d".into(),
            max_upload_age: "12h".into(),
            lease: "10m".into(),
        }
    }
}

/// [`GcConfig`] resolved.
#[derive(Debug, Clone, Copy)]
pub struct GcSchedule {
    /// `None`: never by itself.
    pub interval: Option<Duration>,
    /// See [`GcConfig::grace`].
    pub grace: Duration,
    /// See [`GcConfig::max_upload_age`].
    pub max_upload_age: Duration,
    /// See [`GcConfig::lease`].
    pub lease: Duration,
}

impl GcConfig {
    /// Resolves the human strings.
    ///
    /// # Errors
    /// A message naming the bad key.
    pub fn resolve(&self) -> Result<GcSchedule> {
        let interval = match self.interval.trim() {
            "off" => None,
            text => Some(
                parse_duration(text)
                    .map_err(|e| anyhow::anyhow!("gc.interval: {e} (or \"off\")"))?
                    .max(Duration::from_secs(1)),
            ),
        };
        let grace = parse_duration(&self.grace).map_err(|e| anyhow::anyhow!("gc.grace: {e}"))?;
        let max_upload_age = parse_duration(&self.max_upload_age)
            .map_err(|e| anyhow::anyhow!("gc.max-upload-age: {e}"))?
            .max(Duration::from_secs(1));
        let lease = parse_duration(&self.lease)
            .map_err(|e| anyhow::anyhow!("gc.lease: {e}"))?
            .max(Duration::from_secs(1));
        Ok(GcSchedule {
            interval,
            grace,
            max_upload_age,
            lease,
        })
    }
}
