//! A session's handshake: preamble, the first message's MAC, `Noise_IK`
//! with the client's key and its timestamp checked.

use anyhow::{anyhow, bail, Result};
use ferry_net::io::FramedIo;
use ferry_net::io::Stream;
use ferry_protocol::session::{check_first_mac, FirstMac, Responder};
use ferry_protocol::timestamp::{Timestamp, MAX_AHEAD_SECS};
use ferry_protocol::transport::Transport;
use ferry_protocol::version::{ConnectionKind, Preamble};

use super::SessionContext;
use crate::admission::Ticket;
use crate::catalog::ClientRecord;

/// How a handshake that proved a paired key ended.
pub(super) enum Handshaken {
    /// A session may begin.
    Accepted(Transport, Box<ClientRecord>),
    /// The key is paired but its timestamp was refused: the endpoint is
    /// told why over the finished handshake (its clock, not its pairing, is
    /// wrong), and nothing else happens (a replayed message's sender cannot
    /// read it, and no state changes).
    Refused {
        /// The finished handshake's transport.
        transport: Transport,
        /// The client's name.
        client: String,
        /// What to tell the endpoint.
        reason: String,
    },
}

/// Two handshakes of one endpoint this close together may arrive out of
/// order (the daemon and a backup by hand): the later is refused without a
/// word, and the endpoint tries again at once with a new timestamp.
const RACING_HANDSHAKES: std::time::Duration = std::time::Duration::from_secs(5);

/// Why `refused` (a timestamp check's error for a paired key) is told to
/// the endpoint, or `None` when it is dropped without a word.
fn timestamp_refusal(
    refused: &ferry_protocol::ProtocolError,
    sent: Timestamp,
    newest: Option<Timestamp>,
) -> Option<String> {
    let secs = |t: Timestamp| std::time::Duration::new(t.secs, t.nanos);
    match refused {
        ferry_protocol::ProtocolError::ClockAhead { ahead_secs } => Some(format!(
            "this endpoint's clock is {} ahead of the relay's (at most {} is allowed): set its clock right (or the relay's, if the relay's is wrong) and try again",
            ferry_protocol::units::format_age(*ahead_secs),
            ferry_protocol::units::format_age(MAX_AHEAD_SECS),
        )),
        ferry_protocol::ProtocolError::Replay => {
            let newest = secs(newest?);
            let behind = newest.saturating_sub(secs(sent));
            (behind >= RACING_HANDSHAKES).then(|| {
                format!(
                    "this endpoint's clock is {} behind a handshake it made before (its clock was ahead, or went back); it is accepted again once its clock passes {}",
                    ferry_protocol::units::format_age(behind.as_secs()),
                    ferry_protocol::units::format_rfc3339(
                        i64::try_from(newest.as_millis()).unwrap_or(i64::MAX)
                    ),
                )
            })
        }
        _ => None,
    }
}

/// Runs the handshake; returns the transport and the authenticated client.
pub(super) async fn handshake<S: Stream>(
    ctx: &SessionContext,
    io: &mut FramedIo<S>,
    ticket: &Ticket,
) -> Result<Handshaken> {
    let opening = io.read_preamble().await?;
    let ours = Preamble::current(ConnectionKind::Session).encode();
    if Preamble::decode(&opening, ConnectionKind::Pairing).is_ok() {
        // Given this port to pair with: our preamble tells the endpoint
        // which port it reached, so it can name the mistake.
        io.write_raw(&ours).await?;
        bail!("a pairing connection came to the session port (the endpoint was given it to pair with)");
    }
    let preamble = Preamble::decode(&opening, ConnectionKind::Session)?;
    if let Err(mismatch) = preamble.check_version("endpoint", "relay") {
        io.write_raw(&ours).await?;
        return Err(mismatch.into());
    }
    let frame = io.read_frame().await?;
    // Before any key agreement: only holders of this relay's key can make
    // the MAC, and under load a first message without one is dropped.
    let (first, mac) = check_first_mac(&ctx.keys.public, &frame);
    // Only first messages that pass the MAC, or carry none, count against
    // the relay-wide handshake rate: junk cannot spend it.
    match mac {
        FirstMac::Valid => {
            ticket.handshake_within_rate();
        }
        FirstMac::Invalid => bail!(
            "the first handshake message's MAC was not made with this relay's key; dropped before any key agreement"
        ),
        FirstMac::Absent if ticket.handshake_within_rate() => {}
        FirstMac::Absent => bail!(
            "under load (past limits.handshakes-per-second): a first handshake message without a MAC (an endpoint older than 1.4) dropped before any key agreement"
        ),
    }
    let responder = Responder::read_first(&ctx.keys, first)
        .map_err(|e| anyhow!("first handshake message rejected: {e}"))?;
    let key = responder.peer;
    let client = ctx
        .repo
        .look_up(move |c| c.client_by_key(&key))
        .await?
        .ok_or_else(|| anyhow!("key {} is not a paired client", key.fingerprint()))?;
    let sent = responder.timestamp;
    let checked = {
        let mut replay = ctx.replay.lock().unwrap_or_else(|p| p.into_inner());
        replay
            .check_and_record(key, sent, wall_clock())
            .map_err(|e| (timestamp_refusal(&e, sent, replay.newest(&key)), e))
    };
    let told = match checked {
        Ok(()) => None,
        Err((Some(reason), _)) => Some(reason),
        Err((None, e)) => bail!("client {}: {e}", client.name),
    };
    let mut out = ours.to_vec();
    let mut answer = Vec::new();
    let transport = responder.accept(&mut answer)?;
    ferry_protocol::frame::encode_frame(&answer, &mut out)?;
    io.write_raw(&out).await?;
    Ok(match told {
        None => Handshaken::Accepted(transport, Box::new(client)),
        Some(reason) => Handshaken::Refused {
            transport,
            client: client.name,
            reason,
        },
    })
}

/// The relay's wall clock as a handshake timestamp.
fn wall_clock() -> Timestamp {
    Timestamp::from_unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}
