//! The web pages, as maud templates (every text from a client or the
//! operator is escaped by construction): the frame they share, and the
//! small pieces of wording they all use — ages in words, sizes in IEC
//! units, a usage bar.

pub mod browse;
pub mod client;
pub mod forms;
pub mod overview;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::web::auth::Visitor;

/// The style of every page: no file to fetch, no build step.
const STYLE: &str = include_str!("views/style.css");

/// A page: `title` in the tab and the heading, the navigation, `body`.
pub fn page(title: &str, visitor: &Visitor, refresh: Option<u32>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = refresh {
                    meta http-equiv="refresh" content=(seconds);
                }
                title { (title) " · ferry relay" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header.top {
                    a.brand href="/" { "ferry relay" }
                    nav {
                        a href="/" { "Overview" }
                        @match visitor.role {
                            Some(role) => {
                                span.who { "signed in (" (role.name()) ")" }
                                form.inline method="post" action="/logout" {
                                    button.link type="submit" { "Sign out" }
                                }
                            }
                            None => a href="/login" { "Sign in" },
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// `seconds` ago, in words: `just now`, `5 minutes ago`, `3 days ago`.
pub fn ago(seconds: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    if seconds < 60 {
        return "just now".into();
    }
    let (size, name) = UNITS
        .iter()
        .copied()
        .find(|(size, _)| seconds >= *size)
        .unwrap_or(UNITS[3]);
    let n = seconds / size;
    format!("{n} {name}{} ago", if n == 1 { "" } else { "s" })
}

/// Seconds from `at_ms` to `now_ms`, never negative.
pub fn seconds_between(at_ms: i64, now_ms: i64) -> u64 {
    u64::try_from((now_ms - at_ms).max(0) / 1000).unwrap_or(0)
}

/// A bar `used` of `of` wide, with its text.
pub fn bar(used: u64, of: u64, text: &str, warn: bool) -> Markup {
    let percent = (u128::from(used) * 100 / u128::from(of.max(1))).min(100);
    html! {
        div.bar role="img" aria-label=(text) {
            div.fill.warn[warn] style=(format!("width:{percent}%")) {}
        }
        div.bartext { (text) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_words() {
        assert_eq!(ago(5), "just now");
        assert_eq!(ago(60), "1 minute ago");
        assert_eq!(ago(3 * 3600 + 50), "3 hours ago");
        assert_eq!(ago(86_400), "1 day ago");
        assert_eq!(ago(9 * 86_400), "9 days ago");
    }

    #[test]
    fn names_from_clients_cannot_inject_markup() {
        let visitor = Visitor::default();
        let text = page(
            "<script>x</script>",
            &visitor,
            None,
            html! { p { ("<b>&") } },
        )
        .into_string();
        assert!(text.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(text.contains("&lt;b&gt;&amp;"));
        assert!(!text.contains("<script>"));
    }
}
