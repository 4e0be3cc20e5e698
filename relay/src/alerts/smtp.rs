//! `[alerts.smtp]`: alerts as mail, through a submission server (lettre
//! over rustls, the system's CA certificates; STARTTLS is required when
//! asked for, never merely tried).

use std::time::Duration;

use anyhow::{Context, Result};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpConfig, SmtpTls};

/// How long one delivery may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A ready mail channel.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// `host:port`, for what is said about it.
    pub server: String,
}

impl Mailer {
    /// The channel `config` describes (its password read from its file).
    ///
    /// # Errors
    /// An address that does not parse, no recipient, a password file that
    /// cannot be read or is readable by others, a bad host name.
    pub fn new(config: &SmtpConfig) -> Result<Self> {
        let from: Mailbox = config
            .from
            .parse()
            .with_context(|| format!("alerts.smtp.from {:?} is not a mail address", config.from))?;
        let to = config
            .to
            .iter()
            .map(|a| {
                a.parse::<Mailbox>()
                    .with_context(|| format!("alerts.smtp.to {a:?} is not a mail address"))
            })
            .collect::<Result<Vec<_>>>()?;
        anyhow::ensure!(!to.is_empty(), "alerts.smtp.to names no recipient");
        let port = config.port();
        let builder = match config.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                .with_context(|| format!("alerts.smtp.host {:?}", config.host))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
                .with_context(|| format!("alerts.smtp.host {:?}", config.host))?,
        };
        let mut builder = builder.port(port).timeout(Some(TIMEOUT));
        if let Some(user) = &config.user {
            let file = config
                .password_file
                .as_ref()
                .context("alerts.smtp.user is set but password-file is not")?;
            let password = crate::secret_file::first_line(file, "alerts.smtp.password-file")?;
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            to,
            server: format!("{}:{port}", config.host),
        })
    }

    /// Whether the server answers and greets (at start, so a wrong host or
    /// port is said at once, not at the first alert).
    ///
    /// # Errors
    /// The connection's error.
    pub async fn check(&self) -> Result<()> {
        let ok = self
            .transport
            .test_connection()
            .await
            .with_context(|| format!("cannot reach the SMTP server {}", self.server))?;
        anyhow::ensure!(ok, "the SMTP server {} did not greet", self.server);
        Ok(())
    }

    /// Sends `subject` and `text` to every recipient.
    ///
    /// # Errors
    /// The server's refusal or the connection's error.
    pub async fn send(&self, subject: &str, text: &str) -> Result<String> {
        let mut message = Message::builder().from(self.from.clone());
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(text.to_string())
            .context("cannot build the mail")?;
        self.transport
            .send(message)
            .await
            .with_context(|| format!("the SMTP server {} did not take the mail", self.server))?;
        let to: Vec<String> = self.to.iter().map(ToString::to_string).collect();
        Ok(format!(
            "mailed to {} through {}",
            to.join(", "),
            self.server
        ))
    }
}
