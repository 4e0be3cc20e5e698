//! The torture suite: kill, fill and corrupt, then show that every
//! committed snapshot still restores identical, with the counts.
//!
//! `cargo test` runs a short version of each (a few iterations). The full
//! one, whose figures the README quotes, is `tests/torture.sh` (release
//! binaries, `FERRY_TORTURE=full`, one test at a time).
//!
//! Each test prints a `figure:` line with its iterations and failures.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use ferry_tests::tree::{listing, random_bytes, Item};
use ferry_tests::{
    arg, ok, paired, stderr, stdout, wait_for, Endpoint, Relay, RelayOptions, DEADLINE,
};

const MIB: usize = 1 << 20;

/// Whether the full suite runs (`FERRY_TORTURE=full`).
fn full() -> bool {
    std::env::var("FERRY_TORTURE").as_deref() == Ok("full")
}

/// Iterations: `short` in the ordinary suite, `long` in the full one.
fn iterations(short: usize, long: usize) -> usize {
    if full() {
        long
    } else {
        short
    }
}

/// A seeded xorshift, so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

type Listing = BTreeMap<Vec<u8>, Item>;

/// Changes a few files of `src` (or creates it): small, deterministic edits.
fn mutate(src: &Path, rng: &mut Rng, files: usize, file_size: usize) {
    fs::create_dir_all(src).unwrap();
    for _ in 0..files.div_ceil(4).max(1) {
        let i = rng.below(files as u64);
        let seed = rng.next();
        fs::write(
            src.join(format!("f{i:03}.bin")),
            random_bytes(file_size, seed),
        )
        .unwrap();
    }
    for i in 0..files {
        let path = src.join(format!("f{i:03}.bin"));
        if !path.exists() {
            fs::write(path, random_bytes(file_size, rng.next())).unwrap();
        }
    }
}

fn spawn(mut command: Command) -> Child {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn restore(endpoint: &Endpoint, snapshot: u64, from: &Path, to: &Path) -> std::process::Output {
    let id = snapshot.to_string();
    endpoint.ferry(&[
        "restore",
        "-b",
        &id,
        "--map-from",
        arg(from),
        "--map-to",
        arg(to),
    ])
}

/// Restores each snapshot into a fresh directory; returns how many differ
/// from what was backed up.
fn mismatches(endpoint: &Endpoint, src: &Path, work: &Path, snapshots: &[(u64, Listing)]) -> usize {
    let mut bad = 0;
    for (snapshot, expected) in snapshots {
        let out = work.join(format!("check-{snapshot}"));
        let restored = restore(endpoint, *snapshot, src, &out);
        if !restored.status.success() || listing(&out) != *expected {
            eprintln!(
                "snapshot {snapshot} does not restore identical: {}",
                stderr(&restored)
            );
            bad += 1;
        }
        fs::remove_dir_all(&out).ok();
    }
    bad
}

/// Forgets `snapshots` and starts `ferry-relay gc --grace 0s`.
fn forget_and_collect(relay: &Relay, snapshots: &[u64]) -> Child {
    let ids: Vec<String> = snapshots.iter().map(u64::to_string).collect();
    let mut args = vec!["snapshots", "forget"];
    args.extend(ids.iter().map(String::as_str));
    ok(relay.admin(&args));
    let mut gc = relay.command();
    gc.args(["gc", "--grace", "0s"]);
    spawn(gc)
}

fn verify_code(relay: &Relay) -> (Option<i32>, serde_json::Value) {
    let out = relay.admin(&["verify", "--json"]);
    let report = serde_json::from_str(&stdout(&out)).unwrap_or(serde_json::Value::Null);
    (out.status.code(), report)
}

#[test]
fn relay_killed_during_backups() {
    let n = iterations(3, 50);
    let (mut relay, endpoint) = paired();
    ok(relay.admin(&["clients", "limit", "laptop", "8MiB/s"]));
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let mut rng = Rng(0x5eed_0001);
    let mut committed = Vec::new();
    let mut restarts = 0;
    for _ in 0..n {
        mutate(&src, &mut rng, 12, MIB);
        let before = relay.pack_bytes();
        let mut backup = spawn({
            let mut c = endpoint.command();
            c.args(["backup", arg(&src)]);
            c
        });
        let target = before + 1 + rng.below(3 * MIB as u64);
        wait_for("the relay to receive", DEADLINE, || {
            (relay.pack_bytes() >= target || backup.try_wait().unwrap().is_some()).then_some(())
        });
        relay.kill_and_restart();
        restarts += 1;
        backup.wait().unwrap();
        let summary = endpoint.backup_json(&[arg(&src)]);
        committed.push((summary["snapshot"].as_u64().unwrap(), listing(&src)));
    }
    let bad = mismatches(&endpoint, &src, work.path(), &committed);
    let (code, report) = verify_code(&relay);
    eprintln!(
        "figure: relay kill -9 during backups: {restarts} kills, {} snapshots restored, {bad} mismatches, verify exit {code:?}",
        committed.len()
    );
    assert_eq!(bad, 0);
    assert_eq!(code, Some(0), "{report}");
}

#[test]
fn relay_killed_during_gc_and_verify_killed() {
    let n = iterations(3, 20);
    let (mut relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let mut rng = Rng(0x5eed_0002);
    let mut live: Vec<(u64, Listing)> = Vec::new();
    let (mut gc_kills, mut verify_kills) = (0, 0);
    for _ in 0..n {
        for _ in 0..2 {
            mutate(&src, &mut rng, 16, 256 * 1024);
            let summary = endpoint.backup_json(&[arg(&src)]);
            live.push((summary["snapshot"].as_u64().unwrap(), listing(&src)));
        }
        // Forget the oldest half, collect, and kill the relay meanwhile.
        let oldest: Vec<u64> = live.drain(..live.len() / 2).map(|(id, _)| id).collect();
        let mut gc = forget_and_collect(&relay, &oldest);
        relay.wait_for_log("gc requested");
        relay.kill_and_restart();
        gc_kills += 1;
        gc.wait().unwrap();
        // A verify killed part-way leaves a catalog the next one finishes.
        let mut verify = spawn({
            let mut c = relay.command();
            c.arg("verify");
            c
        });
        std::thread::sleep(std::time::Duration::from_millis(rng.below(40)));
        let _ = verify.kill();
        verify.wait().unwrap();
        verify_kills += 1;
    }
    let bad = mismatches(&endpoint, &src, work.path(), &live);
    let (code, report) = verify_code(&relay);
    eprintln!(
        "figure: relay kill -9 during gc: {gc_kills} kills; verify killed {verify_kills} times; {} snapshots restored, {bad} mismatches, verify exit {code:?}",
        live.len()
    );
    assert_eq!(bad, 0);
    assert_eq!(code, Some(0), "{report}");
}

#[test]
fn endpoint_killed_during_restore() {
    let n = iterations(3, 20);
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let mut rng = Rng(0x5eed_0003);
    mutate(&src, &mut rng, 24, 512 * 1024);
    endpoint.backup_json(&[arg(&src)]);
    let expected = listing(&src);
    ok(relay.admin(&["clients", "limit", "laptop", "4MiB/s"]));
    let target = work.path().join("target");
    let mut wrong = 0;
    for _ in 0..n {
        let mut child = spawn({
            let mut c = endpoint.command();
            c.args(["restore", "--map-from", arg(&src), "--map-to", arg(&target)]);
            c
        });
        let bytes = 1 + rng.below(6 * MIB as u64);
        wait_for("the restore to write", DEADLINE, || {
            let written: u64 = fs::read_dir(&target)
                .map(|d| d.map(|e| e.unwrap().metadata().unwrap().len()).sum())
                .unwrap_or(0);
            (written >= bytes || child.try_wait().unwrap().is_some()).then_some(())
        });
        let _ = child.kill();
        child.wait().unwrap();
        // Nothing under a final name is ever wrong.
        for (path, item) in listing(&target) {
            if String::from_utf8_lossy(&path).ends_with(".tmp") || item.kind == "dir" {
                continue;
            }
            if expected.get(&path).map(|e| &e.hash) != Some(&item.hash) {
                wrong += 1;
            }
        }
    }
    ok(relay.admin(&["clients", "limit", "laptop", "unlimited"]));
    endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&target)]);
    let identical = listing(&target) == expected;
    eprintln!(
        "figure: endpoint kill -9 during restore: {n} kills, {wrong} wrong files under a final name, final restore identical: {identical}"
    );
    assert_eq!(wrong, 0);
    assert!(identical);
}

#[test]
fn relay_disk_full_at_several_points() {
    let sizes: &[&str] = if full() {
        &["10m", "14m", "18m", "22m", "26m", "30m"]
    } else {
        &["12m", "20m"]
    };
    let mut failures = 0;
    let mut named = 0;
    for size in sizes {
        let relay = Relay::start_with(RelayOptions {
            tmpfs: Some((*size).into()),
            ..RelayOptions::default()
        });
        let endpoint = Endpoint::new();
        endpoint.pair_with(&relay, "laptop");
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        let mut rng = Rng(0x5eed_0004);
        let mut committed = Vec::new();
        for _ in 0..4 {
            mutate(&src, &mut rng, 8, 2 * MIB);
            let out = endpoint.ferry(&["backup", "--json", arg(&src)]);
            if out.status.success() {
                let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                committed.push((summary["snapshot"].as_u64().unwrap(), listing(&src)));
            } else if stderr(&out).contains("no space left on the relay's disk") {
                named += 1;
            } else {
                panic!("a full disk was not named: {}", stderr(&out));
            }
        }
        relay.resize_tmpfs("200m");
        mutate(&src, &mut rng, 8, 2 * MIB);
        let summary = endpoint.backup_json(&[arg(&src)]);
        committed.push((summary["snapshot"].as_u64().unwrap(), listing(&src)));
        failures += mismatches(&endpoint, &src, work.path(), &committed);
        let (code, report) = verify_code(&relay);
        assert_eq!(code, Some(0), "tmpfs {size}: {report}");
    }
    eprintln!(
        "figure: relay disk full at {} fill points: {named} backups refused with the disk named, {failures} snapshots not identical",
        sizes.len()
    );
    assert_eq!(failures, 0);
}

/// Every indexed blob with all its copies: (pack, offset, stored length).
fn indexed_blobs(relay: &Relay) -> Vec<(u32, u64, u64)> {
    let db = rusqlite::Connection::open(relay.data().join("catalog.sqlite")).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT pack, offset, length * copies FROM blobs WHERE kind != 1 ORDER BY pack, offset",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

fn pack_path(relay: &Relay, pack: u32) -> PathBuf {
    relay.data().join(format!("store/packs/{pack:08}.pack"))
}

#[test]
fn single_byte_flips_are_found_healed_and_never_restored_wrong() {
    let n = std::env::var("FERRY_FLIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(iterations(5, 1000));
    let (mut relay, endpoint) = paired();
    // The directories above the source are part of each snapshot, and they
    // change under it throughout (another process creating files beside
    // it): a rotten tree they hold can never be sent again by a backup, so
    // only its second copy can repair it.
    let work = tempfile::Builder::new()
        .prefix("ferry-flips-")
        .tempdir()
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let touching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let toucher = std::thread::spawn({
        let (touching, above) = (std::sync::Arc::clone(&touching), work.path().to_path_buf());
        move || {
            let mut touches = 0u64;
            while touching.load(std::sync::atomic::Ordering::Relaxed) {
                let beside = above.join(format!("beside-{}", touches % 7));
                let _ = fs::write(&beside, touches.to_le_bytes());
                let _ = fs::remove_file(&beside);
                touches += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            touches
        }
    });
    let src = work.path().join("src");
    let mut rng = Rng(0x5eed_0005);
    mutate(&src, &mut rng, 20, 96 * 1024);
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/big.bin"), random_bytes(3 * MIB, 5)).unwrap();
    endpoint.backup_json(&[arg(&src)]);
    let expected = listing(&src);
    let (mut found, mut repaired, mut healed, mut wrong) = (0, 0, 0, 0);
    let out = scratch.path().join("out");
    for i in 0..n {
        relay.terminate();
        let blobs = indexed_blobs(&relay);
        let (pack, offset, length) = blobs[rng.below(blobs.len() as u64) as usize];
        let at = offset + rng.below(length);
        eprintln!("flip {i}: pack {pack} offset {at}");
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(pack_path(&relay, pack))
            .unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ (1 << rng.below(8))], at)
            .unwrap();
        drop(file);
        let (code, report) = verify_code(&relay);
        let names = |list: &str| {
            report[list].as_array().is_some_and(|d| {
                d.iter().any(|x| {
                    x["pack"].as_u64() == Some(u64::from(pack))
                        && x["offset"].as_u64().is_some_and(|o| o <= at)
                        && x["offset"].as_u64().unwrap() + x["length"].as_u64().unwrap() > at
                })
            })
        };
        if code == Some(3) && names("damaged") {
            found += 1;
        } else if code == Some(0) && names("repaired") {
            // A tree's or content's rotten copy, written over from its twin.
            found += 1;
            repaired += 1;
        } else {
            eprintln!("flip at pack {pack} offset {at} not found: {report}");
        }
        relay.start_again();
        // Whatever the damage, a restore never writes a wrong byte.
        fs::remove_dir_all(&out).ok();
        restore(&endpoint, 1, &src, &out);
        for (path, item) in listing(&out) {
            if item.kind == "file" && expected.get(&path).map(|e| &e.hash) != Some(&item.hash) {
                wrong += 1;
            }
        }
        endpoint.backup_json(&[arg(&src)]);
        let (code, report) = verify_code(&relay);
        if code == Some(0) {
            healed += 1;
        } else {
            eprintln!("flip {i} not healed: {report}");
        }
    }
    touching.store(false, std::sync::atomic::Ordering::Relaxed);
    let touches = toucher.join().unwrap();
    fs::remove_dir_all(&out).ok();
    let restored = restore(&endpoint, 1, &src, &out);
    let identical = restored.status.success() && listing(&out) == expected;
    eprintln!(
        "figure: {n} single-byte flips (the source's parent changed {touches} times meanwhile): {found} found by verify ({repaired} of them repaired at once from the second copy), {healed} whole after the next backup, {wrong} wrong files restored; snapshot 1 identical after: {identical}"
    );
    assert_eq!((found, healed, wrong), (n, n, 0));
    assert!(identical);
}

#[test]
fn many_endpoints_at_once() {
    let n = iterations(4, 50);
    // 50 laptops come from 50 addresses; here all come from 127.0.0.1.
    let relay = Relay::start_with(RelayOptions {
        limits: Some(
            "max-connections-per-source = 256\nhandshakes-per-second-per-source = 1000".into(),
        ),
        ..RelayOptions::default()
    });
    let work = tempfile::tempdir().unwrap();
    let endpoints: Vec<(Endpoint, PathBuf)> = (0..n)
        .map(|i| {
            let endpoint = Endpoint::new();
            endpoint.pair_with(&relay, &format!("laptop{i}"));
            let src = work.path().join(format!("src{i}"));
            mutate(&src, &mut Rng(0x5eed_1000 + i as u64), 6, 256 * 1024);
            (endpoint, src)
        })
        .collect();
    let backups: Vec<Child> = endpoints
        .iter()
        .map(|(endpoint, src)| {
            let mut c = endpoint.command();
            c.args(["backup", arg(src)]);
            spawn(c)
        })
        .collect();
    let failed = backups
        .into_iter()
        .map(|mut b| b.wait().unwrap())
        .filter(|s| !s.success())
        .count();
    let mut different = 0;
    for (i, (endpoint, src)) in endpoints.iter().enumerate() {
        let out = work.path().join(format!("out{i}"));
        let restored = endpoint.ferry(&["restore", "--map-from", arg(src), "--map-to", arg(&out)]);
        if !restored.status.success() || listing(&out) != listing(src) {
            different += 1;
        }
    }
    eprintln!(
        "figure: {n} endpoints backing up at once: {failed} failed, {different} not restored identical"
    );
    assert_eq!((failed, different), (0, 0));
}

#[test]
fn verify_beside_gc_never_reports_damage() {
    let n = iterations(4, 40);
    let (relay, endpoint) = paired();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let mut rng = Rng(0x5eed_0006);
    let mut live: Vec<u64> = Vec::new();
    let mut false_alarms = 0;
    for _ in 0..n {
        for _ in 0..2 {
            mutate(&src, &mut rng, 24, 128 * 1024);
            live.push(
                endpoint.backup_json(&[arg(&src)])["snapshot"]
                    .as_u64()
                    .unwrap(),
            );
        }
        let oldest: Vec<u64> = live.drain(..live.len() / 2).collect();
        // The collection rewrites packs while verify reads them.
        let mut gc = forget_and_collect(&relay, &oldest);
        let (code, report) = verify_code(&relay);
        if code != Some(0) {
            eprintln!("verify beside gc: {report}");
            false_alarms += 1;
        }
        assert!(gc.wait().unwrap().success());
    }
    let (code, report) = verify_code(&relay);
    eprintln!("figure: verify beside gc: {n} runs, {false_alarms} reported damage");
    assert_eq!(false_alarms, 0);
    assert_eq!(code, Some(0), "{report}");
}
