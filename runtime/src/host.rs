//! The state every import sees: the store's data.

use crate::dylink::Linking;
use crate::limits::{Interrupt, MemoryLimiter};
use crate::output::Output;
use crate::vfs::Vfs;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::Memory;

/// Per-sandbox host state, owned by the wasmtime `Store`.
pub struct Host {
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
    /// Deadline and cross-thread interrupt of the running evaluation.
    pub interrupt: Arc<Interrupt>,
    pub deadline: Option<Instant>,
    /// Address of R's `R_interrupts_pending` in guest memory.
    pub r_interrupts_pending: Option<u32>,
    /// When the host first wanted the evaluation stopped (for the backstop).
    pub stop_requested_at: Option<Instant>,
    /// Why the host asked R to stop, if it did.
    pub stop_reason: Option<crate::limits::Limit>,
    /// Set when the guest called `exit`.
    pub exit_code: Option<i32>,
}
