//! Process start-up: what `hako` does before anything else, so that the
//! processes an R session starts neither keep that session's sockets alive
//! nor die of its terminal's signals.

/// Closes every descriptor above standard error that this process inherited.
///
/// A program started through `sh -c '… &'` inherits whatever its parent had
/// open: a daemon started by the R package would hold the R session's link
/// socket to the host, so the host never saw the session go away and host and
/// daemons lived on for good. No `hako` command uses an inherited descriptor
/// other than 0, 1 and 2 (`--stdio` serves the link on 0 and 1). Must run
/// while the process has a single thread, before anything opens a file.
pub fn close_inherited_fds() {
    #[cfg(target_os = "linux")]
    {
        // close_range(2), Linux 5.9 and later: one call, no directory to read.
        // SAFETY: closes descriptors this process does not use (none is open
        // yet besides the inherited ones).
        let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
        if r == 0 {
            return;
        }
    }
    let dir = if cfg!(target_os = "linux") {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    // Collected first: the listing's own descriptor is among them and is
    // closed when the listing ends (closing it again only fails with EBADF).
    let fds: Vec<libc::c_int> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2)
            .collect(),
        Err(_) => (3..open_max()).collect(),
    };
    for fd in fds {
        // SAFETY: as above; an fd that is not open only yields EBADF.
        unsafe {
            libc::close(fd);
        }
    }
}

/// The highest descriptor number to try when the open ones cannot be listed.
fn open_max() -> libc::c_int {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    if n <= 3 {
        1024
    } else {
        n.min(65_536) as libc::c_int
    }
}

/// Starts a new session (setsid), so that the signals of the terminal the
/// parent runs in (Ctrl-C's SIGINT, SIGQUIT, SIGTSTP and SIGHUP, sent to the
/// terminal's foreground process group) no longer reach this process: Ctrl-C
/// in the R session that started a host must interrupt R, not kill the host.
/// A process that already leads a process group (started directly from an
/// interactive shell) cannot, and is left as it is: there Ctrl-C is meant for it.
pub fn new_session() {
    // SAFETY: setsid has no preconditions; failure (EPERM) changes nothing.
    unsafe {
        libc::setsid();
    }
}

/// Ends this process as SIGTERM does once process `pid` is gone (checked
/// twice a second), so that a host or daemon never outlives the R session
/// that started it, even when another of that session's children still
/// holds the session's end of the link (the link's closing is then never
/// seen). A zombie counts as gone.
pub fn watch_pid(pid: u32) {
    let spawned = std::thread::Builder::new()
        .name("watch-pid".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            if !alive(pid) {
                // SAFETY: sending a signal to ourselves has no preconditions.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGTERM);
                }
                return;
            }
        });
    if let Err(e) = spawned {
        eprintln!("hako: cannot watch process {pid}: {e}");
    }
}

/// Whether process `pid` exists and is not a zombie (a process of another
/// user counts as alive).
fn alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(p, 0) } != 0 {
        return std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    }
    #[cfg(target_os = "linux")]
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
            return !rest.trim_start().starts_with('Z');
        }
    }
    true
}
