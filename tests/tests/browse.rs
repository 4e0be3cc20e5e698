//! Seeing into snapshots without restoring them: `ferry ls`, open and
//! sealed alike (the endpoint reads the trees).

use std::fs;

use ferry_tests::{arg, ok, paired_in, stderr};

#[test]
fn ls_shows_a_directory_a_tree_and_a_file_of_a_snapshot() {
    for sealed in [false, true] {
        let (_relay, endpoint) = paired_in(sealed);
        let mode = if sealed { "sealed" } else { "open" };
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        fs::create_dir_all(src.join("docs/sub")).unwrap();
        fs::write(src.join("docs/thesis.txt"), "chapter one").unwrap();
        fs::write(src.join("docs/sub/notes.txt"), "x".repeat(5000)).unwrap();
        std::os::unix::fs::symlink("docs/thesis.txt", src.join("latest")).unwrap();
        endpoint.backup_json(&[arg(&src)]);
        let top = src.display().to_string();

        let json = |args: &[&str]| -> Vec<serde_json::Value> {
            let mut all = vec!["ls", "--json"];
            all.extend_from_slice(args);
            serde_json::from_str(&ok(endpoint.ferry(&all))).unwrap()
        };
        let paths = |rows: &[serde_json::Value]| -> Vec<String> {
            rows.iter()
                .map(|r| r["path"].as_str().unwrap().to_string())
                .collect()
        };
        // A directory: its entries only.
        let rows = json(&[&top]);
        assert_eq!(
            paths(&rows),
            [format!("{top}/docs"), format!("{top}/latest")],
            "{mode}"
        );
        assert_eq!(rows[0]["type"], "dir", "{mode}");
        assert_eq!(rows[1]["type"], "symlink", "{mode}");
        assert_eq!(rows[1]["target"], "docs/thesis.txt", "{mode}");

        // Recursively: everything below, parents first.
        let rows = json(&["-R", &top]);
        let mut all = paths(&rows);
        all.sort();
        assert_eq!(
            all,
            [
                format!("{top}/docs"),
                format!("{top}/docs/sub"),
                format!("{top}/docs/sub/notes.txt"),
                format!("{top}/docs/thesis.txt"),
                format!("{top}/latest"),
            ],
            "{mode}"
        );
        let notes = rows
            .iter()
            .find(|r| r["path"].as_str().unwrap().ends_with("notes.txt"))
            .unwrap();
        assert_eq!(notes["size"], 5000, "{mode}");

        // A file, long: one line with its mode, size and path.
        let file = format!("{top}/docs/thesis.txt");
        let long = ok(endpoint.ferry(&["ls", "--long", &file]));
        assert_eq!(long.lines().count(), 1, "{mode}: {long}");
        assert!(long.starts_with("-rw"), "{mode}: {long}");
        assert!(
            long.contains("11 B") && long.trim_end().ends_with(&file),
            "{mode}: {long}"
        );

        // A path the snapshot lacks: one line, exit 1.
        let missing = endpoint.ferry(&["ls", &format!("{top}/nothing")]);
        assert_eq!(missing.status.code(), Some(1), "{mode}");
        assert!(
            stderr(&missing).contains("holds nothing at"),
            "{mode}: {}",
            stderr(&missing)
        );
    }
}

/// Two snapshots of one tree: the first, then an edit, a removal, an
/// addition and a chmod. Returns the source directory.
fn two_snapshots(endpoint: &ferry_tests::Endpoint, work: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let src = work.join("src");
    fs::create_dir_all(src.join("docs/sub")).unwrap();
    fs::write(src.join("docs/thesis.txt"), "chapter one").unwrap();
    fs::write(src.join("docs/old.conf"), "gone soon").unwrap();
    fs::write(
        src.join("docs/sub/data.bin"),
        ferry_tests::tree::random_bytes(300_000, 3),
    )
    .unwrap();
    fs::write(src.join("docs/sub/mode.conf"), "same").unwrap();
    endpoint.backup_json(&[arg(&src)]);
    fs::write(src.join("docs/thesis.txt"), "chapter one, and two").unwrap();
    fs::remove_file(src.join("docs/old.conf")).unwrap();
    fs::write(src.join("docs/new.conf"), "fresh").unwrap();
    fs::set_permissions(
        src.join("docs/sub/mode.conf"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    endpoint.backup_json(&[arg(&src)]);
    src
}

/// Runs `test` for an open and a sealed client, each with
/// [`two_snapshots`] made: the endpoint, the work directory, the source,
/// its path as text, and the mode's name.
fn with_two_snapshots(
    test: impl Fn(&ferry_tests::Endpoint, &std::path::Path, &std::path::Path, &str, &str),
) {
    for sealed in [false, true] {
        let (_relay, endpoint) = paired_in(sealed);
        let mode = if sealed { "sealed" } else { "open" };
        let work = tempfile::tempdir().unwrap();
        let src = two_snapshots(&endpoint, work.path());
        test(
            &endpoint,
            work.path(),
            &src,
            &src.display().to_string(),
            mode,
        );
    }
}

#[test]
fn find_names_the_snapshots_that_hold_a_path_and_diff_shows_what_changed() {
    with_two_snapshots(|endpoint, _work, _src, top, mode| {
        // find: by name, across both snapshots.
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&ok(endpoint.ferry(&["find", "--json", "*.conf"]))).unwrap();
        let mut seen: Vec<(u64, String)> = rows
            .iter()
            .map(|r| {
                let path = r["path"].as_str().unwrap();
                (
                    r["snapshot"].as_u64().unwrap(),
                    path[top.len()..].to_string(),
                )
            })
            .collect();
        seen.sort();
        let (first, second) = (seen[0].0, seen.last().unwrap().0);
        assert_eq!(
            seen,
            [
                (first, "/docs/old.conf".to_string()),
                (first, "/docs/sub/mode.conf".to_string()),
                (second, "/docs/new.conf".to_string()),
                (second, "/docs/sub/mode.conf".to_string()),
            ],
            "{mode}"
        );
        // By whole path, and in text: the snapshot, then the file's line.
        let text = ok(endpoint.ferry(&["find", &format!("{top}/**/thesis.txt")]));
        assert_eq!(text.matches("snapshot ").count(), 2, "{mode}: {text}");
        assert!(
            text.contains("20 B") && text.contains("11 B"),
            "{mode}: {text}"
        );
        // --since in the future: nothing.
        let none = ok(endpoint.ferry(&["find", "--since", "2999-01-01", "*.conf"]));
        assert!(none.contains("no snapshot holds"), "{mode}: {none}");

        // diff: each kind of change, and nothing else.
        let out: serde_json::Value = serde_json::from_str(&ok(endpoint.ferry(&[
            "diff",
            "--json",
            &first.to_string(),
            &second.to_string(),
        ])))
        .unwrap();
        let changes: Vec<(String, String)> = out["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let path = c["path"].as_str().unwrap();
                (
                    path[top.len()..].to_string(),
                    c["change"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            changes,
            [
                ("/docs/new.conf".to_string(), "added".to_string()),
                ("/docs/old.conf".to_string(), "removed".to_string()),
                ("/docs/sub/mode.conf".to_string(), "metadata".to_string()),
                ("/docs/thesis.txt".to_string(), "modified".to_string()),
            ],
            "{mode}"
        );
        // Text, below one path, and `last` for the newest.
        let text = ok(endpoint.ferry(&[
            "diff",
            &first.to_string(),
            "last",
            &format!("{top}/docs/sub"),
        ]));
        assert!(
            text.contains("U    ") && text.contains("mode.conf"),
            "{mode}: {text}"
        );
        assert!(
            text.contains("0 added, 0 removed, 0 modified, 1 with other metadata"),
            "{mode}: {text}"
        );
    });
}

#[test]
fn dump_writes_a_file_to_stdout_and_a_directory_as_a_tar_stream() {
    with_two_snapshots(|endpoint, work, src, top, mode| {
        // A file: its bytes, of the snapshot asked for.
        let data = endpoint.ferry(&["dump", &format!("{top}/docs/sub/data.bin")]);
        assert!(data.status.success(), "{mode}: {}", stderr(&data));
        assert_eq!(
            data.stdout,
            ferry_tests::tree::random_bytes(300_000, 3),
            "{mode}"
        );
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&ok(endpoint.ferry(&["snapshots", "--json"]))).unwrap();
        let first = rows[0]["id"].as_u64().unwrap().to_string();
        let old = endpoint.ferry(&["dump", "-b", &first, &format!("{top}/docs/thesis.txt")]);
        assert_eq!(old.stdout, b"chapter one", "{mode}");

        // A directory: a tar stream that unpacks to the tree as it was.
        let tarball = work.join("docs.tar");
        let dumped = endpoint.ferry(&["dump", &format!("{top}/docs")]);
        assert!(dumped.status.success(), "{mode}: {}", stderr(&dumped));
        fs::write(&tarball, &dumped.stdout).unwrap();
        let out = work.join("unpacked");
        fs::create_dir(&out).unwrap();
        let untar = std::process::Command::new("tar")
            .args(["-xf", arg(&tarball), "-C", arg(&out)])
            .output()
            .unwrap();
        assert!(untar.status.success(), "{mode}: {}", stderr(&untar));
        for name in ["thesis.txt", "new.conf", "sub/data.bin", "sub/mode.conf"] {
            assert_eq!(
                fs::read(out.join("docs").join(name)).unwrap(),
                fs::read(src.join("docs").join(name)).unwrap(),
                "{mode}: {name}"
            );
        }
        assert!(!out.join("docs/old.conf").exists(), "{mode}");

        // A path the snapshot lacks: one line, exit 1, nothing on stdout.
        let missing = endpoint.ferry(&["dump", &format!("{top}/docs/none")]);
        assert_eq!(missing.status.code(), Some(1), "{mode}");
        assert!(missing.stdout.is_empty(), "{mode}");
        assert!(
            stderr(&missing).contains("holds nothing at"),
            "{mode}: {}",
            stderr(&missing)
        );
        // The scratch directory is gone after a dump, also a failed one.
        let scratch = work.join("tmp");
        fs::create_dir(&scratch).unwrap();
        for path in [format!("{top}/docs"), format!("{top}/docs/none")] {
            let mut command = endpoint.command();
            command.env("TMPDIR", &scratch).args(["dump", &path]);
            let _ = ferry_tests::run(command);
        }
        assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0, "{mode}");
    });
}

#[test]
fn snapshots_show_the_host_and_the_paths_each_covers() {
    for sealed in [false, true] {
        let (_relay, endpoint) = paired_in(sealed);
        let mode = if sealed { "sealed" } else { "open" };
        let work = tempfile::tempdir().unwrap();
        let (docs, code) = (work.path().join("docs"), work.path().join("code"));
        fs::create_dir_all(&docs).unwrap();
        fs::create_dir_all(&code).unwrap();
        fs::write(docs.join("a.txt"), "a").unwrap();
        endpoint.backup_json(&[arg(&docs), arg(&code)]);
        endpoint.backup_json(&["--set", "db", "--command", "echo dump", "--name", "db.sql"]);

        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&ok(endpoint.ferry(&["snapshots", "--json"]))).unwrap();
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(rows[0]["host"], host.trim(), "{mode}: {rows:?}");
        assert_eq!(
            rows[0]["paths"],
            serde_json::json!([arg(&docs), arg(&code)]),
            "{mode}"
        );
        assert_eq!(
            rows[1]["paths"],
            serde_json::json!(["command:db.sql"]),
            "{mode}"
        );
        let table = ok(endpoint.ferry(&["snapshots"]));
        assert!(
            table.contains("PATHS") && table.contains(&format!("{}, {}", arg(&docs), arg(&code))),
            "{mode}: {table}"
        );
    }
}
