//! `--compression`: zstd sends fewer bytes than lz4 on text, `auto` follows
//! the upload limit, and what was sent either way restores identical.

use std::fs;

use ferry_tests::tree::listing;
use ferry_tests::{arg, paired, stderr, Endpoint, Relay};

/// About 2 MB of log-like text in 8 files.
fn write_text(dir: &std::path::Path) {
    fs::create_dir_all(dir).unwrap();
    let words = [
        "relay", "chunk", "backup", "restore", "error", "ok", "sync", "laptop",
    ];
    let mut state = 42u64;
    for file in 0..8 {
        let mut text = String::new();
        for line in 0..8_000u64 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let w = |shift: u32| words[((state >> shift) % words.len() as u64) as usize];
            text.push_str(&format!(
                "2026-11-26T10:{:02}:{:02} host{} {} {} {} id={}\n",
                line % 60,
                (line * 7) % 60,
                state % 16,
                w(8),
                w(16),
                w(24),
                state % 100_000
            ));
        }
        fs::write(dir.join(format!("log{file}.txt")), text).unwrap();
    }
}

fn backup(endpoint: &Endpoint, src: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec![arg(src)];
    all.extend_from_slice(args);
    endpoint.backup_json(&all)
}

#[test]
fn zstd_sends_less_than_lz4_and_auto_follows_the_limit() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_text(&src);
    let mut sent = Vec::new();
    for (compression, expected) in [("lz4", "lz4"), ("zstd", "zstd-3"), ("none", "none")] {
        let (_relay, endpoint) = paired();
        let summary = backup(&endpoint, &src, &["--compression", compression]);
        assert_eq!(summary["compression"], expected, "{summary}");
        sent.push(summary["bytes_sent"].as_u64().unwrap());
        let out = work.path().join(format!("out-{compression}"));
        endpoint.restore_json(&["--map-from", arg(&src), "--map-to", arg(&out)]);
        assert_eq!(listing(&out), listing(&src), "{compression}");
    }
    eprintln!("figure: 2 MB of text sent as lz4 / zstd / none: {sent:?} bytes");
    assert!(
        sent[1] * 10 < sent[0] * 8,
        "zstd not 20 % below lz4: {sent:?}"
    );
    assert!(sent[0] < sent[2], "{sent:?}");

    let (_relay, endpoint) = paired();
    let summary = backup(&endpoint, &src, &["--limit", "2MB/s"]);
    assert_eq!(
        summary["compression"], "zstd-15",
        "a slow link gets strong zstd: {summary}"
    );
}

#[test]
fn an_unknown_compression_is_a_usage_error() {
    let relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let out = endpoint.ferry(&["backup", "--compression", "gzip", "/tmp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("[possible values: auto, lz4, zstd, none]"),
        "{}",
        stderr(&out)
    );
}
