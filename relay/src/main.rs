//! `ferry-relay`: the relay server and its admin commands.
//!
//! Exit codes: 0 success, 1 failure (one line on stderr), 2 usage error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ferry_protocol::units::{format_rfc3339, parse_duration};
use ferry_relay::catalog::{now_ms, PairingState};
use ferry_relay::config::{LimitsConfig, RelayConfig};
use ferry_relay::data_dir::DataDir;
use ferry_relay::net::IpNet;
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
    /// List committed snapshots.
    Snapshots {
        #[command(subcommand)]
        command: SnapshotsCommand,
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
        Command::Snapshots {
            command: SnapshotsCommand::List { client, set, json },
        } => snapshots(&data, client, set, json)?,
    }
    Ok(ExitCode::SUCCESS)
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
            wait_for_signal().await;
            signals.cancel();
        });
        ferry_relay::server::run(data, shutdown).await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop the relay with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
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

fn clients(data: &DataDir, command: ClientsCommand) -> Result<()> {
    let mut catalog = data.catalog()?;
    match command {
        ClientsCommand::List { json } => {
            let clients = catalog.list_clients()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&clients)?);
            } else if clients.is_empty() {
                println!("no clients; pair one with `ferry-relay pair --name NAME`");
            } else {
                println!(
                    "{:<20} {:<24} {:<20} LAST SEEN",
                    "NAME", "FINGERPRINT", "HOST"
                );
                for c in clients {
                    println!(
                        "{:<20} {:<24} {:<20} {}",
                        c.name,
                        c.fingerprint,
                        c.hostname,
                        c.last_seen_at.as_deref().unwrap_or("never")
                    );
                }
            }
        }
        ClientsCommand::Show { name, json } => {
            let Some(c) = catalog.client_by_name(&name)? else {
                bail!("no client named {name:?}");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
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
