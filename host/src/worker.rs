//! A daemon's worker: one sandbox on its own thread, running one task at a
//! time. Shared by the in-process daemons of `hako host --local N` and by
//! `hako daemon`; only the transport in front of it differs.
//!
//! A sandbox is `Send` but not `Sync`, so only this thread touches it; other
//! threads reach it through the command channel and the interrupt handle.
//!
//! `everywhere` code is kept in a list and replayed after every reset: the
//! runtime cannot yet capture a new pristine state, so "persists into the
//! pristine state" is emulated by re-applying it.

use crate::protocol::{Everywhere, FailKind, Message, Outcome, OutputChunk, Task, TaskReport};
use bytes::Bytes;
use hako_runtime::{InterruptHandle, Limit, Sandbox, SandboxError, TaskOutcome};
use std::collections::HashSet;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The caps a daemon applies to itself.
#[derive(Clone, Debug, Default)]
pub struct WorkerConfig {
    /// Keep state between tasks (no reset), like mirai's `cleanup = FALSE`.
    pub keep_state: bool,
    /// Upper bound of every task's evaluation.
    pub task_timeout_cap: Option<Duration>,
    /// Leave after this many tasks.
    pub max_tasks: Option<u64>,
    /// Leave after this long without a task.
    pub idle_time: Option<Duration>,
}

/// Why a worker stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Stopped,
    MaxTasks,
    Idle,
    Failed(String),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Stopped => write!(f, "stopped"),
            Exit::MaxTasks => write!(f, "reached its maximum number of tasks"),
            Exit::Idle => write!(f, "idle for its idle time"),
            Exit::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

/// What the worker tells its transport.
pub enum WorkerEvent {
    Send(Message),
    Exited(Exit),
}

/// Where the worker's messages go, tagged with the session they belong to
/// (so the transport can drop what belongs to a connection already gone).
pub type Outbound = Arc<dyn Fn(u64, WorkerEvent) + Send + Sync>;

enum Cmd {
    Task(u64, Task),
    Everywhere(u64, Everywhere),
    /// A new connection: forget the old one's `everywhere` list, reset.
    Session(u64),
    Stop,
}

#[derive(Default)]
struct Current {
    task: Option<u64>,
    /// Cancelled before they started.
    cancelled: HashSet<u64>,
}

pub struct Worker {
    tx: Mutex<mpsc::Sender<Cmd>>,
    current: Arc<Mutex<Current>>,
    interrupt: InterruptHandle,
    session: std::sync::atomic::AtomicU64,
}

impl Worker {
    /// Run `sandbox` on a new thread.
    pub fn start(
        sandbox: Sandbox,
        config: WorkerConfig,
        out: Outbound,
        name: String,
    ) -> std::io::Result<Arc<Worker>> {
        let (tx, rx) = mpsc::channel();
        let current = Arc::new(Mutex::new(Current::default()));
        let worker = Arc::new(Worker {
            tx: Mutex::new(tx),
            current: current.clone(),
            interrupt: sandbox.interrupt_handle(),
            session: std::sync::atomic::AtomicU64::new(0),
        });
        std::thread::Builder::new()
            .name(format!("hako-{name}"))
            .stack_size(hako_runtime::SANDBOX_THREAD_STACK)
            .spawn(move || {
                let mut state = Thread {
                    sandbox,
                    config,
                    out,
                    current,
                    everywhere: Vec::new(),
                    session: 0,
                    done: 0,
                    dirty: false,
                };
                let exit = state.run(rx);
                tracing::debug!(%exit, "worker thread ends");
                let session = state.session;
                (state.out)(session, WorkerEvent::Exited(exit));
            })?;
        Ok(worker)
    }

    /// Begin a new session (a new connection to a host); returns its number.
    pub fn new_session(&self) -> u64 {
        let s = self
            .session
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        self.send_cmd(Cmd::Session(s));
        s
    }

    fn send_cmd(&self, c: Cmd) -> bool {
        match self.tx.lock() {
            Ok(tx) => tx.send(c).is_ok(),
            Err(_) => false,
        }
    }

    /// Handle a message from the host. Returns false for a message a daemon
    /// must not receive, or when the worker is gone.
    pub fn deliver(&self, session: u64, m: Message) -> bool {
        match m {
            Message::Task(t) => self.send_cmd(Cmd::Task(session, t)),
            Message::Everywhere(e) => self.send_cmd(Cmd::Everywhere(session, e)),
            Message::Cancel { id } => {
                self.cancel(id);
                true
            }
            _ => false,
        }
    }

    /// Stop task `id` if it runs, or skip it if it has not started yet.
    pub fn cancel(&self, id: u64) {
        let Ok(mut c) = self.current.lock() else {
            return;
        };
        if c.task != Some(id) {
            c.cancelled.insert(id);
            return;
        }
        drop(c);
        // The runtime clears a pending interrupt when an evaluation begins,
        // so a cancel landing just before that would be lost: keep asking
        // until the task is over (the runtime traps 2 s after the first ask).
        let current = self.current.clone();
        let interrupt = self.interrupt.clone();
        let _ = std::thread::Builder::new()
            .name("hako-cancel".into())
            .spawn(move || {
                for _ in 0..200 {
                    match current.lock() {
                        Ok(c) if c.task == Some(id) => interrupt.interrupt(),
                        _ => return,
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
            });
    }

    /// Interrupt whatever runs, whatever it is (the connection was lost).
    pub fn interrupt_current(&self) {
        if let Ok(c) = self.current.lock() {
            if let Some(id) = c.task {
                drop(c);
                self.cancel(id);
            }
        }
    }

    pub fn stop(&self) {
        self.interrupt_current();
        self.send_cmd(Cmd::Stop);
    }
}

struct Thread {
    sandbox: Sandbox,
    config: WorkerConfig,
    out: Outbound,
    current: Arc<Mutex<Current>>,
    everywhere: Vec<Bytes>,
    session: u64,
    done: u64,
    /// Something ran since the last reset.
    dirty: bool,
}

impl Thread {
    fn run(&mut self, rx: mpsc::Receiver<Cmd>) -> Exit {
        let mut idle_since = Instant::now();
        loop {
            let cmd = match self.config.idle_time {
                Some(idle) => {
                    let left = idle.saturating_sub(idle_since.elapsed());
                    match rx.recv_timeout(left) {
                        Ok(c) => c,
                        Err(RecvTimeoutError::Timeout) => {
                            self.send(Message::Bye {
                                reason: "idle time reached".into(),
                            });
                            return Exit::Idle;
                        }
                        Err(RecvTimeoutError::Disconnected) => return Exit::Stopped,
                    }
                }
                None => match rx.recv() {
                    Ok(c) => c,
                    Err(_) => return Exit::Stopped,
                },
            };
            match cmd {
                Cmd::Stop => return Exit::Stopped,
                Cmd::Session(s) => {
                    self.session = s;
                    self.everywhere.clear();
                    if let Ok(mut c) = self.current.lock() {
                        c.cancelled.clear();
                    }
                    if self.dirty {
                        if let Err(e) = self.sandbox.reset() {
                            return Exit::Failed(format!("reset failed: {e:#}"));
                        }
                        self.dirty = false;
                    }
                }
                Cmd::Everywhere(s, e) => {
                    if s != self.session {
                        continue;
                    }
                    self.apply_everywhere(&e.payload);
                    self.everywhere.push(e.payload);
                }
                Cmd::Task(s, t) => {
                    if s != self.session {
                        continue;
                    }
                    let t0 = Instant::now();
                    let report = self.run_task(t);
                    let ran = t0.elapsed();
                    self.send(Message::Result(report));
                    self.done += 1;
                    if !self.config.keep_state {
                        let t1 = Instant::now();
                        if let Err(e) = self.sandbox.reset() {
                            return Exit::Failed(format!("reset failed: {e:#}"));
                        }
                        self.dirty = false;
                        for p in self.everywhere.clone() {
                            self.apply_everywhere(&p);
                        }
                        tracing::trace!(
                            ran_us = ran.as_micros() as u64,
                            reset_us = t1.elapsed().as_micros() as u64,
                            "task"
                        );
                    } else {
                        tracing::trace!(ran_us = ran.as_micros() as u64, "task");
                    }
                    if self.config.max_tasks.is_some_and(|m| self.done >= m) {
                        self.send(Message::Bye {
                            reason: "maximum number of tasks reached".into(),
                        });
                        return Exit::MaxTasks;
                    }
                    idle_since = Instant::now();
                }
            }
        }
    }

    fn send(&self, m: Message) {
        (self.out)(self.session, WorkerEvent::Send(m));
    }

    fn apply_everywhere(&mut self, payload: &[u8]) {
        self.dirty = true;
        self.sandbox.set_timeout(self.config.task_timeout_cap);
        match self.sandbox.eval_task(payload) {
            Ok(r) => {
                if let TaskOutcome::Error(_) = r.outcome {
                    tracing::warn!("an everywhere() expression raised an R error");
                }
            }
            Err(e) => tracing::warn!("an everywhere() expression failed: {e}"),
        }
    }

    fn run_task(&mut self, t: Task) -> TaskReport {
        {
            let Ok(mut c) = self.current.lock() else {
                return failed(t.id, FailKind::Crashed, "worker state poisoned".into());
            };
            // A daemon gets one task at a time, so cancels of other ids are
            // for tasks already over: forget them.
            let cancelled = c.cancelled.remove(&t.id);
            c.cancelled.clear();
            if cancelled {
                return failed(
                    t.id,
                    FailKind::Cancelled,
                    "cancelled before it started".into(),
                );
            }
            c.task = Some(t.id);
        }
        // From here a lost daemon is charged to the task (see dispatcher.rs).
        self.send(Message::Started { id: t.id });
        let requested = t
            .timeout_ms
            .map(|ms| Duration::from_millis(crate::protocol::clamp_timeout_ms(ms)));
        let timeout = match (requested, self.config.task_timeout_cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.sandbox.set_timeout(timeout);
        self.dirty = true;
        let r = self.sandbox.eval_task(&t.payload);
        if let Ok(mut c) = self.current.lock() {
            c.task = None;
        }
        report(t.id, r, timeout, self.sandbox.config().memory_bytes)
    }
}

fn failed(id: u64, kind: FailKind, message: String) -> TaskReport {
    TaskReport {
        id,
        outcome: Outcome::Failed { kind, message },
        output: vec![],
    }
}

fn chunks(output: Vec<hako_runtime::Chunk>) -> Vec<OutputChunk> {
    output
        .into_iter()
        .map(|c| OutputChunk {
            stream: c.stream,
            bytes: Bytes::from(c.bytes),
        })
        .collect()
}

/// The wire form of an evaluation's result.
fn report(
    id: u64,
    r: Result<hako_runtime::TaskResult, SandboxError>,
    timeout: Option<Duration>,
    memory: usize,
) -> TaskReport {
    let (outcome, output) = match r {
        Ok(r) => (
            match r.outcome {
                TaskOutcome::Value(b) => Outcome::Value(Bytes::from(b)),
                TaskOutcome::Error(b) => Outcome::Error(Bytes::from(b)),
            },
            r.output,
        ),
        Err(SandboxError::Limit { limit, output }) => {
            let (kind, message) = match limit {
                Limit::Time => (
                    FailKind::Timeout,
                    match timeout {
                        Some(t) => format!(
                            "the task ran past its time limit of {} s and was stopped",
                            t.as_secs_f64()
                        ),
                        None => "the task ran past its time limit and was stopped".into(),
                    },
                ),
                Limit::Interrupted => (FailKind::Cancelled, "the task was interrupted".into()),
                Limit::Memory => (
                    FailKind::MemoryLimit,
                    format!(
                        "the task hit the daemon's memory limit of {} MiB",
                        memory >> 20
                    ),
                ),
                Limit::Output => (
                    FailKind::OutputLimit,
                    "the task's output exceeded its limit".into(),
                ),
            };
            (Outcome::Failed { kind, message }, output)
        }
        Err(SandboxError::Crashed { message, output }) => (
            Outcome::Failed {
                kind: FailKind::Crashed,
                message: format!("the R session ended: {message}"),
            },
            output,
        ),
        Err(SandboxError::Host(e)) => (
            Outcome::Failed {
                kind: FailKind::Crashed,
                message: format!("the daemon failed: {e:#}"),
            },
            vec![],
        ),
    };
    TaskReport {
        id,
        outcome,
        output: chunks(output),
    }
}
