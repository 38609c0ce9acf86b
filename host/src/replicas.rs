//! Results checked by redundancy (`.replicas = k`): a task runs on k
//! distinct daemons and resolves only when k of them return the same
//! bytes, so one lying or broken daemon cannot hand a client a wrong value.
//! This module is the pure part: the vote (outcomes in, a decision out),
//! where a replica may run, and each daemon's record. The dispatcher owns
//! the runs (queueing, timeouts, lost daemons) and asks here.
//!
//! The rules (`host/PROTOCOL.md`, *Replicas*):
//! - Every outcome has passed `verify::checked` before it votes. A value and
//!   an R error are votes, compared by the SHA-256 of their serialization
//!   (the writer's R version in its header left out, so daemons of
//!   different webR releases can agree).
//! - The first result to reach k identical votes resolves the task, with
//!   the output of its first vote; daemons that voted otherwise are
//!   recorded one disagreement each.
//! - Once every run has reported without k identical votes, one more run
//!   starts, as long as some result could still reach k within
//!   `k + EXTRA_VOTES` votes; otherwise the task resolves to
//!   `Failed{Disagreed}` naming each distinct result (a hash prefix) and
//!   the daemons that gave it.
//! - A failed run (timeout, crash, a refused value, a daemon's refusal) is
//!   no vote: it is re-run elsewhere, at most k times; the next failure
//!   resolves the task to it.

use crate::protocol::{FailKind, Outcome, OutputChunk};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;

/// Most replicas a task may ask for.
pub const MAX_REPLICAS: u32 = 5;
/// Votes beyond k a disagreement may ask for before it is final.
pub const EXTRA_VOTES: u32 = 2;
/// Daemon records kept (those of connected daemons are never dropped).
pub const MAX_RECORDS: usize = 4096;

/// A daemon as its record knows it: the name it gave and the volunteer its
/// token names. Kept across reconnections, so reconnecting does not wash
/// a record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DaemonKey {
    pub name: String,
    pub volunteer: Option<String>,
}

impl fmt::Display for DaemonKey {
    /// Peer text: control characters replaced, bounded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clean = |s: &str| -> String {
            s.chars()
                .take(64)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        };
        match &self.volunteer {
            Some(v) => write!(f, "{} ({})", clean(&self.name), clean(v)),
            None => write!(f, "{}", clean(&self.name)),
        }
    }
}

/// Who cast a vote: the connection (a daemon never votes twice on a task)
/// and its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    pub conn: u64,
    pub key: DaemonKey,
}

/// What the dispatcher does next with a replicated task.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Runs are still out: wait for them.
    Wait,
    /// Queue one more run, on a daemon that has not had one.
    More,
    /// Resolve the task with this outcome (an agreed one, or the failure
    /// or disagreement that ends it); `losers` voted otherwise.
    Resolve {
        outcome: Outcome,
        output: Vec<OutputChunk>,
        losers: Vec<DaemonKey>,
    },
}

struct Ballot {
    hash: [u8; 32],
    outcome: Outcome,
    output: Vec<OutputChunk>,
    voters: Vec<Voter>,
}

/// The votes of one replicated task.
pub struct Vote {
    k: u32,
    /// Runs queued or running, as the dispatcher started them.
    pending: u32,
    ballots: Vec<Ballot>,
    failures: u32,
}

impl Vote {
    /// A vote of `k` (2..=MAX_REPLICAS) replicas; the dispatcher starts k
    /// runs.
    pub fn new(k: u32) -> Vote {
        Vote {
            k,
            pending: k,
            ballots: Vec::new(),
            failures: 0,
        }
    }

    /// Votes for more than one result are in: another run breaks a tie.
    pub fn split(&self) -> bool {
        self.ballots.len() > 1
    }

    fn votes(&self) -> u32 {
        self.ballots.iter().map(|b| b.voters.len() as u32).sum()
    }

    /// A run's verified value or R error.
    pub fn vote(&mut self, voter: Voter, outcome: Outcome, output: Vec<OutputChunk>) -> Decision {
        self.pending = self.pending.saturating_sub(1);
        let Some(hash) = hash_of(&outcome) else {
            // Not a vote: a failure.
            return match outcome {
                Outcome::Failed { kind, message } => self.failed(kind, message),
                _ => unreachable!("hash_of hashes values and errors"),
            };
        };
        match self.ballots.iter_mut().find(|b| b.hash == hash) {
            Some(b) => b.voters.push(voter),
            None => self.ballots.push(Ballot {
                hash,
                outcome,
                output,
                voters: vec![voter],
            }),
        }
        self.decide()
    }

    /// A run that gave no vote (the daemon failed it, or the host stopped
    /// it past its timeout).
    pub fn fail(&mut self, kind: FailKind, message: String) -> Decision {
        self.pending = self.pending.saturating_sub(1);
        self.failed(kind, message)
    }

    fn failed(&mut self, kind: FailKind, message: String) -> Decision {
        self.failures += 1;
        if self.failures > self.k {
            return Decision::Resolve {
                outcome: Outcome::Failed {
                    kind,
                    message: format!(
                        "{} runs of the replicated task failed; the last: {message}",
                        self.failures
                    ),
                },
                output: vec![],
                losers: vec![],
            };
        }
        self.pending += 1;
        Decision::More
    }

    fn decide(&mut self) -> Decision {
        if let Some(i) = self
            .ballots
            .iter()
            .position(|b| b.voters.len() as u32 >= self.k)
        {
            let won = self.ballots.swap_remove(i);
            let losers = self
                .ballots
                .iter()
                .flat_map(|b| b.voters.iter().map(|v| v.key.clone()))
                .collect();
            return Decision::Resolve {
                outcome: won.outcome,
                output: won.output,
                losers,
            };
        }
        if self.pending > 0 {
            return Decision::Wait;
        }
        let best = self
            .ballots
            .iter()
            .map(|b| b.voters.len() as u32)
            .max()
            .unwrap_or(0);
        let left = (self.k + EXTRA_VOTES).saturating_sub(self.votes());
        if best + left >= self.k {
            self.pending += 1;
            return Decision::More;
        }
        self.disagreed("")
    }

    /// Give up: no result had k identical votes (`why`, when not empty,
    /// says why no more are asked for). The task resolves to an error that
    /// says what disagreed.
    pub fn disagreed(&self, why: &str) -> Decision {
        let mut ballots: Vec<&Ballot> = self.ballots.iter().collect();
        ballots.sort_by_key(|b| std::cmp::Reverse(b.voters.len()));
        let results = ballots
            .iter()
            .map(|b| {
                let what = if matches!(b.outcome, Outcome::Error(_)) {
                    "R error"
                } else {
                    "value"
                };
                let who: Vec<String> = b.voters.iter().map(|v| v.key.to_string()).collect();
                format!(
                    "{what} {} from {}",
                    hex::encode(&b.hash[..4]),
                    who.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" ({why})")
        };
        Decision::Resolve {
            outcome: Outcome::Failed {
                kind: FailKind::Disagreed,
                message: format!(
                    "replicas disagree: no result had {} identical votes of {}, {} distinct results{why}: {results}",
                    self.k,
                    self.votes(),
                    self.ballots.len()
                ),
            },
            output: vec![],
            losers: vec![],
        }
    }
}

/// The digest a vote is compared by: a value and an R error never match,
/// and the serialization's writer version is left out. `None` for a
/// failure (no vote).
pub fn hash_of(outcome: &Outcome) -> Option<[u8; 32]> {
    let (tag, bytes) = match outcome {
        Outcome::Value(b) => (b'v', b),
        Outcome::Error(b) => (b'e', b),
        Outcome::Failed { .. } => return None,
    };
    let mut h = Sha256::new();
    h.update([tag]);
    // "X\n", the format version, then the writer's R version (4 bytes).
    if bytes.len() >= 14 && bytes.starts_with(b"X\n") {
        h.update(&bytes[..6]);
        h.update([0u8; 4]);
        h.update(&bytes[10..]);
    } else {
        h.update(bytes);
    }
    Some(h.finalize().into())
}

/// The machine a daemon runs on, as far as the host can tell: its IP
/// address (an IPv6 /64); the host's own for in-process daemons; and where
/// the address says nothing (loopback, where every daemon is 127.0.0.1),
/// its volunteer or else its name (the jobs of one `--jobs N` daemon share
/// a name).
pub fn machine_of(address: &str, name: &str, volunteer: Option<&str>) -> String {
    if address == "local" {
        return "local".into();
    }
    match address.parse::<std::net::SocketAddr>().map(|a| a.ip()) {
        Ok(ip) if !ip.is_loopback() && !ip.is_unspecified() => match ip {
            std::net::IpAddr::V4(v4) => format!("ip {v4}"),
            std::net::IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("ip {:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        _ => match volunteer {
            Some(v) => format!("volunteer {v}"),
            None => format!("name {name}"),
        },
    }
}

/// Where a replicated task's runs went: never twice to one connection,
/// and to another machine as long as a connected one has had none.
#[derive(Default, Debug)]
pub struct Spread {
    conns: Vec<u64>,
    machines: Vec<String>,
}

impl Spread {
    /// A run of the task was given to `conn` on `machine`.
    pub fn add(&mut self, conn: u64, machine: &str) {
        self.conns.push(conn);
        if !self.machines.iter().any(|m| m == machine) {
            self.machines.push(machine.to_string());
        }
    }

    /// May `conn` on `machine` take a run? Not if it had one; on a machine
    /// that had one only when every machine with an open daemon
    /// (`open_machines`) had one too.
    pub fn admits<'a>(
        &self,
        conn: u64,
        machine: &str,
        mut open_machines: impl Iterator<Item = &'a str>,
    ) -> bool {
        if self.conns.contains(&conn) {
            return false;
        }
        !self.machines.iter().any(|m| m == machine)
            || open_machines.all(|o| self.machines.iter().any(|m| m == o))
    }
}

/// What a daemon did, over all its connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Runs it failed (its failures, or the host's timeouts and losses of
    /// it while running), R errors not included.
    pub failures: u64,
    /// Replicas where it voted against the agreed result.
    pub disagreements: u64,
}

struct Entry {
    rec: Record,
    /// Connections of this daemon now: a connected daemon's record stays.
    live: u32,
    touched: u64,
}

/// Every daemon's record, by [`DaemonKey`], bounded: past `max`, the
/// record least recently touched of a daemon not connected goes.
pub struct Records {
    map: HashMap<DaemonKey, Entry>,
    clock: u64,
    max: usize,
}

impl Records {
    pub fn new(max: usize) -> Records {
        Records {
            map: HashMap::new(),
            clock: 0,
            max,
        }
    }

    fn entry(&mut self, key: &DaemonKey) -> &mut Entry {
        self.clock += 1;
        if !self.map.contains_key(key) && self.map.len() >= self.max {
            let old = self
                .map
                .iter()
                .filter(|(_, e)| e.live == 0)
                .min_by_key(|(_, e)| e.touched)
                .map(|(k, _)| k.clone());
            if let Some(old) = old {
                self.map.remove(&old);
            }
        }
        let e = self.map.entry(key.clone()).or_insert(Entry {
            rec: Record::default(),
            live: 0,
            touched: 0,
        });
        e.touched = self.clock;
        e
    }

    pub fn joined(&mut self, key: &DaemonKey) {
        self.entry(key).live += 1;
    }

    pub fn left(&mut self, key: &DaemonKey) {
        let e = self.entry(key);
        e.live = e.live.saturating_sub(1);
    }

    pub fn failed(&mut self, key: &DaemonKey) {
        self.entry(key).rec.failures += 1;
    }

    pub fn disagreed(&mut self, key: &DaemonKey) {
        self.entry(key).rec.disagreements += 1;
    }

    pub fn get(&self, key: &DaemonKey) -> Record {
        self.map.get(key).map(|e| e.rec).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn key(n: &str) -> DaemonKey {
        DaemonKey {
            name: n.into(),
            volunteer: None,
        }
    }

    fn voter(conn: u64, n: &str) -> Voter {
        Voter { conn, key: key(n) }
    }

    fn value(v: &str) -> Outcome {
        let s = crate::rser::RObj::Str(vec![v.into()]);
        Outcome::Value(Bytes::from(crate::rser::serialize(&s)))
    }

    fn resolved(d: Decision) -> (Outcome, Vec<DaemonKey>) {
        match d {
            Decision::Resolve {
                outcome, losers, ..
            } => (outcome, losers),
            other => panic!("not resolved: {other:?}"),
        }
    }

    #[test]
    fn two_agreeing_votes_resolve_with_the_first_one_s_output() {
        let mut v = Vote::new(2);
        let out = vec![OutputChunk {
            stream: crate::protocol::Stream::Stdout,
            bytes: Bytes::from_static(b"first"),
        }];
        assert_eq!(
            v.vote(voter(1, "a"), value("x"), out.clone()),
            Decision::Wait
        );
        match v.vote(voter(2, "b"), value("x"), vec![]) {
            Decision::Resolve {
                outcome,
                output,
                losers,
            } => {
                assert_eq!(outcome, value("x"));
                assert_eq!(output, out);
                assert!(losers.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_liar_in_a_three_way_vote_loses_and_is_named() {
        let mut v = Vote::new(2);
        assert_eq!(
            v.vote(voter(1, "honest"), value("x"), vec![]),
            Decision::Wait
        );
        assert_eq!(
            v.vote(voter(2, "liar"), value("lie"), vec![]),
            Decision::More
        );
        let (o, losers) = resolved(v.vote(voter(3, "other"), value("x"), vec![]));
        assert_eq!(o, value("x"));
        assert_eq!(losers, vec![key("liar")]);
    }

    #[test]
    fn a_value_and_an_error_of_the_same_bytes_disagree() {
        let Outcome::Value(b) = value("x") else {
            unreachable!()
        };
        assert_ne!(
            hash_of(&Outcome::Value(b.clone())),
            hash_of(&Outcome::Error(b))
        );
    }

    #[test]
    fn the_writer_s_r_version_does_not_count() {
        let Outcome::Value(b) = value("x") else {
            unreachable!()
        };
        let mut other = b.to_vec();
        other[6..10].copy_from_slice(&0x0004_0400u32.to_be_bytes());
        assert_eq!(
            hash_of(&Outcome::Value(b.clone())),
            hash_of(&Outcome::Value(Bytes::from(other.clone())))
        );
        // but any other byte does
        *other.last_mut().unwrap() ^= 1;
        assert_ne!(
            hash_of(&Outcome::Value(b)),
            hash_of(&Outcome::Value(Bytes::from(other)))
        );
    }

    #[test]
    fn the_cap_ends_a_disagreement_with_an_error_that_names_it() {
        let mut v = Vote::new(2);
        assert_eq!(v.vote(voter(1, "a"), value("1"), vec![]), Decision::Wait);
        assert_eq!(v.vote(voter(2, "b"), value("2"), vec![]), Decision::More);
        assert_eq!(v.vote(voter(3, "c"), value("3"), vec![]), Decision::More);
        let (o, losers) = resolved(v.vote(voter(4, "d\x1b[2J"), value("4"), vec![]));
        assert!(losers.is_empty(), "nobody is known to be wrong");
        match o {
            Outcome::Failed {
                kind: FailKind::Disagreed,
                message,
            } => {
                assert!(
                    message.starts_with(
                        "replicas disagree: no result had 2 identical votes of 4, 4 distinct results"
                    ),
                    "{message}"
                );
                let h = hex::encode(&hash_of(&value("3")).unwrap()[..4]);
                assert!(message.contains(&format!("value {h} from c")), "{message}");
                assert!(!message.contains('\x1b'), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_disagreement_stops_once_no_result_can_reach_k() {
        // k = 3 within 5 votes: after three distinct results one could
        // still reach 3 (1 + 2 votes left); after four it cannot (1 + 1).
        let mut v = Vote::new(3);
        assert_eq!(v.vote(voter(1, "a"), value("1"), vec![]), Decision::Wait);
        assert_eq!(v.vote(voter(2, "b"), value("2"), vec![]), Decision::Wait);
        assert_eq!(v.vote(voter(3, "c"), value("3"), vec![]), Decision::More);
        let (o, _) = resolved(v.vote(voter(4, "d"), value("4"), vec![]));
        assert!(matches!(
            o,
            Outcome::Failed {
                kind: FailKind::Disagreed,
                ..
            }
        ));
    }

    #[test]
    fn k_of_three_may_win_late() {
        let mut v = Vote::new(3);
        v.vote(voter(1, "a"), value("x"), vec![]);
        v.vote(voter(2, "b"), value("y"), vec![]);
        assert_eq!(v.vote(voter(3, "c"), value("x"), vec![]), Decision::More);
        assert_eq!(v.vote(voter(4, "d"), value("y"), vec![]), Decision::More);
        let (o, mut losers) = resolved(v.vote(voter(5, "e"), value("x"), vec![]));
        assert_eq!(o, value("x"));
        losers.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(losers, vec![key("b"), key("d")]);
    }

    #[test]
    fn failures_are_no_votes_and_are_rerun_at_most_k_times() {
        let mut v = Vote::new(2);
        assert_eq!(v.fail(FailKind::Crashed, "boom".into()), Decision::More);
        assert_eq!(v.vote(voter(2, "b"), value("x"), vec![]), Decision::Wait);
        // a refused value is a failure too
        let refused = Outcome::Failed {
            kind: FailKind::Refused,
            message: "result refused: junk".into(),
        };
        assert_eq!(v.vote(voter(3, "c"), refused, vec![]), Decision::More);
        let (o, _) = resolved(v.fail(FailKind::Timeout, "too slow".into()));
        match o {
            Outcome::Failed {
                kind: FailKind::Timeout,
                message,
            } => assert_eq!(
                message,
                "3 runs of the replicated task failed; the last: too slow"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_replacement_run_can_still_agree() {
        let mut v = Vote::new(2);
        assert_eq!(v.fail(FailKind::Crashed, "lost".into()), Decision::More);
        assert_eq!(v.vote(voter(2, "b"), value("x"), vec![]), Decision::Wait);
        let (o, _) = resolved(v.vote(voter(3, "c"), value("x"), vec![]));
        assert_eq!(o, value("x"));
    }

    #[test]
    fn replicas_spread_over_connections_and_machines() {
        let mut s = Spread::default();
        s.add(1, "ip 10.0.0.1");
        let open = ["ip 10.0.0.1", "ip 10.0.0.2"];
        assert!(
            !s.admits(1, "ip 10.0.0.1", open.iter().copied()),
            "same connection"
        );
        assert!(
            !s.admits(2, "ip 10.0.0.1", open.iter().copied()),
            "another machine is connected"
        );
        assert!(s.admits(3, "ip 10.0.0.2", open.iter().copied()));
        s.add(3, "ip 10.0.0.2");
        assert!(
            s.admits(2, "ip 10.0.0.1", open.iter().copied()),
            "every machine had one: any other connection"
        );
        assert!(!s.admits(3, "ip 10.0.0.2", open.iter().copied()));
    }

    #[test]
    fn machines_are_told_apart_by_address_else_by_name() {
        assert_eq!(machine_of("10.1.2.3:5000", "a", None), "ip 10.1.2.3");
        assert_eq!(machine_of("10.1.2.3:6000", "b", None), "ip 10.1.2.3");
        assert_eq!(
            machine_of("[2001:db8:1:2:3::9]:7", "a", None),
            "ip 2001:db8:1:2::/64"
        );
        assert_eq!(machine_of("127.0.0.1:5000", "a", None), "name a");
        assert_eq!(
            machine_of("127.0.0.1:5000", "a", Some("ann")),
            "volunteer ann"
        );
        assert_eq!(machine_of("local", "local-1", None), "local");
    }

    #[test]
    fn records_outlive_connections_and_are_bounded() {
        let mut r = Records::new(2);
        r.joined(&key("liar"));
        r.disagreed(&key("liar"));
        r.left(&key("liar"));
        r.joined(&key("liar"));
        assert_eq!(
            r.get(&key("liar")).disagreements,
            1,
            "reconnecting keeps it"
        );
        r.failed(&key("gone"));
        r.left(&key("gone"));
        // full: a newcomer displaces the unconnected record, never the
        // connected one
        r.failed(&key("new"));
        assert_eq!(r.get(&key("gone")), Record::default());
        assert_eq!(r.get(&key("liar")).disagreements, 1);
        assert_eq!(r.get(&key("new")).failures, 1);
    }
}
