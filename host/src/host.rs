//! `hako host`: the dispatcher, its TLS listener for daemons and remote
//! clients, optional in-process daemons (`--local N`), and the client link
//! for an R session (`--stdio` or `--link ADDR`).

use crate::dispatcher::{self, Event, Handle};
use crate::link::{EndReason, Upstream};
use crate::link_setup::{self, Place, Ready};
use crate::protocol::FrameLimits;
use crate::sandbox_args::{seconds, SandboxArgs};
use crate::shutdown;
use crate::worker::WorkerConfig;
use crate::{identity, local, paths, token};
use anyhow::bail;
use clap::Args;
use hako_runtime::packages::PackageSet;
use hako_runtime::SandboxConfig;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

mod listen;

/// How long `--link` waits for its R session to connect.
const LINK_ACCEPT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args, Clone, Debug)]
pub struct HostArgs {
    /// Listen for daemons and remote clients at ADDR:PORT (port 0: any free;
    /// e.g. 0.0.0.0:7000 to take daemons from other machines). Default: no
    /// listening with --local N (local daemons need no network), otherwise
    /// loopback only (127.0.0.1:0): other machines are let in only when asked.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// Do not listen on the network (local daemons only).
    #[arg(long, conflicts_with = "listen")]
    no_listen: bool,
    /// Start N in-process sandboxed daemons.
    #[arg(long, value_name = "N", default_value_t = 0)]
    local: usize,
    /// Serve the client link on standard input and output.
    #[arg(long, conflicts_with = "link")]
    stdio: bool,
    /// Serve the client link on this loopback address (e.g. 127.0.0.1:0);
    /// the first connection must present the link token.
    #[arg(long, value_name = "ADDR:PORT")]
    link: Option<String>,
    /// Write the READY lines (with the link address and token) to this file,
    /// readable by its owner only.
    #[arg(long, value_name = "PATH")]
    link_file: Option<PathBuf>,
    /// Token for the socket link (default: random).
    #[arg(long, env = "HAKO_LINK_TOKEN", hide_env_values = true)]
    link_token: Option<String>,
    /// Join token daemons must present (default: 256 random bits).
    #[arg(long, env = "HAKO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Token remote clients must present (default: random).
    #[arg(long, env = "HAKO_CLIENT_TOKEN", hide_env_values = true)]
    client_token: Option<String>,
    /// Refuse remote clients.
    #[arg(long)]
    no_clients: bool,
    /// Keep the self-signed certificate, and the tokens not given, in DIR
    /// (made on first use, private to its owner): a restarted host keeps its
    /// fingerprint and tokens, and pinned daemons reconnect by themselves.
    /// The named users and volunteers of `hako user` live there too; the
    /// host follows their changes (revocations, refusals) while it runs.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["cert", "key"])]
    identity: Option<PathBuf>,
    /// PEM certificate chain (default: a fresh self-signed certificate).
    #[arg(long, requires = "key", value_name = "PEM")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, requires = "cert", value_name = "PEM")]
    key: Option<PathBuf>,
    /// Host name or address daemons should dial (default: this machine's
    /// name, or the listen address when it is specific).
    #[arg(long, value_name = "HOST")]
    advertise: Option<String>,
    /// Retry a task this many times when a daemon dies while running it
    /// (0: never); one more such death resolves it as 'crashed its daemon'.
    /// Daemons lost before a task started are not counted.
    #[arg(long, default_value_t = 1)]
    retries: u32,
    /// Largest task payload, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    max_payload: u64,
    /// Most `everywhere()` code the host keeps for daemons that join later,
    /// in MiB: past it, a new everywhere() is refused.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    max_everywhere: u64,
    /// Most bytes of results held for a client that has not read them, in
    /// MiB: past it, its new tasks are refused at once until it reads.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    max_unread: u64,
    /// Most bytes of one client's tasks queued or running at the host, in
    /// MiB: past it, its new tasks are refused at once until results come.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    max_queued: u64,
    /// How tasks of different users share the daemons: `fair` (weighted
    /// fair queuing between users, FIFO within each) or `fifo` (one queue
    /// in submission order across everyone).
    #[arg(long, value_enum, default_value = "fair")]
    schedule: crate::fair::Policy,
    /// Run every task on this many distinct daemons and accept a result
    /// only when that many agree (a task's own `.replicas` overrides it):
    /// results from volunteers' machines checked by redundancy.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=crate::replicas::MAX_REPLICAS as i64))]
    replicas: u32,
    /// Largest control frame, in KiB.
    #[arg(long, value_name = "KIB", default_value_t = 64, hide = true)]
    max_control: u64,
    /// Seconds a connection has to complete TLS, upgrade and hello (kept
    /// short: a half-open connection holds a handshake slot until then).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    handshake_timeout: f64,
    /// Seconds between heartbeats; a peer silent for three is dropped.
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0)]
    heartbeat: f64,
    /// Seconds running tasks get to finish at shutdown.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    shutdown_grace: f64,
    /// Cap on any task's evaluation time on local daemons, in seconds.
    #[arg(long, value_name = "SECONDS")]
    task_timeout: Option<f64>,
    /// Keep state between tasks on local daemons (no reset).
    #[arg(long)]
    keep_state: bool,
    /// Compiled packages every daemon's sandbox gets, comma-separated or
    /// repeated: names installed with `hako pkg install` (their dependencies
    /// come too). Local daemons mount them; remote daemons are sent the
    /// set's manifest and fetch the trees they lack from this host.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub packages: Vec<String>,
    // The local daemons' sandboxes (remote daemons choose their own).
    #[command(flatten)]
    sandbox: SandboxArgs,
}

pub fn run(args: HostArgs) -> ExitCode {
    crate::logging::init();
    // One thread by default for the dispatcher and every connection: the
    // sandboxes run on their own threads, and a single-threaded reactor
    // avoids cross-thread wake-ups per task. `HAKO_HOST_THREADS=N` gives a
    // multi-threaded runtime instead (e.g. for many TLS-heavy connections).
    let threads: usize = std::env::var("HAKO_HOST_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hako: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(host(args)) {
        Ok(code) => {
            // Connection tasks may still be closing; do not wait for them.
            rt.shutdown_timeout(Duration::from_millis(500));
            code
        }
        Err(e) => {
            eprintln!("hako: {e:#}");
            rt.shutdown_timeout(Duration::from_millis(100));
            ExitCode::from(2)
        }
    }
}

/// The options checked and turned into durations, bounds and tokens,
/// before anything starts: a usage error leaves nothing behind.
struct Settings {
    limits: FrameLimits,
    handshake_timeout: Duration,
    heartbeat: Duration,
    shutdown_grace: Duration,
    task_timeout: Option<Duration>,
    /// The local daemons' sandbox, with the package set every daemon gets.
    sandbox: SandboxConfig,
    /// Where to listen for daemons and remote clients, if at all.
    listen: Option<String>,
    tokens: Tokens,
}

impl Settings {
    fn check(args: &HostArgs) -> anyhow::Result<Settings> {
        let limits = FrameLimits {
            control: args.max_control << 10,
            bulk: args.max_payload << 20,
        };
        let handshake_timeout = seconds(args.handshake_timeout, "--handshake-timeout")?;
        let heartbeat = seconds(args.heartbeat, "--heartbeat")?;
        let shutdown_grace = seconds(args.shutdown_grace, "--shutdown-grace")?;
        let task_timeout = args
            .task_timeout
            .map(|t| seconds(t, "--task-timeout"))
            .transpose()?;
        if !args.sandbox.mount.is_empty() && args.local == 0 {
            bail!("--mount applies to local daemons: add --local N (remote daemons choose their own mounts)");
        }
        let mut sandbox = args.sandbox.config(task_timeout)?;
        sandbox.packages = Arc::new(package_set(&args.packages)?);
        if args.no_listen && args.local == 0 {
            bail!("--no-listen without --local: no daemon could ever join");
        }
        // Listening is explicit when local daemons are there to do the work.
        let listen = match (&args.listen, args.no_listen, args.local) {
            (Some(l), _, _) => Some(l.clone()),
            (None, true, _) | (None, false, 1..) => None,
            (None, false, 0) => Some("127.0.0.1:0".to_string()),
        };
        Ok(Settings {
            limits,
            handshake_timeout,
            heartbeat,
            shutdown_grace,
            task_timeout,
            sandbox,
            listen,
            tokens: Tokens::choose(args)?,
        })
    }

    fn dispatcher(&self, args: &HostArgs) -> dispatcher::Options {
        dispatcher::Options {
            retries: args.retries,
            slack: Duration::from_secs(5),
            shutdown_grace: self.shutdown_grace,
            max_payload: self.limits.bulk,
            max_everywhere: args.max_everywhere.saturating_mul(1 << 20),
            max_unread: args.max_unread.saturating_mul(1 << 20),
            max_queued: args.max_queued.saturating_mul(1 << 20),
            schedule: args.schedule,
            replicas: args.replicas,
        }
    }
}

/// The set `--packages` names: installed packages only (a daemon elsewhere
/// cannot be handed a host directory by path), checked here so a damaged
/// tree stops the host before any daemon starts.
fn package_set(names: &[String]) -> anyhow::Result<PackageSet> {
    let names: Vec<String> = names
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        return Ok(PackageSet::default());
    }
    if let Some(p) = names.iter().find(|n| n.contains('/')) {
        bail!("--packages {p}: give names of installed packages (`hako pkg install NAME`), not directories");
    }
    let set = crate::pkg::resolve_set(&names)?;
    set.verify()?;
    let all: Vec<String> = set
        .packages
        .iter()
        .map(|p| format!("{} {}", p.manifest.name, p.manifest.version))
        .collect();
    tracing::info!("package set: {}", all.join(", "));
    Ok(set)
}

/// The tokens daemons and remote clients must present.
struct Tokens {
    daemon: String,
    /// None: remote clients are refused.
    client: Option<String>,
}

impl Tokens {
    /// The ones given, else the ones kept in `--identity`, else fresh ones.
    fn choose(args: &HostArgs) -> anyhow::Result<Tokens> {
        let new_token = |name: &str| match &args.identity {
            Some(dir) => identity::token(dir, name),
            None => token::generate(),
        };
        let daemon = match args.token.clone() {
            Some(t) if t.len() < 16 => bail!("--token must be at least 16 characters"),
            Some(t) => t,
            None => new_token("token")?,
        };
        let client = if args.no_clients {
            None
        } else {
            Some(match args.client_token.clone() {
                Some(t) if t.len() < 16 => bail!("--client-token must be at least 16 characters"),
                Some(t) => t,
                None => new_token("client_token")?,
            })
        };
        Ok(Tokens { daemon, client })
    }
}

/// The client link's task: why it ended, and its writer still flushing.
type LinkTask = JoinHandle<(EndReason, JoinHandle<()>)>;

async fn host(args: HostArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::check(&args)?;
    let (handle, dispatcher_task) = dispatcher::start(settings.dispatcher(&args));
    let (stop_tx, stop_rx) = watch::channel(false);
    let connections = shutdown::Tracker::new();

    let mut ready = Ready::new(env!("CARGO_PKG_VERSION"), settings.limits.bulk);
    ready.add("local", args.local);
    let banner = match &settings.listen {
        Some(addr) => {
            let shared = (handle.clone(), stop_rx, connections.enlister());
            listen::start(addr, &args, &settings, shared, &mut ready).await?
        }
        None => String::new(),
    };
    let local_failed = Arc::new(AtomicBool::new(false));
    if args.local > 0 {
        start_local(&args, &settings, &handle, &local_failed);
    }
    let link_task = start_link(&args, &handle, ready, &banner, settings.limits.bulk).await?;

    let mut code = wait(handle.clone(), link_task, dispatcher_task).await;
    if local_failed.load(Ordering::SeqCst) {
        // A host whose daemons never started did not do its job: say so in
        // the exit status too, not only in the log.
        code = ExitCode::FAILURE;
    }
    let _ = stop_tx.send(true);
    // Connections send the dispatcher's shutdown notices, then close.
    let grace = settings.shutdown_grace;
    if !connections.wait(grace).await {
        tracing::warn!("connections still closing after {grace:?}: not waiting for them");
    }
    Ok(code)
}

/// Start the in-process daemons in the background, so the link is up at
/// once; if they cannot start, the host shuts down (and `failed` is set).
fn start_local(args: &HostArgs, settings: &Settings, handle: &Handle, failed: &Arc<AtomicBool>) {
    let config = WorkerConfig {
        keep_state: args.keep_state,
        task_timeout_cap: settings.task_timeout,
        max_tasks: None,
        idle_time: None,
        // Results come back in-process: the same bound as over the wire.
        max_result: Some(settings.limits.bulk),
        // The host's own machine: its owner's tasks, at normal priority.
        lowest_priority: false,
        log_tasks: false,
    };
    let assets_dir = paths::assets_dir(args.sandbox.assets.as_deref());
    let sandbox = settings.sandbox.clone();
    let (n, h, failed) = (args.local, handle.clone(), failed.clone());
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let r = (|| -> anyhow::Result<()> {
            let runtime = crate::progress::open_runtime(&assets_dir)?;
            local::start(&runtime, n, &sandbox, &config, &h)?;
            Ok(())
        })();
        match r {
            Ok(()) => tracing::info!("{n} local daemon(s) ready in {:.2?}", started.elapsed()),
            Err(e) => {
                tracing::error!("local daemons failed to start: {e:#}");
                failed.store(true, Ordering::SeqCst);
                h.shutdown("local daemons failed to start");
            }
        }
    });
}

/// Serve the client link (`--stdio` or `--link`) as a client of the
/// dispatcher, with `banner` on standard error; without a link, the banner
/// goes to standard output and there is no link task.
async fn start_link(
    args: &HostArgs,
    handle: &Handle,
    ready: Ready,
    banner: &str,
    max_payload: u64,
) -> anyhow::Result<Option<LinkTask>> {
    if !args.stdio && args.link.is_none() {
        print!("{banner}");
        return Ok(None);
    }
    let id = handle.next_id();
    let (tx, rx) = mpsc::unbounded_channel();
    handle.send(Event::ClientJoined {
        id,
        peer: Arc::new(crate::peer::ClientTx::new(tx)),
        name: "link".into(),
        user: crate::users::User::shared("local"),
    });
    let h = handle.clone();
    let ends = Upstream {
        requests: Box::new(move |msg| h.send(Event::FromClient { id, msg })),
        events: rx,
    };
    eprint!("{banner}");
    let place = match &args.link {
        None => {
            if let Some(f) = &args.link_file {
                link_setup::write_link_file(f, ready.text())?;
            }
            Place::Stdio
        }
        Some(addr) => {
            let Some(file) = &args.link_file else {
                bail!("--link needs --link-file to tell the R session where and how to connect")
            };
            let token = match args.link_token.clone() {
                Some(t) => t,
                None => token::generate()?,
            };
            link_setup::bind(addr, token, file, &ready).await?
        }
    };
    Ok(Some(tokio::spawn(async move {
        // An R session that never connects must not leave a host behind.
        let served =
            link_setup::serve(place, ends, ready, max_payload, Some(LINK_ACCEPT_TIMEOUT)).await;
        served.unwrap_or_else(|e| (EndReason::Broken(e.to_string()), tokio::spawn(async {})))
    })))
}

/// Run until the link ends, a signal arrives, or the dispatcher ends; then
/// shut down gracefully.
async fn wait(
    handle: Handle,
    link_task: Option<LinkTask>,
    mut dispatcher_task: JoinHandle<()>,
) -> ExitCode {
    let link_done = async {
        match link_task {
            Some(t) => t.await.ok(),
            None => std::future::pending().await,
        }
    };
    let mut writer = None;
    tokio::select! {
        r = link_done => {
            if let Some((end, w)) = r {
                tracing::info!("client link ended: {end:?}");
                writer = Some(w);
            }
            handle.shutdown("the client link ended");
        }
        s = shutdown::signal() => {
            tracing::info!("{s}: shutting down");
            handle.shutdown(&s);
        }
        _ = &mut dispatcher_task => {
            return ExitCode::SUCCESS;
        }
    }
    let _ = dispatcher_task.await;
    if let Some(w) = writer {
        let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
    }
    ExitCode::SUCCESS
}
