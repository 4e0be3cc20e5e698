//! The ferry endpoint: pairs once with a relay over the LAN, then opens
//! encrypted sessions to it from anywhere.
//!
//! Main pieces:
//! - [`state::StateDir`]: the endpoint's key, what it learned when pairing
//!   ([`state::RelayRecord`]) and its settings ([`config::EndpointConfig`]).
//! - [`pair::pair`]: the one-time pairing.
//! - [`connect::connect`]: tries the relay's addresses, LAN first, and
//!   returns an established [`connect::Session`].

pub mod backup;
pub mod browse;
pub mod cache;
pub mod client;
pub mod compression;
pub mod config;
pub mod connect;
pub mod daemon;
pub mod exclude;
pub mod fetch_queue;
pub mod fetcher;
pub mod fsmeta;
pub mod hooks;
pub mod jobs;
pub mod key;
pub mod labels;
pub mod manual;
pub mod mount;
pub mod overwrite;
pub mod pair;
pub mod progress;
pub mod restore;
pub mod restore_plan;
pub mod sealed;
pub mod sets;
pub mod snapshot;
pub mod snapshot_commands;
pub mod state;
pub mod status;
pub mod summary;
pub mod target;
pub mod uploader;
pub mod verify;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
