//! What a volunteer's machine sees of a daemon: its sandbox runs at the
//! lowest CPU priority (so lending never slows the owner's own work) unless
//! `--normal-priority`, and every task leaves one line in the daemon's log.

use crate::common::{code, spawn_logged, Host};
use std::time::Duration;

/// The nice value of the daemon's sandbox thread (named `hako-daemon`).
fn sandbox_nice(pid: u32) -> i64 {
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = e.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == "hako-daemon" {
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
            // Fields after "(comm) ": state is field 3, nice field 19.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            return rest.split(' ').nth(16).unwrap().parse().unwrap();
        }
    }
    panic!("no hako-daemon thread in process {pid}");
}

#[test]
fn a_daemon_lends_at_the_lowest_priority_and_logs_each_task() {
    let mut host = Host::start("volunteer", &["--listen", "127.0.0.1:0"]);
    let (mut low, low_log) = spawn_logged(&mut host.daemon_cmd(&[]), "volunteer-low");
    let (mut normal, _) = spawn_logged(
        &mut host.daemon_cmd(&["--normal-priority"]),
        "volunteer-normal",
    );
    host.wait_connections(2);
    for id in 1..=4 {
        host.submit(
            id,
            code(if id == 4 {
                "stop('no')"
            } else {
                "{ Sys.sleep(0.2); 1 + 1 }"
            }),
            0,
        );
    }
    for _ in 0..4 {
        host.result(Duration::from_secs(60));
    }
    assert_eq!(sandbox_nice(low.id()), 19);
    assert_eq!(sandbox_nice(normal.id()), 0);
    let log = std::fs::read_to_string(&low_log).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" task ")).collect();
    assert!(!lines.is_empty(), "{log}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" in ") && l.contains(" s, memory ") && l.contains(" MiB")),
        "{log}"
    );
    // The submitter is named (the link's user is `local`); one job has no
    // job number.
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" task ") && l.contains(" (user local): ") && !l.contains("job ")),
        "{log}"
    );
    host.close_link();
    let _ = low.kill();
    let _ = normal.kill();
    let _ = low.wait();
    let _ = normal.wait();
}
