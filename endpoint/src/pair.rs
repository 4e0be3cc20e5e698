//! The endpoint's side of pairing (see `ferry_protocol::pairing`).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ferry_net::io::{ChannelError, FramedIo};
use ferry_protocol::frame::encode_frame;
use ferry_protocol::keys::{PublicKey, StaticKeypair};
use ferry_protocol::pairing::{
    EndpointStart, PairAccept, PairFrame, PairRequest, PairingCode, DEFAULT_PAIR_PORT,
};
use ferry_protocol::version::{ConnectionKind, Preamble};
use tokio::net::TcpStream;

/// How long pairing may take once connected.
pub const PAIRING_TIMEOUT: Duration = Duration::from_secs(20);

/// The relay's pairing address from what was typed: `HOST:PORT` as it is,
/// a host alone (a name, an IPv4 or IPv6 address, bracketed or not) with
/// the default pairing port.
pub fn pairing_address(typed: &str) -> String {
    let typed = typed.trim();
    if typed.parse::<std::net::SocketAddr>().is_ok() {
        return typed.to_string();
    }
    let bare = typed.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return std::net::SocketAddr::new(ip, DEFAULT_PAIR_PORT).to_string();
    }
    match typed.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => typed.to_string(),
        _ => format!("{typed}:{DEFAULT_PAIR_PORT}"),
    }
}

/// Pairs with the relay at `address` using `code`, as a sealed client
/// unless `sealed` is false; returns the relay's key and what it handed us
/// (for a machine taking over a client, the client's own mode).
///
/// # Errors
/// One clear reason: unreachable, refused by the relay (wrong, expired or
/// burned code, not on the LAN), or a protocol failure.
pub async fn pair(
    address: &str,
    code: &PairingCode,
    keys: &StaticKeypair,
    hostname: &str,
    sealed: bool,
) -> Result<(PublicKey, PairAccept)> {
    let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(address))
        .await
        .map_err(|_| anyhow!("cannot reach the relay's pairing address {address}: no answer"))?
        .with_context(|| format!("cannot reach the relay's pairing address {address}"))?;
    let _ = stream.set_nodelay(true);
    tokio::time::timeout(
        PAIRING_TIMEOUT,
        exchange(FramedIo::new(stream), code, keys, hostname, sealed),
    )
    .await
    .map_err(|_| anyhow!("the relay at {address} did not finish pairing in time"))?
}

async fn exchange(
    mut io: FramedIo<TcpStream>,
    code: &PairingCode,
    keys: &StaticKeypair,
    hostname: &str,
    sealed: bool,
) -> Result<(PublicKey, PairAccept)> {
    // Preamble and Start travel together: one round trip fewer, and the
    // relay can refuse with a message having read all we sent.
    let (start, frame) = EndpointStart::begin(code, keys)?;
    let mut opening = Preamble::current(ConnectionKind::Pairing).encode().to_vec();
    encode_frame(&frame.encode()?, &mut opening)?;
    io.write_raw(&opening).await?;
    let opening = read(io.read_preamble().await)?;
    if Preamble::decode(&opening, ConnectionKind::Session).is_ok() {
        bail!(
            "that address is the relay's session port, not its pairing port: use the line `ferry-relay pair` printed (the pairing port is {DEFAULT_PAIR_PORT} unless the relay was set up otherwise)"
        );
    }
    let preamble = Preamble::decode(&opening, ConnectionKind::Pairing)?;
    preamble.check_version("relay", "endpoint")?;
    let (spake, noise) = match next(&mut io).await? {
        PairFrame::Reply { spake, noise } => (spake, noise),
        PairFrame::Refused { reason } => bail!("the relay refused pairing: {reason}"),
        _ => bail!("unexpected pairing message from the relay"),
    };
    let request = PairRequest {
        hostname: hostname.to_string(),
        sealed,
    };
    let (finish, proof) = start.read_reply(&spake, &noise, &request)?;
    io.write_frame(&proof.encode()?).await?;
    match next(&mut io).await? {
        PairFrame::Noise(accept) => finish
            .read_accept(&accept)
            .map_err(|e| anyhow!("pairing failed: {e}")),
        PairFrame::Refused { reason } => bail!("the relay refused pairing: {reason}"),
        _ => bail!("unexpected pairing message from the relay"),
    }
}

fn read<T>(result: Result<T, ChannelError>) -> Result<T> {
    result.map_err(|e| match e {
        ChannelError::Closed => anyhow!("the relay closed the pairing connection"),
        other => anyhow!(other),
    })
}

async fn next(io: &mut FramedIo<TcpStream>) -> Result<PairFrame> {
    Ok(PairFrame::decode(&read(io.read_frame().await)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_alone_gets_the_default_pairing_port() {
        for (typed, address) in [
            ("192.168.1.10", "192.168.1.10:7331"),
            ("192.168.1.10:9000", "192.168.1.10:9000"),
            ("relay.lan", "relay.lan:7331"),
            (" relay.lan:7400 ", "relay.lan:7400"),
            ("fe80::1", "[fe80::1]:7331"),
            ("[fe80::1]", "[fe80::1]:7331"),
            ("[fe80::1]:7400", "[fe80::1]:7400"),
        ] {
            assert_eq!(pairing_address(typed), address, "{typed}");
        }
    }
}
