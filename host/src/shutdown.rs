//! Stopping a host or daemon: the signals that ask for it, and waiting for
//! connection tasks to finish before the process exits.

use std::time::Duration;
use tokio::sync::mpsc;

/// Resolves at SIGINT or SIGTERM, naming it.
pub async fn signal() -> String {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // No signal handling: only the other ways of stopping remain.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT".into(),
        _ = term.recv() => "SIGTERM".into(),
    }
}

/// Tasks that shutdown waits for, as mini-redis does it: each holds a
/// [`Running`], a sender on a channel nothing is ever sent on, and
/// [`Tracker::wait`] returns once every one is dropped, so a task cannot be
/// forgotten on an exit path. Tasks join through an [`Enlist`], which does
/// not itself hold shutdown up: a connection enlists once it has a peer to
/// tell (a half-open one has nothing to say and is not waited for).
pub struct Tracker {
    tx: mpsc::Sender<()>,
    rx: mpsc::Receiver<()>,
}

/// Lets tasks enlist with a [`Tracker`]; see [`Enlist::enlist`].
#[derive(Clone, Debug)]
pub struct Enlist(mpsc::WeakSender<()>);

/// Held by an enlisted task until it ends.
#[derive(Debug)]
pub struct Running {
    _held: mpsc::Sender<()>,
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker::new()
    }
}

impl Tracker {
    pub fn new() -> Tracker {
        let (tx, rx) = mpsc::channel(1);
        Tracker { tx, rx }
    }

    pub fn enlister(&self) -> Enlist {
        Enlist(self.tx.downgrade())
    }

    /// Wait until every enlisted task has ended, at most `bound`: whether
    /// they all did. Once they all have, no task can enlist any more.
    pub async fn wait(self, bound: Duration) -> bool {
        let Tracker { tx, mut rx } = self;
        drop(tx);
        // Nothing is ever sent: recv() yields None once all senders are gone.
        tokio::time::timeout(bound, rx.recv()).await.is_ok()
    }
}

impl Enlist {
    /// Count this task until the returned value is dropped; None once the
    /// tracker is waiting and every enlisted task has ended.
    pub fn enlist(&self) -> Option<Running> {
        self.0.upgrade().map(|s| Running { _held: s })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_every_enlisted_task_and_no_longer() {
        let tracker = Tracker::new();
        let enlist = tracker.enlister();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let running = enlist.enlist().unwrap();
        let task = tokio::spawn(async move {
            let _running = running;
            let _ = go_rx.await;
        });
        // Not enlisted: an Enlist alone does not hold shutdown up.
        let _idle = enlist.clone();
        let waited = tokio::spawn(tracker.wait(Duration::from_secs(60)));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!waited.is_finished(), "returned while a task still ran");
        go_tx.send(()).unwrap();
        task.await.unwrap();
        assert!(waited.await.unwrap(), "the wait did not see the task end");
        assert!(enlist.enlist().is_none(), "enlisted after the wait ended");
    }

    #[tokio::test]
    async fn a_task_that_never_ends_is_waited_for_at_most_the_bound() {
        let tracker = Tracker::new();
        let _stuck = tracker.enlister().enlist().unwrap();
        assert!(!tracker.wait(Duration::from_millis(50)).await);
    }
}
