//! The tests' PostgreSQL: Debian's (`apt-get install postgresql`, which
//! `tests/peers.sh` does), a cluster made with `initdb` in a temporary
//! directory and run with `pg_ctl` on a free loopback port, as an
//! unprivileged user (`nobody` when the tests run as root, as PostgreSQL
//! refuses root). Stopped when dropped; a shared one is stopped by a
//! watcher when the process that started it ends.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The unprivileged user a root test runs PostgreSQL as (`nobody`).
const NOBODY: u32 = 65534;

/// A running PostgreSQL cluster.
#[derive(Debug)]
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    databases: AtomicU32,
}

impl PgServer {
    /// Makes and starts a cluster.
    ///
    /// # Panics
    /// When PostgreSQL is not installed (the message says how to install
    /// it) or does not start.
    pub fn start() -> PgServer {
        let bin = binaries();
        let dir = tempfile::Builder::new()
            .prefix("ferry-pg")
            .tempdir()
            .expect("cannot make a directory for PostgreSQL");
        if rustix::process::geteuid().is_root() {
            let nobody = Some(rustix::process::Uid::from_raw(NOBODY));
            let nogroup = Some(rustix::process::Gid::from_raw(NOBODY));
            rustix::fs::chown(dir.path(), nobody, nogroup)
                .expect("cannot hand the directory to nobody");
        }
        let data = dir.path().join("data");
        run(
            as_postgres(&bin, "initdb")
                .args([
                    "-U",
                    "ferry",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data),
            "initdb",
        );
        make_certificates(&bin, dir.path());
        let port = free_port();
        let server = PgServer {
            dir,
            bin,
            port,
            databases: AtomicU32::new(0),
        };
        server.pg_ctl("start");
        server
    }

    /// One cluster for the whole test binary, started on first use.
    pub fn shared() -> &'static PgServer {
        static SHARED: std::sync::OnceLock<PgServer> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let server = PgServer::start();
            server.stop_when_gone(std::process::id());
            server
        })
    }

    /// A new, empty database; its `postgres://` URL.
    ///
    /// # Panics
    /// When the server refuses.
    pub fn database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("ferry_{}_{n}", std::process::id());
        let mut admin = postgres::Client::connect(&self.address("postgres"), postgres::NoTls)
            .expect("cannot connect to the tests' PostgreSQL");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("cannot create a database");
        self.url(&name)
    }

    /// Whether a session of the database at `url` holds the catalog's
    /// writers' lock (a relay inside a write transaction).
    ///
    /// # Panics
    /// When the server refuses.
    pub fn writer_lock_held(&self, url: &str) -> bool {
        let path = url.split('?').next().unwrap_or_default();
        let name = path.rsplit('/').next().unwrap_or_default();
        let mut admin = postgres::Client::connect(&self.address("postgres"), postgres::NoTls)
            .expect("cannot connect to the tests' PostgreSQL");
        let held: i64 = admin
            .query_one(
                "SELECT COUNT(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                 WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1",
                &[&name],
            )
            .expect("cannot read pg_locks")
            .get(0);
        held > 0
    }

    /// The URL of database `name`: over TLS, verified against the
    /// cluster's own CA (`sslrootcert`).
    pub fn url(&self, name: &str) -> String {
        format!("{}?sslrootcert={}", self.address(name), self.ca().display())
    }

    /// The URL of database `name` without TLS settings (the PostgreSQL
    /// client's own connections, in the clear on loopback).
    pub fn address(&self, name: &str) -> String {
        format!("postgres://ferry@127.0.0.1:{}/{name}", self.port)
    }

    /// The PEM file of the CA that signed the server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Restarts the server (`pg_ctl restart -m fast`): every connection
    /// is cut, committed data stays.
    pub fn restart(&self) {
        self.pg_ctl("restart");
    }

    /// Stops the server (`pg_ctl stop -m fast`) until [`PgServer::resume`].
    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    /// Starts it again after [`PgServer::stop`].
    pub fn resume(&self) {
        self.pg_ctl("start");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, action: &str) {
        let dir = self.dir.path().display();
        let options = format!(
            "-p {} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on -c ssl_cert_file={dir}/server.pem -c ssl_key_file={dir}/server.key",
            self.port,
        );
        run(
            as_postgres(&self.bin, "pg_ctl")
                .args([action, "-w", "-m", "fast", "-D"])
                .arg(self.data())
                .args(["-l"])
                .arg(self.dir.path().join("log"))
                .args(["-o", &options]),
            &format!("pg_ctl {action}"),
        );
    }

    /// Starts a watcher that stops the server once process `parent` ends.
    fn stop_when_gone(&self, parent: u32) {
        let script = format!(
            "while [ -d /proc/{parent} ]; do sleep 1; done; \"$0\" stop -m immediate -D \"$1\" >/dev/null 2>&1; rm -rf \"$2\""
        );
        let _ = as_postgres(&self.bin, "sh")
            .args(["-c", &script])
            .arg(self.bin.join("pg_ctl"))
            .arg(self.data())
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Where Debian puts PostgreSQL's programs (the newest version's).
fn binaries() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    found.pop().expect(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run tests/peers.sh, or apt-get install postgresql",
    )
}

/// A command of PostgreSQL's (or `sh`) run as the unprivileged user when
/// the tests run as root.
fn as_postgres(bin: &Path, program: &str) -> Command {
    let path = if program == "sh" {
        PathBuf::from("/bin/sh")
    } else {
        bin.join(program)
    };
    let mut command = Command::new(path);
    if rustix::process::geteuid().is_root() {
        command.uid(NOBODY).gid(NOBODY).env("HOME", "/tmp");
    }
    command.current_dir("/");
    command
}

/// A CA and a certificate for 127.0.0.1 it signed, made with `openssl` in
/// `dir` as the server's user (its key must be the server's, mode 0600).
fn make_certificates(bin: &Path, dir: &Path) {
    let script = r#"set -e; cd "$0"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout ca.key -out ca.pem -days 2 -subj "/CN=ferry tests CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
  -out server.pem -days 2 -extfile server.ext 2>/dev/null
chmod 600 server.key ca.key; chmod 644 ca.pem"#;
    run(
        as_postgres(bin, "sh").args(["-c", script]).arg(dir),
        "openssl (the tests' PostgreSQL certificates; apt-get install openssl)",
    );
}

fn run(command: &mut Command, what: &str) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}
