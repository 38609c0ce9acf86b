//! Named users and volunteers (`hako user`, a host's `--identity DIR`):
//! each with a token of their own, revoked or refused while the host runs,
//! their connections closed with a reason that reaches the R side, and a
//! revoked volunteer's daemon stopping instead of retrying for ever.

use crate::common::{self, code, hako, log_file, spawn_logged, wait_exit, Host};
use crate::linkframe::{self as lf, LinkIn, LinkOut};
use crate::protocol::{FrameLimits, Message, Role};
use crate::{dial, rser, tls, ws};
use bytes::Bytes;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `hako user ARGS --identity DIR`; its stdout, or a panic with stderr.
fn user(dir: &Path, args: &[&str]) -> String {
    let out = user_output(dir, args);
    assert!(
        out.status.success(),
        "hako user {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn user_output(dir: &Path, args: &[&str]) -> std::process::Output {
    hako()
        .arg("user")
        .args(args)
        .arg("--identity")
        .arg(dir)
        .output()
        .unwrap()
}

/// A user's token, from the store.
fn token_of(dir: &Path, name: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("users.json")).unwrap()).unwrap();
    v["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in the store"))["token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn host_with_users(name: &str, dir: &Path, local: &str) -> Host {
    let d = dir.to_str().unwrap();
    Host::start(
        name,
        &["--identity", d, "--listen", "127.0.0.1:0", "--local", local],
    )
}

/// Wait until `path` (a log) contains `what`.
fn wait_log(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(what) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {what:?} in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `hako client` bridging a link on its stdio to the host, as an R
/// session's remote link does: frames from it arrive on `rx` (`None` at
/// the end of its output).
struct Client {
    child: Child,
    w: ChildStdin,
    rx: mpsc::Receiver<Option<LinkOut>>,
    log: PathBuf,
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
                let _ = tx.send(None);
                return;
            }
            let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
            if buf.is_empty() || r.read_exact(&mut buf).is_err() {
                let _ = tx.send(None);
                return;
            }
            let _ = tx.send(Some(lf::parse_out(buf[0], &buf[1..]).unwrap()));
        });
        let w = child.stdin.take().unwrap();
        let c = Client {
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

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn next(&self) -> Option<LinkOut> {
        self.rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("nothing from hako client; {}", self.log_text()))
    }

    fn send(&mut self, id: u32, payload: Vec<u8>) {
        self.w
            .write_all(&lf::encode_in(&LinkIn::Task {
                id,
                timeout_ms: 0,
                payload: Bytes::from(payload),
            }))
            .unwrap();
        self.w.flush().unwrap();
    }

    /// The next result: id, status, payload.
    fn result(&self) -> (u32, u8, Bytes) {
        loop {
            match self.next() {
                Some(LinkOut::Result {
                    id,
                    status,
                    payload,
                    ..
                }) => return (id, status, payload),
                Some(LinkOut::Notice(_)) => {}
                other => panic!("expected a result, got {other:?}; {}", self.log_text()),
            }
        }
    }

    /// Run `1 + x` and return the value.
    fn plus_one(&mut self, id: u32, x: f64) -> f64 {
        self.send(id, rser::plus_one(x));
        let (got, _, payload) = self.result();
        assert_eq!(got, id);
        rser::unserialize(&payload).unwrap().as_f64().unwrap()
    }

    /// The notices until the link ends.
    fn notices_until_end(&self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match self.next() {
                None => return out,
                Some(LinkOut::Notice(n)) => out.push(n),
                Some(_) => {}
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

/// `hako client` with `token`, which the host refuses: what it says.
fn refused_client(host: &Host, token: &str) -> String {
    let out = hako()
        .args(["client", &host.get("url")])
        .args(["--fingerprint", &host.get("fingerprint")])
        .env("HAKO_CLIENT_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

#[test]
fn two_users_submit_and_a_revoked_one_is_closed_mid_session_and_refused() {
    let id = tempfile::tempdir().unwrap();
    let dir = id.path().join("identity");
    let before = user(&dir, &["add", "alice", "--weight", "2"]);
    assert!(before.contains("has not listened yet"), "{before}");
    let mut host = host_with_users("users-two", &dir, "1");
    // Added while the host runs: taken within a second.
    let printed = user(&dir, &["add", "bob", "--max-in-flight", "1"]);
    let (alice, bob) = (token_of(&dir, "alice"), token_of(&dir, "bob"));
    assert_ne!(alice, bob);
    // The line to send bob: this host's URL, pin and bob's token, in R.
    let line = format!(
        "hako::daemons(url = \"{}\", token = \"{bob}\", fingerprint = \"{}\")",
        host.get("url"),
        host.get("fingerprint")
    );
    assert!(printed.contains(&line), "{printed}");
    // The store is private to its owner.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("users.json")), 0o600);
    assert_eq!(mode(&dir), 0o700);
    let list = user(&dir, &["list"]);
    assert!(list.contains("alice") && list.contains("bob"), "{list}");
    assert!(!list.contains(&alice) && !list.contains(&bob), "{list}");

    let mut a = Client::start(&host, &alice, "users-alice");
    // A token the host never gave out.
    let err = refused_client(&host, &"x".repeat(20));
    assert!(err.contains("wrong token"), "{err}");
    // bob's token is taken once the host has read the store again.
    wait_log(&host.log, "rules replaced");
    let mut b = Client::start(&host, &bob, "users-bob");
    assert_eq!(a.plus_one(1, 1.0), 2.0);
    assert_eq!(b.plus_one(1, 10.0), 11.0);
    // The shared client token works alongside the named ones.
    let mut shared = Client::start(&host, &host.get("client_token"), "users-shared");
    assert_eq!(shared.plus_one(1, 5.0), 6.0);
    // bob's limit from the store: one task in flight, a second is refused.
    b.send(5, code("{ Sys.sleep(2); 1 }"));
    b.send(6, rser::plus_one(0.0));
    let (id, status, text) = b.result();
    let text = String::from_utf8_lossy(&text);
    assert_eq!((id, status), (6, lf::status::REJECTED), "{text}");
    assert!(text.contains("user bob may have at most 1 tasks"), "{text}");
    assert_eq!(b.result().0, 5);

    // Revoked mid-session: alice's link is told why and ends.
    user(&dir, &["revoke", "alice"]);
    let notices = a.notices_until_end();
    assert!(
        notices.iter().any(|n| n.contains("revoked")),
        "{notices:?}; {}",
        a.log_text()
    );
    assert_eq!(
        wait_exit(&mut a.child, Duration::from_secs(10)).code(),
        Some(1)
    );
    // Her token is refused as revoked; bob carries on.
    let err = refused_client(&host, &alice);
    assert!(err.contains("this token was revoked"), "{err}");
    assert_eq!(b.plus_one(2, 20.0), 21.0);
    let list = user(&dir, &["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("alice") && l.contains("revoked")),
        "{list}"
    );

    // A store that does not parse is reported and the rules stay.
    let good = std::fs::read_to_string(dir.join("users.json")).unwrap();
    std::fs::write(dir.join("users.json"), "{ \"users\": [ oops").unwrap();
    wait_log(&host.log, "is not a valid user store");
    let mut b2 = Client::start(&host, &bob, "users-bob2");
    assert_eq!(b2.plus_one(1, 30.0), 31.0);
    assert!(refused_client(&host, &alice).contains("revoked"));
    std::fs::write(dir.join("users.json"), good).unwrap();
    assert_eq!(b.plus_one(3, 40.0), 41.0);
    host.close_link();
}

#[test]
fn a_revoked_volunteer_stops_with_a_clear_message() {
    let id = tempfile::tempdir().unwrap();
    let dir = id.path().join("identity");
    let mut host = host_with_users("users-volunteer", &dir, "0");
    let printed = user(&dir, &["add", "vic", "--volunteer"]);
    // Run the printed command as the volunteer would paste it.
    let cmd = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("HAKO_TOKEN="))
        .unwrap_or_else(|| panic!("no daemon command in {printed}"));
    let mut words = cmd.split(' ');
    let token = words.next().unwrap().strip_prefix("HAKO_TOKEN=").unwrap();
    assert_eq!(token, token_of(&dir, "vic"));
    assert_eq!(words.next(), Some("hako"));
    let args: Vec<&str> = words.collect();
    assert_eq!(args[..2], ["daemon", host.get("url").as_str()]);
    assert!(printed.contains("hako::daemon("), "{printed}");
    let mut c = hako();
    c.args(&args)
        .args(["--name", "vic-laptop"])
        .env("HAKO_TOKEN", token);
    // vic's token is taken once the host has read the store again.
    wait_log(&host.log, "rules replaced");
    let (mut daemon, log) = spawn_logged(&mut c, "users-vic");
    host.wait_connections(1);
    host.submit(1, code("6 * 7"), 0);
    assert_eq!(host.result(Duration::from_secs(60)).value(), 42.0);

    user(&dir, &["revoke", "vic"]);
    let status = wait_exit(&mut daemon, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    // Told at once (the close reason) or on reconnecting (the refusal).
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("hako: ") && last.contains("this token was revoked by the host"),
        "{text}"
    );
    host.wait_connections(0);
    host.close_link();
}

#[test]
fn refused_daemons_are_closed_and_refused_by_name_and_by_fingerprint() {
    let id = tempfile::tempdir().unwrap();
    let dir = id.path().join("identity");
    user(&dir, &["add", "vol", "--volunteer"]);
    user(&dir, &["add", "sub"]);
    let vol = token_of(&dir, "vol");
    let mut host = host_with_users("users-refused", &dir, "0");
    let target = dial::parse_url(&host.get("url")).unwrap();
    let trust = tls::Trust::Pinned(tls::parse_fingerprint(&host.get("fingerprint")).unwrap());
    let shared = host.get("token");
    let rt = common::runtime();
    let dial_as = |token: &str, name: &str| {
        rt.block_on(dial::dial(
            &target,
            &trust,
            FrameLimits::default(),
            common::peer_hello(Role::Daemon, token, name, None),
        ))
    };
    // A submitter's token does not make a daemon, nor a volunteer's a client.
    let err = dial_as(&token_of(&dir, "sub"), "x").expect_err("refused");
    assert!(err.to_string().contains("wrong token"), "{err}");
    let err = rt
        .block_on(dial::dial(
            &target,
            &trust,
            FrameLimits::default(),
            common::peer_hello(Role::Client, &vol, "x", None),
        ))
        .expect_err("refused");
    assert!(err.to_string().contains("wrong token"), "{err}");
    // Fake daemons (the real protocol), one on the shared token with a
    // name, one on the volunteer's token.
    let (mut named, _) = dial_as(&shared, "bad-box").unwrap();
    let (mut by_token, _) = dial_as(&vol, "anything").unwrap();
    host.wait_connections(2);
    let ends = |c: &mut dial::Conn| {
        rt.block_on(async {
            loop {
                match ws::recv(c, &FrameLimits::default()).await {
                    Ok(Message::PackageSet(_)) => {}
                    Ok(other) => panic!("unexpected {:?}", other.kind()),
                    Err(e) => return e.to_string(),
                }
            }
        })
    };

    user(&dir, &["refuse-daemon", "bad-box"]);
    let why = ends(&mut named);
    assert!(why.contains("refused by the host"), "{why}");
    let again = dial_as(&shared, "bad-box").expect_err("refused");
    assert!(again.to_string().contains("refused by the host"), "{again}");
    // Others on the shared token still join.
    let (_other, _) = dial_as(&shared, "good-box").unwrap();

    let fp = hako_fingerprint(&vol);
    user(&dir, &["refuse-daemon", "--fingerprint", &fp]);
    let why = ends(&mut by_token);
    assert!(why.contains("refused by the host"), "{why}");
    let again = dial_as(&vol, "renamed").expect_err("refused");
    assert!(again.to_string().contains("refused by the host"), "{again}");
    let list = user(&dir, &["list"]);
    assert!(list.contains("bad-box") && list.contains(&fp), "{list}");

    // And taken again.
    user(&dir, &["allow-daemon", "bad-box"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dial_as(&shared, "bad-box").is_err() {
        assert!(Instant::now() < deadline, "bad-box still refused");
        std::thread::sleep(Duration::from_millis(100));
    }
    host.close_link();
}

/// A token's fingerprint as `hako user list` shows it.
fn hako_fingerprint(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(token.as_bytes())[..8])
}

#[test]
fn a_store_others_can_read_or_that_does_not_parse_stops_the_host() {
    let id = tempfile::tempdir().unwrap();
    let dir = id.path().join("identity");
    user(&dir, &["add", "carol"]);
    let store = dir.join("users.json");
    let start = || {
        hako()
            .args(["host", "--stdio", "--listen", "127.0.0.1:0", "--identity"])
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = start();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("users.json") && err.contains("chmod 600"),
        "{err}"
    );
    let out = user_output(&dir, &["list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    // A change by hand leaves it private only if the editor keeps the mode.
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&store, "{\"users\": [{\"name\": \"../x\"}]}").unwrap();
    let out = start();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not a valid user store"), "{err}");
    // Names that are paths or escapes are refused at once.
    for bad in ["../etc", "a\u{1b}[31m", "local"] {
        let out = user_output(&dir, &["add", bad]);
        assert_eq!(out.status.code(), Some(1));
    }
}
