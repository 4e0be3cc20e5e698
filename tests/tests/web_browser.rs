//! The web page in a real browser (headless Chromium through ChromeDriver),
//! as an operator uses it: sign in with the token through the form, see
//! the stale client on the overview, open a client's page, browse an
//! open-mode snapshot and download a file and a directory (compared byte
//! for byte with what was backed up), protect a snapshot through its
//! confirmation; and be refused an action whose CSRF token is forged, one
//! posted from another site's page, and pages without the login cookie.

use std::fs;
use std::path::Path;
use std::process::Command;

use ferry_tests::browser::Browser;
use ferry_tests::*;

/// The relay's admin token, made anew.
fn admin_token(relay: &Relay) -> String {
    ok(relay.admin(&["web-token"]))
        .lines()
        .find_map(|l| l.strip_prefix("web admin token: "))
        .expect("the token line")
        .trim()
        .to_string()
}

/// A relay with a web listener on loopback (and `more` sections), a new
/// admin token for it, and an endpoint paired as "laptop".
fn web_relay_and_laptop(more: &[(&str, &str)]) -> (Relay, String, Endpoint) {
    let mut sections = vec![("web".to_string(), "listen = \"127.0.0.1:0\"".to_string())];
    sections.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let relay = Relay::start_with(RelayOptions {
        sections,
        ..RelayOptions::default()
    });
    let token = admin_token(&relay);
    let laptop = Endpoint::new();
    laptop.pair_with(&relay, "laptop");
    (relay, token, laptop)
}

/// `ferry-relay snapshots list --json`.
fn snapshots(relay: &Relay) -> Vec<serde_json::Value> {
    let out = ok(relay.admin(&["snapshots", "list", "--json"]));
    serde_json::from_str(&out).expect("the snapshot list")
}

/// Where the screenshots go: the test's output directory.
fn shot(browser: &Browser, name: &str) {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    browser.screenshot(&path);
    let png = fs::read(&path).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000);
    eprintln!("screenshot: {}", path.display());
}

#[test]
fn an_operator_signs_in_browses_downloads_and_protects_through_the_page() {
    let relay = Relay::start_with(RelayOptions {
        sections: vec![
            ("web".into(), "listen = \"127.0.0.1:0\"".into()),
            ("alerts".into(), "check-interval = \"1s\"".into()),
            (
                "alerts.stale-after-for".into(),
                "\"office-nas\" = \"1s\"".into(),
            ),
        ],
        ..RelayOptions::default()
    });
    let token = admin_token(&relay);
    let (laptop, office) = (Endpoint::new(), Endpoint::new());
    laptop.pair_with(&relay, "anna-laptop");
    office.pair_with(&relay, "office-nas");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("home");
    fs::create_dir_all(src.join("docs/old")).unwrap();
    let report = ferry_tests::tree::random_bytes(700_000, 7);
    fs::write(src.join("docs/report.bin"), &report).unwrap();
    fs::write(src.join("docs/old/notes.txt"), "notes from last year\n").unwrap();
    fs::write(src.join("todo.txt"), "buy milk\n").unwrap();
    laptop.backup_json(&[src.to_str().unwrap()]);
    let id = snapshots(&relay)[0]["id"].as_u64().unwrap();
    let web = format!("http://{}", relay.web_addr());
    let browser = Browser::start(1280, 900);

    // A client's page needs a login: the browser is sent to the form.
    browser.goto(&format!("{web}/clients/anna-laptop"));
    assert!(browser.url().contains("/login"), "{}", browser.url());
    browser.type_into("#token", "not-the-token-at-all");
    browser.click("#sign-in");
    browser.wait_text("That token is not one of this relay's");
    browser.type_into("#token", &token);
    browser.click("#sign-in");
    browser.wait_text("Backup sets");
    assert!(
        browser.url().ends_with("/clients/anna-laptop"),
        "signed in, the page asked for: {}",
        browser.url()
    );
    let cookie = &browser.cookies()[0];
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    assert_eq!(cookie["secure"], true, "{cookie}");

    // The overview: the stale client stands out, the healthy one does not.
    let stale = wait_for("office-nas stale on the overview", DEADLINE, || {
        browser.goto(&format!("{web}/"));
        let page = browser.source();
        page.contains("class=\"client stale\" data-client=\"office-nas\"")
            .then_some(page)
    });
    assert!(
        stale.contains("class=\"client\" data-client=\"anna-laptop\""),
        "anna-laptop is not stale: {stale}"
    );
    let text = browser.text();
    assert!(
        text.contains("1\nstale"),
        "one stale client counted: {text}"
    );
    assert!(text.contains("1\nhealthy"), "{text}");
    shot(&browser, "web-overview.png");

    // Its page, through the link.
    browser.click("a[href=\"/clients/anna-laptop\"]");
    let text = browser.wait_text("Snapshots");
    assert!(text.contains("Snapshots"), "{text}");
    assert!(
        browser
            .source()
            .contains(&format!("data-snapshot=\"{id}\"")),
        "{text}"
    );
    shot(&browser, "web-client.png");

    // Browse the snapshot down to the file, and download it.
    browser.click(&format!("tr[data-snapshot=\"{id}\"] a[href$=\"/browse\"]"));
    browser.wait_text("Download this directory");
    let names: Vec<String> = src
        .components()
        .skip(1)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .chain(["docs".to_string()])
        .collect();
    for name in &names {
        browser.click(&format!("tr[data-name=\"{name}\"] a"));
        browser.wait_text(&format!("{name}\n"));
    }
    browser.wait_text("report.bin");
    browser.click("tr[data-name=\"report.bin\"] a");
    assert!(
        browser.downloaded("report.bin") == report,
        "the download is the file, byte for byte"
    );
    // And the directory, as a tar of paths from the snapshot's root.
    browser.click("a[href*=\"/download?path=\"]");
    let tar = browser.downloaded("docs.tar");
    let mut found = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(&tar[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        found.insert(path, data);
    }
    let docs = names.join("/");
    assert_eq!(
        found[&format!("{docs}/report.bin")],
        report,
        "{:?}",
        found.keys()
    );
    assert_eq!(
        found[&format!("{docs}/old/notes.txt")],
        b"notes from last year\n"
    );
    assert!(
        found.keys().all(|p| p.starts_with(&docs)),
        "only the directory: {:?}",
        found.keys()
    );

    // Protect the snapshot through its confirmation.
    browser.goto(&format!("{web}/clients/anna-laptop"));
    browser.click(&format!(
        "tr[data-snapshot=\"{id}\"] a[href*=\"what=protect\"]"
    ));
    browser.wait_text(&format!("Protect snapshot {id} of anna-laptop?"));
    assert_eq!(
        snapshots(&relay)[0]["protected"],
        false,
        "not before confirming"
    );
    browser.click("#do");
    browser.wait_text(&format!("Protected snapshot {id}"));
    assert_eq!(snapshots(&relay)[0]["protected"], true);

    // A forged action: the form's CSRF token changed. Refused, nothing done.
    browser.goto(&format!(
        "{web}/confirm?what=unprotect&client=anna-laptop&snapshot={id}"
    ));
    browser.script("document.querySelector('input[name=csrf]').value = 'forged';");
    browser.click("#do");
    browser.wait_text("CSRF token is wrong");
    assert_eq!(snapshots(&relay)[0]["protected"], true);

    // Another site's page posting to the relay: the browser does not send
    // the login cookie with it (SameSite=Strict), so it is refused.
    let attack = format!(
        "data:text/html,<form id=f method=post action='{web}/act'>\
         <input name=what value=unprotect><input name=client value=anna-laptop>\
         <input name=snapshot value={id}><input name=csrf value=x></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    browser.goto(&attack);
    browser.wait_text("log in first");
    assert_eq!(snapshots(&relay)[0]["protected"], true);

    // Without the cookie: pages send to the form, actions are refused.
    browser.delete_cookies();
    browser.goto(&format!("{web}/clients/anna-laptop/snapshots/{id}/browse"));
    browser.wait_text("Paste the web token");
    assert!(browser.url().contains("/login"), "{}", browser.url());
    browser.script(&format!(
        "const f = document.createElement('form'); f.method = 'post'; f.action = '/act';\
         for (const [k, v] of [['what','forget'],['client','anna-laptop'],['snapshot','{id}'],['csrf','x']]) {{\
           const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }}\
         document.body.appendChild(f); f.submit();"
    ));
    browser.wait_text("log in first");
    assert_eq!(snapshots(&relay).len(), 1, "nothing forgotten");
    relay.wait_for_log("web: refused a sign-in: wrong token");
}

#[test]
fn a_sealed_clients_files_are_not_offered_and_a_reader_cannot_act() {
    let relay = Relay::start_with(RelayOptions {
        sections: vec![("web".into(), "listen = \"127.0.0.1:0\"".into())],
        ..RelayOptions::default()
    });
    let out = ok(relay.admin(&["web-token", "--read-only"]));
    let reader = out
        .lines()
        .find_map(|l| l.strip_prefix("web read-only token: ").map(str::to_string))
        .expect("the token line");
    let web = relay.web_addr();
    // A bearer read-only token reads the client page but cannot act.
    let sealed = Endpoint::sealed();
    sealed.pair_with(&relay, "vault");
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("secret.txt"), "secret").unwrap();
    sealed.backup_json(&[work.path().to_str().unwrap()]);
    let id = snapshots(&relay)[0]["id"].as_u64().unwrap();
    let page = http_get(web, "/clients/vault", Some(&reader));
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("only that endpoint"), "{}", page.body);
    assert!(
        !page.body.contains("/browse"),
        "no browsing a sealed client"
    );
    let browse = http_get(
        web,
        &format!("/clients/vault/snapshots/{id}/download?path="),
        Some(&reader),
    );
    assert_eq!(browse.status, 404);
    assert!(browse.body.contains("sealed client"), "{}", browse.body);
    let confirm = http_get(web, "/confirm?what=gc", Some(&reader));
    assert_eq!(confirm.status, 403);
    assert!(confirm.body.contains("read-only"), "{}", confirm.body);
    // A wrong bearer token: 401.
    assert_eq!(
        http_get(web, "/clients/vault", Some("wrong-token-of-length")).status,
        401
    );
}

/// `POST /act` with the admin's bearer token (as a script would): its page.
fn act(web: std::net::SocketAddr, token: &str, form: &str) -> String {
    let (head, body) = http_raw(
        web,
        &format!(
            "POST /act HTTP/1.1\r\nHost: {web}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    head + &String::from_utf8_lossy(&body)
}

#[test]
fn actions_from_the_page_reach_the_running_relay_at_once() {
    let (relay, token, laptop) = web_relay_and_laptop(&[]);
    let web = relay.web_addr();

    // A collection asked from the page is served by the running relay.
    let asked = act(web, &token, "what=gc&csrf=");
    assert!(asked.contains("Collection asked"), "{asked}");
    relay.wait_for_log("gc requested");

    // A revocation closes the client's live session at once.
    let (mut watch, mut lines) = laptop.watching();
    let revoked = act(web, &token, "what=revoke&client=laptop&csrf=");
    assert!(revoked.contains("Revoked laptop"), "{revoked}");
    wait_for("the revoked session to end", DEADLINE, || {
        let mut line = String::new();
        match std::io::BufRead::read_line(&mut lines, &mut line) {
            Ok(0) | Err(_) => Some(()),
            Ok(_) => None,
        }
    });
    let _ = watch.kill();
    let _ = watch.wait();
    let out = laptop.ferry(&["status"]);
    assert!(!out.status.success(), "its key is refused from now on");
}

/// `[web] tls-cert` and `tls-key`: the page over HTTPS on an address
/// beyond loopback, where a browser signs in (its Secure cookie kept) and
/// sees the overview.
#[test]
fn over_https_beyond_loopback_a_browser_signs_in() {
    let relay = Relay::start();
    let data = relay.data();
    make_certificate(&data, "ferry-test");
    let token = admin_token(&relay);
    let mut relay = relay;
    relay.terminate();
    let config = data.join("relay.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        set_in_section(
            &text,
            "web",
            "listen = \"0.0.0.0:0\"\ntls-cert = \"web.crt\"\ntls-key = \"web.key\"",
        ),
    )
    .unwrap();
    relay.start_again();
    let port = relay.web_addr().port();
    relay.wait_for_log(&format!("web status on https://0.0.0.0:{port}/"));
    let web = format!("https://127.0.0.1:{port}");
    let browser = Browser::start(1280, 900);
    browser.goto(&format!("{web}/"));
    browser.wait_text("Paste the web token");
    browser.type_into("#token", &token);
    browser.click("#sign-in");
    browser.wait_text("healthy");
    assert!(browser.url().starts_with("https://"), "{}", browser.url());
    let cookie = &browser.cookies()[0];
    assert_eq!(cookie["secure"], true, "{cookie}");

    // A renewed certificate is served without a restart.
    make_certificate(&data, "ferry-renewed");
    wait_for("the renewed certificate", DEADLINE, || {
        served_subject(port).contains("ferry-renewed").then_some(())
    });
    relay.wait_for_log("web: TLS certificate");
    // One caught half-written is refused; the one before still serves.
    fs::write(data.join("web.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    wait_for("the refusal of the broken certificate", DEADLINE, || {
        assert!(served_subject(port).contains("ferry-renewed"));
        relay
            .log()
            .contains("the changed TLS certificate cannot be used")
            .then_some(())
    });

    // A request head sent too slowly over TLS is cut at the head timeout
    // (5 s), as over plain HTTP, not held to the connection's lifetime
    // (30 s): sixteen such clients would keep the page from everyone.
    let mut slow = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut input = slow.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let closed = wait_for("the slow head to be cut", DEADLINE, || {
        slow.try_wait().unwrap()
    });
    drop(input);
    let took = started.elapsed();
    assert!(
        took < ferry_relay::web::listener::LIFETIME.mul_f64(0.8),
        "cut after {took:?} ({closed:?})"
    );
}

/// A self-signed certificate for 127.0.0.1 named `name`, in
/// `dir/web.crt` and `dir/web.key` (0600).
fn make_certificate(dir: &Path, name: &str) {
    let made = run({
        let mut c = Command::new("openssl");
        c.args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(dir.join("web.key"))
        .arg("-out")
        .arg(dir.join("web.crt"));
        c
    });
    assert!(
        made.status.success(),
        "openssl (tests/peers.sh installs it): {}",
        stderr(&made)
    );
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.join("web.key"), fs::Permissions::from_mode(0o600)).unwrap();
}

/// The subject of the certificate served on `port` (`openssl s_client`).
fn served_subject(port: u16) -> String {
    let out = run({
        let mut c = Command::new("openssl");
        c.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .stdin(std::process::Stdio::null());
        c
    });
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_default()
        .to_string()
}

/// `GET path` with a bearer token: the answer's head and body's bytes.
fn get_bytes(web: std::net::SocketAddr, token: &str, path: &str) -> (String, Vec<u8>) {
    http_raw(
        web,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {web}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    )
}

/// A sparse file downloads whole: its holes as zeros, its data where it was.
#[test]
fn a_sparse_file_downloads_with_its_holes_as_zeros() {
    use std::io::{Seek, SeekFrom, Write};
    let (relay, token, laptop) = web_relay_and_laptop(&[]);
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("disk.img");
    let mut file = fs::File::create(&path).unwrap();
    file.seek(SeekFrom::Start(1 << 20)).unwrap();
    file.write_all(&ferry_tests::tree::random_bytes(100_000, 5))
        .unwrap();
    file.seek(SeekFrom::Start(3 << 20)).unwrap();
    file.write_all(&ferry_tests::tree::random_bytes(50_000, 6))
        .unwrap();
    file.set_len(4 << 20).unwrap();
    drop(file);
    // The file system keeps the holes (so the backup records extents and
    // the download has holes to fill), or this test would prove nothing.
    use std::os::unix::fs::MetadataExt;
    let allocated = fs::metadata(&path).unwrap().blocks() * 512;
    assert!(
        allocated < 1 << 20,
        "{allocated} bytes allocated: no holes here"
    );
    laptop.backup_json(&[work.path().to_str().unwrap()]);
    let id = snapshots(&relay)[0]["id"].as_u64().unwrap();
    let wanted = path.to_str().unwrap().trim_start_matches('/');
    let (head, body) = get_bytes(
        relay.web_addr(),
        &token,
        &format!("/clients/laptop/snapshots/{id}/download?path={wanted}"),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", 4 << 20)),
        "{head}"
    );
    assert!(
        body == fs::read(&path).unwrap(),
        "the download is the file, holes and all"
    );
}

/// The client page lists the client's recent errors, newest first, and
/// they survive a restart of the relay.
#[test]
fn the_client_page_lists_recent_errors_newest_first() {
    let (mut relay, token, laptop) = web_relay_and_laptop(&[("quota", "per-client = \"1MiB\"")]);
    let work = tempfile::tempdir().unwrap();
    fs::write(
        work.path().join("a.bin"),
        ferry_tests::tree::random_bytes(960 << 10, 1),
    )
    .unwrap();
    laptop.backup_json(&[work.path().to_str().unwrap()]);
    // Two backups past the quota: two errors.
    for seed in [2, 3] {
        fs::write(
            work.path().join(format!("{seed}.bin")),
            ferry_tests::tree::random_bytes(300 << 10, seed),
        )
        .unwrap();
        let refused = laptop.ferry(&["backup", work.path().to_str().unwrap()]);
        assert!(!refused.status.success());
    }
    relay.kill_and_restart();
    let (head, body) = get_bytes(relay.web_addr(), &token, "/clients/laptop");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let page = String::from_utf8(body).unwrap();
    let table = page
        .split("<table id=\"errors\">")
        .nth(1)
        .expect("a table of recent errors")
        .split("</table>")
        .next()
        .unwrap();
    assert_eq!(
        table.matches("<tr>").count(),
        3,
        "a head and two rows: {table}"
    );
    assert_eq!(table.matches("<td>quota: ").count(), 2, "{table}");
}

/// A backup running now shows as running: on its set (`/api/status` and
/// the pages) with when it began and the new bytes stored so far; and no
/// longer once it is committed.
#[test]
fn a_running_backup_shows_on_its_set_until_it_is_committed() {
    let (relay, token, laptop) = web_relay_and_laptop(&[]);
    let web = relay.web_addr();
    // Slow enough to be seen: 6 MiB at 1 MiB/s.
    ok(relay.admin(&["clients", "limit", "laptop", "1MiB/s"]));
    let work = tempfile::tempdir().unwrap();
    fs::write(
        work.path().join("big"),
        ferry_tests::tree::random_bytes(6 << 20, 4),
    )
    .unwrap();
    let mut backup = laptop
        .command()
        .args(["backup", work.path().to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = || -> serde_json::Value {
        let (_, body) = get_bytes(web, &token, "/api/status");
        serde_json::from_slice(&body).unwrap()
    };
    let running = wait_for("the running backup in /api/status", DEADLINE, || {
        let set = status()["clients"][0]["sets"][0].clone();
        (set["backing_up_since"].is_string() && set["backing_up_bytes"].as_u64() > Some(0))
            .then_some(set)
    });
    assert!(
        running["backing_up_since_ms"].as_i64().is_some(),
        "{running}"
    );
    let (_, page) = get_bytes(web, &token, "/clients/laptop");
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("backing up set "), "{page}");
    assert!(page.contains("new stored so far"), "{page}");
    let (_, overview) = get_bytes(web, &token, "/");
    assert!(String::from_utf8(overview)
        .unwrap()
        .contains(" — backing up"));

    let done = wait_for("the backup to end", DEADLINE * 3, || {
        backup.try_wait().unwrap()
    });
    assert!(done.success(), "{done:?}");
    let client = status()["clients"][0].clone();
    assert!(client["sets"][0]["backing_up_since"].is_null(), "{client}");
    assert_eq!(client["sets"][0]["snapshots"], 1, "{client}");
    assert_eq!(client["sets"][0]["backing_up_bytes"], 0, "{client}");
}

/// A login made with a token ends when that token is renewed (it leaked,
/// say): the cookie it set no longer opens a page.
#[test]
fn renewing_the_token_ends_the_logins_made_with_it() {
    let (relay, token, _laptop) = web_relay_and_laptop(&[]);
    let web = relay.web_addr();
    let form = format!("token={token}&next=%2F");
    let (head, _) = http_raw(
        web,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {web}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    let cookie = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("set-cookie: ferry_login=")
                .map(|_| l.to_string())
        })
        .and_then(|l| {
            l.split_once('=')
                .map(|(_, v)| v.split(';').next().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("a login cookie: {head}"));
    let page = || {
        http_raw(
            web,
            &format!(
                "GET /clients/laptop HTTP/1.1\r\nHost: {web}\r\nCookie: ferry_login={cookie}\r\nConnection: close\r\n\r\n"
            ),
        )
        .0
    };
    assert!(page().starts_with("HTTP/1.1 200"), "{}", page());
    admin_token(&relay);
    wait_for("the old login to end", DEADLINE, || {
        let head = page();
        head.starts_with("HTTP/1.1 303").then_some(head)
    });
    relay.wait_for_log("a login ended: the token it was made with no longer works");
}
