//! `hako bench`: trivial-task round trip (p50, p99) and throughput measured
//! at the client link, the way an R session sees them. Starts
//! `hako host --stdio` as a child, with in-process daemons or with
//! `hako daemon` children over wss on loopback.

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
    let mut link = Link {
        child,
        daemons: Vec::new(),
        w: BufWriter::new(stdin),
        rx,
    };
    let ready = match link.recv()? {
        LinkOut::Ready(t) => lf::parse_kv(&t),
        other => anyhow::bail!("expected READY, got {other:?}"),
    };
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
    // Wait until all daemons are connected.
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
    Ok(link)
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
    for &n in &args.daemons {
        if let Err(e) = measure(n, &args) {
            eprintln!("hako bench: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
