//! Retention decided by the relay, through the real binaries: the relay's
//! rules are the floor, an endpoint's hints (or a hostile client's) can
//! only keep more, protected snapshots stay until the admin says.

use std::fs;
use std::path::Path;

use ferry_protocol::ids::TreeId;
use ferry_protocol::message::{Message, ObjectId};
use ferry_protocol::retention::Retention;
use ferry_protocol::tree::Tree;
use ferry_tests::{ok, paired, Endpoint, RawSession, Relay};

/// `n` backups of `src` (a file changed each time); returns their ids.
fn backups(endpoint: &Endpoint, src: &Path, n: usize, from: usize) -> Vec<u64> {
    (from..from + n)
        .map(|i| {
            fs::write(src.join("note"), format!("version {i}")).unwrap();
            endpoint.backup_json(&["--set", "docs"])["snapshot"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// The relay's listing: (id, kept_by) of each snapshot.
fn listed(relay: &Relay) -> Vec<(u64, Vec<String>)> {
    let list: serde_json::Value =
        serde_json::from_str(&ok(relay.admin(&["snapshots", "list", "--json"]))).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let why = s["kept_by"].as_array().unwrap();
            (
                s["id"].as_u64().unwrap(),
                why.iter()
                    .map(|w| w.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn docs_set(endpoint: &Endpoint, src: &Path, hints: &str) {
    fs::create_dir_all(src).unwrap();
    fs::write(
        endpoint.state().join("endpoint.toml"),
        format!("[sets.docs]\npaths = [{src:?}]\n{hints}"),
    )
    .unwrap();
}

#[test]
fn an_endpoint_asking_to_keep_one_keeps_the_relays_three() {
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    docs_set(&endpoint, &src, "keep-last = 1\n");
    let out = relay.keep_last_unlocked("laptop", 3, &[]);
    assert!(out.contains("keep-last 3"), "{out}");
    let made = backups(&endpoint, &src, 5, 0);
    let kept = listed(&relay);
    assert_eq!(
        kept.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        made[2..].to_vec()
    );
    assert!(
        kept.iter()
            .all(|(_, why)| why.contains(&"last".to_string())),
        "{kept:?}"
    );
}

#[test]
fn the_most_destructive_hints_and_an_empty_tree_lose_nothing_the_rules_keep() {
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    docs_set(&endpoint, &src, "");
    relay.keep_last_unlocked("laptop", 3, &[]);
    let made = backups(&endpoint, &src, 3, 0);
    // A stolen laptop: keep nothing, and commit an empty tree, twice.
    let (empty, bytes) = Tree {
        entries: Vec::new(),
    }
    .encode()
    .unwrap();
    for _ in 0..2 {
        let mut raw = RawSession::open_as(&relay, &endpoint, 4);
        raw.send(&Message::BackupBegin {
            set: "docs".into(),
            retention: Retention {
                keep_last: Some(0),
                keep_daily: Some(0),
                keep_weekly: Some(0),
                keep_monthly: Some(0),
            },
        });
        assert!(matches!(raw.recv(), Some(Message::BackupReady { .. })));
        raw.send(&Message::PutObject {
            id: ObjectId::Tree(empty),
            codec: ferry_protocol::compress::Codec::None,
            data: bytes.clone(),
        });
        raw.send(&Message::Commit {
            root: TreeId(empty.0),
            files: 0,
            bytes: 0,
            started_ms: 0,
        });
        assert!(matches!(raw.recv(), Some(Message::Committed { .. })));
    }
    // Even with the lock off: the two identical empty trees count once, so
    // the relay's three are the first empty one and the last two real ones.
    let kept: Vec<u64> = listed(&relay).iter().map(|(id, _)| *id).collect();
    assert_eq!(kept.len(), 4, "{kept:?}");
    assert!(
        kept.contains(&made[2]) && kept.contains(&made[1]),
        "{kept:?}"
    );
    // The admin raises the floor: from now on more are kept.
    ok(relay.admin(&["clients", "retention", "laptop", "--keep-last", "10"]));
    backups(&endpoint, &src, 1, 10);
    assert_eq!(listed(&relay).len(), 5);
}

#[test]
fn a_protected_snapshot_survives_forget_and_retention_until_unprotected() {
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    docs_set(&endpoint, &src, "");
    let first = backups(&endpoint, &src, 1, 0)[0];
    let out = ok(relay.admin(&["snapshots", "protect", &first.to_string()]));
    assert!(out.contains("protected"), "{out}");
    let forget = relay.admin(&["snapshots", "forget", &first.to_string()]);
    assert_eq!(forget.status.code(), Some(1));
    assert!(
        ferry_tests::stderr(&forget).contains("is protected"),
        "{}",
        ferry_tests::stderr(&forget)
    );
    relay.keep_last_unlocked("laptop", 1, &[]);
    let later = backups(&endpoint, &src, 3, 1);
    let kept = listed(&relay);
    assert_eq!(
        kept.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![first, later[2]]
    );
    assert_eq!(kept[0].1, vec!["protected".to_string()]);
    // The dry run says what goes once it is unprotected, and why the rest stays.
    ok(relay.admin(&["snapshots", "unprotect", &first.to_string()]));
    let plan: serde_json::Value =
        serde_json::from_str(&ok(relay.admin(&["retention", "--dry-run", "--json"]))).unwrap();
    let fate = |id: u64| {
        plan.as_array()
            .unwrap()
            .iter()
            .find(|f| f["snapshot"] == id)
            .map(|f| f["action"].as_str().unwrap().to_string())
    };
    assert_eq!(fate(first).as_deref(), Some("forget"));
    assert_eq!(fate(later[2]).as_deref(), Some("keep"));
    assert_eq!(listed(&relay).len(), 2, "a dry run forgets nothing");
    let out = ok(relay.admin(&["retention"]));
    assert!(out.contains("forgot 1 snapshot"), "{out}");
    assert_eq!(listed(&relay).len(), 1);
}

#[test]
fn a_backup_over_the_quota_is_refused_and_everything_before_stays_whole() {
    over_the_quota(false);
}

#[test]
fn a_sealed_backup_over_the_quota_of_its_sealed_bytes_is_refused_and_everything_before_stays_whole()
{
    over_the_quota(true);
}

fn over_the_quota(sealed: bool) {
    let (relay, endpoint) = ferry_tests::paired_in(sealed);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let small = ferry_tests::tree::random_bytes(1 << 20, 71);
    fs::write(src.join("small"), &small).unwrap();
    let out = ok(relay.admin(&["clients", "quota", "laptop", "8MiB"]));
    assert!(out.contains("8.0 MiB"), "{out}");
    endpoint.backup_json(&[ferry_tests::arg(&src)]);
    // 20 MiB that do not compress: past the quota.
    fs::write(
        src.join("big"),
        ferry_tests::tree::random_bytes(20 << 20, 72),
    )
    .unwrap();
    let refused = endpoint.ferry(&["backup", ferry_tests::arg(&src)]);
    assert_eq!(refused.status.code(), Some(1));
    let err = ferry_tests::stderr(&refused);
    assert!(err.contains("quota of 8.0 MiB"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // The relay and the session are fine; the status shows the storage,
    // with what the refused backup left charged until a collection.
    let status = endpoint.status_json();
    assert_eq!(status["quota"], 8 << 20);
    assert!(
        status["stored_bytes"].as_u64().unwrap() <= 8 << 20,
        "{status}"
    );
    ok(relay.admin(&["gc"]));
    assert!(
        endpoint.status_json()["stored_bytes"].as_u64().unwrap() < 8 << 20,
        "the collection reclaimed what the refused backup left"
    );
    let list = ok(relay.admin(&["clients", "list", "--json"]));
    assert!(list.contains("\"stored_bytes\""), "{list}");
    // The earlier snapshot restores identical.
    let out = work.path().join("out");
    endpoint.restore_json(&[
        "--map-from",
        ferry_tests::arg(&src),
        "--map-to",
        ferry_tests::arg(&out),
    ]);
    assert_eq!(fs::read(out.join("small")).unwrap(), small);
    assert!(!out.join("big").exists());
    // A backup that fits goes through at once.
    fs::remove_file(src.join("big")).unwrap();
    fs::write(src.join("note"), b"fits").unwrap();
    endpoint.backup_json(&[ferry_tests::arg(&src)]);
}

#[test]
fn archival_keeps_the_newest_snapshot_of_each_month() {
    // The relay's calendar moved by a test hook, not by sleeping.
    let Clocked {
        clock,
        relay,
        endpoint,
        work: _work,
        src,
    } = Clocked::start();
    let ahead = |days: i64, secs: i64| clock.ahead_ms((days * 86_400 + secs) * 1000);
    relay.keep_last_unlocked(
        "laptop",
        1,
        &["--archive-every", "1 month", "--archive-for", "1 year"],
    );
    // Three months 40 days apart, and the third month twice.
    let mut made = Vec::new();
    for (i, (days, secs)) in [(0, 0), (40, 0), (80, 0), (80, 60)].into_iter().enumerate() {
        ahead(days, secs);
        made.extend(backups(&endpoint, &src, 1, i));
    }
    let kept = listed(&relay);
    let why = |id: u64| {
        kept.iter()
            .find(|(k, _)| *k == id)
            .map(|(_, w)| w.join(","))
    };
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert_eq!(why(made[0]).as_deref(), Some("archived"));
    assert_eq!(why(made[1]).as_deref(), Some("archived"));
    assert_eq!(why(made[2]), None, "superseded within its month");
    assert_eq!(why(made[3]).as_deref(), Some("newest,last,archived"));
}

/// A file naming how far the relay's clock is ahead (its test hook).
struct Clock(tempfile::NamedTempFile);

impl Clock {
    fn ahead_ms(&self, ms: i64) {
        fs::write(self.0.path(), ms.to_string()).unwrap();
    }
}

/// A relay whose clock the test moves, and an endpoint paired as "laptop"
/// with its set `docs` at `src`.
struct Clocked {
    clock: Clock,
    relay: Relay,
    endpoint: Endpoint,
    work: tempfile::TempDir,
    src: std::path::PathBuf,
}

impl Clocked {
    fn start() -> Self {
        let clock = Clock(tempfile::NamedTempFile::new().unwrap());
        clock.ahead_ms(0);
        let relay = Relay::start_with(ferry_tests::RelayOptions {
            env: vec![(
                "FERRY_CLOCK_AHEAD_FILE".into(),
                clock.0.path().to_str().unwrap().into(),
            )],
            ..ferry_tests::RelayOptions::default()
        });
        let endpoint = Endpoint::new();
        endpoint.pair_with(&relay, "laptop");
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        docs_set(&endpoint, &src, "");
        Clocked {
            clock,
            relay,
            endpoint,
            work,
            src,
        }
    }
}

/// The relay's `[retention]` table of `deploy/relay.example.toml`.
fn example_rules() -> String {
    let example = include_str!("../../deploy/relay.example.toml");
    let start = example.find("[retention]\n").expect("[retention]") + "[retention]\n".len();
    let end = example[start..]
        .find("\n[")
        .map_or(example.len(), |i| start + i);
    example[start..end]
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn twelve_empty_backups_from_a_stolen_laptop_leave_every_real_snapshot_of_the_day() {
    let rules = example_rules();
    assert!(rules.contains("keep-last = 10"), "{rules}");
    let relay = Relay::start_with(ferry_tests::RelayOptions {
        sections: vec![("retention".into(), rules)],
        ..ferry_tests::RelayOptions::default()
    });
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    docs_set(&endpoint, &src, "keep-last = 1\n");
    let real = backups(&endpoint, &src, 3, 0);
    // The thief points the set at an empty directory and backs up twelve times.
    let empty = work.path().join("empty");
    docs_set(&endpoint, &empty, "keep-last = 1\n");
    for _ in 0..12 {
        endpoint.backup_json(&["--set", "docs"]);
    }
    let kept = listed(&relay);
    for id in &real {
        let why = kept.iter().find(|(k, _)| k == id).map(|(_, w)| w.clone());
        assert!(
            why.as_ref()
                .is_some_and(|w| w.contains(&"locked".to_string())),
            "real snapshot {id} not kept by the lock: {kept:?}"
        );
    }
    assert_eq!(kept.len(), 15, "{kept:?}");
    // The retention dry run names the lock as the reason.
    let plan = ok(relay.admin(&["retention", "--dry-run"]));
    assert!(plan.contains("locked"), "{plan}");
    assert!(plan.contains("0 snapshot(s) would be forgotten"), "{plan}");
    // The last real snapshot restores.
    let out = work.path().join("out");
    endpoint.restore_json(&[
        "-b",
        &real[2].to_string(),
        "--map-from",
        ferry_tests::arg(&src),
        "--map-to",
        ferry_tests::arg(&out),
    ]);
    assert_eq!(fs::read(out.join("note")).unwrap(), b"version 2");
}

#[test]
fn a_relay_clock_stepped_back_never_forgets_the_snapshot_it_commits() {
    let Clocked {
        clock,
        relay,
        endpoint,
        work,
        src,
    } = Clocked::start();
    let ahead = |days: i64| clock.ahead_ms(days * 86_400_000);
    // The lock off: commit order alone must keep the new snapshot.
    relay.keep_last_unlocked("laptop", 3, &[]);
    backups(&endpoint, &src, 2, 0);
    ahead(365);
    backups(&endpoint, &src, 3, 2);
    // NTP steps the relay's clock back a year.
    ahead(0);
    let last = backups(&endpoint, &src, 1, 5)[0];
    let kept: Vec<u64> = listed(&relay).iter().map(|(id, _)| *id).collect();
    assert!(
        kept.contains(&last),
        "snapshot {last} forgotten at its own commit: {kept:?}"
    );
    assert_eq!(kept.len(), 3, "{kept:?}");
    let out = work.path().join("out");
    endpoint.restore_json(&[
        "--set",
        "docs",
        "--map-from",
        ferry_tests::arg(&src),
        "--map-to",
        ferry_tests::arg(&out),
    ]);
    assert_eq!(fs::read(out.join("note")).unwrap(), b"version 5");
}

#[test]
fn eight_refused_over_quota_backups_leave_the_store_near_the_quota() {
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    ok(relay.admin(&["clients", "quota", "laptop", "4MiB"]));
    // 12 MiB that do not compress: three times the quota.
    fs::write(
        src.join("big"),
        ferry_tests::tree::random_bytes(12 << 20, 73),
    )
    .unwrap();
    let mut last = String::new();
    for _ in 0..8 {
        let refused = endpoint.ferry(&["backup", ferry_tests::arg(&src)]);
        assert_eq!(refused.status.code(), Some(1));
        last = ferry_tests::stderr(&refused);
        assert!(last.contains("quota of 4.0 MiB"), "{last}");
        assert_eq!(last.lines().count(), 1, "{last}");
    }
    let packs = relay.pack_bytes();
    assert!(
        packs < (4 << 20) + (1 << 20),
        "eight refused backups left {packs} bytes of packs for a 4 MiB quota"
    );
    // What they left is charged: the client sees it, and is told what to do.
    let stored = endpoint.status_json()["stored_bytes"].as_u64().unwrap();
    assert!(stored + (1 << 20) > packs, "{stored} charged for {packs}");
    assert!(
        last.contains("ferry-relay snapshots forget") || last.contains("did not fit"),
        "{last}"
    );
}
