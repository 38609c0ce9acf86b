//! What the host is doing, for people: the dispatcher's state at one
//! instant, as the status page (`/status`, `/status.json`) and `status()`
//! show it. Plain data: the dispatcher fills it, the page renders it.

// TEMPORARY while the parts that use it are wired (issue 12): remove.
#![allow(dead_code)]

use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// Milliseconds since the Unix epoch when it was taken.
    pub at_unix_ms: u64,
    /// Seconds since the host started.
    pub uptime_s: u64,
    pub queued: u64,
    pub running: u64,
    pub completed: u64,
    /// One row per daemon connection.
    pub daemons: Vec<DaemonStatus>,
    /// One row per user that has connected.
    pub users: Vec<UserStatus>,
    /// Tasks resolved in each of the last [`THROUGHPUT_BUCKETS`] intervals
    /// of [`THROUGHPUT_BUCKET_S`] seconds, oldest first; the last one is
    /// the current, partial interval.
    pub throughput: Vec<u64>,
    pub throughput_bucket_s: u64,
}

/// Ten minutes in 10-second buckets.
pub const THROUGHPUT_BUCKETS: usize = 60;
pub const THROUGHPUT_BUCKET_S: u64 = 10;

#[derive(Clone, Debug, Default, Serialize)]
pub struct DaemonStatus {
    pub id: u64,
    /// The name the daemon gave (all jobs of one `--jobs N` daemon share it).
    pub name: String,
    /// The volunteer its token names; `None`: the shared join token.
    pub volunteer: Option<String>,
    /// Public fingerprint of its token (see `users::fingerprint`).
    pub token_fingerprint: String,
    pub address: String,
    pub connected_s: u64,
    pub busy: bool,
    pub tasks_done: u64,
    /// Tasks that failed there (errors of the host's or the daemon's making,
    /// not R errors of the task).
    pub failures: u64,
    /// Replicas whose result disagreed with the agreed one.
    pub disagreements: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct UserStatus {
    pub name: String,
    pub weight: u32,
    pub connected: bool,
    pub queued: u64,
    pub running: u64,
    pub done: u64,
}
