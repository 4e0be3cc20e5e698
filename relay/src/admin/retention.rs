//! `ferry-relay retention` and `ferry-relay clients retention`: the relay's
//! retention rules, what they keep and why, and forgetting the rest.
//!
//! The relay decides (`ferry_protocol::keep`): its rules per set, else per
//! client, else `relay.toml` `[retention]`; no rule anywhere keeps
//! everything. No message from an endpoint lowers a rule or forgets a
//! snapshot: its hints can only keep more.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use ferry_net::table::{Align, Table};
use ferry_protocol::keep::{KeptBy, Period, Rules};
use ferry_protocol::units::format_rfc3339;
use serde::Serialize;

use crate::catalog::{Catalog, ClientId, SetDecision};
use crate::data_dir::DataDir;

/// Retention rules on the command line; unset ones stay unset.
#[derive(Debug, Clone, Default, Args)]
pub struct RulesArgs {
    /// Keep this many newest snapshots.
    #[arg(long)]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of this many hours.
    #[arg(long)]
    pub keep_hourly: Option<u32>,
    /// Likewise days.
    #[arg(long)]
    pub keep_daily: Option<u32>,
    /// Likewise weeks.
    #[arg(long)]
    pub keep_weekly: Option<u32>,
    /// Likewise months.
    #[arg(long)]
    pub keep_monthly: Option<u32>,
    /// Likewise years.
    #[arg(long)]
    pub keep_yearly: Option<u32>,
    /// Keep everything this recent (`14d`, `6 months`).
    #[arg(long, value_parser = Period::parse)]
    pub keep_within: Option<Period>,
    /// Keep at least this many, whatever the rules say.
    #[arg(long)]
    pub min_count: Option<u32>,
    /// Of what the rules keep, at most this many (the oldest go first).
    #[arg(long)]
    pub max_count: Option<u32>,
    /// Archive the newest snapshot of each such period (`1 month`)…
    #[arg(long, value_parser = Period::parse, requires = "archive_for")]
    pub archive_every: Option<Period>,
    /// …for this long (`1 year`).
    #[arg(long, value_parser = Period::parse, requires = "archive_every")]
    pub archive_for: Option<Period>,
    /// Forget nothing younger than this, whatever the rules say (`14d`;
    /// `0h` turns the lock off; unset: relay.toml's, else two weeks).
    #[arg(long, value_parser = Period::parse)]
    pub lock: Option<Period>,
}

impl RulesArgs {
    /// The rules these arguments name.
    pub fn rules(&self) -> Rules {
        Rules {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within,
            min_count: self.min_count,
            max_count: self.max_count,
            archive_every: self.archive_every,
            archive_for: self.archive_for,
            lock: self.lock,
        }
    }
}

/// Rules as one line: `keep-last 3, keep-daily 14` (or `none`).
pub fn describe(rules: Option<&Rules>) -> String {
    let Some(rules) = rules.filter(|r| **r != Rules::default()) else {
        return "none (everything is kept)".into();
    };
    if !rules.is_set() {
        let lock = rules.lock.map(|p| p.to_string()).unwrap_or_default();
        return format!("none (everything is kept), lock {lock}");
    }
    let value = serde_json::to_value(rules).unwrap_or_default();
    let parts: Vec<String> = value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            format!(
                "{k} {}",
                v.as_str().map_or_else(|| v.to_string(), String::from)
            )
        })
        .collect();
    parts.join(", ")
}

/// Runs `ferry-relay clients retention NAME [--set SET] RULES… | --reset`.
///
/// # Errors
/// An unknown client, no rule given, catalog errors.
pub fn set_rules(
    data: &DataDir,
    name: &str,
    set: Option<&str>,
    args: &RulesArgs,
    reset: bool,
) -> Result<()> {
    let mut catalog = data.catalog()?;
    let client = client_id(&catalog, name)?;
    let rules = args.rules();
    let scope = set.map_or_else(
        || format!("client {name}"),
        |s| format!("set {s:?} of client {name}"),
    );
    if reset {
        catalog.set_rules(client, set, None)?;
        println!("retention rules of {scope} removed; the client's or relay.toml's apply");
        return Ok(());
    }
    anyhow::ensure!(
        rules != Rules::default(),
        "give at least one rule (--keep-last N, --keep-daily N, …, --lock P) or --reset"
    );
    catalog.set_rules(client, set, Some(&rules))?;
    println!("retention rules of {scope}: {}", describe(Some(&rules)));
    println!("applied at the client's next backup, or now by `ferry-relay retention`");
    Ok(())
}

fn client_id(catalog: &Catalog, name: &str) -> Result<ClientId> {
    Ok(catalog
        .client_by_name(name)?
        .with_context(|| format!("no client named {name:?}"))?
        .id)
}

/// One snapshot's fate, as `ferry-relay retention` prints it.
#[derive(Debug, Serialize)]
pub struct Fate {
    /// The snapshot.
    pub snapshot: u64,
    /// Its client's name.
    pub client: String,
    /// Its set.
    pub set: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
    /// `keep` or `forget`.
    pub action: &'static str,
    /// Why it is kept (empty when forgotten).
    pub kept_by: Vec<&'static str>,
}

/// What retention decides for every set (of `client`), `ahead` from now.
///
/// # Errors
/// An unknown client, catalog errors.
pub fn decisions(
    data: &DataDir,
    catalog: &Catalog,
    client: Option<&str>,
    ahead: Option<Period>,
) -> Result<Vec<SetDecision>> {
    let client = client.map(|name| client_id(catalog, name)).transpose()?;
    let defaults = data.config()?.retention;
    let ahead_ms = ahead.map_or(0, |p| i64::try_from(p.as_millis()).unwrap_or(i64::MAX));
    Ok(catalog.retention_decisions(
        client,
        None,
        &defaults,
        crate::clock::retention_now_ms().saturating_add(ahead_ms),
    )?)
}

/// Names of reasons.
pub fn reasons(why: &[KeptBy]) -> Vec<&'static str> {
    why.iter().map(|k| k.name()).collect()
}

/// Runs `ferry-relay retention [--dry-run] [--client NAME] [--ahead P] [--json]`.
///
/// # Errors
/// An unknown client, catalog errors.
pub fn run(
    data: &DataDir,
    client: Option<&str>,
    dry_run: bool,
    ahead: Option<Period>,
    json: bool,
) -> Result<ExitCode> {
    let mut catalog = data.catalog()?;
    let decided = decisions(data, &catalog, client, ahead)?;
    let names = catalog.client_names()?;
    let finished = catalog.snapshot_times()?;
    let mut fates = Vec::new();
    for set in &decided {
        for (id, why) in set.decision.iter().rev() {
            fates.push(Fate {
                snapshot: *id,
                client: names.get(&set.client).cloned().unwrap_or_default(),
                set: set.set.clone(),
                finished_at: finished
                    .get(id)
                    .map_or_else(String::new, |ms| format_rfc3339(*ms)),
                action: if why.is_empty() { "forget" } else { "keep" },
                kept_by: reasons(why),
            });
        }
    }
    let forgotten = if dry_run {
        Vec::new()
    } else {
        catalog.apply_decisions(&decided)?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&fates)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("CLIENT", Align::Left),
        ("SET", Align::Left),
        ("FINISHED", Align::Left),
        ("ACTION", Align::Left),
        ("KEPT BY", Align::Left),
    ]);
    for fate in &fates {
        table.row(vec![
            fate.snapshot.to_string(),
            fate.client.clone(),
            fate.set.clone(),
            fate.finished_at.clone(),
            fate.action.to_string(),
            fate.kept_by.join(","),
        ]);
    }
    print!("{}", table.render());
    for set in &decided {
        println!(
            "{} / {}: {}",
            names.get(&set.client).map_or("?", String::as_str),
            set.set,
            describe(set.rules.as_ref())
        );
    }
    let to_forget = fates.iter().filter(|f| f.action == "forget").count();
    if dry_run {
        println!("dry run: {to_forget} snapshot(s) would be forgotten");
    } else {
        println!(
            "forgot {} snapshot(s); their data is freed by the next garbage collection",
            forgotten.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
