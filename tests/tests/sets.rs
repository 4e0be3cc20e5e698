//! Backup sets from endpoint.toml: their paths, their excludes, their own
//! snapshot histories.

use std::fs;

use ferry_tests::tree::listing;
use ferry_tests::{arg, ok, paired_in, stderr, Endpoint, Relay};

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

#[test]
fn snapshot_hooks_are_called_and_the_backup_reads_the_frozen_view() {
    hooks_are_called_and_the_backup_reads_the_frozen_view(Endpoint::new());
}

#[test]
fn snapshot_hooks_are_called_and_a_sealed_backup_reads_the_frozen_view() {
    hooks_are_called_and_the_backup_reads_the_frozen_view(Endpoint::sealed());
}

fn hooks_are_called_and_the_backup_reads_the_frozen_view(endpoint: Endpoint) {
    use std::os::unix::fs::PermissionsExt;
    let relay = Relay::start();
    endpoint.pair_with(&relay, "laptop");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("volume");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("live.txt"), b"changing under us").unwrap();
    let snaps = work.path().join("snaps");
    let log = work.path().join("hooks.log");
    // The create script freezes a copy (plus a marker only the copy has) and
    // reports where; the remove script deletes it. Both log their arguments.
    let create = work.path().join("create_filesystem_snapshot");
    let remove = work.path().join("remove_filesystem_snapshot");
    fs::write(
        &create,
        format!(
            "#!/bin/sh\nset -e\necho \"create $*\" >> {log}\nif [ \"$5\" = broken ]; then echo SNAPSHOT=/nonexistent/snapshot; exit 0; fi\nmkdir -p {snaps}\ncp -a \"$2\" {snaps}/$1\necho frozen > {snaps}/$1/marker\necho \"SNAPSHOT={snaps}/$1\"\n",
            log = log.display(),
            snaps = snaps.display()
        ),
    )
    .unwrap();
    fs::write(
        &remove,
        format!(
            "#!/bin/sh\necho \"remove $*\" >> {}\nrm -rf \"$2\"\n",
            log.display()
        ),
    )
    .unwrap();
    for script in [&create, &remove] {
        fs::set_permissions(script, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cfg = work.path().join("snapshot.cfg");
    fs::write(
        &cfg,
        format!(
            "create_filesystem_snapshot={}\nremove_filesystem_snapshot={}\nvolumes_mounted_locally=0\n",
            create.display(),
            remove.display()
        ),
    )
    .unwrap();
    let config = format!(
        "snapshot-config = {cfg:?}\n\n[sets.vm]\npaths = [{data:?}]\nrequire-snapshot = true\n\n[sets.broken]\npaths = [{data:?}]\nrequire-snapshot = true\n"
    );
    fs::write(endpoint.state().join("endpoint.toml"), config).unwrap();

    endpoint.backup_json(&["--set", "vm"]);
    let calls = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 2, "{calls}");
    let create_args: Vec<&str> = lines[0].split(' ').collect();
    let uid = create_args[1];
    assert_eq!(create_args[0], "create");
    assert_eq!(create_args[2], data.to_str().unwrap());
    assert_eq!(
        create_args.last(),
        Some(&"vm"),
        "the set name is the volume name ($5): {calls}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "remove {uid} {}/{uid} {}",
            snaps.display(),
            data.display()
        )),
        "{calls}"
    );
    assert!(!snaps.join(uid).exists(), "the snapshot was removed");

    // Stored under the original path, with the content of the frozen view.
    let out = work.path().join("out");
    endpoint.restore_json(&[
        "--set",
        "vm",
        "--map-from",
        data.to_str().unwrap(),
        "--map-to",
        out.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(out.join("marker")).unwrap(), b"frozen\n");
    assert_eq!(
        fs::read(out.join("live.txt")).unwrap(),
        b"changing under us"
    );

    // A failing backup still removes its snapshot.
    fs::write(&log, "").unwrap();
    let failed = endpoint.ferry(&["backup", "--set", "broken"]);
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    let calls = fs::read_to_string(&log).unwrap();
    assert!(
        calls.lines().any(|l| l.starts_with("remove ")),
        "remove was not called after a failure: {calls}"
    );
}

#[test]
fn a_sets_retention_hints_keep_more_than_the_relays_rules_after_each_backup() {
    let relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    // The relay keeps one; the set's hints ask for two, so two are kept.
    relay.keep_last_unlocked("laptop", 1, &[]);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        endpoint.state().join("endpoint.toml"),
        format!("[sets.docs]\npaths = [{src:?}]\nkeep-last = 2\n"),
    )
    .unwrap();
    let mut made = Vec::new();
    for i in 0..4 {
        fs::write(src.join("note"), format!("version {i}")).unwrap();
        made.push(
            endpoint.backup_json(&["--set", "docs"])["snapshot"]
                .as_u64()
                .unwrap(),
        );
    }
    let list: serde_json::Value = serde_json::from_str(&ok(endpoint.ferry(&[
        "snapshots",
        "--set",
        "docs",
        "--json",
    ])))
    .unwrap();
    let kept: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, made[2..].to_vec());
    relay.wait_for_log("retention forgot");
    // The newest still restores.
    let out = work.path().join("out");
    endpoint.restore_json(&[
        "--set",
        "docs",
        "--map-from",
        src.to_str().unwrap(),
        "--map-to",
        out.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(out.join("note")).unwrap(), b"version 3");
}

#[test]
fn a_set_whose_usb_disk_is_not_plugged_in_backs_up_the_rest_and_exits_3() {
    for sealed in [false, true] {
        let (_relay, endpoint) = paired_in(sealed);
        let work = tempfile::tempdir().unwrap();
        let docs = work.path().join("docs");
        fs::create_dir_all(&docs).unwrap();
        fs::write(docs.join("letter.txt"), b"dear relay").unwrap();
        let usb = work.path().join("media/usb-disk");
        let config = format!("[sets.laptop]\npaths = [{docs:?}, {usb:?}]\n");
        fs::write(endpoint.state().join("endpoint.toml"), config).unwrap();

        let out = endpoint.ferry(&["backup", "--set", "laptop", "--json"]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("warning") && err.contains(&*usb.to_string_lossy()),
            "{err}"
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["paths_missing"][0], arg(&usb), "{summary}");
        assert_eq!(summary["files"], 1, "{summary}");
        let restored = work.path().join("out");
        endpoint.restore_json(&[
            "--set",
            "laptop",
            "--map-from",
            arg(&docs),
            "--map-to",
            arg(&restored),
        ]);
        assert_eq!(listing(&restored), listing(&docs));

        // None of the paths there: a failure, one line, no snapshot.
        fs::remove_dir_all(&docs).unwrap();
        let out = endpoint.ferry(&["backup", "--set", "laptop"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
}

#[test]
fn a_retired_set_is_removed_with_its_snapshots_and_never_alerts_again() {
    use ferry_tests::{http_get, wait_for, RelayOptions};
    let work = tempfile::tempdir().unwrap();
    let alerts = work.path().join("alerts.log");
    let command = format!(
        "check-interval = \"1s\"\ncommand = 'echo \"$FERRY_REASON|$FERRY_SET\" >> {}'",
        alerts.display()
    );
    // Set `old` goes stale at once; `probe`, backed up after the removal,
    // too: its alert shows the checker ran after the removal.
    let stale = "\"laptop/old\" = \"1s\"\n\"laptop/probe\" = \"1s\"";
    let relay = Relay::start_with(RelayOptions {
        sections: vec![
            ("web".into(), "listen = \"127.0.0.1:0\"".into()),
            ("alerts".into(), command),
            ("alerts.stale-after-for".into(), stale.into()),
        ],
        ..RelayOptions::default()
    });
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), "a").unwrap();
    let first = endpoint.backup_json(&["--set", "old", arg(&src)])["snapshot"].to_string();
    endpoint.backup_json(&["--set", "old", arg(&src)]);
    endpoint.backup_json(&["--set", "docs", arg(&src)]);
    let log = || fs::read_to_string(&alerts).unwrap_or_default();
    wait_for(
        "old's stale alert",
        std::time::Duration::from_secs(60),
        || log().contains("stale|old").then_some(()),
    );

    // A protected snapshot stops the removal; nothing changes.
    ok(relay.admin(&["snapshots", "protect", &first]));
    let refused = relay.admin(&["sets", "remove", "laptop", "old"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("protected"),
        "{}",
        stderr(&refused)
    );
    ok(relay.admin(&["snapshots", "unprotect", &first]));
    let removed = ok(relay.admin(&["sets", "remove", "laptop", "old"]));
    assert!(removed.contains("2 snapshot(s)"), "{removed}");
    let missing = relay.admin(&["sets", "remove", "laptop", "old"]);
    assert!(
        stderr(&missing).contains("has no set \"old\""),
        "{}",
        stderr(&missing)
    );

    // Gone from the endpoint's list and the status page; docs untouched.
    let left: Vec<serde_json::Value> =
        serde_json::from_str(&ok(endpoint.ferry(&["snapshots", "--json"]))).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["set"], "docs");
    let status: serde_json::Value =
        serde_json::from_str(&http_get(relay.web_addr(), "/api/status", None).body).unwrap();
    let sets: Vec<&str> = status["clients"][0]["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(sets, ["docs"]);
    // No alert about it after: neither stale again nor "recovered".
    endpoint.backup_json(&["--set", "probe", arg(&src)]);
    wait_for(
        "probe's stale alert",
        std::time::Duration::from_secs(60),
        || log().contains("stale|probe").then_some(()),
    );
    assert_eq!(log().matches("|old").count(), 1, "{}", log());
}

#[test]
fn a_new_set_over_files_another_set_backed_up_reads_none_of_them_unless_the_relay_lost_them() {
    for sealed in [false, true] {
        let (relay, endpoint) = paired_in(sealed);
        let mode = if sealed { "sealed" } else { "open" };
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        for i in 0..20 {
            let data = ferry_tests::tree::random_bytes(20_000, i);
            fs::write(src.join("sub").join(format!("f{i}")), data).unwrap();
        }
        let first = endpoint.backup_json(&["--set", "a", arg(&src)]);
        assert_eq!(first["files_new"], 20, "{mode}: {first}");
        // Set b over the same files: the files cache of set a knows them.
        let second = endpoint.backup_json(&["--set", "b", arg(&src)]);
        assert_eq!(second["files_unchanged"], 20, "{mode}: {second}");
        assert_eq!(second["bytes_scanned"], 0, "{mode}: {second}");
        let out = work.path().join("out-b");
        endpoint.restore_json(&["--set", "b", "--map-from", arg(&src), "--map-to", arg(&out)]);
        assert_eq!(listing(&out), listing(&src), "{mode}");
        // Its own now: b's next backup borrows nothing and reads nothing.
        let again = endpoint.backup_json(&["--set", "b", arg(&src)]);
        assert_eq!(again["files_unchanged"], 20, "{mode}: {again}");

        // Both sets retired and collected: the relay holds none of it, and
        // a set c that borrows their cache finds out at its commit and
        // reads every file once.
        ok(relay.admin(&["sets", "remove", "laptop", "a"]));
        ok(relay.admin(&["sets", "remove", "laptop", "b"]));
        ok(relay.admin(&["gc", "--grace", "0s"]));
        let third = endpoint.ferry(&["backup", "--json", "--set", "c", arg(&src)]);
        assert_eq!(third.status.code(), Some(0), "{mode}: {}", stderr(&third));
        assert!(
            stderr(&third).contains("backing up again, reading every file"),
            "{mode}: {}",
            stderr(&third)
        );
        let summary: serde_json::Value = serde_json::from_slice(&third.stdout).unwrap();
        assert_eq!(summary["files_new"], 20, "{mode}: {summary}");
        let out = work.path().join("out-c");
        endpoint.restore_json(&["--set", "c", "--map-from", arg(&src), "--map-to", arg(&out)]);
        assert_eq!(listing(&out), listing(&src), "{mode}");
    }
}

#[test]
fn a_sealed_client_starts_a_removed_set_again_only_when_told_to() {
    let (relay, endpoint) = paired_in(true);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), "first").unwrap();
    endpoint.backup_json(&["--set", "x", arg(&src)]);
    ok(relay.admin(&["sets", "remove", "laptop", "x"]));
    // To the endpoint a removed set looks like a relay hiding history.
    let refused = endpoint.ferry(&["backup", "--set", "x", arg(&src)]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("a rollback") && stderr(&refused).contains("ferry sets forget x"),
        "{}",
        stderr(&refused)
    );
    let forgot = ok(endpoint.ferry(&["sets", "forget", "x"]));
    assert!(forgot.contains("starts a new history"), "{forgot}");
    fs::write(src.join("a.txt"), "second").unwrap();
    let again = endpoint.backup_json(&["--set", "x", arg(&src)]);
    assert_eq!(again["files_new"], 1, "{again}");
    let out = work.path().join("out");
    endpoint.restore_json(&["--set", "x", "--map-from", arg(&src), "--map-to", arg(&out)]);
    assert_eq!(listing(&out), listing(&src));
}
