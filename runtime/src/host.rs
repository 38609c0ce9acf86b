//! The state every import sees: the store's data.

use crate::output::Output;
use crate::vfs::Vfs;
use wasmtime::Memory;

/// Per-sandbox host state, owned by the wasmtime `Store`.
pub struct Host {
    /// The main module's linear memory; set right after it is instantiated.
    pub memory: Option<Memory>,
    /// The guest's whole view of files and descriptors.
    pub vfs: Vfs,
    /// Captured stdout/stderr/messages/warnings of the running evaluation.
    pub output: Output,
}
