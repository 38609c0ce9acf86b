//! A daemon's worker: one sandbox on its own thread, running one task at a
//! time. Shared by the in-process daemons of `hako host --local N` and by
//! `hako daemon`; only the transport in front of it differs.
//!
//! A sandbox is `Send` but not `Sync`, so only this thread touches it; other
//! threads reach it through a shared inbox and one interrupter thread.
//!
//! What a host can make a worker hold is bounded, whatever it sends: one
//! task running and [`MAX_WAITING`] waiting (further tasks are answered at
//! once as "daemon busy"), `everywhere()` payloads within
//! [`everywhere_bound`], and results within the bound the host announced
//! (a larger one is answered as "result too large"). Cancels of ids that
//! are neither running nor waiting are ignored; no message starts a thread.
//!
//! `everywhere()` code runs once: the state it leaves becomes the sandbox's
//! own base ([`Sandbox::rebase`]), which every reset after a task returns
//! to, so it costs nothing per task. Its outcome is reported
//! (`EverywhereDone`); side effects up to an R error stay, as in mirai. The
//! code is kept too, only to apply it again should the sandbox lose its
//! base (it could not be re-created) and for the session's bound.

use crate::protocol::{Everywhere, FailKind, Message, Outcome, OutputChunk, Task, TaskReport};
use bytes::Bytes;
use hako_runtime::{InterruptHandle, Limit, Sandbox, SandboxError, TaskOutcome};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
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
    /// Largest result frame, in bytes, for sessions that bring no bound of
    /// their own (in-process daemons: the host's `--max-payload`).
    pub max_result: Option<u64>,
    /// Run the sandbox at the lowest CPU priority (a volunteer's daemon), so
    /// lending cores never slows the owner's own work.
    pub lowest_priority: bool,
    /// Log one line per task, for the owner of the machine to see what ran.
    pub log_tasks: bool,
}

/// What a worker of a `hako daemon --jobs N` process shares with the others
/// and how it names itself in the volunteer's log.
#[derive(Clone, Default)]
pub struct Job {
    /// Prefix of its log lines (`job 2`), when the process runs several.
    pub label: Option<String>,
    /// The process's `--max-tasks`, shared by all its workers; `None`: the
    /// worker's own `WorkerConfig::max_tasks`.
    pub budget: Option<Arc<TaskBudget>>,
}

/// `--max-tasks` of a whole process: each task a worker starts takes one
/// place; once none is left every worker says bye when idle, and a worker
/// given a task then leaves without starting it (the host re-queues it).
pub struct TaskBudget {
    left: AtomicU64,
    /// The workers to wake when the last place is taken.
    workers: Mutex<Vec<Weak<Shared>>>,
}

impl TaskBudget {
    pub fn new(tasks: u64) -> Arc<TaskBudget> {
        Arc::new(TaskBudget {
            left: AtomicU64::new(tasks),
            workers: Mutex::new(Vec::new()),
        })
    }

    /// Places left.
    pub fn left(&self) -> u64 {
        self.left.load(Ordering::SeqCst)
    }

    /// Take one place: false when none is left. Taking the last one wakes
    /// every worker (idle ones then leave). Never called with a worker's
    /// state locked, so the state locks it takes cannot deadlock.
    fn take(&self) -> bool {
        let took = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if took == Ok(1) {
            let workers = self.workers.lock().map(|w| w.clone()).unwrap_or_default();
            for w in workers.iter().filter_map(Weak::upgrade) {
                let _s = w.lock();
                w.work.notify_all();
            }
        }
        took.is_ok()
    }
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

/// What the worker tells its transport. Not boxed: each event is built
/// and consumed once, and `Message` is as large as a daemon's Hello.
#[allow(clippy::large_enum_variant)]
pub enum WorkerEvent {
    Send(Message),
    Exited(Exit),
}

/// Where the worker's messages go, tagged with the session they belong to
/// (so the transport can drop what belongs to a connection already gone).
pub type Outbound = Arc<dyn Fn(u64, WorkerEvent) + Send + Sync>;

/// Tasks a worker holds besides the one it runs. An honest host sends a task
/// only to an idle daemon, so the one that arrives while the last result's
/// reset is under way is all it ever needs; any more are refused at once.
pub const MAX_WAITING: usize = 1;

/// Most `everywhere()` payloads a worker keeps per session (the host keeps
/// no more for daemons that join later).
pub const MAX_EVERYWHERE: usize = 1024;

/// Bytes counted for each kept `everywhere()` payload beyond its length, so
/// that empty payloads are not free.
const EVERYWHERE_OVERHEAD: u64 = 256;

/// Bytes of `everywhere()` payloads a worker keeps per session: 64 MiB, and
/// at most a quarter of its sandbox's memory (they live outside it).
pub fn everywhere_bound(memory_bytes: usize) -> u64 {
    (64u64 << 20).min(memory_bytes as u64 / 4)
}

/// Work in arrival order, not started yet.
enum Work {
    Task(Task),
    Everywhere(Everywhere),
    /// A new connection: forget the old one's `everywhere` list, reset;
    /// with a sandbox, carry on in that one (the host's package set).
    Session(u64, Option<Box<Sandbox>>),
}

/// What the sandbox evaluates now.
struct Running {
    /// The task, or None for `everywhere()` code.
    task: Option<u64>,
    /// Asked to stop: the interrupter keeps asking the sandbox until it ends.
    stop: bool,
}

/// Everything the transport and the two worker threads share, under one lock.
#[derive(Default)]
struct State {
    /// The newest session; work of older ones is dropped.
    session: u64,
    /// Largest result frame this session's host accepts.
    max_result: Option<u64>,
    /// At most [`MAX_WAITING`] tasks, and `everywhere()` payloads within the
    /// session's bound.
    inbox: VecDeque<Work>,
    running: Option<Running>,
    /// `everywhere()` payloads of this session (kept or waiting): count and
    /// bytes.
    everywhere: (usize, u64),
    /// Why this session's tasks are refused, once its `everywhere()` code
    /// went over the bound (tasks would run without state they rely on).
    refusing: Option<String>,
    /// The worker is stopping (or its thread has ended).
    stop: bool,
    /// Interrupts the sandbox the worker runs now.
    interrupt: Option<InterruptHandle>,
}

struct Shared {
    state: Mutex<State>,
    /// Work arrived, or stop: wakes the sandbox thread.
    work: Condvar,
    /// A stop was asked, or the worker ends: wakes the interrupter.
    ask: Condvar,
}

impl Shared {
    /// The state, even if a thread panicked holding it (it stays consistent:
    /// every change is a single assignment or push).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Worker {
    shared: Arc<Shared>,
    out: Outbound,
    /// Bytes of `everywhere()` payloads kept per session.
    everywhere_bound: u64,
    /// Result bound of sessions that do not bring their own.
    max_result: Option<u64>,
}

impl Worker {
    /// Run `sandbox` on a new thread, with one more thread that interrupts
    /// it when asked (never a thread per message).
    pub fn start(
        sandbox: Sandbox,
        config: WorkerConfig,
        out: Outbound,
        name: String,
    ) -> std::io::Result<Arc<Worker>> {
        Worker::start_job(sandbox, config, Job::default(), out, name)
    }

    /// [`Worker::start`] as one of a daemon process's jobs: its log lines
    /// carry `job.label`, and `job.budget` counts its tasks with the others'.
    pub fn start_job(
        sandbox: Sandbox,
        config: WorkerConfig,
        job: Job,
        out: Outbound,
        name: String,
    ) -> std::io::Result<Arc<Worker>> {
        let budget = job
            .budget
            .clone()
            .or_else(|| config.max_tasks.map(TaskBudget::new));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                interrupt: Some(sandbox.interrupt_handle()),
                ..State::default()
            }),
            work: Condvar::new(),
            ask: Condvar::new(),
        });
        let worker = Arc::new(Worker {
            shared: shared.clone(),
            out: out.clone(),
            everywhere_bound: everywhere_bound(sandbox.config().memory_bytes),
            max_result: config.max_result,
        });
        if let Some(b) = &budget {
            if let Ok(mut w) = b.workers.lock() {
                w.push(Arc::downgrade(&shared));
            }
        }
        let sh = shared.clone();
        std::thread::Builder::new()
            .name(format!("hako-{name}-int"))
            .spawn(move || interrupter(&sh))?;
        let started = std::thread::Builder::new()
            .name(format!("hako-{name}"))
            .stack_size(hako_runtime::SANDBOX_THREAD_STACK)
            .spawn(move || {
                if config.lowest_priority {
                    lowest_priority();
                }
                let _ended = Ended(shared.clone());
                let mut state = Thread {
                    sandbox,
                    config,
                    out,
                    shared,
                    everywhere: Vec::new(),
                    session: 0,
                    label: job.label,
                    budget,
                    dirty: false,
                    based: false,
                };
                let exit = state.run();
                tracing::debug!(%exit, "worker thread ends");
                drop(_ended);
                let session = state.session;
                (state.out)(session, WorkerEvent::Exited(exit));
            });
        if let Err(e) = started {
            worker.stop();
            return Err(e);
        }
        Ok(worker)
    }

    /// Begin a new session (a new connection to a host) whose host accepts
    /// results of at most `max_result` bytes (None: the worker's own
    /// bound); returns its number. Whatever the old one left waiting is
    /// dropped.
    pub fn new_session(&self, max_result: Option<u64>) -> u64 {
        self.new_session_on(max_result, None)
    }

    /// [`Worker::new_session`], its tasks to run in `sandbox` from now on
    /// when one is given (a daemon whose new host has another package set);
    /// the old sandbox is dropped.
    pub fn new_session_on(&self, max_result: Option<u64>, sandbox: Option<Sandbox>) -> u64 {
        let mut s = self.shared.lock();
        s.session += 1;
        let session = s.session;
        s.inbox.clear();
        s.inbox
            .push_back(Work::Session(session, sandbox.map(Box::new)));
        s.max_result = max_result.or(self.max_result);
        s.everywhere = (0, 0);
        s.refusing = None;
        self.shared.work.notify_one();
        session
    }

    /// Handle a message from the host. Returns false for a message a daemon
    /// must not receive, or when the worker is gone.
    pub fn deliver(&self, session: u64, m: Message) -> bool {
        match m {
            Message::Task(t) => self.task(session, t),
            Message::Everywhere(e) => self.everywhere(session, e),
            Message::Cancel { id } => {
                self.cancel(id);
                !self.shared.lock().stop
            }
            _ => false,
        }
    }

    fn task(&self, session: u64, t: Task) -> bool {
        let mut s = self.shared.lock();
        if s.stop {
            return false;
        }
        if session != s.session {
            return true;
        }
        let waiting = s
            .inbox
            .iter()
            .filter(|w| matches!(w, Work::Task(_)))
            .count();
        let refusal = match &s.refusing {
            Some(why) => why.clone(),
            None if waiting >= MAX_WAITING => format!(
                "daemon busy: it runs one task and keeps at most {MAX_WAITING} waiting \
                 (a host sends a task only to an idle daemon)"
            ),
            None => {
                s.inbox.push_back(Work::Task(t));
                self.shared.work.notify_one();
                return true;
            }
        };
        drop(s);
        let id = t.id;
        drop(t);
        // Debug only: a host sending a flood of tasks must not flood the log.
        tracing::debug!(task = id, "refused: {refusal}");
        (self.out)(
            session,
            WorkerEvent::Send(Message::Result(failed(id, FailKind::Rejected, refusal))),
        );
        true
    }

    fn everywhere(&self, session: u64, e: Everywhere) -> bool {
        let mut s = self.shared.lock();
        if s.stop {
            return false;
        }
        if session != s.session || s.refusing.is_some() {
            return true;
        }
        let (n, bytes) = s.everywhere;
        let cost = e.payload.len() as u64 + EVERYWHERE_OVERHEAD;
        if n >= MAX_EVERYWHERE || bytes.saturating_add(cost) > self.everywhere_bound {
            let why = format!(
                "this daemon keeps at most {} bytes in {MAX_EVERYWHERE} everywhere() payloads, \
                 and the host sent more ({} bytes in {} payloads): its tasks are refused, \
                 as they would run without that code",
                self.everywhere_bound,
                bytes.saturating_add(cost),
                n + 1
            );
            tracing::warn!("{why}");
            s.refusing = Some(why);
            return true;
        }
        s.everywhere = (n + 1, bytes + cost);
        s.inbox.push_back(Work::Everywhere(e));
        self.shared.work.notify_one();
        true
    }

    /// Stop task `id` if it runs, and answer it as cancelled if it waits
    /// (a host that reused an id gets both); any other id is over, or never
    /// was, and is ignored.
    pub fn cancel(&self, id: u64) {
        let mut s = self.shared.lock();
        if let Some(r) = s.running.as_mut().filter(|r| r.task == Some(id)) {
            r.stop = true;
            self.shared.ask.notify_one();
        }
        let Some(at) = s
            .inbox
            .iter()
            .position(|w| matches!(w, Work::Task(t) if t.id == id))
        else {
            return;
        };
        s.inbox.remove(at);
        let session = s.session;
        drop(s);
        (self.out)(
            session,
            WorkerEvent::Send(Message::Result(failed(
                id,
                FailKind::Cancelled,
                "cancelled before it started".into(),
            ))),
        );
    }

    /// The connection is gone: stop whatever runs (task or `everywhere()`
    /// code) and drop what waits.
    pub fn abandon(&self) {
        let mut s = self.shared.lock();
        s.inbox.clear();
        if let Some(r) = s.running.as_mut() {
            r.stop = true;
            self.shared.ask.notify_one();
        }
    }

    pub fn stop(&self) {
        self.abandon();
        self.shared.lock().stop = true;
        self.shared.work.notify_all();
        self.shared.ask.notify_all();
    }
}

/// Marks the worker stopped when its sandbox thread ends, even by a panic:
/// the transport then learns that the worker is gone instead of queueing
/// work no one will answer, and the interrupter ends.
struct Ended(Arc<Shared>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.lock().stop = true;
        self.0.work.notify_all();
        self.0.ask.notify_all();
    }
}

/// The one thread that interrupts the sandbox: while what runs is asked to
/// stop, it keeps asking every 25 ms, because the runtime clears a pending
/// interrupt when an evaluation begins (and traps R 2 s after the first ask
/// if R does not yield).
fn interrupter(shared: &Shared) {
    let mut s = shared.lock();
    loop {
        if s.running.as_ref().is_some_and(|r| r.stop) {
            if let Some(interrupt) = &s.interrupt {
                interrupt.interrupt();
            }
            s = match shared.ask.wait_timeout(s, Duration::from_millis(25)) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        } else if s.stop {
            return;
        } else {
            s = shared.ask.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

struct Thread {
    sandbox: Sandbox,
    config: WorkerConfig,
    out: Outbound,
    shared: Arc<Shared>,
    /// This session's `everywhere()` code, in order.
    everywhere: Vec<Bytes>,
    session: u64,
    /// Prefix of this worker's log lines (one of several jobs).
    label: Option<String>,
    /// `--max-tasks`, of this worker or of its whole process.
    budget: Option<Arc<TaskBudget>>,
    /// Something ran since the last reset.
    dirty: bool,
    /// The sandbox's base holds this session's `everywhere()` state.
    based: bool,
}

/// How long a daemon waits for work before it gives its sandbox's pages
/// back to the kernel (idle RSS; the next task faults them in again).
const IDLE_RELEASE: Duration = Duration::from_secs(1);

impl Thread {
    /// The next piece of work, claimed as running in the same step (so a
    /// cancel finds a task either waiting or running), or why to end.
    fn next(&mut self, idle_since: Instant) -> Result<Work, Exit> {
        let mut s = self.shared.lock();
        let mut released = false;
        loop {
            if s.stop {
                return Err(Exit::Stopped);
            }
            if let Some(w) = s.inbox.pop_front() {
                s.running = match &w {
                    Work::Task(t) => Some(Running {
                        task: Some(t.id),
                        stop: false,
                    }),
                    Work::Everywhere(_) => Some(Running {
                        task: None,
                        stop: false,
                    }),
                    Work::Session(..) => None,
                };
                return Ok(w);
            }
            // The process's last task has been taken (by this worker or
            // another job's): nothing more will run here.
            if self.budget.as_ref().is_some_and(|b| b.left() == 0) {
                drop(s);
                self.send(Message::Bye {
                    reason: "maximum number of tasks reached".into(),
                });
                return Err(Exit::MaxTasks);
            }
            // Idle a while with a reset sandbox: its pages go back to the
            // kernel (the next task faults the image in again), so an idle
            // daemon holds little more than its code.
            let release_in = (!released && !self.dirty && !self.config.keep_state)
                .then(|| IDLE_RELEASE.saturating_sub(idle_since.elapsed()));
            if release_in.is_some_and(|d| d.is_zero()) {
                drop(s);
                released = true;
                if let Err(e) = self.sandbox.release_memory() {
                    tracing::debug!("idle sandbox kept its pages: {e:#}");
                }
                s = self.shared.lock();
                continue;
            }
            let wait = match self.config.idle_time {
                Some(idle) => {
                    let left = idle.saturating_sub(idle_since.elapsed());
                    if left.is_zero() {
                        drop(s);
                        self.send(Message::Bye {
                            reason: "idle time reached".into(),
                        });
                        return Err(Exit::Idle);
                    }
                    Some(release_in.map_or(left, |r| r.min(left)))
                }
                None => release_in,
            };
            s = match wait {
                Some(left) => match self.shared.work.wait_timeout(s, left) {
                    Ok((g, _)) => g,
                    Err(e) => e.into_inner().0,
                },
                None => self.shared.work.wait(s).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// Nothing runs any more.
    fn finished(&self) {
        self.shared.lock().running = None;
    }

    fn run(&mut self) -> Exit {
        let mut idle_since = Instant::now();
        loop {
            let work = match self.next(idle_since) {
                Ok(w) => w,
                Err(exit) => return exit,
            };
            match work {
                Work::Session(s, sandbox) => {
                    self.session = s;
                    self.everywhere.clear();
                    if let Some(sandbox) = sandbox {
                        // Nothing of the old one stays: not its base, not
                        // its state. Interrupts go to the new one.
                        self.shared.lock().interrupt = Some(sandbox.interrupt_handle());
                        self.sandbox = *sandbox;
                        self.based = false;
                        self.dirty = false;
                        continue;
                    }
                    // Nothing of an old connection's everywhere() stays.
                    if self.sandbox.rebased() {
                        self.sandbox.unbase();
                        self.dirty = true;
                    }
                    self.based = false;
                    if self.dirty {
                        if let Err(e) = self.sandbox.reset() {
                            return Exit::Failed(format!("reset failed: {e:#}"));
                        }
                        self.dirty = false;
                    }
                }
                Work::Everywhere(e) => {
                    if let Err(exit) = self.everywhere(e) {
                        return exit;
                    }
                }
                Work::Task(t) => {
                    if self.budget.as_ref().is_some_and(|b| !b.take()) {
                        // Another job took the last place: leave without
                        // starting it, so the host gives it to another daemon.
                        self.finished();
                        self.send(Message::Bye {
                            reason: "maximum number of tasks reached".into(),
                        });
                        return Exit::MaxTasks;
                    }
                    let t0 = Instant::now();
                    let id = t.id;
                    let user = user_label(&t.user);
                    let report = self.run_task(t);
                    let ran = t0.elapsed();
                    if self.config.log_tasks {
                        tracing::info!(
                            "{}task {id} (user {user}): {} in {:.3} s, memory {} MiB",
                            self.label
                                .as_deref()
                                .map(|l| format!("{l}: "))
                                .unwrap_or_default(),
                            outcome_word(&report.outcome),
                            ran.as_secs_f64(),
                            self.sandbox.memory_size() >> 20
                        );
                    }
                    let max_result = {
                        let mut s = self.shared.lock();
                        s.running = None;
                        s.max_result
                    };
                    self.send(Message::Result(bound_result(report, max_result)));
                    if !self.config.keep_state {
                        let t1 = Instant::now();
                        if let Err(e) = self.sandbox.reset() {
                            return Exit::Failed(format!("reset failed: {e:#}"));
                        }
                        self.dirty = false;
                        if let Err(exit) = self.restore_base() {
                            return exit;
                        }
                        tracing::trace!(
                            ran_us = ran.as_micros() as u64,
                            reset_us = t1.elapsed().as_micros() as u64,
                            "task"
                        );
                    } else {
                        tracing::trace!(ran_us = ran.as_micros() as u64, "task");
                    }
                    if self.budget.as_ref().is_some_and(|b| b.left() == 0) {
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

    /// Run one `everywhere()` (already claimed as running), keep what it
    /// left as the sandbox's base, and report its outcome. Err: the worker
    /// must end.
    fn everywhere(&mut self, e: Everywhere) -> Result<(), Exit> {
        self.dirty = true;
        let timeout = self.config.task_timeout_cap;
        self.sandbox.set_timeout(timeout);
        let r = self.sandbox.eval_task(&e.payload);
        self.finished();
        // A crash (or a failure of the host side) leaves the sandbox to be
        // rebuilt: nothing of this code stays. Otherwise what it did up to
        // an R error or a limit stays, as in mirai.
        let kept = matches!(r, Ok(_) | Err(SandboxError::Limit { .. }));
        let mut report = report(e.id, r, timeout, self.sandbox.config().memory_bytes);
        if let Outcome::Error(_) | Outcome::Failed { .. } = report.outcome {
            tracing::info!(everywhere = e.id, "an everywhere() expression failed");
        }
        self.everywhere.push(e.payload);
        if kept && !self.config.keep_state {
            if let Err(why) = self.rebase() {
                // Its effects are gone: so is it, from what the base holds.
                self.everywhere.pop();
                if !matches!(report.outcome, Outcome::Failed { .. }) {
                    report.outcome = Outcome::Failed {
                        kind: FailKind::Crashed,
                        message: format!(
                            "the daemon could not keep the state everywhere() left: {why}"
                        ),
                    };
                    report.output.clear();
                }
            }
        } else if !kept {
            self.everywhere.pop();
            if let Err(e) = self.sandbox.reset() {
                return Err(Exit::Failed(format!("reset failed: {e:#}")));
            }
            self.dirty = false;
        }
        let max_result = self.shared.lock().max_result;
        self.send(Message::EverywhereDone(bound_result(report, max_result)));
        Ok(())
    }

    /// Make the sandbox's state its base; on failure it returns to its
    /// previous base (what ran since is lost) and says why.
    fn rebase(&mut self) -> Result<(), String> {
        let t0 = Instant::now();
        match self.sandbox.rebase() {
            Ok(()) => {
                self.dirty = false;
                self.based = true;
                tracing::debug!(us = t0.elapsed().as_micros() as u64, "rebased");
                Ok(())
            }
            Err(e) => {
                tracing::warn!("could not keep the state everywhere() left: {e:#}");
                // The sandbox is back on its previous base at its next reset.
                let _ = self.sandbox.reset();
                self.dirty = false;
                Err(format!("{e:#}"))
            }
        }
    }

    /// After a reset: should the sandbox have lost its base (it could not be
    /// re-created from it), apply this session's everywhere() code again,
    /// once, and make that the base again. Err: the worker must end.
    fn restore_base(&mut self) -> Result<(), Exit> {
        if !self.based || self.sandbox.rebased() || self.config.keep_state {
            return Ok(());
        }
        tracing::warn!(
            calls = self.everywhere.len(),
            "the sandbox lost its everywhere() base: applying the code again"
        );
        for p in self.everywhere.clone() {
            {
                let mut s = self.shared.lock();
                if s.session != self.session || s.stop {
                    return Ok(());
                }
                s.running = Some(Running {
                    task: None,
                    stop: false,
                });
            }
            self.dirty = true;
            self.sandbox.set_timeout(self.config.task_timeout_cap);
            let _ = self.sandbox.eval_task(&p);
            self.finished();
        }
        if self.rebase().is_err() {
            self.based = false;
        }
        Ok(())
    }

    /// Evaluate a task already claimed as running.
    fn run_task(&mut self, t: Task) -> TaskReport {
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
        report(t.id, r, timeout, self.sandbox.config().memory_bytes)
    }
}

/// The size of a result's frame, as `protocol::encode` would make it,
/// without encoding it.
fn frame_len(r: &TaskReport) -> u64 {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .serialized_size(r)
        .map_or(u64::MAX, |n| n.saturating_add(1))
}

/// A result the host would refuse (over its bulk frame bound, or the
/// in-process host's `--max-payload`) becomes a "result too large" error
/// the host takes, instead of a frame that would cost the connection.
fn bound_result(r: TaskReport, max: Option<u64>) -> TaskReport {
    let Some(max) = max else { return r };
    let len = frame_len(&r);
    if len <= max {
        return r;
    }
    let message = format!("result too large: {len} bytes, the host accepts at most {max}");
    let mut small = TaskReport {
        id: r.id,
        outcome: Outcome::Failed {
            kind: FailKind::Rejected,
            message: message.clone(),
        },
        output: r.output,
    };
    if frame_len(&small) > max {
        small = failed(
            r.id,
            FailKind::Rejected,
            format!("{message} (output dropped too)"),
        );
    }
    small
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

/// Nice 19 for the calling thread (Linux: `setpriority` on a thread id sets
/// that thread only). Failing to lower it is not worth stopping for.
fn lowest_priority() {
    // SAFETY: plain syscalls on this thread's own id.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if r != 0 {
        tracing::warn!(
            "could not lower the sandbox thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Longest user name a volunteer's log shows.
const MAX_USER_LABEL: usize = 64;

/// The submitter's name as the host sent it, safe to print in the
/// volunteer's log: letters, digits and `-_.@+` kept, anything else (control
/// characters, spaces, brackets that could forge the rest of the line) shown
/// as `?`, at most [`MAX_USER_LABEL`] characters; none: `unknown`.
fn user_label(user: &str) -> String {
    if user.is_empty() {
        return "unknown".into();
    }
    let mut out: String = user
        .chars()
        .take(MAX_USER_LABEL)
        .map(|c| {
            if c.is_alphanumeric() || "-_.@+".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect();
    if user.chars().nth(MAX_USER_LABEL).is_some() {
        out.push_str("...");
    }
    out
}

/// How a task ended, in a word for the volunteer's log.
fn outcome_word(o: &Outcome) -> String {
    match o {
        Outcome::Value(_) => "value".into(),
        Outcome::Error(_) => "R error".into(),
        Outcome::Failed { kind, .. } => format!("{kind:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{self, Stream};

    fn report(value: usize, output: usize) -> TaskReport {
        TaskReport {
            id: 7,
            outcome: Outcome::Value(Bytes::from(vec![1u8; value])),
            output: vec![OutputChunk {
                stream: Stream::Stdout,
                bytes: Bytes::from(vec![b'x'; output]),
            }],
        }
    }

    #[test]
    fn frame_len_is_the_encoded_size() {
        for (v, o) in [(0, 0), (10, 3), (300, 70_000), (2_000_000, 1)] {
            let r = report(v, o);
            let encoded = protocol::encode(&Message::Result(r.clone())).len() as u64;
            assert_eq!(frame_len(&r), encoded);
        }
    }

    #[test]
    fn results_over_the_bound_become_errors_that_fit() {
        let r = report(100, 10);
        assert_eq!(bound_result(r.clone(), None), r);
        assert_eq!(bound_result(r.clone(), Some(frame_len(&r))), r);
        let big = report(5000, 100);
        let b = bound_result(big, Some(1000));
        assert!(frame_len(&b) <= 1000);
        assert_eq!(b.output.len(), 1, "the output fits and is kept");
        assert!(
            matches!(&b.outcome, Outcome::Failed { kind: FailKind::Rejected, message }
            if message.starts_with("result too large: ") && message.ends_with("at most 1000"))
        );
        let noisy = report(5000, 5000);
        let b = bound_result(noisy, Some(1000));
        assert!(frame_len(&b) <= 1000 && b.output.is_empty());
    }

    #[test]
    fn user_labels_are_printable_and_bounded() {
        assert_eq!(user_label("alice"), "alice");
        assert_eq!(user_label(""), "unknown");
        assert_eq!(user_label("a\x1b]0;x\x07 b)"), "a??0?x??b?");
        let long = user_label(&"é".repeat(1000));
        assert_eq!(long.chars().count(), MAX_USER_LABEL + 3);
        assert!(long.ends_with("..."));
    }

    #[test]
    fn a_budget_is_taken_once_per_place() {
        let b = TaskBudget::new(2);
        assert!(b.take() && b.take());
        assert!(!b.take());
        assert_eq!(b.left(), 0);
    }

    #[test]
    fn everywhere_bound_is_64_mib_or_a_quarter_of_memory() {
        assert_eq!(everywhere_bound(1024 << 20), 64 << 20);
        assert_eq!(everywhere_bound(128 << 20), 32 << 20);
    }
}
