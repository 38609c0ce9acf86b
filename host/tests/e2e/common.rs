//! A host (`hako host --stdio`) driven through its client link, and
//! `hako daemon` children: the real binary, real TLS on loopback, real
//! sandboxes.

use crate::linkframe::{self as lf, LinkIn, LinkOut};
use crate::rser;
use bytes::Bytes;
use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn hako() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hako"))
}

/// `hako host` with one local worker and only its socket link (no daemon
/// listener), writing its link file at `file`.
pub fn socket_link_host(file: &std::path::Path) -> Command {
    let mut c = hako();
    c.args([
        "host",
        "--no-listen",
        "--local",
        "1",
        "--link",
        "127.0.0.1:0",
        "--link-file",
    ])
    .arg(file);
    c
}

/// A child in the background: no stdin or stdout, its debug log in
/// `log_file(name)` (returned, to show when a test fails).
pub fn spawn_logged(cmd: &mut Command, name: &str) -> (Child, std::path::PathBuf) {
    let (log, path) = log_file(name);
    let child = cmd
        .env("HAKO_LOG", "hako=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    (child, path)
}

/// Where a child's stderr goes, to show when a test fails.
pub fn log_file(name: &str) -> (std::fs::File, std::path::PathBuf) {
    let dir = std::env::temp_dir().join("hako-e2e");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{name}-{}.log", std::process::id()));
    (std::fs::File::create(&path).expect("log file"), path)
}

pub struct Host {
    child: Child,
    w: Option<BufWriter<ChildStdin>>,
    rx: mpsc::Receiver<LinkOut>,
    pub ready: HashMap<String, String>,
    pub log: std::path::PathBuf,
    daemons: Vec<Child>,
}

fn read_loop(r: impl Read, tx: mpsc::Sender<LinkOut>) {
    let mut r = BufReader::new(r);
    loop {
        let mut len = [0u8; 4];
        if r.read_exact(&mut len).is_err() {
            return;
        }
        let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
        if buf.is_empty() || r.read_exact(&mut buf).is_err() {
            return;
        }
        let m = lf::parse_out(buf[0], &buf[1..]).expect("a well-formed frame from the host");
        if tx.send(m).is_err() {
            return;
        }
    }
}

/// A result as the tests look at it.
#[derive(Debug)]
pub struct Res {
    pub id: u32,
    pub status: u8,
    pub payload: Bytes,
}

impl Res {
    pub fn value(&self) -> f64 {
        assert_eq!(
            self.status,
            lf::status::VALUE,
            "task {} failed: {}",
            self.id,
            self.text()
        );
        rser::unserialize(&self.payload)
            .expect("a serialized value")
            .as_f64()
            .expect("a number")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Boot R once before tests start hosts in parallel: on a cold cache every
/// process would otherwise boot and persist the pristine snapshot at once.
fn warm_up() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let out = hako()
            .args(["eval", "1"])
            .output()
            .expect("running hako eval");
        assert!(
            out.status.success(),
            "hako eval failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

impl Host {
    pub fn start(name: &str, args: &[&str]) -> Host {
        Host::start_env(name, args, &[])
    }

    /// [`Host::start`] with environment variables (e.g. a private package
    /// store in `HAKO_PACKAGES`).
    pub fn start_env(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Host {
        warm_up();
        let (log, path) = log_file(name);
        let mut child = hako()
            .arg("host")
            .arg("--stdio")
            .args(args)
            .envs(envs.iter().copied())
            .env("HAKO_LOG", "hako=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting hako host");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || read_loop(stdout, tx));
        let mut h = Host {
            child,
            w: Some(BufWriter::new(stdin)),
            rx,
            ready: HashMap::new(),
            log: path,
            daemons: Vec::new(),
        };
        match h.recv(Duration::from_secs(60)) {
            LinkOut::Ready(t) => h.ready = lf::parse_kv(&t).into_iter().collect(),
            other => panic!("expected READY, got {other:?}"),
        }
        h
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn get(&self, k: &str) -> String {
        self.ready
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("READY has no {k}: {:?}", self.ready))
    }

    pub fn send(&mut self, m: &LinkIn) {
        let w = self.w.as_mut().expect("link open");
        w.write_all(&lf::encode_in(m)).expect("writing to the host");
        w.flush().expect("flushing to the host");
    }

    /// Queue without flushing (for bursts).
    pub fn feed(&mut self, m: &LinkIn) {
        let w = self.w.as_mut().expect("link open");
        w.write_all(&lf::encode_in(m)).expect("writing to the host");
    }

    pub fn flush(&mut self) {
        self.w.as_mut().expect("link open").flush().expect("flush");
    }

    pub fn submit(&mut self, id: u32, payload: Vec<u8>, timeout_ms: u32) {
        self.send(&LinkIn::Task {
            id,
            timeout_ms,
            payload: Bytes::from(payload),
        });
    }

    pub fn recv(&self, timeout: Duration) -> LinkOut {
        match self.rx.recv_timeout(timeout) {
            Ok(m) => m,
            Err(e) => panic!(
                "nothing from the host in {timeout:?} ({e}); its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            ),
        }
    }

    /// The next result, skipping notices and acks.
    pub fn result(&self, timeout: Duration) -> Res {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                LinkOut::Result {
                    id,
                    status,
                    payload,
                    ..
                } => {
                    return Res {
                        id,
                        status,
                        payload,
                    }
                }
                LinkOut::Notice(_)
                | LinkOut::EverywhereAck { .. }
                | LinkOut::Info(_)
                | LinkOut::Pong(_) => {}
                LinkOut::Ready(_) => panic!("a second READY"),
            }
        }
    }

    /// Counters and daemon rows from INFO.
    pub fn info(&mut self) -> (HashMap<String, u64>, Vec<HashMap<String, String>>) {
        self.send(&LinkIn::Info);
        let text = loop {
            match self.recv(Duration::from_secs(10)) {
                LinkOut::Info(t) => break t,
                LinkOut::Result { id, .. } => {
                    panic!("unexpected result {id} while waiting for INFO")
                }
                _ => {}
            }
        };
        let (counters, table) = text.split_once("\n\n").expect("INFO has two parts");
        let counters = lf::parse_kv(counters)
            .into_iter()
            .map(|(k, v)| (k, v.parse().expect("a count")))
            .collect();
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
        let rows = lines
            .map(|l| {
                header
                    .iter()
                    .map(|h| h.to_string())
                    .zip(l.split('\t').map(String::from))
                    .collect()
            })
            .collect();
        (counters, rows)
    }

    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ok: impl FnMut(&HashMap<String, u64>, &[HashMap<String, String>]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let (c, rows) = self.info();
            if ok(&c, &rows) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}: {c:?} {rows:?}; host log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_connections(&mut self, n: u64) {
        self.wait_for(
            &format!("{n} connections"),
            Duration::from_secs(60),
            |c, _| c["connections"] == n,
        );
    }

    /// `hako daemon` for this host, with extra arguments; the token in the
    /// environment, as the host's printed command passes it.
    pub fn daemon_cmd(&self, extra: &[&str]) -> Command {
        let mut c = hako();
        c.arg("daemon")
            .arg(self.get("url"))
            .env("HAKO_TOKEN", self.get("token"))
            .args(["--fingerprint", &self.get("fingerprint")])
            .args(extra);
        c
    }

    /// Start a daemon that is killed with the host.
    pub fn daemon(&mut self, name: &str, extra: &[&str]) -> usize {
        let (child, _) = spawn_logged(&mut self.daemon_cmd(extra), name);
        self.daemons.push(child);
        self.daemons.len() - 1
    }

    pub fn daemon_child(&mut self, i: usize) -> &mut Child {
        &mut self.daemons[i]
    }

    /// Close the link: the host shuts down.
    pub fn close_link(&mut self) {
        self.w = None;
    }

    /// Wait for the host process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        wait_exit(&mut self.child, timeout)
    }
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// R code as a task payload.
pub fn code(src: &str) -> Vec<u8> {
    rser::code_task(src)
}

/// A number from a process's /proc status (`VmRSS:`, `VmHWM:` in KiB,
/// `Threads:`): the tests that bound a process's memory or threads read it
/// the same way.
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// The hello of a lightweight protocol peer (a fake daemon or client) that
/// claims 1 GiB of memory, and `task_timeout_ms` as its task bound.
pub fn peer_hello(
    role: crate::protocol::Role,
    token: impl Into<String>,
    name: &str,
    task_timeout_ms: Option<u64>,
) -> crate::protocol::HelloBody {
    crate::protocol::HelloBody {
        role,
        token: token.into(),
        name: name.into(),
        limits: crate::protocol::DaemonLimits {
            memory_bytes: 1 << 30,
            task_timeout_ms,
            ..Default::default()
        },
        caps: crate::protocol::Capabilities::default(),
    }
}

/// A single-threaded tokio runtime for the tests that speak the protocol
/// themselves (fake daemons, clients and hosts).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The shell command that starts with `VAR=` in what `hako host` or
/// `hako user add` printed, ready to run as the friend who was sent it
/// would paste it (the token in the environment, never in argv), and the
/// token.
pub fn printed_command(printed: &str, var: &str) -> (Command, String) {
    let prefix = format!("{var}=");
    let line = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}...` command in:\n{printed}"));
    let mut words = line.split(' ');
    let token = words.next().unwrap()[prefix.len()..].to_string();
    assert!(
        !token.is_empty() && token.chars().all(|c| c.is_ascii_alphanumeric()),
        "{line}"
    );
    assert_eq!(words.next(), Some("hako"), "{line}");
    let mut c = hako();
    c.args(words).env(var, &token);
    (c, token)
}

/// `hako user ARGS --identity DIR`; its stdout, or a panic with stderr.
pub fn user(dir: &std::path::Path, args: &[&str]) -> String {
    let out = user_output(dir, args);
    assert!(
        out.status.success(),
        "hako user {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `hako user ARGS --identity DIR`, however it ends.
pub fn user_output(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    hako()
        .arg("user")
        .args(args)
        .arg("--identity")
        .arg(dir)
        .output()
        .unwrap()
}

/// A user's token, from the store in `dir`.
pub fn token_of(dir: &std::path::Path, name: &str) -> String {
    let store = std::fs::read_to_string(dir.join("users.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&store).unwrap();
    let users = v["users"].as_array().unwrap();
    let u = users.iter().find(|u| u["name"] == name);
    let u = u.unwrap_or_else(|| panic!("no {name} in {store}"));
    u["token"].as_str().unwrap().to_string()
}

/// A `hako client` child bridging a link on its stdio to a remote host, as
/// an R session's `daemons(url = , token = )` runs it.
pub struct RemoteClient {
    child: Child,
    w: ChildStdin,
    rx: mpsc::Receiver<LinkOut>,
    pub log: std::path::PathBuf,
}

impl RemoteClient {
    /// Start `cmd` (`hako client URL ...`, its token in the environment)
    /// and wait for its READY.
    pub fn start(cmd: &mut Command, name: &str) -> RemoteClient {
        let (log, path) = log_file(name);
        let mut child = cmd
            .env("HAKO_LOG", "hako=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || read_loop(stdout, tx));
        let w = child.stdin.take().expect("stdin");
        let c = RemoteClient {
            child,
            w,
            rx,
            log: path,
        };
        match c.next() {
            Some(LinkOut::Ready(_)) => {}
            other => panic!("expected READY, got {other:?}; {}", c.log_text()),
        }
        c
    }

    /// `hako client` to `host` with `token` (a user's or the shared client
    /// token), started as [`RemoteClient::start`] does.
    pub fn connect(host: &Host, token: &str, name: &str) -> RemoteClient {
        let mut cmd = hako();
        cmd.args(["client", &host.get("url")])
            .args(["--fingerprint", &host.get("fingerprint")])
            .env("HAKO_CLIENT_TOKEN", token);
        RemoteClient::start(&mut cmd, name)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The notices until the link ends (the host's reason for closing it).
    pub fn notices_until_end(&self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match self.next() {
                None => return out,
                Some(LinkOut::Notice(n)) => out.push(n),
                Some(_) => {}
            }
        }
    }

    /// Wait for `hako client` to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        wait_exit(&mut self.child, timeout)
    }

    /// The next frame (`None`: the link ended).
    pub fn next(&self) -> Option<LinkOut> {
        match self.rx.recv_timeout(Duration::from_secs(120)) {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(e) => panic!("nothing from hako client ({e}); {}", self.log_text()),
        }
    }

    /// Send a task to run on `replicas` distinct daemons (0: the host's
    /// default, a plain TASK), as `hako(..., .replicas = k)` does.
    pub fn submit(&mut self, id: u32, replicas: u32, payload: Vec<u8>) {
        let payload = Bytes::from(payload);
        let m = match replicas {
            0 => LinkIn::Task {
                id,
                timeout_ms: 0,
                payload,
            },
            _ => LinkIn::TaskReplicas {
                id,
                timeout_ms: 0,
                replicas,
                payload,
            },
        };
        self.w.write_all(&lf::encode_in(&m)).expect("writing");
        self.w.flush().expect("flushing");
    }

    /// The next result, skipping notices.
    pub fn result(&self) -> Res {
        loop {
            match self.next() {
                Some(LinkOut::Result {
                    id,
                    status,
                    payload,
                    ..
                }) => {
                    return Res {
                        id,
                        status,
                        payload,
                    }
                }
                Some(LinkOut::Notice(_)) => {}
                other => panic!("expected a result, got {other:?}; {}", self.log_text()),
            }
        }
    }
}

impl Drop for RemoteClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A lying daemon: a fake speaking the real protocol that joins with
/// `token` as `name` and answers every task at once with the number `lie`,
/// a wrong but valid serialized R value. It runs until the host closes its
/// connection ([`Liar::ended`] says why) or it is dropped (then it says bye).
pub struct Liar {
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<String>>,
}

impl Liar {
    /// Join the host at `url` (its certificate pinned to `fingerprint`);
    /// returns once the host has welcomed it.
    pub fn join(url: &str, fingerprint: &str, token: &str, name: &str, lie: f64) -> Liar {
        use crate::protocol::{FrameLimits, Message, Outcome, Role, TaskReport};
        use crate::{dial, tls, ws};
        use std::sync::atomic::Ordering;
        let target = dial::parse_url(url).expect("a host URL");
        let trust = tls::Trust::Pinned(tls::parse_fingerprint(fingerprint).expect("a pin"));
        let hello = peer_hello(Role::Daemon, token, name, None);
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = answered.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (joined, welcomed) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            runtime().block_on(async move {
                let limits = FrameLimits {
                    control: 1 << 20,
                    bulk: 64 << 20,
                };
                let mut c = match dial::dial(&target, &trust, limits, hello).await {
                    Ok((c, _)) => c,
                    Err(e) => {
                        let _ = joined.send(Err(e.to_string()));
                        return String::new();
                    }
                };
                let _ = joined.send(Ok(()));
                let lie = Outcome::Value(Bytes::from(rser::serialize(&rser::RObj::Real(vec![
                    lie,
                ]))));
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        m = ws::recv(&mut c, &limits) => match m {
                            Ok(Message::Task(t)) => {
                                // Counted before the host can see it, so
                                // that no result reaches a client first.
                                count.fetch_add(1, Ordering::SeqCst);
                                let r = TaskReport { id: t.id, outcome: lie.clone(), output: vec![] };
                                let sent = async {
                                    ws::send(&mut c, &Message::Started { id: t.id }).await?;
                                    ws::send(&mut c, &Message::Result(r)).await
                                };
                                if let Err(e) = sent.await {
                                    return e.to_string();
                                }
                            }
                            Ok(Message::Ping(n)) => {
                                if let Err(e) = ws::send(&mut c, &Message::Pong(n)).await {
                                    return e.to_string();
                                }
                            }
                            Ok(_) => {}
                            Err(e) => return e.to_string(),
                        },
                    }
                }
                let _ = ws::send(&mut c, &Message::Bye { reason: "done lying".into() }).await;
                String::new()
            })
        });
        match welcomed.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the liar {name} was not let in: {e}"),
            Err(_) => panic!("the liar {name}'s thread ended"),
        }
        Liar {
            answered,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The tasks it has answered (every one with its lie).
    pub fn answered(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wait (a minute at most) until the host closes its connection: why
    /// it did.
    pub fn ended(mut self) -> String {
        let thread = self.thread.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "the host never closed the liar");
            std::thread::sleep(Duration::from_millis(20));
        }
        thread.join().expect("the liar's thread")
    }
}

impl Drop for Liar {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
