//! Who is asking: a bearer token (scripts, Prometheus), or a browser's
//! login cookie, made when the login form is sent a token. The cookie is
//! `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's
//! page sends it) and `Secure`; each login has its own CSRF token, which
//! every action's form carries and [`Visitor::may_act`] checks. Logins
//! live in memory: a restart logs everyone out. A login lasts only as
//! long as the token it was made with: a token renewed (`ferry-relay
//! web-token`, because it leaked, say) ends the logins made with it, with
//! the role the token gives now.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;

use crate::web_tokens::{self, Role};

/// The login cookie's name.
pub const COOKIE: &str = "ferry_login";

/// How long a login lasts.
pub const LOGIN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Logins held at once, at most (the oldest goes first).
pub const MAX_LOGINS: usize = 64;

/// Token hashes with the role each gives.
type Hashes = Vec<([u8; 32], Role)>;

/// One browser's login.
#[derive(Debug, Clone)]
struct Login {
    /// The hash of the token it was made with.
    token: [u8; 32],
    csrf: String,
    until: Instant,
}

/// The tokens and logins the web listener accepts.
#[derive(Debug)]
pub struct Access {
    /// `[web] token-file`'s token (an admin's), hashed.
    config_token: Option<[u8; 32]>,
    /// `DATA/web-tokens.json`.
    token_file: PathBuf,
    /// Its hashes, and when they were read.
    tokens: Mutex<Option<(Instant, Hashes)>>,
    logins: Mutex<HashMap<[u8; 32], Login>>,
    /// Whether the status (`/`, `/api/status`, `/metrics`) is open to
    /// anyone who reaches the listener: a loopback listener without
    /// `[web] token-file`, as before logins existed.
    pub open_status: bool,
}

/// What the current request may do.
#[derive(Debug, Clone, Default)]
pub struct Visitor {
    /// Its role, if it showed a token or a live login.
    pub role: Option<Role>,
    /// The CSRF token of its login (none for a bearer token).
    pub csrf: Option<String>,
    /// Whether it came with a bearer token (no browser sends one on its
    /// own, so no CSRF check is needed).
    pub bearer: bool,
}

impl Visitor {
    /// Whether it may see the pages beyond the status.
    pub fn may_read(&self) -> bool {
        self.role.is_some()
    }

    /// Whether it is an administrator whose form carried `csrf` (or who
    /// came with a bearer token).
    pub fn may_act(&self, csrf: &str) -> Result<(), &'static str> {
        match (self.role, &self.csrf) {
            (Some(Role::Admin), _) if self.bearer => Ok(()),
            (Some(Role::Admin), Some(own)) if bool::from(own.as_bytes().ct_eq(csrf.as_bytes())) => {
                Ok(())
            }
            (Some(Role::Admin), _) => Err("the form did not come from this relay's page (its CSRF token is wrong): reload the page and try again"),
            (Some(Role::ReadOnly), _) => Err("this login is read-only: log in with the admin token to act"),
            (None, _) => Err("log in first"),
        }
    }
}

impl Access {
    /// Access checked against `config_token` and the hashes in
    /// `token_file`.
    pub fn new(config_token: Option<[u8; 32]>, token_file: PathBuf, open_status: bool) -> Self {
        Access {
            config_token,
            token_file,
            tokens: Mutex::default(),
            logins: Mutex::default(),
            open_status,
        }
    }

    /// The role `token` gives, if any (compared in constant time).
    pub fn role_of(&self, token: &str) -> Option<Role> {
        self.role_of_hash(&web_tokens::hash(token))
    }

    /// The role of the token whose hash is `offered`, if it still gives one.
    fn role_of_hash(&self, offered: &[u8; 32]) -> Option<Role> {
        let mut found = None;
        let config = self.config_token.map(|h| (h, Role::Admin));
        for (hash, role) in self.hashes().into_iter().chain(config) {
            if bool::from(hash.ct_eq(offered)) {
                found = found.max(Some(role));
            }
        }
        found
    }

    /// The file's hashes, read again every [`web_tokens::RELOAD`] (a token
    /// renewed by `ferry-relay web-token` replaces the old one here).
    fn hashes(&self) -> Vec<([u8; 32], Role)> {
        let mut cached = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, hashes)) = cached.as_ref() {
            if at.elapsed() < web_tokens::RELOAD {
                return hashes.clone();
            }
        }
        let hashes = web_tokens::load(&self.token_file).unwrap_or_else(|e| {
            tracing::error!("web: {e:#}; no login token works until it is mended");
            Vec::new()
        });
        *cached = Some((Instant::now(), hashes.clone()));
        hashes
    }

    /// A login for `token`: the cookie's value, or `None` for a wrong
    /// token.
    pub fn log_in(&self, token: &str) -> Option<(String, Role)> {
        let token = web_tokens::hash(token);
        let role = self.role_of_hash(&token)?;
        let cookie = random_hex();
        let mut logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        logins.retain(|_, l| l.until > now);
        if logins.len() >= MAX_LOGINS {
            if let Some(oldest) = logins.iter().min_by_key(|(_, l)| l.until).map(|(k, _)| *k) {
                logins.remove(&oldest);
            }
        }
        logins.insert(
            web_tokens::hash(&cookie),
            Login {
                token,
                csrf: random_hex(),
                until: now + LOGIN_LIFETIME,
            },
        );
        Some((cookie, role))
    }

    /// Ends the login of this request's cookie.
    pub fn log_out(&self, headers: &HeaderMap) {
        if let Some(cookie) = cookie_of(headers) {
            let mut logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
            logins.remove(&web_tokens::hash(&cookie));
        }
    }

    /// Who sent `headers`: a bearer token wins over a cookie. A token that
    /// does not match, or a cookie of no live login, gives no role.
    pub fn visitor(&self, headers: &HeaderMap) -> Visitor {
        if let Some(token) = bearer_of(headers) {
            return Visitor {
                role: self.role_of(token),
                csrf: None,
                bearer: true,
            };
        }
        let Some(cookie) = cookie_of(headers) else {
            return Visitor::default();
        };
        let key = web_tokens::hash(&cookie);
        let login = {
            let logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
            match logins.get(&key) {
                Some(login) if login.until > Instant::now() => login.clone(),
                _ => return Visitor::default(),
            }
        };
        // Read outside the logins' lock: the token file may be read again.
        match self.role_of_hash(&login.token) {
            Some(role) => Visitor {
                role: Some(role),
                csrf: Some(login.csrf),
                bearer: false,
            },
            None => {
                tracing::info!("web: a login ended: the token it was made with no longer works");
                let mut logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
                logins.remove(&key);
                Visitor::default()
            }
        }
    }
}

/// The `Set-Cookie` value for a login (`None`: the cookie that ends it).
pub fn set_cookie(value: Option<&str>) -> String {
    match value {
        Some(value) => format!(
            "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Secure; Max-Age={}",
            LOGIN_LIFETIME.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Secure; Max-Age=0"),
    }
}

/// The bearer token of `Authorization`, if any.
pub fn bearer_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The login cookie's value, if sent.
fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// 32 random bytes, hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn access(dir: &std::path::Path) -> (Access, String, String) {
        let data = crate::data_dir::DataDir::new(dir);
        let admin = web_tokens::renew(&data, Role::Admin).unwrap();
        let reader = web_tokens::renew(&data, Role::ReadOnly).unwrap();
        (
            Access::new(None, web_tokens::path(&data), false),
            admin,
            reader,
        )
    }

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={value}")).unwrap(),
        );
        headers
    }

    #[test]
    fn a_login_acts_only_with_its_own_csrf_token_and_a_reader_never() {
        let dir = tempfile::tempdir().unwrap();
        let (access, admin, reader) = access(dir.path());
        assert!(access.log_in("not-a-token").is_none());
        let (cookie, role) = access.log_in(&admin).unwrap();
        assert_eq!(role, Role::Admin);
        let visitor = access.visitor(&with_cookie(&cookie));
        let csrf = visitor.csrf.clone().unwrap();
        assert!(visitor.may_act(&csrf).is_ok());
        assert!(visitor.may_act("forged").is_err());
        assert!(visitor.may_act("").is_err());
        // Another login's token does not do.
        let (other, _) = access.log_in(&admin).unwrap();
        let other_csrf = access.visitor(&with_cookie(&other)).csrf.unwrap();
        assert!(visitor.may_act(&other_csrf).is_err());
        // A reader sees, never acts.
        let (read_cookie, _) = access.log_in(&reader).unwrap();
        let reading = access.visitor(&with_cookie(&read_cookie));
        assert!(reading.may_read());
        assert!(reading.may_act(&reading.csrf.clone().unwrap()).is_err());
        // No cookie, a made-up one, or one logged out: nobody.
        assert!(!access.visitor(&HeaderMap::new()).may_read());
        assert!(!access.visitor(&with_cookie(&"0".repeat(64))).may_read());
        access.log_out(&with_cookie(&cookie));
        assert!(!access.visitor(&with_cookie(&cookie)).may_read());
    }

    #[test]
    fn a_renewed_token_ends_the_logins_made_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let (access, admin, reader) = access(dir.path());
        let (admin_cookie, _) = access.log_in(&admin).unwrap();
        let (reader_cookie, _) = access.log_in(&reader).unwrap();
        let data = crate::data_dir::DataDir::new(dir.path());
        let renewed = web_tokens::renew(&data, Role::Admin).unwrap();
        // Within the token file's reload interval, the old login ends.
        let deadline = Instant::now() + 10 * web_tokens::RELOAD;
        while access.visitor(&with_cookie(&admin_cookie)).may_read() {
            assert!(Instant::now() < deadline, "the old admin login still works");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Gone for good, even were the token to come back; the reader's
        // login and a login with the new token work.
        assert!(access.logins.lock().unwrap().len() == 1);
        assert!(access.visitor(&with_cookie(&reader_cookie)).may_read());
        let (cookie, _) = access.log_in(&renewed).unwrap();
        assert!(access
            .visitor(&with_cookie(&cookie))
            .may_act(&access.visitor(&with_cookie(&cookie)).csrf.unwrap())
            .is_ok());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure() {
        let line = set_cookie(Some("abc"));
        for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(line.contains(part), "{line}");
        }
        assert!(set_cookie(None).contains("Max-Age=0"));
    }
}
