//! `hako daemon URL --token T --fingerprint SHA256:…`: lend this machine's
//! cores to a host. Dials out (so it works behind NAT), verifies the host,
//! then runs tasks one at a time in its sandbox, pristine per task unless
//! `--keep-state`. The volunteer's caps (`--memory`, `--task-timeout`,
//! `--max-tasks`, `--idle-time`, `--wall-time`) are applied here, where the
//! host cannot raise them. Nor can the host make it grow outside `--memory`
//! or spawn threads: the frames it reads, the tasks and `everywhere()` code
//! it holds and the results it sends are bounded (see `worker.rs` and
//! PROTOCOL.md), and it tells the host no more than `--name` says. A host's
//! package set comes from that host only, checked file by file by sha256 and
//! kept within `--max-package-cache` (`package_fetch.rs`); `--no-packages`
//! refuses sets, and the daemon then leaves that host.
//!
//! Exit status: 0 when done (host shut down with `--autoexit`, a cap
//! reached, a signal), 1 when the host refused (or this daemon refused its
//! package set) or is not trusted or could
//! not be reached with `--autoexit`, 2 on a usage or set-up error.

use crate::dial::{self, DialError, Target};
use crate::package_cache::{Cache, InUse};
use crate::package_fetch::{self, Failure, Policy};
use crate::peer::{Out, OutTx};
use crate::protocol::{DaemonLimits, FrameLimits, HelloBody, Message, Role};
use crate::sandbox_args::{seconds, SandboxArgs};
use crate::tls;
use crate::trust_args::TrustArgs;
use crate::whoami::capabilities;
use crate::worker::{Exit, Worker, WorkerConfig, WorkerEvent};
use crate::ws::{self, Flow};
use crate::{paths, shutdown};
use clap::Args;
use hako_runtime::SandboxConfig;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[derive(Args, Clone, Debug)]
pub struct DaemonArgs {
    /// The host's URL, wss://HOST:PORT.
    url: String,
    /// The host's join token (visible to other users in `ps`: prefer
    /// --token-file or the HAKO_TOKEN environment variable).
    #[arg(long, env = "HAKO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Run tasks at normal CPU priority. By default a daemon's sandbox runs
    /// at the lowest (nice 19), so lending cores never slows the owner's own
    /// work. (Either way the daemon logs one line per task: id, outcome,
    /// time, memory.)
    #[arg(long)]
    normal_priority: bool,
    /// Read the join token from this file (one line).
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    trust: TrustArgs,
    /// Cap on any task's evaluation time, in seconds.
    #[arg(long, value_name = "SECONDS")]
    task_timeout: Option<f64>,
    /// Leave after this many tasks.
    #[arg(long, value_name = "N")]
    max_tasks: Option<u64>,
    /// Leave after this many seconds without a task.
    #[arg(long, value_name = "SECONDS")]
    idle_time: Option<f64>,
    /// Leave after this many seconds in all.
    #[arg(long, value_name = "SECONDS")]
    wall_time: Option<f64>,
    /// Keep state between tasks (no reset).
    #[arg(long)]
    keep_state: bool,
    /// Exit when the host goes away instead of reconnecting.
    #[arg(long)]
    autoexit: bool,
    /// Name shown in the host's info() (default: an anonymous `daemon-`
    /// and random hex; the host learns neither this machine's name nor a PID).
    #[arg(long)]
    name: Option<String>,
    /// Largest task or everywhere() payload accepted, in MiB (default: half
    /// of --memory, at most 256: a payload is copied into the sandbox and
    /// unserialized there, so a larger one could not run anyway).
    #[arg(long, value_name = "MIB")]
    max_payload: Option<u64>,
    /// Longest wait between reconnection attempts, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    max_backoff: f64,
    /// Seconds a host has, once connected, to complete TLS, the upgrade and
    /// its welcome before the daemon gives up on that attempt.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, hide = true)]
    handshake_timeout: f64,
    /// Refuse package sets: a host whose daemons get compiled packages
    /// (`hako host --packages`) is told so, and this daemon exits.
    #[arg(long)]
    no_packages: bool,
    /// Most disk space the package trees hosts send may take here, in MiB;
    /// trees used least recently go first, and a larger set is refused.
    #[arg(long, value_name = "MIB", default_value_t = crate::package_cache::DEFAULT_MAX_MIB)]
    max_package_cache: u64,
    /// Where to keep the package trees hosts send (default: the hako cache
    /// directory's daemon-packages/).
    #[arg(long, value_name = "DIR")]
    package_cache: Option<std::path::PathBuf>,
    // This machine's sandbox: the volunteer's caps and mounts.
    #[command(flatten)]
    sandbox: SandboxArgs,
}

pub fn run(args: DaemonArgs) -> ExitCode {
    crate::async_main::run(daemon(args))
}

/// Where the worker's messages go: the current connection, if any, and only
/// for the session that connection runs.
type Route = Arc<Mutex<Option<(u64, OutTx)>>>;

/// The options checked and turned into durations and bounds, before the
/// sandbox starts: a usage error costs nothing.
struct Settings {
    task_timeout: Option<Duration>,
    idle_time: Option<Duration>,
    wall_time: Option<Duration>,
    max_backoff: Duration,
    handshake_timeout: Duration,
    /// What this daemon reads from a host.
    limits: FrameLimits,
    sandbox: SandboxConfig,
    /// The join token, from --token-file, HAKO_TOKEN or --token.
    token: String,
}

impl Settings {
    fn check(args: &DaemonArgs) -> anyhow::Result<Settings> {
        let opt_secs = |v: Option<f64>, what: &str| v.map(|s| seconds(s, what)).transpose();
        let task_timeout = opt_secs(args.task_timeout, "--task-timeout")?;
        let idle_time = opt_secs(args.idle_time, "--idle-time")?;
        let wall_time = opt_secs(args.wall_time, "--wall-time")?;
        let max_backoff = seconds(args.max_backoff, "--max-backoff")?;
        let handshake_timeout = seconds(args.handshake_timeout, "--handshake-timeout")?;
        let token = crate::token_args::resolve(
            args.token.as_deref(),
            args.token_file.as_deref(),
            "HAKO_TOKEN",
        )?;
        if args.max_payload == Some(0) {
            anyhow::bail!("--max-payload must be at least 1 MiB");
        }
        if args.max_tasks == Some(0) {
            anyhow::bail!("--max-tasks must be at least 1");
        }
        let limits = FrameLimits {
            control: 64 << 10,
            bulk: inbound_bound(args.max_payload, args.sandbox.memory),
        };
        Ok(Settings {
            task_timeout,
            idle_time,
            wall_time,
            max_backoff,
            handshake_timeout,
            limits,
            sandbox: args.sandbox.config(task_timeout)?,
            token,
        })
    }
}

async fn daemon(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let target: Target = dial::parse_url(&args.url)?;
    let trust = args.trust.trust()?;
    // Fail early on a bad CA file.
    tls::client_config(&trust)?;
    let settings = Settings::check(&args)?;
    let started = Instant::now();
    let Settings {
        wall_time,
        max_backoff,
        handshake_timeout,
        limits,
        ..
    } = settings;
    let sandbox_config = settings.sandbox.clone();
    let assets_dir = paths::assets_dir(args.sandbox.assets.as_deref());
    let (runtime, sandbox) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let runtime = crate::progress::open_runtime(&assets_dir)?;
        let sandbox = runtime.sandbox(sandbox_config)?;
        Ok((runtime, sandbox))
    })
    .await??;
    let (worker, route, mut exit_rx) = start_worker(&args, &settings, sandbox)?;
    let cache = Cache::new(
        args.package_cache.clone(),
        args.max_package_cache.saturating_mul(1 << 20),
    );
    let packages = Packages {
        allow: !args.no_packages,
        cache,
        runtime,
        sandbox: settings.sandbox.clone(),
        current: Mutex::new((Vec::new(), Vec::new())),
    };
    let hello = hello(&args, &settings);
    let wall_deadline = wall_time.map(|w| tokio::time::Instant::from_std(started + w));
    let wall = async move {
        match wall_deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(wall);
    let signal = shutdown::signal();
    tokio::pin!(signal);

    let mut backoff = Duration::from_millis(250);
    // Whether this daemon has worked for the host at this URL: a different
    // certificate there afterwards is a new host, not a passing fault.
    let joined = std::cell::Cell::new(false);
    loop {
        let dialled = Instant::now();
        let attempt = async {
            match dial::dial_within(&target, &trust, limits, hello.clone(), handshake_timeout).await
            {
                Err(e) => Err(e),
                Ok((conn, welcome)) => {
                    joined.set(true);
                    Ok(session(conn, welcome, &worker, &route, limits, &packages).await)
                }
            }
        };
        tokio::pin!(attempt);
        // Leaving: say bye and let the connection close before exiting, so
        // the host re-queues the running task without counting an attempt.
        let bye_wait = Duration::from_secs(2);
        let outcome = tokio::select! {
            r = &mut attempt => r,
            _ = &mut wall => {
                leave(&route, "wall time reached");
                let _ = tokio::time::timeout(bye_wait, &mut attempt).await;
                return Ok(ExitCode::SUCCESS);
            }
            s = &mut signal => {
                leave(&route, &s);
                let _ = tokio::time::timeout(bye_wait, &mut attempt).await;
                return Ok(ExitCode::SUCCESS);
            }
            _ = exit_rx.changed() => {
                // The worker queued its last result, then bye and close: keep
                // the connection going until they are written, or the host
                // would re-queue a task that is done.
                let _ = tokio::time::timeout(bye_wait, &mut attempt).await;
                Ok(Ok(ws::End::Local("the worker left".into())))
            }
        };
        if let Some(exit) = exit_rx.borrow().clone() {
            tracing::info!("daemon {exit}");
            return Ok(match exit {
                Exit::Failed(_) => ExitCode::FAILURE,
                _ => ExitCode::SUCCESS,
            });
        }
        match outcome {
            Err(DialError::Untrusted(e)) if joined.get() => {
                tracing::error!("{}: {e}", target.url);
                eprintln!(
                    "hako: the host at {} is not the one this daemon joined ({}): it was \
                     restarted with a new certificate (a host keeps its certificate only with \
                     --identity). This daemon cannot join it and exits: run the daemon command \
                     the new host prints.",
                    target.url,
                    dial::printable(&e)
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(Err(refused)) => {
                tracing::error!("{}: {refused}", target.url);
                eprintln!("hako: {}: {refused}", target.url);
                return Ok(ExitCode::FAILURE);
            }
            Err(e @ DialError::Untrusted(_)) | Err(e @ DialError::Refused(_)) => {
                tracing::error!("{}: {e}", target.url);
                eprintln!("hako: {}: {e}", target.url);
                return Ok(ExitCode::FAILURE);
            }
            Err(DialError::Unreachable(e)) => {
                if args.autoexit {
                    eprintln!("hako: cannot reach {}: {}", target.url, dial::printable(&e));
                    return Ok(ExitCode::FAILURE);
                }
                tracing::warn!(
                    "cannot reach {}: {e}; retrying in {backoff:.1?}",
                    target.url
                );
            }
            Ok(Ok(end)) => {
                if args.autoexit {
                    tracing::info!("host connection ended ({end}); exiting (--autoexit)");
                    return Ok(ExitCode::SUCCESS);
                }
                // Only a connection that lasted starts the backoff afresh: a
                // host that drops each one at once cannot make us spin.
                if dialled.elapsed() >= STABLE {
                    backoff = Duration::from_millis(250);
                }
                tracing::warn!("host connection ended ({end}); reconnecting in {backoff:.1?}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = &mut wall => { return Ok(ExitCode::SUCCESS); }
            s = &mut signal => { tracing::info!("{s}"); return Ok(ExitCode::SUCCESS); }
        }
        backoff = (backoff * 2).min(max_backoff);
    }
}

/// Start the worker on `sandbox`. Its messages take the returned route (the
/// current connection's session); when it exits, the receiver says why.
fn start_worker(
    args: &DaemonArgs,
    settings: &Settings,
    sandbox: hako_runtime::Sandbox,
) -> anyhow::Result<(Arc<Worker>, Route, watch::Receiver<Option<Exit>>)> {
    let route: Route = Arc::new(Mutex::new(None));
    let (exit_tx, exit_rx) = watch::channel::<Option<Exit>>(None);
    let r = route.clone();
    let out = Arc::new(move |session: u64, ev: WorkerEvent| {
        let Ok(guard) = r.lock() else { return };
        match ev {
            WorkerEvent::Send(m) => {
                if let Some((s, tx)) = guard.as_ref() {
                    if *s == session {
                        let _ = tx.send(Out::Msg(m));
                    }
                }
            }
            WorkerEvent::Exited(exit) => {
                if let Some((_, tx)) = guard.as_ref() {
                    let reason = format!("daemon leaving: {exit}");
                    let _ = tx.send(Out::Msg(Message::Bye {
                        reason: reason.clone(),
                    }));
                    let _ = tx.send(Out::Close(reason));
                }
                let _ = exit_tx.send(Some(exit));
            }
        }
    });
    let worker = Worker::start(
        sandbox,
        WorkerConfig {
            keep_state: args.keep_state,
            task_timeout_cap: settings.task_timeout,
            max_tasks: args.max_tasks,
            idle_time: settings.idle_time,
            // Each host says its own bound in its welcome.
            max_result: None,
            lowest_priority: !args.normal_priority,
            log_tasks: true,
        },
        out,
        "daemon".into(),
    )?;
    Ok((worker, route, exit_rx))
}

/// What this daemon tells each host: its token, a name that says nothing
/// about the machine unless `--name` does, and the caps it applies.
fn hello(args: &DaemonArgs, settings: &Settings) -> HelloBody {
    HelloBody {
        role: Role::Daemon,
        token: settings.token.clone(),
        name: args.name.clone().unwrap_or_else(anonymous_name),
        limits: DaemonLimits {
            memory_bytes: (args.sandbox.memory as u64) << 20,
            task_timeout_ms: settings.task_timeout.map(|t| t.as_millis() as u64),
            max_tasks: args.max_tasks,
            idle_time_ms: settings.idle_time.map(|t| t.as_millis() as u64),
            wall_time_ms: settings.wall_time.map(|t| t.as_millis() as u64),
            keep_state: args.keep_state,
            // What it reads: a larger task would close the connection.
            max_task_bytes: Some(settings.limits.bulk),
        },
        caps: capabilities(),
    }
}

/// A connection that lasted this long was a real session: the next
/// reconnection starts from the shortest backoff again.
const STABLE: Duration = Duration::from_secs(10);

/// The bound of frames this daemon reads, in bytes: `--max-payload` MiB,
/// by default half of `--memory` MiB and at most 256 MiB.
fn inbound_bound(max_payload: Option<u64>, memory_mib: usize) -> u64 {
    let mib = max_payload.unwrap_or_else(|| (memory_mib as u64 / 2).min(256));
    mib.saturating_mul(1 << 20)
}

/// A name that tells the host nothing about this machine: `daemon-` and 32
/// random bits, so that rows in its info() can still be told apart.
fn anonymous_name() -> String {
    let mut b = [0u8; 4];
    match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b) {
        Ok(()) => format!("daemon-{}", hex::encode(b)),
        Err(_) => "daemon".into(),
    }
}

/// Say bye on the current connection, if any.
fn leave(route: &Route, reason: &str) {
    if let Ok(g) = route.lock() {
        if let Some((_, tx)) = g.as_ref() {
            let _ = tx.send(Out::Msg(Message::Bye {
                reason: reason.into(),
            }));
            let _ = tx.send(Out::Close(reason.into()));
        }
    }
    tracing::info!("leaving: {reason}");
}

/// What a daemon needs to take a host's package set.
struct Packages {
    /// Not `--no-packages`.
    allow: bool,
    cache: Cache,
    runtime: hako_runtime::Runtime,
    /// The volunteer's sandbox, without packages.
    sandbox: SandboxConfig,
    /// Manifest ids of the set the worker's sandbox has now, and its trees
    /// held in the cache (not removed while mounted).
    current: Mutex<(Vec<String>, Vec<InUse>)>,
}

/// The host's set in place and a sandbox that has it, if the worker's does
/// not already: `Ok(None)` keeps the worker's sandbox. `Err(Refused)` has
/// been told to the host.
async fn take_set(
    conn: &mut dial::Conn,
    limits: FrameLimits,
    packages: &Packages,
) -> Result<Option<hako_runtime::Sandbox>, Failure> {
    let policy = Policy {
        allow: packages.allow,
        cache: &packages.cache,
    };
    let got = package_fetch::receive(conn, &limits, &policy).await;
    let built = match got {
        Err(e) => Err(e),
        Ok((set, holds)) => {
            let ids: Vec<String> = set.packages.iter().map(|p| p.manifest.id()).collect();
            let same = packages.current.lock().map(|c| c.0 == ids).unwrap_or(false);
            let announced = !set.is_empty();
            let sandbox = if same {
                Ok(None)
            } else {
                let mut config = packages.sandbox.clone();
                config.packages = Arc::new(set);
                let rt = packages.runtime.clone();
                match tokio::task::spawn_blocking(move || rt.sandbox(config)).await {
                    Ok(Ok(sb)) => {
                        if let Ok(mut c) = packages.current.lock() {
                            *c = (ids, holds);
                        }
                        Ok(Some(sb))
                    }
                    Ok(Err(e)) => Err(Failure::Refused(format!(
                        "a sandbox with the package set could not be made: {e:#}"
                    ))),
                    Err(e) => Err(Failure::Refused(format!("making the sandbox: {e}"))),
                }
            };
            if announced && sandbox.is_ok() {
                let ready = Message::PackagesReady { refused: None };
                ws::send(conn, &ready).await.map_err(Failure::Broken)?;
            }
            sandbox
        }
    };
    if let Err(Failure::Refused(why)) = &built {
        let m = Message::PackagesReady {
            refused: Some(why.clone()),
        };
        let _ = ws::send(conn, &m).await;
        ws::close(conn, CloseCode::Policy, why).await;
    }
    built
}

/// One connection's life, from welcome to its end. `Err`: this daemon
/// refused the host's package set, and leaves.
async fn session(
    mut conn: dial::Conn,
    welcome: crate::protocol::Welcome,
    worker: &Arc<Worker>,
    route: &Route,
    limits: FrameLimits,
    packages: &Packages,
) -> Result<ws::End, String> {
    tracing::info!(
        id = welcome.id,
        "connected; host runs hako {}",
        welcome.hako_version
    );
    let sandbox = match take_set(&mut conn, limits, packages).await {
        Ok(s) => s,
        Err(Failure::Refused(why)) => return Err(format!("refused the host's package set: {why}")),
        Err(Failure::Broken(why)) => return Ok(ws::End::Lost(why)),
    };
    let session = worker.new_session_on(Some(welcome.limits.bulk), sandbox);
    let (tx, rx) = mpsc::unbounded_channel();
    if let Ok(mut g) = route.lock() {
        *g = Some((session, tx));
    }
    let heartbeat = Duration::from_millis(welcome.heartbeat_ms.clamp(100, 3_600_000));
    let w = worker.clone();
    let end = ws::pump(conn, rx, limits, heartbeat, move |m| match m {
        Message::Task(_) | Message::Everywhere(_) | Message::Cancel { .. } => {
            if w.deliver(session, m) {
                Flow::Continue
            } else {
                Flow::Stop("the worker is gone".into())
            }
        }
        Message::Shutdown { reason } => {
            Flow::Stop(format!("host shut down: {}", dial::printable(&reason)))
        }
        other => Flow::Violation(format!("a host may not send {:?} now", other.kind())),
    })
    .await;
    if let Ok(mut g) = route.lock() {
        *g = None;
    }
    // Whatever runs or waits belongs to a connection that is gone.
    worker.abandon();
    Ok(end)
}
