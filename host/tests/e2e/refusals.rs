//! Peers that must be refused or dropped, each cleanly and alone: the host
//! keeps serving its daemons and its client throughout.

use crate::common::{code, hako, proc_status, Host};
use crate::dial::{self, Conn, DialError, Target};
use crate::protocol::{self, FrameLimits, HelloBody, Message, Role, Task};
use crate::tls::{self, Trust};
use crate::ws;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn hello(role: Role, token: &str) -> HelloBody {
    crate::common::peer_hello(role, token, "test", None)
}

/// TLS (pinned) and the WebSocket upgrade, no hello yet.
async fn connect(target: &Target, fp: &str) -> Conn {
    let (config, _) =
        tls::client_config(&Trust::Pinned(tls::parse_fingerprint(fp).unwrap())).unwrap();
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from(target.host.clone()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&config))
        .connect(name, tcp)
        .await
        .unwrap();
    let limits = FrameLimits {
        control: 1 << 20,
        bulk: 16 << 20,
    };
    tokio_tungstenite::client_async_with_config(
        target.url.as_str(),
        tls,
        Some(ws::ws_config(&limits)),
    )
    .await
    .unwrap()
    .0
}

/// The connection ends (close frame, error or EOF) within a few seconds.
async fn ends(conn: &mut Conn) -> String {
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match conn.next().await {
                None => return "eof".to_string(),
                Some(Err(e)) => return format!("error: {e}"),
                Some(Ok(WsMessage::Close(f))) => return format!("close: {f:?}"),
                Some(Ok(WsMessage::Binary(b))) => {
                    if let Ok(Message::Refused { reason }) =
                        protocol::decode(&b, &FrameLimits::default())
                    {
                        return format!("refused: {reason}");
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    r.expect("the host should close the connection")
}

/// The host still answers: a few tasks round-trip.
fn still_serving(host: &mut Host, base: u32) {
    for i in 0..5 {
        host.submit(base + i, crate::rser::plus_one(i as f64), 0);
    }
    for _ in 0..5 {
        let r = host.result(Duration::from_secs(60));
        assert_eq!(r.value(), (r.id - base) as f64 + 1.0);
    }
}

#[test]
fn refused_cleanly_while_others_keep_working() {
    let mut host = Host::start(
        "refusals",
        &[
            "--listen",
            "127.0.0.1:0",
            "--local",
            "1",
            "--handshake-timeout",
            "1",
            "--max-payload",
            "1",
        ],
    );
    host.daemon("refusals-good", &["--autoexit"]);
    host.wait_connections(2);
    let url = host.get("url");
    let token = host.get("token");
    let client_token = host.get("client_token");
    let fp = host.get("fingerprint");
    let target = dial::parse_url(&url).unwrap();
    let rt = crate::common::runtime();
    still_serving(&mut host, 1000);

    // A wrong join token: the daemon is told and exits 1.
    let out = hako()
        .args([
            "daemon",
            &url,
            "--token",
            "not-the-token-at-all",
            "--fingerprint",
            &fp,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("wrong token"), "{err}");
    still_serving(&mut host, 1100);

    // A wrong fingerprint: the daemon refuses the host, exits 1.
    let wrong_fp = format!("SHA256:{}", "00".repeat(32));
    let out = hako()
        .args([
            "daemon",
            &url,
            "--token",
            &token,
            "--fingerprint",
            &wrong_fp,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not the pinned"), "{err}");
    still_serving(&mut host, 1200);

    rt.block_on(async {
        // Plain ws:// to the TLS port.
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .unwrap();
        let plain = format!("ws://{}:{}/", target.host, target.port);
        assert!(tokio_tungstenite::client_async(plain, tcp).await.is_err());

        // Another protocol version: refused with the reason.
        let mut c = connect(&target, &fp).await;
        let mut f = protocol::encode(&Message::Hello(protocol::Hello {
            version: protocol::VERSION,
            body: hello(Role::Daemon, &token),
        }));
        f[5..9].copy_from_slice(&999u32.to_le_bytes());
        c.send(WsMessage::Binary(f.into())).await.unwrap();
        let why = ends(&mut c).await;
        assert!(why.contains("version mismatch"), "{why}");

        // Not a hello first.
        let mut c = connect(&target, &fp).await;
        ws::send(&mut c, &Message::Status).await.unwrap();
        let why = ends(&mut c).await;
        assert!(why.contains("expected a hello"), "{why}");

        // An oversized frame before authenticating.
        let mut c = connect(&target, &fp).await;
        let _ = c.send(WsMessage::Binary(vec![0u8; 300 << 10].into())).await;
        ends(&mut c).await;

        // The join token does not make a client.
        let r = dial::dial(
            &target,
            &Trust::Pinned(tls::parse_fingerprint(&fp).unwrap()),
            FrameLimits::default(),
            hello(Role::Client, &token),
        )
        .await;
        assert!(
            matches!(r, Err(DialError::Refused(ref e)) if e.contains("wrong token")),
            "{r:?}"
        );

        let trust = Trust::Pinned(tls::parse_fingerprint(&fp).unwrap());
        // Authenticated, then an oversized control frame.
        let (mut c, _) = dial::dial(
            &target,
            &trust,
            FrameLimits::default(),
            hello(Role::Daemon, &token),
        )
        .await
        .unwrap();
        ws::send(
            &mut c,
            &Message::Bye {
                reason: "x".repeat(100 << 10),
            },
        )
        .await
        .unwrap();
        let why = ends(&mut c).await;
        assert!(why.contains("exceeds") || why.contains("Size"), "{why}");

        // Authenticated client, then a task over the host's 1 MiB bound.
        let (mut c, _) = dial::dial(
            &target,
            &trust,
            FrameLimits::default(),
            hello(Role::Client, &client_token),
        )
        .await
        .unwrap();
        let _ = ws::send(
            &mut c,
            &Message::Task(Task {
                id: 1,
                payload: vec![0u8; 2 << 20].into(),
                timeout_ms: None,
                replicas: 0,
                user: String::new(),
            }),
        )
        .await;
        ends(&mut c).await;

        // Authenticated, then random bytes as a frame.
        let (mut c, _) = dial::dial(
            &target,
            &trust,
            FrameLimits::default(),
            hello(Role::Daemon, &token),
        )
        .await
        .unwrap();
        c.send(WsMessage::Binary(vec![200, 1, 2, 3, 99, 0, 255].into()))
            .await
            .unwrap();
        let why = ends(&mut c).await;
        assert!(why.contains("unknown message kind"), "{why}");

        // Authenticated daemon sending what only a client may send.
        let (mut c, _) = dial::dial(
            &target,
            &trust,
            FrameLimits::default(),
            hello(Role::Daemon, &token),
        )
        .await
        .unwrap();
        ws::send(
            &mut c,
            &Message::Task(Task {
                id: 1,
                payload: vec![1].into(),
                timeout_ms: None,
                replicas: 0,
                user: String::new(),
            }),
        )
        .await
        .unwrap();
        let why = ends(&mut c).await;
        assert!(why.contains("may not send"), "{why}");

        // Random bytes on the raw socket.
        let mut s = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .unwrap();
        let junk: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let _ = s.write_all(&junk).await;
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return 0,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert_eq!(
            n.ok(),
            Some(0),
            "random bytes must get the connection closed"
        );

        // A client that connects and says nothing: dropped at the handshake deadline.
        let mut s = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .unwrap();
        let t = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
    });
    still_serving(&mut host, 1300);
    // Only the two good daemons are connected, and both still work.
    let (c, rows) = host.info();
    assert_eq!(c["connections"], 2, "{rows:?}");
    host.submit(2000, code("Sys.sleep(0.3); 1"), 0);
    host.submit(2001, code("Sys.sleep(0.3); 2"), 0);
    let mut got: Vec<f64> = (0..2)
        .map(|_| host.result(Duration::from_secs(30)).value())
        .collect();
    got.sort_by(f64::total_cmp);
    assert_eq!(got, vec![1.0, 2.0]);
    let log = std::fs::read_to_string(&host.log).unwrap();
    for want in [
        "wrong token",
        "version mismatch",
        "TLS handshake failed",
        "no hello within",
        "protocol violation",
    ] {
        assert!(
            log.contains(want),
            "the host log should mention {want:?}:\n{log}"
        );
    }
}

#[test]
fn the_link_rejects_an_oversized_task_and_stays_usable() {
    let mut host = Host::start(
        "link-oversized",
        &["--no-listen", "--local", "1", "--max-payload", "1"],
    );
    host.submit(1, vec![7u8; 2 << 20], 0);
    let r = host.result(Duration::from_secs(30));
    assert_eq!(
        (r.id, r.status),
        (1, crate::linkframe::status::REJECTED),
        "{}",
        r.text()
    );
    assert!(r.text().contains("exceeds"), "{}", r.text());
    // A payload that is not R serialization: an R error value, not a crash.
    host.submit(2, b"garbage".to_vec(), 0);
    let r = host.result(Duration::from_secs(30));
    assert_eq!((r.id, r.status), (2, crate::linkframe::status::ERROR));
    host.submit(3, crate::rser::plus_one(2.0), 0);
    assert_eq!(host.result(Duration::from_secs(30)).value(), 3.0);
}

/// A task larger than every connected daemon reads (`hako daemon --memory
/// 256` reads 128 MiB) is refused at once with a clear reason, instead of
/// being re-sent to daemons that each drop the connection on it; the
/// daemon is never disconnected and keeps serving.
#[test]
fn a_task_too_large_for_every_daemon_is_refused_and_the_daemon_lives_on() {
    let mut host = Host::start("too-large", &["--listen", "127.0.0.1:0"]);
    let d = host.daemon("too-large-d", &["--memory", "256"]);
    host.wait_connections(1);
    let (_, rows) = host.info();
    let joined_as = rows[0]["id"].clone();
    host.submit(1, vec![7u8; 200_000_000], 0);
    let r = host.result(Duration::from_secs(120));
    assert_eq!(
        (r.id, r.status),
        (1, crate::linkframe::status::REJECTED),
        "{}",
        r.text()
    );
    assert_eq!(
        r.text(),
        "task too large for every daemon: 200000000 bytes, the largest a daemon accepts is 134217728"
    );
    still_serving(&mut host, 10);
    assert!(
        host.daemon_child(d).try_wait().unwrap().is_none(),
        "the daemon is still running"
    );
    let (c, rows) = host.info();
    assert_eq!((c["connections"], c["cumulative"]), (1, 1), "never dropped");
    assert_eq!(rows[0]["id"], joined_as, "the same connection");
}

/// Tasks queued at the host are bounded per client (`--max-queued`): past
/// it the client's tasks are refused at once, and the host does not hold
/// what it refused. Many small tasks stay far below the default bound.
#[test]
fn a_client_s_queued_tasks_are_bounded() {
    let rss_mib = |pid: u32| proc_status(pid, "VmRSS:") >> 10;
    // No daemon: every accepted task stays queued at the host.
    let mut host = Host::start(
        "max-queued",
        &["--listen", "127.0.0.1:0", "--max-queued", "16"],
    );
    let before = rss_mib(host.pid());
    let n = 300u32;
    for id in 1..=n {
        host.submit(id, vec![id as u8; 1 << 20], 0);
    }
    let mut refused = 0;
    for _ in 0..n - 15 {
        let r = host.result(Duration::from_secs(60));
        assert_eq!(r.status, crate::linkframe::status::REJECTED, "{}", r.text());
        assert_eq!(
            r.text(),
            "too many queued tasks (15 MiB): wait for results before submitting more"
        );
        assert!(r.id > 15, "the first 15 (1 MiB + 256 bytes each) fit");
        refused += 1;
    }
    assert_eq!(refused, n - 15);
    let (c, _) = host.info();
    assert_eq!(c["awaiting"], 15);
    let grown = rss_mib(host.pid()).saturating_sub(before);
    assert!(
        grown < 150,
        "{n} MiB submitted, 15 MiB kept: the host grew by {grown} MiB"
    );

    // Ten thousand small tasks (a map) are far below the default bound.
    let mut host = Host::start("max-queued-map", &["--listen", "127.0.0.1:0"]);
    for id in 1..=10_000 {
        host.feed(&crate::linkframe::LinkIn::Task {
            id,
            timeout_ms: 0,
            payload: bytes::Bytes::from(crate::rser::plus_one(id as f64)),
        });
    }
    host.flush();
    // INFO is answered after every task before it: none was refused.
    let (c, _) = host.info();
    assert_eq!(c["awaiting"], 10_000);
}
