//! The relay's web listener end to end: `/metrics` read by a real
//! Prometheus parser, the status page and `/api/status` naming the client,
//! the staleness alert run once and its recovery, and the token a
//! non-loopback listener needs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::{
    http_get, http_raw, ok, run, set_in_section, stderr, wait_for, Endpoint, Relay, RelayOptions,
    DEADLINE,
};

/// The samples of an OpenMetrics text, as Python's `prometheus_client`
/// parser reads them: one `name labels value` JSON line each.
fn parse_metrics(text: &str) -> Vec<serde_json::Value> {
    let script = r#"
import json, sys
try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
except ImportError:
    sys.exit("python3's prometheus_client is missing: pip install prometheus_client (.ci/run installs it)")
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps({"name": s.name, "labels": s.labels, "value": s.value}))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed to parse the metrics");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "the Prometheus parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("sample"))
        .collect()
}

fn sample<'a>(
    samples: &'a [serde_json::Value],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a serde_json::Value> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][k] == *v))
}

fn tree(dir: &Path) {
    fs::create_dir_all(dir.join("docs")).unwrap();
    for i in 0..20 {
        fs::write(
            dir.join("docs").join(format!("f{i}.txt")),
            format!("file {i}\n").repeat(50),
        )
        .unwrap();
    }
}

/// A relay with the web listener on loopback, alerts checked every
/// second with `command` (a relay.toml line), and `more` relay.toml lines
/// by table.
fn alerting_relay(command: &str, more: &[(&str, &str)]) -> Relay {
    let mut sections = vec![
        ("web".to_string(), "listen = \"127.0.0.1:0\"".to_string()),
        (
            "alerts".to_string(),
            format!("check-interval = \"1s\"\n{command}"),
        ),
    ];
    sections.extend(more.iter().map(|(t, l)| (t.to_string(), l.to_string())));
    Relay::start_with(RelayOptions {
        sections,
        ..RelayOptions::default()
    })
}

#[test]
fn metrics_page_and_a_stale_alert_once() {
    let work = tempfile::tempdir().unwrap();
    let alerts = work.path().join("alerts.log");
    // The command as shell text.
    let command = format!(
        "command = 'echo \"$FERRY_REASON|$FERRY_CLIENT|$FERRY_SET|$FERRY_LAST_SUCCESS\" >> {}'",
        alerts.display()
    );
    let relay = alerting_relay(&command, &[("alerts", "stale-after = \"4s\"")]);
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop-<b>");
    let src = work.path().join("src");
    tree(&src);
    let summary = endpoint.backup_json(&[src.to_str().unwrap()]);
    let backed_up = Instant::now();
    let web = relay.web_addr();
    relay.wait_for_log(&format!(
        "web status on http://{web}/ (loopback only, no token)"
    ));

    let api = http_get(web, "/api/status", None);
    assert_eq!(api.status, 200, "{api:?}");
    let status: serde_json::Value = serde_json::from_str(&api.body).expect("JSON");
    assert_eq!(status["clients"][0]["name"], "laptop-<b>");
    assert_eq!(status["clients"][0]["sets"][0]["snapshots"], 1);
    assert_eq!(status["clients"][0]["stale"], false);
    let set = status["clients"][0]["sets"][0]["name"]
        .as_str()
        .expect("a set")
        .to_string();

    let metrics = http_get(web, "/metrics", None);
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(metrics.headers.contains("application/openmetrics-text"));
    let samples = parse_metrics(&metrics.body);
    let client = [("client", "laptop-<b>")];
    let last = sample(
        &samples,
        "ferry_client_last_success_timestamp_seconds",
        &[("client", "laptop-<b>"), ("set", &set)],
    )
    .unwrap_or_else(|| panic!("no last success for laptop-<b>/{set} in\n{}", metrics.body));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - last["value"].as_f64().unwrap()).abs() < 60.0,
        "{last}"
    );
    let received = sample(&samples, "ferry_client_received_bytes_total", &client).unwrap();
    assert!(
        received["value"].as_f64().unwrap() >= summary["bytes_sent"].as_f64().unwrap(),
        "the relay counted at least what the endpoint sent: {received} vs {summary}"
    );
    assert!(sample(&samples, "ferry_client_sent_bytes_total", &client).is_some());
    assert!(
        sample(&samples, "ferry_client_stored_bytes", &client).unwrap()["value"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(
        sample(&samples, "ferry_backups_total", &[("result", "committed")]).unwrap()["value"],
        1.0
    );
    assert_eq!(
        sample(
            &samples,
            "ferry_handshakes_total",
            &[("result", "accepted")]
        )
        .unwrap()["value"],
        1.0
    );
    assert!(sample(&samples, "ferry_sessions_open", &[]).is_some());
    dashboard_reads_only_what_the_relay_exports(&samples);
    assert!(
        sample(&samples, "ferry_store_bytes", &[]).unwrap()["value"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    let page = http_get(web, "/", None);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("laptop-&lt;b&gt;"),
        "the page names the client, escaped:\n{}",
        page.body
    );
    assert!(!page.body.contains("laptop-<b>"), "never unescaped");

    // Four seconds without a backup: stale, and the command runs once,
    // within 8 s, with the names in its environment.
    let read = || fs::read_to_string(&alerts).unwrap_or_default();
    let line = wait_for("the stale alert", Duration::from_secs(8), || {
        read()
            .lines()
            .find(|l| l.starts_with("stale|"))
            .map(str::to_string)
    });
    assert!(
        backed_up.elapsed() < Duration::from_secs(8),
        "{:?}",
        backed_up.elapsed()
    );
    let fields: Vec<&str> = line.split('|').collect();
    assert_eq!(fields[..3], ["stale", "laptop-<b>", set.as_str()]);
    assert!(
        fields[3].starts_with("20"),
        "an RFC 3339 last success: {line}"
    );
    let stale_page = http_get(web, "/", None).body;
    assert!(
        stale_page.contains("class=\"client stale\""),
        "stale stands out"
    );

    // A restart remembers what was said (a clean stop lets the check that
    // alerted record it; a kill in between would say it again).
    let mut relay = relay;
    assert!(relay.terminate().success());
    relay.start_again();
    relay.wait_for_log("1 condition(s) held from before");
    let web = relay.web_addr();
    assert!(http_get(web, "/", None)
        .body
        .contains("class=\"client stale\""));

    // A backup: recovered, said once; the stale alert was said only once.
    fs::write(src.join("docs").join("new.txt"), "new").unwrap();
    endpoint.backup_json(&[src.to_str().unwrap()]);
    wait_for("the recovery alert", DEADLINE, || {
        read().contains("recovered|laptop-<b>|").then_some(())
    });
    let text = read();
    assert_eq!(text.matches("stale|").count(), 1, "{text}");
    assert_eq!(text.matches("recovered|").count(), 1, "{text}");
    relay.wait_for_log("alert stale: no backup of laptop-<b>/");
}

#[test]
fn a_web_listener_beyond_loopback_needs_a_token() {
    let mut relay = Relay::start();
    let data = relay.data();
    let config = data.join("relay.toml");
    let original = fs::read_to_string(&config).unwrap();
    relay.terminate();

    // No token at all (neither [web] token-file nor the web tokens `init`
    // made): the relay refuses to start, saying why.
    fs::remove_file(data.join("web-tokens.json")).unwrap();
    fs::write(
        &config,
        set_in_section(&original, "web", "listen = \"0.0.0.0:0\""),
    )
    .unwrap();
    let out = run({
        let mut c = relay.command();
        c.arg("serve");
        c
    });
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a loopback address: set [web] token-file"),
        "{}",
        stderr(&out)
    );

    // With one (mode 0600): a request without it gets 401, with it 200.
    let token_file = data.join("web-token");
    let token = "s3cret-token-for-the-status-page";
    fs::write(&token_file, format!("{token}\n")).unwrap();
    fs::set_permissions(&token_file, fs::Permissions::from_mode(0o644)).unwrap();
    // Relative: in the data directory.
    let lines = "listen = \"0.0.0.0:0\"\ntoken-file = \"web-token\"";
    fs::write(&config, set_in_section(&original, "web", lines)).unwrap();
    let out = run({
        let mut c = relay.command();
        c.arg("serve");
        c
    });
    assert!(
        stderr(&out).contains("can be read by other users: chmod 600"),
        "{}",
        stderr(&out)
    );
    fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).unwrap();
    relay.start_again();
    let port = relay.web_addr().port();
    let web = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let refused = http_get(web, "/metrics", None);
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(
        refused.headers.contains("www-authenticate: Bearer")
            || refused.headers.contains("WWW-Authenticate: Bearer")
    );
    assert_eq!(
        http_get(web, "/", Some("wrong-token-of-some-length")).status,
        401
    );
    let allowed = http_get(web, "/metrics", Some(token));
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert!(allowed.body.contains("ferry_sessions_open"));
    // Both refusals counted, though the log gate wrote only the first.
    assert!(
        allowed
            .body
            .contains("ferry_web_refusals_total{reason=\"bearer\"} 2"),
        "{}",
        allowed.body
    );
    relay.wait_for_log("web: refused GET /metrics: missing or wrong bearer token");
    ok(relay.admin(&["clients", "list"]));
}

/// Headless Chromium with the flags this machine's closed network needs.
fn chromium(profile: &Path) -> Command {
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1100,520",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[test]
fn the_status_page_in_a_real_browser() {
    assert!(
        Command::new("chromium")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "Debian's chromium is missing: apt-get install chromium (tests/peers.sh installs it)"
    );
    let relay = Relay::start_with(RelayOptions {
        sections: vec![("web".into(), "listen = \"127.0.0.1:0\"".into())],
        ..RelayOptions::default()
    });
    let work = tempfile::tempdir().unwrap();
    let (laptop, office) = (Endpoint::new(), Endpoint::new());
    laptop.pair_with(&relay, "anna-laptop");
    office.pair_with(&relay, "office-nas");
    let src = work.path().join("src");
    tree(&src);
    laptop.backup_json(&[src.to_str().unwrap()]);
    let url = format!("http://{}/", relay.web_addr());

    // The page as the browser built it: it names both clients.
    let profile = work.path().join("profile");
    let dom = run({
        let mut c = chromium(&profile);
        c.args(["--dump-dom", &url]);
        c
    });
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("anna-laptop"), "{dom}");
    assert!(dom.contains("office-nas"), "{dom}");
    assert!(
        dom.contains("no backup yet"),
        "a client that never backed up says so: {dom}"
    );

    // And a screenshot, under the test's output.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = fs::remove_file(&shot);
    let out = run({
        let mut c = chromium(&profile);
        c.arg(format!("--screenshot={}", shot.display())).arg(&url);
        c
    });
    let png = fs::read(&shot).unwrap_or_else(|_| panic!("no screenshot: {}", stderr(&out)));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}

/// A client name an attacker chose, as the alert scripts must pass it on.
const HOSTILE: &str = "x\"; touch /tmp/pwned-$(id -u) `id` 'q\\n";

fn alert_env(c: &mut Command) {
    c.env("FERRY_CLIENT", HOSTILE)
        .env("FERRY_SET", "home")
        .env("FERRY_LAST_SUCCESS", "2026-12-01T00:00:00Z")
        .env("FERRY_REASON", "stale")
        .env(
            "FERRY_MESSAGE",
            format!("no backup of {HOSTILE}/home for 2d"),
        );
}

#[test]
fn the_deploy_alert_scripts_pass_names_on_inert() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy");
    let work = tempfile::tempdir().unwrap();

    // Mail: the message a fake sendmail receives names the client verbatim.
    let mail = work.path().join("mail.txt");
    let sendmail = work.path().join("sendmail");
    fs::write(&sendmail, format!("#!/bin/sh\ncat > {}\n", mail.display())).unwrap();
    fs::set_permissions(&sendmail, fs::Permissions::from_mode(0o755)).unwrap();
    let out = run({
        let mut c = Command::new(root.join("alert-mail.sh"));
        c.arg("admin@example.com").env("SENDMAIL", &sendmail);
        alert_env(&mut c);
        c
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let text = fs::read_to_string(&mail).unwrap();
    assert!(text.starts_with("To: admin@example.com\n"), "{text}");
    assert!(
        text.contains(&format!("client:       {HOSTILE}\n")),
        "{text}"
    );

    // Webhook: one POST whose JSON body holds the name as a string.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Read, Write};
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (&stream)
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        body
    });
    let out = run({
        let mut c = Command::new(root.join("alert-webhook.sh"));
        c.arg(&url);
        alert_env(&mut c);
        c
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let body: serde_json::Value = serde_json::from_slice(&server.join().unwrap()).unwrap();
    assert_eq!(body["client"], HOSTILE);
    assert_eq!(body["reason"], "stale");
    assert_eq!(body["last_success"], "2026-12-01T00:00:00Z");
    assert!(
        !Path::new("/tmp/pwned-0").exists(),
        "nothing the name said was run"
    );
}

/// Every `ferry_…` series the Grafana dashboard in deploy/ queries is one
/// the relay exports (those only present after a collection, a
/// verification or with a quota set excepted).
fn dashboard_reads_only_what_the_relay_exports(samples: &[serde_json::Value]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json");
    let text = fs::read_to_string(&path).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "ferry-relay");
    let later = [
        "ferry_gc_last_run_timestamp_seconds",
        "ferry_verify_last_run_timestamp_seconds",
        "ferry_client_quota_bytes",
    ];
    let mut checked = 0;
    for (at, _) in text.match_indices("ferry_") {
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name == "ferry_" || later.contains(&name.as_str()) {
            continue;
        }
        assert!(
            samples.iter().any(|s| s["name"] == name.as_str()),
            "the dashboard queries {name}, which /metrics does not have"
        );
        checked += 1;
    }
    assert!(checked >= 8, "{checked}");
}

#[test]
fn quota_and_failed_backup_alerts() {
    let work = tempfile::tempdir().unwrap();
    let alerts = work.path().join("alerts.log");
    // The command as a program and its arguments.
    let command = format!(
        "command = ['/bin/sh', '-c', 'echo \"$FERRY_REASON|$FERRY_CLIENT|$FERRY_MESSAGE\" >> {}']",
        alerts.display()
    );
    let relay = alerting_relay(&command, &[("quota", "per-client = \"1MiB\"")]);
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "nas");
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("a.bin"),
        ferry_tests::tree::random_bytes(960 << 10, 1),
    )
    .unwrap();
    endpoint.backup_json(&[src.to_str().unwrap()]);
    let read = || fs::read_to_string(&alerts).unwrap_or_default();
    let quota = wait_for("the quota alert", DEADLINE, || {
        read()
            .lines()
            .find(|l| l.starts_with("quota|nas|"))
            .map(str::to_string)
    });
    assert!(quota.contains("of 1.0 MiB"), "{quota}");

    fs::write(
        src.join("b.bin"),
        ferry_tests::tree::random_bytes(300 << 10, 2),
    )
    .unwrap();
    let refused = run({
        let mut c = endpoint.command();
        c.args(["backup", src.to_str().unwrap()]);
        c
    });
    assert!(!refused.status.success());
    let failed = wait_for("the failed-backup alert", DEADLINE, || {
        read()
            .lines()
            .find(|l| l.starts_with("backup-failed|nas|"))
            .map(str::to_string)
    });
    assert!(failed.contains("quota"), "{failed}");
    assert_eq!(read().matches("quota|nas|").count(), 1, "{}", read());
    // The last error is the catalog's: a restart does not forget it.
    let mut relay = relay;
    relay.kill_and_restart();
    let status: serde_json::Value =
        serde_json::from_str(&http_get(relay.web_addr(), "/api/status", None).body).unwrap();
    assert!(
        status["clients"][0]["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("quota"),
        "{status}"
    );
}

#[test]
fn the_last_collection_and_verification_show_wherever_they_ran_and_survive_a_restart() {
    let mut relay = alerting_relay("", &[]);
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let work = tempfile::tempdir().unwrap();
    tree(&work.path().join("src"));
    endpoint.backup_json(&[work.path().join("src").to_str().unwrap()]);
    ok(relay.admin(&["gc"]));
    ok(relay.admin(&["verify"]));
    relay.kill_and_restart();
    let samples = parse_metrics(&http_get(relay.web_addr(), "/metrics", None).body);
    for name in [
        "ferry_gc_last_run_timestamp_seconds",
        "ferry_verify_last_run_timestamp_seconds",
    ] {
        assert!(
            sample(&samples, name, &[]).is_some(),
            "no {name} after a restart"
        );
    }
    let page = http_get(relay.web_addr(), "/", None).body;
    assert!(page.contains("last collection: "), "{page}");
    assert!(
        page.contains("last verification: ") && page.contains("clean: "),
        "{page}"
    );

    // Damage found by verify shows at once, counted per client: a byte of
    // a chunk (trees and contents have a second copy verify repairs from).
    let (pack, offset, length): (u32, u64, u64) = rusqlite::Connection::open(
        relay.data().join("catalog.sqlite"),
    )
    .unwrap()
    .query_row(
        "SELECT pack, offset, length FROM blobs WHERE kind = 0 ORDER BY length DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap();
    let pack = relay.data().join(format!("store/packs/{pack:08}.pack"));
    let mut bytes = fs::read(&pack).unwrap();
    bytes[(offset + length / 2) as usize] ^= 0x40;
    fs::write(&pack, bytes).unwrap();
    assert_eq!(relay.admin(&["verify"]).status.code(), Some(3));
    let status: serde_json::Value =
        serde_json::from_str(&http_get(relay.web_addr(), "/api/status", None).body).unwrap();
    assert!(status["damage_open"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(status["clients"][0]["damage_open"], status["damage_open"]);
    assert!(status["verify"]["summary"]
        .as_str()
        .unwrap()
        .starts_with("damage found"));
    let page = http_get(relay.web_addr(), "/", None).body;
    assert!(page.contains("damaged blob(s)"), "{page}");
}

#[test]
fn two_hundred_idle_connections_do_not_take_the_metrics_away() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let relay = Relay::start_with(RelayOptions {
        sections: vec![("web".into(), "listen = \"127.0.0.1:0\"".into())],
        ..RelayOptions::default()
    });
    let addr = relay.web_addr();
    // 200 connections from one address (127.0.0.2) that send nothing,
    // each opened again as soon as the relay closes it.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let reopened = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let flood = std::thread::spawn({
        let (stop, reopened) = (
            std::sync::Arc::clone(&stop),
            std::sync::Arc::clone(&reopened),
        );
        move || {
            let open = || {
                let s = from_address([127, 0, 0, 2], addr).expect("connect from 127.0.0.2");
                s.set_nonblocking(true).expect("nonblocking");
                s
            };
            let mut idle: Vec<std::net::TcpStream> = (0..200).map(|_| open()).collect();
            while !stop.load(Ordering::Relaxed) {
                for conn in &mut idle {
                    let mut buf = [0u8; 64];
                    let closed = match std::io::Read::read(conn, &mut buf) {
                        Ok(0) => true,
                        Ok(_) => false,
                        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                    };
                    if closed {
                        *conn = open();
                        reopened.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    // The flood is on: the relay is closing its connections and they come back.
    wait_for("the flood to cycle", DEADLINE, || {
        (reopened.load(Ordering::Relaxed) >= 100).then_some(())
    });
    // Each scrape answers within Prometheus's default scrape timeout (10 s).
    for _ in 0..7 {
        let asked = Instant::now();
        let metrics = http_get(addr, "/metrics", None);
        assert_eq!(metrics.status, 200);
        assert!(
            metrics.body.contains("ferry_sessions_open"),
            "{}",
            metrics.body
        );
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "{:?}",
            asked.elapsed()
        );
    }
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    eprintln!(
        "figure: the flood reopened {} connections",
        reopened.load(Ordering::Relaxed)
    );
    // What the relay said about it was held to a few lines.
    let said = relay
        .log()
        .lines()
        .filter(|l| l.contains("web:") && l.contains("connection"))
        .count();
    assert!(said <= 5, "{said} log lines about the flood");
}

/// A connection to `to` from the loopback address `from`.
fn from_address(from: [u8; 4], to: std::net::SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&std::net::SocketAddr::from((from, 0)).into())?;
    socket.connect(&to.into())?;
    Ok(socket.into())
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn suspicious_backups_alert_once_each_and_hold_the_snapshot_before() {
    let work = tempfile::tempdir().unwrap();
    let alerts = work.path().join("alerts.log");
    let command = format!(
        "command = ['/bin/sh', '-c', 'echo \"$FERRY_REASON|$FERRY_CLIENT|$FERRY_SET|$FERRY_MESSAGE\" >> {}']",
        alerts.display()
    );
    // With the lock off, only the hold keeps a snapshot beyond keep-last 1.
    let relay = alerting_relay(&command, &[("retention", "keep-last = 1\nlock = \"0h\"")]);
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    // The benchmark's D2, small: 300 text files.
    let src = work.path().join("home");
    ok(run({
        let mut gen = Command::new(ferry_tests::binary("gen-tree"));
        gen.arg("tree").arg(&src).args(["300", "2000000", "3"]);
        gen
    }));
    fs::write(
        endpoint.state().join("endpoint.toml"),
        format!("[sets.home]\npaths = [{src:?}]\n"),
    )
    .unwrap();
    let backup = || {
        endpoint.backup_json(&["--set", "home"])["snapshot"]
            .as_u64()
            .unwrap()
    };
    backup();
    // An ordinary day's edits (the benchmark's D2 -> D2m): nothing said.
    ok(run({
        let mut gen = Command::new(ferry_tests::binary("gen-tree"));
        gen.arg("mutate").arg(&src).args(["10", "5", "5", "4"]);
        gen
    }));
    let edited = backup();
    // Ransomware: every file rewritten with random bytes of its size.
    for (i, file) in files_under(&src).iter().enumerate() {
        let len = fs::metadata(file).unwrap().len() as usize;
        fs::write(file, ferry_tests::tree::random_bytes(len, 900 + i as u64)).unwrap();
    }
    let encrypted = backup();
    // Then everything deleted.
    for file in files_under(&src) {
        fs::remove_file(file).unwrap();
    }
    backup();
    let said = wait_for("two suspicious alerts", DEADLINE, || {
        let text = fs::read_to_string(&alerts).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("suspicious|"))
            .map(str::to_string)
            .collect();
        (lines.len() >= 2).then_some(lines)
    });
    assert!(
        said[0].contains("laptop|home|") && said[0].contains("rewritten"),
        "{said:?}"
    );
    assert!(
        said[1].contains("files where the snapshot before held"),
        "{said:?}"
    );
    // Said once each: nothing waits to be said any more.
    wait_for("the alerts recorded as said", DEADLINE, || {
        let db = rusqlite::Connection::open(relay.data().join("catalog.sqlite")).ok()?;
        let left: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM settings WHERE key LIKE 'suspicious/%'",
                [],
                |r| r.get(0),
            )
            .ok()?;
        (left == 0).then_some(())
    });
    let text = fs::read_to_string(&alerts).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("suspicious|"))
            .count(),
        2,
        "{text}"
    );
    // The snapshot before each is held, whatever keep-last 1 says.
    let plan: serde_json::Value =
        serde_json::from_str(&ok(relay.admin(&["retention", "--dry-run", "--json"]))).unwrap();
    let why = |id: u64| {
        plan.as_array()
            .unwrap()
            .iter()
            .find(|f| f["snapshot"] == id)
            .map(|f| f["kept_by"].to_string())
            .unwrap_or_default()
    };
    assert!(why(edited).contains("held"), "{plan}");
    assert!(why(encrypted).contains("held"), "{plan}");
}

#[test]
fn without_a_token_the_page_answers_only_to_its_loopback_names() {
    let relay = Relay::start_with(RelayOptions {
        sections: vec![("web".into(), "listen = \"127.0.0.1:0\"".into())],
        ..RelayOptions::default()
    });
    let addr = relay.web_addr();
    let ask = |host: &str| {
        let (head, body) = http_raw(
            addr,
            &format!("GET /api/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        head + &String::from_utf8_lossy(&body)
    };
    // A web site's page that a browser here loads, by DNS rebinding.
    let rebound = ask(&format!("evil.example:{}", addr.port()));
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    assert!(!rebound.contains("clients"), "{rebound}");
    let own = ask(&format!("localhost:{}", addr.port()));
    assert!(own.starts_with("HTTP/1.1 200"), "{own}");
    relay.wait_for_log("is not this loopback listener");
}

/// Behind a TLS reverse proxy: `[web] host` names what the proxy sends as
/// `Host`; those are served, any other name still refused.
#[test]
fn a_reverse_proxys_host_is_served_and_no_other() {
    let relay = Relay::start_with(RelayOptions {
        sections: vec![(
            "web".into(),
            "listen = \"127.0.0.1:0\"\nhost = [\"backup.example.com\"]".into(),
        )],
        ..RelayOptions::default()
    });
    let addr = relay.web_addr();
    let ask = |host: &str| {
        http_raw(
            addr,
            &format!("GET /api/status HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"),
        )
        .0
    };
    assert!(ask("backup.example.com").starts_with("HTTP/1.1 200"));
    assert!(ask("BACKUP.example.com").starts_with("HTTP/1.1 200"));
    assert!(ask(&format!("localhost:{}", addr.port())).starts_with("HTTP/1.1 200"));
    assert!(ask("evil.example").starts_with("HTTP/1.1 421"));
}
