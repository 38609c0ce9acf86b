//! Resource limits of a sandbox and the typed error that names the one hit.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long R gets to honour a stop before the backstop traps.
pub const GRACE: Duration = Duration::from_secs(2);

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

/// Everything the host knows about stopping the running evaluation. A stop
/// is asked of R first (`R_interrupts_pending`, where R polls for events), so
/// R unwinds with an ordinary interrupt; the backstop ([`Stop::backstop`],
/// checked on every epoch tick and by native code that runs long) ends the
/// evaluation by a trap once R has had [`GRACE`] to honour it.
#[derive(Debug)]
pub struct Stop {
    /// Set from another thread (`InterruptHandle::interrupt`).
    pub interrupt: Arc<Interrupt>,
    /// Deadline of the running evaluation.
    pub deadline: Option<Instant>,
    /// Address of R's `R_interrupts_pending` in guest memory.
    pub r_interrupts_pending: Option<u32>,
    /// When the host first wanted the evaluation stopped (for the backstop).
    pub requested_at: Option<Instant>,
    /// Why the host asked R to stop, if it did.
    pub reason: Option<Limit>,
}

impl Stop {
    pub fn new(interrupt: Arc<Interrupt>) -> Stop {
        Stop {
            interrupt,
            deadline: None,
            r_interrupts_pending: None,
            requested_at: None,
            reason: None,
        }
    }

    /// A fresh evaluation: no stop wanted, a new deadline, and an interrupt
    /// that came between evaluations forgotten.
    pub fn begin(&mut self, timeout: Option<Duration>) {
        self.reason = None;
        self.deadline = timeout.map(|t| Instant::now() + t);
        self.requested_at = None;
        self.interrupt.take();
    }

    /// Where R polls for events: whether to ask R to stop now, on an
    /// interrupt, the deadline or (`output_over`) the output cap; the first
    /// reason is the one kept.
    pub fn poll(&mut self, output_over: bool) -> bool {
        let reason = if self.interrupt.take() {
            Limit::Interrupted
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Limit::Time
        } else if output_over {
            Limit::Output
        } else {
            return false;
        };
        self.reason.get_or_insert(reason);
        true
    }

    /// The backstop's rule: a stop was wanted and R has had its grace
    /// period, so the evaluation must end now (by a trap). Names the reason
    /// if R was never asked.
    pub fn backstop(&mut self) -> bool {
        let now = Instant::now();
        let want = self.reason.is_some()
            || self.interrupt.is_requested()
            || self.deadline.is_some_and(|d| now >= d);
        if !want {
            return false;
        }
        let since = *self.requested_at.get_or_insert(now);
        if now.duration_since(since) < GRACE {
            return false;
        }
        if self.reason.is_none() {
            self.reason = Some(if self.interrupt.is_requested() {
                Limit::Interrupted
            } else {
                Limit::Time
            });
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stop() -> Stop {
        Stop::new(Arc::new(Interrupt::default()))
    }

    #[test]
    fn poll_keeps_the_first_reason() {
        let mut s = stop();
        assert!(!s.poll(false));
        assert!(s.poll(true));
        s.interrupt.request();
        assert!(s.poll(false));
        assert_eq!(s.reason, Some(Limit::Output));
        // the interrupt was taken: asked of R once
        assert!(!s.interrupt.is_requested());
    }

    #[test]
    fn poll_sees_a_passed_deadline() {
        let mut s = stop();
        s.begin(Some(Duration::ZERO));
        assert!(s.poll(false));
        assert_eq!(s.reason, Some(Limit::Time));
    }

    #[test]
    fn backstop_waits_for_a_wanted_stop_and_its_grace() {
        let mut s = stop();
        assert!(!s.backstop());
        assert_eq!(s.requested_at, None);
        s.interrupt.request();
        // first sight of the stop: R gets its grace period
        assert!(!s.backstop());
        assert!(s.requested_at.is_some());
        s.requested_at = Instant::now().checked_sub(GRACE);
        assert!(s.backstop());
        assert_eq!(s.reason, Some(Limit::Interrupted));
    }

    #[test]
    fn backstop_names_time_when_only_the_deadline_passed() {
        let mut s = stop();
        s.begin(Some(Duration::ZERO));
        s.requested_at = Instant::now().checked_sub(GRACE);
        assert!(s.backstop());
        assert_eq!(s.reason, Some(Limit::Time));
    }

    #[test]
    fn begin_forgets_the_last_evaluation() {
        let mut s = stop();
        s.interrupt.request();
        s.reason = Some(Limit::Output);
        s.requested_at = Some(Instant::now());
        s.begin(None);
        assert_eq!((s.reason, s.requested_at, s.deadline), (None, None, None));
        assert!(!s.interrupt.is_requested());
        assert!(!s.backstop());
    }
}
