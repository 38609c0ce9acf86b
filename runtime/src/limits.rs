//! Resource limits of a sandbox and the typed error that names the one hit.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};

/// A limit an evaluation can hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    /// The evaluation ran past its deadline.
    Time,
    /// Linear memory would have grown past the cap.
    Memory,
    /// Output past the cap was dropped and the evaluation stopped.
    Output,
    /// Stopped from another thread (`InterruptHandle::interrupt`).
    Interrupted,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::Time => "time limit",
            Limit::Memory => "memory limit",
            Limit::Output => "output limit",
            Limit::Interrupted => "interrupted",
        })
    }
}

/// Refuses linear-memory growth past a cap. R sees a failed allocation and
/// raises its own "cannot allocate vector" error.
#[derive(Debug)]
pub struct MemoryLimiter {
    pub max_bytes: usize,
    /// Set when a growth was refused during the current evaluation.
    pub hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // R's table grows by a few thousand slots as packages load.
        Ok(desired <= 1 << 20)
    }
}

/// A flag another thread sets to stop the running evaluation.
#[derive(Debug, Default)]
pub struct Interrupt {
    requested: AtomicBool,
}

impl Interrupt {
    pub fn request(&self) {
        self.requested.store(true, Ordering::Release);
    }

    pub fn take(&self) -> bool {
        self.requested.swap(false, Ordering::AcqRel)
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }
}
