//! The ferry relay: pairs endpoints over the LAN and serves their encrypted
//! sessions from anywhere.
//!
//! Main pieces:
//! - [`data_dir::DataDir`]: where everything lives (`relay.toml`, `keys/`, the catalog).
//! - [`repo::Repo`]: the storage handle (the SQLite [`catalog::Catalog`] and
//!   the [`store::BlobStore`]) that uploads, restores and GC work on.
//! - [`server::run`]: binds both listeners and runs until shut down.
//! - [`pairing_service`] and [`session_service`]: one connection of each kind.
//! - [`registry::Registry`]: live sessions, so a removed client is cut off at once.
//! - [`admission::Admission`]: connection caps and per-source handshake rates.

pub mod admin;
pub mod admission;
pub mod alerts;
pub mod catalog;
pub mod catalog_copies;
pub mod clock;
pub mod config;
pub mod data_dir;
pub mod data_home;
pub mod gate;
pub mod gc;
pub mod gc_service;
pub mod manual;
pub mod net;
pub mod objects;
pub mod pairing_service;
pub mod plaintext;
pub mod presence;
pub mod queue_budget;
pub mod rates;
pub mod registry;
pub mod repo;
pub mod reserve;
pub mod secret_file;
pub mod server;
pub mod session_service;
pub mod snapshot_files;
pub mod status;
pub mod store;
pub mod stored_objects;
pub mod suspicion;
pub mod telemetry;
pub mod test_hooks;
pub mod transfer;
pub mod verify;
pub mod web;
pub mod web_tokens;
