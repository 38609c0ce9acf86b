//! A daemon that lies about results: a fake daemon speaking the real
//! protocol joins a real host and answers a real client's tasks with forms
//! that would run code in, or crash, the client's R session. Each reaches
//! the client as link status 10 "result refused: ..." (never the bytes), and
//! the host keeps serving with an honest daemon afterwards.

use crate::common::{code, Host};
use crate::dial::{self, Conn};
use crate::linkframe as lf;
use crate::protocol::{FrameLimits, Message, Outcome, Role, TaskReport};
use crate::tls::{self, Trust};
use crate::ws;
use std::time::Duration;

/// R serialization (XDR, version 3) written by hand.
struct B(Vec<u8>);

impl B {
    fn new() -> B {
        let mut b = b"X\n".to_vec();
        for v in [3, 0x040202, 0x030500, 5] {
            b.extend_from_slice(&i32::to_be_bytes(v));
        }
        b.extend_from_slice(b"UTF-8");
        B(b)
    }
    fn int(mut self, v: i32) -> B {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn flags(self, ty: u32, levs: u32, attr: bool, tag: bool) -> B {
        self.int((ty | levs << 12 | (attr as u32) << 9 | (tag as u32) << 10) as i32)
    }
    fn ty(self, ty: u32) -> B {
        self.flags(ty, 0, false, false)
    }
    fn sym(mut self, s: &str) -> B {
        self = self.ty(1).ty(9 | 64 << 12).int(s.len() as i32);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn chars(mut self, s: &str) -> B {
        self = self.ty(9 | 64 << 12).int(s.len() as i32);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
}

/// Each lie, and a word its refusal must contain.
fn lies() -> Vec<(&'static str, Outcome)> {
    let promise = B::new()
        .flags(5, 0, false, true)
        .ty(253)
        .ty(252)
        .ty(6)
        .sym("system")
        .ty(254)
        .ty(254);
    let active = B::new()
        .ty(4)
        .int(0)
        .ty(253)
        .flags(2, 1 << 15, false, true)
        .sym("result")
        .ty(254)
        .ty(254)
        .ty(254)
        .ty(254);
    let bytecode = B::new().flags(3, 0, false, true).ty(253).ty(254).ty(21);
    let int_frame = B::new()
        .ty(4)
        .int(0)
        .ty(253)
        .ty(13)
        .int(1)
        .int(7)
        .ty(254)
        .ty(254);
    let int_names = B::new()
        .flags(13, 0, true, false)
        .int(1)
        .int(1)
        .flags(2, 0, false, true)
        .sym("names")
        .ty(13)
        .int(1)
        .int(1)
        .ty(254);
    let mut deep = B::new();
    for _ in 0..100_000 {
        deep = deep.ty(19).int(1);
    }
    let deep = deep.ty(254);
    let mut short = B::new().ty(14).int(1000);
    short.0.extend_from_slice(&[0; 16]);
    let ns = B::new().ty(249).int(0).int(1).chars("evilpkg");
    let mmap = B::new()
        .ty(238)
        .ty(2)
        .sym("mmap_real")
        .ty(2)
        .sym("base")
        .ty(2)
        .ty(13)
        .int(1)
        .int(14)
        .ty(254)
        .ty(254)
        .ty(254);
    let v = |b: B| Outcome::Value(b.0.into());
    vec![
        ("promise", v(promise)),
        ("active", v(active)),
        ("byte code", v(bytecode)),
        ("external pointer", v(B::new().ty(22))),
        ("frame", v(int_frame)),
        ("'names'", v(int_names)),
        ("nested deeper", v(deep)),
        ("truncated", v(short)),
        ("evilpkg", v(ns)),
        ("mmap_real", v(mmap)),
        ("not R's", v(B(b"not R at all".to_vec()))),
        // an error value is checked the same way
        (
            "promise",
            Outcome::Error(
                B::new()
                    .flags(5, 0, false, true)
                    .ty(253)
                    .ty(252)
                    .ty(254)
                    .ty(254)
                    .0
                    .into(),
            ),
        ),
    ]
}

async fn next_task(c: &mut Conn) -> u64 {
    let limits = FrameLimits {
        control: 1 << 20,
        bulk: 64 << 20,
    };
    loop {
        match ws::recv(c, &limits)
            .await
            .expect("the host keeps the fake daemon")
        {
            Message::Task(t) => return t.id,
            Message::Ping(n) => ws::send(c, &Message::Pong(n)).await.unwrap(),
            _ => {}
        }
    }
}

#[test]
fn lying_results_are_refused_and_never_reach_the_client() {
    let mut host = Host::start("results", &["--listen", "127.0.0.1:0"]);
    let target = dial::parse_url(&host.get("url")).unwrap();
    let trust = Trust::Pinned(tls::parse_fingerprint(&host.get("fingerprint")).unwrap());
    let rt = crate::common::runtime();
    let hello = crate::common::peer_hello(Role::Daemon, host.get("token"), "liar", None);
    let limits = FrameLimits {
        control: 1 << 20,
        bulk: 64 << 20,
    };
    let (mut fake, _) = rt
        .block_on(dial::dial(&target, &trust, limits, hello))
        .expect("the fake daemon joins");
    host.wait_connections(1);

    for (i, (word, outcome)) in lies().into_iter().enumerate() {
        let id = i as u32 + 1;
        host.submit(id, code("1 + 1"), 0);
        rt.block_on(async {
            let tid = next_task(&mut fake).await;
            ws::send(&mut fake, &Message::Started { id: tid })
                .await
                .unwrap();
            ws::send(
                &mut fake,
                &Message::Result(TaskReport {
                    id: tid,
                    outcome,
                    output: vec![],
                }),
            )
            .await
            .unwrap();
        });
        let r = host.result(Duration::from_secs(60));
        assert_eq!(r.id, id);
        assert_eq!(r.status, lf::status::REFUSED, "{word}: {}", r.text());
        assert!(r.text().starts_with("result refused: "), "{}", r.text());
        assert!(r.text().contains(word), "{word}: {}", r.text());
    }

    // An honest daemon joins, the liar leaves: the host serves on.
    rt.block_on(ws::send(
        &mut fake,
        &Message::Bye {
            reason: "done".into(),
        },
    ))
    .unwrap();
    drop(fake);
    host.daemon("results-honest", &["--autoexit"]);
    for i in 0..3 {
        host.submit(100 + i, crate::rser::plus_one(i as f64), 0);
        let r = host.result(Duration::from_secs(120));
        assert_eq!(r.value(), i as f64 + 1.0);
    }
}

/// `hako client` checks results again before they reach R: a fake host
/// (real TLS, real protocol) answers the bridged task with a promise.
#[test]
fn the_client_bridge_refuses_what_a_lying_host_sends() {
    use crate::common::{hako, log_file};
    use crate::linkframe::{LinkIn, LinkOut};
    use crate::protocol::Welcome;
    use crate::tls::Identity;
    use std::io::{Read, Write};
    use std::process::Stdio;

    let rt = crate::common::runtime();
    let id = Identity::self_signed(vec!["127.0.0.1".into()]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(id.server_config().unwrap());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let (log, _) = log_file("results-bridge");
    let mut client = hako()
        .args(["client", &format!("wss://127.0.0.1:{port}")])
        .args(["--token", "lying-host-client-token-0123456789"])
        .args(["--fingerprint", &id.fingerprint])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let limits = FrameLimits {
        control: 1 << 20,
        bulk: 64 << 20,
    };
    let mut ws = rt.block_on(async {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let mut ws = tokio_tungstenite::accept_async_with_config(tls, Some(ws::ws_config(&limits)))
            .await
            .unwrap();
        assert!(matches!(
            ws::recv(&mut ws, &limits).await,
            Ok(Message::Hello(_))
        ));
        let welcome = Message::Welcome(Welcome {
            id: 1,
            hako_version: "liar".into(),
            limits,
            heartbeat_ms: 15_000,
        });
        ws::send(&mut ws, &welcome).await.unwrap();
        ws
    });
    let mut w = client.stdin.take().unwrap();
    let mut r = client.stdout.take().unwrap();
    let mut read_out = move || {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
        r.read_exact(&mut buf).unwrap();
        lf::parse_out(buf[0], &buf[1..]).unwrap()
    };
    assert!(matches!(read_out(), LinkOut::Ready(_)));
    let promise = B::new()
        .flags(5, 0, false, true)
        .ty(253)
        .ty(252)
        .ty(254)
        .ty(254)
        .0;
    let honest = crate::rser::serialize(&crate::rser::RObj::Real(vec![2.0]));
    for (id, bytes) in [(1u32, promise), (2, honest)] {
        w.write_all(&lf::encode_in(&LinkIn::Task {
            id,
            timeout_ms: 0,
            payload: code("1 + 1").into(),
        }))
        .unwrap();
        w.flush().unwrap();
        rt.block_on(async {
            let tid = loop {
                match ws::recv(&mut ws, &limits).await.unwrap() {
                    Message::Task(t) => break t.id,
                    Message::Ping(n) => ws::send(&mut ws, &Message::Pong(n)).await.unwrap(),
                    _ => {}
                }
            };
            let report = TaskReport {
                id: tid,
                outcome: Outcome::Value(bytes.into()),
                output: vec![],
            };
            ws::send(&mut ws, &Message::Result(report)).await.unwrap();
        });
        match read_out() {
            LinkOut::Result {
                id: 1,
                status,
                payload,
                ..
            } => {
                assert_eq!(status, lf::status::REFUSED);
                let text = String::from_utf8_lossy(&payload);
                assert!(text.starts_with("result refused: a promise"), "{text}");
            }
            LinkOut::Result {
                id: 2,
                status,
                payload,
                ..
            } => {
                assert_eq!(status, lf::status::VALUE);
                assert_eq!(
                    crate::rser::unserialize(&payload).unwrap().as_f64(),
                    Some(2.0)
                );
            }
            other => panic!("{other:?}"),
        }
    }
    drop(w);
    let _ = client.kill();
    let _ = client.wait();
}
