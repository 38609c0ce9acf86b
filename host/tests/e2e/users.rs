//! Named users and volunteers (`hako user`, a host's `--identity DIR`):
//! each with a token of their own, revoked or refused while the host runs,
//! their connections closed with a reason that reaches the R side, and a
//! revoked volunteer's daemon stopping instead of retrying for ever.

use crate::common::{
    self, code, hako, printed_command, spawn_logged, token_of, user, user_output, wait_exit, Host,
    RemoteClient,
};
use crate::linkframe as lf;
use crate::protocol::{FrameLimits, Message, Role};
use crate::{dial, rser, tls, ws};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn host_with_users(name: &str, dir: &Path, local: &str) -> Host {
    let d = dir.to_str().unwrap();
    Host::start(
        name,
        &["--identity", d, "--listen", "127.0.0.1:0", "--local", local],
    )
}

/// Wait until `path` (a log) contains `what`.
fn wait_log(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(what) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {what:?} in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run `1 + x` on `c` and return the value.
fn plus_one(c: &mut RemoteClient, id: u32, x: f64) -> f64 {
    c.submit(id, 0, rser::plus_one(x));
    let r = c.result();
    assert_eq!(r.id, id);
    r.value()
}

/// `hako client` with `token`, which the host refuses: what it says.
fn refused_client(host: &Host, token: &str) -> String {
    let out = hako()
        .args(["client", &host.get("url")])
        .args(["--fingerprint", &host.get("fingerprint")])
        .env("HAKO_CLIENT_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

#[test]
fn two_users_submit_and_a_revoked_one_is_closed_mid_session_and_refused() {
    let id = tempfile::tempdir().unwrap();
    let dir = id.path().join("identity");
    let before = user(&dir, &["add", "alice", "--weight", "2"]);
    assert!(before.contains("has not listened yet"), "{before}");
    let mut host = host_with_users("users-two", &dir, "1");
    // Added while the host runs: taken within a second.
    let printed = user(&dir, &["add", "bob", "--max-in-flight", "1"]);
    let (alice, bob) = (token_of(&dir, "alice"), token_of(&dir, "bob"));
    assert_ne!(alice, bob);
    // The line to send bob: this host's URL, pin and bob's token, in R.
    let line = format!(
        "hako::daemons(url = \"{}\", token = \"{bob}\", fingerprint = \"{}\")",
        host.get("url"),
        host.get("fingerprint")
    );
    assert!(printed.contains(&line), "{printed}");
    // The store is private to its owner.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("users.json")), 0o600);
    assert_eq!(mode(&dir), 0o700);
    let list = user(&dir, &["list"]);
    assert!(list.contains("alice") && list.contains("bob"), "{list}");
    assert!(!list.contains(&alice) && !list.contains(&bob), "{list}");

    let mut a = RemoteClient::connect(&host, &alice, "users-alice");
    // A token the host never gave out.
    let err = refused_client(&host, &"x".repeat(20));
    assert!(err.contains("wrong token"), "{err}");
    // bob's token is taken once the host has read the store again.
    wait_log(&host.log, "rules replaced");
    let mut b = RemoteClient::connect(&host, &bob, "users-bob");
    assert_eq!(plus_one(&mut a, 1, 1.0), 2.0);
    assert_eq!(plus_one(&mut b, 1, 10.0), 11.0);
    // The shared client token works alongside the named ones.
    let mut shared = RemoteClient::connect(&host, &host.get("client_token"), "users-shared");
    assert_eq!(plus_one(&mut shared, 1, 5.0), 6.0);
    // bob's limit from the store: one task in flight, a second is refused.
    b.submit(5, 0, code("{ Sys.sleep(2); 1 }"));
    b.submit(6, 0, rser::plus_one(0.0));
    let r = b.result();
    let text = r.text();
    assert_eq!((r.id, r.status), (6, lf::status::REJECTED), "{text}");
    assert!(text.contains("user bob may have at most 1 tasks"), "{text}");
    assert_eq!(b.result().id, 5);

    // Revoked mid-session: alice's link is told why and ends.
    user(&dir, &["revoke", "alice"]);
    let notices = a.notices_until_end();
    assert!(
        notices.iter().any(|n| n.contains("revoked")),
        "{notices:?}; {}",
        a.log_text()
    );
    assert_eq!(a.wait_exit(Duration::from_secs(10)).code(), Some(1));
    // Her token is refused as revoked; bob carries on.
    let err = refused_client(&host, &alice);
    assert!(err.contains("this token was revoked"), "{err}");
    assert_eq!(plus_one(&mut b, 2, 20.0), 21.0);
    let list = user(&dir, &["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("alice") && l.contains("revoked")),
        "{list}"
    );

    // A store that does not parse is reported and the rules stay.
    let good = std::fs::read_to_string(dir.join("users.json")).unwrap();
    std::fs::write(dir.join("users.json"), "{ \"users\": [ oops").unwrap();
    wait_log(&host.log, "is not a valid user store");
    let mut b2 = RemoteClient::connect(&host, &bob, "users-bob2");
    assert_eq!(plus_one(&mut b2, 1, 30.0), 31.0);
    assert!(refused_client(&host, &alice).contains("revoked"));
    std::fs::write(dir.join("users.json"), good).unwrap();
    assert_eq!(plus_one(&mut b, 3, 40.0), 41.0);
    host.close_link();
}

#[test]
fn a_revoked_volunteer_stops_with_a_clear_message() {
    let id = tempfile::tempdir().unwrap();
    let dir = id.path().join("identity");
    let mut host = host_with_users("users-volunteer", &dir, "0");
    let printed = user(&dir, &["add", "vic", "--volunteer"]);
    // Run the printed command as the volunteer would paste it.
    let (mut c, token) = printed_command(&printed, "HAKO_TOKEN");
    assert_eq!(token, token_of(&dir, "vic"));
    let args: Vec<_> = c.get_args().map(|a| a.to_str().unwrap()).collect();
    assert_eq!(args[..2], ["daemon", host.get("url").as_str()]);
    assert!(printed.contains("hako::daemon("), "{printed}");
    c.args(["--name", "vic-laptop"]);
    // vic's token is taken once the host has read the store again.
    wait_log(&host.log, "rules replaced");
    let (mut daemon, log) = spawn_logged(&mut c, "users-vic");
    host.wait_connections(1);
    host.submit(1, code("6 * 7"), 0);
    assert_eq!(host.result(Duration::from_secs(60)).value(), 42.0);

    user(&dir, &["revoke", "vic"]);
    let status = wait_exit(&mut daemon, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    // Told at once (the close reason) or on reconnecting (the refusal).
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("hako: ") && last.contains("this token was revoked by the host"),
        "{text}"
    );
    host.wait_connections(0);
    host.close_link();
}

#[test]
fn refused_daemons_are_closed_and_refused_by_name_and_by_fingerprint() {
    let id = tempfile::tempdir().unwrap();
    let dir = id.path().join("identity");
    user(&dir, &["add", "vol", "--volunteer"]);
    user(&dir, &["add", "sub"]);
    let vol = token_of(&dir, "vol");
    let mut host = host_with_users("users-refused", &dir, "0");
    let target = dial::parse_url(&host.get("url")).unwrap();
    let trust = tls::Trust::Pinned(tls::parse_fingerprint(&host.get("fingerprint")).unwrap());
    let shared = host.get("token");
    let rt = common::runtime();
    let dial_as = |token: &str, name: &str| {
        rt.block_on(dial::dial(
            &target,
            &trust,
            FrameLimits::default(),
            common::peer_hello(Role::Daemon, token, name, None),
        ))
    };
    // A submitter's token does not make a daemon, nor a volunteer's a client.
    let err = dial_as(&token_of(&dir, "sub"), "x").expect_err("refused");
    assert!(err.to_string().contains("wrong token"), "{err}");
    let err = rt
        .block_on(dial::dial(
            &target,
            &trust,
            FrameLimits::default(),
            common::peer_hello(Role::Client, &vol, "x", None),
        ))
        .expect_err("refused");
    assert!(err.to_string().contains("wrong token"), "{err}");
    // Fake daemons (the real protocol), one on the shared token with a
    // name, one on the volunteer's token.
    let (mut named, _) = dial_as(&shared, "bad-box").unwrap();
    let (mut by_token, _) = dial_as(&vol, "anything").unwrap();
    host.wait_connections(2);
    let ends = |c: &mut dial::Conn| {
        rt.block_on(async {
            loop {
                match ws::recv(c, &FrameLimits::default()).await {
                    Ok(Message::PackageSet(_)) => {}
                    Ok(other) => panic!("unexpected {:?}", other.kind()),
                    Err(e) => return e.to_string(),
                }
            }
        })
    };

    user(&dir, &["refuse-daemon", "bad-box"]);
    let why = ends(&mut named);
    assert!(why.contains("refused by the host"), "{why}");
    let again = dial_as(&shared, "bad-box").expect_err("refused");
    assert!(again.to_string().contains("refused by the host"), "{again}");
    // Others on the shared token still join.
    let (_other, _) = dial_as(&shared, "good-box").unwrap();

    let fp = hako_fingerprint(&vol);
    user(&dir, &["refuse-daemon", "--fingerprint", &fp]);
    let why = ends(&mut by_token);
    assert!(why.contains("refused by the host"), "{why}");
    let again = dial_as(&vol, "renamed").expect_err("refused");
    assert!(again.to_string().contains("refused by the host"), "{again}");
    let list = user(&dir, &["list"]);
    assert!(list.contains("bad-box") && list.contains(&fp), "{list}");

    // And taken again.
    user(&dir, &["allow-daemon", "bad-box"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dial_as(&shared, "bad-box").is_err() {
        assert!(Instant::now() < deadline, "bad-box still refused");
        std::thread::sleep(Duration::from_millis(100));
    }
    host.close_link();
}

/// A token's fingerprint as `hako user list` shows it.
fn hako_fingerprint(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(token.as_bytes())[..8])
}

#[test]
fn a_store_others_can_read_or_that_does_not_parse_stops_the_host() {
    let id = tempfile::tempdir().unwrap();
    let dir = id.path().join("identity");
    user(&dir, &["add", "carol"]);
    let store = dir.join("users.json");
    let start = || {
        hako()
            .args(["host", "--stdio", "--listen", "127.0.0.1:0", "--identity"])
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = start();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("users.json") && err.contains("chmod 600"),
        "{err}"
    );
    let out = user_output(&dir, &["list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    // A change by hand leaves it private only if the editor keeps the mode.
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&store, "{\"users\": [{\"name\": \"../x\"}]}").unwrap();
    let out = start();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not a valid user store"), "{err}");
    // Names that are paths or escapes are refused at once.
    for bad in ["../etc", "a\u{1b}[31m", "local"] {
        let out = user_output(&dir, &["add", bad]);
        assert_eq!(out.status.code(), Some(1));
    }
}
