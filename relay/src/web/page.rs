//! `GET /`: the status page, HTML rendered here from a [`Status`]. No
//! script and no build step: it refreshes itself every
//! [`REFRESH_SECONDS`] with a `<meta>` tag. Every text that came from a
//! client or the operator (names, host names, errors) is escaped.

use std::fmt::Write;

use ferry_protocol::units::{format_rate, format_size, format_usage};

use crate::catalog::runs::Run;
use crate::status::{ClientStatus, SetStatus, Status};
use ferry_protocol::units::format_age;

/// Seconds between the page's own reloads.
pub const REFRESH_SECONDS: u32 = 10;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.3em;margin:0 0 .2em}p.meta{color:#666;margin:0 0 1em}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35em .6em;\
border-bottom:1px solid #ddd;vertical-align:top}th{background:#f4f4f4}\
.stale{background:#fde2e1}.stale .age{color:#b00;font-weight:bold}\
.warn{color:#b00}.t{white-space:nowrap}.ok{color:#2a7a2a}.muted{color:#888}ul.sets{margin:0;padding:0;list-style:none}";

/// The page for `status`.
pub fn render(status: &Status) -> String {
    let mut html = String::with_capacity(4096);
    let stale = status.clients.iter().filter(|c| c.stale).count();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>ferry relay{}</title><style>{STYLE}</style></head><body>\
         <h1>ferry relay <span class=\"muted\">{}</span></h1>\
         <p class=\"meta\">version {} · {} client(s), <span class=\"{}\">{stale} with a stale set</span> · \
         {} session(s) open · {} stored · {} · {} · damaged blobs: <span class=\"{}\">{}</span> · \
         read {}</p>",
        if stale > 0 { " — stale sets" } else { "" },
        escape(&status.fingerprint),
        escape(status.version),
        status.clients.len(),
        if stale > 0 { "warn" } else { "ok" },
        status.sessions_open,
        format_size(status.store_bytes),
        run_text("collection", status.gc.as_ref()),
        run_text("verification", status.verify.as_ref()),
        if status.damage_open > 0 { "warn" } else { "ok" },
        status.damage_open,
        escape(&status.generated_at),
    );
    if status.relays.len() > 1 {
        let up = status.relays.iter().filter(|r| r.up).count();
        let names: Vec<String> = status
            .relays
            .iter()
            .map(|r| format!("{} {}", r.id, if r.up { "up" } else { "down" }))
            .collect();
        html.push_str(&format!(
            "<p class=\"meta\">relays sharing this catalog: <span class=\"{}\">{up} of {} up</span> ({})</p>",
            if up < status.relays.len() { "warn" } else { "ok" },
            status.relays.len(),
            escape(&names.join(", "))
        ));
    }
    if status.clients.is_empty() {
        html.push_str(
            "<p>No clients yet: pair one with <code>ferry-relay pair --name NAME</code>.</p>",
        );
    } else {
        html.push_str(
            "<table><thead><tr><th>client</th><th>sets: last backup (age)</th>\
             <th>stored</th><th>sessions now</th><th>last error</th></tr></thead><tbody>",
        );
        for client in &status.clients {
            client_row(&mut html, client);
        }
        html.push_str("</tbody></table>");
    }
    html.push_str(
        "<p class=\"meta\">Also: <a href=\"/api/status\">/api/status</a> (JSON), \
         <a href=\"/metrics\">/metrics</a> (Prometheus).</p></body></html>\n",
    );
    html
}

fn client_row(html: &mut String, client: &ClientStatus) {
    let _ = write!(
        html,
        "<tr class=\"client{}\" data-client=\"{}\"><td><b>{}</b><br><span class=\"muted\">{} · {} · seen <span class=\"t\">{}</span></span></td><td><ul class=\"sets\">",
        if client.stale { " stale" } else { "" },
        escape(&client.name),
        escape(&client.name),
        escape(&client.hostname),
        client.mode,
        escape(client.last_seen_at.as_deref().unwrap_or("never")),
    );
    if client.sets.is_empty() {
        html.push_str("<li class=\"warn\">no backup yet</li>");
    }
    for set in &client.sets {
        set_item(html, set);
    }
    let _ = write!(
        html,
        "</ul></td><td class=\"{}\">{}{}</td><td>{}</td><td>{}</td></tr>",
        if client.quota_warning { "warn" } else { "" },
        escape(&format_usage(client.stored_bytes, client.quota)),
        if client.damage_open > 0 {
            format!(
                "<br><span class=\"warn\">{} damaged blob(s)</span>",
                client.damage_open
            )
        } else {
            String::new()
        },
        if client.sessions == 0 {
            "<span class=\"muted\">none</span>".to_string()
        } else {
            format!(
                "{} at {} (limit {})",
                client.sessions,
                escape(&format_rate(Some(client.rate))),
                escape(&format_rate(client.limit)),
            )
        },
        match &client.last_error {
            Some(e) => format!(
                "<span class=\"warn\">{}</span><br><span class=\"muted t\">{}</span>",
                escape(&e.message),
                escape(&ferry_protocol::units::format_rfc3339(e.at_ms))
            ),
            None => "<span class=\"muted\">none</span>".into(),
        },
    );
}

fn set_item(html: &mut String, set: &SetStatus) {
    let ago = set
        .age_s
        .map_or("never".to_string(), |s| format!("{} ago", format_age(s)));
    let _ = write!(
        html,
        "<li class=\"set{}\">{}: <span class=\"t\">{}</span> <span class=\"age t\">({ago})</span>{}</li>",
        if set.stale { " stale" } else { "" },
        escape(&set.name),
        escape(set.last_success_at.as_deref().unwrap_or("no snapshot")),
        if set.stale {
            format!(
                " <b class=\"warn\">stale (over {})</b>",
                format_age(set.stale_after_s)
            )
        } else {
            String::new()
        },
    );
}

fn run_text(what: &str, run: Option<&Run>) -> String {
    match run {
        None => format!("no {what} yet"),
        Some(run) => format!(
            "last {what}: {} ({})",
            escape(&ferry_protocol::units::format_rfc3339(run.at_ms)),
            escape(&run.summary)
        ),
    }
}

/// `text` safe inside HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_clients_cannot_inject_markup() {
        assert_eq!(
            escape("<script>alert('x')</script>&\"\u{1b}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;\u{fffd}"
        );
    }
}
