//! One host holds many idle daemons cheaply (lightweight protocol clients
//! here: the point is the host's cost per connection).

use crate::common::{proc_status, Host};
use crate::dial;
use crate::protocol::{FrameLimits, Role};
use crate::tls::{self, Trust};
use std::time::{Duration, Instant};

#[test]
fn a_thousand_idle_daemons_cost_under_100_kib_each() {
    const N: usize = 1000;
    let mut host = Host::start("idle", &["--listen", "127.0.0.1:0", "--no-clients"]);
    let target = dial::parse_url(&host.get("url")).unwrap();
    let trust = Trust::Pinned(tls::parse_fingerprint(&host.get("fingerprint")).unwrap());
    let token = host.get("token");
    let hello = crate::common::peer_hello(Role::Daemon, token, "idle", None);
    let rt = crate::common::runtime();
    let dial_many = |n: usize| {
        rt.block_on(async {
            let mut conns = Vec::with_capacity(n);
            for chunk in 0..n.div_ceil(100) {
                let k = 100.min(n - chunk * 100);
                let batch = (0..k)
                    .map(|_| dial::dial(&target, &trust, FrameLimits::default(), hello.clone()));
                for r in futures_util::future::join_all(batch).await {
                    conns.push(r.expect("an idle daemon is welcomed").0);
                }
            }
            conns
        })
    };
    // Warm up the host's allocator and runtime with a first batch.
    let warm = dial_many(50);
    host.wait_connections(50);
    std::thread::sleep(Duration::from_millis(300));
    let before = proc_status(host.pid(), "VmRSS:");
    let t = Instant::now();
    let conns = dial_many(N);
    host.wait_for("all connected", Duration::from_secs(60), |c, _| {
        c["connections"] == (N + 50) as u64
    });
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let after = proc_status(host.pid(), "VmRSS:");
    let per = (after.saturating_sub(before)) as f64 / N as f64;
    eprintln!("{N} idle daemons connected in {took:.2?}; host RSS {before} KiB -> {after} KiB, {per:.1} KiB each");
    assert!(per <= 100.0, "{per:.1} KiB per idle daemon");
    drop(conns);
    drop(warm);
    host.wait_for("all gone", Duration::from_secs(30), |c, _| {
        c["connections"] == 0
    });
}
