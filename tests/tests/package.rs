//! `deploy/package.sh` builds Debian packages of both binaries holding what
//! an admin expects: the binary, the systemd unit pointing at it, example
//! configuration, completions for three shells and a man page per
//! subcommand.

use std::path::Path;
use std::process::Command;

use ferry_tests::{binary, ok, run};

fn contents(deb: &Path) -> String {
    let mut c = Command::new("dpkg-deb");
    c.arg("--contents").arg(deb);
    ok(run(c))
}

#[test]
fn packages_hold_binaries_units_docs_completions_and_man_pages() {
    let (_out, built) = packages(&["--uncompressed"]);
    let debs: Vec<&str> = built.lines().collect();
    assert_eq!(debs.len(), 2, "{built}");
    let relay = contents(Path::new(debs[0]));
    for path in [
        "./usr/bin/ferry-relay",
        "./lib/systemd/system/ferry-relay.service",
        "./usr/share/doc/ferry-relay/relay.example.toml",
        "./usr/share/doc/ferry-relay/grafana-dashboard.json",
        "./usr/lib/ferry/alert-mail.sh",
        "./usr/lib/ferry/alert-webhook.sh",
        "./usr/share/bash-completion/completions/ferry-relay",
        "./usr/share/zsh/vendor-completions/_ferry-relay",
        "./usr/share/fish/vendor_completions.d/ferry-relay.fish",
        "./usr/share/man/man1/ferry-relay.1.gz",
        "./usr/share/man/man1/ferry-relay-serve.1.gz",
        "./usr/share/man/man5/relay.toml.5.gz",
    ] {
        assert!(
            relay.contains(path),
            "ferry-relay's package lacks {path}:\n{relay}"
        );
    }
    let endpoint = contents(Path::new(debs[1]));
    for path in [
        "./usr/bin/ferry",
        "./lib/systemd/system/ferry-endpoint.service",
        "./usr/share/doc/ferry/endpoint.example.toml",
        "./usr/share/bash-completion/completions/ferry",
        "./usr/share/man/man1/ferry-backup.1.gz",
        "./usr/lib/systemd/user/ferry.service",
        "./usr/share/man/man5/endpoint.toml.5.gz",
        "./usr/share/doc/ferry/changelog.gz",
    ] {
        assert!(
            endpoint.contains(path),
            "ferry's package lacks {path}:\n{endpoint}"
        );
    }
    let info = ok(run({
        let mut c = Command::new("dpkg-deb");
        c.args(["--field", debs[0], "Package", "Depends"]);
        c
    }));
    assert!(info.contains("Package: ferry-relay"), "{info}");
    let unit = ok(run({
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "dpkg-deb --fsys-tarfile \"$0\" | tar -xO ./lib/systemd/system/ferry-relay.service",
            debs[0],
        ]);
        c
    }));
    assert!(
        unit.contains("ExecStart=/usr/bin/ferry-relay serve"),
        "the unit runs the packaged binary: {unit}"
    );
    let endpoint_unit = member(debs[1], "./lib/systemd/system/ferry-endpoint.service");
    assert!(
        endpoint_unit.contains("Environment=FERRY_STATE=/var/lib/ferry\n")
            && endpoint_unit.contains("StateDirectory=ferry\n")
            && !endpoint_unit.contains("/etc/ferry"),
        "the root endpoint keeps its state under /var/lib/ferry: {endpoint_unit}"
    );
    for (deb, name, unit) in [
        (debs[0], "ferry-relay", "ferry-relay.service"),
        (debs[1], "ferry", "ferry-endpoint.service"),
    ] {
        let copyright = member(deb, &format!("./usr/share/doc/{name}/copyright"));
        assert!(
            copyright.contains("License: MIT or Apache-2.0"),
            "{copyright}"
        );
        let prerm = control_file(deb, "prerm");
        assert!(
            prerm.contains(&format!("deb-systemd-invoke stop {unit}")),
            "{name}'s prerm stops its service: {prerm}"
        );
        let postrm = control_file(deb, "postrm");
        assert!(
            postrm.contains(&format!("deb-systemd-helper disable {unit}")),
            "{name}'s postrm disables its service: {postrm}"
        );
        // Stripped: no symbol table, no debug sections.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join(name);
        std::fs::write(&bin, member_bytes(deb, &format!("./usr/bin/{name}"))).unwrap();
        let sections = ok(run({
            let mut c = Command::new("readelf");
            c.arg("-SW").arg(&bin);
            c
        }));
        assert!(
            ![".symtab", ".debug_info", ".debug_line"]
                .iter()
                .any(|s| sections.contains(s)),
            "{name} is not stripped:\n{sections}"
        );
    }
}

/// Both packages of the binaries this suite built, by `deploy/package.sh
/// ARGS` into a temporary directory: the directory, and the paths it
/// printed.
fn packages(args: &[&str]) -> (tempfile::TempDir, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().unwrap();
    let bin_dir = binary("ferry").parent().unwrap().to_path_buf();
    let built = ok(run({
        let mut c = Command::new(root.join("deploy/package.sh"));
        c.arg("--bin-dir")
            .arg(&bin_dir)
            .arg("--out")
            .arg(out.path())
            .args(args);
        c
    }));
    (out, built)
}

/// A file of the package's data, as text.
fn member(deb: &str, path: &str) -> String {
    String::from_utf8(member_bytes(deb, path)).unwrap()
}

/// A file of the package's data.
fn member_bytes(deb: &str, path: &str) -> Vec<u8> {
    let mut c = Command::new("sh");
    c.args([
        "-c",
        "dpkg-deb --fsys-tarfile \"$0\" | tar -xO \"$1\"",
        deb,
        path,
    ]);
    let out = run(c);
    assert!(out.status.success(), "{path} in {deb}");
    out.stdout
}

/// A maintainer script or control file of the package.
fn control_file(deb: &str, name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new("dpkg-deb");
    c.arg("--control").arg(deb).arg(dir.path());
    ok(run(c));
    std::fs::read_to_string(dir.path().join(name)).unwrap_or_default()
}

/// The packages as an admin installs them: built compressed (their sizes
/// printed), lintian clean but for the tags `deploy/lintian-explained.txt`
/// explains, installed with `dpkg -i` (the user, the data directory, the
/// binaries), their three units verified by `systemd-analyze verify`, and
/// removed with `dpkg -r` (the binaries go, the relay's data stays).
/// Installing needs root (CI runs as root); as another user the units are
/// verified against the built binaries instead, and the test says so.
#[test]
fn the_packages_pass_lintian_install_with_dpkg_and_remove_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin_dir = binary("ferry").parent().unwrap().to_path_buf();
    let (_out, built) = packages(&[]);
    let debs: Vec<&str> = built.lines().collect();
    for deb in &debs {
        let size = std::fs::metadata(deb).unwrap().len();
        eprintln!("{deb}: {:.1} MiB", size as f64 / 1048576.0);
    }

    // lintian: no error, no warning, only explained information.
    let explained = std::fs::read_to_string(root.join("deploy/lintian-explained.txt")).unwrap();
    let explained: Vec<&str> = explained
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':').map(|(tag, _)| tag))
        .collect();
    let lintian = run({
        let mut c = Command::new("lintian");
        c.arg("--display-info").args(&debs);
        c
    });
    let report = String::from_utf8_lossy(&lintian.stdout).into_owned();
    eprintln!("lintian:\n{report}");
    for line in report.lines() {
        let mut fields = line.splitn(3, ": ");
        let (level, tag) = (fields.next().unwrap_or(""), fields.nth(1).unwrap_or(""));
        let tag = tag.split_whitespace().next().unwrap_or("");
        assert!(
            level == "I" && explained.contains(&tag),
            "lintian: {line} (fix it, or explain it in deploy/lintian-explained.txt)"
        );
    }

    let units = [
        "lib/systemd/system/ferry-relay.service",
        "lib/systemd/system/ferry-endpoint.service",
        "usr/lib/systemd/user/ferry.service",
    ];
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: dpkg -i and -r need root (CI runs as root); the units are verified against the built binaries instead");
        let dir = tempfile::tempdir().unwrap();
        for (deb, unit) in [
            (debs[0], units[0]),
            (debs[1], units[1]),
            (debs[1], units[2]),
        ] {
            let text = member(deb, &format!("./{unit}"))
                .replace("/usr/bin/", &format!("{}/", bin_dir.display()));
            let file = dir.path().join(Path::new(unit).file_name().unwrap());
            std::fs::write(&file, text).unwrap();
            verify_unit(&file);
        }
        return;
    }
    let installed_before = Path::new("/usr/bin/ferry-relay").exists()
        || Path::new("/var/lib/ferry-relay").exists()
        || run({
            let mut c = Command::new("dpkg");
            c.args(["-s", "ferry-relay"]);
            c
        })
        .status
        .success();
    assert!(
        !installed_before,
        "ferry-relay is installed on this machine already: this test installs and removes the packages, and will not touch a real installation"
    );
    let _cleanup = Uninstall {
        user: !user_exists("ferry-relay"),
    };
    let installed = ok(run({
        let mut c = Command::new("dpkg");
        c.arg("-i").args(&debs);
        c
    }));
    assert!(
        installed.contains("sudo -u ferry-relay ferry-relay --data /var/lib/ferry-relay init"),
        "the relay's package says what to do next: {installed}"
    );
    for name in ["ferry-relay", "ferry"] {
        let version = ok(run({
            let mut c = Command::new(format!("/usr/bin/{name}"));
            c.arg("--version");
            c
        }));
        assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    }
    assert!(user_exists("ferry-relay"), "the package made its user");
    let data = std::fs::metadata("/var/lib/ferry-relay").unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(data.permissions().mode() & 0o777, 0o700);
    assert_ne!(data.uid(), 0, "the data directory is the relay user's");
    for unit in units {
        verify_unit(&Path::new("/").join(unit));
    }
    ok(run({
        let mut c = Command::new("dpkg");
        c.args(["-r", "ferry-relay", "ferry"]);
        c
    }));
    assert!(!Path::new("/usr/bin/ferry-relay").exists());
    assert!(!Path::new("/usr/bin/ferry").exists());
    assert!(
        Path::new("/var/lib/ferry-relay").exists(),
        "removing the package never removes the relay's data"
    );
}

/// Leaves the machine as it was, whatever the test's outcome: the packages
/// purged, the data directory the test made and (when the test made it)
/// the relay's user gone.
struct Uninstall {
    user: bool,
}

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "ferry-relay", "ferry"])
            .output();
        let _ = std::fs::remove_dir("/var/lib/ferry-relay");
        if self.user {
            let _ = Command::new("userdel").arg("ferry-relay").output();
        }
    }
}

/// `systemd-analyze verify` says nothing about `unit`.
fn verify_unit(unit: &Path) {
    let out = run({
        let mut c = Command::new("systemd-analyze");
        c.arg("verify").arg(unit);
        c
    });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {}: {said}",
        unit.display()
    );
}

fn user_exists(name: &str) -> bool {
    run({
        let mut c = Command::new("getent");
        c.args(["passwd", name]);
        c
    })
    .status
    .success()
}

/// Under systemd (`Type=notify`, `WatchdogSec=`): the relay says READY=1
/// once it listens, beats the watchdog while its catalog answers, and says
/// STOPPING=1 when told to stop; the endpoint's daemon says READY=1 too.
#[test]
fn the_relay_and_the_daemon_tell_systemd_they_are_ready_and_alive() {
    use ferry_tests::{Endpoint, Relay, RelayOptions, DEADLINE};
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let said = |until: &str| {
        let mut all = String::new();
        let mut buf = [0u8; 4096];
        while !all.contains(until) {
            let n = socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {until} from the service ({e}); it said: {all}"));
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
            all.push('\n');
        }
        all
    };
    let env = vec![
        (
            "NOTIFY_SOCKET".to_string(),
            socket_path.display().to_string(),
        ),
        ("WATCHDOG_USEC".to_string(), "400000".to_string()),
    ];
    let mut relay = Relay::start_with(RelayOptions {
        env: env.clone(),
        ..RelayOptions::default()
    });
    let ready = said("READY=1");
    assert!(ready.contains("STATUS=sessions on 127.0.0.1:"), "{ready}");
    said("WATCHDOG=1");
    said("WATCHDOG=1");
    assert!(relay.terminate().success());
    said("STOPPING=1");

    // The daemon of an endpoint with one scheduled set.
    relay.start_again();
    said("READY=1");
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(
        endpoint.state().join("endpoint.toml"),
        format!(
            "[sets.home]\npaths = [\"{}\"]\ninterval = \"1h\"\n",
            src.display()
        ),
    )
    .unwrap();
    // Its own socket: the relay beats on the other one meanwhile.
    let daemon_path = dir.path().join("notify-daemon");
    let daemon_socket = UnixDatagram::bind(&daemon_path).unwrap();
    daemon_socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut daemon = endpoint.command();
    daemon
        .arg("daemon")
        .env("NOTIFY_SOCKET", &daemon_path)
        .env("WATCHDOG_USEC", "400000");
    let mut child = daemon.spawn().unwrap();
    let mut heard = String::new();
    let mut buf = [0u8; 4096];
    while !(heard.contains("READY=1") && heard.contains("WATCHDOG=1")) {
        let n = daemon_socket.recv(&mut buf).unwrap_or_else(|e| {
            panic!("the daemon did not say READY=1 and WATCHDOG=1 ({e}): {heard}")
        });
        heard.push_str(&String::from_utf8_lossy(&buf[..n]));
        heard.push('\n');
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(heard.contains("STATUS=backing up sets"), "{heard}");
}
