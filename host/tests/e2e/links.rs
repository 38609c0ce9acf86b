//! The other ways in: `hako client` bridging the link to a remote host, and
//! the token-guarded loopback socket link.

use crate::common::{code, hako, log_file, socket_link_host, Host};
use crate::linkframe::{self as lf, LinkIn, LinkOut};
use crate::rser;
use bytes::Bytes;
use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn read_out(r: &mut impl Read) -> LinkOut {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).expect("a frame");
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut buf).expect("a frame body");
    lf::parse_out(buf[0], &buf[1..]).expect("well-formed")
}

#[test]
fn hako_client_bridges_to_a_remote_host() {
    let mut host = Host::start("bridge", &["--listen", "127.0.0.1:0", "--local", "1"]);
    let (log, log_path) = log_file("bridge-client");
    let mut client = hako()
        .args([
            "client",
            &host.get("url"),
            "--token",
            &host.get("client_token"),
        ])
        .args(["--fingerprint", &host.get("fingerprint")])
        .env("HAKO_LOG", "hako=debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut w = client.stdin.take().unwrap();
    let mut r = client.stdout.take().unwrap();
    match read_out(&mut r) {
        LinkOut::Ready(t) => assert!(t.contains("remote\t1"), "{t}"),
        other => panic!("{other:?}"),
    }
    for i in 0..50u32 {
        w.write_all(&lf::encode_in(&LinkIn::Task {
            id: i,
            timeout_ms: 0,
            payload: Bytes::from(rser::plus_one(i as f64)),
        }))
        .unwrap();
    }
    w.write_all(&lf::encode_in(&LinkIn::Task {
        id: 99,
        timeout_ms: 0,
        payload: Bytes::from(code("stop('remote boom')")),
    }))
    .unwrap();
    w.flush().unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..51 {
        match read_out(&mut r) {
            LinkOut::Result { id: 99, status, .. } => {
                assert_eq!(status, lf::status::ERROR);
                seen.insert(99);
            }
            LinkOut::Result {
                id,
                status,
                payload,
                ..
            } => {
                assert_eq!(status, lf::status::VALUE);
                assert_eq!(
                    rser::unserialize(&payload).unwrap().as_f64(),
                    Some(id as f64 + 1.0)
                );
                assert!(seen.insert(id));
            }
            other => panic!("{other:?}"),
        }
    }
    w.write_all(&lf::encode_in(&LinkIn::Info)).unwrap();
    w.flush().unwrap();
    match read_out(&mut r) {
        LinkOut::Info(t) => assert!(t.contains("completed\t51"), "{t}"),
        other => panic!("{other:?}"),
    }
    // Ending the link ends the bridge.
    drop(w);
    let s = crate::common::wait_exit(&mut client, Duration::from_secs(10));
    assert!(
        s.success(),
        "{}",
        std::fs::read_to_string(log_path).unwrap_or_default()
    );
    // A wrong client token.
    let out = hako()
        .args([
            "client",
            &host.get("url"),
            "--token",
            "wrong-wrong-wrong-wrong",
        ])
        .args(["--fingerprint", &host.get("fingerprint")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong token"));
    host.submit(1, rser::plus_one(1.0), 0);
    assert_eq!(host.result(Duration::from_secs(30)).value(), 2.0);
}

#[test]
fn the_socket_link_takes_only_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("link");
    let (log, _) = log_file("socket-link");
    let mut child = socket_link_host(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !file.exists() {
        assert!(Instant::now() < deadline, "no link file");
        std::thread::sleep(Duration::from_millis(20));
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let kv: std::collections::HashMap<String, String> =
        lf::parse_kv(&std::fs::read_to_string(&file).unwrap())
            .into_iter()
            .collect();
    let addr = kv["link"].clone();
    // Wrong token: told so, closed.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(&lf::encode_in(&LinkIn::Hello {
        version: lf::LINK_VERSION,
        token: "nope".into(),
    }))
    .unwrap();
    match read_out(&mut s) {
        LinkOut::Notice(t) => assert!(t.contains("wrong token"), "{t}"),
        other => panic!("{other:?}"),
    }
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    // The right one.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(&lf::encode_in(&LinkIn::Hello {
        version: lf::LINK_VERSION,
        token: kv["link_token"].clone(),
    }))
    .unwrap();
    assert!(matches!(read_out(&mut s), LinkOut::Ready(_)));
    s.write_all(&lf::encode_in(&LinkIn::Ping(5))).unwrap();
    assert_eq!(read_out(&mut s), LinkOut::Pong(5));
    s.write_all(&lf::encode_in(&LinkIn::Task {
        id: 1,
        timeout_ms: 0,
        payload: Bytes::from(rser::plus_one(41.0)),
    }))
    .unwrap();
    match read_out(&mut s) {
        LinkOut::Result { id: 1, payload, .. } => {
            assert_eq!(rser::unserialize(&payload).unwrap().as_f64(), Some(42.0))
        }
        other => panic!("{other:?}"),
    }
    // SHUTDOWN: the host exits.
    s.write_all(&lf::encode_in(&LinkIn::Shutdown)).unwrap();
    let st = crate::common::wait_exit(&mut child, Duration::from_secs(15));
    assert!(st.success());
}
