//! Pairing through the real binaries: codes, attempts, expiry, LAN-only.

use std::io::BufReader;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

use std::fs;

use ferry_tests::tree::{listing, random_bytes};
use ferry_tests::{arg, ok, read_until, stderr, wait_for, Endpoint, Relay, RelayOptions, DEADLINE};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn pairing_then_session_both_sides_show_the_same_fingerprints() {
    let relay = Relay::start();
    // The operator's `pair` waits for the endpoint and prints its fingerprint.
    let mut waiting = relay
        .command()
        .args(["pair", "--name", "laptop"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(waiting.stdout.take().unwrap());
    let first = read_until(&mut lines, "pairing code for");
    let code = first
        .split(": ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();

    let endpoint = Endpoint::new();
    let out = ok(endpoint.try_pair(&relay, &code));
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key:?} in {text}"))
            .trim()
            .to_string()
    };
    let relay_fp = field(&out, "relay fingerprint:");
    let endpoint_fp = field(&out, "endpoint fingerprint:");
    assert_eq!(relay_fp, relay.fingerprint);

    let paired = read_until(&mut lines, "paired \"laptop\"");
    assert!(
        paired.contains(&format!("endpoint fingerprint {endpoint_fp}")),
        "{paired}"
    );
    assert!(
        paired.contains(&format!("relay fingerprint {relay_fp}")),
        "{paired}"
    );
    assert!(waiting.wait().unwrap().success());

    // A session opens; both sides report the same pair.
    let status = endpoint.status_json();
    assert_eq!(status["relay_fingerprint"], relay_fp.as_str());
    assert_eq!(status["endpoint_fingerprint"], endpoint_fp.as_str());
    assert_eq!(status["path"], "lan");
    assert_eq!(status["address"], relay.session_addr.to_string().as_str());
    relay.wait_for_log(&format!("session opened: client laptop ({endpoint_fp})"));
    let show: serde_json::Value =
        serde_json::from_str(&ok(relay.admin(&["clients", "show", "laptop", "--json"]))).unwrap();
    assert_eq!(show["fingerprint"], endpoint_fp.as_str());
    assert_eq!(show["name"], "laptop");
    let list: serde_json::Value =
        serde_json::from_str(&ok(relay.admin(&["clients", "list", "--json"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Keys are private.
    assert_eq!(mode(&endpoint.state().join("keys/endpoint.key")), 0o600);
    assert_eq!(mode(&endpoint.state().join("relay.toml")), 0o600);
    assert_eq!(mode(&relay.data().join("keys/relay.key")), 0o600);
    assert_eq!(mode(&relay.data()), 0o700);
    assert_eq!(mode(&relay.data().join("catalog.sqlite")), 0o600);
}

#[test]
fn wrong_codes_are_counted_and_the_third_burns_the_code() {
    let relay = Relay::start();
    let code = relay.pairing_code("laptop");
    let (nameplate, secret) = code.split_once('-').unwrap();
    let wrong_secret = if secret == "0000-0000" {
        "0000-0001"
    } else {
        "0000-0000"
    };
    let wrong = format!("{nameplate}-{wrong_secret}");
    let endpoint = Endpoint::new();
    let pair = |code: &str| endpoint.try_pair(&relay, code);

    // The endpoint learns nothing about the code but that it cannot be
    // used; the operator's log says why.
    let unusable = "this pairing code cannot be used";
    for left in [2, 1] {
        let out = pair(&wrong);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(err.contains(unusable), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        relay.wait_for_log(&format!("({left} attempt(s) left)"));
    }
    let err = stderr(&pair(&wrong));
    assert!(err.contains(unusable), "{err}");
    relay.wait_for_log("it is now burned after 3 failed attempts");
    // The real code no longer works, and says no more than a wrong one.
    let out = pair(&code);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), err);
    assert!(!endpoint.state().join("relay.toml").exists());
    relay.wait_for_log("was burned after 3 failed attempts");

    // An unknown nameplate gets the very same answer.
    let unknown = if nameplate == "999" { "998" } else { "999" };
    let out = pair(&format!("{unknown}-1234-5678"));
    assert_eq!(stderr(&out), err);
    relay.wait_for_log(&format!("no code has nameplate {unknown}"));
    // A malformed code is a usage error.
    assert_eq!(pair("12345").status.code(), Some(2));
}

#[test]
fn an_expired_code_is_refused_and_the_log_says_expired() {
    let relay = Relay::start();
    let out = ok(relay.admin(&["pair", "--name", "laptop", "--ttl", "1s", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let code = v["code"].as_str().unwrap();
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    // Wait for the clock to pass the expiry (1 s TTL, second resolution, so 2 s).
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    wait_for("the code to expire", DEADLINE, || {
        (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            > deadline)
            .then_some(())
    });
    let endpoint = Endpoint::new();
    let out = endpoint.try_pair(&relay, code);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("this pairing code cannot be used"),
        "{}",
        stderr(&out)
    );
    relay.wait_for_log("expired");
}

#[test]
fn pairing_from_outside_the_lan_networks_is_refused() {
    let relay = Relay::start_with(RelayOptions {
        lan_networks: vec!["10.0.0.0/8".into()],
        ..Default::default()
    });
    let code = relay.pairing_code("laptop");
    let endpoint = Endpoint::new();
    let out = endpoint.try_pair(&relay, &code);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("only from the relay's LAN networks"), "{err}");
    relay.wait_for_log("refused pairing from 127.0.0.1");
}

#[test]
fn a_code_typed_without_its_dashes_pairs() {
    let relay = Relay::start();
    let code = relay.pairing_code("laptop");
    let endpoint = Endpoint::new();
    let out = ok(endpoint.try_pair(&relay, &code.replace('-', " ")));
    assert!(out.contains("paired with relay"), "{out}");
    let typo = Endpoint::new();
    let out = typo.try_pair(&relay, "12-345");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a malformed code is a usage error"
    );
    assert!(
        stderr(&out).contains("expected N-DDDD-DDDD"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_line_ferry_relay_pair_prints_is_the_command_that_pairs() {
    let relay = Relay::start();
    let out = ok(relay.admin(&["pair", "--name", "laptop", "--no-wait"]));
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("on the endpoint run: "))
        .unwrap_or_else(|| panic!("no command line in:\n{out}"));
    assert_eq!(
        line,
        format!(
            "ferry pair --relay {} --code {}",
            relay.pair_addr,
            line.rsplit(' ').next().unwrap()
        )
    );
    let args: Vec<&str> = line.split(' ').skip(1).collect();
    let paired = ok(Endpoint::new().ferry(&args));
    assert!(paired.contains("paired with relay"), "{paired}");
    // The JSON form lists the same lines.
    let json = ok(relay.admin(&["pair", "--name", "desktop", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let code = v["code"].as_str().unwrap();
    assert_eq!(
        v["endpoint_commands"],
        serde_json::json!([format!(
            "ferry pair --relay {} --code {code}",
            relay.pair_addr
        )])
    );
}

#[test]
fn pairing_with_the_session_port_names_the_mistake() {
    let relay = Relay::start();
    let code = relay.pairing_code("laptop");
    let endpoint = Endpoint::new();
    let session = relay.session_addr.to_string();
    let out = endpoint.ferry(&["pair", "--relay", &session, "--code", &code, "--open"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("the relay's session port, not its pairing port"),
        "{err}"
    );
    relay.wait_for_log("a pairing connection came to the session port");
    // The code was not spent: the right port still pairs with it.
    let out = ok(endpoint.try_pair(&relay, &code));
    assert!(out.contains("paired with relay"), "{out}");
}

#[test]
fn pairing_twice_from_the_same_state_is_refused_clearly() {
    let relay = Relay::start();
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let code = relay.pairing_code("laptop-2");
    let out = endpoint.try_pair(&relay, &code);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already paired"), "{}", stderr(&out));
}

/// A `pair --replace` code for `name`: its JSON says which key it replaces.
fn replacing_code(relay: &Relay, name: &str) -> (String, String) {
    let out = ok(relay.admin(&["pair", "--name", name, "--replace", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("pair --json");
    let replaces = v["replaces"].as_str().expect("replaces").to_string();
    (v["code"].as_str().expect("code").to_string(), replaces)
}

#[test]
fn a_lost_laptop_is_replaced_restores_everything_and_its_old_key_is_refused() {
    let relay = Relay::start();
    let lost = Endpoint::new();
    lost.pair_with(&relay, "laptop");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("home");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::write(src.join("docs/thesis.txt"), b"years of work").unwrap();
    fs::write(src.join("big.bin"), random_bytes(300_000, 42)).unwrap();
    let before = listing(&src);
    lost.backup_json(&["--set", "home", arg(&src)]);
    let old_fingerprint = lost.status_json()["endpoint_fingerprint"].clone();

    // The laptop is gone: the operator moves "laptop" to a new machine.
    let (code, replaces) = replacing_code(&relay, "laptop");
    assert_eq!(Some(replaces.as_str()), old_fingerprint.as_str());
    let found = Endpoint::new();
    ok(found.try_pair(&relay, &code));
    relay.wait_for_log("moved to a new machine");

    // Everything the old machine stored is the new one's.
    let out = work.path().join("restored");
    found.restore_json(&[
        "--set",
        "home",
        "--map-from",
        arg(&src),
        "--map-to",
        arg(&out),
    ]);
    assert_eq!(listing(&out), before);
    let again = found.backup_json(&["--set", "home", arg(&src)]);
    assert_eq!(again["chunks_sent"], 0, "the relay holds it all: {again}");

    // The old key is refused, with one line, and the relay stays up.
    let refused = lost.ferry(&["status"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = stderr(&refused);
    assert!(err.contains("refused the handshake"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    relay.wait_for_log("is not a paired client");
    let clients: serde_json::Value =
        serde_json::from_str(&ok(relay.admin(&["clients", "list", "--json"]))).unwrap();
    let laptop = &clients.as_array().unwrap()[0];
    assert_eq!(laptop["name"], "laptop");
    assert_eq!(
        laptop["fingerprint"],
        found.status_json()["endpoint_fingerprint"]
    );
}

#[test]
fn replacing_needs_a_paired_client_and_pairing_its_name_again_says_how() {
    let relay = Relay::start();
    let out = relay.admin(&["pair", "--name", "ghost", "--replace", "--json"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("none to replace"), "{}", stderr(&out));
    let endpoint = Endpoint::new();
    endpoint.pair_with(&relay, "laptop");
    let out = relay.admin(&["pair", "--name", "laptop", "--json"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--replace"), "{}", stderr(&out));
}

#[test]
fn the_old_machines_open_session_is_closed_when_its_client_moves() {
    let relay = Relay::start();
    let lost = Endpoint::new();
    lost.pair_with(&relay, "laptop");
    let (mut watch, _lines) = lost.watching();
    let (code, _) = replacing_code(&relay, "laptop");
    ok(Endpoint::new().try_pair(&relay, &code));
    let status = wait_for("the old machine's session to end", DEADLINE, || {
        watch.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(1));
    relay.wait_for_log("1 session(s) of it closed");
}
