//! Backup sets from endpoint.toml: their paths, their excludes, their own
//! snapshot histories.

use std::fs;

use ferry_tests::tree::listing;
use ferry_tests::{ok, stderr, Endpoint, Relay};

#[test]
fn sets_keep_their_own_paths_excludes_and_histories() {
    let relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let work = tempfile::tempdir().unwrap();
    let docs = work.path().join("docs");
    let code = work.path().join("code");
    fs::create_dir_all(docs.join("cache")).unwrap();
    fs::create_dir_all(code.join("node_modules/dep")).unwrap();
    fs::write(docs.join("letter.txt"), b"dear relay").unwrap();
    fs::write(docs.join("scratch.tmp"), b"temporary").unwrap();
    fs::write(docs.join("cache/blob"), b"cached").unwrap();
    fs::write(code.join("main.rs"), b"fn main() {}").unwrap();
    fs::write(code.join("node_modules/dep/index.js"), b"// vendored").unwrap();
    let config = format!(
        "[sets.docs]\npaths = [{docs:?}]\nexclude = [\"*.tmp\", \"{}/cache/**\"]\n\n[sets.code]\npaths = [{code:?}]\nexclude = [\"node_modules\"]\n",
        docs.display()
    );
    fs::write(endpoint.state().join("endpoint.toml"), config).unwrap();

    endpoint.backup_json(&["--set", "docs"]);
    endpoint.backup_json(&["--set", "code"]);
    endpoint.backup_json(&["--set", "docs"]);
    let docs_list: serde_json::Value = serde_json::from_str(&ok(endpoint.ferry(&[
        "snapshots",
        "--set",
        "docs",
        "--json",
    ])))
    .unwrap();
    let code_list: serde_json::Value = serde_json::from_str(&ok(endpoint.ferry(&[
        "snapshots",
        "--set",
        "code",
        "--json",
    ])))
    .unwrap();
    assert_eq!(docs_list.as_array().unwrap().len(), 2);
    assert_eq!(code_list.as_array().unwrap().len(), 1);
    assert!(docs_list
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["set"] == "docs"));

    let out = work.path().join("out-docs");
    endpoint.restore_json(&[
        "--set",
        "docs",
        "--map-from",
        docs.to_str().unwrap(),
        "--map-to",
        out.to_str().unwrap(),
    ]);
    let names: Vec<Vec<u8>> = listing(&out).into_keys().collect();
    assert_eq!(
        names,
        vec![b"cache".to_vec(), b"letter.txt".to_vec()],
        "excluded files were stored"
    );
    let out = work.path().join("out-code");
    endpoint.restore_json(&[
        "--set",
        "code",
        "--map-from",
        code.to_str().unwrap(),
        "--map-to",
        out.to_str().unwrap(),
    ]);
    assert!(out.join("main.rs").exists());
    assert!(!out.join("node_modules").exists());

    let nothing = endpoint.ferry(&["backup", "--set", "unknown"]);
    assert_eq!(nothing.status.code(), Some(1));
    assert!(
        stderr(&nothing).contains("nothing to back up"),
        "{}",
        stderr(&nothing)
    );
}
