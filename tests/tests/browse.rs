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
