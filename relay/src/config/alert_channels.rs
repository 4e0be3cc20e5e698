//! `[alerts.smtp]` and `[alerts.webhook]`: the channels the relay sends
//! alerts through itself, beside `[alerts] command`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on this host or a trusted network only).
    None,
    /// Submission on 587, upgraded with STARTTLS (required, not tried).
    #[default]
    Starttls,
    /// TLS from the first byte (465).
    Tls,
}

/// `[alerts.smtp]`: mail through a submission server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SmtpConfig {
    /// The server's host name (checked against its certificate).
    pub host: String,
    /// Its port (default: 587 for STARTTLS, 465 for TLS, 25 for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// How the connection is protected.
    #[serde(default)]
    pub tls: SmtpTls,
    /// The sender, `ferry@example.com` or `Ferry <ferry@example.com>`.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// The user to log in as (none: no login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A file (mode 0600) holding the password; relative: in the data
    /// directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

impl SmtpConfig {
    /// The port to use.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        })
    }
}

/// The body a webhook is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookFormat {
    /// `{"relay", "client", "alerts": [{"reason", "set", "last_success", "message"}], "text"}`.
    #[default]
    Json,
    /// Slack's (and Mattermost's, Rocket.Chat's) incoming webhook: `{"text"}`.
    Slack,
    /// Gotify's `/message`: `{"title", "message", "priority"}`.
    Gotify,
    /// ntfy's topic URL: the text as the body, the title in `Title`.
    Ntfy,
}

/// `[alerts.webhook]`: an HTTP POST per client per check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookConfig {
    /// Where to POST (`https://ntfy.sh/my-topic`, a Slack hook URL, …).
    pub url: String,
    /// The body's shape.
    #[serde(default)]
    pub format: WebhookFormat,
    /// A file (mode 0600) whose first line is sent as `Authorization:
    /// Bearer …` (ntfy's access tokens); relative: in the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}
