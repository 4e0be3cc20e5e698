//! Alerts that reach people: `ferry-relay alerts test` delivers through a
//! real SMTP server (Python's aiosmtpd, with a login) and a webhook (a
//! local HTTP listener), and says which channel worked; a channel that
//! cannot work is said loudly at start; a real alert arrives once per
//! client per check through both.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use ferry_tests::*;

/// An SMTP submission server that wants the login `ferry` / `pw-for-smtp`
/// and writes each mail it takes into `dir` (the envelope first).
struct SmtpServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

const SMTP_SERVER: &str = r#"
import os, sys, time, warnings
warnings.simplefilter("ignore")
try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError:
    sys.exit("python3's aiosmtpd is missing: pip install aiosmtpd (tests/peers.sh installs it)")
out, port = sys.argv[1], int(sys.argv[2])

class Keep:
    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(out, "%d.eml" % len(os.listdir(out)))
        with open(name + ".tmp", "wb") as f:
            f.write(("AUTHENTICATED: %s\nFROM: %s\nTO: %s\n\n" % (
                session.authenticated, envelope.mail_from, ",".join(envelope.rcpt_tos))).encode())
            f.write(envelope.original_content)
        os.rename(name + ".tmp", name)
        return "250 OK"

def login(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == b"ferry" and data.password == b"pw-for-smtp"
    return AuthResult(success=ok, handled=False)

c = Controller(Keep(), hostname="127.0.0.1", port=port, authenticator=login,
               auth_required=True, auth_require_tls=False)
c.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

impl SmtpServer {
    fn start(dir: &Path) -> SmtpServer {
        fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let mut child = Command::new("python3")
            .args(["-c", SMTP_SERVER, dir.to_str().unwrap(), &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the SMTP server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        SmtpServer {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// The mails taken so far, oldest first.
    fn mails(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| fs::read_to_string(p).unwrap())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP listener that answers 200 to every request and hands each
/// request's head and body over.
fn webhook_listener() -> (u16, mpsc::Receiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).unwrap();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tx.send((head, String::from_utf8_lossy(&body).into_owned()));
        }
    });
    (port, rx)
}

fn channels(smtp_port: u16, hook_port: u16) -> Vec<(String, String)> {
    vec![
        (
            "alerts".into(),
            "check-interval = \"1s\"\nstale-after = \"1s\"".into(),
        ),
        (
            "alerts.smtp".into(),
            format!(
                "host = \"127.0.0.1\"\nport = {smtp_port}\ntls = \"none\"\n\
                 from = \"Ferry relay <ferry@relay.example>\"\nto = [\"ops@example.com\"]\n\
                 user = \"ferry\"\npassword-file = \"smtp-password\""
            ),
        ),
        (
            "alerts.webhook".into(),
            format!("url = \"http://127.0.0.1:{hook_port}/hooks/ferry?key=s3cret\""),
        ),
    ]
}

fn write_secret(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn alerts_test_mails_and_posts_and_says_which_worked() {
    let work = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(&work.path().join("mail"));
    let (hook_port, posts) = webhook_listener();
    let mut relay = Relay::start_with(RelayOptions {
        sections: channels(smtp.port, hook_port),
        ..RelayOptions::default()
    });
    // Started without the password file: said loudly, at start.
    relay.wait_for_log("alerts: this channel cannot work: smtp: alerts.smtp.password-file");
    write_secret(&relay.data().join("smtp-password"), "pw-for-smtp\n");

    let out = relay.admin(&["alerts", "test"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains(&format!(
            "ok     smtp: mailed to ops@example.com through 127.0.0.1:{}",
            smtp.port
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "ok     webhook: posted to http://127.0.0.1:{hook_port}/… (200 OK)"
        )),
        "the URL's path and query (a hook's secret) are not shown: {text}"
    );
    let mail = wait_for("the test mail", DEADLINE, || smtp.mails().pop());
    assert!(
        mail.starts_with("AUTHENTICATED: True\nFROM: ferry@relay.example\nTO: ops@example.com"),
        "{mail}"
    );
    assert!(mail.contains("Subject: ferry: (test): test"), "{mail}");
    assert!(mail.contains("a test of relay "), "{mail}");
    let (head, body) = posts.recv_timeout(DEADLINE).expect("the test post");
    assert!(
        head.starts_with("POST /hooks/ferry?key=s3cret HTTP/1.1"),
        "{head}"
    );
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["client"], "(test)", "{json}");
    assert_eq!(json["alerts"][0]["reason"], "test", "{json}");

    // A wrong password: the mail channel fails, named; the webhook works.
    write_secret(&relay.data().join("smtp-password"), "not-the-password\n");
    let out = relay.admin(&["alerts", "test"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("FAILED smtp: the SMTP server 127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("ok     webhook: "), "{text}");
    assert!(
        stderr(&out).contains("1 alert channel(s) did not work"),
        "{}",
        stderr(&out)
    );
    posts.recv_timeout(DEADLINE).expect("the second test post");

    // A real alert, after a restart with the right password: a client that
    // never backed up goes stale; one mail and one post for it.
    write_secret(&relay.data().join("smtp-password"), "pw-for-smtp\n");
    relay.terminate();
    relay.start_again();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "quiet-laptop");
    let mail = wait_for("the stale alert's mail", DEADLINE, || {
        smtp.mails()
            .into_iter()
            .find(|m| m.contains("Subject: ferry: quiet-laptop: stale"))
    });
    assert!(
        mail.contains("quiet-laptop has not backed up since it was paired"),
        "{mail}"
    );
    let (_, body) = posts
        .recv_timeout(DEADLINE)
        .expect("the stale alert's post");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["client"], "quiet-laptop", "{json}");
    assert_eq!(json["alerts"][0]["reason"], "stale", "{json}");
    relay.wait_for_log("alerts: smtp: mailed to ops@example.com");
}

#[test]
fn an_alert_command_that_cannot_run_is_said_at_start() {
    let relay = Relay::start_with(RelayOptions {
        sections: vec![(
            "alerts".into(),
            "command = \"/usr/local/lib/ferry/alert-mail.sh admin@example.com\"".into(),
        )],
        ..RelayOptions::default()
    });
    relay.wait_for_log(
        "alerts: this channel cannot work: command: /usr/local/lib/ferry/alert-mail.sh is not an executable file",
    );
    let out = relay.admin(&["alerts", "test"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(
            "FAILED command: /usr/local/lib/ferry/alert-mail.sh is not an executable file"
        ),
        "{}",
        stdout(&out)
    );
    // With no channel at all, the test says so.
    let bare = Relay::start();
    let out = bare.admin(&["alerts", "test"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no alert channel is configured"),
        "{}",
        stderr(&out)
    );
}
