//! A real `ferry-relay` for benchmarks: started in a temporary directory,
//! with clients paired through the real binaries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use ferry_net::io::keyfile;
use ferry_protocol::frame::encode_frame;
use ferry_protocol::keys::{PublicKey, StaticKeypair};
use ferry_protocol::session::Initiator;
use ferry_protocol::timestamp::Timestamp;
use ferry_protocol::version::{ConnectionKind, Preamble};

/// A client paired with the relay: its key and the relay's.
#[derive(Debug)]
pub struct PairedClient {
    /// The endpoint's static key.
    pub keys: StaticKeypair,
    /// The relay's public key.
    pub relay: PublicKey,
}

impl PairedClient {
    /// Starts a session handshake now: the initiator's state, and the
    /// bytes to send (the preamble and the first message, framed).
    ///
    /// # Errors
    /// When the clock is before 1970 or snow fails.
    pub fn first_message(&self) -> Result<(Initiator, Vec<u8>)> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        let mut first = Vec::new();
        let initiator = Initiator::start(
            &self.keys,
            &self.relay,
            Timestamp::from_unix(now),
            &mut first,
        )?;
        let mut out = Preamble::current(ConnectionKind::Session).encode().to_vec();
        encode_frame(&first, &mut out)?;
        Ok((initiator, out))
    }
}

/// A running relay; killed on drop.
#[derive(Debug)]
pub struct BenchRelay {
    /// The relay process.
    pub process: Child,
    /// Where sessions connect.
    pub session: std::net::SocketAddr,
    /// The paired clients.
    pub clients: Vec<PairedClient>,
    _dir: tempfile::TempDir,
}

impl Drop for BenchRelay {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn ok(command: &mut Command) -> Result<String> {
    let out = command.output()?;
    if !out.status.success() {
        bail!("{command:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts a relay whose relay.toml `edit` adjusts, and pairs `clients`.
///
/// # Errors
/// When a binary fails or the relay does not start.
pub fn start(
    relay_bin: &Path,
    endpoint_bin: &Path,
    clients: usize,
    edit: impl FnOnce(String) -> String,
) -> Result<BenchRelay> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("relay");
    ok(Command::new(relay_bin).arg("--data").arg(&data).args([
        "init",
        "--listen",
        "127.0.0.1:0",
        "--pair-listen",
        "127.0.0.1:0",
    ]))?;
    let config = std::fs::read_to_string(data.join("relay.toml"))?;
    std::fs::write(data.join("relay.toml"), edit(config))?;
    let process = Command::new(relay_bin)
        .arg("--data")
        .arg(&data)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()?;
    let listen = data.join("run/listen.json");
    let started = Instant::now();
    let v: serde_json::Value = loop {
        if let Ok(text) = std::fs::read_to_string(&listen) {
            break serde_json::from_str(&text)?;
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("relay did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let session = v["session"].as_str().context("session")?.parse()?;
    let pairing = v["pairing"].as_str().context("pairing")?.to_string();
    let mut paired = Vec::new();
    for i in 0..clients {
        let name = format!("bench-{i}");
        let out = ok(Command::new(relay_bin)
            .arg("--data")
            .arg(&data)
            .args(["pair", "--name", &name, "--json"]))?;
        let code: serde_json::Value = serde_json::from_str(&out)?;
        let state: PathBuf = dir.path().join(&name);
        ok(Command::new(endpoint_bin).arg("--state").arg(&state).args([
            "pair",
            "--relay",
            &pairing,
            "--code",
            code["code"].as_str().context("code")?,
        ]))?;
        let keys = keyfile::load(&state.join("keys/endpoint.key"))?;
        let record = std::fs::read_to_string(state.join("relay.toml"))?;
        let hex = record
            .lines()
            .find_map(|l| l.strip_prefix("relay-key = "))
            .context("relay-key")?
            .trim_matches('"');
        paired.push(PairedClient {
            keys,
            relay: PublicKey::from_hex(hex)?,
        });
    }
    Ok(BenchRelay {
        process,
        session,
        clients: paired,
        _dir: dir,
    })
}

/// The relay's peak resident memory so far (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
