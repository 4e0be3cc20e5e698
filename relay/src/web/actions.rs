//! What an administrator can do from the page, each behind a
//! confirmation: protect, unprotect or forget a snapshot, set a client's
//! quota, revoke a client, make a pairing code, ask for a collection or a
//! verification. `GET /confirm?what=…` shows what will happen; its form
//! posts to `/act` with the login's CSRF token, and only then is it done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use maud::{html, Markup};

use super::views::forms::Confirmation;
use super::views::overview::client_href;
use crate::catalog::{CatalogAt, SnapshotId};
use crate::data_dir::DataDir;
use crate::repo::Repo;

/// How long a pairing code made on the page stays valid.
pub const PAIRING_TTL: Duration = Duration::from_secs(600);

/// What the actions need of the running relay.
pub struct Services {
    /// Its data directory (configuration, pairing listener).
    pub data: DataDir,
    /// The catalog and the store.
    pub repo: Arc<Repo>,
    /// `[gc] grace`.
    pub gc_grace: Duration,
    /// Where the catalog is, and `[verify]`'s options, for a verification.
    pub verify: (CatalogAt, crate::verify::Options),
    /// Whether a verification asked from the page runs now.
    verifying: Arc<AtomicBool>,
}

impl Services {
    /// Services over these parts.
    pub fn new(
        data: DataDir,
        repo: Arc<Repo>,
        gc_grace: Duration,
        verify: (CatalogAt, crate::verify::Options),
    ) -> Self {
        Services {
            data,
            repo,
            gc_grace,
            verify,
            verifying: Arc::default(),
        }
    }
}

/// One action, as its form names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Keep a snapshot from retention and `forget`.
    Protect(String, u64),
    /// Lift that.
    Unprotect(String, u64),
    /// Forget a snapshot (its data goes at the next collection).
    Forget(String, u64),
    /// Set a client's quota (`None`: back to the relay's default).
    Quota(String, Option<String>),
    /// Revoke a client's key.
    Revoke(String),
    /// A pairing code for a new client of this name.
    Pair(String),
    /// A collection now.
    Gc,
    /// A verification now.
    Verify,
}

impl Action {
    /// The action `fields` name; a missing or malformed field is an error
    /// that says which.
    ///
    /// # Errors
    /// An unknown action, a missing or malformed field.
    pub fn parse(fields: &HashMap<String, String>) -> Result<Self> {
        let field = |name: &str| {
            fields
                .get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .with_context(|| format!("the form has no {name}"))
        };
        let snapshot = || -> Result<u64> {
            field("snapshot")?
                .parse()
                .context("the snapshot is not a number")
        };
        Ok(match field("what")?.as_str() {
            "protect" => Action::Protect(field("client")?, snapshot()?),
            "unprotect" => Action::Unprotect(field("client")?, snapshot()?),
            "forget" => Action::Forget(field("client")?, snapshot()?),
            "quota" => Action::Quota(field("client")?, field("quota").ok()),
            "revoke" => Action::Revoke(field("client")?),
            "pair" => Action::Pair(field("name")?),
            "gc" => Action::Gc,
            "verify" => Action::Verify,
            other => bail!("there is no action {other:?}"),
        })
    }

    /// The fields that name it again in the confirmation's form.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let (what, client, snapshot) = match self {
            Action::Protect(c, s) => ("protect", Some(c), Some(s)),
            Action::Unprotect(c, s) => ("unprotect", Some(c), Some(s)),
            Action::Forget(c, s) => ("forget", Some(c), Some(s)),
            Action::Quota(c, _) => ("quota", Some(c), None),
            Action::Revoke(c) => ("revoke", Some(c), None),
            Action::Pair(name) => return vec![("what", "pair".into()), ("name", name.clone())],
            Action::Gc => ("gc", None, None),
            Action::Verify => ("verify", None, None),
        };
        let mut fields = vec![("what", what.to_string())];
        fields.extend(client.map(|c| ("client", c.clone())));
        fields.extend(snapshot.map(|s| ("snapshot", s.to_string())));
        fields
    }

    /// The page the action is about (where "Cancel" and "Back" go).
    pub fn back(&self) -> String {
        match self {
            Action::Protect(c, _)
            | Action::Unprotect(c, _)
            | Action::Forget(c, _)
            | Action::Quota(c, _) => client_href(c),
            _ => "/".into(),
        }
    }

    /// What confirming it will do.
    pub fn confirmation<'a>(&self, csrf: &'a str) -> Confirmation<'a> {
        let (question, verb, danger) = match self {
            Action::Protect(c, s) => (format!("Protect snapshot {s} of {c}? Neither retention nor forgetting removes it until it is unprotected."), "Protect", false),
            Action::Unprotect(c, s) => (format!("Unprotect snapshot {s} of {c}? Retention decides its fate again."), "Unprotect", false),
            Action::Forget(c, s) => (format!("Forget snapshot {s} of {c}? Its data is freed by the next collection; this cannot be undone."), "Forget", true),
            Action::Quota(c, _) => (format!("Set the quota of {c}: a size (100GiB), \"unlimited\", or empty for the relay's default."), "Set quota", false),
            Action::Revoke(c) => (format!("Revoke {c}? Its sessions close and its key is refused from now on; its snapshots stay until retention or you forget them."), "Revoke", true),
            Action::Pair(n) => (format!("Make a pairing code for a new client named {n}? It is valid for {} minutes, on the LAN only.", PAIRING_TTL.as_secs() / 60), "Make code", false),
            Action::Gc => ("Collect garbage now? Data no snapshot needs is freed.".into(), "Collect", false),
            Action::Verify => ("Verify the store now? Every blob is read and checked, beside the sessions.".into(), "Verify", false),
        };
        Confirmation {
            question,
            verb,
            danger,
            fields: self.fields(),
            input: match self {
                Action::Quota(_, q) => Some(("quota", "Quota:", q.clone().unwrap_or_default())),
                _ => None,
            },
            back: self.back(),
            csrf,
        }
    }

    /// Does it: what to say, and more to show (a pairing code). Blocking.
    ///
    /// # Errors
    /// A snapshot or client that does not exist, a protected snapshot,
    /// a bad quota, catalog errors.
    pub fn perform(&self, services: &Services) -> Result<(String, Option<Markup>)> {
        // A connection of its own, as the command line's: the server's
        // watcher notices only what other connections commit (SQLite's
        // data_version), and a revocation must close live sessions at once.
        let mut cat = services.data.catalog()?;
        let said = match self {
            Action::Protect(c, s) | Action::Unprotect(c, s) => {
                let protect = matches!(self, Action::Protect(..));
                of_client(&cat, c, *s)?;
                cat.protect_snapshots(&[SnapshotId(*s)], protect)?;
                format!(
                    "{} snapshot {s} of {c}",
                    if protect { "Protected" } else { "Unprotected" }
                )
            }
            Action::Forget(c, s) => {
                of_client(&cat, c, *s)?;
                let (forgotten, _) = cat.forget_snapshots(&[SnapshotId(*s)])?;
                if forgotten.is_empty() {
                    bail!("snapshot {s} is protected: unprotect it first");
                }
                format!("Forgot snapshot {s} of {c}; its data is freed by the next collection")
            }
            Action::Quota(c, text) => {
                let quota = match text {
                    None => None,
                    Some(text) => {
                        Some(crate::config::parse_quota(text).map_err(anyhow::Error::msg)?)
                    }
                };
                if !cat.set_quota(c, quota)? {
                    bail!("no client named {c:?}");
                }
                format!(
                    "Quota of {c} set to {}",
                    match quota {
                        None => "the relay's default".to_string(),
                        Some(None) => "unlimited".to_string(),
                        Some(Some(n)) => ferry_protocol::units::format_size(n),
                    }
                )
            }
            Action::Revoke(c) => {
                if !cat.remove_client(c, crate::clock::now_ms())? {
                    bail!("no client named {c:?}");
                }
                format!("Revoked {c}: its sessions are closed and its key is refused")
            }
            Action::Pair(name) => {
                let issued = crate::admin::pair::issue(&services.data, name, PAIRING_TTL, false)?;
                let more = html! {
                    div.panel {
                        p { "Pairing code for " b { (name) } ":" }
                        p.code #code { (issued.code) }
                        p { "On the endpoint run:" }
                        @for line in &issued.commands { pre { (line) } }
                        p.muted { "Valid until " (ferry_protocol::units::format_rfc3339(issued.expires)) "; three wrong tries burn it." }
                    }
                };
                return Ok((format!("Pairing code made for {name}"), Some(more)));
            }
            Action::Gc => {
                crate::gc_service::ask(&mut cat, services.gc_grace)?;
                "Collection asked: its result shows on the overview when it is done".into()
            }
            Action::Verify => {
                start_verify(services)?;
                "Verification started: its result shows on the overview when it is done".into()
            }
        };
        tracing::info!("web: {said}");
        Ok((said, None))
    }
}

/// Checks that snapshot `id` is `client`'s (a form cannot touch another
/// client's snapshot under this one's name).
fn of_client(catalog: &crate::catalog::Catalog, client: &str, id: u64) -> Result<()> {
    let found = match catalog.client_by_name(client)? {
        Some(record) => catalog
            .list_snapshots(Some(record.id), None)?
            .iter()
            .any(|s| s.id.0 == id),
        None => false,
    };
    if !found {
        bail!("{client} has no snapshot {id}");
    }
    Ok(())
}

/// Runs a verification in the background, one at a time.
fn start_verify(services: &Services) -> Result<()> {
    if services.verifying.swap(true, Ordering::SeqCst) {
        bail!("a verification asked from this page is running already");
    }
    let (at, options) = services.verify.clone();
    let store = services.repo.blobs().store().reader();
    let running = Arc::clone(&services.verifying);
    std::thread::spawn(move || {
        match crate::verify::run(&at, store.as_ref(), &options) {
            Ok(report) => tracing::info!("verify (asked from the web page): {}", report.summary()),
            Err(e) => tracing::error!("verify (asked from the web page) failed: {e:#}"),
        }
        running.store(false, Ordering::SeqCst);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_confirmation_names_the_same_action_again() {
        for action in [
            Action::Protect("anna".into(), 3),
            Action::Forget("anna".into(), 4),
            Action::Quota("anna".into(), None),
            Action::Revoke("anna".into()),
            Action::Pair("new laptop".into()),
            Action::Gc,
            Action::Verify,
        ] {
            let fields: HashMap<String, String> = action
                .fields()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            assert_eq!(Action::parse(&fields).unwrap(), action);
        }
    }

    #[test]
    fn a_malformed_form_says_what_is_wrong() {
        let err = |pairs| Action::parse(&form(pairs)).unwrap_err().to_string();
        assert_eq!(
            err(&[("what", "explode")]),
            "there is no action \"explode\""
        );
        assert_eq!(
            err(&[("what", "forget"), ("client", "a")]),
            "the form has no snapshot"
        );
        assert_eq!(
            err(&[("what", "forget"), ("client", "a"), ("snapshot", "x")]),
            "the snapshot is not a number"
        );
    }
}
