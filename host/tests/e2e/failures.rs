//! Daemons and hosts that die: a task is never lost, retried within bounds,
//! and daemons leave or come back as told.

use crate::common::{code, free_port, hako, log_file, spawn_logged, wait_exit, Host};
use crate::linkframe as lf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Wait until a daemon is running a task, and return its row id.
fn busy_daemon(host: &mut Host) -> String {
    let mut id = String::new();
    host.wait_for(
        "a busy daemon",
        Duration::from_secs(30),
        |_, rows| match rows.iter().find(|r| r["busy_ms"] != "NA") {
            Some(r) => {
                id = r["id"].clone();
                true
            }
            None => false,
        },
    );
    id
}

#[test]
fn a_killed_daemon_s_task_completes_on_another() {
    let mut host = Host::start("kill", &["--listen", "127.0.0.1:0"]);
    let a = host.daemon("kill-a", &[]);
    host.wait_connections(1);
    host.submit(1, code("Sys.sleep(2); 42"), 0);
    busy_daemon(&mut host);
    let b = host.daemon("kill-b", &[]);
    host.wait_connections(2);
    // SIGKILL: no goodbye, the socket just dies.
    host.daemon_child(a).kill().unwrap();
    host.daemon_child(a).wait().unwrap();
    let r = host.result(Duration::from_secs(60));
    assert_eq!((r.id, r.value()), (1, 42.0));
    let (c, rows) = host.info();
    assert_eq!(
        (c["connections"], c["cumulative"], c["completed"]),
        (1, 2, 1)
    );
    assert_eq!(rows[0]["tasks_done"], "1");
    let _ = b;
}

#[test]
fn without_retry_a_killed_daemon_s_task_is_an_error_value() {
    let mut host = Host::start("noretry", &["--listen", "127.0.0.1:0", "--retries", "0"]);
    let a = host.daemon("noretry-a", &[]);
    host.wait_connections(1);
    host.submit(1, code("Sys.sleep(5); 1"), 0);
    busy_daemon(&mut host);
    // Its `Started` reaches the host right after the task does.
    std::thread::sleep(Duration::from_secs(1));
    host.daemon_child(a).kill().unwrap();
    let r = host.result(Duration::from_secs(30));
    assert_eq!((r.id, r.status), (1, lf::status::CRASHED), "{}", r.text());
    assert!(r.text().contains("crashed its daemon"), "{}", r.text());
}

#[test]
fn daemons_with_autoexit_exit_when_the_host_stops() {
    let mut host = Host::start("autoexit", &["--listen", "127.0.0.1:0"]);
    let a = host.daemon("autoexit-a", &["--autoexit"]);
    let b = host.daemon("autoexit-b", &["--autoexit", "--keep-state"]);
    host.wait_connections(2);
    host.submit(1, code("1"), 0);
    host.result(Duration::from_secs(60)).value();
    let t = Instant::now();
    host.close_link();
    assert!(host.wait_exit(Duration::from_secs(15)).success());
    for d in [a, b] {
        let s = wait_exit(host.daemon_child(d), Duration::from_secs(15));
        assert!(s.success(), "daemon exit status {s:?}");
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

fn write_cert(dir: &std::path::Path) -> (String, String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let fp = crate::tls::fingerprint(ck.cert.der());
    (cert.display().to_string(), key.display().to_string(), fp)
}

#[test]
fn a_daemon_reconnects_and_resumes_when_the_host_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, fp) = write_cert(dir.path());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let token = "a-fixed-join-token-for-this-test";
    let args = [
        "--listen", &listen, "--cert", &cert, "--key", &key, "--token", token,
    ];
    let mut host = Host::start("reconnect-1", &args);
    let (mut daemon, log_path) = spawn_logged(
        hako()
            .args([
                "daemon",
                &format!("wss://127.0.0.1:{port}"),
                "--token",
                token,
                "--fingerprint",
                &fp,
            ])
            .args(["--max-backoff", "1"]),
        "reconnect-d",
    );
    host.wait_connections(1);
    host.submit(1, code("1"), 0);
    assert_eq!(host.result(Duration::from_secs(60)).value(), 1.0);
    host.close_link();
    host.wait_exit(Duration::from_secs(15));
    drop(host);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon must keep trying"
    );
    let mut host = Host::start("reconnect-2", &args);
    host.wait_connections(1);
    host.submit(2, code("2"), 0);
    assert_eq!(host.result(Duration::from_secs(60)).value(), 2.0);
    let _ = daemon.kill();
    let _ = daemon.wait();
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    assert!(log.contains("reconnecting"), "{log}");
}

#[test]
fn a_host_restarted_with_its_identity_keeps_its_pinned_daemons() {
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("identity");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let args = ["--listen", &listen, "--identity", id.to_str().unwrap()];
    let mut host = Host::start("identity-1", &args);
    let (fp, token) = (host.get("fingerprint"), host.get("token"));
    let (log, _) = log_file("identity-d");
    let mut daemon = hako()
        .args(["daemon", &host.get("url"), "--token", &token])
        .args(["--fingerprint", &fp, "--max-backoff", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    host.wait_connections(1);
    host.submit(1, code("1"), 0);
    assert_eq!(host.result(Duration::from_secs(60)).value(), 1.0);
    host.close_link();
    host.wait_exit(Duration::from_secs(15));
    drop(host);
    // Same directory: same fingerprint and token, and the daemon comes back.
    let mut host = Host::start("identity-2", &args);
    assert_eq!((host.get("fingerprint"), host.get("token")), (fp, token));
    host.wait_connections(1);
    host.submit(2, code("2"), 0);
    assert_eq!(host.result(Duration::from_secs(60)).value(), 2.0);
    let _ = daemon.kill();
    let _ = daemon.wait();
    // --identity and --cert do not mix.
    let out = hako()
        .args([
            "host",
            "--identity",
            id.to_str().unwrap(),
            "--cert",
            "c",
            "--key",
            "k",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_ca_signed_host_is_verified_without_a_pin() {
    let dir = tempfile::tempdir().unwrap();
    // A CA and a leaf for 127.0.0.1 signed by it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hako test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let (ca_pem, cert_pem, key_pem) = (
        dir.path().join("ca.pem"),
        dir.path().join("c.pem"),
        dir.path().join("k.pem"),
    );
    std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
    std::fs::write(&cert_pem, leaf.pem()).unwrap();
    std::fs::write(&key_pem, leaf_key.serialize_pem()).unwrap();
    let mut host = Host::start(
        "ca",
        &[
            "--listen",
            "127.0.0.1:0",
            "--cert",
            cert_pem.to_str().unwrap(),
            "--key",
            key_pem.to_str().unwrap(),
        ],
    );
    assert!(!host.get("daemon_command").contains("--fingerprint"));
    let url = host.get("url");
    let token = host.get("token");
    // Without the CA: not trusted, refused at once.
    let out = hako()
        .args(["daemon", &url, "--token", &token, "--autoexit"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (log, _) = log_file("ca-d");
    let mut d = hako()
        .args([
            "daemon",
            &url,
            "--token",
            &token,
            "--autoexit",
            "--ca",
            ca_pem.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    host.wait_connections(1);
    host.submit(1, code("6 * 7"), 0);
    assert_eq!(host.result(Duration::from_secs(60)).value(), 42.0);
    let _ = d.kill();
    let _ = d.wait();
}

/// `length(l)` with `l` a list nested `depth` deep, as a task payload
/// (serialized on a big stack: the writer recurses).
fn deep_list_task(depth: usize) -> Vec<u8> {
    use crate::rser::{call, sym, task, RObj};
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            let mut l = RObj::Null;
            for i in 0..depth {
                l = RObj::List(vec![(None, RObj::Int(vec![i as i32])), (None, l)]);
            }
            task(call("length", vec![sym("l")]), vec![("l", l)])
        })
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn deep_objects_in_tasks_leave_the_host_and_its_daemons_alive() {
    let mut host = Host::start("deep", &["--local", "2"]);
    host.wait_connections(2);
    // An argument nested 1e4 deep (unserialize recurses in C) is evaluated;
    // then a call nested 2e5 deep deparsed must end as the task's error or
    // crash value, never take the process down.
    host.submit(1, deep_list_task(10_000), 0);
    let r = host.result(Duration::from_secs(120));
    assert_eq!((r.id, r.value()), (1, 2.0));
    host.submit(
        2,
        code("x <- quote(1); for (i in 1:2e5) x <- call('f', x); deparse(x)"),
        0,
    );
    let r = host.result(Duration::from_secs(120));
    assert_eq!(r.id, 2);
    assert_ne!(r.status, lf::status::VALUE, "{}", r.text());
    // A runaway recursion's error value says what R said.
    host.submit(3, code("f <- function(n) f(n + 1); f(1)"), 0);
    let r = host.result(Duration::from_secs(120));
    assert_eq!((r.id, r.status), (3, lf::status::ERROR), "{}", r.text());
    assert!(
        r.text().contains("C stack") || r.text().contains("nested too deeply"),
        "{}",
        r.text()
    );
    // Both daemons still answer.
    host.submit(4, code("Sys.sleep(0.5); 4"), 0);
    host.submit(5, code("Sys.sleep(0.5); 5"), 0);
    let mut got = [
        host.result(Duration::from_secs(60)),
        host.result(Duration::from_secs(60)),
    ]
    .map(|r| (r.id, r.value()));
    got.sort_by_key(|g| g.0);
    assert_eq!(got, [(4, 4.0), (5, 5.0)]);
    let (c, _) = host.info();
    assert_eq!(c["connections"], 2);
    // Unseeded tasks draw their own numbers: of four, at least two ran on
    // one daemon, and all differ.
    let mut draws = Vec::new();
    for id in 10..14 {
        host.submit(id, code("runif(1)"), 0);
        draws.push(host.result(Duration::from_secs(60)).value());
    }
    draws.sort_by(f64::total_cmp);
    draws.dedup();
    assert_eq!(draws.len(), 4, "{draws:?}");
}

#[test]
fn eval_ends_deep_recursion_and_bad_timeouts_with_exit_codes_not_crashes() {
    let run = |args: &[&str]| hako().arg("eval").args(args).output().unwrap();
    for t in ["1e19", "1e300", "inf", "nan", "-1", "0", "1e-400"] {
        let out = run(&["--timeout", t, "1"]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "--timeout {t}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The daemon's and host's seconds options share the parser.
    for opt in [
        "--task-timeout",
        "--idle-time",
        "--wall-time",
        "--max-backoff",
    ] {
        let out = hako()
            .args(["daemon", "--token", "x", opt, "1e300", "wss://127.0.0.1:9"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{opt}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = hako()
        .args(["host", "--local", "1", "--task-timeout", "1e19"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for code in [
        "x <- quote(1); for (i in 1:2e5) x <- call('f', x); deparse(x)",
        "l <- NULL; for (i in 1:2e5) l <- list(i, l); unlist(l)",
        "f <- function(n) f(n + 1); f(1)",
    ] {
        let out = run(&[code]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{code}: {err}");
        assert!(
            err.contains("stack") || err.contains("nested too deeply"),
            "{code}: {err}"
        );
        assert!(
            err.len() < 2000,
            "{code}: a short message, not a backtrace: {err}"
        );
    }
    eval_output_bookkeeping_is_bounded();
    eval_neutralises_terminal_controls_on_a_tty();
}

/// Exit code and peak RSS (KiB) of `hako eval ARGS`, from wait4 on it.
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives its rusage
fn eval_peak_rss(args: &[&str]) -> (i32, i64) {
    let child = hako()
        .arg("eval")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: waits for our own child and fills a rusage we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(r, child.id() as i32);
    (libc::WEXITSTATUS(status), ru.ru_maxrss)
}

/// Alternating 1-byte stdout/stderr writes cost a chunk each: under a 1 MiB
/// --max-output they end as an output limit, the host's memory within a few
/// caps of a run that prints nothing (before, ~100 bytes per byte written).
fn eval_output_bookkeeping_is_bounded() {
    let (code, base) = eval_peak_rss(&[
        "--max-output",
        "1",
        "for (i in 1:3e4) { invisible('a'); invisible('b') }",
    ]);
    assert_eq!(code, 0);
    let (code, flood) = eval_peak_rss(&[
        "--max-output",
        "1",
        "for (i in 1:1e6) { cat('a'); cat('b', file = stderr()) }",
    ]);
    assert_eq!(code, 3, "an output limit");
    println!("peak RSS: quiet {base} KiB, flood {flood} KiB");
    // 4 caps, plus slack for R's own heap.
    assert!(
        flood < base + 4 * 1024 + 12 * 1024,
        "quiet {base} KiB, flood {flood} KiB"
    );
}

/// On a terminal, escape sequences from R are shown, not obeyed; through a
/// pipe they pass unchanged.
fn eval_neutralises_terminal_controls_on_a_tty() {
    let r = r#"cat("]0;pwned[2J]52;c;ZXZpbA== ok
")"#;
    let piped = hako().args(["eval", r]).output().unwrap();
    assert_eq!(
        piped.stdout,
        b"\x1b]0;pwned\x07\x1b[2J\x1b]52;c;ZXZpbA==\x07 ok\n"
    );
    let cmd = format!("'{}' eval '{}'", env!("CARGO_BIN_EXE_hako"), r);
    let tty = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script(1) from util-linux");
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    assert!(!tty.stdout.contains(&0x1b), "{shown:?}");
    assert!(
        shown.contains("^[]0;pwned^G^[[2J^[]52;c;ZXZpbA==^G ok"),
        "{shown:?}"
    );
}
