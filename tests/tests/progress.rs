//! The progress bar of `ferry backup` and `ferry restore`: drawn on a
//! terminal (a pseudo-terminal made by util-linux's `script`), absent when
//! stderr is a pipe or with `--json`.

use std::fs;
use std::process::Command;

use ferry_tests::tree::random_bytes;
use ferry_tests::{binary, paired, run, stderr};

/// Runs `ferry --state STATE ARGS` under a pseudo-terminal; returns what
/// the terminal showed.
fn on_a_terminal(state: &std::path::Path, args: &[&str]) -> String {
    let mut line = format!("{} --state {}", binary("ferry").display(), state.display());
    for arg in args {
        line.push(' ');
        line.push_str(arg);
    }
    let mut script = Command::new("script");
    script.args(["-qfec", &line, "/dev/null"]);
    let out = run(script);
    assert!(
        out.status.success(),
        "`script` (util-linux) ran {line}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn backup_and_restore_show_a_bar_on_a_terminal_only() {
    let (_relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4u64 {
        fs::write(src.join(format!("f{i}.bin")), random_bytes(1 << 20, i + 1)).unwrap();
    }
    let state = endpoint.state();
    let src_arg = src.to_str().unwrap();

    // About 2 s at 2 MB/s: the bar is drawn several times.
    let shown = on_a_terminal(&state, &["backup", "--limit", "2MB/s", src_arg]);
    assert!(
        shown.contains("files ·"),
        "no progress bar on the terminal:\n{shown}"
    );
    assert!(shown.contains("sent"), "{shown}");
    assert!(
        shown.contains("ETA") && shown.contains("/4.00 MiB"),
        "a first backup's size comes from a walk of its paths: {shown}"
    );
    assert!(
        shown.contains("snapshot 1 of set"),
        "the summary still prints: {shown}"
    );

    // Piped, or with --json: no bar, and stdout is the summary alone.
    fs::write(src.join("f0.bin"), random_bytes(1 << 20, 9)).unwrap();
    let piped = run({
        let mut c = endpoint.command();
        c.args(["backup", "--limit", "2MB/s", src_arg]);
        c
    });
    assert!(piped.status.success());
    assert!(!stderr(&piped).contains("files ·"), "{}", stderr(&piped));
    let json = on_a_terminal(&state, &["backup", "--json", src_arg]);
    assert!(!json.contains("files ·"), "--json draws no bar: {json}");

    // A restore of the whole snapshot knows its size: a bar with an ETA.
    let target = work.path().join("restore");
    let shown = on_a_terminal(&state, &["restore", "--map-to", target.to_str().unwrap()]);
    assert!(
        shown.contains("files ·"),
        "no progress bar on the terminal:\n{shown}"
    );
    assert!(shown.contains("restored snapshot"), "{shown}");
    let restored = target.join(src.strip_prefix("/").unwrap()).join("f1.bin");
    assert_eq!(
        fs::read(restored).unwrap(),
        fs::read(src.join("f1.bin")).unwrap()
    );
}
