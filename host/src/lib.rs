//! `hako`'s library: the host, daemon, client link and sandbox glue behind
//! the `hako` binary. `main.rs` only parses the command line and dispatches
//! here; the integration tests import these modules as they are.
//!
//! Public: the subcommands (what `main.rs` runs) and the wire formats the
//! tests speak (TLS, WebSocket, the daemon protocol, the client link's
//! framing, R's serialization). The rest is private, so unused code is
//! still reported as dead.

pub mod assets;
mod async_main;
pub mod bench;
pub mod client;
pub mod daemon;
pub mod dial;
mod dispatcher;
pub mod eval;
mod fair;
pub mod host;
mod identity;
mod link;
mod link_setup;
pub mod linkframe;
mod local;
mod logging;
mod mount;
mod package_cache;
mod package_fetch;
mod package_serve;
mod paths;
mod peer;
pub mod pkg;
mod progress;
pub mod protocol;
mod replicas;
pub mod rser;
mod sandbox_args;
mod server;
mod shutdown;
mod snapshot;
pub mod startup;
mod status_page;
mod stdio;
pub mod tls;
mod token;
mod token_args;
mod trust_args;
pub mod user_cmd;
mod users;
mod verify;
mod whoami;
mod worker;
pub mod ws;
