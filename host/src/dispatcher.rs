//! The dispatcher: one task owns the queue, the daemons and the clients, and
//! is driven by [`Event`]s from the connections. Nothing here awaits a peer,
//! so a slow or hostile peer cannot stall anyone else.
//!
//! Invariants that make results never lost and never duplicated:
//! - a task is in exactly one state: queued, or running on one daemon;
//! - a daemon runs at most one task (`busy`), and only a result for that
//!   task id is accepted from it; anything else is a protocol violation;
//! - a task resolves exactly once (it is removed from `tasks` when it does);
//!   a result for a task already resolved (cancelled, timed out, reassigned
//!   after its daemon was presumed lost) is dropped.
//!
//! Queued tasks wait in a [`Fair`] queue: weighted fair queuing between
//! users, FIFO within a user (or one FIFO with `--schedule fifo`).
//!
//! A replicated task (`replicas` k > 1) is a [`Group`] the client sees as
//! one task, and its runs are ordinary tasks: each run is queued, assigned,
//! retried and timed out as any task, never twice on one daemon connection
//! and on distinct machines where the host can tell ([`replicas::Spread`]);
//! a run's end is a vote ([`replicas::Vote`]) instead of a result, and the
//! group resolves exactly once, when the vote decides.

use crate::fair::{Fair, Look, Policy};
use crate::peer::Peer;
use crate::protocol::{
    clamp_timeout_ms, Capabilities, DaemonLimits, DaemonRow, Everywhere, FailKind, InfoReport,
    Message, Outcome, Task, TaskReport,
};
use crate::replicas::{self, DaemonKey, Decision, Records, Spread, Vote, Voter};
use crate::snapshot::{
    DaemonStatus, Snapshot, UserStatus, THROUGHPUT_BUCKETS, THROUGHPUT_BUCKET_S,
};
use crate::users::{Selector, User, Volunteer};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A connection's id at the host, unique over the host's life.
pub type ConnId = u64;

#[derive(Clone, Debug)]
pub struct DaemonInfo {
    pub name: String,
    pub address: String,
    pub limits: DaemonLimits,
    pub caps: Capabilities,
    /// Who its token says it is.
    pub volunteer: Volunteer,
}

// TEMPORARY while Disconnect and Snapshot are wired (issue 12): remove.
#[allow(dead_code)]
pub enum Event {
    DaemonJoined {
        id: ConnId,
        peer: Arc<dyn Peer>,
        info: DaemonInfo,
    },
    ClientJoined {
        id: ConnId,
        peer: Arc<dyn Peer>,
        name: String,
        user: Arc<User>,
    },
    FromDaemon {
        id: ConnId,
        msg: Message,
    },
    FromClient {
        id: ConnId,
        msg: Message,
    },
    Left {
        id: ConnId,
        reason: String,
    },
    /// Close the connections `selector` matches (a revoked token, a refused
    /// daemon): their tasks are handled as if they left.
    Disconnect {
        selector: Selector,
        reason: String,
    },
    /// Report what the host is doing (the status page).
    Snapshot {
        reply: tokio::sync::oneshot::Sender<Snapshot>,
    },
    /// Stop taking tasks, let running ones finish within the grace period,
    /// then tell everyone and end.
    Shutdown {
        reason: String,
    },
}

/// How to reach the dispatcher.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Event>,
    next: Arc<AtomicU64>,
}

impl Handle {
    pub fn next_id(&self) -> ConnId {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
    pub fn send(&self, e: Event) -> bool {
        self.tx.send(e).is_ok()
    }
    pub fn shutdown(&self, reason: &str) {
        self.send(Event::Shutdown {
            reason: reason.to_string(),
        });
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Times a task is retried after a daemon died while running it (after
    /// it reported `Started`); one more such death resolves it as crashed.
    pub retries: u32,
    /// Time beyond a task's timeout before the host gives up on the daemon
    /// stopping it by itself (covers the sandbox's interrupt grace).
    pub slack: Duration,
    /// How long running tasks may finish after a shutdown request.
    pub shutdown_grace: Duration,
    /// Largest task payload accepted.
    pub max_payload: u64,
    /// Bytes of `everywhere()` payloads the host keeps (for daemons that
    /// join later): past it, a new EVERYWHERE is refused.
    pub max_everywhere: u64,
    /// Bytes of results queued for one client and not yet read: past it,
    /// the client's new tasks are refused at once (never blocked).
    pub max_unread: u64,
    /// Bytes of one client's tasks queued or running at the host (payloads
    /// plus [`TASK_OVERHEAD`] each): past it, its new tasks are refused at
    /// once (never blocked). A client with nothing pending may always submit
    /// one task within `max_payload`.
    pub max_queued: u64,
    /// How queued tasks of different users are ordered.
    pub schedule: Policy,
    /// Replicas of a task whose client asks for none (`hako host --replicas`).
    pub replicas: u32,
}

/// What a task costs the host besides its payload (its records), counted
/// against `max_queued` so that empty tasks cannot pile up either.
pub const TASK_OVERHEAD: u64 = 256;

/// Times a task may be handed back by daemons lost before it started (a
/// connection blip, not the task's fault) before it resolves as a lost
/// connection: bounds what a daemon that takes tasks and drops them can do.
const MAX_BLIPS: u32 = 8;

impl Default for Options {
    fn default() -> Self {
        Options {
            retries: 1,
            slack: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            max_payload: 256 << 20,
            max_everywhere: 64 << 20,
            max_unread: 256 << 20,
            max_queued: 1 << 30,
            schedule: Policy::Fair,
            replicas: 1,
        }
    }
}

enum TaskState {
    Queued,
    Running {
        daemon: ConnId,
        deadline: Option<Instant>,
    },
}

struct TaskRec {
    client: ConnId,
    /// Its submitter, as its connection authenticated.
    user: Arc<User>,
    client_task: u64,
    payload: Bytes,
    timeout: Option<Duration>,
    /// Names of the daemons that died while running it (after `Started`).
    crashed: Vec<String>,
    /// Daemons lost before it started there.
    blips: u32,
    state: TaskState,
    /// A run of this replicated task (a key of `Dispatcher::groups`): its
    /// end is a vote, not a result.
    group: Option<u64>,
}

/// A replicated task: what its client waits for, and its runs' votes.
struct Group {
    client: ConnId,
    client_task: u64,
    user: Arc<User>,
    payload: Bytes,
    timeout: Option<Duration>,
    vote: Vote,
    spread: Spread,
    /// Its runs not yet ended (keys of `Dispatcher::tasks`).
    runs: Vec<u64>,
}

struct Busy {
    task: u64,
    since: Instant,
    /// The daemon said it began evaluating: losing it now is charged to the task.
    started: bool,
    /// Set when the host resolved the task itself (cancel, timeout): the
    /// daemon's result will be dropped, and it must report soon.
    abandoned: Option<Instant>,
}

struct DaemonRec {
    peer: Arc<dyn Peer>,
    info: DaemonInfo,
    joined: Instant,
    busy: Option<Busy>,
    tasks_done: u64,
    assigned: u64,
    /// Said bye or failed a send: gets nothing more.
    leaving: bool,
    in_idle: bool,
    /// Its record's key and the machine it runs on (see `replicas`).
    key: DaemonKey,
    machine: String,
    /// `everywhere()` outcomes it owes a client (sent while it was
    /// connected): the host's everywhere id -> (client, the client's id).
    owed: HashMap<u64, (ConnId, u64)>,
}

impl DaemonRec {
    /// It will take tasks again (now or after its current one).
    fn open(&self) -> bool {
        !self.leaving && self.info.limits.max_tasks.is_none_or(|m| self.assigned < m)
    }
    fn can_take(&self) -> bool {
        self.open() && self.busy.is_none()
    }
    /// The largest payload it reads (its Hello's `max_task_bytes`).
    fn bound(&self) -> u64 {
        self.info.limits.max_task_bytes.unwrap_or(u64::MAX)
    }
}

struct ClientRec {
    peer: Arc<dyn Peer>,
    name: String,
    user: Arc<User>,
    /// client's task id -> host task id
    pending: HashMap<u64, u64>,
    /// Bytes of its pending tasks, as counted against `max_queued`.
    queued_bytes: u64,
}

/// Users remembered after their last connection left (with their done
/// counts, for the status page); the oldest-gone are forgotten past it.
const GONE_USERS: usize = 1000;

/// A user's tally across all its connections.
struct UserRec {
    /// As its latest connection authenticated.
    user: Arc<User>,
    connections: u32,
    queued: u64,
    running: u64,
    /// Tasks whose result reached the user.
    done: u64,
    /// When its last connection left (a key of `Dispatcher::gone`).
    gone: Option<u64>,
}

pub struct Dispatcher {
    opts: Options,
    tasks: HashMap<u64, TaskRec>,
    /// Replicated tasks, by the id their runs' `group` names.
    groups: HashMap<u64, Group>,
    /// Each daemon's failures and disagreements, across reconnections.
    records: Records,
    queue: Fair,
    users: HashMap<String, UserRec>,
    /// Users without connections, oldest-gone first.
    gone: BTreeMap<u64, String>,
    gone_seq: u64,
    started: Instant,
    /// The time of the event being handled.
    clock: Instant,
    /// Tasks resolved per [`THROUGHPUT_BUCKET_S`] since `started`, a ring
    /// indexed by bucket number, and the bucket number last written.
    throughput: [u64; THROUGHPUT_BUCKETS],
    bucket: u64,
    daemons: HashMap<ConnId, DaemonRec>,
    idle: VecDeque<ConnId>,
    clients: HashMap<ConnId, ClientRec>,
    everywhere: Vec<Everywhere>,
    everywhere_bytes: u64,
    next_task: u64,
    cumulative: u64,
    completed: u64,
    shutdown: Option<(Instant, String)>,
    done: bool,
    /// The largest payload an open daemon accepts, as last checked (`None`:
    /// no open daemon, so tasks wait for one): when it falls, queued tasks
    /// above it are refused.
    largest: Option<u64>,
}

impl Dispatcher {
    pub fn new(opts: Options) -> Dispatcher {
        let schedule = opts.schedule;
        Dispatcher {
            opts,
            tasks: HashMap::new(),
            groups: HashMap::new(),
            records: Records::new(replicas::MAX_RECORDS),
            queue: Fair::new(schedule),
            users: HashMap::new(),
            gone: BTreeMap::new(),
            gone_seq: 0,
            started: Instant::now(),
            clock: Instant::now(),
            throughput: [0; THROUGHPUT_BUCKETS],
            bucket: 0,
            daemons: HashMap::new(),
            idle: VecDeque::new(),
            clients: HashMap::new(),
            everywhere: Vec::new(),
            everywhere_bytes: 0,
            next_task: 1,
            cumulative: 0,
            completed: 0,
            shutdown: None,
            done: false,
            largest: None,
        }
    }

    /// True once a shutdown completed: the loop should end.
    pub fn done(&self) -> bool {
        self.done
    }

    pub fn handle(&mut self, ev: Event, now: Instant) {
        self.clock = self.clock.max(now);
        match ev {
            Event::DaemonJoined { id, peer, info } => self.daemon_joined(id, peer, info, now),
            Event::ClientJoined {
                id,
                peer,
                name,
                user,
            } => {
                tracing::info!(client = id, %name, user = %user.name, "client joined");
                self.user_joined(&user);
                self.clients.insert(
                    id,
                    ClientRec {
                        peer,
                        name,
                        user,
                        pending: HashMap::new(),
                        queued_bytes: 0,
                    },
                );
            }
            Event::FromDaemon { id, msg } => self.daemon_message(id, msg, now),
            Event::FromClient { id, msg } => self.client_message(id, msg, now),
            Event::Left { id, reason } => self.left(id, &reason),
            Event::Disconnect { selector, reason } => self.disconnect(&selector, &reason),
            Event::Snapshot { reply } => {
                let _ = reply.send(self.snapshot(now));
            }
            Event::Shutdown { reason } => self.begin_shutdown(now, reason),
        }
        self.dispatch(now);
        self.refuse_too_large();
        if self.shutdown.is_some() {
            self.tick(now);
        }
    }

    /// The largest payload any open daemon accepts; `None` without one.
    fn largest_bound(&self) -> Option<u64> {
        self.daemons
            .values()
            .filter(|d| d.open())
            .map(DaemonRec::bound)
            .max()
    }

    /// A queued task that no connected daemon can take would wait for ever
    /// (its daemon refuses the frame): once the largest bound falls below
    /// it, it resolves as rejected. Without daemons, tasks wait for one.
    fn refuse_too_large(&mut self) {
        let (was, now) = (self.largest, self.largest_bound());
        self.largest = now;
        let Some(max) = now else { return };
        if was.is_some_and(|w| w <= max) {
            return;
        }
        let refused: Vec<(u64, usize)> = self
            .queue
            .ids()
            .filter_map(|tid| match self.tasks.get(&tid) {
                Some(t) if matches!(t.state, TaskState::Queued) && t.payload.len() as u64 > max => {
                    Some((tid, t.payload.len()))
                }
                _ => None,
            })
            .collect();
        for (tid, len) in refused {
            let message = too_large(len, max);
            self.resolve(
                tid,
                Outcome::Failed {
                    kind: FailKind::Rejected,
                    message,
                },
                vec![],
            );
        }
    }

    fn daemon_joined(&mut self, id: ConnId, peer: Arc<dyn Peer>, info: DaemonInfo, now: Instant) {
        if self.shutdown.is_some() {
            peer.send(Message::Shutdown {
                reason: "the host is shutting down".into(),
            });
            peer.close("the host is shutting down");
            return;
        }
        tracing::info!(daemon = id, name = %info.name, address = %info.address, "daemon joined");
        for e in &self.everywhere {
            peer.send(Message::Everywhere(e.clone()));
        }
        self.cumulative += 1;
        let key = DaemonKey {
            name: info.name.clone(),
            volunteer: info.volunteer.name.clone(),
        };
        let machine =
            replicas::machine_of(&info.address, &info.name, info.volunteer.name.as_deref());
        self.records.joined(&key);
        self.daemons.insert(
            id,
            DaemonRec {
                key,
                machine,
                peer,
                info,
                joined: now,
                busy: None,
                tasks_done: 0,
                assigned: 0,
                leaving: false,
                in_idle: false,
                owed: HashMap::new(),
            },
        );
        self.make_idle(id);
    }

    fn make_idle(&mut self, id: ConnId) {
        if let Some(d) = self.daemons.get_mut(&id) {
            if d.can_take() && !d.in_idle {
                d.in_idle = true;
                self.idle.push_back(id);
            }
        }
    }

    fn client_message(&mut self, cid: ConnId, msg: Message, now: Instant) {
        let Some(client) = self.clients.get(&cid) else {
            return;
        };
        // Refusals are answers too: a client that keeps sending while reading
        // nothing is let go rather than given ever more of them.
        if client.peer.unread() > self.opts.max_unread.saturating_mul(2) {
            let reason = format!(
                "the client does not read its results ({} MiB unread)",
                client.peer.unread() >> 20
            );
            tracing::warn!(client = cid, %reason, "closing client");
            client.peer.close(&reason);
            self.left(cid, &reason);
            return;
        }
        match msg {
            Message::Task(t) => {
                let k = if t.replicas == 0 {
                    self.opts.replicas
                } else {
                    t.replicas
                };
                let reject = if self.shutdown.is_some() {
                    Some((FailKind::Shutdown, "the host is shutting down".to_string()))
                } else if k > replicas::MAX_REPLICAS {
                    Some((
                        FailKind::Rejected,
                        format!(
                            "{k} replicas asked for: a task runs on at most {} daemons",
                            replicas::MAX_REPLICAS
                        ),
                    ))
                } else if t.payload.len() as u64 > self.opts.max_payload {
                    Some((
                        FailKind::Rejected,
                        format!(
                            "the task of {} bytes exceeds the host's bound of {} bytes",
                            t.payload.len(),
                            self.opts.max_payload
                        ),
                    ))
                } else if let Some(max) =
                    self.largest_bound().filter(|&m| t.payload.len() as u64 > m)
                {
                    Some((FailKind::Rejected, too_large(t.payload.len(), max)))
                } else if client.pending.contains_key(&t.id) {
                    Some((
                        FailKind::Rejected,
                        format!("task id {} is already pending", t.id),
                    ))
                } else if client.peer.unread() > self.opts.max_unread {
                    Some((
                        FailKind::Rejected,
                        format!(
                            "too many unread results ({} MiB): read results before submitting more",
                            client.peer.unread() >> 20
                        ),
                    ))
                } else if let Some(max) = client.user.max_in_flight.filter(|&m| {
                    self.users
                        .get(&client.user.name)
                        .is_some_and(|u| u.queued + u.running >= m)
                }) {
                    Some((
                        FailKind::Rejected,
                        format!(
                            "too many tasks in flight: user {} may have at most {max} tasks queued or running at once: wait for results before submitting more",
                            printable(&client.user.name)
                        ),
                    ))
                } else if client.queued_bytes > 0
                    && client.queued_bytes + cost(&t) > self.opts.max_queued
                {
                    Some((
                        FailKind::Rejected,
                        format!(
                            "too many queued tasks ({} MiB): wait for results before submitting more",
                            client.queued_bytes >> 20
                        ),
                    ))
                } else {
                    None
                };
                if let Some((kind, message)) = reject {
                    client.peer.send(Message::Result(TaskReport {
                        id: t.id,
                        outcome: Outcome::Failed { kind, message },
                        output: vec![],
                    }));
                    return;
                }
                let tid = self.next_task;
                self.next_task += 1;
                let user = client.user.clone();
                if let Some(c) = self.clients.get_mut(&cid) {
                    c.pending.insert(t.id, tid);
                    c.queued_bytes += cost(&t);
                }
                let timeout = t
                    .timeout_ms
                    .map(|ms| Duration::from_millis(clamp_timeout_ms(ms)));
                if k > 1 {
                    // The client's id names the group; its runs get ids of their own.
                    self.groups.insert(
                        tid,
                        Group {
                            client: cid,
                            client_task: t.id,
                            user,
                            payload: t.payload,
                            timeout,
                            vote: Vote::new(k),
                            spread: Spread::default(),
                            runs: Vec::new(),
                        },
                    );
                    for _ in 0..k {
                        self.add_run(tid, false);
                    }
                    return;
                }
                self.tally(&user.name).queued += 1;
                self.queue.push(&user.name, user.weight, tid);
                self.tasks.insert(
                    tid,
                    TaskRec {
                        client: cid,
                        user,
                        client_task: t.id,
                        payload: t.payload,
                        timeout,
                        crashed: Vec::new(),
                        blips: 0,
                        state: TaskState::Queued,
                        group: None,
                    },
                );
            }
            Message::Cancel { id } => {
                if let Some(&tid) = client.pending.get(&id) {
                    self.stop_task(tid, FailKind::Cancelled, "cancelled".into(), now);
                }
            }
            Message::Everywhere(e) => {
                let size = e.payload.len() as u64;
                let kept = self.everywhere_bytes;
                // Daemons keep at most this many too, whatever their size.
                let full = self.everywhere.len() >= crate::worker::MAX_EVERYWHERE;
                if full || kept.saturating_add(size) > self.opts.max_everywhere {
                    // Answered like a refused task with the same id, which the
                    // link shows the R session as a 'rejected' status.
                    client.peer.send(Message::Result(TaskReport {
                        id: e.id,
                        outcome: Outcome::Failed {
                            kind: FailKind::Rejected,
                            message: format!(
                                "everywhere() refused: the host keeps at most {} MiB of everywhere() code in {} calls ({} MiB kept, this one is {} KiB)",
                                self.opts.max_everywhere >> 20,
                                crate::worker::MAX_EVERYWHERE,
                                kept >> 20,
                                size >> 10
                            ),
                        },
                        output: vec![],
                    }));
                    return;
                }
                let ack = self.add_everywhere(e.payload, (cid, e.id));
                if let Some(c) = self.clients.get(&cid) {
                    c.peer.send(Message::EverywhereAck {
                        id: e.id,
                        daemons: ack,
                    });
                }
            }
            Message::Status => {
                let report = self.info(now);
                client.peer.send(Message::Info(report));
            }
            other => {
                let reason = format!("a client may not send {:?}", other.kind());
                tracing::warn!(client = cid, %reason, "closing client");
                client.peer.close(&reason);
                self.left(cid, &reason);
            }
        }
    }

    /// Record `payload` to run on every daemon, now and later. Returns how
    /// many daemons it was sent to now: each owes `origin` (the client and
    /// its id) one outcome, forwarded as a `Result` of that id.
    fn add_everywhere(&mut self, payload: Bytes, origin: (ConnId, u64)) -> u32 {
        self.everywhere_bytes = self.everywhere_bytes.saturating_add(payload.len() as u64);
        let e = Everywhere {
            id: self.everywhere.len() as u64 + 1,
            payload,
        };
        let mut n = 0;
        for d in self.daemons.values_mut() {
            if !d.leaving && d.peer.send(Message::Everywhere(e.clone())) {
                d.owed.insert(e.id, origin);
                n += 1;
            }
        }
        self.everywhere.push(e);
        n
    }

    /// Resolve a task the host decided about (cancel, timeout), stopping it
    /// on its daemon if it runs.
    fn stop_task(&mut self, tid: u64, kind: FailKind, message: String, now: Instant) {
        if self.groups.contains_key(&tid) {
            self.end_group(tid, Outcome::Failed { kind, message }, vec![], now);
            return;
        }
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        if let TaskState::Running { daemon, .. } = t.state {
            if let Some(d) = self.daemons.get_mut(&daemon) {
                if let Some(b) = d.busy.as_mut().filter(|b| b.task == tid) {
                    b.abandoned = Some(now);
                    d.peer.send(Message::Cancel { id: tid });
                }
            }
        }
        self.resolve(tid, Outcome::Failed { kind, message }, vec![]);
    }

    /// Deliver a task's one and only result to its client.
    /// A run of a replicated task ends in a vote instead.
    fn resolve(&mut self, tid: u64, outcome: Outcome, output: Vec<crate::protocol::OutputChunk>) {
        let Some(t) = self.tasks.remove(&tid) else {
            return;
        };
        let u = self.tally(&t.user.name);
        match t.state {
            TaskState::Queued => u.queued = u.queued.saturating_sub(1),
            TaskState::Running { .. } => u.running = u.running.saturating_sub(1),
        }
        if let Some(gid) = t.group {
            let voter = match t.state {
                TaskState::Running { daemon, .. } => self.daemons.get(&daemon).map(|d| Voter {
                    conn: daemon,
                    key: d.key.clone(),
                }),
                TaskState::Queued => None,
            };
            self.run_ended(gid, tid, voter, outcome, output);
            return;
        }
        let len = t.payload.len();
        self.deliver(t.client, t.client_task, len, &t.user.name, outcome, output);
    }

    /// Send a client the one result of its task `client_task`.
    fn deliver(
        &mut self,
        client: ConnId,
        client_task: u64,
        payload_len: usize,
        user: &str,
        outcome: Outcome,
        output: Vec<crate::protocol::OutputChunk>,
    ) {
        self.completed += 1;
        self.count_resolved();
        if self.clients.contains_key(&client) {
            self.tally(user).done += 1;
        }
        if let Some(c) = self.clients.get_mut(&client) {
            c.pending.remove(&client_task);
            c.queued_bytes = c
                .queued_bytes
                .saturating_sub(payload_len as u64 + TASK_OVERHEAD);
            c.peer.send(Message::Result(TaskReport {
                id: client_task,
                outcome,
                output,
            }));
        }
    }

    /// Queue one more run of replicated task `gid` (at the front of its
    /// user's queue when the vote asks for it, so a split vote ends soon).
    fn add_run(&mut self, gid: u64, front: bool) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let tid = self.next_task;
        self.next_task += 1;
        g.runs.push(tid);
        let rec = TaskRec {
            client: g.client,
            user: g.user.clone(),
            client_task: g.client_task,
            payload: g.payload.clone(),
            timeout: g.timeout,
            crashed: Vec::new(),
            blips: 0,
            state: TaskState::Queued,
            group: Some(gid),
        };
        let user = g.user.clone();
        self.tasks.insert(tid, rec);
        self.tally(&user.name).queued += 1;
        if front {
            self.queue.push_front(&user.name, user.weight, tid);
        } else {
            self.queue.push(&user.name, user.weight, tid);
        }
    }

    /// Run `tid` of replicated task `gid` ended: count its vote (a value or
    /// R error from `voter`) or its failure, and do what the vote decides.
    fn run_ended(
        &mut self,
        gid: u64,
        tid: u64,
        voter: Option<Voter>,
        outcome: Outcome,
        output: Vec<crate::protocol::OutputChunk>,
    ) {
        let shutting = self.shutdown.is_some();
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        g.runs.retain(|&r| r != tid);
        let decision = match (voter, outcome) {
            // Nothing more will run: the task ends as its run did.
            (_, Outcome::Failed { kind, message })
                if shutting
                    || matches!(
                        kind,
                        FailKind::Shutdown | FailKind::Rejected | FailKind::Cancelled
                    ) =>
            {
                Decision::Resolve {
                    outcome: Outcome::Failed { kind, message },
                    output: vec![],
                    losers: vec![],
                }
            }
            (_, Outcome::Failed { kind, message }) => g.vote.fail(kind, message),
            (Some(v), outcome) => g.vote.vote(v, outcome, output),
            (None, _) => g
                .vote
                .fail(FailKind::ConnectionReset, "its daemon was lost".into()),
        };
        let split = g.vote.split();
        let decision = match decision {
            // A tie nobody connected may break ends now (a failed run waits
            // for a daemon like any task): a task whose replicas differ on
            // every daemon a local host has would wait for ever.
            Decision::More if split && !self.may_run_another(gid) => match self.groups.get(&gid) {
                Some(g) => g
                    .vote
                    .disagreed("no other connected daemon may run another replica"),
                None => return,
            },
            d => d,
        };
        match decision {
            Decision::Wait => {}
            Decision::More => self.add_run(gid, true),
            Decision::Resolve {
                outcome,
                output,
                losers,
            } => {
                for key in &losers {
                    tracing::warn!(task = gid, daemon = %key, "a replica disagreed with the agreed result");
                    self.records.disagreed(key);
                }
                self.end_group(gid, outcome, output, self.clock);
            }
        }
    }

    /// Could an open daemon take another run of replicated task `gid`?
    fn may_run_another(&self, gid: u64) -> bool {
        let Some(g) = self.groups.get(&gid) else {
            return false;
        };
        let open: Vec<&str> = self
            .daemons
            .values()
            .filter(|d| d.open())
            .map(|d| d.machine.as_str())
            .collect();
        self.daemons
            .iter()
            .any(|(&id, d)| d.open() && g.spread.admits(id, &d.machine, open.iter().copied()))
    }

    /// Resolve replicated task `gid` once: stop its runs still out and
    /// answer its client.
    fn end_group(
        &mut self,
        gid: u64,
        outcome: Outcome,
        output: Vec<crate::protocol::OutputChunk>,
        now: Instant,
    ) {
        let Some(g) = self.groups.remove(&gid) else {
            return;
        };
        for tid in g.runs {
            let Some(t) = self.tasks.remove(&tid) else {
                continue;
            };
            let u = self.tally(&t.user.name);
            match t.state {
                TaskState::Queued => u.queued = u.queued.saturating_sub(1),
                TaskState::Running { daemon, .. } => {
                    u.running = u.running.saturating_sub(1);
                    if let Some(d) = self.daemons.get_mut(&daemon) {
                        if let Some(b) = d.busy.as_mut().filter(|b| b.task == tid) {
                            b.abandoned = Some(now);
                            d.peer.send(Message::Cancel { id: tid });
                        }
                    }
                }
            }
        }
        let len = g.payload.len();
        self.deliver(g.client, g.client_task, len, &g.user.name, outcome, output);
    }

    fn daemon_message(&mut self, did: ConnId, msg: Message, now: Instant) {
        let Some(d) = self.daemons.get_mut(&did) else {
            return;
        };
        match msg {
            Message::Result(r) => {
                // Checked before taking: a daemon that lies keeps its real
                // task recorded, so the task is re-queued when it is dropped.
                if d.busy.as_ref().is_none_or(|b| b.task != r.id) {
                    let reason = format!("result for task {} that it was not running", r.id);
                    self.violation(did, &reason);
                    return;
                }
                let Some(busy) = d.busy.take() else {
                    let reason = format!("result for task {} that it was not running", r.id);
                    self.violation(did, &reason);
                    return;
                };
                d.tasks_done += 1;
                let ours = busy.abandoned.is_none()
                    && matches!(self.tasks.get(&r.id), Some(TaskRec { state: TaskState::Running { daemon, .. }, .. }) if *daemon == did);
                if ours {
                    // The one choke point: no value a daemon sends reaches a
                    // client without passing the result verifier.
                    let outcome = crate::verify::checked(r.outcome);
                    if let Outcome::Failed { kind, .. } = &outcome {
                        if daemons_fault(*kind) {
                            self.records.failed(&d.key);
                        }
                    }
                    self.resolve(r.id, outcome, r.output);
                } else {
                    tracing::debug!(
                        daemon = did,
                        task = r.id,
                        "dropping the result of a task already resolved"
                    );
                }
                self.make_idle(did);
            }
            Message::EverywhereDone(r) => {
                if r.id == 0 || r.id > self.everywhere.len() as u64 {
                    let reason =
                        format!("an everywhere() outcome for id {} it was never sent", r.id);
                    self.violation(did, &reason);
                    return;
                }
                let outcome = crate::verify::checked(r.outcome);
                match d.owed.remove(&r.id) {
                    Some((cid, id)) => {
                        if let Some(c) = self.clients.get(&cid) {
                            c.peer.send(Message::Result(TaskReport {
                                id,
                                outcome,
                                output: r.output,
                            }));
                        }
                    }
                    // Code sent when it joined: nobody waits for it.
                    None if !matches!(outcome, Outcome::Value(_)) => {
                        tracing::warn!(daemon = did, name = %d.info.name, everywhere = r.id, "everywhere() code failed on a daemon that joined later");
                    }
                    None => {}
                }
            }
            Message::Started { id } => {
                // Only the task it runs counts; anything else is stale
                // (a task the host already gave up on) and ignored.
                if let Some(b) = d.busy.as_mut().filter(|b| b.task == id) {
                    b.started = true;
                }
            }
            Message::Bye { reason } => {
                tracing::info!(daemon = did, %reason, "daemon leaving");
                d.leaving = true;
                // A voluntary leave is not the task's fault: not charged, but
                // counted like a blip, so daemons that take a task and say bye
                // again and again cannot keep it from resolving.
                if let Some(b) = d.busy.take() {
                    if b.abandoned.is_none() {
                        let (name, why) = (d.info.name.clone(), format!("it left: {reason}"));
                        self.lost_task(b.task, false, &name, &why);
                    }
                }
            }
            other => {
                let reason = format!("a daemon may not send {:?}", other.kind());
                self.violation(did, &reason);
            }
        }
        let _ = now;
    }

    /// Close every connection `selector` matches, as if it left.
    fn disconnect(&mut self, selector: &Selector, reason: &str) {
        let mut ids: Vec<ConnId> = self
            .daemons
            .iter()
            .filter(|(_, d)| match selector {
                Selector::Volunteer(v) => d.info.volunteer.name.as_deref() == Some(v.as_str()),
                Selector::DaemonName(n) => d.info.name == *n,
                Selector::Fingerprint(f) => d.info.volunteer.fingerprint == *f,
                Selector::User(_) => false,
            })
            .map(|(&id, _)| id)
            .collect();
        ids.extend(
            self.clients
                .iter()
                .filter(|(_, c)| matches!(selector, Selector::User(u) if c.user.name == *u))
                .map(|(&id, _)| id),
        );
        ids.sort_unstable();
        for id in ids {
            tracing::info!(conn = id, ?selector, %reason, "disconnecting");
            if let Some(d) = self.daemons.get(&id) {
                d.peer.close(reason);
            } else if let Some(c) = self.clients.get(&id) {
                c.peer.close(reason);
            }
            self.left(id, reason);
        }
    }

    fn violation(&mut self, did: ConnId, reason: &str) {
        tracing::warn!(daemon = did, %reason, "closing daemon: protocol violation");
        if let Some(d) = self.daemons.get(&did) {
            d.peer.close(reason);
        }
        self.left(did, reason);
    }

    /// A running task goes back to the front of its user's queue.
    fn requeue_front(&mut self, tid: u64) {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        if matches!(t.state, TaskState::Queued) {
            return; // already queued: a second entry would run it twice
        }
        t.state = TaskState::Queued;
        let user = t.user.clone();
        self.queue.push_front(&user.name, user.weight, tid);
        let u = self.tally(&user.name);
        u.running = u.running.saturating_sub(1);
        u.queued += 1;
    }

    fn left(&mut self, id: ConnId, reason: &str) {
        if let Some(d) = self.daemons.remove(&id) {
            tracing::info!(daemon = id, name = %d.info.name, %reason, "daemon left");
            let mut owed: Vec<_> = d.owed.values().copied().collect();
            owed.sort_unstable();
            for (cid, eid) in owed {
                if let Some(c) = self.clients.get(&cid) {
                    c.peer.send(Message::Result(TaskReport {
                        id: eid,
                        outcome: Outcome::Failed {
                            kind: FailKind::ConnectionReset,
                            message: format!(
                                "daemon {} was lost before it reported on everywhere() ({})",
                                printable(&d.info.name),
                                printable(reason)
                            ),
                        },
                        output: vec![],
                    }));
                }
            }
            self.records.left(&d.key);
            if let Some(b) = d.busy {
                if b.abandoned.is_none() {
                    if b.started {
                        self.records.failed(&d.key);
                    }
                    self.lost_task(b.task, b.started, &d.info.name, reason);
                }
            }
        } else if let Some(c) = self.clients.remove(&id) {
            tracing::info!(client = id, name = %c.name, %reason, pending = c.pending.len(), "client left");
            let now = Instant::now();
            for tid in c.pending.into_values() {
                // Nobody to tell: stop it and forget it.
                self.stop_task(tid, FailKind::Cancelled, "client left".into(), now);
            }
            self.user_left(&c.user.name);
        }
    }

    /// Its daemon was lost. Lost after the task started there: charged to
    /// the task, which is retried `retries` times elsewhere and then
    /// resolves as having crashed its daemons, so one poisoned task cannot
    /// take every daemon down. Lost before it started (a blip): re-queued
    /// uncharged, up to [`MAX_BLIPS`] times.
    fn lost_task(&mut self, tid: u64, started: bool, daemon: &str, reason: &str) {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        // Both come from the peer: they reach the user's R session.
        let (daemon, reason) = (printable(daemon), printable(reason));
        let outcome = if self.shutdown.is_some() {
            Some((
                FailKind::ConnectionReset,
                format!("connection reset: daemon {daemon} was lost ({reason}) while the host shut down"),
            ))
        } else if started {
            t.crashed.push(daemon);
            if t.crashed.len() as u64 <= u64::from(self.opts.retries) {
                None
            } else {
                Some((
                    FailKind::Crashed,
                    format!(
                        "the task crashed its daemon: {} lost while running it (last: {reason})",
                        t.crashed.join(", ")
                    ),
                ))
            }
        } else {
            t.blips += 1;
            if t.blips <= MAX_BLIPS {
                None
            } else {
                Some((
                    FailKind::ConnectionReset,
                    format!(
                        "connection reset: daemon {daemon} was lost ({reason}) before the task started, {} time(s)",
                        t.blips
                    ),
                ))
            }
        };
        match outcome {
            None => {
                tracing::info!(task = tid, started, "re-queueing the task of a lost daemon");
                self.requeue_front(tid);
            }
            Some((kind, message)) => {
                self.resolve(tid, Outcome::Failed { kind, message }, vec![]);
            }
        }
    }

    /// Pair queued tasks with idle daemons, oldest first on both sides: each
    /// idle daemon gets the oldest task its bound admits, so a task only a
    /// bigger daemon can take does not hold up the ones behind it.
    fn dispatch(&mut self, now: Instant) {
        if self.shutdown.is_some() {
            return;
        }
        let mut passed = Vec::new();
        // The largest bound that found nothing: no smaller one will either,
        // so idle small daemons do not each rescan a queue of large tasks.
        let mut fruitless: Option<u64> = None;
        while !self.queue.is_empty() {
            let Some(did) = self.pop_idle() else {
                break;
            };
            let bound = self.daemons.get(&did).map_or(0, DaemonRec::bound);
            if fruitless.is_some_and(|f| bound <= f) {
                passed.push(did);
                continue;
            }
            match self.pop_queued(did, bound) {
                (Some(tid), _) => self.assign(tid, did, now),
                (None, spread) => {
                    // Passed over only for its size: no smaller daemon
                    // finds anything either. Not so if a replica's spread
                    // kept it from one: another daemon may take that.
                    if !spread {
                        fruitless = Some(bound);
                    }
                    passed.push(did);
                }
            }
        }
        // Daemons that found nothing they can take stay idle, in order.
        for did in passed.into_iter().rev() {
            if let Some(d) = self.daemons.get_mut(&did) {
                d.in_idle = true;
                self.idle.push_front(did);
            }
        }
    }

    fn pop_idle(&mut self) -> Option<ConnId> {
        while let Some(id) = self.idle.pop_front() {
            if let Some(d) = self.daemons.get_mut(&id) {
                d.in_idle = false;
                if d.can_take() {
                    return Some(id);
                }
            }
        }
        None
    }

    /// The next queued task daemon `did` (reading at most `bound` bytes)
    /// may take, in fair order (each user's oldest it admits), taken off
    /// the queue; stale entries (tasks resolved while queued) are dropped.
    /// Also says whether a replica's spread passed one over.
    fn pop_queued(&mut self, did: ConnId, bound: u64) -> (Option<u64>, bool) {
        let machine = self.daemons.get(&did).map_or("", |d| d.machine.as_str());
        let open: Vec<&str> = if self.groups.is_empty() {
            Vec::new()
        } else {
            self.daemons
                .values()
                .filter(|d| d.open())
                .map(|d| d.machine.as_str())
                .collect()
        };
        let (tasks, groups) = (&self.tasks, &self.groups);
        let mut spread = false;
        let tid = self.queue.pop(|tid| match tasks.get(&tid) {
            Some(t) if matches!(t.state, TaskState::Queued) => {
                if t.payload.len() as u64 > bound {
                    return Look::Pass;
                }
                let kept = t
                    .group
                    .and_then(|g| groups.get(&g))
                    .is_some_and(|g| !g.spread.admits(did, machine, open.iter().copied()));
                if kept {
                    spread = true;
                    Look::Pass
                } else {
                    Look::Take
                }
            }
            _ => Look::Stale,
        });
        (tid, spread)
    }

    fn assign(&mut self, tid: u64, did: ConnId, now: Instant) {
        let (Some(t), Some(d)) = (self.tasks.get_mut(&tid), self.daemons.get_mut(&did)) else {
            return;
        };
        if let Some(g) = t.group.and_then(|g| self.groups.get_mut(&g)) {
            g.spread.add(did, &d.machine);
        }
        // Both are clamped, so the deadline below cannot overflow.
        let cap = d
            .info
            .limits
            .task_timeout_ms
            .map(|ms| Duration::from_millis(clamp_timeout_ms(ms)));
        let timeout = match (t.timeout, cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        t.state = TaskState::Running {
            daemon: did,
            deadline: timeout.and_then(|t| now.checked_add(t + self.opts.slack)),
        };
        if let Some(u) = self.users.get_mut(&t.user.name) {
            u.queued = u.queued.saturating_sub(1);
            u.running += 1;
        }
        d.busy = Some(Busy {
            task: tid,
            since: now,
            started: false,
            abandoned: None,
        });
        d.assigned += 1;
        let sent = d.peer.send(Message::Task(Task {
            id: tid,
            payload: t.payload.clone(),
            timeout_ms: timeout.map(|t| t.as_millis() as u64),
            replicas: 0,
            user: t.user.name.clone(),
        }));
        if !sent {
            // The connection is gone; its Left event will remove it.
            d.leaving = true;
            d.busy = None;
            self.requeue_front(tid);
        }
    }

    /// Time-driven work: task deadlines, stuck daemons, shutdown.
    pub fn tick(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        let mut timed_out = Vec::new();
        let mut stuck = Vec::new();
        for (&did, d) in &self.daemons {
            let Some(b) = &d.busy else { continue };
            match b.abandoned {
                None => {
                    if let Some(TaskRec {
                        state:
                            TaskState::Running {
                                deadline: Some(deadline),
                                ..
                            },
                        ..
                    }) = self.tasks.get(&b.task)
                    {
                        if now >= *deadline {
                            timed_out.push(b.task);
                        }
                    }
                }
                Some(at) if now.saturating_duration_since(at) > self.opts.slack * 4 => {
                    stuck.push(did)
                }
                Some(_) => {}
            }
        }
        for tid in &timed_out {
            let daemon = match self.tasks.get(tid).map(|t| &t.state) {
                Some(TaskState::Running { daemon, .. }) => self.daemons.get(daemon),
                _ => None,
            };
            if let Some(d) = daemon {
                self.records.failed(&d.key);
            }
        }
        for tid in timed_out {
            tracing::warn!(
                task = tid,
                "task ran past its timeout without its daemon reporting; stopping it"
            );
            self.stop_task(
                tid,
                FailKind::Timeout,
                "the task ran past its timeout and was stopped".into(),
                now,
            );
        }
        for did in stuck {
            let reason = "did not stop a cancelled task";
            tracing::warn!(daemon = did, reason, "dropping daemon");
            if let Some(d) = self.daemons.get(&did) {
                d.peer.close(reason);
            }
            self.left(did, reason);
        }
        if let Some((deadline, reason)) = &self.shutdown {
            let running = self
                .tasks
                .values()
                .any(|t| matches!(t.state, TaskState::Running { .. }));
            if !running || now >= *deadline {
                let reason = reason.clone();
                self.finish_shutdown(now, &reason);
            }
        }
    }

    fn begin_shutdown(&mut self, now: Instant, reason: String) {
        if self.shutdown.is_some() {
            return;
        }
        tracing::info!(%reason, queued = self.queue.len(), "shutting down");
        let queued: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.state, TaskState::Queued))
            .map(|(id, _)| *id)
            .collect();
        for tid in queued {
            self.resolve(
                tid,
                Outcome::Failed {
                    kind: FailKind::Shutdown,
                    message: "the host shut down".into(),
                },
                vec![],
            );
        }
        self.queue.clear();
        self.shutdown = Some((now + self.opts.shutdown_grace, reason));
    }

    fn finish_shutdown(&mut self, now: Instant, reason: &str) {
        let running: Vec<u64> = self.tasks.keys().copied().collect();
        for tid in running {
            self.stop_task(tid, FailKind::Shutdown, "the host shut down".into(), now);
        }
        for d in self.daemons.values() {
            d.peer.send(Message::Shutdown {
                reason: reason.to_string(),
            });
            d.peer.close(reason);
        }
        for c in self.clients.values() {
            c.peer.send(Message::Shutdown {
                reason: reason.to_string(),
            });
            c.peer.close(reason);
        }
        self.done = true;
    }

    pub fn info(&self, now: Instant) -> InfoReport {
        let mut daemons: Vec<DaemonRow> = self
            .daemons
            .iter()
            .map(|(&id, d)| DaemonRow {
                id,
                name: d.info.name.clone(),
                address: d.info.address.clone(),
                tasks_done: d.tasks_done,
                busy_ms: d
                    .busy
                    .as_ref()
                    .map(|b| now.duration_since(b.since).as_millis() as u64),
                connected_ms: now.duration_since(d.joined).as_millis() as u64,
                limits: d.info.limits.clone(),
                version: d.info.caps.hako_version.clone(),
                failures: self.records.get(&d.key).failures,
                disagreements: self.records.get(&d.key).disagreements,
            })
            .collect();
        daemons.sort_by_key(|r| r.id);
        InfoReport {
            connections: self.daemons.len() as u64,
            cumulative: self.cumulative,
            awaiting: self
                .tasks
                .values()
                .filter(|t| matches!(t.state, TaskState::Queued))
                .count() as u64,
            executing: self
                .tasks
                .values()
                .filter(|t| matches!(t.state, TaskState::Running { .. }))
                .count() as u64,
            completed: self.completed,
            daemons,
        }
    }
}

impl Dispatcher {
    /// The tally of user `name`, created if new.
    fn tally(&mut self, name: &str) -> &mut UserRec {
        if !self.users.contains_key(name) {
            // A task of a user with no connection left: cannot happen (its
            // tasks are cancelled when it leaves), but keep counts exact.
            self.users.insert(
                name.to_string(),
                UserRec {
                    user: User::shared(name),
                    connections: 0,
                    queued: 0,
                    running: 0,
                    done: 0,
                    gone: None,
                },
            );
        }
        self.users.get_mut(name).expect("inserted above")
    }

    fn user_joined(&mut self, user: &Arc<User>) {
        let u = self.tally(&user.name);
        u.user = user.clone();
        u.connections += 1;
        if let Some(at) = u.gone.take() {
            self.gone.remove(&at);
        }
    }

    /// One of its connections left; remembered a while once all have.
    fn user_left(&mut self, name: &str) {
        let seq = self.gone_seq;
        let Some(u) = self.users.get_mut(name) else {
            return;
        };
        u.connections = u.connections.saturating_sub(1);
        if u.connections > 0 || u.gone.is_some() {
            return;
        }
        u.gone = Some(seq);
        self.gone_seq += 1;
        self.gone.insert(seq, name.to_string());
        while self.gone.len() > GONE_USERS {
            let Some((_, old)) = self.gone.pop_first() else {
                break;
            };
            self.users.remove(&old);
        }
    }

    /// The throughput bucket `at` falls in, counted from `started`.
    fn bucket_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs() / THROUGHPUT_BUCKET_S
    }

    /// Count one resolution in the current bucket, clearing the buckets
    /// skipped since the last one (at most the ring's length: O(1)).
    fn count_resolved(&mut self) {
        let b = self.bucket_of(self.clock);
        let n = THROUGHPUT_BUCKETS as u64;
        if b > self.bucket {
            for i in (self.bucket + 1)..=b.min(self.bucket + n) {
                self.throughput[(i % n) as usize] = 0;
            }
            self.bucket = b;
        }
        self.throughput[(self.bucket % n) as usize] += 1;
    }

    /// Resolutions per bucket over the last [`THROUGHPUT_BUCKETS`] ending
    /// with the bucket `now` falls in, oldest first.
    fn throughput_at(&self, now: Instant) -> Vec<u64> {
        let n = THROUGHPUT_BUCKETS as u64;
        let cur = self.bucket_of(now).max(self.bucket);
        (0..n)
            .map(|back| {
                let b = cur.checked_sub(n - 1 - back);
                match b {
                    Some(b) if b <= self.bucket && self.bucket - b < n => {
                        self.throughput[(b % n) as usize]
                    }
                    _ => 0,
                }
            })
            .collect()
    }

    /// The status page's view of the host now.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let info = self.info(now);
        let mut daemons: Vec<DaemonStatus> = self
            .daemons
            .iter()
            .map(|(&id, d)| DaemonStatus {
                id,
                name: d.info.name.clone(),
                volunteer: d.info.volunteer.name.clone(),
                token_fingerprint: d.info.volunteer.fingerprint.clone(),
                address: d.info.address.clone(),
                connected_s: now.duration_since(d.joined).as_secs(),
                busy: d.busy.is_some(),
                tasks_done: d.tasks_done,
                failures: self.records.get(&d.key).failures,
                disagreements: self.records.get(&d.key).disagreements,
            })
            .collect();
        daemons.sort_by_key(|d| d.id);
        let mut users: Vec<UserStatus> = self
            .users
            .iter()
            .map(|(name, u)| UserStatus {
                name: name.clone(),
                weight: u.user.weight,
                connected: u.connections > 0,
                queued: u.queued,
                running: u.running,
                done: u.done,
            })
            .collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot {
            at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            uptime_s: now.saturating_duration_since(self.started).as_secs(),
            queued: info.awaiting,
            running: info.executing,
            completed: info.completed,
            daemons,
            users,
            throughput: self.throughput_at(now),
            throughput_bucket_s: THROUGHPUT_BUCKET_S,
        }
    }
}

/// Failures charged to the daemon's record: every failure it reports (or
/// sends a value the verifier refuses) but those the host or the client
/// caused. R errors are results, not failures.
fn daemons_fault(kind: FailKind) -> bool {
    !matches!(
        kind,
        FailKind::Cancelled | FailKind::Shutdown | FailKind::Rejected
    )
}

/// What a task counts against its client's `max_queued`.
fn cost(t: &Task) -> u64 {
    t.payload.len() as u64 + TASK_OVERHEAD
}

/// The refusal of a task no connected daemon reads.
fn too_large(len: usize, max: u64) -> String {
    format!("task too large for every daemon: {len} bytes, the largest a daemon accepts is {max}")
}

/// Text from a peer, safe to show: control characters (terminal escapes)
/// replaced, at most 200 characters.
fn printable(s: &str) -> String {
    s.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Start the dispatcher task. The returned future resolves when a shutdown
/// has completed.
pub fn start(opts: Options) -> (Handle, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = Handle {
        tx,
        next: Arc::new(AtomicU64::new(1)),
    };
    let task = tokio::spawn(async move {
        let mut d = Dispatcher::new(opts);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !d.done() {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => {
                        d.handle(ev, Instant::now());
                        // Take whatever else is ready before yielding.
                        while !d.done() {
                            match rx.try_recv() {
                                Ok(ev) => d.handle(ev, Instant::now()),
                                Err(_) => break,
                            }
                        }
                    }
                    None => d.handle(Event::Shutdown { reason: "no more handles".into() }, Instant::now()),
                },
                _ = tick.tick() => d.tick(Instant::now()),
            }
        }
    });
    (handle, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Fake {
        got: Mutex<Vec<Message>>,
        closed: Mutex<Option<String>>,
        unread: AtomicU64,
    }

    impl Peer for Fake {
        fn send(&self, m: Message) -> bool {
            self.got.lock().unwrap().push(m);
            self.closed.lock().unwrap().is_none()
        }
        fn close(&self, reason: &str) {
            *self.closed.lock().unwrap() = Some(reason.into());
        }
        fn unread(&self) -> u64 {
            self.unread.load(Ordering::Relaxed)
        }
    }

    impl Fake {
        fn take(&self) -> Vec<Message> {
            std::mem::take(&mut *self.got.lock().unwrap())
        }
        fn tasks(&self) -> Vec<u64> {
            self.take()
                .into_iter()
                .filter_map(|m| match m {
                    Message::Task(t) => Some(t.id),
                    _ => None,
                })
                .collect()
        }
        fn results(&self) -> Vec<(u64, Outcome)> {
            self.take()
                .into_iter()
                .filter_map(|m| match m {
                    Message::Result(r) => Some((r.id, r.outcome)),
                    _ => None,
                })
                .collect()
        }
    }

    struct World {
        d: Dispatcher,
        now: Instant,
    }

    fn info(max_tasks: Option<u64>, timeout_ms: Option<u64>) -> DaemonInfo {
        DaemonInfo {
            name: "d".into(),
            address: "test".into(),
            limits: DaemonLimits {
                max_tasks,
                task_timeout_ms: timeout_ms,
                ..Default::default()
            },
            caps: Capabilities::default(),
            volunteer: Volunteer {
                name: None,
                fingerprint: "0".repeat(16),
            },
        }
    }

    impl World {
        fn new(retries: u32) -> World {
            World {
                d: Dispatcher::new(Options {
                    retries,
                    max_payload: 100,
                    ..Options::default()
                }),
                now: Instant::now(),
            }
        }
        fn ev(&mut self, e: Event) {
            self.d.handle(e, self.now);
        }
        fn daemon(&mut self, id: ConnId, i: DaemonInfo) -> Arc<Fake> {
            let f = Arc::new(Fake::default());
            self.ev(Event::DaemonJoined {
                id,
                peer: f.clone(),
                info: i,
            });
            f
        }
        fn client(&mut self, id: ConnId) -> Arc<Fake> {
            let f = Arc::new(Fake::default());
            self.ev(Event::ClientJoined {
                id,
                peer: f.clone(),
                name: "c".into(),
                user: User::shared("c"),
            });
            f
        }
        fn client_as(&mut self, id: ConnId, user: Arc<User>) -> Arc<Fake> {
            let f = Arc::new(Fake::default());
            self.ev(Event::ClientJoined {
                id,
                peer: f.clone(),
                name: "c".into(),
                user,
            });
            f
        }
        fn submit(&mut self, client: ConnId, id: u64, timeout_ms: Option<u64>) {
            self.ev(Event::FromClient {
                id: client,
                msg: Message::Task(Task {
                    id,
                    payload: Bytes::from(format!("p{id}")),
                    timeout_ms,
                    replicas: 0,
                    user: String::new(),
                }),
            });
        }
        fn started(&mut self, daemon: ConnId, tid: u64) {
            self.ev(Event::FromDaemon {
                id: daemon,
                msg: Message::Started { id: tid },
            });
        }
        fn lose(&mut self, daemon: ConnId) {
            self.ev(Event::Left {
                id: daemon,
                reason: "killed".into(),
            });
        }
        fn report(&mut self, daemon: ConnId, tid: u64, v: &str) {
            self.ev(Event::FromDaemon {
                id: daemon,
                msg: Message::Result(TaskReport {
                    id: tid,
                    outcome: value(v),
                    output: vec![],
                }),
            });
        }
    }

    /// A real R value (the host verifies what daemons send): the string `v`.
    fn value(v: &str) -> Outcome {
        let s = crate::rser::RObj::Str(vec![v.into()]);
        Outcome::Value(Bytes::from(crate::rser::serialize(&s)))
    }

    #[test]
    fn a_value_that_fails_the_verifier_is_refused_not_forwarded() {
        let mut w = World::new(1);
        let c = w.client(100);
        let a = w.daemon(1, info(None, None));
        w.submit(100, 9, None);
        assert_eq!(a.tasks(), vec![1]);
        w.started(1, 1);
        // a top-level promise (CVE-2024-27322's shape)
        let mut promise = crate::rser::serialize(&crate::rser::RObj::Null);
        promise.truncate(promise.len() - 4);
        promise.extend_from_slice(&[0, 0, 4, 5, 0, 0, 0, 253, 0, 0, 0, 252, 0, 0, 0, 254]);
        w.ev(Event::FromDaemon {
            id: 1,
            msg: Message::Result(TaskReport {
                id: 1,
                outcome: Outcome::Error(Bytes::from(promise)),
                output: vec![],
            }),
        });
        match &c.results()[..] {
            [(
                9,
                Outcome::Failed {
                    kind: FailKind::Refused,
                    message,
                },
            )] => {
                assert!(
                    message.starts_with("result refused: a promise"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        // the daemon is idle again and serves the next task
        w.submit(100, 10, None);
        assert_eq!(a.tasks(), vec![2]);
        w.report(1, 2, "ok");
        assert_eq!(c.results(), vec![(10, value("ok"))]);
    }

    fn named(name: &str) -> DaemonInfo {
        DaemonInfo {
            name: name.into(),
            ..info(None, None)
        }
    }

    impl World {
        fn submit_k(&mut self, client: ConnId, id: u64, k: u32) {
            self.ev(Event::FromClient {
                id: client,
                msg: Message::Task(Task {
                    id,
                    payload: Bytes::from(format!("p{id}")),
                    timeout_ms: None,
                    replicas: k,
                    user: String::new(),
                }),
            });
        }
        fn record(&self, name: &str) -> (u64, u64) {
            let r = self.d.records.get(&DaemonKey {
                name: name.into(),
                volunteer: None,
            });
            (r.failures, r.disagreements)
        }
    }

    #[test]
    fn two_agreeing_replicas_give_one_result_from_two_daemons() {
        let mut w = World::new(1);
        let c = w.client(100);
        let a = w.daemon(1, named("a"));
        let b = w.daemon(2, named("b"));
        w.submit_k(100, 7, 2);
        let (ta, tb) = (a.tasks(), b.tasks());
        assert_eq!((ta.len(), tb.len()), (1, 1), "one run on each daemon");
        assert_ne!(ta, tb);
        w.report(1, ta[0], "x");
        assert!(c.results().is_empty(), "one vote is not enough");
        w.report(2, tb[0], "x");
        assert_eq!(c.results(), vec![(7, value("x"))]);
        assert_eq!(w.d.info(w.now).completed, 1);
        assert_eq!(w.record("a"), (0, 0));
    }

    #[test]
    fn a_liar_is_outvoted_and_recorded() {
        let mut w = World::new(1);
        let c = w.client(100);
        let honest = w.daemon(1, named("honest"));
        let liar = w.daemon(2, named("liar"));
        let third = w.daemon(3, named("third"));
        w.submit_k(100, 7, 2);
        let (th, tl) = (honest.tasks()[0], liar.tasks()[0]);
        assert!(third.tasks().is_empty(), "two runs for two replicas");
        w.report(2, tl, "lie");
        w.report(1, th, "truth");
        assert!(c.results().is_empty(), "a split vote resolves nothing");
        // The third run goes to the daemon that has had none of this task.
        assert!(honest.tasks().is_empty() && liar.tasks().is_empty());
        let t3 = third.tasks();
        assert_eq!(t3.len(), 1);
        w.report(3, t3[0], "truth");
        assert_eq!(c.results(), vec![(7, value("truth"))]);
        assert_eq!(w.record("liar"), (0, 1));
        assert_eq!(w.record("honest"), (0, 0));
        let row = w.d.snapshot(w.now);
        let liar_row = row.daemons.iter().find(|d| d.name == "liar").unwrap();
        assert_eq!(liar_row.disagreements, 1);
        // the record outlives the connection
        w.lose(2);
        let _liar = w.daemon(4, named("liar"));
        assert_eq!(w.record("liar"), (0, 1));
    }

    /// Before, the tie-breaking run waited for a daemon that would never
    /// come (a local host's daemons all had one): the task hung.
    #[test]
    fn a_tie_no_connected_daemon_can_break_is_a_disagreement_at_once() {
        let mut w = World::new(1);
        let c = w.client(100);
        let a = w.daemon(1, named("a"));
        let b = w.daemon(2, named("b\x1b[2J"));
        w.submit_k(100, 7, 2);
        let (ta, tb) = (a.tasks()[0], b.tasks()[0]);
        w.report(1, ta, "one");
        w.report(2, tb, "two");
        match &c.results()[..] {
            [(
                7,
                Outcome::Failed {
                    kind: FailKind::Disagreed,
                    message,
                },
            )] => {
                assert!(message.starts_with("replicas disagree: no result had 2 identical votes of 2, 2 distinct results (no other connected daemon may run another replica): value "), "{message}");
                assert!(
                    message.contains(" from a") && message.contains(" from b?[2J"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(w.record("a"), (0, 0), "nobody is known to be wrong");
        let i = w.d.info(w.now);
        assert_eq!((i.awaiting, i.executing, i.completed), (0, 0, 1));
        // A failed run, though, waits for a daemon like any task.
        w.submit_k(100, 8, 2);
        let (ta, tb) = (a.tasks()[0], b.tasks()[0]);
        w.ev(Event::FromDaemon {
            id: 1,
            msg: Message::Result(TaskReport {
                id: ta,
                outcome: Outcome::Failed {
                    kind: FailKind::MemoryLimit,
                    message: "out of memory".into(),
                },
                output: vec![],
            }),
        });
        w.report(2, tb, "v");
        assert!(c.take().is_empty());
        let d3 = w.daemon(3, named("c"));
        let t3 = d3.tasks();
        assert_eq!(t3.len(), 1);
        w.report(3, t3[0], "v");
        assert_eq!(c.results(), vec![(8, value("v"))]);
    }

    #[test]
    fn a_vote_that_cannot_agree_resolves_to_a_disagreement() {
        let mut w = World::new(1);
        let c = w.client(100);
        let ds: Vec<_> = (1..=5)
            .map(|i| w.daemon(i, named(&format!("d{i}"))))
            .collect();
        w.submit_k(100, 7, 2);
        let mut answered = 0;
        for round in 0..4 {
            for (i, d) in ds.iter().enumerate() {
                for t in d.tasks() {
                    answered += 1;
                    w.report(i as u64 + 1, t, &format!("v{round}{i}"));
                }
            }
        }
        match &c.results()[..] {
            [(
                7,
                Outcome::Failed {
                    kind: FailKind::Disagreed,
                    message,
                },
            )] => {
                assert!(message.contains("replicas disagree"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(answered, 4, "k + EXTRA_VOTES runs at most");
    }

    #[test]
    fn a_replica_on_a_lost_daemon_runs_again_and_cancel_stops_every_run() {
        let mut w = World::new(1);
        let c = w.client(100);
        let a = w.daemon(1, named("a"));
        let b = w.daemon(2, named("b"));
        w.submit_k(100, 7, 2);
        let tb = b.tasks()[0];
        let _ = a.tasks();
        w.lose(2); // lost before it started: re-queued, no charge
        let b2 = w.daemon(3, named("b"));
        let again = b2.tasks();
        assert_eq!(again, vec![tb], "the same run goes to the new daemon");
        w.ev(Event::FromClient {
            id: 100,
            msg: Message::Cancel { id: 7 },
        });
        assert!(matches!(
            &c.results()[..],
            [(
                7,
                Outcome::Failed {
                    kind: FailKind::Cancelled,
                    ..
                }
            )]
        ));
        let cancels = |f: &Fake| {
            f.take()
                .into_iter()
                .filter(|m| matches!(m, Message::Cancel { .. }))
                .count()
        };
        assert_eq!((cancels(&a), cancels(&b2)), (1, 1));
        assert!(w.d.groups.is_empty() && w.d.tasks.is_empty());
    }

    #[test]
    fn replicas_never_share_a_connection_and_too_many_are_refused() {
        let mut w = World::new(1);
        let c = w.client(100);
        let a = w.daemon(1, named("a"));
        w.submit_k(100, 7, 2);
        assert_eq!(a.tasks().len(), 1);
        let t = w.d.tasks.keys().copied().max().unwrap();
        let first = *w.d.tasks.keys().min().unwrap();
        w.report(1, first, "x");
        assert!(
            a.tasks().is_empty(),
            "the second run never goes to the same connection"
        );
        assert!(matches!(w.d.tasks[&t].state, TaskState::Queued));
        w.submit_k(100, 8, replicas::MAX_REPLICAS + 1);
        assert!(matches!(
            &c.results()[..],
            [(
                8,
                Outcome::Failed {
                    kind: FailKind::Rejected,
                    ..
                }
            )]
        ));
    }

    #[test]
    fn fifo_to_idle_daemons_only() {
        let mut w = World::new(2);
        let c = w.client(100);
        for i in 1..=5 {
            w.submit(100, i, None);
        }
        let a = w.daemon(1, info(None, None));
        let b = w.daemon(2, info(None, None));
        assert_eq!(a.tasks(), vec![1]);
        assert_eq!(b.tasks(), vec![2]);
        w.report(2, 2, "two");
        assert_eq!(b.tasks(), vec![3]);
        assert!(a.tasks().is_empty(), "a busy daemon gets nothing");
        w.report(1, 1, "one");
        assert_eq!(a.tasks(), vec![4]);
        assert_eq!(c.results(), vec![(2, value("two")), (1, value("one"))]);
        let i = w.d.info(w.now);
        assert_eq!(
            (i.connections, i.awaiting, i.executing, i.completed),
            (2, 1, 2, 2)
        );
    }

    #[test]
    fn a_lost_daemon_s_task_runs_elsewhere_and_late_results_are_dropped() {
        let mut w = World::new(1);
        let c = w.client(100);
        let a = w.daemon(1, info(None, None));
        w.submit(100, 7, None);
        assert_eq!(a.tasks(), vec![1]);
        w.started(1, 1);
        w.lose(1);
        let b = w.daemon(2, info(None, None));
        assert_eq!(b.tasks(), vec![1], "re-queued and given to the next daemon");
        // The presumed-dead daemon's result arrives late: ignored.
        w.report(1, 1, "late");
        w.report(2, 1, "ok");
        assert_eq!(c.results(), vec![(7, value("ok"))]);
    }

    #[test]
    fn a_task_that_kills_two_daemons_is_crashed_and_kills_no_third() {
        let mut w = World::new(1);
        let c = w.client(100);
        w.submit(100, 8, None);
        let a = w.daemon(1, info(None, None));
        assert_eq!(a.tasks(), vec![1]);
        w.started(1, 1);
        w.lose(1);
        let b = w.daemon(2, info(None, None));
        assert_eq!(b.tasks(), vec![1], "retried once elsewhere");
        w.started(2, 1);
        w.lose(2);
        let d3 = w.daemon(3, info(None, None));
        assert!(d3.tasks().is_empty(), "not sent to a third daemon");
        match &c.results()[..] {
            [(
                8,
                Outcome::Failed {
                    kind: FailKind::Crashed,
                    message,
                },
            )] => assert!(message.contains("crashed its daemon"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn peer_text_in_a_crash_message_is_printable() {
        let mut w = World::new(0);
        let c = w.client(100);
        let mut i = info(None, None);
        i.name = "evil\x1b]52;c;aGk=\x07".into();
        let _a = w.daemon(1, i);
        w.submit(100, 1, None);
        w.started(1, 1);
        w.ev(Event::Left {
            id: 1,
            reason: "closed by peer \x1b[2J".into(),
        });
        match &c.results()[..] {
            [(1, Outcome::Failed { message, .. })] => {
                assert!(!message.chars().any(char::is_control), "{message:?}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn daemons_lost_before_the_task_started_are_not_charged() {
        let mut w = World::new(1);
        let c = w.client(100);
        w.submit(100, 1, None);
        // Daemons whose connections died before they began: blips.
        for id in 1..=MAX_BLIPS as u64 {
            let d = w.daemon(id, info(None, None));
            assert_eq!(d.tasks(), vec![1]);
            w.lose(id);
        }
        assert!(c.results().is_empty(), "blips cost the task nothing");
        // A real crash still gets its retry.
        let d = w.daemon(50, info(None, None));
        assert_eq!(d.tasks(), vec![1]);
        w.started(50, 1);
        w.lose(50);
        let d = w.daemon(51, info(None, None));
        assert_eq!(d.tasks(), vec![1]);
        w.report(51, 1, "ok");
        assert_eq!(c.results(), vec![(1, value("ok"))]);
        // Endless blips are bounded: the task then resolves as lost.
        w.ev(Event::FromDaemon {
            id: 51,
            msg: Message::Bye {
                reason: "done".into(),
            },
        });
        w.lose(51);
        w.submit(100, 2, None);
        for id in 60..=(60 + MAX_BLIPS as u64) {
            let d = w.daemon(id, info(None, None));
            assert_eq!(d.tasks(), vec![2]);
            w.lose(id);
        }
        assert!(matches!(
            c.results()[..],
            [(
                2,
                Outcome::Failed {
                    kind: FailKind::ConnectionReset,
                    ..
                }
            )]
        ));
    }

    #[test]
    fn without_retry_a_crash_is_an_error_at_once() {
        let mut w = World::new(0);
        let c = w.client(100);
        let _a = w.daemon(1, info(None, None));
        w.submit(100, 1, None);
        w.started(1, 1);
        w.lose(1);
        assert!(matches!(
            c.results()[..],
            [(
                1,
                Outcome::Failed {
                    kind: FailKind::Crashed,
                    ..
                }
            )]
        ));
    }

    #[test]
    fn huge_timeouts_are_clamped_and_do_not_overflow() {
        let mut w = World::new(1);
        let _c = w.client(100);
        let a = w.daemon(1, info(None, Some(u64::MAX)));
        w.submit(100, 1, Some(u64::MAX));
        match &a.take()[..] {
            [Message::Task(t)] => {
                assert_eq!(t.timeout_ms, Some(crate::protocol::MAX_TIMEOUT_MS))
            }
            other => panic!("{other:?}"),
        }
        w.now += Duration::from_secs(3600);
        w.d.tick(w.now);
        assert_eq!(w.d.info(w.now).executing, 1);
    }

    #[test]
    fn a_client_that_does_not_read_gets_refusals_not_memory() {
        let mut w = World::new(1);
        let c = w.client(100);
        let a = w.daemon(1, info(None, None));
        w.submit(100, 1, None);
        assert_eq!(a.tasks(), vec![1]);
        c.unread.store(w.d.opts.max_unread + 1, Ordering::Relaxed);
        w.submit(100, 2, None);
        match &c.results()[..] {
            [(
                2,
                Outcome::Failed {
                    kind: FailKind::Rejected,
                    message,
                },
            )] => assert!(message.contains("too many unread results"), "{message}"),
            other => panic!("{other:?}"),
        }
        // Its running task still completes; once read, tasks are taken again.
        w.report(1, 1, "v");
        assert_eq!(c.results(), vec![(1, value("v"))]);
        c.unread.store(0, Ordering::Relaxed);
        w.submit(100, 3, None);
        assert_eq!(a.tasks(), vec![2]);
        // Far past the bound, more messages end the connection instead.
        c.unread
            .store(2 * w.d.opts.max_unread + 1, Ordering::Relaxed);
        w.ev(Event::FromClient {
            id: 100,
            msg: Message::Status,
        });
        assert!(c.closed.lock().unwrap().is_some());
        assert!(c.take().is_empty());
    }

    #[test]
    fn everywhere_code_kept_is_bounded() {
        let mut w = World::new(1);
        w.d.opts.max_everywhere = 10;
        let c = w.client(100);
        let send = |w: &mut World, id: u64, n: usize| {
            w.ev(Event::FromClient {
                id: 100,
                msg: Message::Everywhere(Everywhere {
                    id,
                    payload: Bytes::from(vec![b'x'; n]),
                }),
            })
        };
        send(&mut w, 1, 6);
        send(&mut w, 2, 6);
        send(&mut w, 3, 4);
        let got = c.take();
        assert_eq!(got[0], Message::EverywhereAck { id: 1, daemons: 0 });
        assert!(
            matches!(&got[1], Message::Result(TaskReport { id: 2, outcome: Outcome::Failed { kind: FailKind::Rejected, message }, .. }) if message.contains("everywhere() refused")),
            "{got:?}"
        );
        assert_eq!(got[2], Message::EverywhereAck { id: 3, daemons: 0 });
        let d = w.daemon(1, info(None, None));
        assert_eq!(d.take().len(), 2, "only the kept ones reach a new daemon");
        // Empty ones are bounded in number.
        w.d.opts.max_everywhere = u64::MAX;
        for id in 0..crate::worker::MAX_EVERYWHERE as u64 {
            send(&mut w, 100 + id, 0);
        }
        let refused = c
            .take()
            .iter()
            .filter(|m| matches!(m, Message::Result(_)))
            .count();
        assert_eq!(refused, 2);
    }

    #[test]
    fn cancel_queued_and_running() {
        let mut w = World::new(2);
        let c = w.client(100);
        let a = w.daemon(1, info(None, None));
        w.submit(100, 1, None);
        w.submit(100, 2, None);
        assert_eq!(a.tasks(), vec![1]);
        w.ev(Event::FromClient {
            id: 100,
            msg: Message::Cancel { id: 2 },
        });
        w.ev(Event::FromClient {
            id: 100,
            msg: Message::Cancel { id: 1 },
        });
        assert!(a.take().contains(&Message::Cancel { id: 1 }));
        let r = c.results();
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|(_, o)| matches!(
            o,
            Outcome::Failed {
                kind: FailKind::Cancelled,
                ..
            }
        )));
        // The daemon reports the interrupted task: dropped, and it is idle again.
        w.submit(100, 3, None);
        assert!(a.tasks().is_empty());
        w.report(1, 1, "interrupted");
        assert_eq!(a.tasks(), vec![3]);
        assert!(c.results().is_empty());
    }

    #[test]
    fn the_host_backstops_timeouts_and_drops_stuck_daemons() {
        let mut w = World::new(2);
        let c = w.client(100);
        let a = w.daemon(1, info(None, Some(1000)));
        w.submit(100, 1, Some(60_000));
        match &a.take()[..] {
            [Message::Task(t)] => assert_eq!(t.timeout_ms, Some(1000), "the daemon's cap wins"),
            other => panic!("{other:?}"),
        }
        w.now += Duration::from_secs(7);
        w.d.tick(w.now);
        assert!(matches!(
            c.results()[..],
            [(
                1,
                Outcome::Failed {
                    kind: FailKind::Timeout,
                    ..
                }
            )]
        ));
        assert!(a.take().contains(&Message::Cancel { id: 1 }));
        w.now += Duration::from_secs(30);
        w.d.tick(w.now);
        assert!(a.closed.lock().unwrap().is_some());
        assert_eq!(w.d.info(w.now).connections, 0);
    }

    #[test]
    fn everywhere_reaches_current_and_later_daemons() {
        let mut w = World::new(2);
        let c = w.client(100);
        let a = w.daemon(1, info(None, None));
        w.ev(Event::FromClient {
            id: 100,
            msg: Message::Everywhere(Everywhere {
                id: 9,
                payload: Bytes::from_static(b"e"),
            }),
        });
        assert_eq!(c.take(), vec![Message::EverywhereAck { id: 9, daemons: 1 }]);
        assert!(matches!(&a.take()[..], [Message::Everywhere(_)]));
        w.submit(100, 1, None);
        let b = w.daemon(2, info(None, None));
        let got = b.take();
        assert!(matches!(&got[..], [Message::Everywhere(_)]), "{got:?}");
    }

    /// Each daemon's everywhere() outcome reaches the client as a result of
    /// the client's id (verified like any value); a daemon lost before it
    /// reported is reported as such; a daemon that joined later owes
    /// nobody; an outcome for code never sent closes the daemon.
    #[test]
    fn everywhere_outcomes_are_forwarded_per_daemon() {
        let mut w = World::new(2);
        let c = w.client(100);
        let a = w.daemon(1, info(None, None));
        let b = w.daemon(2, info(None, None));
        w.ev(Event::FromClient {
            id: 100,
            msg: Message::Everywhere(Everywhere {
                id: 9,
                payload: Bytes::from_static(b"e"),
            }),
        });
        assert_eq!(c.take(), vec![Message::EverywhereAck { id: 9, daemons: 2 }]);
        let sent = a.take();
        let [Message::Everywhere(e)] = &sent[..] else {
            panic!("{sent:?}")
        };
        b.take();
        let done = |id, outcome| {
            Message::EverywhereDone(TaskReport {
                id,
                outcome,
                output: vec![],
            })
        };
        w.ev(Event::FromDaemon {
            id: 1,
            msg: done(e.id, value("ok")),
        });
        assert_eq!(c.results(), vec![(9, value("ok"))]);
        // Not R's serialization: refused by the verifier, not forwarded.
        let bad = Outcome::Error(Bytes::from_static(b"junk"));
        w.lose(2);
        let got = c.results();
        assert!(
            matches!(&got[..], [(9, Outcome::Failed { kind: FailKind::ConnectionReset, message })] if message.contains("before it reported")),
            "{got:?}"
        );
        let late = w.daemon(3, info(None, None));
        assert_eq!(late.take().len(), 1);
        w.ev(Event::FromDaemon {
            id: 3,
            msg: done(e.id, bad.clone()),
        });
        assert!(c.take().is_empty(), "a later daemon's outcome is nobody's");
        w.ev(Event::FromDaemon {
            id: 1,
            msg: done(e.id, bad),
        });
        assert!(
            c.take().is_empty(),
            "a second outcome of the same code is dropped"
        );
        w.ev(Event::FromDaemon {
            id: 1,
            msg: done(7, value("x")),
        });
        assert!(
            a.closed.lock().unwrap().is_some(),
            "an outcome for code never sent is a violation"
        );
    }

    #[test]
    fn max_tasks_bye_and_protocol_violations() {
        let mut w = World::new(2);
        let c = w.client(100);
        let a = w.daemon(1, info(Some(1), None));
        w.submit(100, 1, None);
        w.submit(100, 2, None);
        assert_eq!(a.tasks(), vec![1]);
        w.report(1, 1, "v");
        assert!(a.tasks().is_empty(), "max_tasks reached");
        let b = w.daemon(2, info(None, None));
        assert_eq!(b.tasks(), vec![2]);
        // Bye while running (even after Started): re-queued, not charged.
        w.started(2, 2);
        w.ev(Event::FromDaemon {
            id: 2,
            msg: Message::Bye {
                reason: "wall".into(),
            },
        });
        let d3 = w.daemon(3, info(None, None));
        assert_eq!(d3.tasks(), vec![2]);
        // A result for a task it does not run closes the daemon.
        w.report(3, 99, "bogus");
        assert!(d3.closed.lock().unwrap().is_some());
        w.ev(Event::Left {
            id: 3,
            reason: "closed".into(),
        });
        let d4 = w.daemon(4, info(None, None));
        assert_eq!(d4.tasks(), vec![2]);
        w.report(4, 2, "ok");
        assert_eq!(c.results(), vec![(1, value("v")), (2, value("ok"))]);
    }

    fn sized(bytes: Option<u64>) -> DaemonInfo {
        let mut i = info(None, None);
        i.limits.max_task_bytes = bytes;
        i
    }

    fn submit_bytes(w: &mut World, id: u64, n: usize) {
        w.ev(Event::FromClient {
            id: 100,
            msg: Message::Task(Task {
                id,
                payload: Bytes::from(vec![b'x'; n]),
                timeout_ms: None,
                replicas: 0,
                user: String::new(),
            }),
        });
    }

    fn refused(c: &Fake) -> Vec<(u64, String)> {
        c.results()
            .into_iter()
            .map(|(id, o)| match o {
                Outcome::Failed {
                    kind: FailKind::Rejected,
                    message,
                } => (id, message),
                other => panic!("task {id}: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_task_no_daemon_reads_waits_without_daemons_and_is_refused_with_them() {
        let mut w = World::new(1);
        let c = w.client(100);
        // No daemon yet: it waits for one that may take it.
        submit_bytes(&mut w, 1, 50);
        submit_bytes(&mut w, 2, 5);
        assert!(c.take().is_empty());
        // Only a small daemon came: the large task is refused, the small runs.
        let a = w.daemon(1, sized(Some(10)));
        assert_eq!(a.tasks(), vec![2]);
        assert_eq!(
            refused(&c),
            vec![(
                1,
                "task too large for every daemon: 50 bytes, the largest a daemon accepts is 10"
                    .into()
            )]
        );
        // With daemons connected, a task none reads is refused at once.
        submit_bytes(&mut w, 3, 11);
        assert_eq!(refused(&c).len(), 1);
        submit_bytes(&mut w, 4, 10);
        w.report(1, 2, "ok");
        assert_eq!(a.tasks(), vec![3]);
        assert_eq!(c.results(), vec![(2, value("ok"))]);
        // The daemon lives on: it never received what it could not read.
        assert!(a.closed.lock().unwrap().is_none());
    }

    #[test]
    fn a_task_only_a_busy_big_daemon_takes_does_not_block_the_queue() {
        let mut w = World::new(1);
        let c = w.client(100);
        let big = w.daemon(1, sized(None));
        submit_bytes(&mut w, 1, 5);
        assert_eq!(big.tasks(), vec![1]);
        let small = w.daemon(2, sized(Some(10)));
        submit_bytes(&mut w, 2, 50); // waits for the big daemon
        submit_bytes(&mut w, 3, 5);
        submit_bytes(&mut w, 4, 5);
        assert_eq!(small.tasks(), vec![3], "the small daemon passes task 2");
        w.report(2, 3, "three");
        assert_eq!(small.tasks(), vec![4]);
        w.report(1, 1, "one");
        assert_eq!(big.tasks(), vec![2], "the big daemon takes the large one");
        // A task too large for the small one is re-queued when the big one is
        // lost, and refused since nothing left can read it.
        w.started(1, 2);
        w.lose(1);
        let got = c.results();
        assert_eq!(got[..2], [(3, value("three")), (1, value("one"))]);
        assert!(
            matches!(&got[2], (2, Outcome::Failed { kind: FailKind::Rejected, message }) if message.contains("largest a daemon accepts is 10")),
            "{got:?}"
        );
        assert_eq!(got.len(), 3);
        assert!(small.tasks().is_empty());
    }

    #[test]
    fn idle_small_daemons_take_the_small_tasks_behind_large_ones() {
        let mut w = World::new(1);
        let c = w.client(100);
        let big = w.daemon(1, sized(None));
        submit_bytes(&mut w, 1, 5);
        assert_eq!(big.tasks(), vec![1]);
        let a = w.daemon(2, sized(Some(10)));
        let b = w.daemon(3, sized(Some(10)));
        let tiny = w.daemon(4, sized(Some(1)));
        for (id, n) in [(2, 50), (3, 50), (4, 5), (5, 5), (6, 5)] {
            submit_bytes(&mut w, id, n);
        }
        assert_eq!((a.tasks(), b.tasks()), (vec![4], vec![5]));
        assert!(tiny.tasks().is_empty(), "nothing it reads");
        w.report(2, 4, "v");
        assert_eq!(a.tasks(), vec![6]);
        w.report(1, 1, "v");
        assert_eq!(big.tasks(), vec![2], "the oldest large one");
        assert_eq!(c.results().len(), 2);
    }

    #[test]
    fn a_client_s_queued_bytes_are_bounded_and_refused_at_once() {
        let mut w = World::new(1);
        w.d.opts.max_queued = 3 * (TASK_OVERHEAD + 2);
        let c = w.client(100);
        let other = w.client(200);
        for id in 1..=4 {
            w.submit(100, id, None);
        }
        assert_eq!(
            refused(&c),
            vec![(
                4,
                "too many queued tasks (0 MiB): wait for results before submitting more".into()
            )]
        );
        // Another client has its own allowance.
        w.submit(200, 1, None);
        assert!(other.take().is_empty());
        // Running tasks count until their results come.
        let a = w.daemon(1, info(None, None));
        assert_eq!(a.tasks(), vec![1]);
        w.submit(100, 5, None);
        assert_eq!(refused(&c).len(), 1);
        w.report(1, 1, "v");
        assert_eq!(c.results(), vec![(1, value("v"))]);
        w.submit(100, 5, None);
        assert!(c.take().is_empty(), "room again after a result");
        // Cancelled tasks give their room back too.
        w.ev(Event::FromClient {
            id: 100,
            msg: Message::Cancel { id: 5 },
        });
        assert_eq!(c.results().len(), 1);
        w.submit(100, 6, None);
        assert!(c.take().is_empty());
        // A client with nothing pending may submit one task past the bound.
        w.d.opts.max_queued = 0;
        let lone = w.client(300);
        w.ev(Event::FromClient {
            id: 300,
            msg: Message::Task(Task {
                id: 1,
                payload: Bytes::from_static(b"p"),
                timeout_ms: None,
                replicas: 0,
                user: String::new(),
            }),
        });
        assert!(lone.take().is_empty());
    }

    #[test]
    fn ten_thousand_small_tasks_are_within_the_default_bound() {
        let mut w = World::new(1);
        w.d.opts.max_queued = Options::default().max_queued;
        let c = w.client(100);
        for id in 1..=10_000 {
            w.submit(100, id, None);
        }
        assert!(c.take().is_empty(), "none refused");
        assert_eq!(w.d.info(w.now).awaiting, 10_000);
    }

    fn user(name: &str, weight: u32, max_in_flight: Option<u64>) -> Arc<User> {
        Arc::new(User {
            name: name.into(),
            weight,
            max_in_flight,
        })
    }

    /// User a's backlog and b's single task, one daemon: the tasks the
    /// daemon runs until b's.
    fn backlog_then_one(schedule: Policy, backlog: u64) -> Vec<u64> {
        let mut w = World::new(1);
        w.d.opts.schedule = schedule;
        w.d.queue = Fair::new(schedule);
        let _a = w.client_as(100, user("a", 1, None));
        let _b = w.client_as(200, user("b", 1, None));
        let d = w.daemon(1, info(None, None));
        for id in 1..=backlog {
            w.submit(100, id, None);
        }
        assert_eq!(d.tasks(), vec![1]);
        w.submit(200, 1, None);
        // Host task ids: a's are 1..=backlog, b's is backlog + 1.
        let mut order = vec![1];
        let mut running = 1;
        while running != backlog + 1 {
            w.report(1, running, "v");
            match &d.tasks()[..] {
                [next] => running = *next,
                other => panic!("{other:?}"),
            }
            order.push(running);
        }
        order
    }

    #[test]
    fn a_backlog_does_not_delay_another_user_s_task_beyond_one_dispatch() {
        // a's task 1 was running when b's came: b's ties with a's next
        // (both a turn behind), the older goes first.
        let order = backlog_then_one(Policy::Fair, 100_000);
        assert_eq!(order, vec![1, 2, 100_001]);
    }

    #[test]
    fn under_fifo_the_single_task_waits_for_the_backlog() {
        let order = backlog_then_one(Policy::Fifo, 50);
        assert_eq!(order, (1..=51).collect::<Vec<_>>());
    }

    #[test]
    fn weights_two_to_one_give_a_two_to_one_share_fifo_within_each() {
        let mut w = World::new(1);
        let _h = w.client_as(100, user("heavy", 2, None));
        let _l = w.client_as(200, user("light", 1, None));
        // Interleaved submissions: host ids odd are heavy's, even light's.
        for id in 1..=1000 {
            w.submit(100, id, None);
            w.submit(200, id, None);
        }
        let d = w.daemon(1, info(None, None));
        let mut got = d.tasks();
        for _ in 0..299 {
            let last = *got.last().unwrap();
            w.report(1, last, "v");
            got.extend(d.tasks());
        }
        assert_eq!(got.len(), 300);
        let heavy: Vec<u64> = got.iter().copied().filter(|t| t % 2 == 1).collect();
        let light: Vec<u64> = got.iter().copied().filter(|t| t % 2 == 0).collect();
        assert_eq!((heavy.len(), light.len()), (200, 100));
        assert!(heavy.windows(2).all(|p| p[0] < p[1]), "FIFO within a user");
        assert!(light.windows(2).all(|p| p[0] < p[1]), "FIFO within a user");
    }

    #[test]
    fn a_lost_daemon_s_task_goes_to_the_front_of_its_user_s_queue() {
        let mut w = World::new(1);
        let _a = w.client_as(100, user("a", 1, None));
        let _b = w.client_as(200, user("b", 1, None));
        for id in 1..=3 {
            w.submit(100, id, None);
        }
        let x = w.daemon(1, info(None, None));
        assert_eq!(x.tasks(), vec![1]);
        w.submit(200, 1, None); // host id 4
        w.lose(1);
        let y = w.daemon(2, info(None, None));
        let mut got = y.tasks();
        for _ in 0..3 {
            let last = *got.last().unwrap();
            w.report(2, last, "v");
            got.extend(y.tasks());
        }
        // a's re-queued task first among a's; b's turn comes at once after.
        let a: Vec<u64> = got.iter().copied().filter(|&t| t != 4).collect();
        assert_eq!(a, vec![1, 2, 3]);
        assert!(got[..2].contains(&4), "{got:?}");
    }

    #[test]
    fn a_small_daemon_takes_the_next_user_s_task_it_can_read() {
        let mut w = World::new(1);
        let a = w.client_as(100, user("a", 1, None));
        let _b = w.client_as(200, user("b", 1, None));
        let big = w.daemon(1, sized(None));
        submit_bytes(&mut w, 1, 5); // a's, runs on big
        assert_eq!(big.tasks(), vec![1]);
        submit_bytes(&mut w, 2, 50); // a's, only big reads it
        w.ev(Event::FromClient {
            id: 200,
            msg: Message::Task(Task {
                id: 1,
                payload: Bytes::from_static(b"small"),
                timeout_ms: None,
                replicas: 0,
                user: String::new(),
            }),
        });
        let small = w.daemon(2, sized(Some(10)));
        assert_eq!(small.tasks(), vec![3], "b's task passes a's large one");
        w.report(1, 1, "v");
        assert_eq!(big.tasks(), vec![2]);
        assert_eq!(a.results().len(), 1);
    }

    #[test]
    fn max_in_flight_counts_a_user_s_connections_together_and_refuses_at_once() {
        let mut w = World::new(1);
        let u = user("a", 1, Some(2));
        let c1 = w.client_as(100, u.clone());
        let c2 = w.client_as(200, u);
        let other = w.client_as(300, user("b", 1, None));
        let d = w.daemon(1, info(None, None));
        w.submit(100, 1, None); // runs
        w.submit(200, 1, None); // queued
        w.submit(200, 2, None);
        w.submit(100, 2, None);
        let want = "too many tasks in flight: user a may have at most 2 tasks queued or running at once: wait for results before submitting more";
        assert_eq!(refused(&c2), vec![(2, want.to_string())]);
        assert_eq!(refused(&c1), vec![(2, want.to_string())]);
        // Other users are not affected.
        w.submit(300, 1, None);
        assert!(other.take().is_empty());
        // A result makes room.
        assert_eq!(d.tasks(), vec![1]);
        w.report(1, 1, "v");
        assert_eq!(c1.results(), vec![(1, value("v"))]);
        w.submit(100, 3, None);
        assert!(c1.take().is_empty());
        let s = w.d.snapshot(w.now);
        let a = s.users.iter().find(|u| u.name == "a").unwrap();
        assert_eq!((a.queued, a.running, a.done), (1, 1, 1));
    }

    #[test]
    fn the_snapshot_counts_users_and_throughput() {
        let mut w = World::new(1);
        let start = w.d.started;
        w.now = start;
        let a = w.client_as(100, user("a", 3, None));
        let _b = w.client_as(200, user("b", 1, None));
        let d = w.daemon(1, info(None, None));
        for id in 1..=3 {
            w.submit(100, id, None);
        }
        w.submit(200, 1, None);
        let s = w.d.snapshot(w.now);
        let rows: Vec<_> = s
            .users
            .iter()
            .map(|u| {
                (
                    u.name.as_str(),
                    u.weight,
                    u.connected,
                    u.queued,
                    u.running,
                    u.done,
                )
            })
            .collect();
        assert_eq!(rows, vec![("a", 3, true, 2, 1, 0), ("b", 1, true, 1, 0, 0)]);
        assert_eq!(d.tasks(), vec![1]);
        w.report(1, 1, "v");
        w.now += Duration::from_secs(25);
        let next = d.tasks()[0];
        w.report(1, next, "v");
        assert_eq!(a.results().len(), 2);
        // a leaves: its queued task is cancelled, its row stays with its done count.
        w.lose(100);
        let s = w.d.snapshot(w.now);
        let a_row = s.users.iter().find(|u| u.name == "a").unwrap();
        assert!(!a_row.connected);
        assert_eq!((a_row.queued, a_row.running, a_row.done), (0, 0, 2));
        assert_eq!(s.uptime_s, 25);
        assert_eq!(s.throughput.len(), THROUGHPUT_BUCKETS);
        // One resolution at 0 s, one at 25 s, the cancellation at 25 s.
        assert_eq!(s.throughput[THROUGHPUT_BUCKETS - 3..], [1, 0, 2]);
        // Ten minutes later they have scrolled out.
        let later = w.d.snapshot(w.now + Duration::from_secs(600));
        assert_eq!(later.throughput.iter().sum::<u64>(), 0);
        // Gone users are remembered, boundedly.
        for i in 0..GONE_USERS as u64 + 5 {
            w.client_as(1000 + i, user(&format!("u{i}"), 1, None));
            w.lose(1000 + i);
        }
        let s = w.d.snapshot(w.now);
        assert_eq!(
            s.users.len(),
            GONE_USERS + 1,
            "the connected b and the last 1,000"
        );
        assert!(s.users.iter().all(|u| u.name != "a" && u.name != "u0"));
        assert!(s.users.iter().any(|u| u.name == "u1004"));
    }

    #[test]
    fn rejects_large_and_duplicate_tasks_and_shuts_down() {
        let mut w = World::new(2);
        let c = w.client(100);
        w.ev(Event::FromClient {
            id: 100,
            msg: Message::Task(Task {
                id: 1,
                payload: Bytes::from(vec![0u8; 101]),
                timeout_ms: None,
                replicas: 0,
                user: String::new(),
            }),
        });
        w.submit(100, 2, None);
        w.submit(100, 2, None);
        let a = w.daemon(1, info(None, None));
        w.submit(100, 3, None);
        let r = c.results();
        assert!(matches!(
            r[..],
            [
                (
                    1,
                    Outcome::Failed {
                        kind: FailKind::Rejected,
                        ..
                    }
                ),
                (
                    2,
                    Outcome::Failed {
                        kind: FailKind::Rejected,
                        ..
                    }
                )
            ]
        ));
        assert_eq!(a.tasks(), vec![1]);
        w.ev(Event::Shutdown {
            reason: "bye".into(),
        });
        // Queued task 3 resolves at once; running task 2 may finish.
        assert!(matches!(
            c.results()[..],
            [(
                3,
                Outcome::Failed {
                    kind: FailKind::Shutdown,
                    ..
                }
            )]
        ));
        assert!(!w.d.done());
        w.report(1, 1, "done");
        assert_eq!(c.results(), vec![(2, value("done"))]);
        assert!(w.d.done());
        assert!(a
            .take()
            .iter()
            .any(|m| matches!(m, Message::Shutdown { .. })));
    }
}
