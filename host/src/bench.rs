//! `hako bench`: trivial-task round trip (p50, p99) and throughput measured
//! at the client link, the way an R session sees them. Starts
//! `hako host --stdio` as a child, with in-process daemons or with
//! `hako daemon` children over wss on loopback.
//!
//! `--fair-share`: user B's wait for one task while user A has a backlog,
//! under `--schedule fair` and `--schedule fifo` in the same run.

use crate::linkframe::{self as lf, LinkIn, LinkOut};
use crate::rser;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use std::io::{BufReader, BufWriter, Read, Write};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Over {
    /// In-process daemons (`hako host --local N`).
    Inproc,
    /// `hako daemon` processes over wss on loopback.
    Wss,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Daemon counts to measure, e.g. `1,2`.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    daemons: Vec<usize>,
    /// How daemons reach the host.
    #[arg(long, value_enum, default_value = "wss")]
    over: Over,
    /// Sequential round trips measured (after 50 warm-up tasks).
    #[arg(long, default_value_t = 1000)]
    round_trips: usize,
    /// Tasks submitted at once for the throughput figure.
    #[arg(long, default_value_t = 10000)]
    tasks: usize,
    /// Keep state between tasks (no reset): shows what the reset costs.
    #[arg(long)]
    keep_state: bool,
    /// Measure instead user B's wait for one task while user A has
    /// `--backlog` tasks queued, fair share against FIFO, on a host with
    /// two in-process daemons (A is the host's own link, B a remote client).
    #[arg(long)]
    fair_share: bool,
    /// User A's backlog for `--fair-share`.
    #[arg(long, default_value_t = 10000)]
    backlog: usize,
    /// Backlogs per policy for `--fair-share` (B's median wait is shown).
    #[arg(long, default_value_t = 3)]
    trials: usize,
}

struct Link {
    child: Child,
    daemons: Vec<Child>,
    w: BufWriter<std::process::ChildStdin>,
    rx: mpsc::Receiver<LinkOut>,
}

impl Drop for Link {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Link {
    fn send(&mut self, m: &LinkIn) -> anyhow::Result<()> {
        self.w.write_all(&lf::encode_in(m))?;
        Ok(())
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        self.w.flush()?;
        Ok(())
    }
    fn recv(&self) -> anyhow::Result<LinkOut> {
        Ok(self.rx.recv_timeout(Duration::from_secs(120))?)
    }
}

fn read_loop(r: impl Read, tx: mpsc::Sender<LinkOut>) {
    let mut r = BufReader::with_capacity(1 << 16, r);
    loop {
        let mut len = [0u8; 4];
        if r.read_exact(&mut len).is_err() {
            return;
        }
        let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
        if buf.is_empty() || r.read_exact(&mut buf).is_err() {
            return;
        }
        match lf::parse_out(buf[0], &buf[1..]) {
            Ok(m) => {
                if tx.send(m).is_err() {
                    return;
                }
            }
            Err(e) => {
                eprintln!("bench: bad frame from host: {e}");
                return;
            }
        }
    }
}

fn start(n: usize, over: Over, keep_state: bool) -> anyhow::Result<Link> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(&exe);
    cmd.arg("host").arg("--stdio");
    match over {
        Over::Inproc => {
            cmd.args(["--no-listen", "--local", &n.to_string()]);
            if keep_state {
                cmd.arg("--keep-state");
            }
        }
        Over::Wss => {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
    }
    let (mut link, ready) = spawn_link(cmd)?;
    let get = |k: &str| ready.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    if let Over::Wss = over {
        let (url, token, fp) = (
            get("url").unwrap_or_default(),
            get("token").unwrap_or_default(),
            get("fingerprint").unwrap_or_default(),
        );
        for _ in 0..n {
            let mut d = Command::new(&exe);
            d.args([
                "daemon",
                &url,
                "--token",
                &token,
                "--fingerprint",
                &fp,
                "--autoexit",
            ]);
            if keep_state {
                d.arg("--keep-state");
            }
            link.daemons.push(
                d.stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            );
        }
    }
    wait_connections(&mut link, n)?;
    Ok(link)
}

/// Spawn `cmd` (a host or a client, speaking the client link on its
/// stdio) and read its READY.
fn spawn_link(mut cmd: Command) -> anyhow::Result<(Link, Vec<(String, String)>)> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("HAKO_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || read_loop(stdout, tx));
    let link = Link {
        child,
        daemons: Vec::new(),
        w: BufWriter::new(stdin),
        rx,
    };
    let ready = match link.recv()? {
        LinkOut::Ready(t) => lf::parse_kv(&t),
        other => anyhow::bail!("expected READY, got {other:?}"),
    };
    Ok((link, ready))
}

/// Wait until `n` daemons are connected to the host on `link`.
fn wait_connections(link: &mut Link, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        link.send(&LinkIn::Info)?;
        link.flush()?;
        if let LinkOut::Info(t) = link.recv()? {
            let c = lf::parse_kv(&t)
                .into_iter()
                .find(|(k, _)| k == "connections")
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0);
            if c >= n {
                break;
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("daemons did not connect");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn check(m: LinkOut, want: f64) -> anyhow::Result<u32> {
    match m {
        LinkOut::Result {
            id,
            status: lf::status::VALUE,
            payload,
            ..
        } => {
            let v = rser::unserialize(&payload).map_err(anyhow::Error::msg)?;
            if want.is_finite() && v.as_f64() != Some(want) {
                anyhow::bail!("task {id}: wrong value {v:?}");
            }
            Ok(id)
        }
        other => anyhow::bail!("unexpected {other:?}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Submit task `i`: `x + 1` with `x = i`, no timeout.
fn send_plus_one(link: &mut Link, i: usize) -> anyhow::Result<()> {
    link.send(&LinkIn::Task {
        id: i as u32,
        timeout_ms: 0,
        payload: Bytes::from(rser::plus_one(i as f64)),
    })
}

fn measure(n: usize, args: &BenchArgs) -> anyhow::Result<()> {
    let mut link = start(n, args.over, args.keep_state)?;
    // Warm up.
    for i in 0..50 {
        send_plus_one(&mut link, i)?;
    }
    link.flush()?;
    for _ in 0..50 {
        check(link.recv()?, f64::NAN)?;
    }
    // Sequential round trips.
    let mut rtt = Vec::with_capacity(args.round_trips);
    for i in 0..args.round_trips {
        let t = Instant::now();
        send_plus_one(&mut link, i)?;
        link.flush()?;
        check(link.recv()?, i as f64 + 1.0)?;
        rtt.push(t.elapsed());
    }
    rtt.sort();
    // Throughput: everything at once.
    let t = Instant::now();
    for i in 0..args.tasks {
        send_plus_one(&mut link, i)?;
    }
    link.flush()?;
    let mut seen = vec![false; args.tasks];
    for _ in 0..args.tasks {
        let id = check(link.recv()?, f64::NAN)? as usize;
        if std::mem::replace(&mut seen[id], true) {
            anyhow::bail!("task {id} resolved twice");
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{:?} daemons={n}{}: round trip p50 {:.0} us, p99 {:.0} us (n={}); throughput {:.0} tasks/s ({} tasks in {:.2} s)",
        args.over,
        if args.keep_state { " keep-state" } else { "" },
        percentile(&rtt, 0.5).as_secs_f64() * 1e6,
        percentile(&rtt, 0.99).as_secs_f64() * 1e6,
        rtt.len(),
        args.tasks as f64 / secs,
        args.tasks,
        secs
    );
    Ok(())
}

pub fn run(args: BenchArgs) -> ExitCode {
    if args.fair_share {
        return match fair_share(args.backlog, args.trials) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hako bench: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    for &n in &args.daemons {
        if let Err(e) = measure(n, &args) {
            eprintln!("hako bench: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// What one policy gave: B's wait on an idle host, B's waits behind A's
/// backlogs (sorted), and the time A's backlogs took (median).
struct Waits {
    idle: Duration,
    behind: Vec<Duration>,
    backlog: Duration,
}

/// B's waits under `--schedule schedule`: a host with two in-process
/// daemons; user A is its own link ("local"), user B a `hako client` with
/// the client token ("shared").
fn share_run(schedule: &str, backlog: usize, trials: usize) -> anyhow::Result<Waits> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(&exe);
    cmd.args(["host", "--stdio", "--local", "2", "--listen", "127.0.0.1:0"])
        .args(["--schedule", schedule]);
    let (mut a, ready) = spawn_link(cmd)?;
    wait_connections(&mut a, 2)?;
    let get = |k: &str| {
        ready
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| anyhow::anyhow!("no {k} in the host's READY"))
    };
    let mut client = Command::new(&exe);
    client
        .args([
            "client",
            &get("url")?,
            "--fingerprint",
            &get("fingerprint")?,
        ])
        .env("HAKO_CLIENT_TOKEN", get("client_token")?);
    let (mut b, _) = spawn_link(client)?;
    // Warm both paths, then B's wait on an idle host (the anchor).
    for i in 0..20 {
        send_plus_one(&mut b, i)?;
        send_plus_one(&mut a, i)?;
    }
    b.flush()?;
    a.flush()?;
    for _ in 0..20 {
        check(b.recv()?, f64::NAN)?;
        check(a.recv()?, f64::NAN)?;
    }
    let mut idle = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        send_plus_one(&mut b, i)?;
        b.flush()?;
        check(b.recv()?, i as f64 + 1.0)?;
        idle.push(t.elapsed());
    }
    idle.sort();
    let (mut behind, mut took) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        // A's backlog, and an INFO behind it: its answer means the host
        // has queued all of it.
        let t0 = Instant::now();
        for i in 0..backlog {
            send_plus_one(&mut a, i)?;
        }
        a.send(&LinkIn::Info)?;
        a.flush()?;
        let mut a_done = 0;
        loop {
            match a.recv()? {
                LinkOut::Info(_) => break,
                m => {
                    check(m, f64::NAN)?;
                    a_done += 1;
                }
            }
        }
        let t = Instant::now();
        send_plus_one(&mut b, 7)?;
        b.flush()?;
        check(b.recv()?, 8.0)?;
        behind.push(t.elapsed());
        while a_done < backlog {
            check(a.recv()?, f64::NAN)?;
            a_done += 1;
        }
        took.push(t0.elapsed());
    }
    behind.sort();
    took.sort();
    Ok(Waits {
        idle: percentile(&idle, 0.5),
        behind,
        backlog: percentile(&took, 0.5),
    })
}

fn fair_share(backlog: usize, trials: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        trials > 0 && backlog > 0,
        "--trials and --backlog must be positive"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut behind = Vec::new();
    for schedule in ["fair", "fifo"] {
        let w = share_run(schedule, backlog, trials)?;
        let median = percentile(&w.behind, 0.5);
        println!(
            "--schedule {schedule}: B's one task waited {:.1} ms (median of {trials}, {:.1}-{:.1}) behind A's {backlog}-task backlog; on the idle host {:.1} ms; a backlog took {:.2} s",
            ms(median),
            ms(w.behind[0]),
            ms(w.behind[w.behind.len() - 1]),
            ms(w.idle),
            w.backlog.as_secs_f64()
        );
        behind.push(median);
    }
    println!(
        "fifo / fair: {:.0}x",
        behind[1].as_secs_f64() / behind[0].as_secs_f64().max(1e-9)
    );
    Ok(())
}
