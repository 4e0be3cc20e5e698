//! The relay's configuration, `DATA/relay.toml`.
//!
//! One serde struct, kebab-case, unknown keys refused (a typo must not
//! silently fall back to a default). Durations are human strings (`10s`) and
//! are resolved once into [`Limits`] before the server starts.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_protocol::schedule::{RateSpec, Schedule};
use ferry_protocol::units::parse_duration;
use serde::{Deserialize, Serialize};

mod alert_channels;
mod gc;
mod sealed;
mod storage;
mod web;

use crate::net::IpNet;
pub use alert_channels::{SmtpConfig, SmtpTls, WebhookConfig, WebhookFormat};
pub use gc::{GcConfig, GcSchedule};
pub use sealed::{ClientsConfig, SealedConfig};
pub use storage::{CatalogConfig, S3Settings, StorageConfig, StorageKind};
pub use web::WebConfig;

/// The contents of `relay.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RelayConfig {
    /// Where sessions are accepted: the address exposed to the internet.
    pub listen: SocketAddr,
    /// Where pairing is accepted: only sources in `lan-networks` may use it.
    pub pair_listen: SocketAddr,
    /// Public `HOST:PORT`s given to endpoints for use outside the LAN.
    #[serde(default)]
    pub public: Vec<String>,
    /// Sources counted as LAN (pairing is allowed only from these).
    #[serde(default = "IpNet::default_lan")]
    pub lan_networks: Vec<IpNet>,
    /// Timeouts and caps of the listeners.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Bandwidth limits for sessions from the LAN and from the internet.
    #[serde(default)]
    pub rates: RatesConfig,
    /// Garbage collection.
    #[serde(default)]
    pub gc: GcConfig,
    /// Scheduled verification of the store.
    #[serde(default)]
    pub verify: VerifyConfig,
    /// The relay's retention rules for every set that has none of its own
    /// (`ferry-relay clients retention`); none: everything is kept.
    #[serde(default, skip_serializing_if = "is_default")]
    pub retention: ferry_protocol::keep::Rules,
    /// Storage quotas.
    #[serde(default)]
    pub quota: QuotaConfig,
    /// The status page and metrics listener (off unless `listen` is set).
    #[serde(default)]
    pub web: WebConfig,
    /// Alerts: stale sets, quotas, damage, failed backups.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// What sealed clients are told (the recovery recipient).
    #[serde(default, skip_serializing_if = "is_default")]
    pub sealed: SealedConfig,
    /// Rules for pairing clients.
    #[serde(default, skip_serializing_if = "is_default")]
    pub clients: ClientsConfig,
    /// Where pack bytes live: the relay's disk, or an object store.
    #[serde(default, skip_serializing_if = "is_default")]
    pub storage: StorageConfig,
    /// Where the catalog is: the data directory, or a shared file.
    #[serde(default, skip_serializing_if = "is_default")]
    pub catalog: CatalogConfig,
}

/// `[alerts]`: when a set counts as stale, how often to look, and what to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AlertsConfig {
    /// A set with no snapshot committed for this long is stale.
    pub stale_after: String,
    /// Per client (`"laptop"`) or per set (`"laptop/home"`): their own
    /// `stale-after`, the set's before the client's.
    pub stale_after_for: std::collections::BTreeMap<String, String>,
    /// How often the relay looks.
    pub check_interval: String,
    /// Run once when something goes wrong and once when it recovers: a
    /// string is run by `/bin/sh -c` (the operator's own text), a list as
    /// the program and its arguments. What it is about is passed only in
    /// the environment (`FERRY_CLIENT`, `FERRY_SET`, `FERRY_LAST_SUCCESS`,
    /// `FERRY_REASON`, `FERRY_MESSAGE`), never in the command line.
    pub command: Option<AlertCommand>,
    /// `[alerts.suspicious]`: when a backup is suspicious (see
    /// `crate::suspicion`).
    pub suspicious: crate::suspicion::Thresholds,
    /// `[alerts.smtp]`: mail the alerts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpConfig>,
    /// `[alerts.webhook]`: post the alerts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            stale_after: "2d".into(),
            stale_after_for: std::collections::BTreeMap::new(),
            check_interval: "5m".into(),
            command: None,
            suspicious: crate::suspicion::Thresholds::default(),
            smtp: None,
            webhook: None,
        }
    }
}

/// `alerts.command`: shell text or a program with arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AlertCommand {
    /// Run by `/bin/sh -c`.
    Shell(String),
    /// Run directly: the program, then its arguments.
    Program(Vec<String>),
}

/// [`AlertsConfig`] resolved.
#[derive(Debug, Clone)]
pub struct Alerts {
    /// See [`AlertsConfig::stale_after`].
    pub stale_after: Duration,
    /// See [`AlertsConfig::stale_after_for`].
    pub stale_after_for: std::collections::BTreeMap<String, Duration>,
    /// See [`AlertsConfig::check_interval`].
    pub check_interval: Duration,
    /// The program and its arguments (`None`: alerts are only shown).
    pub command: Option<Vec<String>>,
    /// See [`AlertsConfig::suspicious`].
    pub suspicious: crate::suspicion::Thresholds,
    /// See [`AlertsConfig::smtp`].
    pub smtp: Option<SmtpConfig>,
    /// See [`AlertsConfig::webhook`].
    pub webhook: Option<WebhookConfig>,
}

impl Alerts {
    /// With the channels' relative file names taken as in `root` (the
    /// data directory).
    pub fn rooted(mut self, root: &std::path::Path) -> Self {
        if let Some(file) = self.smtp.as_mut().and_then(|s| s.password_file.as_mut()) {
            *file = root.join(&*file);
        }
        if let Some(file) = self.webhook.as_mut().and_then(|w| w.token_file.as_mut()) {
            *file = root.join(&*file);
        }
        self
    }

    /// How long `client`'s set `set` may go without a snapshot.
    pub fn stale_after(&self, client: &str, set: &str) -> Duration {
        self.stale_after_for
            .get(&format!("{client}/{set}"))
            .or_else(|| self.stale_after_for.get(client))
            .copied()
            .unwrap_or(self.stale_after)
    }
}

impl AlertsConfig {
    /// Resolves the human strings.
    ///
    /// # Errors
    /// A message naming the bad key.
    pub fn resolve(&self) -> Result<Alerts> {
        let duration = |key: &str, text: &str| {
            parse_duration(text).map_err(|e| anyhow::anyhow!("alerts.{key}: {e}"))
        };
        let mut stale_after_for = std::collections::BTreeMap::new();
        for (name, text) in &self.stale_after_for {
            stale_after_for.insert(
                name.clone(),
                duration(&format!("stale-after-for.{name:?}"), text)?,
            );
        }
        let command = match &self.command {
            None => None,
            Some(AlertCommand::Shell(text)) => {
                anyhow::ensure!(!text.trim().is_empty(), "alerts.command is empty");
                Some(vec!["/bin/sh".into(), "-c".into(), text.clone()])
            }
            Some(AlertCommand::Program(argv)) => {
                anyhow::ensure!(
                    argv.first().is_some_and(|p| !p.is_empty()),
                    "alerts.command: the list must start with the program to run"
                );
                Some(argv.clone())
            }
        };
        Ok(Alerts {
            stale_after: duration("stale-after", &self.stale_after)?,
            stale_after_for,
            check_interval: duration("check-interval", &self.check_interval)?
                .max(Duration::from_millis(100)),
            command,
            suspicious: self.suspicious,
            smtp: self.smtp.clone(),
            webhook: self.webhook.clone(),
        })
    }
}

/// `[quota]`: how much each client may store (after dedup and compression).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct QuotaConfig {
    /// Every client's quota unless it has its own (`100GiB`, `unlimited`).
    pub per_client: String,
    /// Past this share of its quota a client's use is logged and shown in
    /// `ferry status`, in percent.
    pub warn_percent: u8,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            per_client: "unlimited".into(),
            warn_percent: 90,
        }
    }
}

/// Quotas resolved for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// See [`QuotaConfig::per_client`]; `None`: unlimited.
    pub per_client: Option<u64>,
    /// See [`QuotaConfig::warn_percent`].
    pub warn_percent: u8,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            per_client: None,
            warn_percent: 90,
        }
    }
}

impl Quotas {
    /// The quota of a client whose own setting is `own` (see
    /// `ClientRecord::own_quota`).
    pub fn of(&self, own: Option<Option<u64>>) -> Option<u64> {
        own.unwrap_or(self.per_client)
    }
}

impl QuotaConfig {
    /// Resolves the size.
    ///
    /// # Errors
    /// A message naming the bad key.
    pub fn resolve(&self) -> Result<Quotas> {
        anyhow::ensure!(
            (1..=100).contains(&self.warn_percent),
            "quota.warn-percent: {} is not a percentage from 1 to 100",
            self.warn_percent
        );
        Ok(Quotas {
            per_client: parse_quota(&self.per_client)
                .map_err(|e| anyhow::anyhow!("quota.per-client: {e}"))?,
            warn_percent: self.warn_percent,
        })
    }
}

/// Parses a quota: a size, or `unlimited`.
///
/// # Errors
/// A size that does not parse.
pub fn parse_quota(text: &str) -> Result<Option<u64>, String> {
    match text.trim() {
        "unlimited" | "none" => Ok(None),
        size => ferry_protocol::units::parse_size(size).map(Some),
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// `[verify]`: when the server checks the store by itself (as
/// `ferry-relay verify` does), and how hard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct VerifyConfig {
    /// Time between runs (`off`: only `ferry-relay verify`).
    pub interval: String,
    /// Each run stops reading after this long; the next resumes.
    pub max_duration: String,
    /// Blobs verified more recently than this are skipped.
    pub since_verified: String,
    /// Read rate cap (`64MiB/s`; `unlimited`), to spare uploads.
    pub rate: String,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            interval: "1d".into(),
            max_duration: "1h".into(),
            since_verified: "30d".into(),
            rate: "64MiB/s".into(),
        }
    }
}

/// [`VerifyConfig`] resolved.
#[derive(Debug, Clone)]
pub struct VerifySchedule {
    /// `None`: never by itself.
    pub interval: Option<Duration>,
    /// What each run checks.
    pub options: crate::verify::Options,
}

impl VerifyConfig {
    /// Resolves the human strings.
    ///
    /// # Errors
    /// A message naming the bad key.
    pub fn resolve(&self) -> Result<VerifySchedule> {
        let duration = |key: &str, text: &str| {
            parse_duration(text).map_err(|e| anyhow::anyhow!("verify.{key}: {e}"))
        };
        let interval = match self.interval.trim() {
            "off" => None,
            text => Some(duration("interval", text)?.max(Duration::from_secs(1))),
        };
        let rate = ferry_protocol::units::parse_rate(&self.rate)
            .map_err(|e| anyhow::anyhow!("verify.rate: {e}"))?;
        Ok(VerifySchedule {
            interval,
            options: crate::verify::Options {
                max_duration: Some(duration("max-duration", &self.max_duration)?),
                subset_percent: None,
                since_verified: Some(duration("since-verified", &self.since_verified)?),
                rate,
            },
        })
    }
}

/// Rates for one kind of source.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct PathRates {
    /// All sessions of this kind together.
    pub global: RateSpec,
    /// Each client's sessions of this kind (a client's own limit, set with
    /// `ferry-relay clients limit`, replaces it).
    pub per_client: RateSpec,
}

/// `[rates.lan]` and `[rates.internet]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RatesConfig {
    /// Sessions from the LAN networks.
    pub lan: PathRates,
    /// Sessions from anywhere else.
    pub internet: PathRates,
}

/// The configured schedules, resolved.
#[derive(Debug, Clone)]
pub struct RateSchedules {
    /// Global, LAN.
    pub lan_global: Schedule,
    /// Per client, LAN.
    pub lan_client: Schedule,
    /// Global, internet.
    pub internet_global: Schedule,
    /// Per client, internet.
    pub internet_client: Schedule,
}

impl RatesConfig {
    /// Resolves every schedule.
    ///
    /// # Errors
    /// A message naming the key and entry.
    pub fn resolve(&self) -> Result<RateSchedules> {
        let s = |key: &str, spec: &RateSpec| {
            spec.schedule()
                .map_err(|e| anyhow::anyhow!("rates.{key}: {e}"))
        };
        Ok(RateSchedules {
            lan_global: s("lan.global", &self.lan.global)?,
            lan_client: s("lan.per-client", &self.lan.per_client)?,
            internet_global: s("internet.global", &self.internet.global)?,
            internet_client: s("internet.per-client", &self.internet.per_client)?,
        })
    }
}

/// Connection limits as written in the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LimitsConfig {
    /// Time allowed from accept to an established session or finished pairing.
    pub handshake_timeout: String,
    /// A session with no frame for this long is closed.
    pub idle_timeout: String,
    /// Concurrent connections, all sources together.
    pub max_connections: usize,
    /// Concurrent connections from one source address.
    pub max_connections_per_source: usize,
    /// Concurrent sessions of one client (each holds memory and a worker
    /// thread on the relay); one more is told so and closed.
    pub max_sessions_per_client: usize,
    /// Handshakes per second accepted from one source address (burst: twice
    /// that); 0 turns the limit off (benchmarks only).
    pub handshakes_per_second_per_source: u32,
    /// Handshakes per second, all sources together (burst: twice that),
    /// beyond which the relay is *under load*: a first message without the
    /// MAC made with the relay's key (endpoints older than 1.4) is then
    /// dropped before any key agreement; 0 never counts as under load.
    pub handshakes_per_second: u32,
    /// How many leading bits of an IPv4 address make one source for the
    /// per-source limits (32: each address).
    pub ipv4_source_prefix: u8,
    /// The same for IPv6 (64: one subscriber's network, which a single
    /// customer holds whole).
    pub ipv6_source_prefix: u8,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            handshake_timeout: "10s".into(),
            idle_timeout: "5m".into(),
            max_connections: 1024,
            max_connections_per_source: 64,
            max_sessions_per_client: 8,
            handshakes_per_second_per_source: 20,
            handshakes_per_second: 500,
            ipv4_source_prefix: 32,
            ipv6_source_prefix: 64,
        }
    }
}

/// Limits resolved for the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// See [`LimitsConfig::handshake_timeout`].
    pub handshake_timeout: Duration,
    /// See [`LimitsConfig::idle_timeout`].
    pub idle_timeout: Duration,
    /// See [`LimitsConfig::max_connections`].
    pub max_connections: usize,
    /// See [`LimitsConfig::max_connections_per_source`].
    pub max_connections_per_source: usize,
    /// See [`LimitsConfig::max_sessions_per_client`].
    pub max_sessions_per_client: usize,
    /// See [`LimitsConfig::handshakes_per_second_per_source`].
    pub handshakes_per_second_per_source: u32,
    /// See [`LimitsConfig::handshakes_per_second`].
    pub handshakes_per_second: u32,
    /// See [`LimitsConfig::ipv4_source_prefix`] and
    /// [`LimitsConfig::ipv6_source_prefix`].
    pub source_prefixes: SourcePrefixes,
}

/// How many leading bits of an address make one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePrefixes {
    /// For IPv4, 8 to 32.
    pub v4: u8,
    /// For IPv6, 16 to 128.
    pub v6: u8,
}

impl Default for SourcePrefixes {
    fn default() -> Self {
        SourcePrefixes { v4: 32, v6: 64 }
    }
}

impl LimitsConfig {
    /// Resolves the human strings.
    ///
    /// # Errors
    /// A message naming the bad key.
    pub fn resolve(&self) -> Result<Limits> {
        let duration = |key: &str, text: &str| {
            parse_duration(text).map_err(|e| anyhow::anyhow!("limits.{key}: {e}"))
        };
        let prefix = |key: &str, bits: u8, min: u8, max: u8| {
            if (min..=max).contains(&bits) {
                Ok(bits)
            } else {
                Err(anyhow::anyhow!(
                    "limits.{key}: {bits} bits; it must be from {min} to {max}"
                ))
            }
        };
        Ok(Limits {
            handshake_timeout: duration("handshake-timeout", &self.handshake_timeout)?,
            idle_timeout: duration("idle-timeout", &self.idle_timeout)?,
            max_connections: self.max_connections.max(1),
            max_connections_per_source: self.max_connections_per_source.max(1),
            max_sessions_per_client: self.max_sessions_per_client.max(1),
            handshakes_per_second_per_source: self.handshakes_per_second_per_source,
            handshakes_per_second: self.handshakes_per_second,
            source_prefixes: SourcePrefixes {
                v4: prefix("ipv4-source-prefix", self.ipv4_source_prefix, 8, 32)?,
                v6: prefix("ipv6-source-prefix", self.ipv6_source_prefix, 16, 128)?,
            },
        })
    }
}

impl RelayConfig {
    /// Reads and checks `path`.
    ///
    /// # Errors
    /// When the file is missing or invalid, naming the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read {} (run `ferry-relay init` first)",
                path.display()
            )
        })?;
        let config: RelayConfig =
            toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
        config.limits.resolve()?;
        config.rates.resolve()?;
        config.gc.resolve()?;
        config.verify.resolve()?;
        config.quota.resolve()?;
        Ok(config)
    }

    /// The TOML text of this configuration.
    ///
    /// # Errors
    /// Never in practice.
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_unknown_keys_fail() {
        let text = include_str!("../../deploy/relay.example.toml");
        let config: RelayConfig = toml::from_str(text).unwrap();
        config.limits.resolve().unwrap();
        let rates = config.rates.resolve().unwrap();
        assert_eq!(rates.internet_global.rate_at(0, 9 * 60), Some(2 << 20));
        assert_eq!(rates.internet_global.rate_at(5, 9 * 60), Some(8 << 20));
        let bad = format!("{text}\nlisten-typo = 1\n");
        assert!(toml::from_str::<RelayConfig>(&bad).is_err());
    }
}
