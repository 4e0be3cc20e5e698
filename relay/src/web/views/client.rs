//! `GET /clients/NAME`: one client — its sets, its snapshots (time, size,
//! files, what keeps each, protected or not), its recent errors, its live
//! sessions, and what an administrator can do to it.

use ferry_protocol::units::{format_age, format_rate, format_size, format_usage};
use maud::{html, Markup};

use super::overview::{client_href, failing};
use super::{ago, page, seconds_between};
use crate::catalog::SnapshotRow;
use crate::status::ClientStatus;
use crate::telemetry::Event;
use crate::web::auth::Visitor;
use crate::web::percent;
use crate::web_tokens::Role;

/// The link that asks to confirm `what` (with its `fields`).
pub fn confirm_href(what: &str, fields: &[(&str, &str)]) -> String {
    let mut href = format!("/confirm?what={what}");
    for (key, value) in fields {
        href.push_str(&format!("&{key}={}", percent::encode(value.as_bytes())));
    }
    href
}

/// What the catalog holds of a client beyond its status: its snapshots,
/// oldest first, and its recent session errors, newest first.
pub struct History<'a> {
    /// The client's snapshots.
    pub snapshots: &'a [SnapshotRow],
    /// Its recent session errors.
    pub errors: &'a [Event],
}

/// The client page.
pub fn render(client: &ClientStatus, history: &History, now_ms: i64, visitor: &Visitor) -> Markup {
    let snapshots = history.snapshots;
    let admin = visitor.role == Some(Role::Admin);
    let name = client.name.as_str();
    let body = html! {
        p.muted { a href="/" { "Overview" } " › " (name) }
        h1 { (name) " " span.muted { "(" (client.hostname) ")" } }
        div.panel {
            p {
                b { "Mode: " } (client.mode)
                @if client.mode == "sealed" {
                    span.muted { " — its files are encrypted on its endpoint; only that endpoint (or the recovery key) can read them, not this relay." }
                }
            }
            p { b { "Key: " } code { (client.fingerprint) } }
            p {
                b { "Stored: " }
                span.warn[client.quota_warning] { (format_usage(client.stored_bytes, client.quota)) }
                @if client.damage_open > 0 { " · " span.bad { (client.damage_open) " damaged blob(s)" } }
            }
            p {
                b { "Now: " }
                @if client.sessions == 0 {
                    "no session open"
                    @if let Some(at) = &client.last_seen_at { span.muted { " (last seen " (at) ")" } }
                } @else {
                    (client.sessions) " session(s) open, moving " (format_rate(Some(client.rate)))
                    @if let Some(limit) = client.limit { " (limit " (format_rate(Some(limit))) ")" }
                    @for set in client.sets.iter().filter(|s| s.backing_up_since_ms.is_some()) {
                        br;
                        span.running {
                            "backing up set " (set.name) " for "
                            (format_age(seconds_between(set.backing_up_since_ms.unwrap_or(now_ms), now_ms)))
                        }
                        span.muted { " · " (format_size(set.backing_up_bytes)) " new stored so far" }
                    }
                }
            }
            p {
                b { "Last error: " }
                @match &client.last_error {
                    Some(e) => { span.bad[failing(client)] { (e.message) } span.muted { " (" (ago(seconds_between(e.at_ms, now_ms))) ")" } },
                    None => span.muted { "none" },
                }
            }
            @if admin {
                p.actions {
                    a href=(confirm_href("quota", &[("client", name)])) { "Set quota…" }
                    a.bad href=(confirm_href("revoke", &[("client", name)])) { "Revoke…" }
                }
            }
        }
        h2 { "Backup sets" }
        @if client.sets.is_empty() { p.muted { "No backup yet." } }
        table {
            thead { tr { th { "Set" } th.num { "Snapshots" } th { "Last backup" } th { "Stale after" } } }
            tbody {
                @for set in &client.sets {
                    tr.set.stale[set.stale] {
                        td { (set.name) }
                        td.num { (set.snapshots) }
                        td.bad[set.stale] {
                            @match (set.age_s, &set.last_success_at) {
                                (Some(age), Some(at)) => { (ago(age)) span.muted.t { " · " (at) } }
                                _ => "never",
                            }
                            @if set.stale { b { " — stale" } }
                            @if set.backing_up_since_ms.is_some() { span.running { " · running now" } }
                        }
                        td { (ferry_protocol::units::format_age(set.stale_after_s)) }
                    }
                }
            }
        }
        @if history.errors.len() > 1 {
            h2 { "Recent errors" }
            table #errors {
                thead { tr { th { "When" } th { "What" } } }
                tbody {
                    @for e in history.errors {
                        tr {
                            td { (ago(seconds_between(e.at_ms, now_ms))) }
                            td { (e.message) }
                        }
                    }
                }
            }
        }
        h2 { "Snapshots" }
        @if snapshots.is_empty() { p.muted { "None." } } @else {
            table #snapshots {
                thead { tr {
                    th.num { "Id" } th { "Set" } th { "Finished" } th.num { "Files" } th.num { "Size" }
                    th { "Kept by" } th { "" }
                } }
                tbody {
                    @for s in snapshots.iter().rev() { (snapshot_row(client, s, now_ms, admin)) }
                }
            }
        }
    };
    page(name, visitor, None, body)
}

fn snapshot_row(client: &ClientStatus, s: &SnapshotRow, now_ms: i64, admin: bool) -> Markup {
    let id = s.id.0.to_string();
    let fields = [("client", client.name.as_str()), ("snapshot", id.as_str())];
    html! {
        tr data-snapshot=(id) {
            td.num { (id) }
            td { (s.set) }
            td { (ago(seconds_between(s.finished_ms, now_ms))) br; span.muted.t { (s.finished_at) } }
            td.num { (s.files) }
            td.num { (format_size(s.bytes)) }
            td {
                @if s.protected { span.chip { "protected" } }
                @for why in &s.kept_by { span.chip.none { (why) } }
            }
            td.actions {
                @if client.mode == "open" {
                    a href=(format!("{}/snapshots/{id}/browse", client_href(&client.name))) { "Browse" }
                }
                @if admin {
                    @if s.protected {
                        a href=(confirm_href("unprotect", &fields)) { "Unprotect…" }
                    } @else {
                        a href=(confirm_href("protect", &fields)) { "Protect…" }
                        a.bad href=(confirm_href("forget", &fields)) { "Forget…" }
                    }
                }
            }
        }
    }
}
