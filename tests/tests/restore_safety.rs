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

#[test]
fn dry_run_lists_what_a_restore_would_do_and_delete_removes_only_what_the_snapshot_lacks() {
    for sealed in [false, true] {
        let (_relay, endpoint) = paired_in(sealed);
        let mode = if sealed { "sealed" } else { "open" };
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("same.txt"), "same").unwrap();
        fs::write(src.join("stale.txt"), "snapshot's").unwrap();
        fs::write(src.join("edited.txt"), "snapshot's").unwrap();
        fs::write(src.join("sub/new.txt"), "only in the snapshot").unwrap();
        endpoint.backup_json(&[arg(&src)]);

        // The target: one file as in the snapshot, one older copy, one
        // local edit (newer), one missing, and two things the snapshot lacks.
        let out = work.path().join("out");
        fs::create_dir_all(out.join("sub")).unwrap();
        fs::create_dir_all(out.join("junk/deeper")).unwrap();
        std::process::Command::new("cp")
            .args(["-a", arg(&src.join("same.txt")), arg(&out.join("same.txt"))])
            .status()
            .unwrap();
        write_stale(&out.join("stale.txt"), "old");
        fs::write(out.join("edited.txt"), "my edit, after the backup").unwrap();
        fs::write(out.join("sub/extra.txt"), "not in the snapshot").unwrap();
        fs::write(out.join("junk/deeper/x"), "x").unwrap();
        let before = listing(&out);

        let dry = |more: &[&str]| -> serde_json::Value {
            let mut args = vec![
                "restore",
                "--dry-run",
                "--json",
                "--map-from",
                arg(&src),
                "--map-to",
                arg(&out),
            ];
            args.extend_from_slice(more);
            let done = endpoint.ferry(&args);
            assert_eq!(done.status.code(), Some(0), "{mode}: {}", stderr(&done));
            serde_json::from_slice(&done.stdout).unwrap()
        };
        let names = |v: &serde_json::Value| -> Vec<String> {
            let mut names: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    p.as_str()
                        .unwrap()
                        .strip_prefix(arg(&out))
                        .unwrap()
                        .to_string()
                })
                .collect();
            names.sort();
            names
        };
        let plan = dry(&["--delete"]);
        assert_eq!(names(&plan["write"]), ["/sub/new.txt"], "{mode}");
        assert_eq!(names(&plan["replace"]), ["/stale.txt"], "{mode}");
        assert_eq!(names(&plan["keep"]), ["/edited.txt"], "{mode}");
        assert_eq!(
            names(&plan["remove"]),
            ["/junk", "/sub/extra.txt"],
            "{mode}"
        );
        assert_eq!(
            listing(&out),
            before,
            "{mode}: a dry run changed the target"
        );
        // Without --delete nothing is listed for removal; `always` replaces the edit.
        let plan = dry(&["--overwrite", "always"]);
        assert!(plan["remove"].as_array().unwrap().is_empty(), "{mode}");
        assert_eq!(
            names(&plan["replace"]),
            ["/edited.txt", "/stale.txt"],
            "{mode}"
        );

        // The restore with --delete: the extras go, the edit stays.
        let (summary, _) = restore_onto(&endpoint, &src, &out, &["--delete"]);
        assert_eq!(summary["entries_deleted"], 2, "{mode}: {summary}");
        assert!(
            !out.join("junk").exists() && !out.join("sub/extra.txt").exists(),
            "{mode}"
        );
        assert_eq!(
            fs::read_to_string(out.join("edited.txt")).unwrap(),
            "my edit, after the backup",
            "{mode}"
        );
        assert_eq!(
            fs::read_to_string(out.join("stale.txt")).unwrap(),
            "snapshot's",
            "{mode}"
        );
        assert_eq!(
            fs::read_to_string(out.join("sub/new.txt")).unwrap(),
            "only in the snapshot"
        );

        // --delete reaches no further than what was asked for: a file
        // restored under a new name leaves its neighbours alone...
        let beside = work.path().join("beside");
        fs::create_dir_all(&beside).unwrap();
        fs::write(beside.join("neighbour.txt"), "mine").unwrap();
        let renamed = beside.join("renamed.txt");
        let done = endpoint.ferry(&[
            "restore",
            "--delete",
            "--map-from",
            arg(&src.join("same.txt")),
            "--map-to",
            arg(&renamed),
        ]);
        assert_eq!(done.status.code(), Some(0), "{mode}: {}", stderr(&done));
        assert_eq!(fs::read_to_string(&renamed).unwrap(), "same", "{mode}");
        assert_eq!(
            fs::read_to_string(beside.join("neighbour.txt")).unwrap(),
            "mine",
            "{mode}"
        );
        // ...and one path of --map-from's tree leaves the rest of the target.
        let part = work.path().join("part");
        fs::create_dir_all(part.join("sub")).unwrap();
        fs::write(part.join("keepme.txt"), "not asked for").unwrap();
        fs::write(part.join("sub/extra.txt"), "lacking").unwrap();
        let done = endpoint.ferry(&[
            "restore",
            "--delete",
            "--map-from",
            arg(&src),
            "--map-to",
            arg(&part),
            arg(&src.join("sub")),
        ]);
        assert_eq!(done.status.code(), Some(0), "{mode}: {}", stderr(&done));
        assert!(
            part.join("keepme.txt").exists(),
            "{mode}: --delete went past the path asked for"
        );
        assert!(!part.join("sub/extra.txt").exists(), "{mode}");
        assert!(part.join("sub/new.txt").exists(), "{mode}");

        // --delete with nothing to keep in step with (a whole snapshot onto
        // a directory): refused before anything is written.
        let elsewhere = work.path().join("elsewhere");
        let refused = endpoint.ferry(&["restore", "--delete", "--map-to", arg(&elsewhere)]);
        assert_eq!(refused.status.code(), Some(1), "{mode}");
        assert!(
            stderr(&refused).contains("--delete removes what the snapshot lacks"),
            "{mode}: {}",
            stderr(&refused)
        );
        assert!(!elsewhere.exists(), "{mode}");
    }
}

#[test]
fn a_path_the_snapshot_lacks_names_the_newest_snapshot_that_holds_it() {
    for sealed in [false, true] {
        let (_relay, endpoint) = paired_in(sealed);
        let mode = if sealed { "sealed" } else { "open" };
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("kept.txt"), "kept").unwrap();
        fs::write(src.join("thesis.txt"), "first draft").unwrap();
        let first = endpoint.backup_json(&[arg(&src)])["snapshot"]
            .as_u64()
            .unwrap();
        fs::write(src.join("thesis.txt"), "second draft").unwrap();
        let second = endpoint.backup_json(&[arg(&src)])["snapshot"]
            .as_u64()
            .unwrap();
        fs::remove_file(src.join("thesis.txt")).unwrap();
        let third = endpoint.backup_json(&[arg(&src)])["snapshot"]
            .as_u64()
            .unwrap();

        let out = work.path().join("out");
        let thesis = src.join("thesis.txt");
        let missing = endpoint.ferry(&["restore", "--map-to", arg(&out), arg(&thesis)]);
        assert_eq!(missing.status.code(), Some(1), "{mode}");
        let line = stderr(&missing);
        assert!(
            line.contains(&format!("snapshot {third} holds nothing at"))
                && line.contains(&format!("that does is {second} "))
                && line.contains(&format!("-b {second}")),
            "{mode}: {line}"
        );
        assert!(
            !line.contains(&format!("-b {first}")),
            "{mode}: the newest that holds it, not the oldest: {line}"
        );
        assert!(!out.exists(), "{mode}: nothing is written");
        // With another path that is there: that one is restored, and the
        // lacking one is still exit 1, named as before.
        let kept = src.join("kept.txt");
        let both = endpoint.ferry(&["restore", "--map-to", arg(&out), arg(&kept), arg(&thesis)]);
        assert_eq!(both.status.code(), Some(1), "{mode}");
        assert!(
            stderr(&both).contains("the other paths were restored")
                && stderr(&both).contains(&format!("-b {second}")),
            "{mode}: {}",
            stderr(&both)
        );
        let restored_kept = out.join(kept.strip_prefix("/").unwrap());
        assert_eq!(fs::read_to_string(restored_kept).unwrap(), "kept", "{mode}");
        fs::remove_dir_all(&out).unwrap();
        // Nowhere at all: said so.
        let nowhere = endpoint.ferry(&[
            "restore",
            "--map-to",
            arg(&out),
            arg(&src.join("never.txt")),
        ]);
        assert!(
            stderr(&nowhere).contains("nor does any other snapshot"),
            "{mode}: {}",
            stderr(&nowhere)
        );
    }
}
