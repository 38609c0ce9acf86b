//! A daemon whose host is gone: a host started again without `--identity`
//! has a new certificate, so a daemon pinned to the old one can never join
//! it. It must stop and say why, not retry for ever.

use crate::common::{code, free_port, spawn_logged, wait_exit, Host};
use std::time::Duration;

#[test]
fn a_daemon_stops_with_a_clear_message_when_its_host_comes_back_as_another() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut first = Host::start("gone-1", &["--listen", &listen]);
    let (mut daemon, log) = spawn_logged(&mut first.daemon_cmd(&["--max-backoff", "1"]), "gone-d");
    first.wait_connections(1);
    first.submit(1, code("1"), 0);
    assert_eq!(first.result(Duration::from_secs(60)).value(), 1.0);
    let old_fingerprint = first.get("fingerprint");
    first.close_link();
    first.wait_exit(Duration::from_secs(15));
    drop(first);
    // Another host on the same address: its own fresh certificate.
    let second = Host::start("gone-2", &["--listen", &listen]);
    assert_ne!(second.get("fingerprint"), old_fingerprint);
    let status = wait_exit(&mut daemon, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("is not the one this daemon joined")
            && text.contains("a host keeps its certificate only with --identity")
            && text.contains(&second.get("fingerprint")),
        "{text}"
    );
}
