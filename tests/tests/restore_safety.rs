//! Restores that never overwrite a local edit unless the policy says so.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ferry_tests::tree::listing;
use ferry_tests::{arg, paired_in, stderr, Endpoint};

/// Restores `src` from the latest snapshot onto `out` with `more`
/// arguments; returns the summary and stderr.
fn restore_onto(
    endpoint: &Endpoint,
    src: &Path,
    out: &Path,
    more: &[&str],
) -> (serde_json::Value, String) {
    let mut args = vec![
        "restore",
        "--json",
        "--map-from",
        arg(src),
        "--map-to",
        arg(out),
    ];
    args.extend_from_slice(more);
    let done = endpoint.ferry(&args);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    (serde_json::from_slice(&done.stdout).unwrap(), stderr(&done))
}

/// Writes `text` to `path`, its modification time a day ago (a stale copy).
fn write_stale(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    let day_ago = SystemTime::now() - Duration::from_secs(86_400);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(day_ago)
        .unwrap();
}

#[test]
fn a_restore_keeps_local_edits_unless_the_overwrite_policy_says_so() {
    for sealed in [false, true] {
        let (_relay, endpoint) = paired_in(sealed);
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        fs::create_dir_all(&src).unwrap();
        write_stale(&src.join("notes.txt"), "the notes as backed up");
        write_stale(&src.join("report.txt"), "the report as backed up");
        std::os::unix::fs::symlink("notes.txt", src.join("current")).unwrap();
        endpoint.backup_json(&[arg(&src)]);
        let out = work.path().join("out");
        restore_onto(&endpoint, &src, &out, &[]);
        assert_eq!(listing(&out), listing(&src));

        // Edited after the backup (newer): kept by default, and the link
        // pointed elsewhere (newer too). Older than the snapshot's and
        // different (a stale copy): replaced.
        fs::write(out.join("notes.txt"), "my edit since the backup").unwrap();
        fs::remove_file(out.join("current")).unwrap();
        std::os::unix::fs::symlink("report.txt", out.join("current")).unwrap();
        let report = out.join("report.txt");
        write_stale(&report, "a stale copy");
        fs::File::options()
            .write(true)
            .open(&report)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(3 * 86_400))
            .unwrap();
        let (summary, err) = restore_onto(&endpoint, &src, &out, &[]);
        let mode = if sealed { "sealed" } else { "open" };
        assert_eq!(
            fs::read_to_string(out.join("notes.txt")).unwrap(),
            "my edit since the backup",
            "{mode}"
        );
        assert_eq!(
            fs::read_link(out.join("current")).unwrap(),
            Path::new("report.txt")
        );
        assert_eq!(
            fs::read_to_string(&report).unwrap(),
            "the report as backed up"
        );
        assert_eq!(summary["entries_kept"], 2, "{mode}: {summary}");
        assert!(
            err.contains("kept 2 local files or symlinks newer"),
            "{mode}: {err}"
        );
        let kept = summary["kept"].to_string();
        assert!(kept.contains("notes.txt"), "{mode}: {summary}");

        // never: a stale copy stays too.
        write_stale(&report, "a stale copy");
        let (summary, _) = restore_onto(&endpoint, &src, &out, &["--overwrite", "never"]);
        assert_eq!(fs::read_to_string(&report).unwrap(), "a stale copy");
        assert_eq!(summary["entries_kept"], 3, "{mode}: {summary}");

        // if-changed: everything back as backed up.
        let (summary, _) = restore_onto(&endpoint, &src, &out, &["--overwrite", "if-changed"]);
        assert_eq!(summary["entries_kept"], 0, "{mode}: {summary}");
        assert_eq!(listing(&out), listing(&src), "{mode}");
    }
}

#[test]
fn a_single_file_is_restored_under_a_new_name_or_into_a_directory() {
    for sealed in [false, true] {
        let (_relay, endpoint) = paired_in(sealed);
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        fs::create_dir_all(src.join("docs")).unwrap();
        fs::write(src.join("docs/thesis.txt"), "chapter one").unwrap();
        fs::write(src.join("docs/other.txt"), "not asked for").unwrap();
        endpoint.backup_json(&[arg(&src)]);
        let file = src.join("docs/thesis.txt");
        let mode = if sealed { "sealed" } else { "open" };

        // A new name (it made an empty directory of that name before).
        let renamed = work.path().join("out/thesis-before-edits.txt");
        let summary = endpoint.restore_json(&["--map-from", arg(&file), "--map-to", arg(&renamed)]);
        assert_eq!(summary["files_new"], 1, "{mode}: {summary}");
        assert_eq!(
            fs::read_to_string(&renamed).unwrap(),
            "chapter one",
            "{mode}"
        );
        assert_eq!(fs::read_dir(work.path().join("out")).unwrap().count(), 1);

        // Onto a local file of that name edited since: kept, as everywhere.
        fs::write(&renamed, "my edit since the backup").unwrap();
        let (summary, _) = restore_onto(&endpoint, &file, &renamed, &[]);
        assert_eq!(summary["entries_kept"], 1, "{mode}: {summary}");
        assert_eq!(
            fs::read_to_string(&renamed).unwrap(),
            "my edit since the backup",
            "{mode}"
        );

        // An existing directory: the file goes into it under its name.
        let dir = work.path().join("existing");
        fs::create_dir_all(&dir).unwrap();
        endpoint.restore_json(&["--map-from", arg(&file), "--map-to", arg(&dir)]);
        assert_eq!(
            fs::read_to_string(dir.join("thesis.txt")).unwrap(),
            "chapter one",
            "{mode}"
        );

        // A directory under a new name, as before.
        let copy = work.path().join("docs-copy");
        endpoint.restore_json(&["--map-from", arg(&src.join("docs")), "--map-to", arg(&copy)]);
        assert_eq!(listing(&copy), listing(&src.join("docs")), "{mode}");
    }
}
