//! `ferry status`: what the daemon last did, and the relay as reached now.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferry_protocol::message::Message;
use ferry_protocol::units::format_size;

use crate::connect::{connect, Session};
use crate::daemon::DaemonState;
use crate::state::StateDir;

/// Prints what `ferry daemon` last wrote: per set, the last result, the next
/// run and the progress of a running backup. Shown even when the relay is
/// away; a daemon that no longer runs is said to, and its schedule and
/// progress are not shown as current.
fn print_daemon(daemon: &DaemonState, running: bool) {
    let shown = |l: &crate::daemon::LastRun| {
        let verdict = if l.ok { "ok" } else { "failed" };
        format!("{verdict} at {}: {}", l.finished_at, l.message)
    };
    if !running {
        println!(
            "daemon: not running (process {} is gone); what it last did:",
            daemon.pid
        );
    }
    for (name, set) in &daemon.sets {
        let last = set.last.as_ref().map_or("never run".to_string(), shown);
        let next = if running {
            set.next_run.as_str()
        } else {
            "none (no daemon)"
        };
        println!("set {name:?}: last {last}; next run {next}");
        if let Some(verify) = &set.verify {
            println!("set {name:?}: last check {}", shown(verify));
        }
        if let Some(p) = &set.running {
            let doing = if running { "running" } else { "cut off" };
            println!(
                "set {name:?}: {doing} since {}: {} files, {} read",
                p.started_at,
                p.files,
                format_size(p.bytes_scanned)
            );
        }
    }
}

/// Whether process `pid` is a `ferry daemon` still running (a pid reused by
/// another program is not).
fn daemon_runs(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.first().is_some_and(|a| a.ends_with(b"ferry")) && args.contains(&&b"daemon"[..])
}

/// Runs `ferry status`: the daemon's last runs, then the relay reached
/// now (round trip, damage); with `watch`, pings every second until the
/// session ends.
///
/// # Errors
/// No paired relay, or the relay cannot be reached.
pub async fn run(state: &StateDir, json: bool, watch: bool) -> Result<()> {
    let daemon = DaemonState::load(state);
    let daemon_running = daemon.as_ref().is_some_and(|d| daemon_runs(d.pid));
    if let (Some(daemon), false) = (&daemon, json) {
        print_daemon(daemon, daemon_running);
    }
    let record = state.paired_relay()?;
    let keys = state.keys()?;
    let timeouts = state.config()?.connect.resolve()?;
    let relay_key = record.relay_public_key()?;
    let mut session = connect(&keys, &relay_key, &record.addresses, timeouts).await?;
    let rtt = ping(&mut session, 0).await?;
    let (damaged, healed) = damage(&mut session).await?;
    let usage = usage(&mut session).await?;
    if json {
        let out = serde_json::json!({
            "relay_fingerprint": relay_key.fingerprint().to_string(),
            "endpoint_fingerprint": keys.public.fingerprint().to_string(),
            "daemon": daemon,
            "daemon_running": daemon_running,
            "client": record.client_name,
            "address": session.address,
            "path": session.path.as_str(),
            "relay_software": session.relay_hello.software,
            "rtt_ms": rtt.as_secs_f64() * 1000.0,
            "snapshots_damaged": damaged,
            "snapshots_healed": healed,
            "stored_bytes": usage.map(|u| u.stored),
            "quota": usage.and_then(|u| u.quota),
            "quota_warning": usage.is_some_and(|u| u.warn()),
        });
        println!("{out}");
    } else {
        println!(
            "relay:      {} ({})",
            relay_key.fingerprint(),
            ferry_protocol::units::printable(session.relay_hello.software.as_bytes())
        );
        println!(
            "endpoint:   {} (client {:?})",
            keys.public.fingerprint(),
            record.client_name
        );
        println!(
            "connected:  {} over the {}",
            session.address,
            session.path.as_str()
        );
        println!("round trip: {:.2} ms", rtt.as_secs_f64() * 1000.0);
        if let Some(usage) = usage {
            println!("stored:     {}", usage.text());
            if usage.warn() {
                println!(
                    "QUOTA:      past {} % of this client's quota; backups that would pass it are refused",
                    usage.warn_percent
                );
            }
        }
        if !damaged.is_empty() {
            println!("DAMAGED:    snapshots {damaged:?} reach data the relay found damaged; the next backup that still holds it heals them");
        }
        if !healed.is_empty() {
            println!("healed:     snapshots {healed:?} were damaged and are whole again");
        }
    }
    if watch {
        watch_session(&mut session).await?;
    }
    let _ = session
        .channel
        .send(&Message::Close {
            reason: "status done".into(),
        })
        .await;
    Ok(())
}

/// Pings every second and prints the round trip until the session ends;
/// a `Close` from the relay (e.g. this client was removed) ends it at once.
async fn watch_session(session: &mut Session) -> Result<()> {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut outstanding: Option<(u64, Instant)> = None;
    for nonce in 1.. {
        tokio::select! {
            _ = ticker.tick() => {
                if outstanding.is_none() {
                    session.channel.send(&Message::Ping { nonce }).await.context("the session broke")?;
                    outstanding = Some((nonce, Instant::now()));
                }
            }
            received = recv(session) => match received? {
                Message::Pong { nonce: n } => {
                    if let Some((_, sent)) = outstanding.filter(|(o, _)| *o == n) {
                        println!("round trip: {:.2} ms", sent.elapsed().as_secs_f64() * 1000.0);
                        outstanding = None;
                    }
                }
                Message::Close { reason } => bail!("the relay closed the session: {reason}"),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The relay's next message; a relay silent for the session's silence
/// timeout is an error, as in backups and restores.
async fn recv(session: &mut Session) -> Result<Message> {
    match tokio::time::timeout(session.silence, session.channel.recv()).await {
        Ok(received) => received.context("the session broke"),
        Err(_) => bail!(
            "the relay sent nothing for {:?} while a request waited: the relay or the link stopped",
            session.silence
        ),
    }
}

/// What this client stores on the relay, and its quota.
#[derive(Debug, Clone, Copy)]
struct Usage {
    stored: u64,
    quota: Option<u64>,
    warn_percent: u8,
}

impl Usage {
    /// Past the relay's warning share of the quota.
    fn warn(self) -> bool {
        ferry_protocol::units::past_warning(self.stored, self.quota, self.warn_percent)
    }

    fn text(self) -> String {
        let usage = ferry_protocol::units::format_usage(self.stored, self.quota);
        match self.quota {
            Some(_) => usage,
            None => format!("{usage} (no quota)"),
        }
    }
}

/// This client's storage on the relay (`None` from a relay older than
/// protocol 1.4, which cannot tell).
async fn usage(session: &mut Session) -> Result<Option<Usage>> {
    if session.relay_hello.minor < 4 {
        return Ok(None);
    }
    let usage = request(session, &Message::GetUsage, |answer| match answer {
        Message::Usage {
            stored,
            quota,
            warn_percent,
        } => Some(Usage {
            stored,
            quota,
            warn_percent,
        }),
        _ => None,
    })
    .await?;
    Ok(Some(usage))
}

/// The snapshots of this client the relay found damaged, and those healed
/// since (none from a relay older than protocol 1.1, which cannot tell).
async fn damage(session: &mut Session) -> Result<(Vec<u64>, Vec<u64>)> {
    if session.relay_hello.minor < 1 {
        return Ok((Vec::new(), Vec::new()));
    }
    request(session, &Message::GetDamage, |answer| match answer {
        Message::Damage { damaged, healed } => Some((damaged, healed)),
        _ => None,
    })
    .await
}

/// Sends `message` and returns what `take` makes of the first answer it
/// knows (others, such as `Working`, are passed over); a refusal or a close
/// ends it with the relay's reason.
async fn request<T>(
    session: &mut Session,
    message: &Message,
    take: impl Fn(Message) -> Option<T>,
) -> Result<T> {
    session
        .channel
        .send(message)
        .await
        .context("the session broke")?;
    loop {
        match recv(session).await? {
            Message::Failed { message } | Message::Refused { message, .. } => {
                bail!("the relay refused: {message}")
            }
            Message::Close { reason } => bail!("the relay closed the session: {reason}"),
            answer => {
                if let Some(taken) = take(answer) {
                    return Ok(taken);
                }
            }
        }
    }
}

/// Sends a ping and waits for its pong; a `Close` from the relay is an error
/// that carries the relay's reason.
async fn ping(session: &mut Session, nonce: u64) -> Result<Duration> {
    let started = Instant::now();
    session
        .channel
        .send(&Message::Ping { nonce })
        .await
        .context("the session broke")?;
    loop {
        match recv(session).await? {
            Message::Pong { nonce: n } if n == nonce => return Ok(started.elapsed()),
            Message::Close { reason } => bail!("the relay closed the session: {reason}"),
            _ => continue,
        }
    }
}
