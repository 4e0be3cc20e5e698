//! Every command the README shows is run, by this test or by the one it
//! names. This test reads the README's `sh` blocks and runs their lines
//! through bash, as a reader would type them, with only what must differ on
//! a test machine put in: the relay's data directory for
//! `/var/lib/ferry-relay` (no `sudo -u`), the line `ferry-relay pair`
//! really printed for the README's example one, a temporary HOME, and a
//! passphrase file for the terminal. A line it neither runs nor names is a
//! failure: a new README command needs a test.

use std::fs;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use ferry_tests::*;

/// README lines run elsewhere, and where.
const ELSEWHERE: &[(&str, &str)] = &[
    ("deploy/package.sh", "tests/tests/package.rs runs it on the suite's binaries"),
    ("sudo apt install ./target/debian/ferry-relay_*.deb", "tests/tests/package.rs installs both packages with dpkg -i (what apt does with a local .deb, besides fetching Depends)"),
    ("sudo apt install ./target/debian/ferry_*.deb", "tests/tests/package.rs, as above"),
    ("./demo.sh", "the_demo_runs below, on the suite's binaries"),
    ("tests/peers.sh && cargo test --workspace", ".ci/run runs it"),
    ("sudo systemctl enable --now ferry-relay", "no systemd on CI: tests/tests/package.rs verifies the unit (systemd-analyze) and that serve tells systemd it is ready; this test serves the relay as the unit does"),
    ("systemctl --user enable --now ferry", "no systemd on CI: tests/tests/package.rs verifies the user unit and that ferry daemon tells systemd it is ready"),
];

/// The README's commands, in order: each `sh` block's lines, comments
/// and blank lines left out.
fn readme_commands() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let mut commands = Vec::new();
    let mut inside = false;
    for line in readme.lines() {
        match line.trim() {
            "```sh" => inside = true,
            "```" => inside = false,
            text if inside && !text.is_empty() && !text.starts_with('#') => {
                let command = match text.find("  #") {
                    Some(at) => &text[..at],
                    None => text,
                };
                commands.push(command.trim().to_string());
            }
            _ => {}
        }
    }
    commands
}

/// Runs README lines through bash as a reader would.
struct Reader {
    relay: Relay,
    work: PathBuf,
    state: PathBuf,
    passphrase: PathBuf,
    /// The `ferry pair` line the relay printed last.
    pair_line: Option<String>,
}

impl Reader {
    fn shell(&self, line: &str) -> Command {
        self.shell_on(line, &self.relay.data())
    }

    /// `line` with the relay's data directory `data`.
    fn shell_on(&self, line: &str, data: &std::path::Path) -> Command {
        let bin_dir = binary("ferry").parent().unwrap().to_path_buf();
        let line = line
            .replace(
                "sudo -u ferry-relay ferry-relay --data /var/lib/ferry-relay",
                "ferry-relay",
            )
            .replace("sudo -u ferry-relay ferry-relay", "ferry-relay")
            .replace(
                "ferry-relay ",
                &format!("ferry-relay --data '{}' ", data.display()),
            )
            .replace("/tmp/docs", &self.work.join("docs").display().to_string());
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(format!("set -e\n{line}"))
            .current_dir(&self.work)
            .env("HOME", self.work.join("home"))
            .env("FERRY_STATE", &self.state)
            .env("FERRY_PASSPHRASE_FILE", &self.passphrase)
            .env(
                "PATH",
                format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
            );
        c
    }

    /// Runs `line` as the README shows it; its output.
    fn run(&mut self, line: &str) -> String {
        if line.starts_with("ferry pair --relay ") {
            let printed = self
                .pair_line
                .take()
                .expect("a code from ferry-relay pair first");
            return ok(run(self.shell(&printed)));
        }
        if line.contains("ferry-relay pair --name") {
            // It prints the line and waits for the endpoint: read the line,
            // let the next README line pair, then see it end.
            let mut child = self
                .shell(line)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap());
            let printed = read_until(&mut lines, "on the endpoint run: ");
            self.pair_line = Some(
                printed
                    .trim()
                    .trim_start_matches("on the endpoint run: ")
                    .to_string(),
            );
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            return printed;
        }
        ok(run(self.shell(line)))
    }
}

#[test]
fn every_command_the_readme_shows_runs() {
    let commands = readme_commands();
    assert!(commands.len() >= 20, "{commands:?}");
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    fs::create_dir_all(home.join("Documents/letters")).unwrap();
    fs::create_dir_all(home.join("projects")).unwrap();
    fs::write(home.join("Documents/notes.txt"), "first notes\n").unwrap();
    fs::write(
        home.join("Documents/letters/cv.odt"),
        ferry_tests::tree::random_bytes(300_000, 3),
    )
    .unwrap();
    fs::write(home.join("projects/main.rs"), "fn main() {}\n").unwrap();
    let passphrase = work.path().join("passphrase");
    fs::write(&passphrase, "correct horse battery staple\n").unwrap();
    let first_state = work.path().join("laptop");
    let mut reader = Reader {
        relay: Relay::start(),
        work: work.path().to_path_buf(),
        state: first_state,
        passphrase,
        pair_line: None,
    };
    let mut ran = 0;
    for line in &commands {
        if let Some((_, why)) = ELSEWHERE.iter().find(|(l, _)| l == line) {
            eprintln!("README: {line}\n  run by {why}");
            continue;
        }
        eprintln!("README: {line}");
        if line.contains(" init --public ") {
            // A new relay of its own: the one serving here was made so.
            let fresh = work.path().join("fresh-relay");
            let mut c = reader.shell_on(line, &fresh);
            c.env_remove("FERRY_STATE");
            let out = ok(run(c));
            assert!(out.contains("web admin token: "), "{out}");
            ran += 1;
            continue;
        }
        if line.contains("--replace") {
            // The new machine: a state of its own from here on.
            reader.state = work.path().join("new-laptop");
        }
        let out = reader.run(line);
        eprintln!("{out}");
        ran += 1;
    }
    assert!(ran >= 15, "only {ran} README lines ran");
    // What the README promised: the restores hold the files.
    let restored = work.path().join("docs");
    assert_eq!(
        fs::read(restored.join("notes.txt")).unwrap(),
        b"first notes\na change\n"
    );
    assert_eq!(
        fs::read(restored.join("letters/cv.odt")).unwrap(),
        fs::read(home.join("Documents/letters/cv.odt")).unwrap()
    );
    assert!(reader.work.join("vault-key.txt").exists());
}

/// The README's first command: the demo, on the binaries this suite built
/// (`FERRY_BIN`; by hand it builds release ones first).
#[test]
fn the_demo_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = Command::new(root.join("demo.sh"));
    c.env("FERRY_BIN", binary("ferry").parent().unwrap());
    let out = ok(run(c));
    for step in ["== 1.", "pairing code", "snapshot", "restore"] {
        assert!(out.contains(step), "the demo shows {step:?}:\n{out}");
    }
}

#[test]
fn the_readme_is_short() {
    let lines = include_str!("../../README.md").lines().count();
    assert!(
        lines < 300,
        "the README has {lines} lines: it is for a newcomer; move detail to docs/"
    );
}
