//! Alerts (`[alerts]`): every `check-interval` the relay reads its
//! [`Status`] and tells the operator, once, when something goes wrong and
//! once when it recovers: a set gone stale (`stale` / `recovered`), a
//! client past `quota.warn-percent` of its quota (`quota` / `quota-ok`),
//! damage found in a client's data (`damage` / `damage-healed`), failed
//! backups (`backup-failed`, one per client per check however many failed),
//! and suspicious backups (`suspicious`, once per snapshot: see
//! `crate::suspicion`).
//! Each alert is a warning in the log, and goes through the channels
//! configured (`channels`): with `command` set it runs that command, with
//! what it is about only in its environment (`FERRY_CLIENT`, `FERRY_SET`,
//! `FERRY_LAST_SUCCESS`, `FERRY_REASON`, `FERRY_MESSAGE`), so no name a
//! client chose is ever parsed by a shell; `[alerts.smtp]` mails and
//! `[alerts.webhook]` posts each client's alerts of a check together.

pub mod channels;
pub mod smtp;
pub mod webhook;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::status::Status;
use crate::status::StatusSources;
use crate::telemetry::Event;
use ferry_protocol::units::format_age;
use tokio_util::sync::CancellationToken;

/// A command that has not finished after this long is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// One thing to tell the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The client's name.
    pub client: String,
    /// The set's name (empty when the alert is about the whole client).
    pub set: String,
    /// When the set (or the client's newest set) last backed up, RFC 3339,
    /// or `never`.
    pub last_success: String,
    /// `stale`, `recovered`, `quota`, `quota-ok`, `damage`,
    /// `damage-healed`, `backup-failed` or `suspicious`.
    pub reason: &'static str,
    /// One line for people.
    pub message: String,
}

/// A condition that holds for a while: which kind, which client, which set.
type Condition = (String, String, String);

/// The conditions that held at the last check. Kept in the catalog's
/// settings ([`HELD_KEY`]), so a restarted relay does not say again what
/// it said before.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conditions {
    held: BTreeSet<Condition>,
}

/// The catalog setting that holds the [`Conditions`] as JSON.
pub const HELD_KEY: &str = "alerts_held";

impl Conditions {
    /// What the catalog holds (nothing when unreadable: alerts are said again).
    fn load(text: Option<String>) -> Self {
        text.and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// The alerts for `status`: each condition that began or ended since
    /// the last call. Clients no longer paired are forgotten silently.
    pub fn update(&mut self, status: &Status) -> Vec<Alert> {
        let mut now = BTreeSet::new();
        let mut alerts = Vec::new();
        for client in &status.clients {
            let newest = client.last_success();
            // Whether `kind` about `set` of this client began (`Some(true)`)
            // or ended (`Some(false)`) since the last check.
            let mut edge = |kind: &str, set: &str, holds: bool| {
                let condition = (kind.to_string(), client.name.clone(), set.to_string());
                let was = self.held.contains(&condition);
                if holds {
                    now.insert(condition);
                }
                (was != holds).then_some(holds)
            };
            let alert = |set: &str, last: String, reason, message| Alert {
                client: client.name.clone(),
                set: set.to_string(),
                last_success: last,
                reason,
                message,
            };
            for set in &client.sets {
                let last = set
                    .last_success_at
                    .clone()
                    .unwrap_or_else(|| "never".into());
                match edge("stale", &set.name, set.stale) {
                    Some(true) => {
                        let message = match set.age_s {
                            Some(s) => format!(
                                "no backup of {}/{} for {} (stale after {})",
                                client.name,
                                set.name,
                                format_age(s),
                                format_age(set.stale_after_s)
                            ),
                            None => format!("{}/{} has no snapshot yet", client.name, set.name),
                        };
                        alerts.push(alert(&set.name, last, "stale", message));
                    }
                    Some(false) => {
                        let message =
                            format!("{}/{} backed up again at {last}", client.name, set.name);
                        alerts.push(alert(&set.name, last, "recovered", message));
                    }
                    None => {}
                }
            }
            // The client itself: stale while it has no set at all, and
            // recovered with its first snapshot.
            match edge("stale", "", client.sets.is_empty() && client.stale) {
                Some(true) => {
                    let message = format!("{} has not backed up since it was paired", client.name);
                    alerts.push(alert("", newest.clone(), "stale", message));
                }
                Some(false) => {
                    let message = format!("{} backed up at {newest}", client.name);
                    alerts.push(alert("", newest.clone(), "recovered", message));
                }
                None => {}
            }
            if let Some(holds) = edge("quota", "", client.quota_warning) {
                let message = format!(
                    "{} stores {}",
                    client.name,
                    ferry_protocol::units::format_usage(client.stored_bytes, client.quota)
                );
                let reason = if holds { "quota" } else { "quota-ok" };
                alerts.push(alert("", newest.clone(), reason, message));
            }
            if let Some(holds) = edge("damage", "", client.damage_open > 0) {
                let (reason, message) = if holds {
                    (
                        "damage",
                        format!(
                            "{} damaged blob(s) of {} (run `ferry-relay verify`; the client's next backup sends them again)",
                            client.damage_open, client.name
                        ),
                    )
                } else {
                    (
                        "damage-healed",
                        format!("every damaged blob of {} was sent again", client.name),
                    )
                };
                alerts.push(alert("", newest.clone(), reason, message));
            }
        }
        self.held = now;
        alerts
    }
}

/// Checks every `alerts.check_interval` until the relay shuts down.
pub async fn watch(sources: Arc<StatusSources>, shutdown: CancellationToken) {
    let alerts = &sources.alerts;
    let mut conditions = match sources.repo.db(|c| c.setting(HELD_KEY)).await {
        Ok(text) => Conditions::load(text),
        Err(e) => {
            error!("alerts: cannot read what was said before: {e:#}");
            Conditions::default()
        }
    };
    let (channels, mut problems) = channels::Channels::new(alerts, &sources.fingerprint);
    problems.extend(channels.check().await);
    for problem in &problems {
        error!("alerts: this channel cannot work: {problem}");
    }
    info!(
        "alerts: checking every {:?}; {} condition(s) held from before{}",
        alerts.check_interval,
        conditions.held.len(),
        if channels.any() {
            ""
        } else {
            "; no alert channel set (alerts go to this log only)"
        }
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(alerts.check_interval) => {}
        }
        let status = match sources.read().await {
            Ok(status) => status,
            Err(e) => {
                error!("alerts: cannot read the relay's status: {e:#}");
                continue;
            }
        };
        let before = conditions.clone();
        let mut fired = conditions.update(&status);
        fired.extend(failed_backups(
            sources.telemetry.take_failed_backups(),
            &status,
        ));
        let suspicious = match sources.repo.db(|c| c.suspicious_backups()).await {
            Ok(found) => found,
            Err(e) => {
                error!("alerts: cannot read suspicious backups: {e:#}");
                Vec::new()
            }
        };
        fired.extend(suspicious.iter().map(|s| suspicious_alert(s, &status)));
        for alert in &fired {
            warn!(
                "alert {}: {} (client {:?}, set {:?})",
                alert.reason, alert.message, alert.client, alert.set
            );
        }
        for delivery in channels.deliver(&fired).await {
            match delivery.outcome {
                Ok(done) => info!("alerts: {}: {done}", delivery.channel),
                Err(e) => error!("alerts: {}: {e}", delivery.channel),
            }
        }
        // Recorded after the commands ran: a relay killed in between says
        // it again rather than never.
        for said in suspicious {
            if let Err(e) = sources
                .repo
                .db(move |c| c.said_suspicious(said.snapshot))
                .await
            {
                error!("alerts: cannot record what was said: {e:#}");
            }
        }
        if conditions != before {
            let text = serde_json::to_string(&conditions).unwrap_or_default();
            if let Err(e) = sources
                .repo
                .db(move |c| c.set_setting(HELD_KEY, Some(&text)))
                .await
            {
                error!("alerts: cannot record what was said: {e:#}");
            }
        }
    }
}

/// The `suspicious` alert about one backup.
fn suspicious_alert(backup: &crate::catalog::SuspiciousBackup, status: &Status) -> Alert {
    Alert {
        last_success: status
            .clients
            .iter()
            .find(|c| c.name == backup.client)
            .map_or_else(|| "never".into(), |c| c.last_success()),
        client: backup.client.clone(),
        set: backup.set.clone(),
        reason: "suspicious",
        message: backup.message.clone(),
    }
}

/// One `backup-failed` alert per client for the failures since the last
/// check, however many there were: a stolen laptop that starts and drops
/// backups in a loop must not flood the operator's mailbox.
fn failed_backups(failures: Vec<(String, Event)>, status: &Status) -> Vec<Alert> {
    let mut by_client: std::collections::BTreeMap<String, (usize, Event)> = Default::default();
    for (client, event) in failures {
        let entry = by_client.entry(client).or_insert((0, event.clone()));
        entry.0 += 1;
        entry.1 = event;
    }
    by_client
        .into_iter()
        .map(|(client, (count, last))| Alert {
            last_success: status
                .clients
                .iter()
                .find(|c| c.name == client)
                .map_or_else(|| "never".into(), |c| c.last_success()),
            message: if count == 1 {
                last.message
            } else {
                format!(
                    "{count} backups failed since the last check; the last: {}",
                    last.message
                )
            },
            client,
            set: String::new(),
            reason: "backup-failed",
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{ClientStatus, SetStatus};

    fn status(stale: bool, quota_warning: bool, damage: u64) -> Status {
        Status {
            generated_at: String::new(),
            generated_ms: 0,
            fingerprint: String::new(),
            version: "",
            sessions_open: 0,
            store_bytes: 0,
            damage_open: damage,
            object_store: None,
            relays: Vec::new(),
            gc: None,
            verify: None,
            clients: vec![ClientStatus {
                name: "laptop".into(),
                hostname: String::new(),
                fingerprint: String::new(),
                mode: "open",
                last_seen_at: None,
                last_address: None,
                stored_bytes: 95,
                quota: Some(100),
                quota_warning,
                damage_open: damage,
                sessions: 0,
                rate: 0,
                limit: None,
                received_bytes: 0,
                sent_bytes: 0,
                last_error: None,
                stale,
                sets: vec![SetStatus {
                    name: "home".into(),
                    snapshots: 1,
                    last_success_at: Some("2026-12-01T00:00:00Z".into()),
                    last_success_ms: Some(0),
                    age_s: Some(5),
                    stale_after_s: 4,
                    stale,
                    backing_up_since: None,
                    backing_up_since_ms: None,
                    backing_up_bytes: 0,
                }],
            }],
        }
    }

    #[test]
    fn each_condition_alerts_once_when_it_begins_and_once_when_it_ends() {
        let mut conditions = Conditions::default();
        assert!(conditions.update(&status(false, false, 0)).is_empty());
        let began = conditions.update(&status(true, true, 2));
        let reasons: Vec<_> = began.iter().map(|a| a.reason).collect();
        assert_eq!(reasons, ["stale", "quota", "damage"]);
        assert_eq!(began[0].set, "home");
        assert_eq!(began[0].last_success, "2026-12-01T00:00:00Z");
        assert!(
            conditions.update(&status(true, true, 2)).is_empty(),
            "still the same: nothing new"
        );
        let ended: Vec<_> = conditions
            .update(&status(false, false, 0))
            .iter()
            .map(|a| a.reason)
            .collect();
        assert_eq!(ended, ["recovered", "quota-ok", "damage-healed"]);
        let mut fresh = status(false, false, 0);
        fresh.clients[0].sets.clear();
        fresh.clients[0].stale = true;
        let never: Vec<_> = conditions.update(&fresh).iter().map(|a| a.reason).collect();
        assert_eq!(never, ["stale"], "paired long ago, no set yet");
        let first: Vec<_> = conditions
            .update(&status(false, false, 0))
            .iter()
            .map(|a| (a.reason, a.set.clone()))
            .collect();
        assert_eq!(first, [("recovered", String::new())], "its first snapshot");
        let saved = serde_json::to_string(&conditions).unwrap();
        let mut restarted = Conditions::load(Some(saved));
        assert!(
            restarted.update(&status(false, false, 0)).is_empty(),
            "a restarted relay does not say again what it said"
        );
        assert_eq!(Conditions::load(Some("junk".into())), Conditions::default());
        let mut gone = status(true, true, 1);
        gone.clients.clear();
        assert!(
            conditions.update(&gone).is_empty(),
            "a removed client is forgotten"
        );
    }

    #[test]
    fn failed_backups_are_one_alert_per_client_per_check() {
        let event = |m: &str| Event {
            at_ms: 0,
            message: m.into(),
        };
        let failures = vec![
            ("laptop".to_string(), event("quota")),
            ("nas".to_string(), event("disk full")),
            ("laptop".to_string(), event("idle timeout")),
            ("laptop".to_string(), event("the endpoint disconnected")),
        ];
        let alerts = failed_backups(failures, &status(false, false, 0));
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].client, "laptop");
        assert_eq!(
            alerts[0].message,
            "3 backups failed since the last check; the last: the endpoint disconnected"
        );
        assert_eq!(alerts[0].last_success, "2026-12-01T00:00:00Z");
        assert_eq!(
            (alerts[1].client.as_str(), alerts[1].message.as_str()),
            ("nas", "disk full")
        );
        assert_eq!(
            alerts[1].last_success, "never",
            "a client the status does not list"
        );
    }
}
