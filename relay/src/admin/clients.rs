//! `ferry-relay clients`: list, show, remove paired clients, and set what
//! each may do (its internet policy, its bandwidth limit).

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use ferry_net::table::{Align, Table};
use ferry_protocol::schedule::Schedule;
use ferry_protocol::units::format_rate;

use super::parse_schedule;
use crate::catalog::ClientRecord;
use crate::clock::now_ms;
use crate::config::Quotas;
use crate::data_dir::DataDir;
use crate::rates::RateReport;

/// `ferry-relay clients …`.
#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
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
    /// Set a client's storage quota (after dedup and compression): a
    /// backup that would pass it is refused.
    Quota {
        /// The client's name.
        name: String,
        /// A size (`8MiB`, `100GiB`) or `unlimited`.
        #[arg(value_parser = parse_quota_arg, required_unless_present = "reset")]
        quota: Option<QuotaArg>,
        /// Go back to relay.toml's `[quota] per-client`.
        #[arg(long, conflicts_with = "quota")]
        reset: bool,
    },
    /// Set the relay's retention rules for a client, or one of its sets:
    /// they decide what is kept (the endpoint's hints can only keep more).
    Retention {
        /// The client's name.
        name: String,
        /// Only this backup set (default: the client's default for all).
        #[arg(long)]
        set: Option<String>,
        /// The rules to set.
        #[command(flatten)]
        rules: super::retention::RulesArgs,
        /// Remove the rules here (the client's, or relay.toml's, apply).
        #[arg(long)]
        reset: bool,
    },
}

/// A size cap, or none.
#[derive(Debug, Clone, Copy)]
pub struct MaxFile(pub Option<u64>);

/// Parses `--internet-max-file`: a size, or `unlimited`.
///
/// # Errors
/// A size that does not parse.
pub fn parse_max_file(text: &str) -> Result<MaxFile, String> {
    if text == "unlimited" || text == "0" {
        return Ok(MaxFile(None));
    }
    ferry_protocol::units::parse_size(text).map(|n| MaxFile(Some(n)))
}

/// A quota on the command line: bytes, or `None` for unlimited.
#[derive(Debug, Clone, Copy)]
pub struct QuotaArg(pub Option<u64>);

/// Parses a quota argument: a size, or `unlimited`.
///
/// # Errors
/// A size that does not parse.
pub fn parse_quota_arg(text: &str) -> Result<QuotaArg, String> {
    crate::config::parse_quota(text).map(QuotaArg)
}

/// The serving relay's published rates, if it is running (fresh within 5 s).
fn live_rates(data: &DataDir) -> Option<RateReport> {
    let text = std::fs::read_to_string(data.rates_file()).ok()?;
    let report: RateReport = serde_json::from_str(&text).ok()?;
    (now_ms() - report.at_ms < 5_000).then_some(report)
}

/// A client as JSON, with its limit in force and current rate when the
/// relay runs, and its storage (`stored_bytes`, `quota`).
fn client_json(c: &ClientRecord, live: Option<&RateReport>, storage: Storage) -> serde_json::Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    let flow = live.and_then(|r| r.clients.get(&c.id.to_string()));
    v["limit_in_force"] = flow.map_or(serde_json::Value::Null, |f| serde_json::json!(f.limit));
    v["rate"] = flow.map_or(serde_json::Value::Null, |f| serde_json::json!(f.rate));
    v["stored_bytes"] = serde_json::json!(storage.stored);
    v["quota"] = serde_json::json!(storage.quota);
    v
}

/// What a client stores and may store.
#[derive(Debug, Clone, Copy)]
struct Storage {
    stored: u64,
    quota: Option<u64>,
}

impl Storage {
    fn of(catalog: &crate::catalog::Catalog, quotas: &Quotas, c: &ClientRecord) -> Result<Self> {
        Ok(Storage {
            stored: catalog.client_stored_bytes(c.id)?,
            quota: quotas.of(c.own_quota),
        })
    }

    /// `3.2 MiB of 8.0 MiB (40 %)`, or `3.2 MiB` without a quota.
    fn text(self) -> String {
        ferry_protocol::units::format_usage(self.stored, self.quota)
    }
}

/// Runs `ferry-relay clients COMMAND`.
///
/// # Errors
/// An unknown client, catalog errors.
pub fn run(data: &DataDir, command: ClientsCommand) -> Result<()> {
    let mut catalog = data.catalog()?;
    let quotas = data.config()?.quota.resolve()?;
    match command {
        ClientsCommand::List { json } => {
            let clients = catalog.list_clients()?;
            let live = live_rates(data);
            if json {
                let rows = clients
                    .iter()
                    .map(|c| {
                        Ok(client_json(
                            c,
                            live.as_ref(),
                            Storage::of(&catalog, &quotas, c)?,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?;
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if clients.is_empty() {
                println!("no clients; pair one with `ferry-relay pair --name NAME`");
            } else {
                let mut table = Table::new(&[
                    ("NAME", Align::Left),
                    ("FINGERPRINT", Align::Left),
                    ("HOST", Align::Left),
                    ("MODE", Align::Left),
                    ("LIMIT", Align::Left),
                    ("RATE", Align::Left),
                    ("STORED", Align::Left),
                    ("LAST SEEN", Align::Left),
                ]);
                for c in clients {
                    let flow = live.as_ref().and_then(|r| r.clients.get(&c.id.to_string()));
                    let storage = Storage::of(&catalog, &quotas, &c)?;
                    table.row(vec![
                        c.name,
                        c.fingerprint.to_string(),
                        c.hostname,
                        c.mode.to_string(),
                        c.limit.unwrap_or_else(|| "(config)".into()),
                        flow.map_or("-".to_string(), |f| format_rate(Some(f.rate))),
                        storage.text(),
                        c.last_seen_at.unwrap_or_else(|| "never".into()),
                    ]);
                }
                print!("{}", table.render());
            }
        }
        ClientsCommand::Show { name, json } => {
            let Some(c) = catalog.client_by_name(&name)? else {
                bail!("no client named {name:?}");
            };
            let live = live_rates(data);
            let storage = Storage::of(&catalog, &quotas, &c)?;
            let replaced = catalog.replaced_keys(c.id)?;
            if json {
                let mut v = client_json(&c, live.as_ref(), storage);
                v["replaced_keys"] = replaced
                    .iter()
                    .map(|(fingerprint, host, at)| {
                        serde_json::json!({
                            "fingerprint": fingerprint,
                            "hostname": host,
                            "replaced_at": ferry_protocol::units::format_rfc3339(*at),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (fingerprint, host, at) in &replaced {
                    println!(
                        "replaced key: {fingerprint} (host {host:?}), refused since {}",
                        ferry_protocol::units::format_rfc3339(*at)
                    );
                }
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
                println!("stored:       {}", storage.text());
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
                    .map_or("unlimited".to_string(), ferry_protocol::units::format_size)
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
        ClientsCommand::Quota { name, quota, reset } => {
            let setting = if reset { None } else { quota.map(|q| q.0) };
            if !catalog.set_quota(&name, setting)? {
                bail!("no client named {name:?}");
            }
            let shown = match setting {
                None => "relay.toml's [quota] per-client".to_string(),
                Some(None) => "unlimited".to_string(),
                Some(Some(n)) => ferry_protocol::units::format_size(n),
            };
            println!("quota of {name:?} set to {shown} (from its next backup)");
        }
        ClientsCommand::Retention {
            name,
            set,
            rules,
            reset,
        } => {
            drop(catalog);
            super::retention::set_rules(data, &name, set.as_deref(), &rules, reset)?;
        }
    }
    Ok(())
}
