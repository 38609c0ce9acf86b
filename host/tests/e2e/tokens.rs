//! A daemon's join token never needs to be in its command line, where any
//! user of the volunteer's machine reads it with `ps`: the host prints a
//! command that passes it in the environment, and `--token-file` reads it
//! from a file.

use crate::common::{code, hako, spawn_logged, wait_exit, Host};
use std::time::Duration;

#[test]
fn the_printed_command_keeps_the_token_out_of_argv_and_a_token_file_joins() {
    let mut host = Host::start("tokens", &["--listen", "127.0.0.1:0"]);
    let printed = host.get("daemon_command");
    let token = host.get("token");
    assert!(
        printed.starts_with(&format!("HAKO_TOKEN={token} hako daemon wss://")),
        "{printed}"
    );
    assert!(!printed.contains("--token"), "{printed}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let mut cmd = hako();
    cmd.arg("daemon")
        .arg(host.get("url"))
        .arg("--token-file")
        .arg(&file)
        .args(["--fingerprint", &host.get("fingerprint"), "--autoexit"])
        .env_remove("HAKO_TOKEN");
    let (mut daemon, _) = spawn_logged(&mut cmd, "tokens-d");
    host.wait_connections(1);
    host.submit(1, code("40 + 2"), 0);
    assert_eq!(host.result(Duration::from_secs(60)).value(), 42.0);
    host.close_link();
    assert!(wait_exit(&mut daemon, Duration::from_secs(30)).success());
}

#[test]
fn a_daemon_without_a_token_says_where_to_put_one() {
    let out = hako()
        .args(["daemon", "wss://127.0.0.1:9", "--fingerprint", FAKE_PIN])
        .env_remove("HAKO_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--token-file") && err.contains("HAKO_TOKEN"),
        "{err}"
    );
}

/// A well-formed pin of no host (the token is checked before dialing).
const FAKE_PIN: &str = "SHA256:0000000000000000000000000000000000000000000000000000000000000000";
