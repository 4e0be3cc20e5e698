//! `ferry-relay pair`: a one-time code for a new endpoint.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use ferry_protocol::units::format_rfc3339;
use rand_core::{OsRng, RngCore};

use crate::admin::pair_lines::{interface_addresses, pair_lines};
use crate::catalog::PairingState;
use crate::clock::now_ms;
use crate::data_dir::DataDir;

/// How `ferry-relay pair` was asked to run.
#[derive(Debug, Clone, Copy)]
pub struct PairOptions {
    /// How long the code stays valid.
    pub ttl: Duration,
    /// Print JSON and exit without waiting.
    pub json: bool,
    /// Exit after printing the code.
    pub no_wait: bool,
    /// Hand the paired client of that name to the endpoint that uses the
    /// code, revoking the key it had (a lost or replaced machine).
    pub replace: bool,
}

/// A pairing code just made, and how to use it.
#[derive(Debug)]
pub struct Issued {
    /// The pairing's id in the catalog.
    pub pairing_id: i64,
    /// The code (shown once).
    pub code: String,
    /// When it expires (ms since the epoch).
    pub expires: i64,
    /// The client it hands over, for `--replace`.
    pub replaced: Option<crate::catalog::ClientRecord>,
    /// Where the pairing listener answers.
    pub listener: SocketAddr,
    /// The exact `ferry pair` lines to run on the endpoint, one per LAN
    /// address of this host.
    pub commands: Vec<String>,
}

/// Makes a pairing code for `name`, valid for `ttl` (handing the client
/// of that name over when `replace`).
///
/// # Errors
/// An invalid name, a name taken (or unknown, for `replace`), catalog
/// errors.
pub fn issue(data: &DataDir, name: &str, ttl: Duration, replace: bool) -> Result<Issued> {
    if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c == '/') {
        bail!("invalid client name {name:?}: use 1 to 64 printable characters, no '/'");
    }
    let mut catalog = data.catalog()?;
    let now = now_ms();
    let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    let random = OsRng.next_u64();
    let created = if replace {
        catalog.create_replacing_pairing(name, now, expires, random)?
    } else {
        catalog.create_pairing(name, now, expires, random)?
    };
    let (pairing_id, code) = match created {
        Ok((id, code)) => (id, code.reveal()),
        Err(message) => bail!(message),
    };
    let replaced = match replace {
        true => catalog.client_by_name(name)?,
        false => None,
    };
    let config = data.config()?;
    let listener = pairing_listener(data, config.pair_listen);
    let commands = pair_lines(
        listener,
        &config.lan_networks,
        &interface_addresses(),
        &code,
    );
    Ok(Issued {
        pairing_id,
        code,
        expires,
        replaced,
        listener,
        commands,
    })
}

/// Runs `ferry-relay pair`: makes a code and, unless `no_wait`, waits for
/// the endpoint to use it.
///
/// # Errors
/// An invalid name, a code that expires or is burned, catalog errors.
pub fn run(data: &DataDir, name: &str, options: PairOptions) -> Result<ExitCode> {
    let PairOptions {
        ttl,
        json,
        no_wait,
        replace,
    } = options;
    let issued = issue(data, name, ttl, replace)?;
    let Issued {
        pairing_id,
        expires,
        replaced,
        listener,
        commands,
        ..
    } = &issued;
    let (pairing_id, expires, listener) = (*pairing_id, *expires, *listener);
    let code = &issued.code;
    let catalog = data.catalog()?;
    let relay = data.keys()?;
    if json {
        let mut out = serde_json::json!({
            "code": code,
            "expires_at": format_rfc3339(expires),
            "name": name,
            "relay_fingerprint": relay.public.fingerprint().to_string(),
            "endpoint_commands": commands,
        });
        if let Some(old) = &replaced {
            out["replaces"] = old.fingerprint.clone().into();
        }
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "pairing code for {name:?}: {} (expires at {})",
        code,
        format_rfc3339(expires)
    );
    if let Some(old) = &replaced {
        println!(
            "it replaces {name:?}'s key (fingerprint {}, host {:?}): once an endpoint uses the code, that key is refused and {name:?}'s sets, snapshots, quota and retention belong to the new endpoint",
            old.fingerprint, old.hostname
        );
    }
    println!("relay fingerprint: {}", relay.public.fingerprint());
    match commands.as_slice() {
        [] => println!(
            "on the endpoint run: ferry pair --relay THIS_HOSTS_LAN_ADDRESS:{} --code {}",
            listener.port(),
            code
        ),
        [one] => println!("on the endpoint run: {one}"),
        several => {
            println!("on the endpoint run one of (the address it reaches this host by):");
            for line in several {
                println!("  {line}");
            }
        }
    }
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
                let done = if replace { "moved" } else { "paired" };
                println!(
                    "{done} {:?}: endpoint fingerprint {}, relay fingerprint {}",
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

/// Where the pairing listener answers: as configured, or, when told to
/// take any port (0), where the running relay bound it (`run/listen.json`).
fn pairing_listener(data: &DataDir, configured: SocketAddr) -> SocketAddr {
    if configured.port() != 0 {
        return configured;
    }
    std::fs::read_to_string(data.listen_file())
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v["pairing"].as_str().and_then(|a| a.parse().ok()))
        .unwrap_or(configured)
}
