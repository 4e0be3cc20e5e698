//! `ferry key`: the vault key on paper, on the relay under a passphrase,
//! and recovered by the machine that took a lost laptop's client over.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use ferry_tests::{arg, ok, stderr, Endpoint, Relay, RelayOptions};

/// The vault key's fingerprint as `key export` prints it.
fn vault_fingerprint(endpoint: &Endpoint) -> String {
    let out = ok(endpoint.ferry(&["key", "export", "--paper"]));
    out.lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .expect("a fingerprint line")
        .to_string()
}

fn vault_file(endpoint: &Endpoint) -> std::path::PathBuf {
    endpoint.state().join("keys/vault.key")
}

#[test]
fn a_paper_key_moves_the_vault_and_a_typo_is_refused() {
    let relay = Relay::start();
    let first = Endpoint::new();
    first.pair_with(&relay, "laptop");
    let paper = ok(first.ferry(&["key", "export", "--paper"]));
    assert!(paper.starts_with("ferry vault key v1\n"), "{paper}");
    let mode = fs::metadata(vault_file(&first))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let work = tempfile::tempdir().unwrap();
    let text: String = paper.lines().take(3).map(|l| format!("{l}\n")).collect();
    let file = work.path().join("paper.txt");
    fs::write(&file, &text).unwrap();

    let second = Endpoint::new();
    let imported = ok(second.ferry(&["key", "import", arg(&file)]));
    assert!(imported.contains(&vault_fingerprint(&first)), "{imported}");
    assert_eq!(vault_fingerprint(&second), vault_fingerprint(&first));

    let mut chars: Vec<char> = text.chars().collect();
    let at = text.find('\n').unwrap() + 2;
    chars[at] = if chars[at] == '7' { '8' } else { '7' };
    fs::write(&file, chars.into_iter().collect::<String>()).unwrap();
    let third = Endpoint::new();
    let out = third.ferry(&["key", "import", arg(&file)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("checksum"), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(!vault_file(&third).exists());
}

#[test]
fn the_machine_that_takes_a_lost_laptop_over_recovers_its_vault_with_the_passphrase() {
    let relay = Relay::start();
    let lost = Endpoint::new();
    lost.pair_with(&relay, "laptop");
    let work = tempfile::tempdir().unwrap();
    let right = work.path().join("passphrase");
    fs::write(&right, "river cobalt maple seventy\n").unwrap();
    ok(lost.ferry(&["key", "passphrase", "--passphrase-file", arg(&right)]));
    let fingerprint = vault_fingerprint(&lost);

    let out = ok(relay.admin(&["pair", "--name", "laptop", "--replace", "--json"]));
    let code: serde_json::Value = serde_json::from_str(&out).unwrap();
    let found = Endpoint::new();
    ok(found.try_pair(&relay, code["code"].as_str().unwrap()));

    let wrong = work.path().join("wrong");
    fs::write(&wrong, "river cobalt maple seventy-one").unwrap();
    let out = found.ferry(&["key", "recover", "--passphrase-file", arg(&wrong)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("passphrase does not open"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!vault_file(&found).exists());

    let recovered = found
        .command()
        .args(["key", "recover"])
        .env("FERRY_PASSPHRASE_FILE", &right)
        .output()
        .unwrap();
    assert!(recovered.status.success(), "{}", stderr(&recovered));
    assert_eq!(vault_fingerprint(&found), fingerprint);
}

#[test]
fn a_weak_passphrase_is_refused_with_its_reason_and_nothing_is_kept() {
    let relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let work = tempfile::tempdir().unwrap();
    let weak = work.path().join("weak");
    fs::write(&weak, "hunter2").unwrap();
    let out = endpoint.ferry(&["key", "passphrase", "--passphrase-file", arg(&weak)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("too short"), "{}", stderr(&out));
    let out = endpoint.ferry(&["key", "recover", "--passphrase-file", arg(&weak)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("keeps no passphrase-wrapped key"),
        "{}",
        stderr(&out)
    );
}

/// A new recovery identity written to `file`; returns its recipient.
fn new_recovery_key(file: &std::path::Path) -> String {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(ferry_tests::binary("ferry-relay"))
        .args([
            "--data",
            arg(data.path()),
            "recovery-key",
            "--new",
            arg(file),
        ])
        .output()
        .unwrap();
    let stdout = ok(out);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("recovery-recipient"))
        .unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

#[test]
fn the_organisations_recovery_key_opens_a_vault_whose_passphrase_copy_is_gone() {
    let work = tempfile::tempdir().unwrap();
    let identity = work.path().join("recovery.identity");
    let recipient = new_recovery_key(&identity);
    let mode = fs::metadata(&identity).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let relay = Relay::start_with(RelayOptions {
        sections: vec![(
            "sealed".into(),
            format!("recovery-recipient = \"{recipient}\""),
        )],
        ..RelayOptions::default()
    });
    let lost = Endpoint::sealed();
    lost.pair_with(&relay, "laptop");
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("thesis.txt"), b"the only copy of chapter three").unwrap();
    ok(lost.ferry(&["backup", arg(&src)]));
    let passphrase = work.path().join("passphrase");
    fs::write(&passphrase, "river cobalt maple seventy").unwrap();
    // The relay's word alone does not make the endpoint wrap its vault to
    // a recipient (a hostile relay would name its own key).
    let alone = lost.ferry(&["key", "passphrase", "--passphrase-file", arg(&passphrase)]);
    assert!(
        stderr(&alone).contains("only when you give it"),
        "{}",
        stderr(&alone)
    );
    let catalog = rusqlite::Connection::open(relay.data().join("catalog.sqlite")).unwrap();
    catalog.busy_timeout(ferry_tests::DEADLINE).unwrap();
    let kept: Option<Vec<u8>> = catalog
        .query_row("SELECT recovery FROM key_wraps", [], |r| r.get(0))
        .unwrap();
    assert!(
        kept.is_none(),
        "wrapped to a recipient the owner never gave"
    );
    let other = work.path().join("other.identity");
    let other_recipient = new_recovery_key(&other);
    let mismatch = lost.ferry(&[
        "key",
        "passphrase",
        "--passphrase-file",
        arg(&passphrase),
        "--recovery-recipient",
        &other_recipient,
    ]);
    assert_eq!(mismatch.status.code(), Some(1));
    assert!(
        stderr(&mismatch).contains("does not name"),
        "{}",
        stderr(&mismatch)
    );
    let said = ok(lost.ferry(&[
        "key",
        "passphrase",
        "--passphrase-file",
        arg(&passphrase),
        "--recovery-recipient",
        &recipient,
    ]));
    assert!(said.contains("recovery key"), "{said}");
    let fingerprint = vault_fingerprint(&lost);

    let out = ok(relay.admin(&["pair", "--name", "laptop", "--replace", "--json"]));
    let code: serde_json::Value = serde_json::from_str(&out).unwrap();
    let found = Endpoint::sealed();
    ok(found.try_pair(&relay, code["code"].as_str().unwrap()));
    // The passphrase-wrapped copy is gone (or the passphrase forgotten).
    catalog
        .execute("UPDATE key_wraps SET wrapped = NULL", [])
        .unwrap();
    let out = found.ferry(&["key", "recover", "--passphrase-file", arg(&passphrase)]);
    assert!(
        stderr(&out).contains("keeps no passphrase-wrapped key"),
        "{}",
        stderr(&out)
    );

    let out = found.ferry(&["key", "recover", "--identity", arg(&other)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not open"), "{}", stderr(&out));
    assert!(!vault_file(&found).exists());

    ok(found.ferry(&["key", "recover", "--identity", arg(&identity)]));
    assert_eq!(vault_fingerprint(&found), fingerprint);
    // The organisation's key opened the sealed history.
    let out = work.path().join("out");
    ok(found.ferry(&["restore", "--map-from", arg(&src), "--map-to", arg(&out)]));
    assert_eq!(
        fs::read(out.join("thesis.txt")).unwrap(),
        b"the only copy of chapter three"
    );
}
