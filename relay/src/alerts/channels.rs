//! Where alerts go besides the log: `[alerts] command` (once per alert,
//! what it is about in its environment only), `[alerts.smtp]` and
//! `[alerts.webhook]` (once per client per check, its alerts together).
//! Each channel is checked when the relay starts, and what cannot work is
//! said loudly then; `ferry-relay alerts test` sends through each and
//! says which worked.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::smtp::Mailer;
use super::webhook::Hook;
use super::{Alert, COMMAND_TIMEOUT};
use crate::config::Alerts;

/// The channels `[alerts]` configures, ready.
#[derive(Default)]
pub struct Channels {
    command: Option<Vec<String>>,
    smtp: Option<Mailer>,
    webhook: Option<Hook>,
    /// The relay's fingerprint, to say whose alerts they are.
    relay: String,
}

/// What one channel did with one delivery.
#[derive(Debug)]
pub struct Delivery {
    /// `command`, `smtp` or `webhook`.
    pub channel: &'static str,
    /// What it did, or why it failed.
    pub outcome: Result<String, String>,
}

impl Channels {
    /// The channels of `alerts`, for relay `relay`; a channel that cannot
    /// be set up is left out, and why is in the second value.
    pub fn new(alerts: &Alerts, relay: &str) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let smtp = alerts.smtp.as_ref().and_then(|c| {
            Mailer::new(c)
                .map_err(|e| problems.push(format!("smtp: {e:#}")))
                .ok()
        });
        let webhook = alerts.webhook.as_ref().and_then(|c| {
            Hook::new(c)
                .map_err(|e| problems.push(format!("webhook: {e:#}")))
                .ok()
        });
        if let Some(command) = &alerts.command {
            if let Err(e) = check_command(command) {
                problems.push(format!("command: {e:#}"));
            }
        }
        let channels = Channels {
            command: alerts.command.clone(),
            smtp,
            webhook,
            relay: relay.to_string(),
        };
        (channels, problems)
    }

    /// Whether any channel is set up.
    pub fn any(&self) -> bool {
        self.command.is_some() || self.smtp.is_some() || self.webhook.is_some()
    }

    /// What cannot work now: the SMTP server's greeting is asked for.
    pub async fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(mailer) = &self.smtp {
            if let Err(e) = mailer.check().await {
                problems.push(format!("smtp: {e:#}"));
            }
        }
        problems
    }

    /// Sends `alerts` (of one check) through every channel: the command
    /// once per alert, mail and webhook once per client.
    pub async fn deliver(&self, alerts: &[Alert]) -> Vec<Delivery> {
        let mut done = Vec::new();
        if let Some(command) = &self.command {
            for alert in alerts {
                let outcome = run_command(command, alert).await;
                done.push(Delivery {
                    channel: "command",
                    outcome: outcome.map_err(|e| format!("{e:#}")),
                });
            }
        }
        if self.smtp.is_none() && self.webhook.is_none() {
            return done;
        }
        let mut by_client: BTreeMap<&str, Vec<Alert>> = BTreeMap::new();
        for alert in alerts {
            by_client
                .entry(&alert.client)
                .or_default()
                .push(alert.clone());
        }
        for (client, alerts) in by_client {
            let (title, text) = message(client, &alerts);
            if let Some(mailer) = &self.smtp {
                let outcome = mailer.send(&title, &text).await;
                done.push(Delivery {
                    channel: "smtp",
                    outcome: outcome.map_err(|e| format!("{e:#}")),
                });
            }
            if let Some(hook) = &self.webhook {
                let outcome = hook.send(&self.relay, &title, &text, &alerts).await;
                done.push(Delivery {
                    channel: "webhook",
                    outcome: outcome.map_err(|e| format!("{e:#}")),
                });
            }
        }
        done
    }
}

/// The title and text of one client's alerts of one check.
pub fn message(client: &str, alerts: &[Alert]) -> (String, String) {
    let mut reasons: Vec<&str> = alerts.iter().map(|a| a.reason).collect();
    reasons.dedup();
    let title = format!("ferry: {client}: {}", reasons.join(", "));
    let mut text = String::new();
    for alert in alerts {
        text.push_str(&format!("{}: {}\n", alert.reason, alert.message));
    }
    if let Some(last) = alerts.first().map(|a| a.last_success.as_str()) {
        text.push_str(&format!("last backup: {last}\n"));
    }
    (title, text)
}

/// Whether the command's program can be run: an absolute path that is an
/// executable file, or a name found on `PATH`. (A shell text is checked by
/// its first word when that is a path.)
fn check_command(command: &[String]) -> Result<()> {
    let program = match command {
        [sh, flag, text] if sh == "/bin/sh" && flag == "-c" => {
            match text.split_whitespace().next() {
                Some(first) if first.starts_with('/') => first.to_string(),
                _ => return Ok(()),
            }
        }
        [program, ..] => program.clone(),
        [] => bail!("no program"),
    };
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        if !executable(Path::new(&program)) {
            bail!("{program} is not an executable file (is the path right? the package installs its scripts in /usr/lib/ferry/)");
        }
        return Ok(());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| executable(&dir.join(&program))) {
        Ok(())
    } else {
        bail!("{program} is not on PATH")
    }
}

/// Runs the alert command for `alert`: what it did, or why it failed.
async fn run_command(command: &[String], alert: &Alert) -> Result<String> {
    let Some((program, args)) = command.split_first() else {
        bail!("no program");
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("FERRY_CLIENT", &alert.client)
        .env("FERRY_SET", &alert.set)
        .env("FERRY_LAST_SUCCESS", &alert.last_success)
        .env("FERRY_REASON", alert.reason)
        .env("FERRY_MESSAGE", &alert.message)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(COMMAND_TIMEOUT, child)
        .await
        .with_context(|| {
            format!(
                "alert command for {} ({}) did not finish within {COMMAND_TIMEOUT:?}; killed",
                alert.client, alert.reason
            )
        })?
        .with_context(|| format!("alert command {program:?} could not start"))?;
    if !output.status.success() {
        bail!(
            "alert command for {} ({}) failed ({}): {}",
            alert.client,
            alert.reason,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(format!(
        "alert command ran for {} ({})",
        alert.client, alert.reason
    ))
}

/// `ferry-relay alerts test`: a test alert through every channel of
/// `alerts`; what each did, and whether all worked.
///
/// # Errors
/// No channel configured.
pub async fn test(alerts: &Alerts, relay: &str) -> Result<(Vec<Delivery>, Vec<String>)> {
    let (channels, problems) = Channels::new(alerts, relay);
    if !channels.any() && problems.is_empty() {
        bail!("no alert channel is configured: set [alerts] command, [alerts.smtp] or [alerts.webhook] in relay.toml");
    }
    let alert = Alert {
        client: "(test)".into(),
        set: String::new(),
        last_success: "never".into(),
        reason: "test",
        message: format!("a test of relay {relay}'s alert channels (ferry-relay alerts test)"),
    };
    Ok((channels.deliver(&[alert]).await, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_cannot_run_is_named() {
        let line = |argv: &[&str]| {
            let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
            check_command(&argv).map_err(|e| e.to_string())
        };
        assert!(line(&["/bin/sh", "-c", "echo hi"]).is_ok());
        assert!(line(&["true"]).is_ok());
        let wrong = line(&["/usr/local/lib/ferry/alert-mail.sh", "a@b"]).unwrap_err();
        assert!(wrong.contains("is not an executable file"), "{wrong}");
        assert!(line(&["/bin/sh", "-c", "/nowhere/mail.sh x"]).is_err());
        assert!(line(&["no-such-program-here"])
            .unwrap_err()
            .contains("not on PATH"));
    }

    #[test]
    fn one_message_per_client_names_every_reason() {
        let alert = |reason, message: &str| Alert {
            client: "anna".into(),
            set: "home".into(),
            last_success: "2026-12-01T00:00:00Z".into(),
            reason,
            message: message.into(),
        };
        let (title, text) = message(
            "anna",
            &[
                alert("stale", "no backup for 3d"),
                alert("quota", "9 of 10 GiB"),
            ],
        );
        assert_eq!(title, "ferry: anna: stale, quota");
        assert_eq!(
            text,
            "stale: no backup for 3d\nquota: 9 of 10 GiB\nlast backup: 2026-12-01T00:00:00Z\n"
        );
    }
}
