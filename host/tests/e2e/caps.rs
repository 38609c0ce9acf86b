//! The volunteer's caps: a daemon leaves after --max-tasks, --idle-time,
//! --wall-time or a signal, saying bye, and its task is not lost; its
//! --mount shows one directory and nothing beside it.

use crate::common::{code, wait_exit, Host};
use std::time::{Duration, Instant};

#[test]
fn daemons_leave_at_their_caps_and_lose_nothing() {
    // No retries: a task survives a leaving daemon only through its bye.
    let mut host = Host::start("caps", &["--listen", "127.0.0.1:0", "--retries", "0"]);
    let a = host.daemon("caps-max", &["--max-tasks", "2"]);
    host.wait_connections(1);
    for i in 0..3 {
        host.submit(i, code(&format!("{i} + 100")), 0);
    }
    let mut got = vec![
        host.result(Duration::from_secs(60)).value(),
        host.result(Duration::from_secs(60)).value(),
    ];
    assert!(wait_exit(host.daemon_child(a), Duration::from_secs(15)).success());
    host.wait_for("one task left", Duration::from_secs(10), |c, _| {
        c["connections"] == 0 && c["awaiting"] == 1
    });
    // A daemon that is idle for a second after its work leaves.
    let b = host.daemon("caps-idle", &["--idle-time", "1"]);
    got.push(host.result(Duration::from_secs(60)).value());
    got.sort_by(f64::total_cmp);
    assert_eq!(got, vec![100.0, 101.0, 102.0]);
    let t = Instant::now();
    assert!(wait_exit(host.daemon_child(b), Duration::from_secs(15)).success());
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    // Wall time: leaves mid-task; the task is re-queued, not failed.
    let c = host.daemon("caps-wall", &["--wall-time", "2"]);
    host.wait_connections(1);
    host.submit(10, code("Sys.sleep(3); 10"), 0);
    assert!(wait_exit(host.daemon_child(c), Duration::from_secs(15)).success());
    host.wait_for(
        "task 10 back in the queue",
        Duration::from_secs(10),
        |c, _| c["awaiting"] == 1,
    );
    // SIGTERM mid-task: the same.
    let d = host.daemon("caps-term", &[]);
    host.wait_for("task 10 running", Duration::from_secs(30), |c, _| {
        c["executing"] == 1
    });
    let pid = host.daemon_child(d).id();
    // SAFETY: kill(2) on a child process we started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert!(wait_exit(host.daemon_child(d), Duration::from_secs(15)).success());
    host.daemon("caps-last", &[]);
    let r = host.result(Duration::from_secs(60));
    assert_eq!((r.id, r.value()), (10, 10.0));
    let (c, _) = host.info();
    assert_eq!(c["cumulative"], 5);
}

/// The volunteer's mounts: a daemon's `--mount` shows that directory to the
/// host's tasks, read-only unless `:rw`, and nothing beside it.
#[test]
fn a_daemon_mount_shows_its_directory_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "hello\n").unwrap();
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::os::unix::fs::symlink(secret.path(), dir.path().join("escape")).unwrap();
    let spec = format!("{}:/data", dir.path().display());
    let mut host = Host::start("mount", &["--listen", "127.0.0.1:0"]);
    host.daemon("mount-d", &["--mount", &spec]);
    host.wait_connections(1);
    let mut run = |id: u32, src: &str| {
        host.submit(id, code(src), 0);
        host.result(Duration::from_secs(60)).value()
    };
    assert_eq!(run(1, "nchar(readLines('/data/a.txt'))"), 5.0);
    let attempts = [
        "writeLines('x', '/data/b.txt')",
        "readLines('/data/escape')",
        "readLines('/data/../etc/passwd')",
    ];
    for (i, src) in attempts.iter().enumerate() {
        let guarded = format!(
            "as.numeric(inherits(try(suppressWarnings({src}), silent = TRUE), 'try-error'))"
        );
        assert_eq!(run(2 + i as u32, &guarded), 1.0, "{src} succeeded");
    }
    assert!(!dir.path().join("b.txt").exists());
    let host_path = format!("as.numeric(file.exists('{}'))", secret.path().display());
    assert_eq!(run(9, &host_path), 0.0);

    // Refused at once, before dialling: a mount over the guest's /tmp, and a
    // host --mount with no local daemon to apply it to.
    let out = crate::common::hako()
        .args(["daemon", "wss://127.0.0.1:1", "--token", "t"])
        .args(["--mount", &format!("{}:/tmp/x", dir.path().display())])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("overlaps /tmp"), "{err}");
    let out = crate::common::hako()
        .args(["host", "--no-listen", "--mount", &spec])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--local"), "{err}");
}

/// A daemon whose cap is reached by the task it just ran delivers that
/// result before it leaves (with no retries, a lost one would fail).
#[test]
fn a_daemon_at_max_tasks_delivers_its_last_result() {
    let mut host = Host::start("lasttask", &["--listen", "127.0.0.1:0", "--retries", "0"]);
    for i in 0..4u32 {
        let d = host.daemon(&format!("lasttask-{i}"), &["--max-tasks", "1"]);
        host.submit(i, code(&format!("{i} * 2")), 0);
        let r = host.result(Duration::from_secs(60));
        assert_eq!((r.id, r.value()), (i, f64::from(i * 2)));
        assert!(wait_exit(host.daemon_child(d), Duration::from_secs(15)).success());
    }
    let (c, _) = host.info();
    assert_eq!((c["cumulative"], c["awaiting"]), (4, 0));
}
