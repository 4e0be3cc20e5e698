//! `GET /`: the overview an operator reads in five seconds — how many
//! clients are healthy, stale, failing, over quota, damaged; the store's
//! use; then each client with its sets, where only a stale set is red.

use ferry_protocol::units::{format_rate, format_size, format_usage};
use maud::{html, Markup};

use super::{ago, bar, page, seconds_between};
use crate::catalog::runs::Run;
use crate::status::{ClientStatus, Status};
use crate::web::auth::Visitor;

/// Seconds between the overview's own reloads.
pub const REFRESH_SECONDS: u32 = 10;

/// The disk the packs are on: its size and free bytes.
#[derive(Debug, Clone, Copy)]
pub struct Disk {
    /// Bytes in all.
    pub total: u64,
    /// Bytes free.
    pub free: u64,
}

/// What the overview counts, one client at most once per heading.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// No stale set, no failure since its last backup, within quota, no damage.
    pub healthy: usize,
    /// A set past its limit without a snapshot.
    pub stale: usize,
    /// Its last session error is newer than its last snapshot.
    pub failing: usize,
    /// Past its quota's warning.
    pub over_quota: usize,
    /// Damaged blobs not yet sent again.
    pub damaged: usize,
}

/// Whether `client`'s last error came after its newest snapshot.
pub fn failing(client: &ClientStatus) -> bool {
    let newest = client
        .sets
        .iter()
        .filter_map(|s| s.last_success_ms)
        .max()
        .unwrap_or(i64::MIN);
    client.last_error.as_ref().is_some_and(|e| e.at_ms > newest)
}

/// The overview's counts.
pub fn counts(status: &Status) -> Counts {
    let mut counts = Counts::default();
    for c in &status.clients {
        let flags = [c.stale, failing(c), c.quota_warning, c.damage_open > 0];
        counts.stale += usize::from(flags[0]);
        counts.failing += usize::from(flags[1]);
        counts.over_quota += usize::from(flags[2]);
        counts.damaged += usize::from(flags[3]);
        counts.healthy += usize::from(!flags.iter().any(|f| *f));
    }
    counts
}

/// The overview page.
pub fn render(status: &Status, disk: Option<Disk>, visitor: &Visitor) -> Markup {
    let counts = counts(status);
    let card = |n: usize, what: &str, bad: bool| {
        html! {
            div.card.bad[bad && n > 0].good[!bad && n > 0] {
                div.n { (n) } div.what { (what) }
            }
        }
    };
    let body = html! {
        h1 { "Overview" }
        div.cards {
            (card(counts.healthy, "healthy", false))
            (card(counts.stale, "stale", true))
            (card(counts.failing, "failing", true))
            (card(counts.over_quota, "over quota", true))
            (card(counts.damaged, "damaged", true))
        }
        div.panel {
            b { "Store" } " "
            @match disk {
                Some(disk) => {
                    @let used = disk.total.saturating_sub(disk.free);
                    (bar(used, disk.total, &format!(
                        "{} of {} used on the relay's disk; backups hold {}, {} free",
                        format_size(used), format_size(disk.total),
                        format_size(status.store_bytes), format_size(disk.free)
                    ), disk.free < disk.total / 10))
                }
                None => span.muted { (format_size(status.store_bytes)) " in the object store" },
            }
            p.muted {
                (status.sessions_open) " session(s) open · "
                (run_text("collection", status.gc.as_ref(), status.generated_ms)) " · "
                (run_text("verification", status.verify.as_ref(), status.generated_ms))
                @if status.damage_open > 0 {
                    " · " span.bad { (status.damage_open) " damaged blob(s)" }
                }
            }
            @if status.relays.len() > 1 {
                @let up = status.relays.iter().filter(|r| r.up).count();
                p.muted {
                    "relays sharing this catalog: "
                    span class=(if up < status.relays.len() { "bad" } else { "ok" }) {
                        (up) " of " (status.relays.len()) " up"
                    }
                    " ("
                    @for (i, r) in status.relays.iter().enumerate() {
                        @if i > 0 { ", " }
                        (r.id) " " (if r.up { "up" } else { "down" })
                    }
                    ")"
                }
            }
        }
        @if visitor.role == Some(crate::web_tokens::Role::Admin) {
            div.panel.actions {
                form.inline method="get" action="/confirm" {
                    input type="hidden" name="what" value="pair";
                    input type="text" name="name" placeholder="new client's name" required;
                    " " button type="submit" { "Make a pairing code…" }
                }
                a href="/confirm?what=gc" { "Collect garbage…" }
                a href="/confirm?what=verify" { "Verify the store…" }
            }
        }
        @if status.clients.is_empty() {
            p { "No clients yet: pair one with " code { "ferry-relay pair --name NAME" } "." }
        } @else {
            table {
                thead { tr {
                    th { "Client" } th { "Backup sets" } th.num { "Stored" }
                    th { "Now" } th { "Last error" }
                } }
                tbody {
                    @for client in &status.clients { (row(client, status.generated_ms)) }
                }
            }
        }
        p.muted {
            "Relay " (status.fingerprint) " · version " (status.version) " · read " (status.generated_at)
            " · also " a href="/api/status" { "/api/status" } " (JSON) and " a href="/metrics" { "/metrics" }
        }
    };
    let title = if counts.stale + counts.failing + counts.damaged > 0 {
        "Attention"
    } else {
        "Overview"
    };
    page(title, visitor, Some(REFRESH_SECONDS), body)
}

fn row(client: &ClientStatus, now_ms: i64) -> Markup {
    html! {
        tr class=(if client.stale { "client stale" } else { "client" }) data-client=(client.name) {
            td {
                a href=(client_href(&client.name)) { b { (client.name) } }
                br;
                span.muted {
                    (client.hostname) " · " (client.mode) " · "
                    @match &client.last_seen_at {
                        Some(at) => span.t title=(at) { "seen " (seen(at, now_ms)) },
                        None => "never seen",
                    }
                }
            }
            td {
                @if client.sets.is_empty() {
                    span.chip.stale[client.stale].none[!client.stale] { "no backup yet" }
                }
                @for set in &client.sets {
                    @let age = set.age_s.map_or("never".to_string(), ago);
                    span.chip.set.stale[set.stale] title=(set.last_success_at.as_deref().unwrap_or("no snapshot")) {
                        (set.name) ": " span.age { (age) }
                        @if set.stale { " — stale" }
                        @if set.backing_up_since_ms.is_some() { span.running { " — backing up" } }
                    }
                }
            }
            td.num.warn[client.quota_warning] {
                (format_usage(client.stored_bytes, client.quota))
                @if client.damage_open > 0 {
                    br; span.bad { (client.damage_open) " damaged blob(s)" }
                }
            }
            td {
                @if client.sessions == 0 { span.muted { "idle" } }
                @else { (client.sessions) " session(s) at " (format_rate(Some(client.rate))) }
            }
            td {
                @match &client.last_error {
                    Some(e) => {
                        span.bad[failing(client)].muted[!failing(client)] { (e.message) }
                        br; span.muted.t { (ago(seconds_between(e.at_ms, now_ms))) }
                    }
                    None => span.muted { "none" },
                }
            }
        }
    }
}

/// `last_seen_at` (RFC 3339) in words.
fn seen(at: &str, now_ms: i64) -> String {
    ferry_protocol::units::parse_time(at, now_ms)
        .map_or_else(|_| at.to_string(), |ms| ago(seconds_between(ms, now_ms)))
}

/// The link to a client's page.
pub fn client_href(name: &str) -> String {
    format!("/clients/{}", crate::web::percent::encode(name.as_bytes()))
}

fn run_text(what: &str, run: Option<&Run>, now_ms: i64) -> Markup {
    match run {
        None => html! { "no " (what) " yet" },
        Some(run) => html! {
            span title=(ferry_protocol::units::format_rfc3339(run.at_ms)) class=(if run.ok { "" } else { "bad" }) {
                "last " (what) ": " (ago(seconds_between(run.at_ms, now_ms))) " (" (run.summary) ")"
            }
        },
    }
}
