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
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().unwrap();
    let bin_dir = binary("ferry").parent().unwrap().to_path_buf();
    let built = ok(run({
        let mut c = Command::new(root.join("deploy/package.sh"));
        c.arg("--bin-dir")
            .arg(&bin_dir)
            .arg("--out")
            .arg(out.path())
            .arg("--uncompressed");
        c
    }));
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
            prerm.contains(&format!("systemctl disable --now {unit}")),
            "{name}'s prerm stops its service: {prerm}"
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
