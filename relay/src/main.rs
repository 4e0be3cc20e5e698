//! `ferry-relay`: the relay server and its admin commands.
//!
//! Exit codes: 0 success, 1 failure (one line on stderr), 2 usage error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ferry_protocol::schedule::Schedule;
use ferry_protocol::units::{format_rate, format_rfc3339, parse_duration};
use ferry_relay::catalog::{now_ms, PairingState};
use ferry_relay::config::{LimitsConfig, RelayConfig};
use ferry_relay::data_dir::DataDir;
use ferry_relay::net::IpNet;
use ferry_relay::rates::RateReport;
use rand_core::{OsRng, RngCore};
use tokio_util::sync::CancellationToken;

/// The ferry relay: pairs endpoints over the LAN, serves their backups from anywhere.
#[derive(Debug, Parser)]
#[command(name = "ferry-relay", version)]
struct Cli {
    /// The relay's data directory.
    #[arg(long, global = true, env = "FERRY_RELAY_DATA")]
    data: Option<PathBuf>,
    /// More detail in logs and errors.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a data directory: key, relay.toml and catalog.
    Init {
        /// Session listener (expose this one to the internet).
        #[arg(long, default_value = "0.0.0.0:7330")]
        listen: SocketAddr,
        /// Pairing listener (LAN only).
        #[arg(long, default_value = "0.0.0.0:7331")]
        pair_listen: SocketAddr,
        /// A public HOST:PORT endpoints use from outside the LAN (repeatable).
        #[arg(long)]
        public: Vec<String>,
        /// A network counted as LAN, e.g. 192.168.1.0/24 (repeatable; default:
        /// loopback and private ranges).
        #[arg(long = "lan-network")]
        lan_networks: Vec<IpNet>,
    },
    /// Run the relay until SIGINT or SIGTERM.
    Serve,
    /// Create a one-time pairing code for a new endpoint.
    Pair {
        /// The client's name on this relay.
        #[arg(long)]
        name: String,
        /// How long the code stays valid.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        ttl: Duration,
        /// Print `{"code", "expires_at", "name"}` and exit without waiting.
        #[arg(long)]
        json: bool,
        /// Exit after printing the code instead of waiting for the endpoint.
        #[arg(long)]
        no_wait: bool,
    },
    /// List, show or remove paired clients.
    Clients {
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Set the global bandwidth limit on a running relay (within 2 s).
    Limit {
        /// A rate (`8MiB/s`; `0` or `unlimited` lifts the limit) or a schedule
        /// (`Mon-Fri 08:00-18:00=2MiB/s; default=8MiB/s`).
        #[arg(long, value_parser = parse_schedule, required_unless_present = "reset")]
        global: Option<Schedule>,
        /// Go back to the rates in relay.toml.
        #[arg(long, conflicts_with = "global")]
        reset: bool,
    },
    /// List or forget committed snapshots.
    Snapshots {
        #[command(subcommand)]
        command: SnapshotsCommand,
    },
    /// Collect garbage now: delete data no snapshot reaches and rewrite packs
    /// that are mostly dead (in the running relay, or here if none runs).
    Gc {
        /// Keep unreferenced data younger than this (default: relay.toml's
        /// `[gc] grace`), so interrupted uploads can still resume.
        #[arg(long, value_parser = parse_duration)]
        grace: Option<Duration>,
        /// JSON object output.
        #[arg(long)]
        json: bool,
    },
    /// Check the store: re-hash every blob, check each pack's structure,
    /// the catalog and each snapshot's closure. Exit 0 clean, 3 damage
    /// found (named; the next backup holding the data heals it), 1 could
    /// not run. Safe beside a serving relay.
    Verify {
        /// Stop reading blobs after this long; the next run resumes.
        #[arg(long, value_parser = parse_duration)]
        max_duration: Option<Duration>,
        /// Read only this share of what is due (`10%`).
        #[arg(long, value_parser = parse_percent)]
        subset: Option<f64>,
        /// Skip blobs verified more recently than this (`30d`).
        #[arg(long, value_parser = parse_duration)]
        since_verified: Option<Duration>,
        /// Read at most this fast (`50MiB/s`), to spare uploads.
        #[arg(long, value_parser = parse_rate)]
        rate: Option<u64>,
        /// Rebuild the catalog's indexes (`REINDEX`) first, then check it.
        #[arg(long)]
        repair_catalog: bool,
        /// JSON object output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotsCommand {
    /// List snapshots, oldest first.
    List {
        /// Only this client's.
        #[arg(long)]
        client: Option<String>,
        /// Only this backup set's.
        #[arg(long)]
        set: Option<String>,
        /// JSON array output.
        #[arg(long)]
        json: bool,
    },
    /// Forget snapshots; their data goes at the next garbage collection.
    Forget {
        /// Snapshot ids (as `snapshots list` shows them).
        #[arg(required = true)]
        ids: Vec<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum ClientsCommand {
    /// List active clients.
    List {
        /// JSON array output.
        #[arg(long)]
        json: bool,
    },
    /// Show one client.
    Show {
        /// The client's name.
        name: String,
        /// JSON object output.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a client's key: its sessions close, new handshakes are refused.
    Remove {
        /// The client's name.
        name: String,
    },
    /// Set what a client may do over the internet (sessions from outside the LAN networks).
    Policy {
        /// The client's name.
        name: String,
        /// Whether a set's first (full) backup may run over the internet.
        #[arg(long, value_parser = ["allow", "deny"])]
        internet_full_backups: Option<String>,
        /// The largest single file over the internet (`1GiB`), or `unlimited`.
        #[arg(long, value_parser = parse_max_file)]
        internet_max_file: Option<MaxFile>,
    },
    /// Set a client's own bandwidth limit on a running relay (within 2 s).
    Limit {
        /// The client's name.
        name: String,
        /// A rate (`1MiB/s`; `0` or `unlimited` lifts it) or a schedule.
        #[arg(value_parser = parse_schedule, required_unless_present = "reset")]
        rate: Option<Schedule>,
        /// Go back to the configured per-client rate.
        #[arg(long, conflicts_with = "rate")]
        reset: bool,
    },
}

/// A size cap, or none.
#[derive(Debug, Clone, Copy)]
struct MaxFile(Option<u64>);

fn parse_max_file(text: &str) -> Result<MaxFile, String> {
    if text == "unlimited" || text == "0" {
        return Ok(MaxFile(None));
    }
    ferry_protocol::units::parse_size(text).map(|n| MaxFile(Some(n)))
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.strip_suffix('%').unwrap_or(text);
    match number.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a percentage from 0% to 100%")),
    }
}

fn parse_rate(text: &str) -> Result<u64, String> {
    Ok(ferry_protocol::units::parse_rate(text)?.unwrap_or(0))
}

fn parse_schedule(text: &str) -> Result<Schedule, String> {
    Schedule::parse(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry-relay: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) {
    let default = match (&cli.command, cli.verbose) {
        (_, true) => "debug",
        (Command::Serve, false) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    let Some(root) = cli.data else {
        bail!("no data directory: pass --data DIR or set FERRY_RELAY_DATA");
    };
    let data = DataDir::new(root);
    match cli.command {
        Command::Init {
            listen,
            pair_listen,
            public,
            lan_networks,
        } => {
            let config = RelayConfig {
                listen,
                pair_listen,
                public,
                lan_networks: if lan_networks.is_empty() {
                    IpNet::default_lan()
                } else {
                    lan_networks
                },
                limits: LimitsConfig::default(),
                rates: Default::default(),
                gc: Default::default(),
                verify: Default::default(),
            };
            let keys = data.init(&config)?;
            println!("initialized relay in {}", data.root().display());
            println!("relay fingerprint: {}", keys.public.fingerprint());
        }
        Command::Serve => serve(data)?,
        Command::Pair {
            name,
            ttl,
            json,
            no_wait,
        } => return pair(&data, &name, ttl, json, no_wait),
        Command::Clients { command } => clients(&data, command)?,
        Command::Limit { global, reset } => {
            let text = if reset {
                None
            } else {
                global.map(|g| g.to_text())
            };
            data.catalog()?.set_global_limit(text.as_deref())?;
            match text {
                Some(text) => {
                    println!("global limit set to {text} (a running relay applies it within 2 s)")
                }
                None => println!("global limit reset to relay.toml's rates"),
            }
        }
        Command::Snapshots {
            command: SnapshotsCommand::List { client, set, json },
        } => snapshots(&data, client, set, json)?,
        Command::Snapshots {
            command: SnapshotsCommand::Forget { ids },
        } => {
            let forgotten = data.catalog()?.forget_snapshots(&ids)?;
            for id in &ids {
                if forgotten.contains(id) {
                    println!("forgot snapshot {id}");
                } else {
                    eprintln!("ferry-relay: no snapshot {id}");
                }
            }
            if forgotten.len() < ids.len() {
                return Ok(ExitCode::FAILURE);
            }
            println!("their data is freed by the next garbage collection (`ferry-relay gc`)");
        }
        Command::Verify {
            max_duration,
            subset,
            since_verified,
            rate,
            repair_catalog,
            json,
        } => {
            let options = ferry_relay::verify::Options {
                max_duration,
                subset_percent: subset,
                since_verified,
                rate,
            };
            return verify(&data, &options, repair_catalog, json);
        }
        Command::Gc { grace, json } => {
            let grace = match grace {
                Some(grace) => grace,
                None => data.config()?.gc.resolve()?.grace,
            };
            let report = ferry_relay::gc_service::run_now(&data, grace)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "kept {} snapshots; deleted {} unreferenced blobs ({} bytes), kept {} younger than the grace period; deleted {} packs, rewrote {}; freed {} bytes in {} ms",
                    report.snapshots,
                    report.blobs_deleted,
                    report.bytes_unreferenced,
                    report.blobs_in_grace,
                    report.packs_deleted,
                    report.packs_repacked,
                    report.bytes_freed,
                    report.duration_ms
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(
    data: &DataDir,
    options: &ferry_relay::verify::Options,
    repair_catalog: bool,
    json: bool,
) -> Result<ExitCode> {
    if repair_catalog {
        let outcome = ferry_relay::catalog::Catalog::repair_file(&data.catalog_path())?;
        if outcome == "ok" {
            eprintln!("catalog repaired: its indexes were rebuilt and it checks clean");
        } else {
            bail!("the catalog's indexes were rebuilt but it still does not check clean ({outcome}); restore catalog.sqlite from a copy, or ask for help");
        }
    }
    let report = ferry_relay::verify::run(
        &data.catalog_path(),
        &ferry_relay::store::PackReader::new(&data.store_dir()),
        options,
    )?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "catalog: {}; {} blobs ({} bytes) in {} pack(s) checked, {} left for the next run; {} snapshot(s) walked in {} ms",
            report.catalog,
            report.blobs_checked,
            report.bytes_checked,
            report.packs,
            report.blobs_left,
            report.snapshots,
            report.duration_ms
        );
        if report.unindexed_tail_bytes > 0 || report.packs_unnamed > 0 {
            println!(
                "not damage: {} bytes at pack ends and {} pack(s) no row names (an interrupted write or collection; removed at the next start)",
                report.unindexed_tail_bytes, report.packs_unnamed
            );
        }
        for d in &report.damaged {
            let at = match (d.pack, d.offset) {
                (Some(pack), Some(offset)) => format!("pack {pack:08} at {offset}"),
                _ => "no stored copy".into(),
            };
            println!(
                "DAMAGED {} {} of client {} ({at}): {}; snapshots {:?}; paths {}",
                d.kind,
                d.blob,
                d.client,
                d.reason,
                d.snapshots,
                d.paths.join(", ")
            );
        }
        if !report.snapshots_damaged.is_empty() {
            println!(
                "damaged snapshots: {:?} (the next backup that still holds the data heals them)",
                report.snapshots_damaged
            );
        }
        for h in &report.healed {
            println!(
                "healed {} {} of client {} (found {}, sent again {})",
                h.kind,
                h.blob,
                h.client,
                h.found_at,
                h.healed_at.as_deref().unwrap_or("?")
            );
        }
    }
    if report.catalog != "ok" {
        eprintln!("ferry-relay: the catalog is damaged ({}); stop the relay and run `ferry-relay verify --repair-catalog`", report.catalog);
    }
    Ok(if report.is_damaged() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

fn serve(data: DataDir) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            ferry_net::io::termination_signal().await;
            signals.cancel();
        });
        ferry_relay::server::run(data, shutdown).await
    })
}

fn pair(data: &DataDir, name: &str, ttl: Duration, json: bool, no_wait: bool) -> Result<ExitCode> {
    if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c == '/') {
        bail!("invalid client name {name:?}: use 1 to 64 printable characters, no '/'");
    }
    let mut catalog = data.catalog()?;
    let relay = data.keys()?;
    let now = now_ms();
    let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    let (pairing_id, code) = match catalog.create_pairing(name, now, expires, OsRng.next_u32())? {
        Ok(created) => created,
        Err(message) => bail!(message),
    };
    if json {
        let out = serde_json::json!({
            "code": code.reveal(),
            "expires_at": format_rfc3339(expires),
            "name": name,
            "relay_fingerprint": relay.public.fingerprint().to_string(),
        });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "pairing code for {name:?}: {} (expires at {})",
        code.reveal(),
        format_rfc3339(expires)
    );
    println!("relay fingerprint: {}", relay.public.fingerprint());
    println!(
        "on the endpoint run: ferry pair --relay RELAY_LAN_HOST:PAIR_PORT --code {}",
        code.reveal()
    );
    if no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "waiting for the endpoint (Ctrl-C stops waiting; the code stays valid until it expires)..."
    );
    loop {
        match catalog.pairing_state(pairing_id, now_ms())? {
            PairingState::Pending => std::thread::sleep(Duration::from_millis(200)),
            PairingState::Used(client) => {
                println!(
                    "paired {:?}: endpoint fingerprint {}, relay fingerprint {}",
                    client.name,
                    client.fingerprint,
                    relay.public.fingerprint()
                );
                return Ok(ExitCode::SUCCESS);
            }
            PairingState::Burned => bail!("the code was burned after 3 wrong attempts"),
            PairingState::Expired => bail!("the code expired before an endpoint used it"),
        }
    }
}

fn snapshots(
    data: &DataDir,
    client: Option<String>,
    set: Option<String>,
    json: bool,
) -> Result<()> {
    let catalog = data.catalog()?;
    let client_id = match &client {
        Some(name) => Some(
            catalog
                .client_by_name(name)?
                .with_context(|| format!("no client named {name:?}"))?
                .id,
        ),
        None => None,
    };
    let rows = catalog.list_snapshots(client_id, set.as_deref())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("no snapshots");
    } else {
        println!(
            "{:>6}  {:<16} {:<16} {:<21} {:>8} {:>14}",
            "ID", "CLIENT", "SET", "FINISHED", "FILES", "BYTES"
        );
        for r in rows {
            println!(
                "{:>6}  {:<16} {:<16} {:<21} {:>8} {:>14}",
                r.id, r.client, r.set, r.finished_at, r.files, r.bytes
            );
        }
    }
    Ok(())
}

/// The serving relay's published rates, if it is running (fresh within 5 s).
fn live_rates(data: &DataDir) -> Option<RateReport> {
    let text = std::fs::read_to_string(data.rates_file()).ok()?;
    let report: RateReport = serde_json::from_str(&text).ok()?;
    (now_ms() - report.at_ms < 5_000).then_some(report)
}

/// A client as JSON, with its limit in force and current rate when the relay runs.
fn client_json(
    c: &ferry_relay::catalog::ClientRecord,
    live: Option<&RateReport>,
) -> serde_json::Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    let flow = live.and_then(|r| r.clients.get(&c.id.to_string()));
    v["limit_in_force"] = flow.map_or(serde_json::Value::Null, |f| serde_json::json!(f.limit));
    v["rate"] = flow.map_or(serde_json::Value::Null, |f| serde_json::json!(f.rate));
    v
}

fn clients(data: &DataDir, command: ClientsCommand) -> Result<()> {
    let mut catalog = data.catalog()?;
    match command {
        ClientsCommand::List { json } => {
            let clients = catalog.list_clients()?;
            let live = live_rates(data);
            if json {
                let rows: Vec<serde_json::Value> = clients
                    .iter()
                    .map(|c| client_json(c, live.as_ref()))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if clients.is_empty() {
                println!("no clients; pair one with `ferry-relay pair --name NAME`");
            } else {
                println!(
                    "{:<20} {:<24} {:<16} {:<14} {:<12} LAST SEEN",
                    "NAME", "FINGERPRINT", "HOST", "LIMIT", "RATE"
                );
                for c in clients {
                    let flow = live.as_ref().and_then(|r| r.clients.get(&c.id.to_string()));
                    println!(
                        "{:<20} {:<24} {:<16} {:<14} {:<12} {}",
                        c.name,
                        c.fingerprint,
                        c.hostname,
                        c.limit.as_deref().unwrap_or("(config)"),
                        flow.map_or("-".to_string(), |f| format_rate(Some(f.rate))),
                        c.last_seen_at.as_deref().unwrap_or("never")
                    );
                }
            }
        }
        ClientsCommand::Show { name, json } => {
            let Some(c) = catalog.client_by_name(&name)? else {
                bail!("no client named {name:?}");
            };
            let live = live_rates(data);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&client_json(&c, live.as_ref()))?
                );
            } else {
                let flow = live.as_ref().and_then(|r| r.clients.get(&c.id.to_string()));
                println!("name:         {}", c.name);
                println!("id:           {}", c.id);
                println!("fingerprint:  {}", c.fingerprint);
                println!("host:         {}", c.hostname);
                println!("paired at:    {}", c.paired_at);
                println!(
                    "last seen:    {}",
                    c.last_seen_at.as_deref().unwrap_or("never")
                );
                println!("last address: {}", c.last_address.as_deref().unwrap_or("-"));
                println!(
                    "own limit:    {}",
                    c.limit
                        .as_deref()
                        .unwrap_or("none (relay.toml's per-client rate)")
                );
                if let Some(flow) = flow {
                    println!("limit now:    {}", format_rate(flow.limit));
                    println!("rate now:     {}", format_rate(Some(flow.rate)));
                }
            }
        }
        ClientsCommand::Policy {
            name,
            internet_full_backups,
            internet_max_file,
        } => {
            let full = internet_full_backups.map(|v| v == "allow");
            if !catalog.set_internet_policy(&name, full, internet_max_file.map(|m| m.0))? {
                bail!("no client named {name:?}");
            }
            let c = catalog
                .client_by_name(&name)?
                .with_context(|| format!("no client named {name:?}"))?;
            println!(
                "over the internet, {name:?} may {} first (full) backups; largest single file: {}",
                if c.internet_full_backups {
                    "run"
                } else {
                    "not run"
                },
                c.internet_max_file
                    .map_or("unlimited".to_string(), |m| format!("{m} bytes"))
            );
        }
        ClientsCommand::Limit { name, rate, reset } => {
            let text = if reset {
                None
            } else {
                rate.map(|r| r.to_text())
            };
            if !catalog.set_client_limit(&name, text.as_deref())? {
                bail!("no client named {name:?}");
            }
            match text {
                Some(text) => println!(
                    "limit of {name:?} set to {text} (a running relay applies it within 2 s)"
                ),
                None => println!("limit of {name:?} reset to relay.toml's per-client rate"),
            }
        }
        ClientsCommand::Remove { name } => {
            if !catalog.remove_client(&name, now_ms())? {
                bail!("no client named {name:?}");
            }
            println!("removed client {name:?}: its sessions are closed and its key is refused");
        }
    }
    Ok(())
}
