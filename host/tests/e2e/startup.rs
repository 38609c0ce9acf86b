//! Process start-up: a `hako` started by an R session (through `sh -c … &`)
//! must hold none of that session's descriptors, or the session's death goes
//! unseen (its link socket stays open in the child), and with
//! `--new-session` it must leave the session of the terminal, whose Ctrl-C
//! would otherwise stop it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The descriptor number the parent hands down, as R's sockets are.
const INHERITED: i32 = 9;

/// Field `n` (1-based, after the command name) of /proc/PID/stat.
fn stat_field(pid: u32, n: usize) -> Option<i64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split(' ').nth(n - 3)?.parse().ok()
}

#[test]
#[cfg(target_os = "linux")]
fn hako_closes_inherited_descriptors_and_leaves_the_terminal_session() {
    use std::os::unix::io::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("held")).unwrap();
    let fd = file.as_raw_fd();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hako"));
    cmd.args([
        "host",
        "--local",
        "0",
        "--listen",
        "127.0.0.1:0",
        "--new-session",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 clears close-on-exec on the copy: the child inherits it.
            if libc::dup2(fd, INHERITED) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let held = format!("/proc/{pid}/fd/{INHERITED}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut closed, mut own_session) = (false, false);
    while Instant::now() < deadline {
        // the descriptor is either gone or reused for something else
        closed = std::fs::read_link(&held)
            .map(|t| !t.ends_with("held"))
            .unwrap_or(true);
        own_session = stat_field(pid, 6) == Some(pid as i64);
        if closed && own_session {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        closed,
        "the inherited descriptor {INHERITED} stayed open in hako"
    );
    assert!(own_session, "hako --new-session did not start a session");
}

#[test]
fn hako_exits_when_the_watched_process_ends() {
    let mut parent = Command::new("sleep").arg("60").spawn().unwrap();
    let mut host = Command::new(env!("CARGO_BIN_EXE_hako"))
        .args(["host", "--local", "0", "--listen", "127.0.0.1:0"])
        .args(["--watch-pid", &parent.id().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        host.try_wait().unwrap().is_none(),
        "hako exited while the watched process lived"
    );
    parent.kill().unwrap();
    parent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status = None;
    while status.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        status = host.try_wait().unwrap();
    }
    if status.is_none() {
        let _ = host.kill();
        let _ = host.wait();
    }
    assert!(status.is_some(), "hako outlived the process it watched");
}
