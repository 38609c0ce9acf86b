//! A volunteer's `hako daemon` against a hostile host: a fake host speaking
//! the real protocol (TLS with a self-signed certificate the daemon pins,
//! the WebSocket upgrade, hello and welcome, real frames) tries to make the
//! daemon spawn threads, grow outside its `--memory`, send frames the host
//! would refuse, give away who runs it, or hang. The daemon must stay small
//! and keep answering.

use crate::common::{code, hako, proc_status, spawn_logged, wait_exit, Host};
use crate::linkframe::status;
use crate::protocol::{
    self, Everywhere, FailKind, FrameLimits, HelloBody, Message, Outcome, Task, TaskReport, Welcome,
};
use crate::tls::Identity;
use crate::ws;
use futures_util::{SinkExt, StreamExt};
use std::process::Child;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

const TOKEN: &str = "hostile-host-join-token-0123456789";

/// What the fake host accepts from the daemon: far more than any real host,
/// so that a frame a real host would refuse is seen here, not lost.
fn wide() -> FrameLimits {
    FrameLimits {
        control: 1 << 20,
        bulk: 1 << 30,
    }
}

/// A host that speaks the protocol and does whatever a test tells it.
pub(crate) struct FakeHost {
    rt: tokio::runtime::Runtime,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    fingerprint: String,
    port: u16,
    conn: Option<WebSocketStream<TlsStream<TcpStream>>>,
    pub(crate) daemon: Option<Child>,
    log: std::path::PathBuf,
}

impl FakeHost {
    pub(crate) fn new() -> FakeHost {
        let rt = crate::common::runtime();
        let id = Identity::self_signed(vec!["127.0.0.1".into()]).expect("a certificate");
        let acceptor = TlsAcceptor::from(id.server_config().expect("TLS config"));
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        FakeHost {
            rt,
            listener,
            acceptor,
            fingerprint: id.fingerprint,
            port,
            conn: None,
            daemon: None,
            log: Default::default(),
        }
    }

    /// A host with its `hako daemon` started and its first connection
    /// welcomed (bulk frames up to 256 MiB): where most tests begin.
    fn connected(name: &str, extra: &[&str]) -> FakeHost {
        let mut h = FakeHost::new();
        h.start_daemon(name, extra);
        h.accept(256 << 20);
        h
    }

    /// Start `hako daemon` against this host.
    pub(crate) fn start_daemon(&mut self, name: &str, extra: &[&str]) {
        let (child, path) = spawn_logged(
            hako()
                .arg("daemon")
                .arg(format!("wss://127.0.0.1:{}", self.port))
                .args(["--token", TOKEN, "--fingerprint", &self.fingerprint])
                .args(extra),
            name,
        );
        self.daemon = Some(child);
        self.log = path;
    }

    fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("a daemon").id()
    }

    pub(crate) fn daemon_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Accept the daemon's next connection, welcome it and announce no
    /// package set, telling it this host accepts bulk frames of at most
    /// `bulk` bytes. Returns its hello.
    fn accept(&mut self, bulk: u64) -> HelloBody {
        let hello = self.accept_welcomed(bulk);
        self.send(Message::PackageSet(Default::default()));
        hello
    }

    /// [`FakeHost::accept`] up to the welcome: the package set is the
    /// test's to send.
    pub(crate) fn accept_welcomed(&mut self, bulk: u64) -> HelloBody {
        let acceptor = self.acceptor.clone();
        let limits = wide();
        let listener = &self.listener;
        let accepted = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(300), async {
                let (tcp, _) = listener.accept().await.expect("accept");
                let tls = acceptor.accept(tcp).await.expect("TLS");
                let mut ws =
                    tokio_tungstenite::accept_async_with_config(tls, Some(ws::ws_config(&limits)))
                        .await
                        .expect("upgrade");
                let hello = match ws::recv(&mut ws, &limits).await {
                    Ok(Message::Hello(h)) => h.body,
                    other => panic!("expected a hello, got {other:?}"),
                };
                let welcome = Message::Welcome(Welcome {
                    id: 1,
                    hako_version: "hostile".into(),
                    limits: FrameLimits {
                        control: 64 << 10,
                        bulk,
                    },
                    heartbeat_ms: 15_000,
                });
                ws::send(&mut ws, &welcome).await.expect("welcome");
                (ws, hello)
            })
            .await
        });
        let (ws, hello) = accepted.unwrap_or_else(|_| {
            panic!(
                "the daemon did not connect; its log:\n{}",
                self.daemon_log()
            )
        });
        self.conn = Some(ws);
        hello
    }

    /// Send messages in one burst; false if the daemon hung up meanwhile.
    fn try_send_all(&mut self, msgs: impl IntoIterator<Item = Message>) -> bool {
        let conn = self.conn.as_mut().expect("connected");
        self.rt.block_on(async {
            for m in msgs {
                let frame = WsMessage::Binary(protocol::encode(&m).into());
                if conn.feed(frame).await.is_err() {
                    return false;
                }
            }
            conn.flush().await.is_ok()
        })
    }

    fn send_all(&mut self, msgs: impl IntoIterator<Item = Message>) {
        assert!(self.try_send_all(msgs), "the daemon hung up");
    }

    /// Wait until the daemon has handled everything sent so far (it answers
    /// pings in order).
    fn sync(&mut self) {
        self.send(Message::Ping(u64::MAX));
        loop {
            match self.next(Duration::from_secs(60)) {
                Some(Message::Pong(n)) if n == u64::MAX => return,
                Some(Message::Result(r)) => panic!("unexpected result {r:?}"),
                Some(_) => {}
                None => panic!("the daemon hung up; log:\n{}", self.daemon_log()),
            }
        }
    }

    pub(crate) fn send(&mut self, m: Message) {
        self.send_all([m]);
    }

    /// The next protocol message (pings answered), or None when the
    /// connection ended or `timeout` passed.
    pub(crate) fn next(&mut self, timeout: Duration) -> Option<Message> {
        let conn = self.conn.as_mut().expect("connected");
        self.rt.block_on(async {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let m = tokio::time::timeout_at(deadline, conn.next())
                    .await
                    .ok()??;
                match m.ok()? {
                    WsMessage::Binary(b) => {
                        let m = protocol::decode(&b, &wide()).expect("a well-formed frame");
                        if let Message::Ping(n) = m {
                            let pong = protocol::encode(&Message::Pong(n));
                            conn.send(WsMessage::Binary(pong.into())).await.ok()?;
                            continue;
                        }
                        return Some(m);
                    }
                    WsMessage::Close(_) => return None,
                    _ => {}
                }
            }
        })
    }

    /// The next result, skipping `Started` and pongs; with the size of its
    /// frame.
    fn result(&mut self, timeout: Duration) -> (TaskReport, usize) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(Message::Result(r)) => {
                    let len = protocol::encode(&Message::Result(r.clone())).len();
                    return (r, len);
                }
                Some(Message::Started { .. })
                | Some(Message::Pong(_))
                | Some(Message::EverywhereDone(_)) => {}
                Some(other) => panic!("unexpected {:?} from the daemon", other.kind()),
                None => panic!(
                    "no result from the daemon in {timeout:?}; its log:\n{}",
                    self.daemon_log()
                ),
            }
        }
    }

    /// Wait until the daemon says it started task `id`.
    fn started(&mut self, id: u64) {
        loop {
            match self.next(Duration::from_secs(60)) {
                Some(Message::Started { id: s }) if s == id => return,
                Some(Message::Result(r)) => panic!("task {} ended before it started: {r:?}", r.id),
                Some(_) => {}
                None => panic!("task {id} never started; log:\n{}", self.daemon_log()),
            }
        }
    }

    /// Close the connection (the daemon reconnects).
    fn hang_up(&mut self) {
        if let Some(mut c) = self.conn.take() {
            self.rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(2), c.close(None)).await;
            });
        }
    }

    /// A value that must have come back: `1 + 1` round-trips.
    fn still_answers(&mut self, id: u64) {
        self.send(task(id, code("1 + 1")));
        let (r, _) = self.result(Duration::from_secs(60));
        assert_eq!(r.id, id);
        match r.outcome {
            Outcome::Value(v) => {
                let v = crate::rser::unserialize(&v).expect("a value");
                assert_eq!(v.as_f64(), Some(2.0));
            }
            other => panic!("1 + 1 gave {other:?}"),
        }
    }

    fn threads(&self) -> u64 {
        proc_status(self.pid(), "Threads:")
    }

    fn rss_mib(&self) -> u64 {
        proc_status(self.pid(), "VmRSS:") >> 10
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        if let Some(d) = &mut self.daemon {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

fn task(id: u64, payload: Vec<u8>) -> Message {
    Message::Task(Task {
        id,
        payload: payload.into(),
        timeout_ms: None,
        replicas: 0,
        user: String::new(),
    })
}

/// A task payload of about `mib` MiB that evaluates to 1: R's unserialize
/// reads the task and ignores the padding after it.
fn padded(mib: usize) -> Vec<u8> {
    let mut p = code("1");
    p.resize(p.len() + (mib << 20), 0);
    p
}

/// A task that runs until cancelled (or for a minute).
const LONG: &str = "Sys.sleep(60); 1";

fn failed(r: &TaskReport) -> (FailKind, String) {
    match &r.outcome {
        Outcome::Failed { kind, message } => (*kind, message.clone()),
        other => panic!("task {} did not fail: {other:?}", r.id),
    }
}

#[test]
fn a_cancel_flood_spawns_no_threads() {
    let mut h = FakeHost::connected("cancel-flood", &[]);
    // A task that does not yield to the interrupt at once: a big matrix
    // product in BLAS (the runtime stops it at the latest 2 s after the ask).
    h.send(task(
        1,
        code("m <- matrix(runif(9e6), 3000); for (i in 1:20) m <- m %*% m; 1"),
    ));
    h.started(1);
    let before = h.threads();
    let mut flood: Vec<Message> = (0..4000u64)
        .map(|i| Message::Cancel {
            id: 1_000_000 + i * 7919,
        })
        .collect();
    flood.extend((0..4000).map(|_| Message::Cancel { id: 1 }));
    flood.extend((0..20_000).map(Message::Ping));
    h.send_all(flood);
    // Watch the thread count until the task's result is back.
    let mut most = before;
    let conn = h.conn.as_mut().expect("connected");
    let pid = h.daemon.as_ref().expect("a daemon").id();
    let threads = move || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let result = h.rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            most = most.max(threads());
            match tokio::time::timeout(Duration::from_millis(5), conn.next()).await {
                Err(_) => {}
                Ok(Some(Ok(WsMessage::Binary(b)))) => {
                    if let Ok(Message::Result(r)) = protocol::decode(&b, &wide()) {
                        return Some(r);
                    }
                }
                Ok(Some(Ok(_))) => {}
                Ok(_) => return None,
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
        }
    });
    eprintln!("threads: {before} before the flood, at most {most} during it");
    let r = result.expect("the cancelled task's result");
    assert_eq!(r.id, 1);
    assert_eq!(failed(&r).0, FailKind::Cancelled, "{r:?}");
    assert!(
        most <= before + 8,
        "the daemon went from {before} to {most} threads under a cancel flood"
    );
    h.still_answers(2);
    assert!(h.threads() <= before + 8);
}

#[test]
fn tasks_beyond_one_waiting_are_refused_at_once() {
    let mut h = FakeHost::connected("busy", &["--memory", "256"]);
    h.send(task(1, code(LONG)));
    h.started(1);
    let before = h.rss_mib();
    // One task may wait behind the running one; the rest are refused.
    h.send_all((2..8).map(|id| task(id, padded(48))));
    let mut refused = Vec::new();
    for _ in 0..5 {
        let (r, _) = h.result(Duration::from_secs(30));
        let (kind, message) = failed(&r);
        assert_eq!(kind, FailKind::Rejected, "{message}");
        assert!(message.contains("daemon busy"), "{message}");
        refused.push(r.id);
    }
    refused.sort();
    assert_eq!(refused, vec![3, 4, 5, 6, 7]);
    let grown = h.rss_mib().saturating_sub(before);
    eprintln!("RSS {before} MiB, grown by {grown} MiB with tasks refused");
    assert!(
        grown < 160,
        "6 x 48 MiB tasks behind a running one grew the daemon by {grown} MiB"
    );
    // The waiting one runs once the running one is cancelled.
    h.send(Message::Cancel { id: 1 });
    let (r, _) = h.result(Duration::from_secs(30));
    assert_eq!((r.id, failed(&r).0), (1, FailKind::Cancelled));
    let (r, _) = h.result(Duration::from_secs(60));
    assert_eq!(r.id, 2);
    assert!(matches!(r.outcome, Outcome::Value(_)), "{r:?}");
    h.still_answers(8);
}

#[test]
fn a_frame_beyond_what_the_sandbox_could_hold_is_refused() {
    let mut h = FakeHost::new();
    // --memory 128: the daemon takes frames of at most 64 MiB.
    h.start_daemon("frame-bound", &["--memory", "128"]);
    h.accept(256 << 20);
    let _ = h.try_send_all([task(1, padded(65))]);
    // The connection is dropped (close frame 1009), and the daemon comes
    // back and serves.
    loop {
        match h.next(Duration::from_secs(30)) {
            None => break,
            Some(Message::Result(r)) => panic!("a 65 MiB task was taken: {r:?}"),
            Some(_) => {}
        }
    }
    h.hang_up();
    h.accept(256 << 20);
    h.still_answers(2);
}

#[test]
fn everywhere_payloads_kept_are_bounded() {
    let mut h = FakeHost::new();
    // --memory 256: at most 64 MiB of everywhere() payloads.
    h.start_daemon("everywhere-bound", &["--memory", "256"]);
    h.accept(256 << 20);
    h.send(task(1, code(LONG)));
    h.started(1);
    let before = h.rss_mib();
    h.send_all((0..5).map(|i| {
        Message::Everywhere(Everywhere {
            id: 100 + i,
            payload: padded(40).into(),
        })
    }));
    h.sync();
    let grown = h.rss_mib().saturating_sub(before);
    eprintln!("RSS {before} MiB, grown by {grown} MiB with everywhere() refused");
    h.send(Message::Cancel { id: 1 });
    let (r, _) = h.result(Duration::from_secs(30));
    assert_eq!((r.id, failed(&r).0), (1, FailKind::Cancelled));
    // Tasks after a refused everywhere() are answered with the reason.
    h.send(task(2, code("1 + 1")));
    let (r, _) = h.result(Duration::from_secs(120));
    let (kind, message) = failed(&r);
    assert_eq!(kind, FailKind::Rejected, "{message}");
    assert!(message.contains("everywhere"), "{message}");
    assert!(
        grown < 130,
        "5 x 40 MiB everywhere() payloads grew the daemon by {grown} MiB"
    );
    // A new connection starts afresh.
    h.hang_up();
    h.accept(256 << 20);
    h.still_answers(3);
}

#[test]
fn a_result_over_the_hosts_bound_is_an_error_not_a_frame() {
    let mut h = FakeHost::new();
    h.start_daemon("result-bound", &[]);
    h.accept(1 << 20);
    h.send(task(1, code("raw(2e6)")));
    let (r, len) = h.result(Duration::from_secs(60));
    assert!(len <= 1 << 20, "a {len}-byte result frame to a 1 MiB host");
    let (kind, message) = failed(&r);
    assert_eq!(kind, FailKind::Rejected, "{message}");
    assert!(message.contains("result too large"), "{message}");
    assert!(message.contains("1048576"), "{message}");
    h.still_answers(2);
}

#[test]
fn a_local_result_over_max_payload_is_an_error() {
    let mut host = Host::start(
        "local-result-bound",
        &["--local", "1", "--no-listen", "--max-payload", "1"],
    );
    host.submit(1, code("raw(2e6)"), 0);
    let r = host.result(Duration::from_secs(120));
    assert_eq!(r.status, status::REJECTED, "{}", r.text());
    assert!(r.text().contains("result too large"), "{}", r.text());
    host.submit(2, code("raw(1000)"), 0);
    let r = host.result(Duration::from_secs(60));
    assert_eq!(r.status, status::VALUE, "{}", r.text());
}

#[test]
fn a_remote_result_over_max_payload_is_an_error() {
    let mut host = Host::start("remote-result-bound", &["--max-payload", "1"]);
    host.daemon("remote-result-bound-daemon", &[]);
    host.wait_connections(1);
    host.submit(1, code("raw(2e6)"), 0);
    let r = host.result(Duration::from_secs(120));
    assert_eq!(r.status, status::REJECTED, "{}", r.text());
    assert!(r.text().contains("result too large"), "{}", r.text());
    host.submit(2, code("1 + 1"), 0);
    assert_eq!(host.result(Duration::from_secs(60)).value(), 2.0);
    let (c, _) = host.info();
    assert_eq!(c["cumulative"], 1, "the daemon was never dropped");
}

#[test]
fn a_daemon_does_not_tell_the_host_who_runs_it() {
    let mut h = FakeHost::new();
    h.start_daemon("anonymous", &["--autoexit"]);
    let hello = h.accept(256 << 20);
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    assert_eq!(
        unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) },
        0
    );
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let hostname = String::from_utf8_lossy(&buf[..end]).into_owned();
    assert!(
        !hello.name.contains(&hostname),
        "{:?} names the host",
        hello.name
    );
    assert!(
        !hello.name.contains(&h.pid().to_string()),
        "{:?} gives the PID",
        hello.name
    );
    h.hang_up();
    let status = wait_exit(
        h.daemon.as_mut().expect("a daemon"),
        Duration::from_secs(30),
    );
    assert!(status.success());

    h.start_daemon("named", &["--name", "lab-box-3", "--autoexit"]);
    assert_eq!(h.accept(256 << 20).name, "lab-box-3");
}

#[test]
fn a_runaway_everywhere_stops_with_its_connection() {
    let mut h = FakeHost::connected("runaway-everywhere", &[]);
    h.send(Message::Everywhere(Everywhere {
        id: 1,
        payload: code("repeat {}").into(),
    }));
    // Give it time to start spinning, then go away.
    std::thread::sleep(Duration::from_millis(500));
    h.hang_up();
    h.accept(256 << 20);
    h.still_answers(1);
}

#[test]
fn tasks_of_a_lost_connection_do_not_run_on_the_next() {
    let mut h = FakeHost::connected("stale", &[]);
    h.send(task(1, code(LONG)));
    h.started(1);
    // A task waiting behind it when the connection goes.
    h.send(task(2, code(LONG)));
    h.hang_up();
    h.accept(256 << 20);
    // The new connection's task is the next to run, at once.
    h.send(task(3, code("1 + 1")));
    let (r, _) = h.result(Duration::from_secs(30));
    assert_eq!(r.id, 3, "{r:?}");
}

#[test]
fn an_endless_timeout_does_not_break_the_daemon() {
    let mut h = FakeHost::connected("endless-timeout", &["--task-timeout", "100"]);
    h.send(Message::Task(Task {
        id: 1,
        payload: code("1 + 1").into(),
        timeout_ms: Some(u64::MAX),
        replicas: 0,
        user: String::new(),
    }));
    let (r, _) = h.result(Duration::from_secs(60));
    assert!(matches!(r.outcome, Outcome::Value(_)), "{r:?}");
    h.still_answers(2);
}

#[test]
fn a_reused_id_and_everywhere_while_busy_are_each_answered_once() {
    let mut h = FakeHost::connected("reused-id", &[]);
    h.send(task(1, code(LONG)));
    h.started(1);
    // The same id again (it waits), and everywhere() code while busy.
    h.send(task(1, code(LONG)));
    h.send(Message::Everywhere(Everywhere {
        id: 9,
        payload: code("assign('z', 41, globalenv())").into(),
    }));
    // One cancel stops the running one and answers the waiting one.
    h.send(Message::Cancel { id: 1 });
    for _ in 0..2 {
        let (r, _) = h.result(Duration::from_secs(30));
        assert_eq!((r.id, failed(&r).0), (1, FailKind::Cancelled), "{r:?}");
    }
    h.send(task(2, code("z + 1")));
    let (r, _) = h.result(Duration::from_secs(60));
    match r.outcome {
        Outcome::Value(v) => {
            let v = crate::rser::unserialize(&v).expect("a value");
            assert_eq!(v.as_f64(), Some(42.0));
        }
        other => panic!("z + 1 gave {other:?}"),
    }
}

#[test]
fn a_host_that_never_completes_the_handshake_does_not_hold_the_daemon() {
    let mut h = FakeHost::new();
    h.start_daemon("silent-host", &["--handshake-timeout", "1"]);
    // Take the connection and say nothing: no TLS, no welcome.
    let silent = h.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(300), h.listener.accept())
            .await
            .expect("the daemon connects")
            .expect("accept")
    });
    // The daemon gives up on it and dials again.
    h.accept(256 << 20);
    drop(silent);
    h.still_answers(1);
}

#[test]
fn everywhere_state_is_reported_once_and_does_not_outlive_its_connection() {
    let mut h = FakeHost::connected("everywhere-session", &[]);
    h.send(Message::Everywhere(Everywhere {
        id: 4,
        payload: code("assign('z', 41, globalenv()); z").into(),
    }));
    match h.next(Duration::from_secs(60)) {
        Some(Message::EverywhereDone(r)) => {
            assert_eq!(r.id, 4);
            assert!(matches!(r.outcome, Outcome::Value(_)), "{r:?}");
        }
        other => panic!("{other:?}"),
    }
    for id in 1..3 {
        h.send(task(id, code("z + 1")));
        let (r, _) = h.result(Duration::from_secs(60));
        let Outcome::Value(v) = r.outcome else {
            panic!("{r:?}")
        };
        assert_eq!(crate::rser::unserialize(&v).unwrap().as_f64(), Some(42.0));
    }
    // A new connection starts from R's own start: no z.
    h.hang_up();
    h.accept(256 << 20);
    h.send(task(3, code("if (exists('z')) 1 else 0")));
    let (r, _) = h.result(Duration::from_secs(60));
    let Outcome::Value(v) = r.outcome else {
        panic!("{r:?}")
    };
    assert_eq!(crate::rser::unserialize(&v).unwrap().as_f64(), Some(0.0));
}

#[test]
fn everywhere_payloads_kept_are_bounded_in_number_too() {
    let mut h = FakeHost::connected("everywhere-count", &[]);
    // Empty-ish payloads, one more than a daemon keeps.
    h.send_all((0..1025).map(|i| {
        Message::Everywhere(Everywhere {
            id: i,
            payload: code("NULL").into(),
        })
    }));
    h.send(task(1, code("1 + 1")));
    let (r, _) = h.result(Duration::from_secs(300));
    let (kind, message) = failed(&r);
    assert_eq!(kind, FailKind::Rejected, "{message}");
    assert!(message.contains("1025 payloads"), "{message}");
}

#[test]
fn a_host_that_drops_every_connection_at_once_gets_a_growing_backoff() {
    let mut h = FakeHost::new();
    h.start_daemon("hang-ups", &["--max-backoff", "2"]);
    for _ in 0..4 {
        h.accept(256 << 20);
        h.hang_up();
    }
    h.accept(256 << 20);
    h.still_answers(1);
    let log = h.daemon_log();
    assert!(
        log.contains("reconnecting in 2.0s"),
        "the backoff did not grow:\n{log}"
    );
}

/// Terminal control sequences a host might put in what the daemon shows.
const NASTY: &str = "\x1b]0;owned\x07\x1b[2J\x1b]52;c;cGF5bG9hZA==\x07\u{9b}31m";

#[test]
fn what_a_host_says_reaches_the_volunteers_terminal_neutralised() {
    let mut h = FakeHost::new();
    h.start_daemon("terminal", &[]);
    // A welcome whose version, and a shutdown whose reason, carry control
    // sequences.
    let acceptor = h.acceptor.clone();
    let conn = h.rt.block_on(async {
        let (tcp, _) = h.listener.accept().await.expect("accept");
        let tls = acceptor.accept(tcp).await.expect("TLS");
        let mut ws = tokio_tungstenite::accept_async(tls).await.expect("upgrade");
        let _ = ws::recv(&mut ws, &wide()).await;
        let welcome = Message::Welcome(Welcome {
            id: 1,
            hako_version: NASTY.into(),
            limits: FrameLimits::default(),
            heartbeat_ms: 15_000,
        });
        ws::send(&mut ws, &welcome).await.expect("welcome");
        ws
    });
    h.conn = Some(conn);
    h.send(Message::Shutdown {
        reason: NASTY.into(),
    });
    // Then refuse it outright.
    let refused = h.rt.block_on(async {
        let (tcp, _) = h.listener.accept().await.expect("accept");
        let tls = acceptor.accept(tcp).await.expect("TLS");
        let mut ws = tokio_tungstenite::accept_async(tls).await.expect("upgrade");
        let _ = ws::recv(&mut ws, &wide()).await;
        let refused = Message::Refused {
            reason: NASTY.into(),
        };
        ws::send(&mut ws, &refused).await.expect("refused");
        ws
    });
    let status = wait_exit(
        h.daemon.as_mut().expect("a daemon"),
        Duration::from_secs(30),
    );
    drop(refused);
    assert_eq!(status.code(), Some(1));
    let log = h.daemon_log();
    assert!(
        log.contains("owned"),
        "the daemon shows what the host said:\n{log}"
    );
    assert!(
        !log.contains('\x1b') && !log.contains('\x07') && !log.contains('\u{9b}'),
        "control characters from the host reached the terminal:\n{log:?}"
    );
}
