//! Results checked by redundancy: a LYING daemon (a fake speaking the real
//! protocol, answering every task with a wrong but valid R value) joins a
//! real host beside real `hako daemon`s. With `.replicas = 2` its lie never
//! reaches the client: the honest value wins, the liar's record shows its
//! disagreements, also after it reconnects, and a task whose replicas all
//! differ resolves to an error naming them.

use crate::common::{code, Host, Liar};
use crate::linkframe::{self as lf, LinkIn};
use crate::rser;
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;

/// A daemon on the shared token that answers every task at once with the
/// number 3.
fn liar(host: &Host) -> Liar {
    let (url, fp) = (host.get("url"), host.get("fingerprint"));
    Liar::join(&url, &fp, &host.get("token"), "liar", 3.0)
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
    let lying = liar(&host);
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
    drop(lying);
    host.wait_connections(2);
    let _again = liar(&host);
    host.wait_connections(3);
    let r = row(&mut host, "liar");
    assert_eq!(r["disagreements"].parse::<u64>().unwrap(), lost, "{r:?}");
    assert_eq!(r["tasks_done"], "0", "a new connection, the same record");

    // Each of four daemons returning its own value: after k + 2 = 4 votes
    // the task resolves to an error that says what disagreed, never a value.
    host.daemon("replicas-honest-c", &["--name", "honest-c", "--autoexit"]);
    host.wait_connections(4);
    replicated(
        &mut host,
        100,
        2,
        code("readBin(\"/dev/urandom\", \"raw\", 16L)"),
    );
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
