//! Helpers for end-to-end tests that run the real `ferry-relay` and `ferry`
//! binaries over loopback TCP, in temporary directories.
//!
//! The binaries are the ones cargo built for this checkout, found next to the
//! test executable (`target/<profile>/`). `cargo test --workspace` builds them,
//! because the relay, endpoint and bench packages have integration tests of
//! their own (`link`, the emulated link, is bench's).
//! Every wait here is on a condition (a file appearing, a log line, a process
//! exiting) with a deadline, never a fixed sleep.

pub mod browser;
pub mod fake_relay;
pub mod faults;
pub mod link;
pub mod proxy;
pub mod tree;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Default deadline for conditions and commands: a hang guard, ten times
/// and more what anything here takes on a busy 2-core machine, never what
/// a test measures (speed lives in `bench/`).
pub const DEADLINE: Duration = Duration::from_secs(200);

/// Path of a binary built by cargo for this checkout.
///
/// # Panics
/// When the binary is missing: build with `cargo test --workspace`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test-exe>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the suite with `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some`, or panics after `deadline` with `what`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command to completion, with a deadline. Its output is read while
/// it runs, so a command that prints more than a pipe holds still finishes.
///
/// # Panics
/// When it cannot start or outlives the deadline.
pub fn run(mut command: Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(DEADLINE) {
        Ok(output) => output.expect("output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{command:?} did not finish within {DEADLINE:?}");
        }
    }
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
///
/// # Panics
/// When the command failed, showing its stderr.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}",
        stderr(&output)
    );
    stdout(&output)
}

/// A path as `&str`, for command arguments.
///
/// # Panics
/// On a non-UTF-8 path (tests make only UTF-8 ones).
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 test path")
}

/// A running relay and an endpoint paired with it as "laptop" (open mode).
pub fn paired() -> (Relay, Endpoint) {
    paired_in(false)
}

/// A running relay and an endpoint paired with it as "laptop", sealed or open.
pub fn paired_in(sealed: bool) -> (Relay, Endpoint) {
    let relay = Relay::start();
    let endpoint = Endpoint::in_mode(sealed);
    endpoint.pair_with(&relay, "laptop");
    (relay, endpoint)
}

/// Options for a test relay.
#[derive(Debug, Clone, Default)]
pub struct RelayOptions {
    /// `--lan-network` values (default: the relay's defaults).
    pub lan_networks: Vec<String>,
    /// `--public` values.
    pub public: Vec<String>,
    /// Replaces the `[limits]` table of relay.toml.
    pub limits: Option<String>,
    /// Puts the data directory on a tmpfs of this size (`24m`), so a test
    /// can fill the relay's disk. Needs root (CI runs as root).
    pub tmpfs: Option<String>,
    /// Environment variables of `serve` (test hooks such as `FERRY_FAIL_FSYNC`).
    pub env: Vec<(String, String)>,
    /// Lines put into tables of relay.toml (see [`set_in_section`]): the
    /// table's name (`web`) and its lines.
    pub sections: Vec<(String, String)>,
    /// More arguments to `init` (`--identity FILE`, `--catalog URL`).
    pub init_args: Vec<String>,
}

/// `toml` with `lines` (`key = value` each) in table `[section]`: a key
/// the table has already is replaced, others go at its start; the table is
/// added at the end when there is none.
pub fn set_in_section(toml: &str, section: &str, lines: &str) -> String {
    let header = format!("[{section}]\n");
    let Some(at) = toml.find(&header) else {
        return format!("{toml}\n{header}{lines}\n");
    };
    let start = at + header.len();
    let end = toml[start..]
        .find("\n[")
        .map_or(toml.len(), |i| start + i + 1);
    let mut table: Vec<String> = toml[start..end].lines().map(str::to_string).collect();
    let key = |line: &str| line.split('=').next().unwrap_or("").trim().to_string();
    let mut new = Vec::new();
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        match table
            .iter_mut()
            .find(|old| old.contains('=') && key(old) == key(line))
        {
            Some(old) => *old = line.to_string(),
            None => new.push(line.to_string()),
        }
    }
    new.extend(table);
    format!("{}{}\n{}", &toml[..start], new.join("\n"), &toml[end..])
}

/// A `[limits]` table for [`RelayOptions::limits`], at 20 handshakes per
/// second per source.
pub fn limits(
    handshake_timeout: &str,
    idle_timeout: &str,
    max_connections: usize,
    per_source: usize,
) -> String {
    format!(
        "handshake-timeout = {handshake_timeout:?}\nidle-timeout = {idle_timeout:?}\nmax-connections = {max_connections}\nmax-connections-per-source = {per_source}\nhandshakes-per-second-per-source = 20\n"
    )
}

/// A running `ferry-relay serve` in a temporary data directory.
#[derive(Debug)]
pub struct Relay {
    dir: tempfile::TempDir,
    child: Child,
    env: Vec<(String, String)>,
    tmpfs: bool,
    /// Fingerprint printed by `init`.
    pub fingerprint: String,
    /// Session listener.
    pub session_addr: SocketAddr,
    /// Pairing listener.
    pub pair_addr: SocketAddr,
}

impl Relay {
    /// Initializes and starts a relay on loopback, port 0.
    pub fn start() -> Self {
        Self::start_with(RelayOptions::default())
    }

    /// Like [`Relay::start`], with options.
    ///
    /// # Panics
    /// When init or serve fail.
    pub fn start_with(options: RelayOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        if let Some(size) = &options.tmpfs {
            mount_tmpfs(&data, size);
        }
        let mut init = Command::new(binary("ferry-relay"));
        init.arg("--data").arg(&data).args([
            "init",
            "--listen",
            "127.0.0.1:0",
            "--pair-listen",
            "127.0.0.1:0",
        ]);
        for net in &options.lan_networks {
            init.args(["--lan-network", net]);
        }
        for public in &options.public {
            init.args(["--public", public]);
        }
        init.args(&options.init_args);
        let out = ok(run(init));
        let fingerprint = out
            .lines()
            .find_map(|l| l.strip_prefix("relay fingerprint: "))
            .expect("init prints the fingerprint")
            .to_string();
        if let Some(limits) = &options.limits {
            let path = data.join("relay.toml");
            let text = fs::read_to_string(&path).expect("relay.toml");
            let head = text.split("[limits]").next().expect("text");
            fs::write(&path, format!("{head}[limits]\n{limits}\n")).expect("write relay.toml");
        }
        if !options.sections.is_empty() {
            let path = data.join("relay.toml");
            let mut text = fs::read_to_string(&path).expect("relay.toml");
            for (section, lines) in &options.sections {
                text = set_in_section(&text, section, lines);
            }
            fs::write(&path, text).expect("write relay.toml");
        }
        let (child, session_addr, pair_addr) = spawn_serve(dir.path(), &data, &options.env);
        Relay {
            dir,
            child,
            env: options.env,
            tmpfs: options.tmpfs.is_some(),
            fingerprint,
            session_addr,
            pair_addr,
        }
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A `ferry-relay --data DATA` command.
    pub fn command(&self) -> Command {
        let mut c = Command::new(binary("ferry-relay"));
        c.arg("--data").arg(self.data());
        c
    }

    /// Runs an admin command and returns its output.
    pub fn admin(&self, args: &[&str]) -> Output {
        let mut c = self.command();
        c.args(args);
        run(c)
    }

    /// `clients retention CLIENT --keep-last N --lock 0h MORE…`: a count
    /// rule with the lock off, for tests of what the counts forget; returns
    /// what the command printed.
    pub fn keep_last_unlocked(&self, client: &str, n: u32, more: &[&str]) -> String {
        let n = n.to_string();
        let mut args = vec![
            "clients",
            "retention",
            client,
            "--keep-last",
            &n,
            "--lock",
            "0h",
        ];
        args.extend_from_slice(more);
        ok(self.admin(&args))
    }

    /// Creates a pairing code for `name` (JSON mode) and returns it.
    pub fn pairing_code(&self, name: &str) -> String {
        let out = ok(self.admin(&["pair", "--name", name, "--json"]));
        let v: serde_json::Value = serde_json::from_str(&out).expect("pair --json");
        v["code"].as_str().expect("code").to_string()
    }

    /// The relay's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; returns the log.
    pub fn wait_for_log(&self, needle: &str) -> String {
        wait_for(&format!("relay log line {needle:?}"), DEADLINE, || {
            let log = self.log();
            log.contains(needle).then_some(log)
        })
    }

    /// Whether the relay process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Kills the relay with SIGKILL (no chance to clean up), then starts it
    /// again on the same addresses.
    pub fn kill_and_restart(&mut self) {
        self.restart_with(|text| text);
    }

    /// Like [`Relay::kill_and_restart`], editing relay.toml in between.
    pub fn restart_with(&mut self, edit: impl FnOnce(String) -> String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let data = self.data();
        let path = data.join("relay.toml");
        let text = edit(fs::read_to_string(&path).expect("relay.toml"));
        // Only the top-level keys: `[web] listen` stays as it is.
        let top_level = text.find("\n[").unwrap_or(text.len());
        let pinned: Vec<String> = text[..top_level]
            .lines()
            .map(|line| {
                if line.starts_with("listen = ") {
                    format!("listen = \"{}\"", self.session_addr)
                } else if line.starts_with("pair-listen = ") {
                    format!("pair-listen = \"{}\"", self.pair_addr)
                } else {
                    line.to_string()
                }
            })
            .chain(text[top_level..].lines().map(str::to_string))
            .collect();
        fs::write(&path, pinned.join("\n") + "\n").expect("write relay.toml");
        let _ = fs::remove_file(data.join("run").join("listen.json"));
        let (child, session_addr, pair_addr) = spawn_serve(self.dir.path(), &data, &self.env);
        assert_eq!(
            (session_addr, pair_addr),
            (self.session_addr, self.pair_addr)
        );
        self.child = child;
    }

    /// The web listener's address, from `run/listen.json` (`[web] listen`).
    pub fn web_addr(&self) -> SocketAddr {
        let text =
            fs::read_to_string(self.data().join("run").join("listen.json")).expect("listen.json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("listen.json is JSON");
        v["web"]
            .as_str()
            .expect("a web address: set [web] listen")
            .parse()
            .expect("socket address")
    }

    /// Bytes in the relay's pack files: grows as it receives data.
    pub fn pack_bytes(&self) -> u64 {
        fs::read_dir(self.data().join("store/packs")).map_or(0, |d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
    }

    /// The pid of the relay process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts the relay again after [`Relay::terminate`] or a crash.
    pub fn start_again(&mut self) {
        self.restart_with(|text| text);
    }

    /// Resizes the data directory's tmpfs (see [`RelayOptions::tmpfs`]).
    ///
    /// # Panics
    /// When the remount fails.
    pub fn resize_tmpfs(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.data())
            .status()
            .expect("mount");
        assert!(status.success(), "cannot remount the tmpfs at {size}");
    }

    /// Sends SIGTERM and waits for exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        wait_for("relay exit", DEADLINE, || {
            self.child.try_wait().expect("try_wait")
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // A failed test shows what the relay said (its last lines).
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- the relay's log, last {} lines ---", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        if self.tmpfs {
            let _ = Command::new("umount").arg("-l").arg(self.data()).status();
        }
    }
}

/// Mounts a tmpfs of `size` at `path`.
///
/// # Panics
/// When it cannot: this test needs root (CI runs as root), and says so.
pub fn mount_tmpfs(path: &Path, size: &str) {
    fs::create_dir_all(path).expect("mount point");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(path)
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "cannot mount a tmpfs at {}: this test fills a disk and needs root to mount one (CI runs as root)",
        path.display()
    );
}

/// Unmounts a test's filesystem (lazily) when dropped: when the test
/// ends, passed or not.
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn spawn_serve(
    dir: &Path,
    data: &Path,
    env: &[(String, String)],
) -> (Child, SocketAddr, SocketAddr) {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("relay.log"))
        .expect("log file");
    let mut child = Command::new(binary("ferry-relay"))
        .arg("--data")
        .arg(data)
        .arg("serve")
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn relay");
    let listen = data.join("run").join("listen.json");
    let v: serde_json::Value = wait_for("relay listen.json", DEADLINE, || {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let log = fs::read_to_string(dir.join("relay.log")).unwrap_or_default();
            panic!("ferry-relay serve exited ({status}) before listening:\n{log}");
        }
        fs::read_to_string(&listen)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
    });
    let addr = |k: &str| {
        v[k].as_str()
            .expect("address")
            .parse()
            .expect("socket address")
    };
    (child, addr("session"), addr("pairing"))
}

/// An endpoint state directory and the `ferry` command bound to it.
#[derive(Debug)]
pub struct Endpoint {
    dir: tempfile::TempDir,
    /// Pairs as a sealed client (`ferry pair`'s default); the suite's
    /// older tests, written for open mode, pair with `--open`.
    sealed: bool,
}

impl Default for Endpoint {
    fn default() -> Self {
        Self::new()
    }
}

impl Endpoint {
    /// A fresh, unpaired endpoint.
    pub fn new() -> Self {
        Endpoint {
            dir: tempfile::tempdir().expect("tempdir"),
            sealed: false,
        }
    }

    /// A fresh, unpaired endpoint that pairs as a sealed client.
    pub fn sealed() -> Self {
        Endpoint {
            sealed: true,
            ..Self::new()
        }
    }

    /// A fresh endpoint that pairs sealed or open as `sealed` says.
    pub fn in_mode(sealed: bool) -> Self {
        if sealed {
            Self::sealed()
        } else {
            Self::new()
        }
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A `ferry --state STATE` command.
    pub fn command(&self) -> Command {
        let mut c = Command::new(binary("ferry"));
        c.arg("--state").arg(self.state());
        c
    }

    /// Runs `ferry ARGS`.
    pub fn ferry(&self, args: &[&str]) -> Output {
        let mut c = self.command();
        c.args(args);
        run(c)
    }

    /// Runs `ferry pair` against `relay` with `code`.
    pub fn try_pair(&self, relay: &Relay, code: &str) -> Output {
        let addr = relay.pair_addr.to_string();
        let mut args = vec!["pair", "--relay", &addr, "--code", code];
        if !self.sealed {
            args.push("--open");
        }
        self.ferry(&args)
    }

    /// Pairs with `relay` under `name`, asserting success.
    pub fn pair_with(&self, relay: &Relay, name: &str) -> String {
        ok(self.try_pair(relay, &relay.pairing_code(name)))
    }

    /// Starts `ferry status --watch` and waits until its session is open
    /// (a round trip shown); returns the process and its output, read on.
    pub fn watching(&self) -> (std::process::Child, BufReader<ChildStdout>) {
        let mut watch = self
            .command()
            .args(["status", "--watch"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ferry status --watch");
        let mut lines = BufReader::new(watch.stdout.take().expect("stdout"));
        read_until(&mut lines, "round trip");
        (watch, lines)
    }

    /// Runs `ferry status --json`, asserting success.
    pub fn status_json(&self) -> serde_json::Value {
        let out = ok(self.ferry(&["status", "--json"]));
        serde_json::from_str(&out).expect("status --json")
    }

    /// Runs `ferry backup --json ARGS`, asserting success; returns the summary.
    pub fn backup_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["backup", "--json"];
        all.extend_from_slice(args);
        let out = ok(self.ferry(&all));
        serde_json::from_str(&out).expect("backup --json")
    }

    /// Runs `ferry restore --json ARGS`, asserting success; returns the summary.
    pub fn restore_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["restore", "--json"];
        all.extend_from_slice(args);
        let out = ok(self.ferry(&all));
        serde_json::from_str(&out).expect("restore --json")
    }

    /// This endpoint's key pair and the relay key it paired with, as the
    /// state directory holds them.
    ///
    /// # Panics
    /// When the endpoint is not paired.
    pub fn session_keys(
        &self,
    ) -> (
        ferry_protocol::keys::StaticKeypair,
        ferry_protocol::keys::PublicKey,
    ) {
        let keys =
            ferry_net::io::keyfile::load(&self.state().join("keys/endpoint.key")).expect("key");
        let record = fs::read_to_string(self.state().join("relay.toml")).expect("relay.toml");
        let relay_hex = record
            .lines()
            .find_map(|l| l.strip_prefix("relay-key = "))
            .expect("relay-key");
        let relay_key =
            ferry_protocol::keys::PublicKey::from_hex(relay_hex.trim_matches('"')).expect("hex");
        (keys, relay_key)
    }

    /// Rewrites the session addresses recorded at pairing.
    pub fn set_addresses(&self, addresses: &[String]) {
        let path = self.state().join("relay.toml");
        let text = fs::read_to_string(&path).expect("relay.toml");
        let list: Vec<String> = addresses.iter().map(|a| format!("{a:?}")).collect();
        let line = format!("addresses = [{}]", list.join(", "));
        // Only the addresses line: what follows it (the client's mode) stays.
        let lines: Vec<&str> = text
            .lines()
            .map(|l| {
                if l.starts_with("addresses = ") {
                    line.as_str()
                } else {
                    l
                }
            })
            .collect();
        fs::write(&path, lines.join("\n") + "\n").expect("write");
    }
}

/// Reads lines from a child's stdout until one contains `needle`.
pub fn read_until(reader: &mut BufReader<ChildStdout>, needle: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read line");
        assert!(n > 0, "output ended before a line containing {needle:?}");
        if line.contains(needle) {
            return line;
        }
    }
}

/// A session driven by hand with a paired endpoint's key, for tests that
/// must send what `ferry` never would.
#[derive(Debug)]
pub struct RawSession {
    /// The connection.
    pub stream: std::net::TcpStream,
    /// The established Noise transport.
    pub transport: ferry_protocol::transport::Transport,
}

impl RawSession {
    /// Handshakes as `endpoint` and exchanges `Hello`s, as a protocol 1.0 peer.
    ///
    /// # Panics
    /// When the relay does not accept the session.
    pub fn open(relay: &Relay, endpoint: &Endpoint) -> Self {
        Self::open_as(relay, endpoint, 0)
    }

    /// Like [`RawSession::open`], saying protocol minor version `minor`
    /// (its first message has the MAC from 1.4 on, as such peers send).
    ///
    /// # Panics
    /// When the relay does not accept the session.
    pub fn open_as(relay: &Relay, endpoint: &Endpoint, minor: u16) -> Self {
        use ferry_protocol::message::Message;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock");
        let mut session = Self::handshake_at(relay, endpoint, minor, now);
        assert!(matches!(session.recv(), Some(Message::Hello(_))));
        session
    }

    /// Handshakes as `endpoint` with its clock at `now` (since the Unix
    /// epoch) and sends `Hello` as protocol minor `minor`; the relay's
    /// answer is left to read.
    ///
    /// # Panics
    /// When the relay does not finish the handshake.
    pub fn handshake_at(relay: &Relay, endpoint: &Endpoint, minor: u16, now: Duration) -> Self {
        use std::io::{Read, Write};

        use ferry_protocol::frame::encode_frame;
        use ferry_protocol::message::{Hello, Message};
        use ferry_protocol::session::Initiator;
        use ferry_protocol::timestamp::Timestamp;
        use ferry_protocol::version::{ConnectionKind, Preamble};

        let (keys, relay_key) = endpoint.session_keys();
        let mut first = Vec::new();
        let now = Timestamp::from_unix(now);
        let initiator = if minor >= 4 {
            Initiator::start(&keys, &relay_key, now, &mut first)
        } else {
            Initiator::start_without_mac(&keys, &relay_key, now, &mut first)
        }
        .expect("start");
        let mut out = Preamble::current(ConnectionKind::Session).encode().to_vec();
        encode_frame(&first, &mut out).expect("frame");
        let mut stream = std::net::TcpStream::connect(relay.session_addr).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        stream.write_all(&out).expect("write");
        let mut answer = [0u8; 8 + 2 + 48];
        stream.read_exact(&mut answer).expect("answer");
        let transport = initiator.finish(&answer[10..]).expect("finish");
        let mut session = RawSession { stream, transport };
        session.send(&Message::Hello(Hello {
            major: 1,
            minor,
            software: "test".into(),
        }));
        session
    }

    /// Sends one message.
    ///
    /// # Panics
    /// On socket errors.
    pub fn send(&mut self, message: &ferry_protocol::message::Message) {
        use std::io::Write;
        let mut out = Vec::new();
        self.transport.seal(message, &mut out).expect("seal");
        self.stream.write_all(&out).expect("write");
    }

    /// Receives one message; `None` when the relay closed the connection.
    ///
    /// # Panics
    /// On anything but a well-formed message or EOF.
    pub fn recv(&mut self) -> Option<ferry_protocol::message::Message> {
        use std::io::Read;
        loop {
            let mut header = [0u8; 2];
            if self.stream.read_exact(&mut header).is_err() {
                return None;
            }
            let mut frame = vec![0u8; usize::from(u16::from_be_bytes(header))];
            self.stream.read_exact(&mut frame).expect("frame");
            if let Some(message) = self.transport.open(&frame).expect("open") {
                return Some(message);
            }
        }
    }
}

/// An HTTP response as a test reads it.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The header lines, as sent.
    pub headers: String,
    /// The body.
    pub body: String,
}

/// `GET path` on `addr` over HTTP/1.1 with `Connection: close`, and a
/// bearer `token` when given. (A client's few lines, for tests; the relay
/// serves with axum.)
pub fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> HttpResponse {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the web listener");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    HttpResponse {
        status,
        headers: head.to_string(),
        body: if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    }
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) to
/// `addr`: the answer's head, and its body's bytes as sent.
pub fn http_raw(addr: SocketAddr, request: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the web listener");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |at| at + 4);
    (
        String::from_utf8_lossy(&raw[..end]).into_owned(),
        raw[end..].to_vec(),
    )
}

/// The body of a chunked transfer.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}
