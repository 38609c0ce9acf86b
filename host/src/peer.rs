//! The host's side of a connection, whatever carries it: a WebSocket to a
//! remote daemon or client, an in-process daemon, or the client link of a
//! local R session. The dispatcher, the link and the WebSocket pump all
//! speak these types, so none of them depends on another's transport.

use crate::protocol::{Message, Outcome};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The host's side of a connection: where its messages go.
pub trait Peer: Send + Sync {
    /// Queue a message; false when the peer is gone.
    fn send(&self, m: Message) -> bool;
    /// End the connection with a reason.
    fn close(&self, reason: &str);
    /// Bytes of results queued for this peer and not yet written to it: a
    /// client that never reads must not make the host hold unbounded memory.
    fn unread(&self) -> u64 {
        0
    }
}

impl Peer for OutTx {
    fn send(&self, m: Message) -> bool {
        mpsc::UnboundedSender::send(self, Out::Msg(m)).is_ok()
    }
    fn close(&self, reason: &str) {
        let _ = mpsc::UnboundedSender::send(self, Out::Close(reason.to_string()));
    }
}

/// A client's connection: results queued for it are counted until written,
/// so the dispatcher can refuse new tasks from a client that does not read.
pub struct ClientTx {
    tx: OutTx,
    unread: Arc<Unread>,
}

impl ClientTx {
    pub fn new(tx: OutTx) -> ClientTx {
        ClientTx {
            tx,
            unread: Arc::default(),
        }
    }
}

impl Peer for ClientTx {
    fn send(&self, m: Message) -> bool {
        // What the message costs the host while queued (a small overhead
        // counts too, so that even refusals cannot pile up unnoticed).
        let bytes = 64
            + match &m {
                Message::Result(r) => {
                    (match &r.outcome {
                        Outcome::Value(b) | Outcome::Error(b) => b.len(),
                        Outcome::Failed { message, .. } => message.len(),
                    }) + r.output.iter().map(|c| c.bytes.len() + 32).sum::<usize>()
                }
                Message::Info(i) => i
                    .daemons
                    .iter()
                    .map(|d| 256 + d.name.len() + d.address.len() + d.version.len())
                    .sum(),
                _ => 0,
            };
        let ticket = self.unread.ticket(bytes as u64);
        self.tx.send(Out::Counted(m, ticket)).is_ok()
    }
    fn close(&self, reason: &str) {
        Peer::close(&self.tx, reason);
    }
    fn unread(&self) -> u64 {
        self.unread.bytes()
    }
}

/// What a connection's writer is asked to do.
#[derive(Debug)]
pub enum Out {
    Msg(Message),
    /// A message counted in its peer's [`Unread`] until the ticket is
    /// dropped, once the writer has written it (or given up on it).
    Counted(Message, Ticket),
    /// Send a close frame with this reason and end the connection.
    Close(String),
}

/// Bytes of results queued for one client and not yet written to it.
#[derive(Debug, Default)]
pub struct Unread {
    bytes: AtomicU64,
    /// Freed since memory was last handed back to the system.
    freed: AtomicU64,
}

/// Once a backlog drains after this many bytes were freed, the allocator is
/// asked to return free memory to the system (glibc keeps it otherwise).
const TRIM_AFTER: u64 = 16 << 20;

impl Unread {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }
    /// Count `bytes` until the returned ticket is dropped.
    pub fn ticket(self: &Arc<Self>, bytes: u64) -> Ticket {
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        Ticket {
            bytes,
            unread: self.clone(),
        }
    }
}

/// See [`Out::Counted`].
#[derive(Debug)]
pub struct Ticket {
    bytes: u64,
    unread: Arc<Unread>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let u = &self.unread;
        let left = u.bytes.fetch_sub(self.bytes, Ordering::AcqRel) - self.bytes;
        let freed = u.freed.fetch_add(self.bytes, Ordering::AcqRel) + self.bytes;
        if left == 0 && freed >= TRIM_AFTER {
            u.freed.store(0, Ordering::Release);
            trim();
        }
    }
}

/// Hand free heap memory back to the system.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub type OutTx = mpsc::UnboundedSender<Out>;
