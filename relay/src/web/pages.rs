//! The web listener's routes and their handlers: each reads what it shows
//! (off the async threads when it touches the catalog or the store) and
//! hands it to a view.

use std::collections::HashMap;

use anyhow::Context;
use axum::extract::{Form, Path, RawQuery, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use maud::Markup;

use super::actions::Action;
use super::auth::{set_cookie, Visitor};
use super::refusals::Refusal;
use super::views::{browse, client, forms, overview};
use super::{download, metrics, percent, unauthorized, App};
use crate::snapshot_files::{Found, SnapshotFiles};
use ferry_protocol::ids::TreeId;

/// Every route, behind [`super::guard`].
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(overview_page))
        .route("/api/status", get(status_json))
        .route("/metrics", get(metrics_text))
        .route("/login", get(login_form).post(log_in))
        .route("/logout", post(log_out))
        .route("/clients/{name}", get(client_page))
        .route("/clients/{name}/snapshots/{id}/browse", get(browse_page))
        .route(
            "/clients/{name}/snapshots/{id}/download",
            get(download_file),
        )
        .route("/confirm", get(confirm_page))
        .route("/act", post(act))
        .layer(middleware::from_fn_with_state(app.clone(), super::guard))
        .with_state(app)
}

/// A page with its status code.
fn html(code: StatusCode, page: Markup) -> Response {
    (code, page).into_response()
}

/// The problem page for `message`.
fn problem(code: StatusCode, message: &str, visitor: &Visitor) -> Response {
    let title = code.canonical_reason().unwrap_or("Error");
    html(code, forms::problem(title, message, visitor))
}

/// A failure reading what a page shows: logged, said in one line.
fn failed(e: &anyhow::Error, visitor: &Visitor) -> Response {
    tracing::error!("web: {e:#}");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("{e:#}"),
        visitor,
    )
}

/// The sign-in page for a browser that must sign in to see `uri`.
fn sign_in_first(uri: &Uri) -> Response {
    let next = uri.path_and_query().map_or("/", |p| p.as_str());
    Redirect::to(&format!("/login?next={}", percent::encode(next.as_bytes()))).into_response()
}

/// Runs `f` off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a web worker failed")?
}

async fn overview_page(
    State(app): State<App>,
    Extension(visitor): Extension<Visitor>,
    uri: Uri,
) -> Response {
    if !visitor.may_read() && !app.access.open_status {
        return sign_in_first(&uri);
    }
    let status = match app.status.read().await {
        Ok(status) => status,
        Err(e) => return failed(&e, &visitor),
    };
    let disk = match status.object_store {
        Some(_) => None,
        None => disk_of(app.services.data.root()),
    };
    html(StatusCode::OK, overview::render(&status, disk, &visitor))
}

/// The size and free bytes of the file system holding `dir`.
fn disk_of(dir: &std::path::Path) -> Option<overview::Disk> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(overview::Disk {
        total: stat.f_blocks.saturating_mul(stat.f_frsize),
        free: stat.f_bavail.saturating_mul(stat.f_frsize),
    })
}

async fn status_json(State(app): State<App>, Extension(visitor): Extension<Visitor>) -> Response {
    if !visitor.may_read() && !app.access.open_status {
        return unauthorized();
    }
    match app.status.read().await {
        Ok(status) => Json(status).into_response(),
        Err(e) => failed(&e, &visitor),
    }
}

async fn metrics_text(State(app): State<App>, Extension(visitor): Extension<Visitor>) -> Response {
    if !visitor.may_read() && !app.access.open_status {
        app.refusals.note(
            Refusal::Bearer,
            format_args!("web: refused GET /metrics: missing or wrong bearer token"),
        );
        return unauthorized();
    }
    let text = app.status.read().await.and_then(|status| {
        metrics::render(&status, &app.status.telemetry).map_err(anyhow::Error::from)
    });
    match text {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => failed(&e, &visitor),
    }
}

/// Where to go after signing in: a path on this site, never elsewhere.
fn next_of(next: Option<String>) -> String {
    match next {
        Some(next) if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') => {
            next
        }
        _ => "/".into(),
    }
}

async fn login_form(Extension(visitor): Extension<Visitor>, RawQuery(query): RawQuery) -> Response {
    let next =
        percent::query_value(query.as_deref(), "next").and_then(|v| String::from_utf8(v).ok());
    html(
        StatusCode::OK,
        forms::login(&next_of(next), false, &visitor),
    )
}

async fn log_in(
    State(app): State<App>,
    Extension(visitor): Extension<Visitor>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let token = form.get("token").map_or("", |t| t.trim());
    let next = next_of(form.get("next").cloned());
    match app.access.log_in(token) {
        Some((cookie, role)) => {
            tracing::info!("web: signed in ({})", role.name());
            (
                [(header::SET_COOKIE, set_cookie(Some(&cookie)))],
                Redirect::to(&next),
            )
                .into_response()
        }
        None => {
            app.refusals.note(
                Refusal::SignIn,
                format_args!("web: refused a sign-in: wrong token"),
            );
            html(
                StatusCode::UNAUTHORIZED,
                forms::login(&next, true, &visitor),
            )
        }
    }
}

async fn log_out(State(app): State<App>, headers: axum::http::HeaderMap) -> Response {
    app.access.log_out(&headers);
    (
        [(header::SET_COOKIE, set_cookie(None))],
        Redirect::to("/login"),
    )
        .into_response()
}

async fn client_page(
    State(app): State<App>,
    Extension(visitor): Extension<Visitor>,
    Path(name): Path<String>,
    uri: Uri,
) -> Response {
    if !visitor.may_read() {
        return sign_in_first(&uri);
    }
    let status = match app.status.read().await {
        Ok(status) => status,
        Err(e) => return failed(&e, &visitor),
    };
    let Some(client) = status.clients.iter().find(|c| c.name == name) else {
        return problem(
            StatusCode::NOT_FOUND,
            &format!("no client named {name:?}"),
            &visitor,
        );
    };
    let (data, repo, wanted) = (
        app.services.data.clone(),
        app.services.repo.clone(),
        name.clone(),
    );
    let found = blocking(move || {
        repo.catalog(|c| {
            let errors = match c.client_by_name(&wanted)? {
                Some(record) => c.client_error_history(record.id)?,
                None => Vec::new(),
            };
            Ok(
                crate::admin::snapshots::listed(&data, c, Some(&wanted), None)
                    .map(|snapshots| (snapshots, errors)),
            )
        })?
    })
    .await;
    match found {
        Ok((snapshots, errors)) => html(
            StatusCode::OK,
            client::render(
                client,
                &client::History {
                    snapshots: &snapshots,
                    errors: &errors,
                },
                status.generated_ms,
                &visitor,
            ),
        ),
        Err(e) => failed(&e, &visitor),
    }
}

/// What browsing and downloading look up first: the client's open
/// snapshot `id`, the path asked in it, and what that path names; or the
/// page that says why not (a visitor not signed in is sent to the form).
async fn snapshot_of(
    app: &App,
    visitor: &Visitor,
    (name, id): (String, u64),
    query: Option<&str>,
    uri: &Uri,
) -> Result<(SnapshotFiles, Vec<Vec<u8>>, Found), Response> {
    if !visitor.may_read() {
        return Err(sign_in_first(uri));
    }
    let raw = percent::query_value(query, "path").unwrap_or_default();
    let path = download::parse_path(&raw)
        .map_err(|e| problem(StatusCode::BAD_REQUEST, &e.to_string(), visitor))?;
    let repo = app.services.repo.clone();
    let found = blocking(move || {
        repo.catalog(|c| {
            let Some(client) = c.client_by_name(&name)? else {
                return Ok(Err(format!("no client named {name:?}")));
            };
            if client.mode != "open" {
                return Ok(Err(format!(
                    "{name} is a sealed client: its files are encrypted on its endpoint, and only \
                     that endpoint (or the recovery key) can read them, not this relay"
                )));
            }
            let row = c
                .list_snapshots(Some(client.id), None)?
                .into_iter()
                .find(|s| s.id.0 == id);
            Ok(row
                .map(|row| (client.id, row))
                .ok_or_else(|| format!("{name} has no snapshot {id}")))
        })
        .map_err(anyhow::Error::from)
    })
    .await
    .map_err(|e| failed(&e, visitor))?;
    let (client, row) = found.map_err(|m| problem(StatusCode::NOT_FOUND, &m, visitor))?;
    let files = SnapshotFiles::new(app.services.repo.clone(), client);
    let walked = {
        let (files, path) = (files.clone(), path.clone());
        blocking(move || files.walk(&TreeId(row.root_id), &path)).await
    };
    match walked {
        Ok(found) => Ok((files, path, found)),
        Err(e) => Err(problem(StatusCode::NOT_FOUND, &format!("{e:#}"), visitor)),
    }
}

async fn browse_page(
    State(app): State<App>,
    Extension(visitor): Extension<Visitor>,
    Path((name, id)): Path<(String, u64)>,
    RawQuery(query): RawQuery,
    uri: Uri,
) -> Response {
    let asked = (name.clone(), id);
    match snapshot_of(&app, &visitor, asked, query.as_deref(), &uri).await {
        Ok((_, path, Found::Dir(tree))) => {
            let place = browse::Place {
                client: &name,
                snapshot: id,
                path: &path,
            };
            html(StatusCode::OK, browse::render(&place, &tree, &visitor))
        }
        Ok((_, _, Found::Other(_))) => problem(
            StatusCode::BAD_REQUEST,
            "that is a file: download it",
            &visitor,
        ),
        Err(page) => page,
    }
}

async fn download_file(
    State(app): State<App>,
    Extension(visitor): Extension<Visitor>,
    Path((name, id)): Path<(String, u64)>,
    RawQuery(query): RawQuery,
    uri: Uri,
) -> Response {
    let asked = (name.clone(), id);
    let (files, path, found) =
        match snapshot_of(&app, &visitor, asked, query.as_deref(), &uri).await {
            Ok(found) => found,
            Err(page) => return page,
        };
    let response = download::respond(files, path, found);
    match response {
        Ok(response) => {
            tracing::info!("web: download from {name}'s snapshot {id}");
            response
        }
        Err(e) => problem(StatusCode::NOT_FOUND, &format!("{e:#}"), &visitor),
    }
}

async fn confirm_page(
    Extension(visitor): Extension<Visitor>,
    RawQuery(query): RawQuery,
    uri: Uri,
) -> Response {
    if !visitor.may_read() {
        return sign_in_first(&uri);
    }
    let fields: HashMap<String, String> = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), String::from_utf8(percent::decode(v)?).ok()?)))
        .collect();
    let action = match Action::parse(&fields) {
        Ok(action) => action,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e.to_string(), &visitor),
    };
    if let Err(why) = visitor.may_act(visitor.csrf.as_deref().unwrap_or("")) {
        return problem(StatusCode::FORBIDDEN, why, &visitor);
    }
    let csrf = visitor.csrf.clone().unwrap_or_default();
    html(
        StatusCode::OK,
        forms::confirm(&action.confirmation(&csrf), &visitor),
    )
}

async fn act(
    State(app): State<App>,
    Extension(visitor): Extension<Visitor>,
    Form(fields): Form<HashMap<String, String>>,
) -> Response {
    let csrf = fields.get("csrf").map_or("", String::as_str);
    if let Err(why) = visitor.may_act(csrf) {
        app.refusals.note(
            Refusal::Action,
            format_args!("web: refused an action: {why}"),
        );
        return problem(StatusCode::FORBIDDEN, why, &visitor);
    }
    let action = match Action::parse(&fields) {
        Ok(action) => action,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e.to_string(), &visitor),
    };
    let services = app.services.clone();
    let back = action.back();
    match blocking(move || action.perform(&services)).await {
        Ok((said, more)) => html(StatusCode::OK, forms::done(&said, more, &back, &visitor)),
        Err(e) => problem(StatusCode::CONFLICT, &format!("{e:#}"), &visitor),
    }
}
