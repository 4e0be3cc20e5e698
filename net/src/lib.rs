//! The IO edge of ferry, kept out of `ferry-protocol` so that crate stays
//! sans-IO (no tokio, no timers, no clock, no disk):
//!
//! - [`io`]: [`io::FramedIo`] and [`io::Channel`], which move the protocol's
//!   frames and sealed messages over a tokio stream; key files at mode 0600;
//!   the termination signal.
//! - [`throttle`]: token buckets that sleep on timers, and the local
//!   weekday and minute that rate schedules are evaluated at.
//! - [`table`]: the text tables both binaries print.
//! - [`pipe`]: a closed standard output ends a command quietly; [`failure`]:
//!   a failed command's line, and its JSON object with `--json`.
//! - [`cli_docs`]: shell completions and man pages of both binaries.

#![forbid(unsafe_code)]

pub mod cli_docs;
pub mod failure;
pub mod io;
pub mod pipe;
pub mod systemd;
pub mod table;
pub mod throttle;
