//! `ferry daemon`: backs up each set of endpoint.toml that has an `interval`,
//! on that interval (with ±10 % jitter, so many laptops do not arrive at
//! once), retrying failures with capped exponential backoff and jitter (1 s
//! doubling to 10 min, so a relay away for hours is picked up again within
//! minutes of its return). State goes to `STATE/daemon.json` once a second
//! while a backup runs, so `ferry status` shows the last result, the next run
//! and live progress. On SIGTERM or SIGINT a running backup stops at the next
//! file after making what it sent durable; the next run resumes from there.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferry_protocol::units::{format_rfc3339, parse_duration};
use serde::{Deserialize, Serialize};

use crate::backup::Control;
use crate::jobs;
use crate::state::StateDir;

/// First retry delay after a failure.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(600);

/// What `STATE/daemon.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DaemonState {
    /// The daemon's process id.
    pub pid: u32,
    /// Per set.
    pub sets: BTreeMap<String, SetState>,
}

/// One set's schedule and results.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SetState {
    /// When it runs next (RFC 3339).
    pub next_run: String,
    /// The last finished attempt.
    pub last: Option<LastRun>,
    /// The attempt in progress.
    pub running: Option<Progress>,
    /// Failures in a row.
    pub failures: u32,
    /// The last check of the newest snapshot (`verify-interval`).
    #[serde(default)]
    pub verify: Option<LastRun>,
    /// When that check finished, in milliseconds since the epoch.
    #[serde(default)]
    pub verified_at_ms: Option<i64>,
}

/// A finished attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastRun {
    /// Whether a snapshot was made.
    pub ok: bool,
    /// When it finished (RFC 3339).
    pub finished_at: String,
    /// The snapshot made.
    pub snapshot: Option<u64>,
    /// One line: the summary, or the error.
    pub message: String,
}

/// A running attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Files done.
    pub files: u64,
    /// File bytes read.
    pub bytes_scanned: u64,
}

impl DaemonState {
    /// Reads `STATE/daemon.json`, if a daemon has written one.
    pub fn load(state: &StateDir) -> Option<Self> {
        serde_json::from_str(&std::fs::read_to_string(state.root().join("daemon.json")).ok()?).ok()
    }

    fn save(&self, state: &StateDir) {
        let path = state.root().join("daemon.json");
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
    }
}

/// A number in `0..1` that differs between calls and processes.
fn jitter_unit() -> f64 {
    let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
    let hash = blake3::hash(seed.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// `base` ± 10 %.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.9 + 0.2 * jitter_unit())
}

/// The delay before retry number `failures` (1-based): doubling, capped, ±20 %.
pub fn backoff(failures: u32) -> Duration {
    let doubled = BACKOFF_START.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(BACKOFF_CAP).mul_f64(0.8 + 0.4 * jitter_unit())
}

/// Whether `error` is a refusal only the relay's admin can lift: over the
/// quota, or a full backup the client's policy keeps off the internet.
fn waits_for_the_admin(error: &anyhow::Error) -> bool {
    use ferry_protocol::message::Refusal;
    error.chain().any(|cause| {
        cause
            .downcast_ref::<crate::client::ClientError>()
            .and_then(|e| match e {
                crate::client::ClientError::Refused(r) => r.code,
                _ => None,
            })
            .or_else(|| {
                cause
                    .downcast_ref::<crate::client::Refused>()
                    .and_then(|r| r.code)
            })
            .is_some_and(|code| {
                matches!(code, Refusal::QuotaExceeded | Refusal::FullBackupNeedsLan)
            })
    })
}

/// Runs until SIGTERM or SIGINT.
///
/// # Errors
/// When no set has an interval, or the configuration is invalid.
pub async fn run(state: &StateDir) -> Result<()> {
    let config = state.config()?;
    let mut intervals = BTreeMap::new();
    let mut verify_intervals = BTreeMap::new();
    for (name, set) in &config.sets {
        if let Some(text) = &set.verify_interval {
            let interval = parse_duration(text)
                .map_err(|e| anyhow::anyhow!("sets.{name}.verify-interval: {e}"))?;
            verify_intervals.insert(name.clone(), interval);
        }
        if let Some(text) = &set.interval {
            let interval =
                parse_duration(text).map_err(|e| anyhow::anyhow!("sets.{name}.interval: {e}"))?;
            jobs::plan(state, name, jobs::Overrides::default())
                .with_context(|| format!("set {name:?}"))?;
            intervals.insert(name.clone(), interval);
        }
    }
    if intervals.is_empty() {
        bail!(
            "no set has an `interval` in {}/endpoint.toml; nothing to schedule",
            state.root().display()
        );
    }
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (stop, stopping) = (Arc::clone(&stop), Arc::clone(&stopping));
        tokio::spawn(async move {
            ferry_net::io::termination_signal().await;
            stopping.store(true, Ordering::SeqCst);
            stop.notify_waiters();
        });
    }
    let now = tokio::time::Instant::now();
    // First runs are spread over the first few seconds.
    let mut due: BTreeMap<String, tokio::time::Instant> = intervals
        .keys()
        .map(|name| {
            (
                name.clone(),
                now + Duration::from_secs(3).mul_f64(jitter_unit()),
            )
        })
        .collect();
    let mut status = DaemonState {
        pid: std::process::id(),
        sets: BTreeMap::new(),
    };
    // When each set was last checked survives a restart of the daemon.
    if let Some(previous) = DaemonState::load(state) {
        for (name, set) in previous.sets {
            let entry = status.sets.entry(name).or_default();
            entry.verify = set.verify;
            entry.verified_at_ms = set.verified_at_ms;
        }
    }
    for (name, at) in &due {
        status.sets.entry(name.clone()).or_default().next_run = wall_time(*at);
    }
    status.save(state);
    tracing::info!(
        "daemon started for sets {:?}",
        intervals.keys().collect::<Vec<_>>()
    );
    ferry_net::systemd::ready(&format!(
        "backing up sets {:?}",
        intervals.keys().collect::<Vec<_>>()
    ));
    // Beats while the daemon's runtime runs (a backup waiting on a slow
    // link is alive; a wedged process is not).
    let watchdog = tokio::spawn(ferry_net::systemd::watchdog(|| async { true }));
    while !stopping.load(Ordering::SeqCst) {
        let (name, at) = due
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(n, a)| (n.clone(), *a))
            .expect("sets");
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = stop.notified() => break,
        }
        let control = Arc::new(Control::default());
        let started = crate::now_ms();
        let outcome = {
            let attempt = run_set(state, &name, &control);
            tokio::pin!(attempt);
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    outcome = &mut attempt => break outcome,
                    _ = ticker.tick() => {
                        let entry = status.sets.entry(name.clone()).or_default();
                        entry.running = Some(Progress {
                            started_at: format_rfc3339(started),
                            files: control.live.files.load(Ordering::Relaxed),
                            bytes_scanned: control.bytes_scanned.load(Ordering::Relaxed),
                        });
                        status.save(state);
                    }
                    _ = stop.notified() => control.stop.store(true, Ordering::SeqCst),
                }
            }
        };
        let entry = status.sets.entry(name.clone()).or_default();
        entry.running = None;
        let next = match outcome {
            Ok(summary) => {
                entry.failures = 0;
                entry.last = Some(LastRun {
                    ok: true,
                    finished_at: format_rfc3339(crate::now_ms()),
                    snapshot: Some(summary.totals.snapshot),
                    message: format!(
                        "{} files, {} bytes sent in {:.1} s{}",
                        summary.files,
                        summary.totals.bytes_sent,
                        summary.totals.duration_s,
                        missing_note(&summary.paths_missing)
                    ),
                });
                tracing::info!("set {name}: snapshot {}", summary.totals.snapshot);
                if let Some(every) = verify_intervals.get(&name) {
                    let due = entry.verified_at_ms.is_none_or(|at| {
                        crate::now_ms().saturating_sub(at)
                            >= i64::try_from(every.as_millis()).unwrap_or(i64::MAX)
                    });
                    if due {
                        entry.verify = Some(verify_set(state, &name).await);
                        entry.verified_at_ms = Some(crate::now_ms());
                    }
                }
                jittered(intervals[&name])
            }
            Err(e) => {
                entry.failures += 1;
                // A refusal that retrying soon cannot change (a quota, a
                // policy) waits for the set's next run, not the backoff.
                let wait = if waits_for_the_admin(&e) {
                    jittered(intervals[&name]).max(backoff(entry.failures))
                } else {
                    backoff(entry.failures)
                };
                tracing::warn!("set {name}: {e:#}; retrying in {wait:?}");
                entry.last = Some(LastRun {
                    ok: false,
                    finished_at: format_rfc3339(crate::now_ms()),
                    snapshot: None,
                    message: format!("{e:#}"),
                });
                wait
            }
        };
        let at = tokio::time::Instant::now() + next;
        entry.next_run = wall_time(at);
        due.insert(name, at);
        status.save(state);
    }
    watchdog.abort();
    ferry_net::systemd::stopping();
    tracing::info!("daemon stopped");
    Ok(())
}

async fn run_set(
    state: &StateDir,
    name: &str,
    control: &Control,
) -> Result<crate::backup::Summary> {
    let job = jobs::plan(state, name, jobs::Overrides::default())?;
    jobs::run(state, &job, control).await
}

/// Checks the set's newest snapshot end to end; the outcome as a [`LastRun`].
async fn verify_set(state: &StateDir, name: &str) -> LastRun {
    let request = crate::verify::Request {
        set: Some(name.to_string()),
        snapshot: crate::restore::Selector::Last,
        against: None,
        max_duration: None,
        progress: state.root().join(format!("verify-{name}.json")),
    };
    let checked = async {
        let mut client = jobs::open_client(state).await?;
        let summary = crate::verify::run(&mut client, &request).await;
        client.close().await;
        summary
    }
    .await;
    let (ok, snapshot, message) = match checked {
        Ok(s) if s.files_damaged == 0 => (
            true,
            Some(s.snapshot),
            format!(
                "snapshot {}: {} files checked whole",
                s.snapshot, s.files_checked
            ),
        ),
        Ok(s) => {
            for line in &s.messages {
                tracing::error!("set {name}: {line}");
            }
            (
                false,
                Some(s.snapshot),
                format!(
                    "snapshot {}: {} files damaged on the relay (the next backup heals what it still holds)",
                    s.snapshot, s.files_damaged
                ),
            )
        }
        Err(e) => (false, None, format!("verify failed: {e:#}")),
    };
    tracing::info!("set {name}: verify: {message}");
    LastRun {
        ok,
        finished_at: format_rfc3339(crate::now_ms()),
        snapshot,
        message,
    }
}

fn wall_time(at: tokio::time::Instant) -> String {
    let ahead = at.saturating_duration_since(tokio::time::Instant::now());
    format_rfc3339(crate::now_ms() + i64::try_from(ahead.as_millis()).unwrap_or(0))
}

/// What a status line adds for a set's paths that did not exist.
fn missing_note(missing: &[String]) -> String {
    if missing.is_empty() {
        String::new()
    } else {
        format!("; left out, missing: {}", missing.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_refusal_waits_for_the_admin_other_failures_do_not() {
        use crate::client::{ClientError, Refused};
        use ferry_protocol::message::Refusal;
        let refused = |code| {
            anyhow::Error::from(ClientError::Refused(Refused {
                code: Some(code),
                message: "no".into(),
            }))
        };
        assert!(waits_for_the_admin(&refused(Refusal::QuotaExceeded)));
        assert!(waits_for_the_admin(
            &refused(Refusal::QuotaExceeded).context("backup of set docs")
        ));
        assert!(!waits_for_the_admin(&refused(Refusal::SetBusy)));
        assert!(!waits_for_the_admin(&anyhow::anyhow!("link down")));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let first = backoff(1);
        assert!(
            first >= Duration::from_millis(800) && first <= Duration::from_millis(1200),
            "{first:?}"
        );
        let fourth = backoff(4);
        assert!(
            fourth >= Duration::from_millis(6400) && fourth <= Duration::from_millis(9600),
            "{fourth:?}"
        );
        assert!(backoff(40) <= BACKOFF_CAP.mul_f64(1.2));
        let interval = jittered(Duration::from_secs(3600));
        assert!(interval >= Duration::from_secs(3240) && interval <= Duration::from_secs(3960));
    }
}
