//! The state every import sees: the wasmtime store's data, one per sandbox.

// The crate's one import cycle, kept: the store holds the linker's state,
// and the linker (a wasmtime `Linker<StoreData>`) must name the store's type.
use crate::dylink::Linking;
use crate::limits::{MemoryLimiter, Stop};
use crate::output::Output;
use crate::vfs::Vfs;
use wasmtime::Memory;

/// Per-sandbox state the host keeps for the guest, owned by the wasmtime
/// `Store`.
pub struct StoreData {
    /// The main module's linear memory; set right after it is instantiated.
    pub memory: Option<Memory>,
    /// The guest's whole view of files and descriptors.
    pub vfs: Vfs,
    /// Captured stdout/stderr/messages/warnings of the running evaluation.
    pub output: Output,
    /// Dynamic linker state: loaded modules, GOT, table.
    pub linking: Linking,
    /// The guest's environment, `KEY=VALUE`; nothing of the host's.
    pub env: Vec<String>,
    /// Caps linear memory growth.
    pub limiter: MemoryLimiter,
    /// Deadline, interrupt and backstop of the running evaluation.
    pub stop: Stop,
}
