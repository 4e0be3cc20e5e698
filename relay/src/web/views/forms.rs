//! The pages around an action: signing in, confirming, and what came of
//! it; and the one page every refusal or failure is said on.

use maud::{html, Markup};

use super::page;
use crate::web::auth::Visitor;

/// The sign-in form (`failed`: the last token given was wrong).
pub fn login(next: &str, failed: bool, visitor: &Visitor) -> Markup {
    let body = html! {
        div.login.panel {
            h1 { "Sign in" }
            @if failed { div.notice.error { "That token is not one of this relay's." } }
            p.muted {
                "Paste the web token " code { "ferry-relay init" } " or " code { "ferry-relay web-token" }
                " printed (admin, or read-only)."
            }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                p { input #token type="password" name="token" autocomplete="current-password" placeholder="token" autofocus; }
                p { button.primary #sign-in type="submit" { "Sign in" } }
            }
        }
    };
    page("Sign in", visitor, None, body)
}

/// What an action will do, and the form that does it.
#[derive(Debug)]
pub struct Confirmation<'a> {
    /// One sentence: what happens.
    pub question: String,
    /// The button's word.
    pub verb: &'static str,
    /// Whether it cannot be undone.
    pub danger: bool,
    /// The form's fields (besides the CSRF token).
    pub fields: Vec<(&'static str, String)>,
    /// A text field to fill in, if any: its name, label and value.
    pub input: Option<(&'static str, &'static str, String)>,
    /// Where "Cancel" goes.
    pub back: String,
    /// The login's CSRF token.
    pub csrf: &'a str,
}

/// The confirmation page.
pub fn confirm(c: &Confirmation<'_>, visitor: &Visitor) -> Markup {
    let body = html! {
        div.panel {
            h1 { "Confirm" }
            p { (c.question) }
            form #confirm method="post" action="/act" {
                input type="hidden" name="csrf" value=(c.csrf);
                @for (name, value) in &c.fields { input type="hidden" name=(name) value=(value); }
                @if let Some((name, label, value)) = &c.input {
                    p { label { (label) " " input type="text" name=(name) value=(value); } }
                }
                p {
                    button #do type="submit" class=(if c.danger { "danger" } else { "primary" }) { (c.verb) }
                    " " a href=(c.back) { "Cancel" }
                }
            }
        }
    };
    page("Confirm", visitor, None, body)
}

/// What an action did: `message`, more to show, and the way back.
pub fn done(message: &str, more: Option<Markup>, back: &str, visitor: &Visitor) -> Markup {
    let body = html! {
        div.notice #done { (message) }
        @if let Some(more) = more { (more) }
        p { a href=(back) { "Back" } }
    };
    page("Done", visitor, None, body)
}

/// A refusal or a failure, said in one line.
pub fn problem(title: &str, message: &str, visitor: &Visitor) -> Markup {
    let body = html! {
        h1 { (title) }
        div.notice.error #problem { (message) }
        p { a href="/" { "Overview" } }
    };
    page(title, visitor, None, body)
}
