//! Shell completions and man pages of both binaries, as a packager
//! installs them.

use std::process::Command;

use ferry_tests::{binary, ok, run};

fn output(bin: &str, args: &[&str]) -> String {
    let mut command = Command::new(binary(bin));
    command.args(args);
    ok(run(command))
}

#[test]
fn completions_for_each_shell_name_the_subcommands() {
    // The relay's scripts are fixed; the endpoint's ask the binary itself
    // (see bash_completes_set_names_and_compression_values).
    let bash = output("ferry-relay", &["completions", "bash"]);
    assert!(bash.contains("complete -F _ferry__relay"), "{bash}");
    let zsh = output("ferry-relay", &["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef ferry-relay"), "{zsh}");
    let fish = output("ferry-relay", &["completions", "fish"]);
    assert!(fish.contains("complete -c ferry-relay"), "{fish}");
    assert!(fish.contains("retention"));
    let bash = output("ferry", &["completions", "bash"]);
    assert!(bash.contains("-F _clap_complete_ferry ferry"), "{bash}");
    let zsh = output("ferry", &["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef ferry"), "{zsh}");
    let fish = output("ferry", &["completions", "fish"]);
    assert!(fish.contains("COMPLETE=fish ferry --"), "{fish}");
    let mut wrong = Command::new(binary("ferry"));
    wrong.args(["completions", "tcsh"]);
    let out = run(wrong);
    assert_eq!(out.status.code(), Some(2), "a usage error");
}

#[test]
fn man_pages_print_or_go_into_a_directory() {
    let page = output("ferry", &["man"]);
    assert!(page.contains(".TH ferry 1"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    output(
        "ferry-relay",
        &["man", "--dir", dir.path().to_str().unwrap()],
    );
    let serve = std::fs::read_to_string(dir.path().join("ferry-relay-serve.1")).unwrap();
    assert!(serve.contains("ferry\\-relay serve"), "{serve}");
    assert!(
        serve.contains("\\-\\-web"),
        "the serve page names --web: {serve}"
    );
    assert!(dir.path().join("ferry-relay.1").exists());
}

/// Runs `command` with its standard output closed before it prints (as
/// `| head -1` closes it after a line); returns its exit code and stderr.
fn with_stdout_closed(mut command: Command) -> (Option<i32>, String) {
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_pipe_ends_commands_quietly() {
    let (relay, endpoint) = ferry_tests::paired();
    let mut status = endpoint.command();
    status.arg("status");
    let mut clients = relay.command();
    clients.args(["clients", "list"]);
    let mut man = Command::new(binary("ferry"));
    man.arg("man");
    for command in [status, clients, man] {
        let (code, err) = with_stdout_closed(command);
        assert!(matches!(code, Some(0 | 141)), "exit {code:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!err.contains("error"), "{err}");
    }
}

#[test]
fn a_failure_with_json_is_one_line_and_a_json_error_object() {
    let (relay, endpoint) = ferry_tests::paired();
    let out = endpoint.ferry(&["backup", "--json", "/nonexistent/usb-disk"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        answer["error"].as_str().unwrap().contains("no such file"),
        "{answer}"
    );
    // The relay's admin commands alike.
    let out = relay.admin(&["clients", "show", "nobody", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(answer["error"].is_string(), "{answer}");
}

#[test]
fn root_on_another_users_relay_is_told_the_exact_line_to_type() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let data_arg = data.to_str().unwrap();
    output(
        "ferry-relay",
        &[
            "--data",
            data_arg,
            "init",
            "--listen",
            "127.0.0.1:0",
            "--pair-listen",
            "127.0.0.1:0",
        ],
    );
    let as_root = id(&["-u"]) == "0";
    if !as_root {
        // A user on a relay of its own is never sent elsewhere; the root
        // case needs root to set up (CI runs as root; the relay's unit
        // test covers the line).
        eprintln!("not root: only the owner's own case is checked");
        output("ferry-relay", &["--data", data_arg, "clients", "list"]);
        return;
    }
    for path in walk(&data) {
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    }
    let mut command = Command::new(binary("ferry-relay"));
    command.args(["--data", data_arg, "clients", "list"]);
    let out = run(command);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let user = id(&["-nu", "65534"]);
    let line = format!("sudo -u {user} ferry-relay --data {data_arg} clients list");
    assert!(err.contains(&line), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// What the system's `id` says.
fn id(args: &[&str]) -> String {
    let mut command = Command::new("id");
    command.args(args);
    ok(run(command)).trim().to_string()
}

/// `root` and everything under it.
fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![root.to_path_buf()];
    if root.is_dir() {
        for entry in std::fs::read_dir(root).unwrap() {
            all.extend(walk(&entry.unwrap().path()));
        }
    }
    all
}

/// Completions that know what only the binary knows: `--set` offers the
/// set names of endpoint.toml, `--compression` its four values, through
/// the real bash with the script `ferry completions bash` prints (called as
/// bash calls it: the command, the word being completed, the one before).
#[test]
fn bash_completes_set_names_and_compression_values() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("endpoint.toml"),
        "[sets.home]\npaths = [\"/tmp\"]\n\n[sets.photos]\npaths = [\"/tmp\"]\n",
    )
    .unwrap();
    let bin_dir = binary("ferry").parent().unwrap().to_path_buf();
    let complete = |words: &str| {
        let script = format!(
            "source <(ferry completions bash)\nCOMP_WORDS=({words})\nCOMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n_clap_complete_ferry ferry \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\nprintf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(script)
            .env("FERRY_STATE", state.path())
            .env(
                "PATH",
                format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
            );
        ok(run(c))
    };
    assert_eq!(complete("ferry backup --set ''"), "home\nphotos\n");
    assert_eq!(complete("ferry restore --set ph"), "photos\n");
    assert_eq!(
        complete("ferry backup --compression ''"),
        "auto\nlz4\nzstd\nnone\n"
    );
    assert!(complete("ferry res").contains("restore"));
}
