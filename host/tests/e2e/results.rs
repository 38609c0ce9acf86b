//! A daemon that lies about results: a fake daemon speaking the real
//! protocol joins a real host and answers a real client's tasks with forms
//! that would run code in, or crash, the client's R session. Each reaches
//! the client as link status 10 "result refused: ..." (never the bytes), and
//! the host keeps serving with an honest daemon afterwards.

use crate::common::{code, Host};
use crate::dial::{self, Conn};
use crate::linkframe as lf;
use crate::protocol::{
    Capabilities, DaemonLimits, FrameLimits, HelloBody, Message, Outcome, Role, TaskReport,
};
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let hello = HelloBody {
        role: Role::Daemon,
        token: host.get("token"),
        name: "liar".into(),
        limits: DaemonLimits {
            memory_bytes: 1 << 30,
            ..Default::default()
        },
        caps: Capabilities::default(),
    };
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
