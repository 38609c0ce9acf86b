//! End-to-end tests of `hako host`, `hako daemon` and `hako client`: the
//! real binary, real TLS on loopback, real sandboxed daemons.

#![allow(dead_code)]

// The wire formats, shared with the binary as they are.
#[path = "../../src/dial.rs"]
mod dial;
#[path = "../../src/linkframe.rs"]
mod linkframe;
#[path = "../../src/protocol.rs"]
mod protocol;
#[path = "../../src/rser.rs"]
mod rser;
#[path = "../../src/tls.rs"]
mod tls;
#[path = "../../src/ws.rs"]
mod ws;

mod common;

mod caps;
mod dispatch;
mod failures;
mod hostile_host;
mod links;
mod refusals;
mod results;
mod scale;
mod startup;
mod survival;
