//! hako's sandbox: webR's R.wasm under wasmtime, with a capability-limited
//! filesystem, no ambient authority, and bounded memory, time and output.

pub mod abi;
pub mod dylink;
pub mod engine;
pub mod errno;
pub mod limits;
pub mod memory;
pub mod modinfo;
pub mod output;
pub mod packages;
pub mod pristine;
pub mod progress;
pub mod rapi;
pub mod sandbox;
pub mod stack;
pub mod store;
pub mod trap;
pub mod vfs;

pub use limits::Limit;
pub use output::{Chunk, Stream};
pub use sandbox::{
    EvalResult, InterruptHandle, Runtime, Sandbox, SandboxConfig, SandboxError, TaskOutcome,
    TaskResult,
};
pub use stack::SANDBOX_THREAD_STACK;
pub use vfs::MountSpec;
