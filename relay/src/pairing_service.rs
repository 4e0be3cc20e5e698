//! One pairing connection on the relay (see `ferry_protocol::pairing`).
//!
//! Only sources in the LAN networks may pair. The nameplate picks the
//! pending code from the catalog; a wrong code counts against it and the
//! third failure burns it. Success creates the client and hands the endpoint
//! the relay's addresses, LAN first.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use ferry_net::io::FramedIo;
use ferry_protocol::pairing::{relay_reply, PairAccept, PairFrame};
use ferry_protocol::version::{ConnectionKind, Preamble};
use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::admission::Ticket;
use crate::catalog::{PairOutcome, PairingLookup, MAX_PAIRING_FAILURES};
use crate::clock::now_ms;
use crate::net::IpNet;
use crate::repo::Repo;
use ferry_protocol::keys::StaticKeypair;

/// What pairing needs of the relay, built once by `server::run`.
#[derive(Debug)]
pub struct PairingContext {
    /// The relay's static key.
    pub keys: StaticKeypair,
    /// Sources allowed to pair.
    pub lan_networks: Vec<IpNet>,
    /// How long a pairing may take.
    pub handshake_timeout: std::time::Duration,
    /// Where pairing codes and clients are kept.
    pub repo: Arc<Repo>,
    /// The bound session listener, given to endpoints.
    pub session_addr: SocketAddr,
    /// Public `HOST:PORT`s given to endpoints after the LAN one.
    pub public: Vec<String>,
    /// Open sessions: a client handed to a new machine loses the old
    /// machine's at once.
    pub registry: Arc<crate::registry::Registry>,
    /// Open-mode pairings are refused (`[clients] require-sealed`).
    pub require_sealed: bool,
}

impl PairingContext {
    fn is_lan(&self, ip: std::net::IpAddr) -> bool {
        self.lan_networks.iter().any(|net| net.contains(ip))
    }
}

/// How long a closing connection waits for the endpoint to close its side.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves one pairing connection from `peer`.
pub async fn serve(
    pairing: Arc<PairingContext>,
    stream: TcpStream,
    peer: SocketAddr,
    ticket: Ticket,
) {
    tokio::select! {
        () = ticket.evicted() => {
            info!("pairing from {peer} dropped: newer connections needed its place among those not yet authenticated");
        }
        () = serve_admitted(&pairing, stream, peer) => {}
    }
}

/// Serves one pairing connection whose ticket is held by the caller.
async fn serve_admitted(pairing: &Arc<PairingContext>, stream: TcpStream, peer: SocketAddr) {
    let mut io = FramedIo::new(stream);
    if !pairing.is_lan(peer.ip()) {
        warn!("refused pairing from {peer}: not in the configured LAN networks");
        let reason = format!(
            "pairing is accepted only from the relay's LAN networks, and {} is not in them",
            peer.ip()
        );
        // Read the endpoint's opening first, so that closing sends no reset.
        let opening = async {
            io.read_preamble().await?;
            io.read_frame().await
        };
        if tokio::time::timeout(pairing.handshake_timeout, opening)
            .await
            .is_ok()
        {
            let _ = refuse_early(&mut io, &reason).await;
        }
        io.close(LINGER).await;
        return;
    }
    let result =
        tokio::time::timeout(pairing.handshake_timeout, pair(pairing, &mut io, peer)).await;
    let outcome = match result {
        Err(_) => Err(anyhow!("timed out")),
        Ok(outcome) => outcome,
    };
    if let Err(e) = outcome {
        warn!("pairing from {peer} failed: {e:#}");
        let _ = refuse(&mut io, &format!("{e:#}")).await;
    }
    io.close(LINGER).await;
}

/// What an endpoint is told about any code that cannot be used.
pub const UNUSABLE_CODE: &str = "this pairing code cannot be used: it is wrong, expired, used or burned by wrong attempts; check it, or ask for a new one (`ferry-relay pair`)";

async fn refuse_early(io: &mut FramedIo<TcpStream>, reason: &str) -> Result<()> {
    io.write_raw(&Preamble::current(ConnectionKind::Pairing).encode())
        .await?;
    refuse(io, reason).await
}

async fn refuse(io: &mut FramedIo<TcpStream>, reason: &str) -> Result<()> {
    let frame = PairFrame::Refused {
        reason: reason.to_string(),
    }
    .encode()?;
    io.write_frame(&frame).await?;
    Ok(())
}

async fn read_pair_frame(io: &mut FramedIo<TcpStream>) -> Result<PairFrame> {
    Ok(PairFrame::decode(&io.read_frame().await?)?)
}

async fn pair(
    pairing: &Arc<PairingContext>,
    io: &mut FramedIo<TcpStream>,
    peer: SocketAddr,
) -> Result<()> {
    let preamble = Preamble::decode(&io.read_preamble().await?, ConnectionKind::Pairing)?;
    io.write_raw(&Preamble::current(ConnectionKind::Pairing).encode())
        .await?;
    preamble.check_version("endpoint", "relay")?;
    let PairFrame::Start {
        nameplate,
        spake,
        noise,
    } = read_pair_frame(io).await?
    else {
        bail!("unexpected pairing message");
    };
    // The operator's log says why; the peer gets one answer for every kind
    // of unusable code, so probing tells it nothing about other codes.
    let unusable = |why: String| {
        warn!("pairing from {peer}: {why}");
        anyhow!(UNUSABLE_CODE)
    };
    let pending = match pairing
        .repo
        .db(move |c| c.find_pairing(nameplate, now_ms()))
        .await?
    {
        PairingLookup::Pending(pending) => pending,
        PairingLookup::Expired => return Err(unusable(format!("code {nameplate}-… expired"))),
        PairingLookup::Burned => {
            return Err(unusable(format!(
                "code {nameplate}-… was burned after {MAX_PAIRING_FAILURES} failed attempts"
            )))
        }
        PairingLookup::Used => {
            return Err(unusable(format!("code {nameplate}-… was used already")))
        }
        PairingLookup::Unknown => {
            return Err(unusable(format!("no code has nameplate {nameplate}")))
        }
    };
    let (replied, reply) = relay_reply(&pending.code, &pairing.keys, &spake, &noise)?;
    io.write_frame(&reply.encode()?).await?;
    let PairFrame::Noise(proof) = read_pair_frame(io).await? else {
        bail!("unexpected pairing message");
    };
    let proven = match replied.read_proof(&proof) {
        Ok(proven) => proven,
        Err(_) => {
            let id = pending.id;
            let left = pairing
                .repo
                .db(move |c| c.record_pairing_failure(id))
                .await?;
            return Err(unusable(if left == 0 {
                format!("wrong pairing code for {nameplate}-…; it is now burned after {MAX_PAIRING_FAILURES} failed attempts")
            } else {
                format!("wrong pairing code for {nameplate}-… ({left} attempt(s) left)")
            }));
        }
    };
    // Shown in `clients list` and logs: no control characters from the peer.
    let hostname = ferry_protocol::units::printable(proven.request.hostname.as_bytes());
    let sealed = proven.request.sealed;
    if pairing.require_sealed && !sealed {
        return Err(unusable(
            "this relay keeps only sealed clients (relay.toml [clients] require-sealed); pair without --open".into(),
        ));
    }
    let (id, key) = (pending.id, proven.endpoint);
    let outcome = pairing
        .repo
        .db(move |c| c.complete_pairing(id, &key, &hostname, sealed, now_ms()))
        .await?;
    let (client, replaced) = paired_client(outcome, &pending.client_name)?;
    let accept = PairAccept {
        client_id: client.id.0,
        client_name: client.name.clone(),
        addresses: session_addresses(pairing, io),
        sealed: client.mode == "sealed",
    };
    io.write_frame(&proven.seal_accept(&accept)?.encode()?)
        .await?;
    match replaced {
        None => info!(
            "paired client {} (endpoint fingerprint {}, host {:?}) from {peer}",
            client.name, client.fingerprint, client.hostname
        ),
        Some(old) => {
            let closed = pairing
                .registry
                .revoke_other_keys(client.id, &client.public_key);
            warn!(
                "client {} moved to a new machine (endpoint fingerprint {}, host {:?}) from {peer}: its old key {old} is refused from now on ({closed} session(s) of it closed)",
                client.name, client.fingerprint, client.hostname
            );
        }
    }
    Ok(())
}

/// The client a completed pairing made or handed over, and the fingerprint
/// of the key it replaced, if it did.
fn paired_client(
    outcome: PairOutcome,
    name: &str,
) -> Result<(Box<crate::catalog::ClientRecord>, Option<String>)> {
    match outcome {
        PairOutcome::Paired(client) => Ok((client, None)),
        PairOutcome::Replaced(client, old) => Ok((client, Some(old))),
        PairOutcome::NoLongerValid => bail!("pairing code expired or already used"),
        PairOutcome::KeyAlreadyPaired(name) => {
            bail!("this endpoint's key is already paired as client {name:?}")
        }
        PairOutcome::NameTaken => bail!("the client name {name:?} was taken meanwhile"),
    }
}

/// The session addresses for a client: the address on which this LAN
/// connection reached us, with the session port, then the public ones.
fn session_addresses(pairing: &PairingContext, io: &FramedIo<TcpStream>) -> Vec<String> {
    let listen = pairing.session_addr;
    let lan_ip = if listen.ip().is_unspecified() {
        io.get_ref().local_addr().map_or(listen.ip(), |a| a.ip())
    } else {
        listen.ip()
    };
    let mut addresses = vec![SocketAddr::new(lan_ip, listen.port()).to_string()];
    addresses.extend(pairing.public.iter().cloned());
    addresses
}
