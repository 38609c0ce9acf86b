//! The host survives its peers: a task that kills daemons, sockets that
//! never speak, a client that never reads, a planted link-file symlink.

use crate::common::{
    code, hako, log_file, proc_status, socket_link_host, spawn_logged, wait_exit, Host,
};
use crate::linkframe::{self as lf, LinkIn, LinkOut};
use bytes::Bytes;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn read_out(r: &mut impl Read) -> LinkOut {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).expect("a frame");
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut buf).expect("a frame body");
    lf::parse_out(buf[0], &buf[1..]).expect("well-formed")
}

/// The name of the daemon running a task, once one is.
fn busy_name(host: &mut Host, not: &[String]) -> String {
    let mut name = String::new();
    host.wait_for(
        "a busy daemon",
        Duration::from_secs(60),
        |_, rows| match rows
            .iter()
            .find(|r| r["busy_ms"] != "NA" && !not.contains(&r["name"]))
        {
            Some(r) => {
                name = r["name"].clone();
                true
            }
            None => false,
        },
    );
    name
}

#[test]
fn a_task_that_kills_two_daemons_is_crashed_and_the_third_lives() {
    let mut host = Host::start("crash2", &["--listen", "127.0.0.1:0"]);
    let names = ["crash2-a", "crash2-b", "crash2-c"];
    let idx: HashMap<String, usize> = names
        .iter()
        .map(|n| (n.to_string(), host.daemon(n, &["--name", n])))
        .collect();
    host.wait_connections(3);
    host.submit(1, code("Sys.sleep(60); 1"), 0);
    let mut killed = Vec::new();
    for _ in 0..2 {
        let name = busy_name(&mut host, &killed);
        // Its `Started` reaches the host right after the task does.
        std::thread::sleep(Duration::from_secs(1));
        let child = host.daemon_child(idx[&name]);
        child.kill().unwrap();
        child.wait().unwrap();
        killed.push(name);
    }
    let r = host.result(Duration::from_secs(60));
    assert_eq!((r.id, r.status), (1, lf::status::CRASHED), "{}", r.text());
    assert!(r.text().contains("crashed its daemon"), "{}", r.text());
    for k in &killed {
        assert!(r.text().contains(k.as_str()), "{}", r.text());
    }
    // The third daemon never ran it, and still works.
    let (_, rows) = host.info();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["busy_ms"], "NA");
    host.submit(2, code("2"), 0);
    assert_eq!(host.result(Duration::from_secs(60)).value(), 2.0);
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: [u8; 4], to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor owned here; on error it is
    // closed before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sin = |ip: [u8; 4], port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip),
            },
            sin_zero: [0; 8],
        };
        let std::net::SocketAddr::V4(to) = to else {
            panic!("IPv4 expected")
        };
        let local = sin(from, 0);
        let remote = sin(to.ip().octets(), to.port());
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0
            || libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0
        {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

/// Keep `n` silent connections from `from` open to `to`, opening a new one
/// whenever the host drops one, until `stop`.
fn silent_flood(
    from: [u8; 4],
    to: std::net::SocketAddr,
    n: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut socks: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
        let mut opened = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for s in socks.iter_mut() {
                let alive = s.as_mut().is_some_and(|s| {
                    let mut b = [0u8; 1];
                    matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                });
                if !alive {
                    *s = connect_from(from, to).ok().inspect(|s| {
                        s.set_nonblocking(true).unwrap();
                        opened += 1;
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        opened
    })
}

#[test]
fn silent_sockets_do_not_keep_a_daemon_out() {
    let mut host = Host::start("slowloris", &["--listen", "127.0.0.1:0"]);
    let url = host.get("url");
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let to: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // 300 from a second source, reopened as soon as they are dropped, and
    // 300 from the daemon's own address.
    let floods = [
        silent_flood([127, 0, 0, 2], to, 300, stop.clone()),
        silent_flood([127, 0, 0, 1], to, 300, stop.clone()),
    ];
    std::thread::sleep(Duration::from_secs(1));
    host.daemon("slowloris-d", &[]);
    host.wait_connections(1);
    host.submit(1, code("40 + 2"), 0);
    assert_eq!(host.result(Duration::from_secs(60)).value(), 42.0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in floods {
        assert!(f.join().unwrap() >= 300, "the flood ran");
    }
}

/// `hako host --link` with its link file in a fresh private directory.
fn link_host(name: &str, dir: &Path, extra: &[&str]) -> (Child, PathBuf) {
    let file = dir.join("link");
    let (child, _) = spawn_logged(
        hako()
            .args(["host", "--link", "127.0.0.1:0", "--link-file"])
            .arg(&file)
            .args(extra),
        name,
    );
    (child, file)
}

fn read_link_file(child: &mut Child, file: &Path) -> HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !file.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the host exited");
        assert!(Instant::now() < deadline, "no link file");
        std::thread::sleep(Duration::from_millis(20));
    }
    lf::parse_kv(&std::fs::read_to_string(file).unwrap())
        .into_iter()
        .collect()
}

/// A remote client connection (`name`, `token`) to the host at `url`,
/// pinned to its fingerprint: how these tests read results over wss.
async fn dial_client(
    url: &str,
    fingerprint: &str,
    token: String,
    name: &str,
    limits: crate::protocol::FrameLimits,
) -> crate::dial::Conn {
    let target = crate::dial::parse_url(url).unwrap();
    let trust = crate::tls::Trust::Pinned(crate::tls::parse_fingerprint(fingerprint).unwrap());
    let hello = crate::protocol::HelloBody {
        role: crate::protocol::Role::Client,
        token,
        name: name.into(),
        limits: Default::default(),
        caps: Default::default(),
    };
    crate::dial::dial(&target, &trust, limits, hello)
        .await
        .unwrap()
        .0
}

fn hello(addr: &str, token: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&lf::encode_in(&LinkIn::Hello {
        version: lf::LINK_VERSION,
        token: token.into(),
    }))
    .unwrap();
    s
}

#[test]
fn silent_link_connections_do_not_hold_the_r_session_out() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, file) = link_host("silent-link", dir.path(), &["--no-listen", "--local", "1"]);
    let kv = read_link_file(&mut child, &file);
    // Served one at a time, eight silent connections would take 80 s of
    // hello timeouts, past the host's 60 s wait for its R session.
    let silent: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(&kv["link"]).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut s = hello(&kv["link"], &kv["link_token"]);
    s.set_read_timeout(Some(Duration::from_secs(50))).unwrap();
    assert!(matches!(read_out(&mut s), LinkOut::Ready(_)));
    s.write_all(&lf::encode_in(&LinkIn::Task {
        id: 1,
        timeout_ms: 0,
        payload: Bytes::from(code("6 * 7")),
    }))
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    match read_out(&mut s) {
        LinkOut::Result { id: 1, status, .. } => assert_eq!(status, lf::status::VALUE),
        other => panic!("{other:?}"),
    }
    drop(silent);
    s.write_all(&lf::encode_in(&LinkIn::Shutdown)).unwrap();
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
}

#[test]
fn a_client_that_does_not_read_gets_refusals_and_the_memory_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, file) = link_host(
        "unread",
        dir.path(),
        &["--listen", "127.0.0.1:0", "--max-unread", "8"],
    );
    let kv = read_link_file(&mut child, &file);
    let mut s = hello(&kv["link"], &kv["link_token"]);
    assert!(matches!(read_out(&mut s), LinkOut::Ready(_)));
    // A separate daemon process: the host's memory is then its own.
    let (log, _) = log_file("unread-d");
    let mut daemon = hako()
        .args(["daemon", &kv["url"], "--token", &kv["token"]])
        .args(["--fingerprint", &kv["fingerprint"]])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // 1 MiB results, submitted one by one, each after the previous one is
    // done (asked over a second, remote client connection), and not read.
    let rt = crate::common::runtime();
    let limits = crate::protocol::FrameLimits::default();
    let mut watcher = rt.block_on(dial_client(
        &kv["url"],
        &kv["fingerprint"],
        kv["client_token"].clone(),
        "watcher",
        limits,
    ));
    let mut idle = || {
        rt.block_on(async {
            for _ in 0..1200 {
                crate::ws::send(&mut watcher, &crate::protocol::Message::Status)
                    .await
                    .unwrap();
                let i = loop {
                    match crate::ws::recv(&mut watcher, &limits).await.unwrap() {
                        crate::protocol::Message::Info(i) => break i,
                        _ => continue,
                    }
                };
                if i.awaiting == 0 && i.executing == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the host did not get through its tasks");
        })
    };
    let n = 60u32;
    for id in 1..=n {
        s.write_all(&lf::encode_in(&LinkIn::Task {
            id,
            timeout_ms: 0,
            payload: Bytes::from(code("as.raw(seq_len(2^20) %% 256)")),
        }))
        .unwrap();
        idle();
    }
    let peak_unread = proc_status(child.id(), "VmRSS:");
    // Now read everything.
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let (mut values, mut refused) = (0, 0);
    let mut got = 0;
    while got < n {
        if let LinkOut::Result {
            status, payload, ..
        } = read_out(&mut s)
        {
            got += 1;
            match status {
                lf::status::VALUE => values += 1,
                lf::status::REJECTED => {
                    let t = String::from_utf8_lossy(&payload);
                    assert!(t.contains("too many unread results"), "{t}");
                    refused += 1;
                }
                other => panic!("status {other}: {}", String::from_utf8_lossy(&payload)),
            }
        }
    }
    eprintln!("{values} values, {refused} refused");
    assert!(values >= 8, "{values} values, {refused} refused");
    assert!(refused > 0, "{values} values, {refused} refused");
    // Bounded while unread (8 MiB of results plus what the host needs
    // anyway), with a generous margin.
    assert!(peak_unread < 200 << 10, "host RSS {peak_unread} KiB");
    // Having read, the client is served again.
    s.write_all(&lf::encode_in(&LinkIn::Task {
        id: n + 1,
        timeout_ms: 0,
        payload: Bytes::from(code("1")),
    }))
    .unwrap();
    match read_out(&mut s) {
        LinkOut::Result { id, status, .. } => {
            assert_eq!((id, status), (n + 1, lf::status::VALUE))
        }
        other => panic!("{other:?}"),
    }
    let after = proc_status(child.id(), "VmRSS:");
    let peak = proc_status(child.id(), "VmHWM:");
    eprintln!("host RSS: {peak_unread} KiB unread, {after} KiB after reading, peak {peak} KiB");
    assert!(after < 100 << 10, "host RSS after reading: {after} KiB");
    s.write_all(&lf::encode_in(&LinkIn::Shutdown)).unwrap();
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
    let _ = daemon.kill();
    let _ = daemon.wait();
}

#[test]
fn everywhere_code_the_host_keeps_is_bounded() {
    let mut host = Host::start(
        "everywhere-bound",
        &["--listen", "127.0.0.1:0", "--max-everywhere", "1"],
    );
    let big = Bytes::from(code(&format!("x <- '{}'", "a".repeat(600 << 10))));
    host.send(&LinkIn::Everywhere {
        id: 1,
        payload: big.clone(),
    });
    host.send(&LinkIn::Everywhere {
        id: 2,
        payload: big,
    });
    let mut acked = false;
    let mut refused = false;
    while !(acked && refused) {
        match host.recv(Duration::from_secs(30)) {
            LinkOut::EverywhereAck { id: 1, .. } => acked = true,
            LinkOut::Result {
                id: 2,
                status,
                payload,
                ..
            } => {
                assert_eq!(status, lf::status::REJECTED);
                let t = String::from_utf8_lossy(&payload);
                assert!(t.contains("everywhere() refused"), "{t}");
                refused = true;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_planted_link_file_symlink_is_never_followed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let run = |file: &Path| {
        socket_link_host(file)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // A symlink where the link file goes: refused, the victim untouched.
    let file = private.join("link");
    std::os::unix::fs::symlink(&victim, &file).unwrap();
    let out = run(&file);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a regular file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    // A directory others can write to: refused.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run(&open.join("link"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("others cannot write"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A symlink at the old temporary name: not used, the file written safely.
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&victim, private.join("link.tmp")).unwrap();
    let (mut child, file) = link_host("planted-tmp", &private, &["--no-listen", "--local", "1"]);
    let kv = read_link_file(&mut child, &file);
    assert!(kv.contains_key("link_token"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let meta = std::fs::symlink_metadata(&file).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn peer_given_timeouts_of_2_pow_64_are_clamped() {
    use crate::dial;
    use crate::protocol::{FrameLimits, Message, Outcome, Role, Task, TaskReport, MAX_TIMEOUT_MS};
    use crate::tls::{self, Trust};
    use crate::ws;
    let mut host = Host::start("timeout-clamp", &["--listen", "127.0.0.1:0"]);
    let target = dial::parse_url(&host.get("url")).unwrap();
    let trust = Trust::Pinned(tls::parse_fingerprint(&host.get("fingerprint")).unwrap());
    let hello = |role, token: String, task_timeout_ms| {
        crate::common::peer_hello(role, token, "fake", task_timeout_ms)
    };
    let rt = crate::common::runtime();
    let (token, client_token) = (host.get("token"), host.get("client_token"));
    let got = rt.block_on(async {
        let limits = FrameLimits::default();
        let (mut daemon, _) = dial::dial(
            &target,
            &trust,
            limits,
            hello(Role::Daemon, token, Some(u64::MAX)),
        )
        .await
        .unwrap();
        let (mut client, _) = dial::dial(
            &target,
            &trust,
            limits,
            hello(Role::Client, client_token, None),
        )
        .await
        .unwrap();
        ws::send(
            &mut client,
            &Message::Task(Task {
                id: 9,
                payload: code("1").into(),
                timeout_ms: Some(u64::MAX),
                replicas: 0,
                user: String::new(),
            }),
        )
        .await
        .unwrap();
        let task = loop {
            match ws::recv(&mut daemon, &limits).await.unwrap() {
                Message::Task(t) => break t,
                _ => continue,
            }
        };
        ws::send(&mut daemon, &Message::Started { id: task.id })
            .await
            .unwrap();
        ws::send(
            &mut daemon,
            &Message::Result(TaskReport {
                id: task.id,
                outcome: Outcome::Failed {
                    kind: crate::protocol::FailKind::Timeout,
                    message: "fake".into(),
                },
                output: vec![],
            }),
        )
        .await
        .unwrap();
        let result = loop {
            match ws::recv(&mut client, &limits).await.unwrap() {
                Message::Result(r) => break r,
                _ => continue,
            }
        };
        (task.timeout_ms, result.id)
    });
    assert_eq!(got, (Some(MAX_TIMEOUT_MS), 9));
    // The host lives on.
    let (c, _) = host.info();
    assert_eq!(c["completed"], 1);
}

/// A host that shuts down with results its remote client has not read yet
/// hands them all over, then its shutdown notice, before it exits: its
/// connection tasks are waited for (up to --shutdown-grace), not given a
/// fixed moment. The client starts reading only a second after the signal,
/// when 64 MiB of results cannot all sit in socket buffers.
#[test]
fn a_host_shutting_down_hands_a_slow_client_what_it_did_not_read() {
    let mut h = Host::start(
        "shutdown-unread",
        &["--listen", "127.0.0.1:0", "--shutdown-grace", "60"],
    );
    h.daemon("shutdown-unread-d", &[]);
    h.wait_connections(1);
    let rt = crate::common::runtime();
    let limits = crate::protocol::FrameLimits::default();
    let mut client = rt.block_on(dial_client(
        &h.get("url"),
        &h.get("fingerprint"),
        h.get("client_token"),
        "slow",
        limits,
    ));
    // Sixteen 4 MiB results, none read yet.
    let n = 16u64;
    rt.block_on(async {
        for id in 1..=n {
            let task = crate::protocol::Message::Task(crate::protocol::Task {
                id,
                payload: code("as.raw(seq_len(2^22) %% 256)").into(),
                timeout_ms: None,
                replicas: 0,
                user: String::new(),
            });
            crate::ws::send(&mut client, &task).await.unwrap();
        }
    });
    h.wait_for("every task done", Duration::from_secs(120), |c, _| {
        c["completed"] >= n && c["awaiting"] == 0 && c["executing"] == 0
    });
    // SAFETY: signalling a child we started.
    unsafe { libc::kill(h.pid() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_secs(1));
    let (results, notice) = rt.block_on(async {
        let mut results = 0;
        loop {
            match crate::ws::recv(&mut client, &limits).await {
                Ok(crate::protocol::Message::Result(_)) => results += 1,
                Ok(crate::protocol::Message::Shutdown { .. }) => return (results, true),
                Ok(_) => {}
                Err(_) => return (results, false),
            }
        }
    });
    assert_eq!(results, n, "results the host handed over before exiting");
    assert!(notice, "no shutdown notice after the results");
    assert!(h.wait_exit(Duration::from_secs(60)).success());
}
