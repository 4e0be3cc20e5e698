//! The ferry endpoint: pairs once with a relay over the LAN, then opens
//! encrypted sessions to it from anywhere.
//!
//! Main pieces:
//! - [`state::StateDir`]: the endpoint's key, what it learned when pairing
//!   ([`state::RelayRecord`]) and its settings ([`config::EndpointConfig`]).
//! - [`pair::pair`]: the one-time pairing.
//! - [`connect::connect`]: tries the relay's addresses, LAN first, and
//!   returns an established [`connect::Session`].

pub mod config;
pub mod connect;
pub mod pair;
pub mod state;
