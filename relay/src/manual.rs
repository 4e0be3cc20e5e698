//! What `man ferry-relay` says beyond its options, and `relay.toml(5)`.

use ferry_net::cli_docs::Extras;

/// The extra sections of ferry-relay(1) and its configuration's page.
pub const EXTRAS: Extras = Extras {
    sections: &[
        (
            "EXAMPLES",
            &[
                ("ferry-relay --data /var/lib/ferry-relay init --public backup.example.com:7330", "Make a relay: its key, relay.toml, the catalog; prints its fingerprint and the web page's admin token (shown once)."),
                ("systemctl enable --now ferry-relay", "Serve it (the package's unit runs ferry-relay serve as the ferry-relay user): sessions on :7330, pairing from the LAN on :7331."),
                ("ferry-relay pair --name anna-laptop", "A one-time pairing code, and the exact ferry pair line to run on the endpoint for each of this host's LAN addresses; waits until it is used."),
                ("ferry-relay pair --name anna-laptop --replace", "Hand the client anna-laptop to a new machine (a lost or stolen laptop): once the code is used, the old key is refused."),
                ("ferry-relay clients list", "Every client: fingerprint, host, mode, limit, rate, storage against its quota, when last seen."),
                ("ferry-relay snapshots list --client anna-laptop", "Its snapshots and what keeps each; snapshots protect ID keeps one from retention."),
                ("ferry-relay retention --dry-run", "What the retention rules would forget, and why each of the others is kept."),
                ("ferry-relay verify", "Read and check every stored blob and each snapshot's closure (also scheduled by [verify])."),
                ("ferry-relay web-token --read-only", "A new read-only token for the web page (the old one stops working)."),
                ("ferry-relay alerts test", "Send a test alert through every configured channel and say which worked."),
            ],
        ),
        (
            "EXIT STATUS",
            &[
                ("0", "Success."),
                ("1", "Failure, said in one line on standard error (and logged when serving)."),
                ("2", "A command line that does not parse."),
                ("3", "verify found damage (each damaged blob is listed; the next backup holding the data heals it)."),
                ("141", "Standard output was closed early (ferry-relay clients list | head -1)."),
            ],
        ),
        (
            "FILES",
            &[
                ("/var/lib/ferry-relay", "The packaged relay's data directory, found without --data when it exists."),
                ("DATA/relay.toml", "The configuration: see relay.toml(5)."),
                ("DATA/keys/relay.key", "The relay's static key (mode 0600): its identity, which endpoints pin."),
                ("DATA/catalog.sqlite", "The catalog (unless [catalog] names a shared one)."),
                ("DATA/store/packs/", "The pack files (unless [storage] names an object store)."),
                ("DATA/web-tokens.json", "The hashes of the web page's tokens (never the tokens)."),
                ("DATA/run/listen.json", "Where the serving relay listens (for a relay started on port 0)."),
                ("/usr/share/doc/ferry-relay/relay.example.toml", "An annotated example configuration."),
            ],
        ),
        (
            "ENVIRONMENT",
            &[
                ("FERRY_RELAY_DATA", "The data directory, when --data is not given."),
                ("RUST_LOG", "What the log shows (info by default), e.g. ferry_relay=debug."),
                ("NOTIFY_SOCKET, WATCHDOG_USEC", "Set by systemd for Type=notify: serve says when it is ready and beats the watchdog while its catalog answers."),
            ],
        ),
    ],
    dynamic_completions: false,
    config: Some((
        "relay.toml",
        "configuration of the ferry relay",
        include_str!("../../deploy/relay.example.toml"),
    )),
};
