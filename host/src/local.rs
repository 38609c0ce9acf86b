//! In-process daemons for `hako host --local N`: a [`Worker`] per daemon,
//! registered with the same dispatcher as remote daemons but without a
//! network hop in between.

use crate::dispatcher::{DaemonInfo, Event, Handle};
use crate::peer::Peer;
use crate::protocol::{DaemonLimits, Message};
use crate::whoami::capabilities;
use crate::worker::{Worker, WorkerConfig, WorkerEvent};
use hako_runtime::{Runtime, SandboxConfig};
use std::sync::Arc;

/// The dispatcher's view of an in-process daemon.
struct LocalPeer {
    worker: Arc<Worker>,
    session: u64,
}

impl Peer for LocalPeer {
    fn send(&self, m: Message) -> bool {
        match m {
            Message::Shutdown { .. } => {
                self.worker.stop();
                true
            }
            m => self.worker.deliver(self.session, m),
        }
    }
    fn close(&self, _reason: &str) {
        self.worker.stop();
    }
}

/// Start `n` in-process daemons. Blocking (sandbox creation): call from a
/// blocking thread.
pub fn start(
    runtime: &Runtime,
    n: usize,
    sandbox: &SandboxConfig,
    config: &WorkerConfig,
    handle: &Handle,
) -> anyhow::Result<Vec<Arc<Worker>>> {
    let mut workers = Vec::with_capacity(n);
    for i in 1..=n {
        let sb = runtime.sandbox(sandbox.clone())?;
        let id = handle.next_id();
        let h = handle.clone();
        let out = Arc::new(move |_session: u64, ev: WorkerEvent| match ev {
            WorkerEvent::Send(msg) => {
                h.send(Event::FromDaemon { id, msg });
            }
            WorkerEvent::Exited(exit) => {
                h.send(Event::Left {
                    id,
                    reason: exit.to_string(),
                });
            }
        });
        let name = format!("local{i}");
        let worker = Worker::start(sb, config.clone(), out, name.clone())?;
        let session = worker.new_session(None);
        handle.send(Event::DaemonJoined {
            id,
            peer: Arc::new(LocalPeer {
                worker: worker.clone(),
                session,
            }),
            info: DaemonInfo {
                name,
                address: "local".into(),
                limits: DaemonLimits {
                    memory_bytes: sandbox.memory_bytes as u64,
                    task_timeout_ms: config.task_timeout_cap.map(|t| t.as_millis() as u64),
                    max_tasks: None,
                    idle_time_ms: None,
                    wall_time_ms: None,
                    keep_state: config.keep_state,
                    max_task_bytes: None,
                },
                caps: capabilities(),
                volunteer: crate::users::Volunteer {
                    name: Some("local".into()),
                    fingerprint: String::new(),
                },
            },
        });
        workers.push(worker);
    }
    Ok(workers)
}
