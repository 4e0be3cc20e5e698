//! `ferry-relay`: the relay server and its admin commands.
//!
//! Exit codes: 0 success, 1 failure (one line on stderr), 2 usage error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use ferry_protocol::schedule::Schedule;
use ferry_protocol::units::parse_duration;
use ferry_relay::admin::{
    self, clients::ClientsCommand, parse_schedule, sets::SetsCommand, snapshots::SnapshotsCommand,
};
use ferry_relay::config::{LimitsConfig, RelayConfig};
use ferry_relay::data_dir::DataDir;
use ferry_relay::data_home;
use ferry_relay::net::IpNet;
use ferry_relay::web_tokens::{self, Role};
use tokio_util::sync::CancellationToken;

/// The ferry relay: pairs endpoints over the LAN, serves their backups from anywhere.
#[derive(Debug, Parser)]
#[command(name = "ferry-relay", version)]
struct Cli {
    /// The relay's data directory (default: the package's
    /// /var/lib/ferry-relay, when it exists).
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
        #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], ferry_protocol::pairing::DEFAULT_PAIR_PORT)))]
        pair_listen: SocketAddr,
        /// A public HOST:PORT endpoints use from outside the LAN (repeatable).
        #[arg(long)]
        public: Vec<String>,
        /// A network counted as LAN, e.g. 192.168.1.0/24 (repeatable; default:
        /// loopback and private ranges).
        #[arg(long = "lan-network")]
        lan_networks: Vec<IpNet>,
        /// Present this key (another relay's `keys/relay.key`, mode 0600)
        /// instead of a new one: relays of one service share one identity,
        /// which endpoints pin.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// The catalog: `sqlite:///ABSOLUTE/PATH`, shared by the relays of
        /// one service on one host, or `postgres://USER:PASSWORD@HOST/DB`,
        /// shared by relays on several hosts (default: DATA/catalog.sqlite).
        #[arg(long, value_name = "URL")]
        catalog: Option<String>,
    },
    /// Run the relay until SIGINT or SIGTERM.
    Serve {
        /// Serve the status page, /api/status and /metrics here (overrides
        /// relay.toml's [web] listen; any address but loopback needs
        /// [web] token-file).
        #[arg(long, value_name = "ADDR")]
        web: Option<SocketAddr>,
    },
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
        /// Move the paired client NAME to the endpoint that uses the code (a
        /// lost, stolen or replaced machine): its old key is refused and its
        /// sets, snapshots, quota and retention go to the new endpoint.
        #[arg(long)]
        replace: bool,
    },
    /// Alert channels: `alerts test` sends a test alert through every
    /// channel of relay.toml's [alerts] (command, smtp, webhook) and says
    /// which worked (exit 1 when one did not).
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// A new token for the web page (shown once; it replaces the old one,
    /// which stops working within seconds): the admin's, or with
    /// `--read-only` one that sees and downloads but cannot act.
    WebToken {
        /// The read-only token instead of the admin's.
        #[arg(long)]
        read_only: bool,
    },
    /// The organisation's recovery key: `--new FILE` writes an identity
    /// (keep it offline) and prints the recipient for relay.toml's
    /// `[sealed] recovery-recipient`.
    RecoveryKey {
        /// Where to write the new identity (mode 0600; it must not exist).
        #[arg(long)]
        new: std::path::PathBuf,
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
    /// What the retention rules keep of every set and why; forget the rest
    /// (their data goes at the next garbage collection).
    Retention {
        /// Print what would be forgotten and why; forget nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this client's sets.
        #[arg(long)]
        client: Option<String>,
        /// Decide as it will be this long from now (`400d`), to see what
        /// the rules will do; only with `--dry-run`.
        #[arg(long, value_parser = ferry_protocol::keep::Period::parse, requires = "dry_run")]
        ahead: Option<ferry_protocol::keep::Period>,
        /// JSON array output.
        #[arg(long)]
        json: bool,
    },
    /// List, forget, protect or unprotect committed snapshots.
    Snapshots {
        #[command(subcommand)]
        command: SnapshotsCommand,
    },
    /// Remove a client's retired backup set.
    Sets {
        #[command(subcommand)]
        command: SetsCommand,
    },
    #[command(flatten)]
    Docs(ferry_net::cli_docs::DocsCommand),
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
    /// Move a stopped relay's pack files into an S3-compatible object store
    /// (each read back and compared), then point relay.toml at it.
    /// Endpoints notice nothing.
    Migrate(admin::migrate::MigrateArgs),
    /// Keep a copy of the catalog in the object store (`dump`), or rebuild
    /// a lost one from that copy and the packs' trailers (`rebuild`).
    #[command(subcommand)]
    Catalog(admin::catalog_copy::CatalogCommand),
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

fn main() -> ExitCode {
    ferry_net::pipe::exit_quietly_on_broken_pipe();
    let cli = Cli::parse();
    init_logging(&cli);
    match run(cli) {
        Ok(code) => code,
        Err(e) if ferry_net::pipe::is_closed_pipe(e.chain()) => {
            ExitCode::from(ferry_net::pipe::BROKEN_PIPE_EXIT)
        }
        Err(e) => {
            ferry_net::failure::report("ferry-relay", &format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) {
    let default = match (&cli.command, cli.verbose) {
        (_, true) => "debug",
        (Command::Serve { .. }, false) => "info",
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
    if let Command::Docs(docs) = &cli.command {
        docs.run(Cli::command(), &ferry_relay::manual::EXTRAS)?;
        return Ok(ExitCode::SUCCESS);
    }
    let root = data_home::data_root(cli.data)?;
    // As typed, for the line to type instead (not UTF-8: shown as near as can be).
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    data_home::check_owner(&root, &args)?;
    let data = DataDir::new(root);
    match cli.command {
        // Printed above, before a state or data directory is needed.
        Command::Docs(_) => {}
        Command::Init {
            listen,
            pair_listen,
            public,
            lan_networks,
            identity,
            catalog,
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
                retention: Default::default(),
                quota: Default::default(),
                web: Default::default(),
                alerts: Default::default(),
                sealed: Default::default(),
                clients: Default::default(),
                storage: Default::default(),
                catalog: ferry_relay::config::CatalogConfig { url: catalog },
            };
            let keys = data.init(&config, identity.as_deref())?;
            println!("initialized relay in {}", data.root().display());
            println!("relay fingerprint: {}", keys.public.fingerprint());
            let token = web_tokens::renew(&data, Role::Admin)?;
            println!("web admin token: {token}");
            println!("(shown once: sign in to the web page with it; `ferry-relay web-token` makes a new one)");
        }
        Command::Serve { web } => serve(data, web)?,
        Command::Pair {
            name,
            ttl,
            json,
            no_wait,
            replace,
        } => {
            let options = admin::pair::PairOptions {
                ttl,
                json,
                no_wait,
                replace,
            };
            return admin::pair::run(&data, &name, options);
        }
        Command::Clients { command } => admin::clients::run(&data, command)?,
        Command::RecoveryKey { new } => admin::recovery_key(&new)?,
        Command::Alerts {
            command: AlertsCommand::Test,
        } => return alerts_test(&data),
        Command::WebToken { read_only } => {
            let role = if read_only {
                Role::ReadOnly
            } else {
                Role::Admin
            };
            let token = web_tokens::renew(&data, role)?;
            println!("web {} token: {token}", role.name());
            println!("(shown once; the old one no longer signs in. Sign in at the web page's /login with it, or send it as Authorization: Bearer.)");
        }
        Command::Limit { global, reset } => {
            admin::global_limit(&data, global.as_ref().filter(|_| !reset))?;
        }
        Command::Snapshots { command } => return admin::snapshots::run(&data, command),
        Command::Sets { command } => return admin::sets::run(&data, command),
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
            return admin::verify::run(&data, &options, repair_catalog, json);
        }
        Command::Retention {
            dry_run,
            client,
            ahead,
            json,
        } => return admin::retention::run(&data, client.as_deref(), dry_run, ahead, json),
        Command::Gc { grace, json } => admin::gc(&data, grace, json)?,
        Command::Migrate(args) => admin::migrate::run(&data, &args)?,
        Command::Catalog(command) => admin::catalog_copy::run(&data, &command)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Blocking threads beyond one per connection: catalog calls, the
/// collector, verify, key lookups of handshakes in progress.
const BLOCKING_SPARE: usize = 64;

/// `ferry-relay alerts …`.
#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// Send a test alert through every configured channel.
    Test,
}

/// `ferry-relay alerts test`: one line per channel, `ok` or `FAILED`.
fn alerts_test(data: &DataDir) -> Result<ExitCode> {
    let alerts = data.config()?.alerts.resolve()?.rooted(data.root());
    let relay = data.keys()?.public.fingerprint().to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let (deliveries, problems) =
        runtime.block_on(ferry_relay::alerts::channels::test(&alerts, &relay))?;
    for problem in &problems {
        println!("FAILED {problem}");
    }
    for delivery in &deliveries {
        match &delivery.outcome {
            Ok(done) => println!("ok     {}: {done}", delivery.channel),
            Err(e) => println!("FAILED {}: {e}", delivery.channel),
        }
    }
    let failed = problems.len() + deliveries.iter().filter(|d| d.outcome.is_err()).count();
    if failed > 0 {
        eprintln!("ferry-relay: {failed} alert channel(s) did not work (see above)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(data: DataDir, web: Option<SocketAddr>) -> Result<()> {
    // Each session's worker holds a blocking thread for the session's life:
    // the pool must outnumber the sessions, or the catalog work of every
    // handshake (the key lookup) and of the admin watcher would queue
    // behind them once it is full (tokio's default is 512, below the
    // default cap of 1,024 connections).
    let limits = data.config()?.limits.resolve()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(limits.max_connections + BLOCKING_SPARE)
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            ferry_net::io::termination_signal().await;
            signals.cancel();
        });
        ferry_relay::server::run(data, web, shutdown).await
    })
}
