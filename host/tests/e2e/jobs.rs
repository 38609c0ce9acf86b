//! `hako daemon --jobs N`: N sandboxes in one process, each its own
//! connection and memory cap, sharing a name and `--max-tasks`; a refusal
//! stops them all with one message; `--help` states the defaults and what a
//! host can and cannot do.

use crate::common::{code, hako, spawn_logged, wait_exit, Host};
use crate::linkframe as lf;
use std::collections::HashMap;
use std::time::Duration;

/// A task that creates `/shared/{mine}`, waits until `/shared/{theirs}`
/// exists (another task creates it: both run at once, or this one fails
/// after a minute alone), then evaluates `then`.
fn meet(mine: &str, theirs: &str, then: &str) -> Vec<u8> {
    code(&format!(
        "{{ file.create('/shared/{mine}'); t0 <- as.numeric(Sys.time()); \
         while (!file.exists('/shared/{theirs}')) {{ \
           if (as.numeric(Sys.time()) - t0 > 60) stop('ran alone'); Sys.sleep(0.02) }}; \
         {then} }}"
    ))
}

/// The nice value of each thread of process `pid` named `comm`.
fn nice_of(pid: u32, comm: &str) -> Vec<i64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == comm))
        .map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap();
            // After "(comm) ": state is field 3, nice field 19.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            rest.split(' ').nth(16).unwrap().parse().unwrap()
        })
        .collect()
}

/// The results of `n` tasks, by id.
fn results(host: &Host, n: usize) -> HashMap<u32, crate::common::Res> {
    (0..n)
        .map(|_| {
            let r = host.result(Duration::from_secs(120));
            (r.id, r)
        })
        .collect()
}

#[test]
fn two_jobs_run_two_tasks_at_once_each_within_its_own_cap() {
    let shared = tempfile::tempdir().unwrap();
    let mount = format!("{}:/shared:rw", shared.path().display());
    let mut host = Host::start("jobs", &["--listen", "127.0.0.1:0"]);
    let (mut daemon, log) = spawn_logged(
        &mut host.daemon_cmd(&[
            "--jobs", "2", "--memory", "256", "--name", "lender", "--mount", &mount,
        ]),
        "jobs-daemon",
    );
    host.wait_connections(2);
    let (_, rows) = host.info();
    assert!(
        rows.len() == 2 && rows.iter().all(|r| r["name"] == "lender"),
        "both jobs carry the daemon's name: {rows:?}"
    );
    // The default task time limit applies, and the host is told it.
    assert!(
        rows.iter().all(|r| r["task_timeout_ms"] == "600000"),
        "{rows:?}"
    );

    // Each waits for the other: both finish only if both run at once.
    host.submit(1, meet("a", "b", "1"), 0);
    host.submit(2, meet("b", "a", "2"), 0);
    let r = results(&host, 2);
    assert_eq!((r[&1].value(), r[&2].value()), (1.0, 2.0));
    // Each job's sandbox thread lends at the lowest priority.
    for job in ["hako-daemon-1", "hako-daemon-2"] {
        assert_eq!(nice_of(daemon.id(), job), [19], "{job}");
    }

    // Each job has its own 256 MiB: two tasks that hold 114 MiB each at
    // the same time (with R's own ~70 MiB each) would not fit in one.
    let hold = "x <- numeric(1.5e7); x[1] <- 1";
    host.submit(3, meet("c", "d", &format!("{hold}; length(x)")), 0);
    host.submit(4, meet("d", "c", &format!("{hold}; length(x)")), 0);
    let r = results(&host, 2);
    assert_eq!((r[&3].value(), r[&4].value()), (1.5e7, 1.5e7));

    // A task past its job's cap fails with the memory limit; the task
    // running beside it in the other job is unharmed.
    host.submit(5, meet("e", "f", "length(numeric(5e7))"), 0);
    host.submit(6, meet("f", "e", "Sys.sleep(0.5); sum(1:10)"), 0);
    let r = results(&host, 2);
    assert_eq!(r[&5].status, lf::status::MEMORY_LIMIT, "{}", r[&5].text());
    assert!(r[&5].text().contains("256 MiB"), "{}", r[&5].text());
    assert_eq!(r[&6].value(), 55.0);
    // And both jobs still work, at once.
    host.submit(7, meet("g", "h", "7"), 0);
    host.submit(8, meet("h", "g", "8"), 0);
    let r = results(&host, 2);
    assert_eq!((r[&7].value(), r[&8].value()), (7.0, 8.0));

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(" task ")).collect();
    for job in ["job 1: task ", "job 2: task "] {
        assert!(lines.iter().any(|l| l.contains(job)), "{job}: {text}");
    }
    assert!(
        lines.len() >= 8 && lines.iter().all(|l| l.contains("(user local)")),
        "each task's line names its user: {text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("task 5 (user local): MemoryLimit")),
        "{text}"
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
}

#[test]
fn max_tasks_counts_the_tasks_of_all_jobs() {
    let mut host = Host::start("jobs-max", &["--listen", "127.0.0.1:0"]);
    let (mut daemon, log) = spawn_logged(
        &mut host.daemon_cmd(&["--jobs", "2", "--max-tasks", "3"]),
        "jobs-max-daemon",
    );
    host.wait_connections(2);
    for id in 1..=4 {
        host.submit(id, code("{ Sys.sleep(0.2); 1 }"), 0);
    }
    for _ in 0..3 {
        assert_eq!(host.result(Duration::from_secs(60)).value(), 1.0);
    }
    // Three tasks in all, then the whole process leaves (exit 0); the
    // fourth waits on the host for another daemon.
    let status = wait_exit(&mut daemon, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status:?}: {text}");
    let ran = text
        .lines()
        .filter(|l| l.contains(" task ") && l.contains(" in "))
        .count();
    assert_eq!(ran, 3, "{text}");
    host.wait_connections(0);
    let (counters, _) = host.info();
    assert_eq!(
        (counters["completed"], counters["awaiting"]),
        (3, 1),
        "{counters:?}"
    );
}

#[test]
fn a_refusal_stops_every_job_with_one_message() {
    let host = Host::start("jobs-refused", &["--listen", "127.0.0.1:0"]);
    let mut cmd = host.daemon_cmd(&["--jobs", "2"]);
    cmd.env("HAKO_TOKEN", "not-the-token");
    let (mut daemon, log) = spawn_logged(&mut cmd, "jobs-refused-daemon");
    let status = wait_exit(&mut daemon, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    let said: Vec<&str> = text.lines().filter(|l| l.starts_with("hako: ")).collect();
    assert!(
        said.len() == 1 && said[0].contains("refused"),
        "one message: {text}"
    );
}

/// `hako daemon` with a made-up host, to see what it refuses before dialling.
fn daemon_usage(extra: &[&str]) -> (Option<i32>, String) {
    let out = hako()
        .args(["daemon", "wss://127.0.0.1:9"])
        .args(["--fingerprint", &format!("SHA256:{}", "0".repeat(64))])
        .args(extra)
        .env("HAKO_TOKEN", "t")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn more_jobs_than_cores_are_refused() {
    let cores = std::thread::available_parallelism().unwrap().get();
    let (code, err) = daemon_usage(&["--jobs", &(cores + 1).to_string()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--jobs") && err.contains(&format!("at most --jobs {cores}")),
        "{err}"
    );
    let (code, err) = daemon_usage(&["--jobs", "0"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = daemon_usage(&["--task-timeout", "soon"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("none"), "{err}");
}

/// The `[default: X]` clap shows for `--flag`.
fn clap_default(help: &str, flag: &str) -> String {
    let at = help
        .find(&format!("      {flag} <"))
        .unwrap_or_else(|| panic!("no {flag} in {help}"));
    let rest = &help[at..];
    let d = rest.find("[default: ").expect("a default") + "[default: ".len();
    rest[d..rest[d..].find(']').unwrap() + d].to_string()
}

#[test]
fn help_states_the_defaults_and_what_a_host_can_do() {
    let out = hako().args(["daemon", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    // The summary's defaults are the options' real ones.
    for flag in ["--task-timeout", "--memory", "--jobs"] {
        let stated = format!("  {flag} {} ", clap_default(&help, flag));
        assert!(help.contains(&stated), "{stated:?} in {help}");
    }
    assert!(
        help.contains("10 minutes") && help.contains("nice 19"),
        "{help}"
    );
    let (_, can) = help
        .split_once("What a host can and cannot do to this machine:")
        .unwrap_or_else(|| panic!("no host-can section in {help}"));
    let can = can.split_whitespace().collect::<Vec<_>>().join(" ");
    for said in [
        "It can send R code that runs in this daemon's sandbox",
        "It cannot raise these caps",
        "except the directories you --mount",
        "cannot open network connections or start processes",
        "beyond its time, memory or output cap",
        "It sees the name you give (--name",
        "your IP address",
        "It learns nothing else",
    ] {
        assert!(can.contains(said), "{said:?} in {can}");
    }
}

#[test]
fn jobs_share_one_package_cache_and_fetch_a_set_once() {
    let shared = tempfile::tempdir().unwrap();
    let mount = format!("{}:/shared:rw", shared.path().display());
    let mut host = Host::start_env(
        "jobs-pkgset",
        &["--listen", "127.0.0.1:0", "--packages", "purrr"],
        &[("HAKO_PACKAGES", crate::package_sets::store())],
    );
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().display().to_string();
    let n = crate::package_sets::set_size();
    let (mut daemon, log) = spawn_logged(
        &mut host.daemon_cmd(&[
            "--jobs",
            "2",
            "--package-cache",
            &cache_arg,
            "--mount",
            &mount,
        ]),
        "jobs-pkgset-daemon",
    );
    host.wait_connections(2);
    // Both jobs sandbox with the set, at once.
    let squares = "sum(purrr::map_dbl(1:3, function(x) x^2))";
    host.submit(1, meet("a", "b", squares), 0);
    host.submit(2, meet("b", "a", squares), 0);
    let r = results(&host, 2);
    assert_eq!((r[&1].value(), r[&2].value()), (14.0, 14.0));
    // One job fetched the trees; the other waited for it and found them in
    // the cache.
    let text = std::fs::read_to_string(&log).unwrap();
    let sets: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("package set: "))
        .collect();
    assert_eq!(sets.len(), 2, "{text}");
    let fetched = format!("{n} package(s), 0 from the cache, {n} fetched from the host");
    let reused = format!("{n} package(s), {n} from the cache, 0 fetched from the host");
    assert_eq!(
        sets.iter().filter(|l| l.contains(&fetched)).count(),
        1,
        "{text}"
    );
    assert_eq!(
        sets.iter().filter(|l| l.contains(&reused)).count(),
        1,
        "{text}"
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
}

#[test]
fn a_revoked_volunteer_stops_all_its_jobs_at_once() {
    let id = tempfile::tempdir().unwrap();
    let dir = id.path().join("identity");
    let d = dir.to_str().unwrap();
    let mut host = Host::start(
        "jobs-revoked",
        &["--identity", d, "--listen", "127.0.0.1:0"],
    );
    let user = |args: &[&str]| {
        let out = hako()
            .arg("user")
            .args(args)
            .args(["--identity", d])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    user(&["add", "vic", "--volunteer"]);
    let store: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("users.json")).unwrap()).unwrap();
    let token = store["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "vic")
        .and_then(|u| u["token"].as_str())
        .expect("vic's token")
        .to_string();
    let mut cmd = host.daemon_cmd(&["--jobs", "2"]);
    cmd.env("HAKO_TOKEN", &token);
    // The host takes vic's token once it has read the store again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&host.log)
        .unwrap_or_default()
        .contains("rules replaced")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the host never read the store"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut daemon, log) = spawn_logged(&mut cmd, "jobs-revoked-daemon");
    host.wait_connections(2);
    user(&["revoke", "vic"]);
    let status = wait_exit(&mut daemon, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    // One message, from the close reason: no job dials again to be refused.
    let said: Vec<&str> = text.lines().filter(|l| l.starts_with("hako: ")).collect();
    assert!(
        said.len() == 1 && said[0].contains("this token was revoked by the host"),
        "{text}"
    );
    assert!(!text.contains("reconnecting"), "{text}");
    host.wait_connections(0);
}

#[test]
fn a_changed_fingerprint_stops_every_job_with_one_message() {
    let listen = format!("127.0.0.1:{}", crate::common::free_port());
    let mut first = Host::start("jobs-gone-1", &["--listen", &listen]);
    let (mut daemon, log) = spawn_logged(
        &mut first.daemon_cmd(&["--jobs", "2", "--max-backoff", "1"]),
        "jobs-gone-daemon",
    );
    first.wait_connections(2);
    first.close_link();
    first.wait_exit(Duration::from_secs(15));
    drop(first);
    // Another host on the same address, with its own certificate.
    let second = Host::start("jobs-gone-2", &["--listen", &listen]);
    let status = wait_exit(&mut daemon, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    let said: Vec<&str> = text.lines().filter(|l| l.starts_with("hako: ")).collect();
    assert!(
        said.len() == 1
            && said[0].contains("is not the one this daemon joined")
            && said[0].contains(&second.get("fingerprint")),
        "{text}"
    );
}
