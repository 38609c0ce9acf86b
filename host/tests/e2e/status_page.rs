//! The live status page on the host's TLS port: `/status.json` and
//! `/status` for the view token (or a user's token), read with a pinned TLS
//! client and in headless Chromium (Debian's `chromium`) against a real
//! host with real daemons that ran real tasks; the WebSocket endpoint on the
//! same port still takes daemons and clients, and a daemon named like a
//! script shows as text. With `HAKO_STATUS_SCREENSHOT=PATH` the test also
//! writes a screenshot of the page (the README's).

use crate::common::{code, token_of, user, Host, RemoteClient};
use crate::dial;
use crate::linkframe as lf;
use crate::protocol::{FrameLimits, Role};
use crate::tls::{self, Trust};
use rustls_pki_types::ServerName;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EVIL: &str = "<script>alert(1)</script>";

/// An HTTP response as the tests look at it.
pub(crate) struct Http {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Send `request` over TLS (the host's certificate pinned) and read the
/// whole response: the host closes after it.
pub(crate) async fn http(port: u16, fingerprint: &str, request: &str) -> Http {
    let mut s = tls_to(port, fingerprint).await;
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await;
    read.expect("the host answers and closes").expect("reading");
    let raw = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    Http {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// A TLS connection to the host, its certificate pinned.
async fn tls_to(
    port: u16,
    fingerprint: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let pin = tls::parse_fingerprint(fingerprint).unwrap();
    let (config, _) = tls::client_config(&Trust::Pinned(pin)).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::clone(&config))
        .connect(name, tcp)
        .await
        .expect("TLS to the host")
}

pub(crate) fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n")
}

/// A child killed when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Submit tasks that take a moment each.
fn run(c: &mut RemoteClient, ids: std::ops::RangeInclusive<u32>) {
    for id in ids {
        c.submit(id, 0, code(&format!("Sys.sleep(0.3); {id}")));
    }
}

/// Wait for `n` results, each a value.
fn wait(c: &RemoteClient, n: u32) {
    for _ in 0..n {
        assert_eq!(c.result().status, lf::status::VALUE);
    }
}

/// Debian's chromium, or a failure that says how to get it.
pub(crate) fn chromium() -> String {
    let found = Command::new("chromium").arg("--version").output();
    match found {
        Ok(o) if o.status.success() => "chromium".to_string(),
        _ => panic!("the status page test needs Debian's chromium: run tests/setup.sh"),
    }
}

/// Headless Chromium on `url`, with `args`; its stdout. The virtual time
/// budget lets the page's script fetch and redraw before the DOM is taken.
pub(crate) fn browse(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--ignore-certificate-errors",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_status_page_shows_daemons_and_counts_in_a_browser() {
    chromium();
    let id = tempfile::tempdir().unwrap();
    let dir = id.path().join("identity");
    let dir_s = dir.to_str().unwrap();
    // Two named users, each with their own token, and a named volunteer.
    for args in [
        &["add", "ann", "--weight", "1"][..],
        &["add", "ben", "--weight", "2"],
        &["add", "alice", "--volunteer"],
    ] {
        user(&dir, args);
    }
    let mut host = Host::start(
        "status",
        &[
            "--listen",
            "127.0.0.1:0",
            "--identity",
            dir_s,
            "--heartbeat",
            "60",
        ],
    );
    let status_url = host.get("status_url");
    let view = status_url
        .split_once("/status?token=")
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| panic!("{status_url}"));
    let port = dial::parse_url(&host.get("url")).unwrap().port;
    assert_eq!(
        status_url,
        format!("https://127.0.0.1:{port}/status?token={view}")
    );
    // Kept with the host's other secrets, so a restart prints the same URL.
    let kept = std::fs::read_to_string(dir.join("view_token")).unwrap();
    assert_eq!(kept.trim(), view);
    let fp = host.get("fingerprint");

    // Two real daemons run some real tasks: the volunteer alice's with two
    // jobs (two connections, one row), and one with the shared join token.
    let mut alice = host.daemon_cmd(&["--name", "alice-laptop", "--jobs", "2"]);
    alice.env("HAKO_TOKEN", token_of(&dir, "alice"));
    let _alice = Killed(crate::common::spawn_logged(&mut alice, "status-alice").0);
    host.daemon("status-bob", &["--name", "bob-desktop"]);
    host.wait_connections(3);
    let shot = std::env::var_os("HAKO_STATUS_SCREENSHOT");
    // For the picture, waves of tasks over a few throughput intervals.
    let waves: &[u32] = if shot.is_some() {
        &[6, 14, 20, 10]
    } else {
        &[12]
    };
    let mut ann = RemoteClient::connect(&host, &token_of(&dir, "ann"), "status-ann");
    let mut ben = RemoteClient::connect(&host, &token_of(&dir, "ben"), "status-ben");
    let (mut by_ann, mut by_ben) = (0u32, 0u32);
    for (w, &n) in waves.iter().enumerate() {
        if w > 0 {
            std::thread::sleep(Duration::from_secs(10));
        }
        let half = n / 2;
        run(&mut ann, by_ann + 1..=by_ann + n - half);
        run(&mut ben, by_ben + 1..=by_ben + half);
        by_ann += n - half;
        by_ben += half;
        wait(&ann, n - half);
        wait(&ben, half);
    }
    let tasks = by_ann + by_ben;

    let rt = crate::common::runtime();
    let json = |token: &str| {
        let auth = format!("Authorization: Bearer {token}\r\n");
        let r = rt.block_on(http(port, &fp, &get("/status.json", &auth)));
        assert_eq!(r.status, 200, "{} {}", r.head, r.body);
        assert!(
            r.head.contains("Content-Type: application/json"),
            "{}",
            r.head
        );
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()
    };
    let s = json(&view);
    assert_eq!(s["completed"], u64::from(tasks), "{s}");
    let daemons = s["daemons"].as_array().unwrap();
    let names: Vec<&str> = daemons
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{s}");
    for d in daemons {
        let volunteer = (d["name"] == "alice-laptop").then_some("alice");
        assert_eq!(d["volunteer"].as_str(), volunteer, "{s}");
    }
    assert!(
        names.contains(&"alice-laptop") && names.contains(&"bob-desktop"),
        "{s}"
    );
    let done: u64 = daemons
        .iter()
        .map(|d| d["tasks_done"].as_u64().unwrap())
        .sum();
    assert_eq!(done, u64::from(tasks), "{s}");
    // Each user's row, and a submitter's token shows the page too.
    for (name, done) in [("ann", by_ann), ("ben", by_ben)] {
        let users = s["users"].as_array().unwrap();
        let row = users.iter().find(|u| u["name"] == name);
        let row = row.unwrap_or_else(|| panic!("no {name} in {s}"));
        assert_eq!(row["done"], u64::from(done), "{s}");
        assert_eq!(row["queued"], 0, "{s}");
    }
    assert_eq!(json(&token_of(&dir, "ben"))["completed"], u64::from(tasks));
    assert_eq!(
        json(&host.get("client_token"))["completed"],
        u64::from(tasks)
    );

    if let Some(path) = shot {
        let path = std::path::PathBuf::from(path);
        browse(
            &status_url,
            &[
                "--window-size=1000,700",
                "--hide-scrollbars",
                &format!("--screenshot={}", path.display()),
            ],
        );
        assert!(std::fs::metadata(&path).unwrap().len() > 1000);
    }

    // A daemon that calls itself a script (a fake one speaking the real
    // protocol) joins through the same port.
    let target = dial::parse_url(&host.get("url")).unwrap();
    let trust = || Trust::Pinned(tls::parse_fingerprint(&fp).unwrap());
    let limits = FrameLimits {
        control: 1 << 20,
        bulk: 64 << 20,
    };
    let hello = crate::common::peer_hello(Role::Daemon, host.get("token"), EVIL, None);
    let (_evil, _) = rt
        .block_on(dial::dial(&target, &trust(), limits, hello))
        .expect("a daemon still joins on the status page's port");
    host.wait_connections(4);

    // Refusals: no token, a wrong one, a join token (not a view token),
    // another path, another method; none shows the data.
    for (req, code) in [
        (get("/status.json", ""), 401),
        (get("/status", "Authorization: Bearer not-the-view-token\r\n"), 401),
        (get("/status?token=not-the-view-token", ""), 401),
        (
            get("/status.json", &format!("Authorization: Bearer {}\r\n", host.get("token"))),
            401,
        ),
        (get("/", ""), 404),
        (
            format!(
                "POST /status HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {view}\r\nContent-Length: 0\r\n\r\n"
            ),
            405,
        ),
    ] {
        let r = rt.block_on(http(port, &fp, &req));
        assert_eq!(r.status, code, "{req}: {} {}", r.head, r.body);
        assert!(!r.body.contains("alice-laptop"), "{}", r.body);
        assert!(r.head.contains("Cache-Control: no-store"), "{}", r.head);
    }
    // The address's token becomes a cookie, and leaves the address.
    let r = rt.block_on(http(port, &fp, &get(&format!("/status?token={view}"), "")));
    assert_eq!(r.status, 303, "{}", r.head);
    assert!(r.head.contains("\r\nLocation: /status"), "{}", r.head);
    let cookie = r
        .head
        .lines()
        .find_map(|l| l.strip_prefix("Set-Cookie: "))
        .expect("a cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap();
    let r = rt.block_on(http(
        port,
        &fp,
        &get("/status", &format!("Cookie: {pair}\r\n")),
    ));
    assert_eq!(r.status, 200, "{}", r.head);
    for h in [
        "Content-Security-Policy: default-src 'none'",
        "X-Content-Type-Options: nosniff",
        "Referrer-Policy: no-referrer",
    ] {
        assert!(r.head.contains(h), "{h} in {}", r.head);
    }
    // Served already filled in, for readers without JavaScript.
    assert!(r.body.contains("alice-laptop") && r.body.contains("bob-desktop"));
    assert!(r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!r.body.contains(EVIL));

    // A client still submits over the WebSocket endpoint after all that.
    let client = crate::common::peer_hello(Role::Client, host.get("client_token"), "c", None);
    rt.block_on(dial::dial(&target, &trust(), limits, client))
        .expect("a client still joins");
    host.submit(100, code("6 * 7"), 0);
    assert_eq!(host.result(Duration::from_secs(60)).value(), 42.0);

    // In a browser, after the page's script fetched /status.json and
    // redrew: the daemons, the counts, the script-named daemon as text.
    let dom = browse(&status_url, &["--dump-dom"]);
    assert!(
        dom.contains(r#"data-live="1""#),
        "the script did not redraw:\n{dom}"
    );
    assert!(
        dom.contains("alice-laptop") && dom.contains("bob-desktop"),
        "{dom}"
    );
    assert!(dom.contains(">ann<") && dom.contains(">ben<"), "{dom}");
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{dom}"
    );
    assert!(!dom.contains(EVIL), "{dom}");
    let completed = format!(r#"id="c-completed">{}<"#, tasks + 1);
    assert!(dom.contains(&completed), "{completed} in {dom}");
    let daemons = r#"id="c-machines">3<"#;
    assert!(dom.contains(daemons), "{daemons} in {dom}");
    let daemons = r#"id="c-jobs">4<"#;
    assert!(dom.contains(daemons), "{daemons} in {dom}");
}

/// What a peer gets for a request the host will not answer: the
/// connection closed, nothing written.
async fn dropped<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "the host did not drop the connection");
    got
}

#[test]
fn hostile_requests_are_dropped_and_the_host_serves_on() {
    let mut host = Host::start(
        "status-hostile",
        &["--listen", "127.0.0.1:0", "--handshake-timeout", "1"],
    );
    let port = dial::parse_url(&host.get("url")).unwrap().port;
    let fp = host.get("fingerprint");
    let view = host
        .get("status_url")
        .split_once("?token=")
        .unwrap()
        .1
        .to_string();
    let rt = crate::common::runtime();
    rt.block_on(async {
        // A head that never ends (past 8 KiB): dropped unanswered.
        let mut s = tls_to(port, &fp).await;
        let long = format!(
            "GET /status HTTP/1.1\r\nAuthorization: Bearer {view}\r\nX-Pad: {}\r\n",
            "a".repeat(9 << 10)
        );
        let _ = s.write_all(long.as_bytes()).await;
        assert_eq!(dropped(&mut s).await, b"");

        // Half a head, then silence: dropped at the handshake deadline.
        let mut s = tls_to(port, &fp).await;
        s.write_all(b"GET /status HTTP/1.1\r\nHost: h\r\n")
            .await
            .unwrap();
        let t = std::time::Instant::now();
        assert_eq!(dropped(&mut s).await, b"");
        assert!(
            t.elapsed() >= Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );

        // Junk that is not HTTP, and too many headers: dropped.
        for junk in [
            "\x00\x01\x02 nonsense\r\n\r\n".to_string(),
            format!("GET /status HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(200)),
        ] {
            let mut s = tls_to(port, &fp).await;
            let _ = s.write_all(junk.as_bytes()).await;
            assert_eq!(dropped(&mut s).await, b"", "{junk:?}");
        }

        // A token with a line break in the address splits no header.
        let r = http(
            port,
            &fp,
            &get(&format!("/status?token={view}%0d%0aX-Evil:%201"), ""),
        )
        .await;
        assert_eq!(r.status, 401, "{}", r.head);
        assert!(!r.head.contains("X-Evil"), "{}", r.head);

        // The page answers all the while.
        let r = http(
            port,
            &fp,
            &get("/status.json", &format!("Authorization: Bearer {view}\r\n")),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.head);
    });
    // And daemons still join on the same port.
    host.daemon("status-hostile-d", &[]);
    host.wait_connections(1);
    host.submit(1, code("40 + 2"), 0);
    assert_eq!(host.result(Duration::from_secs(60)).value(), 42.0);
}
