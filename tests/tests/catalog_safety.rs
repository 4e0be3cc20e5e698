//! The catalog and the packs beside it, through the real binaries: a repair
//! killed between its renames and run again, a repair tried beside a
//! serving relay, a catalog that does not know the store — none of them
//! loses a committed snapshot or a pack.

use std::fs;
use std::path::{Path, PathBuf};

use ferry_tests::tree::{listing, random_bytes};
use ferry_tests::{arg, ok, paired, stderr, Endpoint, Relay};

/// A source tree with a few files; `version` changes one of them.
fn source(root: &Path, version: u32) -> PathBuf {
    let src = root.join("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    for i in 0..8u64 {
        fs::write(
            src.join("docs").join(format!("f{i}.bin")),
            random_bytes(48 * 1024, 500 + i),
        )
        .unwrap();
    }
    fs::write(src.join("note"), format!("version {version}")).unwrap();
    src
}

/// Backs `src` up at `version`; returns the snapshot id and a copy of the
/// tree as it was.
fn backup(endpoint: &Endpoint, root: &Path, version: u32) -> (u64, PathBuf) {
    let src = source(root, version);
    let id = endpoint.backup_json(&[arg(&src)])["snapshot"]
        .as_u64()
        .unwrap();
    let copy = root.join(format!("was-{version}"));
    ok(run_cp(&src, &copy));
    (id, copy)
}

fn run_cp(from: &Path, to: &Path) -> std::process::Output {
    let mut cp = std::process::Command::new("cp");
    cp.arg("-a").arg(from).arg(to);
    ferry_tests::run(cp)
}

/// Restores snapshot `id` of `src` and checks it is `expected`, file by file.
fn restores_identical(endpoint: &Endpoint, root: &Path, id: u64, expected: &Path) {
    let src = root.join("src");
    let out = root.join(format!("out-{id}"));
    ok(endpoint.ferry(&[
        "restore",
        "-b",
        &id.to_string(),
        "--map-from",
        arg(&src),
        "--map-to",
        arg(&out),
    ]));
    assert_eq!(listing(&out), listing(expected), "snapshot {id}");
}

fn catalog(relay: &Relay) -> PathBuf {
    relay.data().join("catalog.sqlite")
}

fn pack_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_catalog_repair_killed_between_its_renames_then_run_again_loses_nothing() {
    let (mut relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let (first, was_first) = backup(&endpoint, work.path(), 1);
    let (second, was_second) = backup(&endpoint, work.path(), 2);
    relay.terminate();
    let packs = pack_names(&relay.data().join("store/packs"));
    let path = catalog(&relay);
    assert!(
        !Path::new(&format!("{}-wal", path.display())).exists(),
        "a clean stop leaves no WAL"
    );
    // The repair wrote and checked its copy, renamed the catalog away, and
    // was killed before putting the copy in place.
    fs::copy(&path, path.with_extension("sqlite.repaired")).unwrap();
    fs::rename(&path, path.with_extension("sqlite.damaged")).unwrap();
    // The operator runs it again.
    let again = relay.admin(&["verify", "--repair-catalog"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("finished an interrupted catalog repair"),
        "{}",
        stderr(&again)
    );
    relay.start_again();
    assert_eq!(pack_names(&relay.data().join("store/packs")), packs);
    restores_identical(&endpoint, work.path(), first, &was_first);
    restores_identical(&endpoint, work.path(), second, &was_second);
}

#[test]
fn an_interrupted_swap_is_rolled_back_at_start_when_only_the_original_is_left() {
    let (mut relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let (first, was_first) = backup(&endpoint, work.path(), 1);
    relay.terminate();
    let path = catalog(&relay);
    fs::rename(&path, path.with_extension("sqlite.damaged")).unwrap();
    // An admin command says what happened and changes nothing.
    let listed = relay.admin(&["clients", "list"]);
    assert_ne!(listed.status.code(), Some(0));
    assert!(
        stderr(&listed).contains("a catalog repair was interrupted"),
        "{}",
        stderr(&listed)
    );
    // The relay puts the original back and serves it.
    relay.start_again();
    relay.wait_for_log("rolled back an interrupted catalog repair");
    restores_identical(&endpoint, work.path(), first, &was_first);
}

#[test]
fn a_catalog_that_does_not_know_the_store_never_costs_a_pack() {
    let (mut relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let (first, was_first) = backup(&endpoint, work.path(), 1);
    relay.terminate();
    let packs_dir = relay.data().join("store/packs");
    let packs = pack_names(&packs_dir);
    assert!(!packs.is_empty());
    // Another relay's new, empty catalog put in its place by mistake.
    let other = tempfile::tempdir().unwrap();
    let mut init = std::process::Command::new(ferry_tests::binary("ferry-relay"));
    init.arg("--data").arg(other.path().join("data")).args([
        "init",
        "--listen",
        "127.0.0.1:0",
        "--pair-listen",
        "127.0.0.1:0",
    ]);
    ok(ferry_tests::run(init));
    let path = catalog(&relay);
    let kept = work.path().join("catalog.kept");
    fs::rename(&path, &kept).unwrap();
    fs::copy(other.path().join("data/catalog.sqlite"), &path).unwrap();
    let refused = relay.admin(&["serve"]);
    assert_eq!(refused.status.code(), Some(1));
    let message = stderr(&refused);
    assert!(
        message.contains("knows no client and no blob") && message.contains("Nothing was changed"),
        "{message}"
    );
    assert_eq!(pack_names(&packs_dir), packs, "every pack is still there");
    // The right catalog back, plus a pack it does not name: that one is
    // moved aside and said so, never deleted.
    fs::rename(&kept, &path).unwrap();
    let stray = packs_dir.join("09999999.pack");
    fs::write(&stray, b"bytes no catalog names").unwrap();
    relay.start_again();
    relay.wait_for_log("no catalog row names it");
    assert_eq!(
        fs::read(relay.data().join("store/quarantine/09999999.pack")).unwrap(),
        b"bytes no catalog names"
    );
    restores_identical(&endpoint, work.path(), first, &was_first);
}

#[test]
fn a_catalog_repair_beside_a_serving_relay_is_refused_and_changes_nothing() {
    let (mut relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    backup(&endpoint, work.path(), 1);
    let refused = relay.admin(&["verify", "--repair-catalog"]);
    assert_eq!(refused.status.code(), Some(1));
    let message = stderr(&refused);
    assert!(
        message.contains("is serving") && message.contains("nothing was changed"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert!(!catalog(&relay).with_extension("sqlite.damaged").exists());
    // What the relay acknowledges next survives a restart.
    let (second, was_second) = backup(&endpoint, work.path(), 2);
    relay.kill_and_restart();
    restores_identical(&endpoint, work.path(), second, &was_second);
}
