//! `ferry-relay pair`: a one-time code for a new endpoint.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use ferry_protocol::units::format_rfc3339;
use rand_core::{OsRng, RngCore};

use crate::catalog::PairingState;
use crate::clock::now_ms;
use crate::data_dir::DataDir;

/// Runs `ferry-relay pair`: makes a code and, unless `no_wait`, waits for
/// the endpoint to use it.
///
/// # Errors
/// An invalid name, a code that expires or is burned, catalog errors.
pub fn run(
    data: &DataDir,
    name: &str,
    ttl: Duration,
    json: bool,
    no_wait: bool,
) -> Result<ExitCode> {
    if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c == '/') {
        bail!("invalid client name {name:?}: use 1 to 64 printable characters, no '/'");
    }
    let mut catalog = data.catalog()?;
    let relay = data.keys()?;
    let now = now_ms();
    let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    let (pairing_id, code) = match catalog.create_pairing(name, now, expires, OsRng.next_u64())? {
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
