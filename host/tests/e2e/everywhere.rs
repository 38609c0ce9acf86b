//! everywhere(): its code runs once per daemon and what it leaves is the
//! state every reset returns to (a task's own globals still go), each
//! daemon's outcome comes back as a result of the everywhere() id, and an
//! error's side effects up to the error stay, as in mirai.

use crate::common::{code, Host};
use crate::linkframe::{self as lf, LinkIn, LinkOut};
use crate::rser;
use bytes::Bytes;
use std::time::Duration;

/// Send everywhere() code and collect its acknowledgement and the
/// per-daemon outcomes: (daemons, [(status, payload)]).
fn everywhere(host: &mut Host, id: u32, src: &str) -> (u32, Vec<(u8, Bytes)>) {
    host.send(&LinkIn::Everywhere {
        id,
        payload: Bytes::from(code(src)),
    });
    let n = match host.recv(Duration::from_secs(30)) {
        LinkOut::EverywhereAck { id: got, daemons } if got == id => daemons,
        other => panic!("{other:?}"),
    };
    let mut outcomes = Vec::new();
    while outcomes.len() < n as usize {
        let r = host.result(Duration::from_secs(60));
        assert_eq!(r.id, id, "{}", r.text());
        outcomes.push((r.status, r.payload));
    }
    (n, outcomes)
}

fn number(payload: &[u8]) -> f64 {
    rser::unserialize(payload).unwrap().as_f64().unwrap()
}

#[test]
fn everywhere_state_survives_resets_and_task_state_does_not() {
    let mut host = Host::start("ew-state", &["--no-listen", "--local", "1"]);
    host.wait_connections(1);
    let (n, out) = everywhere(&mut host, 1, "assign('ev', 41, envir = globalenv()); ev");
    assert_eq!(n, 1);
    assert_eq!(out[0].0, lf::status::VALUE);
    assert_eq!(number(&out[0].1), 41.0);
    // A task's own global, and a change to ev, go with the reset after it.
    host.submit(
        2,
        code("assign('mine', 1, envir = globalenv()); ev <<- 0; 1"),
        0,
    );
    assert_eq!(host.result(Duration::from_secs(30)).value(), 1.0);
    for i in 3..6 {
        host.submit(i, code("if (exists('mine')) -1 else ev + 1"), 0);
        assert_eq!(host.result(Duration::from_secs(30)).value(), 42.0);
    }
    // A task that ends R: the sandbox is rebuilt on the same base.
    host.submit(6, code("quit(status = 2)"), 0);
    let r = host.result(Duration::from_secs(30));
    assert_eq!(r.status, lf::status::CRASHED, "{}", r.text());
    host.submit(7, code("ev + 1"), 0);
    assert_eq!(host.result(Duration::from_secs(30)).value(), 42.0);
}

#[test]
fn everywhere_errors_come_back_per_daemon_and_their_effects_up_to_the_error_stay() {
    let mut host = Host::start("ew-errors", &["--no-listen", "--local", "2"]);
    host.wait_connections(2);
    let (n, out) = everywhere(
        &mut host,
        1,
        "assign('before', 5, envir = globalenv()); stop('nope')",
    );
    assert_eq!(n, 2);
    for (status, payload) in &out {
        assert_eq!(*status, lf::status::ERROR);
        let text = String::from_utf8_lossy(payload);
        assert!(text.contains("nope"), "{text}");
    }
    let (_, out) = everywhere(&mut host, 2, "library(NoSuchPackage)");
    assert!(out.iter().all(|(s, _)| *s == lf::status::ERROR));
    // Two slow tasks at once, one per daemon: both see `before`.
    host.submit(10, code("Sys.sleep(0.3); before + 1"), 0);
    host.submit(11, code("Sys.sleep(0.3); before + 1"), 0);
    for _ in 0..2 {
        assert_eq!(host.result(Duration::from_secs(30)).value(), 6.0);
    }
}

#[test]
fn an_everywhere_past_the_time_limit_is_a_timeout_and_what_it_did_stays() {
    let mut host = Host::start(
        "ew-timeout",
        &["--no-listen", "--local", "1", "--task-timeout", "1"],
    );
    host.wait_connections(1);
    let (_, out) = everywhere(
        &mut host,
        1,
        "assign('started', 1, envir = globalenv()); Sys.sleep(30)",
    );
    assert_eq!(out[0].0, lf::status::TIMEOUT, "{:?}", out[0].1);
    host.submit(2, code("started + 1"), 0);
    assert_eq!(host.result(Duration::from_secs(30)).value(), 2.0);
    // A crash in everywhere() code leaves nothing, and the daemon serves on.
    let (_, out) = everywhere(
        &mut host,
        3,
        "assign('gone', 1, envir = globalenv()); quit(status = 4)",
    );
    assert_eq!(out[0].0, lf::status::CRASHED);
    host.submit(4, code("if (exists('gone')) -1 else started"), 0);
    assert_eq!(host.result(Duration::from_secs(30)).value(), 1.0);
}
