//! The tests' S3 server: moto's (`pip install 'moto[server]'`, which
//! `tests/peers.sh` does), started on a free loopback port. It exits when
//! the process that started it does, so a shared one never outlives its
//! test binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

use super::s3::S3Settings;

/// Starts moto's server and ends it with the parent (which it polls).
const LAUNCHER: &str = r#"
import os, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
from moto.server import main
main(["-H", "127.0.0.1", "-p", "0"])
"#;

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Starts one.
    ///
    /// # Panics
    /// When moto is not installed (the message says how to install it) or
    /// does not start.
    pub fn start() -> Moto {
        let mut child = Command::new("python3")
            .args(["-c", LAUNCHER])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run python3 (moto's S3 server runs on it)");
        let mut lines = BufReader::new(child.stderr.take().expect("piped"));
        let mut seen = String::new();
        let endpoint = loop {
            let mut line = String::new();
            if lines.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                panic!("moto's S3 server did not start (install it: tests/peers.sh, or pip install 'moto[server]'):\n{seen}");
            }
            if let Some(at) = line.find("Running on http://") {
                break line[at + "Running on ".len()..].trim().to_string();
            }
            seen.push_str(&line);
        };
        // It logs every request: keep reading, so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
        Moto { child, endpoint }
    }

    /// One server for the whole test binary.
    pub fn shared() -> &'static Moto {
        static MOTO: std::sync::OnceLock<Moto> = std::sync::OnceLock::new();
        MOTO.get_or_init(Moto::start)
    }

    /// Sends an unsigned request (moto takes them) and returns the answer.
    fn request(&self, method: &str, target: &str) -> String {
        let host = self.endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(host).expect("moto answers");
        write!(
            stream,
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "moto refused {method} {target}: {answer}"
        );
        answer
    }

    /// Creates bucket `name`.
    ///
    /// # Panics
    /// When moto refuses.
    pub fn bucket(&self, name: &str) {
        self.request("PUT", &format!("/{name}"));
    }

    /// The objects in bucket `name` (up to 1,000) with their sizes.
    ///
    /// # Panics
    /// When moto refuses.
    pub fn objects(&self, name: &str) -> Vec<(String, u64)> {
        let answer = self.request("GET", &format!("/{name}?list-type=2"));
        let field = |text: &str, tag: &str| {
            let open = format!("<{tag}>");
            let start = text.find(&open)? + open.len();
            let end = start + text[start..].find(&format!("</{tag}>"))?;
            Some(text[start..end].to_string())
        };
        answer
            .split("<Contents>")
            .skip(1)
            .filter_map(|entry| Some((field(entry, "Key")?, field(entry, "Size")?.parse().ok()?)))
            .collect()
    }

    /// Writes moto's keys as a relay's `credentials-file` (mode 0600) in
    /// `dir`, and returns its path.
    ///
    /// # Panics
    /// When it cannot be written.
    pub fn keys_file(dir: &std::path::Path) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let keys = dir.join("s3.keys");
        std::fs::write(
            &keys,
            "access-key-id = \"testing\"\nsecret-access-key = \"testing\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
        keys
    }

    /// Settings for bucket `name` (created now) with a read cache of
    /// `cache_bytes`.
    pub fn settings(&self, name: &str, cache_bytes: u64) -> S3Settings {
        self.bucket(name);
        S3Settings {
            endpoint: self.endpoint.clone(),
            bucket: name.into(),
            prefix: String::new(),
            region: "us-east-1".into(),
            path_style: true,
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            cache_bytes,
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
