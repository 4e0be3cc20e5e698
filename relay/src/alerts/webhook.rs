//! `[alerts.webhook]`: alerts posted to a URL, in the shape the receiver
//! reads: ferry's own JSON, Slack's `{"text"}` (Mattermost, Rocket.Chat),
//! Gotify's message, or ntfy's plain text with a `Title`.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use super::Alert;
use crate::config::{WebhookConfig, WebhookFormat};

/// How long one post may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A ready webhook.
pub struct Hook {
    client: reqwest::Client,
    url: reqwest::Url,
    format: WebhookFormat,
    token: Option<String>,
}

impl Hook {
    /// The hook `config` describes.
    ///
    /// # Errors
    /// A URL that is not http(s), a token file that cannot be read.
    pub fn new(config: &WebhookConfig) -> Result<Self> {
        // Never echoed whole: a hook's path or query is often its secret.
        let url = reqwest::Url::parse(&config.url).context("alerts.webhook.url is not a URL")?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "alerts.webhook.url is not http or https (it is {})",
            url.scheme()
        );
        let token = match &config.token_file {
            Some(file) => Some(crate::secret_file::first_line(
                file,
                "alerts.webhook.token-file",
            )?),
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("ferry-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the webhook's HTTP client")?;
        Ok(Hook {
            client,
            url,
            format: config.format,
            token,
        })
    }

    /// Where it posts, for what is said about it: scheme, host and port
    /// only (Slack's, Mattermost's and ntfy's URLs hold their secret in the
    /// path, others in the query).
    pub fn target(&self) -> String {
        let port = self.url.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{}://{}{port}/…",
            self.url.scheme(),
            self.url.host_str().unwrap_or("")
        )
    }

    /// Posts `alerts` (one client's, of one check) with `title` and `text`.
    ///
    /// # Errors
    /// The connection's error, or an answer that is not a success.
    pub async fn send(
        &self,
        relay: &str,
        title: &str,
        text: &str,
        alerts: &[Alert],
    ) -> Result<String> {
        let request = self.client.post(self.url.clone());
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let request = match self.format {
            WebhookFormat::Ntfy => request
                .header("Title", ascii_header(title))
                .header("Tags", "warning")
                .body(text.to_string()),
            shape => request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body(shape, relay, title, text, alerts).to_string()),
        };
        let answer = request
            .send()
            .await
            .map_err(reqwest::Error::without_url)
            .with_context(|| format!("cannot post to {}", self.target()))?;
        let status = answer.status();
        anyhow::ensure!(status.is_success(), "{} answered {status}", self.target());
        Ok(format!("posted to {} ({status})", self.target()))
    }
}

/// The JSON body of a post in `format`.
pub fn body(
    format: WebhookFormat,
    relay: &str,
    title: &str,
    text: &str,
    alerts: &[Alert],
) -> serde_json::Value {
    match format {
        WebhookFormat::Slack => json!({ "text": format!("*{title}*\n{text}") }),
        WebhookFormat::Gotify => json!({ "title": title, "message": text, "priority": 5 }),
        WebhookFormat::Json | WebhookFormat::Ntfy => json!({
            "relay": relay,
            "client": alerts.first().map(|a| a.client.as_str()).unwrap_or(""),
            "title": title,
            "text": text,
            "alerts": alerts.iter().map(|a| json!({
                "reason": a.reason,
                "set": a.set,
                "last_success": a.last_success,
                "message": a.message,
            })).collect::<Vec<_>>(),
        }),
    }
}

/// `text` as a header value: what is not printable ASCII becomes `?`.
fn ascii_header(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_said_of_a_hook_never_holds_its_path_or_query() {
        let config = |url: &str| WebhookConfig {
            url: url.into(),
            format: WebhookFormat::Slack,
            token_file: None,
        };
        let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = refused.local_addr().unwrap().port();
        drop(refused);
        let hook = Hook::new(&config(&format!(
            "http://127.0.0.1:{port}/services/T0/B0/path-secret?key=query-secret"
        )))
        .unwrap();
        assert_eq!(hook.target(), format!("http://127.0.0.1:{port}/…"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let failed = runtime
            .block_on(hook.send("relay", "title", "text", &[]))
            .unwrap_err();
        let said = format!("{failed:#}");
        assert!(
            said.starts_with("cannot post to http://127.0.0.1:"),
            "{said}"
        );
        assert!(!said.contains("secret"), "{said}");
        for bad in ["ftp://host/path-secret", "not a url path-secret"] {
            let said = format!("{:#}", Hook::new(&config(bad)).err().unwrap());
            assert!(!said.contains("secret"), "{said}");
        }
    }
}
