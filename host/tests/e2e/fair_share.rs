//! Fair share between users, observed in dispatch order: two named users
//! (`hako user add`) on one host and one daemon; alice queues a backlog,
//! then bob submits one task. Under `--schedule fair` (the default) bob's
//! task runs after at most a couple of alice's; under `--schedule fifo`
//! after all of them. Each task returns the daemon's clock when it ran, and
//! one daemon runs one task at a time, so the values give the order.

use crate::common::{code, token_of, user, Host, RemoteClient};
use std::time::Duration;

/// Alice's backlog.
const BACKLOG: u32 = 30;

/// `c`'s next result: (id, number).
fn ran(c: &RemoteClient) -> (u32, f64) {
    let r = c.result();
    (r.id, r.value())
}

/// How many of alice's tasks ran before bob's, with both queued before the
/// one daemon joined (so the order is the scheduler's alone).
fn alice_tasks_before_bob(schedule: &str) -> usize {
    let id = tempfile::tempdir().unwrap();
    let dir = id.path().join("identity");
    user(&dir, &["add", "alice"]);
    user(&dir, &["add", "bob"]);
    let (alice, bob) = (token_of(&dir, "alice"), token_of(&dir, "bob"));
    let d = dir.to_str().unwrap();
    let mut host = Host::start(
        &format!("fair-share-{schedule}"),
        &[
            "--identity",
            d,
            "--listen",
            "127.0.0.1:0",
            "--local",
            "0",
            "--schedule",
            schedule,
        ],
    );
    let mut a = RemoteClient::connect(&host, &alice, &format!("fair-share-{schedule}-alice"));
    let mut b = RemoteClient::connect(&host, &bob, &format!("fair-share-{schedule}-bob"));
    let when = "as.numeric(Sys.time())";
    for i in 1..=BACKLOG {
        a.submit(i, 0, code(when));
    }
    let queued =
        |n: u64| move |c: &std::collections::HashMap<String, u64>, _: &[_]| c["awaiting"] == n;
    host.wait_for(
        "alice's backlog",
        Duration::from_secs(30),
        queued(BACKLOG as u64),
    );
    b.submit(1, 0, code(when));
    host.wait_for(
        "bob's task",
        Duration::from_secs(30),
        queued(BACKLOG as u64 + 1),
    );
    host.daemon(&format!("fair-share-{schedule}-daemon"), &["--jobs", "1"]);
    let (_, bob_ran) = ran(&b);
    let mut alice_ran = Vec::new();
    for _ in 0..BACKLOG {
        alice_ran.push(ran(&a));
    }
    // FIFO within alice: her tasks ran in the order she sent them.
    let mut by_time = alice_ran.clone();
    by_time.sort_by(|x, y| x.1.total_cmp(&y.1));
    let ids: Vec<u32> = by_time.iter().map(|r| r.0).collect();
    assert_eq!(ids, (1..=BACKLOG).collect::<Vec<_>>());
    host.close_link();
    alice_ran.iter().filter(|r| r.1 < bob_ran).count()
}

#[test]
fn a_backlog_does_not_hold_up_another_user_s_task() {
    let before = alice_tasks_before_bob("fair");
    assert!(
        before <= 2,
        "bob's task waited for {before} of alice's {BACKLOG}"
    );
}

/// The same with one queue across everyone: bob waits for the whole
/// backlog (so the test above can fail).
#[test]
fn under_fifo_it_waits_for_the_whole_backlog() {
    assert_eq!(alice_tasks_before_bob("fifo"), BACKLOG as usize);
}
