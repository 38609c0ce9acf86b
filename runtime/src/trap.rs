//! Ways the guest stops that are not R errors.

/// The guest left wasm through an import rather than by returning.
#[derive(Debug, thiserror::Error)]
pub enum GuestTrap {
    /// `exit()` / `proc_exit()` (R's `q()`).
    #[error("R exited with status {0}")]
    Exit(i32),
    /// `abort()` or a failed C assertion.
    #[error("R aborted: {0}")]
    Abort(String),
}
