//! Backups that fit laptops: exclude files in `.gitignore` syntax,
//! `CACHEDIR.TAG`, `exclude-if-present`, `target/`, one-file-system, and
//! `backup --dry-run` naming the rule that drops each path — the dry run
//! and the snapshot agree, open and sealed.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use ferry_tests::{arg, mount_tmpfs, ok, paired_in, Unmount};

/// The CACHEDIR.TAG a cache holds (<https://bford.info/cachedir/>).
const TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n";

/// A laptop's project tree with one of everything a rule drops.
fn laptop(root: &Path) {
    for dir in [
        "proj/target/debug",
        "proj/src",
        "cache",
        "vm",
        "notes",
        "mnt",
    ] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::write(root.join("proj/src/main.rs"), "fn main() {}").unwrap();
    fs::write(root.join("proj/src/main.o"), "object").unwrap();
    fs::write(root.join("proj/src/keep.o"), "kept object").unwrap();
    fs::write(root.join("proj/target/debug/app"), "binary").unwrap();
    fs::write(root.join("cache/CACHEDIR.TAG"), TAG).unwrap();
    fs::write(root.join("cache/blob"), "cached").unwrap();
    fs::write(root.join("vm/.nobackup"), "").unwrap();
    fs::write(root.join("vm/disk.img"), "huge").unwrap();
    fs::write(root.join("notes/todo.txt"), "back me up").unwrap();
}

#[test]
fn rules_drop_what_they_name_and_the_dry_run_says_which_rule() {
    for sealed in [false, true] {
        let (_relay, endpoint) = paired_in(sealed);
        let mode = if sealed { "sealed" } else { "open" };
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("home");
        laptop(&root);
        // A filesystem mounted inside: left out with one-file-system.
        mount_tmpfs(&root.join("mnt"), "1m");
        let _unmount = Unmount(root.join("mnt"));
        fs::write(root.join("mnt/elsewhere.txt"), "on another filesystem").unwrap();
        let ignore = work.path().join("ferryignore");
        fs::write(&ignore, "# build output\n*.o\n!keep.o\n").unwrap();
        let config = format!(
            "[sets.home]\npaths = [{root:?}]\nexclude = [\"target/\"]\nexclude-file = [{ignore:?}]\nexclude-if-present = [\".nobackup\"]\none-file-system = true\n"
        );
        fs::write(endpoint.state().join("endpoint.toml"), config).unwrap();

        let dry: serde_json::Value = serde_json::from_str(&ok(endpoint.ferry(&[
            "backup",
            "--set",
            "home",
            "--dry-run",
            "--json",
        ])))
        .unwrap();
        let rel = |p: &serde_json::Value| {
            p.as_str()
                .unwrap()
                .strip_prefix(arg(&root))
                .unwrap()
                .to_string()
        };
        let mut excluded: Vec<(String, String)> = dry["excluded"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (rel(&e["path"]), e["rule"].as_str().unwrap().to_string()))
            .collect();
        excluded.sort();
        let rules: Vec<(&str, &str)> = excluded
            .iter()
            .map(|(p, r)| (p.as_str(), r.as_str()))
            .collect();
        assert_eq!(rules.len(), 5, "{mode}: {rules:?}");
        assert_eq!(
            rules[0],
            ("/cache", "exclude-caches (CACHEDIR.TAG)"),
            "{mode}"
        );
        assert_eq!(
            rules[1],
            ("/mnt", "one-file-system (a mount point)"),
            "{mode}"
        );
        assert_eq!(rules[2].0, "/proj/src/main.o", "{mode}");
        assert!(
            rules[2].1.starts_with("exclude-file ") && rules[2].1.ends_with("\"*.o\""),
            "{mode}: {}",
            rules[2].1
        );
        assert_eq!(rules[3], ("/proj/target", "exclude \"target/\""), "{mode}");
        assert_eq!(
            rules[4],
            ("/vm", "exclude-if-present \".nobackup\""),
            "{mode}"
        );
        let read: BTreeSet<String> = dry["read"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| rel(&f["path"]))
            .collect();
        let expected: BTreeSet<String> =
            ["/notes/todo.txt", "/proj/src/keep.o", "/proj/src/main.rs"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        assert_eq!(read, expected, "{mode}");
        assert!(
            dry["read"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["why"] == "new"),
            "{mode}"
        );

        // The backup takes what the dry run said, nothing else.
        let summary = endpoint.backup_json(&["--set", "home"]);
        assert_eq!(summary["files"], 3, "{mode}: {summary}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&ok(endpoint.ferry(&[
            "ls",
            "--set",
            "home",
            "-R",
            "--json",
            arg(&root),
        ])))
        .unwrap();
        let files: BTreeSet<String> = rows
            .iter()
            .filter(|r| r["type"] == "file")
            .map(|r| rel(&r["path"]))
            .collect();
        assert_eq!(files, expected, "{mode}");

        // A second dry run: all unchanged; --keep-caches brings the cache back.
        fs::write(root.join("notes/todo.txt"), "back me up, edited").unwrap();
        let again: serde_json::Value = serde_json::from_str(&ok(endpoint.ferry(&[
            "backup",
            "--set",
            "home",
            "--dry-run",
            "--json",
            "--keep-caches",
        ])))
        .unwrap();
        let whys: BTreeSet<(String, String)> = again["read"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (rel(&f["path"]), f["why"].as_str().unwrap().to_string()))
            .collect();
        let expected_again: BTreeSet<(String, String)> = [
            ("/cache/CACHEDIR.TAG", "new"),
            ("/cache/blob", "new"),
            ("/notes/todo.txt", "changed"),
        ]
        .iter()
        .map(|(p, w)| (p.to_string(), w.to_string()))
        .collect();
        assert_eq!(whys, expected_again, "{mode}");
        assert_eq!(again["unchanged"], 2, "{mode}");
        // Text: one line per path and its rule.
        let text = ok(endpoint.ferry(&["backup", "--set", "home", "--dry-run"]));
        assert!(
            text.contains("excluded ") && text.contains("(exclude-if-present \".nobackup\")"),
            "{mode}: {text}"
        );
        assert!(text.contains("dry run: nothing was sent"), "{mode}: {text}");
    }
}
