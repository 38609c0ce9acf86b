//! Fair share between users, observed in dispatch order: two named users
//! (`hako user add`) on one host and one daemon; alice queues a backlog,
//! then bob submits one task. Under `--schedule fair` (the default) bob's
//! task runs after at most a couple of alice's; under `--schedule fifo`
//! after all of them. Each task returns the daemon's clock when it ran, and
//! one daemon runs one task at a time, so the values give the order.

use crate::common::{code, hako, log_file, Host};
use crate::linkframe::{self as lf, LinkIn, LinkOut};
use crate::rser;
use bytes::Bytes;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Alice's backlog.
const BACKLOG: u32 = 30;

/// `hako client` with a user's token: a remote R session's link.
struct Client {
    child: Child,
    w: ChildStdin,
    rx: mpsc::Receiver<LinkOut>,
    log: std::path::PathBuf,
}

impl Client {
    fn start(host: &Host, token: &str, name: &str) -> Client {
        let (log, path) = log_file(name);
        let mut child = hako()
            .args(["client", &host.get("url")])
            .args(["--fingerprint", &host.get("fingerprint")])
            .env("HAKO_CLIENT_TOKEN", token)
            .env("HAKO_LOG", "hako=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let mut r = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || loop {
            let mut len = [0u8; 4];
            if r.read_exact(&mut len).is_err() {
                return;
            }
            let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
            if buf.is_empty() || r.read_exact(&mut buf).is_err() {
                return;
            }
            if tx.send(lf::parse_out(buf[0], &buf[1..]).unwrap()).is_err() {
                return;
            }
        });
        let w = child.stdin.take().unwrap();
        let c = Client {
            child,
            w,
            rx,
            log: path,
        };
        match c.next() {
            LinkOut::Ready(_) => {}
            other => panic!("expected READY, got {other:?}; {}", c.log_text()),
        }
        c
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn next(&self) -> LinkOut {
        self.rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("nothing from hako client; {}", self.log_text()))
    }

    fn submit(&mut self, id: u32, src: &str) {
        let m = LinkIn::Task {
            id,
            timeout_ms: 0,
            payload: Bytes::from(code(src)),
        };
        self.w.write_all(&lf::encode_in(&m)).unwrap();
        self.w.flush().unwrap();
    }

    /// The next result's (id, number).
    fn result(&self) -> (u32, f64) {
        loop {
            match self.next() {
                LinkOut::Result {
                    id,
                    status,
                    payload,
                    ..
                } => {
                    assert_eq!(status, lf::status::VALUE, "task {id} failed");
                    let v = rser::unserialize(&payload).unwrap().as_f64().unwrap();
                    return (id, v);
                }
                LinkOut::Notice(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hako user add NAME` in `dir`; the user's token, from the store.
fn add_user(dir: &Path, name: &str) -> String {
    let out = hako()
        .args(["user", "add", name, "--identity"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("users.json")).unwrap()).unwrap();
    v["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// How many of alice's tasks ran before bob's, with both queued before the
/// one daemon joined (so the order is the scheduler's alone).
fn alice_tasks_before_bob(schedule: &str) -> usize {
    let id = tempfile::tempdir().unwrap();
    let dir = id.path().join("identity");
    let (alice, bob) = (add_user(&dir, "alice"), add_user(&dir, "bob"));
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
    let mut a = Client::start(&host, &alice, &format!("fair-share-{schedule}-alice"));
    let mut b = Client::start(&host, &bob, &format!("fair-share-{schedule}-bob"));
    let when = "as.numeric(Sys.time())";
    for i in 1..=BACKLOG {
        a.submit(i, when);
    }
    let queued =
        |n: u64| move |c: &std::collections::HashMap<String, u64>, _: &[_]| c["awaiting"] == n;
    host.wait_for(
        "alice's backlog",
        Duration::from_secs(30),
        queued(BACKLOG as u64),
    );
    b.submit(1, when);
    host.wait_for(
        "bob's task",
        Duration::from_secs(30),
        queued(BACKLOG as u64 + 1),
    );
    host.daemon(&format!("fair-share-{schedule}-daemon"), &["--jobs", "1"]);
    let (_, bob_ran) = b.result();
    let mut alice_ran = Vec::new();
    for _ in 0..BACKLOG {
        alice_ran.push(a.result());
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
