//! End-to-end tests of `hako host`, `hako daemon` and `hako client`: the
//! real binary, real TLS on loopback, real sandboxed daemons.

// The wire formats, from the library the binary is built on.
use hako::{dial, linkframe, protocol, rser, tls, ws};

mod common;

mod caps;
mod dispatch;
mod everywhere;
mod failures;
mod fair_share;
mod first_start;
mod host_gone;
mod hostile_host;
mod jobs;
mod links;
mod package_sets;
mod packages;
mod refusals;
mod replicas;
mod results;
mod scale;
mod shared_cluster;
mod startup;
mod status_page;
mod survival;
mod tokens;
mod users;
mod volunteer;
