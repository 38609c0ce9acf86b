//! Results checked by redundancy: a LYING daemon (a fake speaking the real
//! protocol, answering every task with a wrong but valid R value) joins a
//! real host beside real `hako daemon`s. With `.replicas = 2` its lie never
//! reaches the client: the honest value wins, the liar's record shows its
//! disagreements, also after it reconnects, and a task whose replicas all
//! differ resolves to an error naming them.

use crate::common::{code, Host};
use crate::dial;
use crate::linkframe::{self as lf, LinkIn};
use crate::protocol::{FrameLimits, Message, Outcome, Role, TaskReport};
use crate::rser::{self, RObj};
use crate::tls::{self, Trust};
use crate::ws;
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;

/// A daemon that answers every task at once with the number 3. Stops (says
/// bye and hangs up) when `stop` is sent or dropped.
fn liar(
    host: &Host,
    name: &str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let target = dial::parse_url(&host.get("url")).unwrap();
    let trust = Trust::Pinned(tls::parse_fingerprint(&host.get("fingerprint")).unwrap());
    let hello = crate::common::peer_hello(Role::Daemon, host.get("token"), name, None);
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let thread =
        std::thread::spawn(move || {
            let rt = crate::common::runtime();
            rt.block_on(async move {
            let limits = FrameLimits {
                control: 1 << 20,
                bulk: 64 << 20,
            };
            let (mut c, _) = dial::dial(&target, &trust, limits, hello)
                .await
                .expect("the liar joins");
            let lie = Outcome::Value(Bytes::from(rser::serialize(&RObj::Real(vec![3.0]))));
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    m = ws::recv(&mut c, &limits) => match m {
                        Ok(Message::Task(t)) => {
                            ws::send(&mut c, &Message::Started { id: t.id }).await.unwrap();
                            let r = TaskReport { id: t.id, outcome: lie.clone(), output: vec![] };
                            ws::send(&mut c, &Message::Result(r)).await.unwrap();
                        }
                        Ok(Message::Ping(n)) => ws::send(&mut c, &Message::Pong(n)).await.unwrap(),
                        Ok(_) => {}
                        Err(_) => return,
                    },
                }
            }
            let _ = ws::send(&mut c, &Message::Bye { reason: "done lying".into() }).await;
        });
        });
    (stop, thread)
}

fn replicated(host: &mut Host, id: u32, replicas: u32, payload: Vec<u8>) {
    host.send(&LinkIn::TaskReplicas {
        id,
        timeout_ms: 0,
        replicas,
        payload: Bytes::from(payload),
    });
}

/// The INFO row of the daemon called `name`.
fn row(host: &mut Host, name: &str) -> HashMap<String, String> {
    let (_, rows) = host.info();
    rows.into_iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no daemon {name} in INFO"))
}

#[test]
fn a_lying_daemon_is_outvoted_and_recorded() {
    let mut host = Host::start("replicas", &["--listen", "127.0.0.1:0"]);
    let (stop, thread) = liar(&host, "liar");
    host.wait_connections(1);
    host.daemon("replicas-honest-a", &["--name", "honest-a", "--autoexit"]);
    host.daemon("replicas-honest-b", &["--name", "honest-b", "--autoexit"]);
    host.wait_connections(3);

    // The honest value wins every time (the liar answers first, so it is
    // in most votes), and the liar's lost votes are counted against it.
    let mut id = 1;
    while row(&mut host, "liar")["disagreements"] == "0" {
        assert!(id < 20, "the liar never took part in a vote");
        replicated(&mut host, id, 2, rser::plus_one(id as f64));
        let r = host.result(Duration::from_secs(120));
        assert_eq!(r.id, id);
        assert_eq!(r.value(), id as f64 + 1.0, "never the lie");
        id += 1;
    }
    for honest in ["honest-a", "honest-b"] {
        let r = row(&mut host, honest);
        assert_eq!(
            (&r["disagreements"][..], &r["failures"][..]),
            ("0", "0"),
            "{r:?}"
        );
    }
    let lost: u64 = row(&mut host, "liar")["disagreements"].parse().unwrap();

    // Reconnecting does not wash the record.
    stop.send(()).unwrap();
    thread.join().unwrap();
    host.wait_connections(2);
    let (_again, _thread) = liar(&host, "liar");
    host.wait_connections(3);
    let r = row(&mut host, "liar");
    assert_eq!(r["disagreements"].parse::<u64>().unwrap(), lost, "{r:?}");
    assert_eq!(r["tasks_done"], "0", "a new connection, the same record");

    // Each of four daemons returning its own value: after k + 2 = 4 votes
    // the task resolves to an error that says what disagreed, never a value.
    host.daemon("replicas-honest-c", &["--name", "honest-c", "--autoexit"]);
    host.wait_connections(4);
    replicated(&mut host, 100, 2, code("as.numeric(Sys.time()) + runif(1)"));
    let r = host.result(Duration::from_secs(120));
    assert_eq!(
        (r.id, r.status),
        (100, lf::status::DISAGREED),
        "{}",
        r.text()
    );
    let m = r.text();
    assert!(
        m.starts_with(
            "replicas disagree: no result had 2 identical votes of 4, 4 distinct results"
        ),
        "{m}"
    );
    assert!(
        m.contains(" from liar") && m.contains(" from honest-a"),
        "{m}"
    );
}

#[test]
fn the_host_wide_default_replicates_plain_tasks() {
    let mut host = Host::start(
        "replicas-default",
        &["--no-listen", "--local", "2", "--replicas", "2"],
    );
    host.wait_connections(2);
    let runs = |host: &mut Host| -> u64 {
        let (_, rows) = host.info();
        rows.iter()
            .map(|r| r["tasks_done"].parse::<u64>().unwrap())
            .sum()
    };
    host.submit(1, rser::plus_one(1.0), 0);
    assert_eq!(host.result(Duration::from_secs(120)).value(), 2.0);
    assert_eq!(runs(&mut host), 2, "both daemons ran it");
    // The client's own count wins over the default.
    replicated(&mut host, 2, 1, rser::plus_one(2.0));
    assert_eq!(host.result(Duration::from_secs(120)).value(), 3.0);
    assert_eq!(runs(&mut host), 3);
    // More than the cap is refused, with the reason.
    replicated(&mut host, 3, 6, rser::plus_one(3.0));
    let r = host.result(Duration::from_secs(60));
    assert_eq!((r.id, r.status), (3, lf::status::REJECTED));
    assert!(r.text().contains("replicas"), "{}", r.text());
}
