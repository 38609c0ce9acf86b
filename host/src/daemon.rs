//! `hako daemon URL --fingerprint SHA256:…` (token in HAKO_TOKEN or
//! `--token-file`): lend this machine's cores to a host. Dials out (so it
//! works behind NAT), verifies the host, then runs tasks one at a time in
//! its sandbox, pristine per task unless `--keep-state`. `--jobs N` runs N
//! such sandboxes in one process, each its own connection and `--memory`
//! cap; they share the compiled code, one TLS configuration, the package
//! cache, the name and `--max-tasks`. The volunteer's caps (`--memory`,
//! `--task-timeout`, `--max-tasks`, `--idle-time`, `--wall-time`) are
//! applied here, where the host cannot raise them; their laptop defaults
//! and what a host can and cannot do are in `--help` ([`LONG_HELP`]). Nor
//! can the host make it grow outside `--memory` or spawn threads: the
//! frames it reads, the tasks and `everywhere()` code it holds and the
//! results it sends are bounded (see `worker.rs` and PROTOCOL.md), and it
//! tells the host no more than `--name` says. A host's package set comes
//! from that host only, checked file by file by sha256 and kept within
//! `--max-package-cache` (`package_fetch.rs`); `--no-packages` refuses
//! sets, and the daemon then leaves that host.
//!
//! Exit status: 0 when done (host shut down with `--autoexit`, a cap
//! reached by every job, a signal), 1 when the host refused (a wrong,
//! revoked or refused token; or this daemon refused its package set) or is
//! not trusted or could not be reached with `--autoexit` — one job's
//! refusal stops them all, with one message — and 2 on a usage or set-up
//! error.

use crate::dial::{self, DialError, Target};
use crate::package_cache::{Cache, InUse};
use crate::package_fetch::{self, Failure, Policy};
use crate::peer::{Out, OutTx};
use crate::protocol::{DaemonLimits, FrameLimits, HelloBody, Message, Role};
use crate::sandbox_args::{seconds, SandboxArgs};
use crate::tls;
use crate::trust_args::TrustArgs;
use crate::whoami::capabilities;
use crate::worker::{Exit, Job as WorkerJob, TaskBudget, Worker, WorkerConfig, WorkerEvent};
use crate::ws::{self, Flow};
use crate::{paths, shutdown};
use clap::Args;
use hako_runtime::SandboxConfig;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The end of `hako daemon --help`: the defaults, and what lending this
/// machine means. `volunteer.rs` (e2e) checks it, so it cannot go stale.
const LONG_HELP: &str = "\
Defaults for lending a laptop:
  --task-timeout 600   each task stops after 10 minutes (`none` for no limit)
  --memory 1024        each job's sandbox may use 1024 MiB of memory (plus an
                       in-memory /tmp of at most 256 MiB); N jobs may use N
                       times that in all
  --jobs 1             one sandbox, one task at a time (at most one job per
                       core this machine makes available)
  nice 19              tasks run at the lowest CPU priority, so they yield
                       to your own work (--normal-priority to change)
  Each task leaves one line in this daemon's log: the job, the task id, the
  user who submitted it, how it ended, its time and its memory.
  --max-tasks counts the tasks of all jobs together; --idle-time applies to
  each job (the daemon exits when the last one has left).

What a host can and cannot do to this machine:
  It can send R code that runs in this daemon's sandbox, within the caps
  set here, and (unless --no-packages) R packages kept in the package cache
  (--max-package-cache), checked by sha256 and only ever mounted read-only.
  It cannot raise these caps; cannot read or write your files, except the
  directories you --mount (read-only unless :rw); cannot open network
  connections or start processes; cannot run a task beyond its time, memory
  or output cap.
  It sees the name you give (--name; by default an anonymous daemon-XXXXXXXX),
  your IP address, the caps and job count set here and hako's version. It
  learns nothing else about this machine or you.";

#[derive(Args, Clone, Debug)]
#[command(after_long_help = LONG_HELP)]
pub struct DaemonArgs {
    /// The host's URL, wss://HOST:PORT.
    url: String,
    /// The host's join token (visible to other users in `ps`: prefer
    /// --token-file or the HAKO_TOKEN environment variable).
    #[arg(long, env = "HAKO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Run N sandboxes in this one process, N tasks at once: each its own
    /// connection to the host and its own --memory cap (so the process may
    /// use N x --memory in all); they share the compiled R, the package
    /// cache and the --name. At most the number of cores available.
    #[arg(long, value_name = "N", default_value_t = 1)]
    jobs: usize,
    /// Run tasks at normal CPU priority. By default a daemon's sandboxes run
    /// at the lowest (nice 19), so lending cores never slows the owner's own
    /// work. (Either way the daemon logs one line per task: id, user,
    /// outcome, time, memory.)
    #[arg(long)]
    normal_priority: bool,
    /// Read the join token from this file (one line).
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    trust: TrustArgs,
    /// Cap on any task's evaluation time, in seconds; `none` (or 0) for no
    /// cap.
    #[arg(long, value_name = "SECONDS|none", default_value = "600", value_parser = task_timeout)]
    task_timeout: TaskTimeout,
    /// Leave after this many tasks, counted over all --jobs.
    #[arg(long, value_name = "N")]
    max_tasks: Option<u64>,
    /// Leave after this many seconds without a task (each job on its own).
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

/// `--task-timeout`: a cap, or none.
#[derive(Clone, Copy, Debug)]
struct TaskTimeout(Option<Duration>);

/// Seconds as every seconds option takes them, or `none` / `0` for no cap.
fn task_timeout(s: &str) -> Result<TaskTimeout, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") {
        return Ok(TaskTimeout(None));
    }
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of seconds, or none"))?;
    if secs == 0.0 {
        return Ok(TaskTimeout(None));
    }
    seconds(secs, "--task-timeout")
        .map(|d| TaskTimeout(Some(d)))
        .map_err(|e| format!("{e}, or none"))
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
    jobs: usize,
}

impl Settings {
    fn check(args: &DaemonArgs) -> anyhow::Result<Settings> {
        let opt_secs = |v: Option<f64>, what: &str| v.map(|s| seconds(s, what)).transpose();
        let task_timeout = args.task_timeout.0;
        let idle_time = opt_secs(args.idle_time, "--idle-time")?;
        let wall_time = opt_secs(args.wall_time, "--wall-time")?;
        let max_backoff = seconds(args.max_backoff, "--max-backoff")?;
        let handshake_timeout = seconds(args.handshake_timeout, "--handshake-timeout")?;
        let jobs = check_jobs(args.jobs, available_cores())?;
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
            jobs,
        })
    }
}

/// Cores this process may use (affinity and cgroup quota included).
fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `--jobs`: at least one, at most one per core (more would only make each
/// task slower, and hold more memory).
fn check_jobs(jobs: usize, cores: usize) -> anyhow::Result<usize> {
    if jobs == 0 {
        anyhow::bail!("--jobs must be at least 1");
    }
    if jobs > cores {
        anyhow::bail!(
            "--jobs {jobs}: this machine makes {cores} core(s) available to hako, so at most \
             --jobs {cores} (more jobs than cores would only make each task slower)"
        );
    }
    Ok(jobs)
}

/// What all jobs of this process share: the host, its trust and one TLS
/// configuration, the hello, one runtime (the compiled code, mapped once)
/// and one package cache.
struct Common {
    target: Target,
    trust: crate::tls::Trust,
    tls: dial::Tls,
    limits: FrameLimits,
    hello: HelloBody,
    handshake_timeout: Duration,
    max_backoff: Duration,
    autoexit: bool,
    packages: Packages,
    /// Whether any job has worked for the host at this URL: a different
    /// certificate there afterwards is a new host, not a passing fault.
    joined: std::sync::atomic::AtomicBool,
}

/// One job: a worker on its own sandbox, and the connection it serves.
struct Job {
    /// `job N: ` in log lines when there are several, else empty.
    prefix: String,
    worker: Arc<Worker>,
    route: Route,
    exit: watch::Receiver<Option<Exit>>,
    /// Manifest ids of the package set its sandbox has, and their trees
    /// held in the cache (not removed while mounted).
    current: Mutex<(Vec<String>, Vec<InUse>)>,
}

/// How a job ended.
enum JobEnd {
    /// Its worker left (a cap, `--autoexit`), or the daemon is leaving.
    Done,
    /// Something no retry can mend: the process stops, exit status 1, with
    /// this message.
    Fatal(String),
}

async fn daemon(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let target: Target = dial::parse_url(&args.url)?;
    let trust = args.trust.trust()?;
    // Made once for all jobs; fails early on a bad CA file.
    let tls = tls::client_config(&trust)?;
    let settings = Settings::check(&args)?;
    let jobs = settings.jobs;
    warn_if_over_ram(jobs, args.sandbox.memory);
    let started = Instant::now();
    let sandbox_config = settings.sandbox.clone();
    let assets_dir = paths::assets_dir(args.sandbox.assets.as_deref());
    // One runtime: R is compiled (or loaded from the code cache) once and its
    // code mapped once; each job instantiates its own sandbox from it.
    let (runtime, sandboxes) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let runtime = crate::progress::open_runtime(&assets_dir)?;
        let sandboxes = (0..jobs)
            .map(|_| runtime.sandbox(sandbox_config.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((runtime, sandboxes))
    })
    .await??;
    let budget = args.max_tasks.map(TaskBudget::new);
    let mut workers = Vec::with_capacity(jobs);
    for (i, sandbox) in sandboxes.into_iter().enumerate() {
        workers.push(start_job(
            &args,
            &settings,
            sandbox,
            i + 1,
            jobs,
            budget.clone(),
        )?);
    }
    let common = Arc::new(Common {
        target,
        trust,
        tls,
        limits: settings.limits,
        hello: hello(&args, &settings),
        handshake_timeout: settings.handshake_timeout,
        max_backoff: settings.max_backoff,
        autoexit: args.autoexit,
        packages: Packages {
            allow: !args.no_packages,
            cache: Cache::new(
                args.package_cache.clone(),
                args.max_package_cache.saturating_mul(1 << 20),
            ),
            runtime,
            sandbox: settings.sandbox.clone(),
        },
        joined: false.into(),
    });
    // The process is leaving (a signal, --wall-time, another job's fatal
    // end): every job says bye, with this reason.
    let (leave_tx, leave_rx) = watch::channel::<Option<String>>(None);
    let mut running = tokio::task::JoinSet::new();
    for job in workers {
        running.spawn(run_job(common.clone(), job, leave_rx.clone()));
    }
    let wall_deadline = settings
        .wall_time
        .map(|w| tokio::time::Instant::from_std(started + w));
    let wall = async move {
        match wall_deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(wall);
    let signal = shutdown::signal();
    tokio::pin!(signal);
    let mut code = ExitCode::SUCCESS;
    let mut leaving = false;
    loop {
        tokio::select! {
            ended = running.join_next() => {
                let fatal = match ended {
                    None => return Ok(code),
                    Some(Ok(JobEnd::Done)) => continue,
                    Some(Ok(JobEnd::Fatal(why))) => why,
                    Some(Err(e)) => format!("a job failed: {e}"),
                };
                if leaving {
                    tracing::debug!("also: {fatal}");
                    continue;
                }
                // One message, and every other job leaves with it.
                tracing::error!("{fatal}");
                eprintln!("hako: {fatal}");
                code = ExitCode::FAILURE;
                leaving = true;
                let _ = leave_tx.send(Some("the daemon stops".into()));
            }
            _ = &mut wall, if !leaving => {
                leaving = true;
                let _ = leave_tx.send(Some("wall time reached".into()));
            }
            s = &mut signal, if !leaving => {
                leaving = true;
                let _ = leave_tx.send(Some(s));
            }
        }
    }
}

/// A warning when the jobs' memory caps together exceed this machine's
/// memory: each is a cap, not a reservation, so they may still fit.
fn warn_if_over_ram(jobs: usize, memory_mib: usize) {
    // SAFETY: sysconf only reads system constants.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || page <= 0 {
        return;
    }
    let ram_mib = (pages as u64).saturating_mul(page as u64) >> 20;
    let total = (jobs as u64).saturating_mul(memory_mib as u64);
    if total > ram_mib {
        tracing::warn!(
            "--jobs {jobs} x --memory {memory_mib} MiB may use {total} MiB, more than this \
             machine's {ram_mib} MiB of memory"
        );
    }
}

/// What a job's select learns from the process: the reason to leave, once
/// there is one.
async fn leaving(rx: &mut watch::Receiver<Option<String>>) -> String {
    let why = rx
        .wait_for(Option::is_some)
        .await
        .map(|r| r.clone().unwrap_or_default());
    match why {
        Ok(why) => why,
        Err(_) => std::future::pending().await,
    }
}

/// One job's life: dial, serve the host, reconnect after a lost connection
/// (with backoff), until its worker leaves, the process leaves, or
/// something permanent ends it.
async fn run_job(
    common: Arc<Common>,
    job: Job,
    mut leave: watch::Receiver<Option<String>>,
) -> JobEnd {
    let Job {
        prefix,
        worker,
        route,
        mut exit,
        current,
    } = job;
    let c = &*common;
    let url = &c.target.url;
    let mut backoff = Duration::from_millis(250);
    // Leaving: say bye and let the connection close before ending, so the
    // host re-queues the running task without counting an attempt.
    let bye_wait = Duration::from_secs(2);
    loop {
        let dialled = Instant::now();
        let attempt = async {
            let dialled = dial::dial_using(
                &c.target,
                &c.trust,
                &c.tls,
                c.limits,
                c.hello.clone(),
                c.handshake_timeout,
            )
            .await;
            match dialled {
                Err(e) => Err(e),
                Ok((conn, welcome)) => {
                    c.joined.store(true, std::sync::atomic::Ordering::Relaxed);
                    let sess = Session {
                        prefix: &prefix,
                        worker: &worker,
                        route: &route,
                        limits: c.limits,
                        packages: &c.packages,
                        current: &current,
                    };
                    Ok(session(conn, welcome, sess).await)
                }
            }
        };
        tokio::pin!(attempt);
        let outcome = tokio::select! {
            r = &mut attempt => r,
            why = leaving(&mut leave) => {
                say_bye(&route, &why);
                let _ = tokio::time::timeout(bye_wait, &mut attempt).await;
                return JobEnd::Done;
            }
            _ = exit.changed() => {
                // The worker queued its last result, then bye and close: keep
                // the connection going until they are written, or the host
                // would re-queue a task that is done.
                let _ = tokio::time::timeout(bye_wait, &mut attempt).await;
                Ok(Ok(ws::End::Local("the worker left".into())))
            }
        };
        if let Some(e) = exit.borrow().clone() {
            return match e {
                Exit::Failed(why) => JobEnd::Fatal(format!("{prefix}the sandbox failed: {why}")),
                e => {
                    tracing::info!("{prefix}daemon {e}");
                    JobEnd::Done
                }
            };
        }
        match outcome {
            Err(DialError::Untrusted(e)) if c.joined.load(std::sync::atomic::Ordering::Relaxed) => {
                return JobEnd::Fatal(format!(
                    "the host at {url} is not the one this daemon joined ({}): it was \
                     restarted with a new certificate (a host keeps its certificate only with \
                     --identity). This daemon cannot join it and exits: run the daemon command \
                     the new host prints.",
                    dial::printable(&e)
                ));
            }
            Ok(Err(refused)) => return JobEnd::Fatal(format!("{url}: {refused}")),
            Err(e @ DialError::Untrusted(_)) | Err(e @ DialError::Refused(_)) => {
                return JobEnd::Fatal(format!("{url}: {e}"));
            }
            Err(DialError::Unreachable(e)) => {
                if c.autoexit {
                    return JobEnd::Fatal(format!("cannot reach {url}: {}", dial::printable(&e)));
                }
                tracing::warn!("{prefix}cannot reach {url}: {e}; retrying in {backoff:.1?}");
            }
            Ok(Ok(end)) => {
                if let Some(why) = revoked(&end) {
                    return JobEnd::Fatal(format!(
                        "{url}: the host closed this daemon's connection for good: {why}"
                    ));
                }
                if c.autoexit {
                    tracing::info!("{prefix}host connection ended ({end}); exiting (--autoexit)");
                    return JobEnd::Done;
                }
                // Only a connection that lasted starts the backoff afresh: a
                // host that drops each one at once cannot make us spin.
                if dialled.elapsed() >= STABLE {
                    backoff = Duration::from_millis(250);
                }
                tracing::warn!(
                    "{prefix}host connection ended ({end}); reconnecting in {backoff:.1?}"
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = leaving(&mut leave) => return JobEnd::Done,
        }
        backoff = (backoff * 2).min(c.max_backoff);
    }
}

/// The host's reason, when it closed the connection because this daemon's
/// token was revoked or the daemon is refused (`users::watch`'s words):
/// reconnecting would only be refused, so the daemon stops at once.
fn revoked(end: &ws::End) -> Option<String> {
    use crate::users::watch::{REFUSED, REVOKED};
    let ws::End::Lost(why) = end else { return None };
    let why = why.strip_prefix("closed by peer").unwrap_or(why).trim();
    (why.contains(REVOKED) || why.contains(REFUSED)).then(|| dial::printable(why))
}

/// Start job `n` of `jobs` on `sandbox`. Its messages take the job's route
/// (the current connection's session); when it exits, `Job::exit` says why.
fn start_job(
    args: &DaemonArgs,
    settings: &Settings,
    sandbox: hako_runtime::Sandbox,
    n: usize,
    jobs: usize,
    budget: Option<Arc<TaskBudget>>,
) -> anyhow::Result<Job> {
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
    let several = jobs > 1;
    let worker = Worker::start_job(
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
        WorkerJob {
            label: several.then(|| format!("job {n}")),
            budget,
        },
        out,
        // Its threads: hako-daemon, or hako-daemon-N of several.
        if several {
            format!("daemon-{n}")
        } else {
            "daemon".into()
        },
    )?;
    Ok(Job {
        prefix: if several {
            format!("job {n}: ")
        } else {
            String::new()
        },
        worker,
        route,
        exit: exit_rx,
        current: Mutex::new((Vec::new(), Vec::new())),
    })
}

/// What this daemon tells each host: its token, a name that says nothing
/// about the machine unless `--name` does, the caps it applies and how many
/// jobs share that name (`jobs=N` among its features).
fn hello(args: &DaemonArgs, settings: &Settings) -> HelloBody {
    let mut caps = capabilities();
    caps.features.push(format!("jobs={}", settings.jobs));
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
        caps,
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
fn say_bye(route: &Route, reason: &str) {
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

/// What a daemon's jobs need to take a host's package set.
struct Packages {
    /// Not `--no-packages`.
    allow: bool,
    /// Shared by the jobs: of several that want the same set at once, one
    /// fetches it and the others wait, then take it from the cache.
    cache: Cache,
    runtime: hako_runtime::Runtime,
    /// The volunteer's sandbox, without packages.
    sandbox: SandboxConfig,
}

/// What one job's connection works with.
struct Session<'a> {
    /// The job's log prefix.
    prefix: &'a str,
    worker: &'a Arc<Worker>,
    route: &'a Route,
    limits: FrameLimits,
    packages: &'a Packages,
    /// The job's current set (see [`Job::current`]).
    current: &'a Mutex<(Vec<String>, Vec<InUse>)>,
}

/// The host's set in place and a sandbox that has it, if the worker's does
/// not already: `Ok(None)` keeps the worker's sandbox. `Err(Refused)` has
/// been told to the host.
async fn take_set(
    conn: &mut dial::Conn,
    limits: FrameLimits,
    packages: &Packages,
    current: &Mutex<(Vec<String>, Vec<InUse>)>,
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
            let same = current.lock().map(|c| c.0 == ids).unwrap_or(false);
            let announced = !set.is_empty();
            let sandbox = if same {
                Ok(None)
            } else {
                let mut config = packages.sandbox.clone();
                config.packages = Arc::new(set);
                let rt = packages.runtime.clone();
                match tokio::task::spawn_blocking(move || rt.sandbox(config)).await {
                    Ok(Ok(sb)) => {
                        if let Ok(mut c) = current.lock() {
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
    job: Session<'_>,
) -> Result<ws::End, String> {
    let Session {
        prefix,
        worker,
        route,
        limits,
        packages,
        current,
    } = job;
    tracing::info!(
        id = welcome.id,
        "{prefix}connected; host runs hako {}",
        welcome.hako_version
    );
    let sandbox = match take_set(&mut conn, limits, packages, current).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_one_to_the_cores() {
        assert!(check_jobs(0, 4).is_err());
        assert_eq!(check_jobs(4, 4).unwrap(), 4);
        let e = check_jobs(5, 4).unwrap_err().to_string();
        assert!(e.contains("at most --jobs 4"), "{e}");
    }

    #[test]
    fn task_timeouts_are_seconds_or_none() {
        assert_eq!(
            task_timeout("600").unwrap().0,
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            task_timeout("0.5").unwrap().0,
            Some(Duration::from_millis(500))
        );
        assert_eq!(task_timeout("none").unwrap().0, None);
        assert_eq!(task_timeout("0").unwrap().0, None);
        for bad in ["-1", "soon", "", "1e300", "NaN"] {
            assert!(task_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_revocation_or_refusal_in_a_close_reason_is_final() {
        use crate::users::watch::{REFUSED, REVOKED};
        let lost = |r: &str| ws::End::Lost(format!("closed by peer {r}"));
        assert_eq!(revoked(&lost(REVOKED)).as_deref(), Some(REVOKED));
        assert!(revoked(&lost(REFUSED)).is_some());
        assert!(revoked(&lost("host shut down")).is_none());
        assert!(revoked(&ws::End::Local(REVOKED.into())).is_none());
    }
}
