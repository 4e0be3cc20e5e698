//! What `man ferry` says beyond its options, and `endpoint.toml(5)`.

use ferry_net::cli_docs::Extras;

/// The extra sections of ferry(1) and its configuration's page.
pub const EXTRAS: Extras = Extras {
    sections: &[
        (
            "EXAMPLES",
            &[
                ("ferry pair --relay 192.168.1.10 --code 4-7291-3385", "Pair with a relay over the LAN (the line ferry-relay pair printed); both sides print both fingerprints: compare them."),
                ("ferry key passphrase", "Keep the vault key on the relay wrapped with a passphrase, so a new machine can restore (ferry key recover)."),
                ("ferry backup ~/Documents ~/projects", "Back up; prints the snapshot id and what crossed the wire."),
                ("ferry snapshots --set home", "The set's snapshots, with host and paths."),
                ("ferry ls ~/Documents --long", "What the newest snapshot holds there."),
                ("ferry restore --map-from ~/Documents --map-to /tmp/docs", "What was under ~/Documents, into /tmp/docs; a local edit is never overwritten unless --overwrite says so."),
                ("ferry restore --dry-run --delete --map-from ~/Documents --map-to ~/Documents", "What a restore would write, replace, keep and remove."),
                ("ferry mount ~/snapshots", "Every snapshot as a read-only file system."),
                ("systemctl --user enable --now ferry", "Back up the sets of endpoint.toml on their intervals (ferry daemon); ferry status shows its progress."),
            ],
        ),
        (
            "EXIT STATUS",
            &[
                ("0", "Success."),
                ("1", "Failure, said in one line on standard error (with --json also as {\"error\": ...} on standard output)."),
                ("2", "A command line that does not parse."),
                ("3", "Done, but some files could not be read or written, or a path of the set does not exist; each is named."),
                ("141", "Standard output was closed early (ferry snapshots | head -1)."),
            ],
        ),
        (
            "FILES",
            &[
                ("~/.config/ferry/", "The endpoint's state: its key, the relay's, endpoint.toml, the files cache (mode 0700). $XDG_CONFIG_HOME/ferry when that is set."),
                ("~/.config/ferry/endpoint.toml", "The backup sets and their schedules: see endpoint.toml(5)."),
                ("/var/lib/ferry", "The state of the root endpoint the ferry-endpoint service runs."),
                ("/usr/lib/systemd/user/ferry.service", "The user unit for ferry daemon on a laptop."),
                ("/usr/share/doc/ferry/endpoint.example.toml", "An annotated example configuration."),
            ],
        ),
        (
            "ENVIRONMENT",
            &[
                ("FERRY_STATE", "The state directory, when --state is not given."),
                ("FERRY_PASSPHRASE_FILE", "A file holding the vault's passphrase, for ferry key and a sealed client's first restore."),
                ("XDG_CONFIG_HOME", "Where the default state directory is (ferry under it)."),
                ("RUST_LOG", "What the log shows, e.g. ferry=debug."),
                ("NOTIFY_SOCKET, WATCHDOG_USEC", "Set by systemd for Type=notify: ferry daemon says when it is ready and beats the watchdog."),
            ],
        ),
    ],
    dynamic_completions: true,
    config: Some((
        "endpoint.toml",
        "configuration of the ferry endpoint",
        include_str!("../../deploy/endpoint.example.toml"),
    )),
};
