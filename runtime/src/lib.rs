//! hako's sandbox: webR's R.wasm under wasmtime, with a capability-limited
//! filesystem, no ambient authority, and bounded memory, time and output.

pub mod abi;
pub mod host;
pub mod output;
pub mod vfs;
