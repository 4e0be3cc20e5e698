//! `ferry`: the endpoint's command line.
//!
//! Exit codes: 0 success, 1 failure (one line on stderr), 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{CommandFactory, Parser, Subcommand};
use ferry_endpoint::backup;
use ferry_endpoint::jobs;
use ferry_endpoint::overwrite::Overwrite;
use ferry_endpoint::pair::{pair, pairing_address};
use ferry_endpoint::progress::{Bar, Direction, Live};
use ferry_endpoint::restore::{self, Selector};
use ferry_endpoint::snapshot::set_of;
use ferry_endpoint::state::{RelayRecord, StateDir};
use ferry_protocol::pairing::PairingCode;
use ferry_protocol::units::format_size;

/// ferry: back up to your relay from anywhere.
#[derive(Debug, Parser)]
#[command(name = "ferry", version)]
struct Cli {
    /// The endpoint's state directory (default: ~/.config/ferry).
    #[arg(long, global = true, env = "FERRY_STATE")]
    state: Option<PathBuf>,
    /// More detail in logs and errors.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pair with a relay over the LAN, using the code `ferry-relay pair` printed.
    Pair {
        /// The relay's pairing address, HOST:PORT or HOST alone (port 7331).
        #[arg(long)]
        relay: String,
        /// The one-time code, e.g. 4-7291-3385 (the dashes may be left out).
        #[arg(long, value_parser = parse_code)]
        code: PairingCode,
        /// The name this endpoint reports to the relay (default: the host name).
        #[arg(long)]
        name: Option<String>,
        /// Keep this client's data readable by the relay (open mode, which
        /// lets the relay compute restore deltas) instead of sealed.
        #[arg(long)]
        open: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The client's vault key: a passphrase on the relay, paper, recovery.
    Key {
        #[command(subcommand)]
        command: ferry_endpoint::key::KeyCommand,
    },
    /// Back up paths (recorded under their absolute paths) as a new snapshot.
    Backup {
        /// The backup set.
        #[arg(long, default_value = "default", add = ferry_endpoint::sets::set_name_completer())]
        set: String,
        /// Print one JSON summary.
        #[arg(long)]
        json: bool,
        /// List what would be read (new or changed since the last backup,
        /// by the files cache) and what is left out and by which rule;
        /// send nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        overrides: jobs::Overrides,
    },
    /// What this endpoint keeps of its backup sets.
    Sets {
        #[command(subcommand)]
        command: ferry_endpoint::sets::SetsCommand,
    },
    /// List the snapshots on the relay.
    Snapshots {
        /// Only this backup set.
        #[arg(long, add = ferry_endpoint::sets::set_name_completer())]
        set: Option<String>,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    #[command(flatten)]
    Browse(ferry_endpoint::snapshot_commands::BrowseCommand),
    /// Restore a snapshot (or some paths of it) into a directory.
    Restore {
        /// The backup set (default: `default`, or any set with -b ID).
        #[arg(long, add = ferry_endpoint::sets::set_name_completer())]
        set: Option<String>,
        /// Snapshot id, or `last`.
        #[arg(short = 'b', long = "backup", default_value = "last")]
        backup: Selector,
        /// Restore what was under this absolute path...
        #[arg(long)]
        map_from: Option<PathBuf>,
        /// ...into this directory; without --map-from, absolute paths are recreated below it.
        #[arg(long)]
        map_to: PathBuf,
        /// Print one JSON summary.
        #[arg(long)]
        json: bool,
        /// Compare existing files by content even when size and modification
        /// time match (slower: reads every existing file).
        #[arg(long)]
        checksum: bool,
        /// As root into a directory other than `/`: also restore setuid and
        /// setgid bits, device nodes and `security.capability` (what a
        /// hostile relay could use to take over this machine).
        #[arg(long)]
        preserve_privileges: bool,
        /// What happens to a local file or symlink that differs from the
        /// snapshot's: if-newer (the default) keeps what changed after the
        /// snapshot's version, never keeps all, if-changed and always
        /// replace.
        #[arg(long, value_enum, default_value_t)]
        overwrite: Overwrite,
        /// List what would be written, replaced, kept and (with --delete)
        /// removed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// After a restore without errors, remove what the snapshot lacks
        /// below the directory restored into (--map-from's target, or each
        /// path given).
        #[arg(long)]
        delete: bool,
        /// Only these paths (absolute, as backed up).
        paths: Vec<PathBuf>,
    },
    #[command(flatten)]
    Docs(ferry_net::cli_docs::DocsCommand),
    /// Fetch a snapshot end to end and check every byte against its hash,
    /// writing nothing (exit 3: damage, or differences with --against).
    Verify {
        /// The backup set (default: `default`, or any set with -b ID).
        #[arg(long, add = ferry_endpoint::sets::set_name_completer())]
        set: Option<String>,
        /// Snapshot id, or `last`.
        #[arg(short = 'b', long = "backup", default_value = "last")]
        backup: Selector,
        /// Also compare each file with the local file at its path below
        /// this directory (`/`: where it was backed up from).
        #[arg(long)]
        against: Option<PathBuf>,
        /// Stop after this long; the next run resumes where it stopped.
        #[arg(long, value_parser = ferry_protocol::units::parse_duration)]
        max_duration: Option<std::time::Duration>,
        /// Print one JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Back up each set of endpoint.toml that has an `interval`, until SIGTERM.
    Daemon,
    /// Connect to the relay and report who answered, where, and how fast.
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Keep the session open and print the round trip every second.
        #[arg(long)]
        watch: bool,
    },
}

fn parse_code(text: &str) -> Result<PairingCode, String> {
    PairingCode::parse(text).map_err(|e| e.to_string())
}

/// Exit code when a snapshot was made but some files could not be read.
const PARTIAL: u8 = 3;

fn main() -> ExitCode {
    ferry_net::cli_docs::complete_from_env(Cli::command);
    ferry_net::pipe::exit_quietly_on_broken_pipe();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let level = match (&cli.command, cli.verbose) {
            (_, true) => "debug",
            (Command::Daemon, false) => "info",
            _ => "warn",
        };
        // fuser says at warn what is routine for a mount (an unmount that
        // `fusermount -u` already did).
        tracing_subscriber::EnvFilter::new(format!("{level},fuser=error"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // The commands run on a thread of their own with a deep stack (only
    // reserved, not used): a restore walks a snapshot's directories
    // recursively, up to the deepest path Linux allows (`MAX_DEPTH`).
    let commands = std::thread::Builder::new()
        .name("ferry".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("ferry: error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(cli)) {
                Ok(code) => code,
                Err(e) if ferry_net::pipe::is_closed_pipe(e.chain()) => {
                    ExitCode::from(ferry_net::pipe::BROKEN_PIPE_EXIT)
                }
                Err(e) => {
                    ferry_net::failure::report("ferry", &format!("{e:#}"));
                    ExitCode::FAILURE
                }
            }
        });
    match commands.map(std::thread::JoinHandle::join) {
        Ok(Ok(code)) => code,
        _ => {
            eprintln!("ferry: error: the command's thread failed");
            ExitCode::FAILURE
        }
    }
}

/// The stack of the thread that runs commands (their futures are polled
/// there by `block_on`; a reservation: pages are used only as deep as a
/// walk goes).
const STACK_BYTES: usize = 256 << 20;

async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Docs(docs) = &cli.command {
        docs.run(Cli::command(), &ferry_endpoint::manual::EXTRAS)?;
        return Ok(ExitCode::SUCCESS);
    }
    let state = match cli.state {
        Some(dir) => StateDir::new(dir),
        None => StateDir::default_location()?,
    };
    match cli.command {
        // Printed above, before a state or data directory is needed.
        Command::Docs(_) => {}
        Command::Pair {
            relay,
            code,
            name,
            open,
            json,
        } => run_pair(&state, &relay, &code, name, !open, json).await?,
        Command::Status { json, watch } => ferry_endpoint::status::run(&state, json, watch).await?,
        Command::Key { command } => ferry_endpoint::key::run(&state, command).await?,
        Command::Backup {
            set,
            json,
            dry_run,
            overrides,
        } => {
            let job = jobs::plan(&state, &set, overrides)?;
            if dry_run {
                let preview = backup::preview::preview(&state, &job)?;
                backup::preview::print(&preview, json)?;
                return Ok(ExitCode::SUCCESS);
            }
            return run_backup(&state, &job, json).await;
        }
        Command::Daemon => ferry_endpoint::daemon::run(&state).await?,
        Command::Sets { command } => ferry_endpoint::sets::run(&state, command)?,
        Command::Snapshots { set, json } => {
            ferry_endpoint::browse::print_snapshots(&state, set, json).await?
        }
        Command::Browse(command) => ferry_endpoint::snapshot_commands::run(&state, command).await?,
        Command::Restore {
            set,
            backup,
            map_from,
            map_to,
            json,
            checksum,
            preserve_privileges,
            overwrite,
            dry_run,
            delete,
            paths,
        } => {
            let set = set_of(set, backup);
            let request = restore::Request {
                set,
                snapshot: backup,
                map_from,
                map_to,
                paths,
                checksum,
                preserve_privileges,
                overwrite,
            };
            return run_restore(&state, &request, (dry_run, delete), json).await;
        }
        Command::Verify {
            set,
            backup,
            against,
            max_duration,
            json,
        } => {
            let set = set_of(set, backup);
            let request = ferry_endpoint::verify::Request {
                set,
                snapshot: backup,
                against,
                max_duration,
                progress: state.root().join("verify.json"),
            };
            return run_verify(&state, &request, json).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_backup(state: &StateDir, job: &backup::Job, json: bool) -> Result<ExitCode> {
    let control = std::sync::Arc::new(backup::Control::default());
    let bar = Bar::new(Direction::Up, json);
    if let (true, backup::Source::Paths(paths)) = (bar.is_shown(), &job.source) {
        // The ETA: this walk's sum replaces the files cache's guess.
        let control = std::sync::Arc::clone(&control);
        backup::estimate::in_background(paths.clone(), job.excludes.clone(), move |bytes| {
            control
                .live
                .bytes_expected
                .store(bytes, std::sync::atomic::Ordering::Relaxed);
        });
    }
    let summary = bar
        .follow(&control.live, jobs::run(state, job, &control))
        .await?;
    let set = &job.set;
    for error in &summary.errors {
        eprintln!("ferry: cannot read {error}");
    }
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "snapshot {} of set {set:?}: {} files ({} new, {} changed, {} unchanged), {} scanned, {} sent, {} received in {:.1} s",
            summary.totals.snapshot,
            summary.files,
            summary.totals.files_new,
            summary.totals.files_changed,
            summary.totals.files_unchanged,
            format_size(summary.totals.bytes_scanned),
            format_size(summary.totals.bytes_sent),
            format_size(summary.totals.bytes_received),
            summary.totals.duration_s
        );
    }
    Ok(
        if summary.files_unreadable > 0 || !summary.paths_missing.is_empty() {
            ExitCode::from(PARTIAL)
        } else {
            ExitCode::SUCCESS
        },
    )
}

async fn run_restore(
    state: &StateDir,
    request: &restore::Request,
    (dry_run, delete): (bool, bool),
    json: bool,
) -> Result<ExitCode> {
    use ferry_endpoint::restore_plan;
    let mut client = jobs::open_client(state).await?;
    let reader = ferry_endpoint::browse::Reader::new(state, &mut client).await?;
    let mut doomed = Vec::new();
    if dry_run || delete {
        restore_plan::check_paths(state, &mut client, &reader, request).await?;
        let plan = restore_plan::plan(state, &mut client, &reader, request, delete).await?;
        if dry_run {
            client.close().await;
            restore_plan::print_plan(&plan, json)?;
            return Ok(ExitCode::SUCCESS);
        }
        doomed = plan.remove;
    }
    let live = Live::default();
    let target_was_there = request.map_to.symlink_metadata().is_ok();
    let restored = Bar::new(Direction::Down, json)
        .follow(&live, reader.restore(state, &mut client, request, &live))
        .await;
    let mut summary = match restored {
        // Which snapshot does hold it: said instead.
        Err(e) if e.downcast_ref::<restore::HoldsNothing>().is_some() => {
            if !target_was_there {
                // Only the empty directory the restore made: not left behind.
                let _ = std::fs::remove_dir(&request.map_to);
            }
            restore_plan::check_paths(state, &mut client, &reader, request).await?;
            return Err(e);
        }
        other => other?,
    };
    if delete && summary.errors > 0 {
        eprintln!("ferry: --delete removed nothing: the restore had errors (above); run it again");
    } else if delete {
        let (removed, failed) = restore_plan::remove(&doomed);
        summary.entries_deleted = removed;
        summary.errors += failed;
        doomed.truncate(ferry_endpoint::overwrite::KEPT_LISTED);
        summary.deleted = doomed;
    }
    // Several paths asked for: one the snapshot lacks is still an error.
    let asked = request.paths.len() + usize::from(request.map_from.is_some());
    let lacking = if asked > 1 {
        restore_plan::check_paths(state, &mut client, &reader, request)
            .await
            .err()
    } else {
        None
    };
    client.close().await;
    for line in summary.lines() {
        eprintln!("ferry: cannot restore {line}");
    }
    if summary.kept.count > 0 {
        eprintln!("ferry: {}", request.overwrite.kept_line(summary.kept.count));
    }
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "restored snapshot {} into {}: {} new, {} changed, {} unchanged files, {} kept, {} deleted; {} sent, {} received in {:.1} s",
            summary.totals.snapshot,
            request.map_to.display(),
            summary.totals.files_new,
            summary.totals.files_changed,
            summary.totals.files_unchanged,
            summary.kept.count,
            summary.entries_deleted,
            format_size(summary.totals.bytes_sent),
            format_size(summary.totals.bytes_received),
            summary.totals.duration_s
        );
    }
    if let Some(e) = lacking {
        eprintln!("ferry: error: the other paths were restored, but {e:#}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(if summary.errors > 0 {
        ExitCode::from(PARTIAL)
    } else {
        ExitCode::SUCCESS
    })
}

async fn run_verify(
    state: &StateDir,
    request: &ferry_endpoint::verify::Request,
    json: bool,
) -> Result<ExitCode> {
    if state.relay()?.is_some_and(|r| r.sealed) {
        bail!(
            "`ferry verify` reads open-mode snapshots and this client is sealed: `ferry restore --map-to SCRATCH_DIR` fetches, opens and checks every object of a snapshot (a sealed verify is not built yet)"
        );
    }
    let mut client = jobs::open_client(state).await?;
    let summary = ferry_endpoint::verify::run(&mut client, request).await?;
    client.close().await;
    for message in &summary.messages {
        eprintln!("ferry: {message}");
    }
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "snapshot {}: {} files ({}) checked whole, {} damaged, {} differ{}; {} received in {:.1} s",
            summary.snapshot,
            summary.files_checked,
            format_size(summary.bytes_checked),
            summary.files_damaged,
            summary.files_differ,
            if summary.complete {
                ""
            } else {
                " (stopped at --max-duration: the next run resumes)"
            },
            format_size(summary.bytes_received),
            summary.duration_s
        );
    }
    Ok(if summary.files_damaged + summary.files_differ > 0 {
        ExitCode::from(PARTIAL)
    } else {
        ExitCode::SUCCESS
    })
}

async fn run_pair(
    state: &StateDir,
    relay: &str,
    code: &PairingCode,
    name: Option<String>,
    sealed: bool,
    json: bool,
) -> Result<()> {
    if let Some(existing) = state.relay()? {
        bail!(
            "this endpoint is already paired with relay {} as {:?}; use another --state directory, or delete {}/relay.toml to pair again",
            existing.relay_fingerprint,
            existing.client_name,
            state.root().display()
        );
    }
    let keys = state.load_or_create_keys()?;
    let hostname = name.unwrap_or_else(ferry_endpoint::labels::host);
    let relay = &pairing_address(relay);
    let (relay_key, accept) = pair(relay, code, &keys, &hostname, sealed).await?;
    let record = RelayRecord {
        relay_key: relay_key.to_hex(),
        relay_fingerprint: relay_key.fingerprint().to_string(),
        client_id: accept.client_id,
        client_name: accept.client_name.clone(),
        addresses: accept.addresses.clone(),
        sealed: accept.sealed,
    };
    state.save_relay(&record)?;
    if json {
        let out = serde_json::json!({
            "relay_fingerprint": record.relay_fingerprint,
            "endpoint_fingerprint": keys.public.fingerprint().to_string(),
            "client": record.client_name,
            "client_id": record.client_id,
            "addresses": record.addresses,
            "mode": if record.sealed { "sealed" } else { "open" },
        });
        println!("{out}");
    } else {
        println!("paired with relay at {relay} as {:?}", record.client_name);
        println!("relay fingerprint:    {}", record.relay_fingerprint);
        println!("endpoint fingerprint: {}", keys.public.fingerprint());
        println!("session addresses:    {}", record.addresses.join(", "));
        println!(
            "mode:                 {}",
            if record.sealed {
                "sealed (the relay cannot read this client's data)"
            } else {
                "open (the relay can read this client's data)"
            }
        );
    }
    Ok(())
}
