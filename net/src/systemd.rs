//! Telling systemd how a service is (`Type=notify`): ready once it serves,
//! stopping when it shuts down, and alive on the watchdog's beat while it
//! can still do its work (`WatchdogSec=`: a hung process is restarted).
//! Not under systemd (no `NOTIFY_SOCKET`), every call does nothing.

use std::future::Future;
use std::time::Duration;

use sd_notify::NotifyState;

/// Says the service is ready, with a one-line status.
pub fn ready(status: &str) {
    say(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Says the service is stopping.
pub fn stopping() {
    say(&[NotifyState::Stopping]);
}

fn say(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot tell systemd the service's state: {e}");
    }
}

/// Beats the watchdog, if systemd set one, for as long as `healthy`
/// answers within a beat: each beat (half the watchdog's interval) asks
/// `healthy()`, and only its `true` in time says `WATCHDOG=1`. A service
/// whose work hangs (a catalog that no longer answers) misses its beats
/// and systemd restarts it. Returns at once when there is no watchdog.
pub async fn watchdog<F, Fut>(mut healthy: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let beat = (interval / 2).max(Duration::from_millis(100));
    tracing::info!("systemd watchdog: a beat every {beat:?}");
    loop {
        tokio::time::sleep(beat).await;
        match tokio::time::timeout(beat, healthy()).await {
            Ok(true) => say(&[NotifyState::Watchdog]),
            Ok(false) => tracing::error!("systemd watchdog: not healthy; no beat"),
            Err(_) => tracing::error!(
                "systemd watchdog: the health check did not answer in {beat:?}; no beat"
            ),
        }
    }
}
