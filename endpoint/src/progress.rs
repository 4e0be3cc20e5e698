//! The progress bar of `ferry backup` and `ferry restore`: on stderr, only
//! when it is a terminal and `--json` is off. A job publishes its figures
//! in a [`Live`] as it goes; [`Bar::follow`] redraws from them while the
//! job runs and clears the bar when it ends, so the summary line and any
//! error are printed on a clean line.

use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Time between redraws.
const TICK: Duration = Duration::from_millis(100);

/// What a job has done so far (atomics: the job writes, the bar reads).
#[derive(Debug, Default)]
pub struct Live {
    /// Files handled (read, skipped as unchanged, or restored).
    pub files: AtomicU64,
    /// Bytes of those files.
    pub bytes: AtomicU64,
    /// Bytes the job expects to handle in all (0: unknown).
    pub bytes_expected: AtomicU64,
    /// Bytes sent to the relay.
    pub bytes_sent: AtomicU64,
    /// Bytes received from the relay.
    pub bytes_received: AtomicU64,
}

impl Live {
    /// One more file of `bytes` handled; the session's totals so far.
    pub fn file_done(&self, bytes: u64, sent: u64, received: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.bytes_sent.store(sent, Ordering::Relaxed);
        self.bytes_received.store(received, Ordering::Relaxed);
    }
}

/// Which way the data goes: the bar names what crossed the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A backup: bytes sent.
    Up,
    /// A restore: bytes received.
    Down,
}

/// A progress bar, or nothing.
#[derive(Debug)]
pub struct Bar {
    bar: Option<ProgressBar>,
    direction: Direction,
}

impl Bar {
    /// A bar on stderr when it is a terminal and `json` is off; otherwise
    /// one that shows nothing.
    pub fn new(direction: Direction, json: bool) -> Self {
        let shown = !json && std::io::stderr().is_terminal();
        Bar {
            bar: shown.then(|| {
                ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10))
                    .with_style(style("{spinner} {bytes} {binary_bytes_per_sec} {msg}"))
            }),
            direction,
        }
    }

    /// Whether the bar is drawn (stderr is a terminal, no `--json`).
    pub fn is_shown(&self) -> bool {
        self.bar.is_some()
    }

    /// Runs `job`, redrawing from `live` until it ends; then clears the bar.
    pub async fn follow<F: Future>(self, live: &Live, job: F) -> F::Output {
        let Some(bar) = self.bar else {
            return job.await;
        };
        tokio::pin!(job);
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                output = &mut job => {
                    bar.finish_and_clear();
                    return output;
                }
                _ = tick.tick() => draw(&bar, live, self.direction),
            }
        }
    }
}

fn draw(bar: &ProgressBar, live: &Live, direction: Direction) {
    let expected = live.bytes_expected.load(Ordering::Relaxed);
    let done = live.bytes.load(Ordering::Relaxed);
    if expected > 0 {
        // A job that outgrows its estimate stretches the bar.
        let total = expected.max(done);
        if bar.length().is_none() {
            bar.set_style(style(
                "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            ));
        }
        if bar.length() != Some(total) {
            bar.set_length(total);
        }
    }
    bar.set_position(done);
    let (verb, moved) = match direction {
        Direction::Up => ("sent", live.bytes_sent.load(Ordering::Relaxed)),
        Direction::Down => ("received", live.bytes_received.load(Ordering::Relaxed)),
    };
    bar.set_message(format!(
        "· {} files · {} {verb}",
        live.files.load(Ordering::Relaxed),
        ferry_protocol::units::format_size(moved)
    ));
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_terminal_the_job_just_runs() {
        let live = Live::default();
        live.file_done(10, 3, 1);
        let out = Bar::new(Direction::Up, false)
            .follow(&live, async { 7 })
            .await;
        assert_eq!(out, 7);
        assert_eq!(live.files.load(Ordering::Relaxed), 1);
        assert_eq!(live.bytes_sent.load(Ordering::Relaxed), 3);
    }
}
