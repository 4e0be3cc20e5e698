//! `GET /clients/NAME/snapshots/ID/browse?path=…`: a directory of an
//! open-mode snapshot, each file a download, each directory a tar.

use ferry_protocol::tree::{EntryKind, Tree};
use ferry_protocol::units::{format_rfc3339, format_size};
use maud::{html, Markup};

use super::overview::client_href;
use super::page;
use crate::web::auth::Visitor;
use crate::web::percent;

/// Where a listing is: the client, the snapshot, the path in it.
#[derive(Debug)]
pub struct Place<'a> {
    /// The client's name.
    pub client: &'a str,
    /// The snapshot's id.
    pub snapshot: u64,
    /// Names from the root.
    pub path: &'a [Vec<u8>],
}

impl Place<'_> {
    /// The snapshot's address.
    fn base(&self) -> String {
        format!("{}/snapshots/{}", client_href(self.client), self.snapshot)
    }

    /// `path` plus `name`, `/`-joined.
    fn joined(&self, name: Option<&[u8]>) -> Vec<u8> {
        let mut names: Vec<&[u8]> = self.path.iter().map(Vec::as_slice).collect();
        names.extend(name);
        names.join(&b'/')
    }

    /// The listing of `path/name`.
    pub fn browse_href(&self, name: Option<&[u8]>) -> String {
        format!(
            "{}/browse?path={}",
            self.base(),
            percent::encode_path(&self.joined(name))
        )
    }

    /// The download of `path/name`.
    pub fn download_href(&self, name: Option<&[u8]>) -> String {
        format!(
            "{}/download?path={}",
            self.base(),
            percent::encode_path(&self.joined(name))
        )
    }
}

/// The listing of `tree` at `place`.
pub fn render(place: &Place<'_>, tree: &Tree, visitor: &Visitor) -> Markup {
    let here = String::from_utf8_lossy(&place.joined(None)).into_owned();
    let title = format!("{} · snapshot {} · /{here}", place.client, place.snapshot);
    let body = html! {
        p.muted {
            a href="/" { "Overview" } " › "
            a href=(client_href(place.client)) { (place.client) } " › "
            a href=(Place { path: &[], ..*place }.browse_href(None)) { "snapshot " (place.snapshot) }
            @for depth in 0..place.path.len() {
                @let upto = Place { path: &place.path[..=depth], ..*place };
                " / " a href=(upto.browse_href(None)) { (String::from_utf8_lossy(&place.path[depth])) }
            }
        }
        h1 { "/" (here) }
        p { a href=(place.download_href(None)) { "Download this directory (.tar)" } }
        table #entries {
            thead { tr { th { "Name" } th.num { "Size" } th { "Modified" } th { "Mode" } } }
            tbody {
                @if !place.path.is_empty() {
                    @let up = Place { path: &place.path[..place.path.len() - 1], ..*place };
                    tr { td { a href=(up.browse_href(None)) { ".." } } td {} td {} td {} }
                }
                @for entry in &tree.entries {
                    @let name = String::from_utf8_lossy(&entry.name);
                    tr data-name=(name) {
                        td {
                            @match &entry.kind {
                                EntryKind::Dir { .. } => a href=(place.browse_href(Some(&entry.name))) { (name) "/" },
                                EntryKind::File { .. } => a.file href=(place.download_href(Some(&entry.name))) download { (name) },
                                EntryKind::Symlink { target } => { (name) span.muted { " → " (String::from_utf8_lossy(target)) } },
                                EntryKind::Hardlink { target } => { (name) span.muted { " = /" (String::from_utf8_lossy(target)) } },
                                _ => { (name) span.muted { " (special file)" } },
                            }
                        }
                        td.num {
                            @if let EntryKind::File { size, .. } = &entry.kind { (format_size(*size)) }
                        }
                        td.t { (format_rfc3339(entry.mtime_ns.div_euclid(1_000_000))) }
                        td { code { (format!("{:04o}", entry.mode & 0o7777)) } }
                    }
                }
            }
        }
    };
    page(&title, visitor, None, body)
}
