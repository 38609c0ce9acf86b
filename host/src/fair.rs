//! The queue of tasks waiting for a daemon: weighted fair queuing between
//! users, FIFO within a user, so that one user's 100,000-task map cannot
//! starve another's single task.
//!
//! Tasks are not sized in advance, so each dispatch costs its user
//! `1/weight` of virtual time (self-clocked fair queuing): a user's next task
//! is tagged with the virtual time after its previous one plus `1/weight`,
//! and the user with the smallest tag goes next (ties: the older head task).
//! The system's virtual time is the largest tag dispatched so far; a user who
//! becomes active again starts from it, so an idle user banks no credit.
//!
//! A pop is O(log users) when the chosen user's first task fits the daemon;
//! tasks skipped because they are too large, and stale entries (tasks
//! resolved while queued), are scanned past, as in a plain queue.
//! [`Policy::Fifo`] keeps one queue across everyone (the order before users
//! existed).

use std::collections::{BTreeMap, HashMap, VecDeque};

/// How the queue orders users.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Weighted fair queuing between users, FIFO within a user.
    #[default]
    Fair,
    /// One queue in submission order across all users.
    Fifo,
}

/// What the caller says of a queued task when offered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Look {
    /// Dispatch it.
    Take,
    /// Leave it queued (the daemon cannot take it); look further.
    Pass,
    /// It is no longer queued (resolved meanwhile): drop the entry.
    Stale,
}

/// Virtual time in units of `1/UNIT` of a weight-1 dispatch: exact for any
/// `u32` weight, and u128 never overflows.
type VTime = u128;
const UNIT: VTime = 1 << 32;

/// Position of a user in the dispatch order: (its next tag, its head task's
/// sequence number). Unique, since sequence numbers are.
type Key = (VTime, u64);

struct UserQueue {
    /// (task id, sequence number), front first.
    tasks: VecDeque<(u64, u64)>,
    weight: u32,
    /// Virtual time its previous task finished (or it became active).
    start: VTime,
    /// Where it stands in `order`.
    key: Key,
}

impl UserQueue {
    fn tag(&self) -> VTime {
        self.start + UNIT / VTime::from(self.weight.max(1))
    }
}

pub struct Fair {
    policy: Policy,
    /// Active users (with at least one entry), by name.
    users: HashMap<String, UserQueue>,
    /// Active users in dispatch order.
    order: BTreeMap<Key, String>,
    /// The largest tag dispatched so far.
    vtime: VTime,
    /// Sequence numbers: `back` grows for new tasks, `front` shrinks for
    /// re-queued ones, so a re-queued task sorts before everything queued.
    back: u64,
    front: u64,
    len: usize,
}

impl Fair {
    pub fn new(policy: Policy) -> Fair {
        Fair {
            policy,
            users: HashMap::new(),
            order: BTreeMap::new(),
            vtime: 0,
            back: 1 << 63,
            front: (1 << 63) - 1,
            len: 0,
        }
    }

    /// Entries queued, stale ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queue task `id` of `user` behind that user's others.
    pub fn push(&mut self, user: &str, weight: u32, id: u64) {
        let seq = self.back;
        self.back += 1;
        self.insert(user, weight, id, seq, false);
    }

    /// Put task `id` back at the front of its user's queue (its daemon was
    /// lost): it goes before the user's others.
    pub fn push_front(&mut self, user: &str, weight: u32, id: u64) {
        let seq = self.front;
        self.front -= 1;
        self.insert(user, weight, id, seq, true);
    }

    fn insert(&mut self, user: &str, weight: u32, id: u64, seq: u64, front: bool) {
        let name = match self.policy {
            Policy::Fair => user,
            Policy::Fifo => "",
        };
        self.len += 1;
        let vtime = self.vtime;
        let q = match self.users.get_mut(name) {
            Some(q) => {
                q.weight = weight.max(1);
                q
            }
            None => self.users.entry(name.to_string()).or_insert(UserQueue {
                tasks: VecDeque::new(),
                weight: weight.max(1),
                // Active again: from now, not from when it last ran.
                start: vtime,
                key: (0, 0),
            }),
        };
        if front {
            q.tasks.push_front((id, seq));
        } else {
            q.tasks.push_back((id, seq));
        }
        if q.tasks.len() == 1 || front {
            self.order.remove(&q.key);
            q.key = (q.tag(), q.tasks[0].1);
            self.order.insert(q.key, name.to_string());
        }
    }

    /// The first task `look` takes, users in fair order and each user's tasks
    /// in order; entries `look` calls stale are dropped on the way.
    pub fn pop(&mut self, mut look: impl FnMut(u64) -> Look) -> Option<u64> {
        let mut cursor = self.order.keys().next().copied();
        while let Some(key) = cursor {
            let name = self.order.get(&key)?.clone();
            let q = self.users.get_mut(&name)?;
            let mut taken = None;
            let mut i = 0;
            while let Some(&(id, _)) = q.tasks.get(i) {
                match look(id) {
                    Look::Take => {
                        q.tasks.remove(i);
                        taken = Some(id);
                        break;
                    }
                    Look::Pass => i += 1,
                    Look::Stale => {
                        q.tasks.remove(i);
                        self.len -= 1;
                    }
                }
            }
            self.order.remove(&key);
            if taken.is_some() {
                self.len -= 1;
                // It was charged: the user's next task comes `1/weight` later.
                let tag = q.tag();
                q.start = tag;
                self.vtime = self.vtime.max(tag);
            }
            // Dropped stale heads can move the user later: never revisit it.
            let mut after = key;
            match q.tasks.front() {
                None => {
                    self.users.remove(&name);
                }
                Some(&(_, head)) => {
                    q.key = (q.tag(), head);
                    after = after.max(q.key);
                    self.order.insert(q.key, name);
                }
            }
            if taken.is_some() {
                return taken;
            }
            cursor = self
                .order
                .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                .next()
                .map(|(k, _)| *k);
        }
        None
    }

    /// Every queued entry (stale ones included), in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.users
            .values()
            .flat_map(|q| q.tasks.iter().map(|&(id, _)| id))
    }

    /// Forget every entry (shutdown).
    pub fn clear(&mut self) {
        self.users.clear();
        self.order.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_all(f: &mut Fair, n: usize) -> Vec<u64> {
        (0..n).filter_map(|_| f.pop(|_| Look::Take)).collect()
    }

    #[test]
    fn fifo_within_a_user() {
        let mut f = Fair::new(Policy::Fair);
        for id in 1..=5 {
            f.push("a", 1, id);
        }
        assert_eq!(take_all(&mut f, 6), vec![1, 2, 3, 4, 5]);
        assert!(f.is_empty());
    }

    #[test]
    fn a_backlog_delays_another_user_s_task_by_at_most_one_dispatch() {
        let mut f = Fair::new(Policy::Fair);
        for id in 1..=100_000 {
            f.push("a", 1, id);
        }
        // Some of the backlog already ran before b arrived.
        assert_eq!(take_all(&mut f, 3), vec![1, 2, 3]);
        f.push("b", 1, 1_000_000);
        let next = take_all(&mut f, 2);
        assert!(next.contains(&1_000_000), "{next:?}");
        // Then the two alternate: b's second task waits for one of a's.
        f.push("b", 1, 1_000_001);
        let next = take_all(&mut f, 2);
        assert!(next.contains(&1_000_001), "{next:?}");
        assert_eq!(f.len(), 100_000 - 5);
    }

    #[test]
    fn fifo_policy_keeps_one_queue() {
        let mut f = Fair::new(Policy::Fifo);
        for id in 1..=100 {
            f.push("a", 1, id);
        }
        f.push("b", 1, 1000);
        let got = take_all(&mut f, 101);
        assert_eq!(got[100], 1000, "b waits for all of a's");
    }

    #[test]
    fn weights_give_their_share_under_backlog() {
        let mut f = Fair::new(Policy::Fair);
        for id in 0..10_000 {
            f.push("heavy", 2, id);
            f.push("light", 1, 100_000 + id);
        }
        let got = take_all(&mut f, 3000);
        let heavy = got.iter().filter(|&&id| id < 100_000).count();
        assert_eq!((heavy, 3000 - heavy), (2000, 1000));
        // And FIFO within each.
        let h: Vec<u64> = got.iter().copied().filter(|&id| id < 100_000).collect();
        assert_eq!(h, (0..2000).collect::<Vec<_>>());
    }

    #[test]
    fn an_idle_user_banks_no_credit() {
        let mut f = Fair::new(Policy::Fair);
        // b ran once long ago, then a ran alone for a long time.
        f.push("b", 1, 1);
        assert_eq!(take_all(&mut f, 1), vec![1]);
        for id in 100..1100 {
            f.push("a", 1, id);
        }
        assert_eq!(take_all(&mut f, 500).len(), 500);
        // b returns with a burst: it shares from now on, it does not get
        // the 500 dispatches it missed.
        for id in 2..100 {
            f.push("b", 1, id);
        }
        let got = take_all(&mut f, 20);
        let b = got.iter().filter(|&&id| id < 100).count();
        assert!((9..=11).contains(&b), "{got:?}");
    }

    #[test]
    fn requeued_tasks_go_to_the_front_of_their_user() {
        let mut f = Fair::new(Policy::Fair);
        for id in 1..=3 {
            f.push("a", 1, id);
        }
        assert_eq!(take_all(&mut f, 1), vec![1]);
        f.push_front("a", 1, 1);
        assert_eq!(take_all(&mut f, 3), vec![1, 2, 3]);
        // Also when the user had nothing else queued, and under FIFO.
        f.push_front("a", 1, 9);
        assert_eq!(take_all(&mut f, 1), vec![9]);
        let mut g = Fair::new(Policy::Fifo);
        g.push("a", 1, 1);
        g.push("b", 1, 2);
        g.push_front("b", 1, 3);
        assert_eq!(take_all(&mut g, 3), vec![3, 1, 2]);
    }

    #[test]
    fn passed_tasks_do_not_block_those_behind_and_stale_ones_are_dropped() {
        let mut f = Fair::new(Policy::Fair);
        // a: 1 big, 2 small, 3 stale; b: 10 big.
        f.push("a", 1, 1);
        f.push("a", 1, 2);
        f.push("a", 1, 3);
        f.push("b", 1, 10);
        let small = |id: u64| match id {
            1 | 10 => Look::Pass,
            3 => Look::Stale,
            _ => Look::Take,
        };
        assert_eq!(f.pop(small), Some(2));
        assert_eq!(f.pop(small), None, "3 was stale, the rest too big");
        assert_eq!(f.len(), 2);
        let mut ids: Vec<u64> = f.ids().collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 10]);
        // A big daemon takes them, fairly: b has not run yet.
        assert_eq!(take_all(&mut f, 3), vec![10, 1]);
        // A user whose entries are all stale disappears.
        f.push("c", 1, 20);
        assert_eq!(f.pop(|_| Look::Stale), None);
        assert!(f.is_empty());
        assert!(f.users.is_empty() && f.order.is_empty());
    }

    #[test]
    fn many_users_take_turns() {
        let mut f = Fair::new(Policy::Fair);
        for u in 0..100u64 {
            for t in 0..10 {
                f.push(&format!("u{u}"), 1, u * 1000 + t);
            }
        }
        let got = take_all(&mut f, 100);
        let mut users: Vec<u64> = got.iter().map(|id| id / 1000).collect();
        users.sort_unstable();
        users.dedup();
        assert_eq!(users.len(), 100, "each user once per round");
    }
}
