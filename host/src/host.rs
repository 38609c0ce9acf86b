//! `hako host`: the dispatcher, its TLS listener for daemons and remote
//! clients, optional in-process daemons (`--local N`), and the client link
//! for an R session (`--stdio` or `--link ADDR`).

use crate::dispatcher::{self, Event, Handle};
use crate::link::{self, LinkEnds};
use crate::protocol::FrameLimits;
use crate::sandbox_args::SandboxArgs;
use crate::server::{self, ServerConfig};
use crate::shutdown;
use crate::tls::Identity;
use crate::worker::WorkerConfig;
use crate::{identity, local, paths, token};
use anyhow::{bail, Context};
use clap::Args;
use hako_runtime::Runtime;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

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
    // The local daemons' sandboxes (remote daemons choose their own).
    #[command(flatten)]
    sandbox: SandboxArgs,
}

pub use crate::sandbox_args::seconds;

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

fn machine_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

/// Shell-quote a word if it needs it.
fn sh(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,%".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

async fn host(args: HostArgs) -> anyhow::Result<ExitCode> {
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
    // Listening is explicit when local daemons are there to do the work.
    let listen = match (&args.listen, args.no_listen, args.local) {
        (Some(l), _, _) => Some(l.clone()),
        (None, true, _) | (None, false, 1..) => None,
        (None, false, 0) => Some("127.0.0.1:0".to_string()),
    };
    }
    let sandbox = args.sandbox.config(task_timeout)?;
    if args.no_listen && args.local == 0 {
        bail!("--no-listen without --local: no daemon could ever join");
    }
    let new_token = |name: &str| match &args.identity {
        Some(dir) => identity::token(dir, name),
        None => token::generate(),
    };
    let daemon_token = match args.token.clone() {
        Some(t) if t.len() < 16 => bail!("--token must be at least 16 characters"),
        Some(t) => t,
        None => new_token("token")?,
    };
    let client_token = if args.no_clients {
        None
    } else {
        Some(match args.client_token.clone() {
            Some(t) if t.len() < 16 => bail!("--client-token must be at least 16 characters"),
            Some(t) => t,
            None => new_token("client_token")?,
        })
    };

        max_everywhere: args.max_everywhere.saturating_mul(1 << 20),
        max_unread: args.max_unread.saturating_mul(1 << 20),
        max_queued: args.max_queued.saturating_mul(1 << 20),
    let (handle, dispatcher_task) = dispatcher::start(dispatcher::Options {
        retries: args.retries,
        slack: Duration::from_secs(5),
        shutdown_grace,
        max_payload: limits.bulk,
    });
    let (stop_tx, stop_rx) = watch::channel(false);

    // The network side.
    let mut ready = String::new();
    let _ = writeln!(ready, "version\t{}", crate::linkframe::LINK_VERSION);
    let _ = writeln!(ready, "protocol\t{}", crate::protocol::VERSION);
    let _ = writeln!(ready, "hako\t{}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(ready, "max_payload\t{}", limits.bulk);
    let _ = writeln!(ready, "local\t{}", args.local);
    let mut banner = String::new();
    if let Some(listen) = &listen {
        let addr: SocketAddr = listen
            .parse()
            .with_context(|| format!("--listen {listen}: expected ADDR:PORT"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let bound = listener.local_addr()?;
        let advertise = args.advertise.clone().unwrap_or_else(|| {
            if bound.ip().is_unspecified() {
                machine_name().unwrap_or_else(|| "127.0.0.1".into())
            } else {
                bound.ip().to_string()
            }
        });
        let identity = match (&args.cert, &args.key) {
            (Some(c), Some(k)) => Identity::from_pem(c, k)?,
            _ => {
                let mut names = vec![
                    "localhost".to_string(),
                    "127.0.0.1".to_string(),
                    advertise.clone(),
                ];
                if !bound.ip().is_unspecified() {
                    names.push(bound.ip().to_string());
                }
                names.sort();
                names.dedup();
                match &args.identity {
                    Some(dir) => identity::certificate(dir, names)?,
                    None => Identity::self_signed(names)?,
                }
            }
        };
        let host_part = if advertise.contains(':') {
            format!("[{advertise}]")
        } else {
            advertise.clone()
        };
        let url = format!("wss://{host_part}:{}", bound.port());
        let pin = if identity.self_signed {
            format!(" --fingerprint {}", identity.fingerprint)
        } else {
            String::new()
        };
        let daemon_cmd = format!("hako daemon {url} --token {}{pin}", sh(&daemon_token));
        let _ = writeln!(ready, "url\t{url}");
        let _ = writeln!(ready, "fingerprint\t{}", identity.fingerprint);
        let _ = writeln!(ready, "token\t{daemon_token}");
        let _ = writeln!(ready, "daemon_command\t{daemon_cmd}");
        let _ = writeln!(banner, "hako host listening on {bound} as {url}");
        let _ = writeln!(banner, "certificate {}", identity.fingerprint);
        let _ = writeln!(
            banner,
            "to lend a machine's cores to this host, run there:\n  {daemon_cmd}"
        );
        if let Some(ct) = &client_token {
            let client_cmd = format!("hako client {url} --token {}{pin}", sh(ct));
            let _ = writeln!(ready, "client_token\t{ct}");
            let _ = writeln!(ready, "client_command\t{client_cmd}");
            let _ = writeln!(
                banner,
                "R sessions elsewhere can submit tasks through:\n  {client_cmd}"
            );
        }
        let cfg = Arc::new(ServerConfig {
            tls: identity.server_config()?,
            daemon_token: daemon_token.clone(),
            client_token: client_token.clone(),
            limits,
            handshake_timeout,
            heartbeat,
        });
        tokio::spawn(server::serve(
            listener,
            cfg,
            handle.clone(),
            stop_rx.clone(),
        ));
    }

    // In-process daemons, started in the background so the link is up at once.
    if args.local > 0 {
        let config = WorkerConfig {
            keep_state: args.keep_state,
            task_timeout_cap: task_timeout,
            max_tasks: None,
            idle_time: None,
            // Results come back in-process: the same bound as over the wire.
            max_result: Some(limits.bulk),
        };
        let assets_dir = paths::assets_dir(args.sandbox.assets.as_deref());
        let (n, h) = (args.local, handle.clone());
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let r = (|| -> anyhow::Result<()> {
                let assets = paths::ensure_assets(&assets_dir)?;
                let runtime = Runtime::new(&assets, &paths::cache_dir())?;
                local::start(&runtime, n, &sandbox, &config, &h)?;
                Ok(())
            })();
            match r {
                Ok(()) => tracing::info!("{n} local daemon(s) ready in {:.2?}", started.elapsed()),
                Err(e) => {
                    tracing::error!("local daemons failed to start: {e:#}");
                    h.shutdown("local daemons failed to start");
                }
            }
        });
    }

    // The client link.
    let link_task = if args.stdio || args.link.is_some() {
        let id = handle.next_id();
        let (tx, rx) = mpsc::unbounded_channel();
        handle.send(Event::ClientJoined {
            id,
            peer: Arc::new(dispatcher::ClientTx::new(tx)),
            name: "link".into(),
        });
        let h = handle.clone();
        let ends = LinkEnds {
            requests: Box::new(move |msg| h.send(Event::FromClient { id, msg })),
            events: rx,
        };
        eprint!("{banner}");
        let max = limits.bulk;
        if args.stdio {
            if let Some(f) = &args.link_file {
                link::write_private(f, &ready)
                    .with_context(|| format!("writing {}", f.display()))?;
            }
            let ready = ready.clone();
            Some(tokio::spawn(async move {
                let (end, writer) = link::serve(
                    crate::stdio::stdin(),
                    crate::stdio::stdout(),
                    ends,
                    Some(ready),
                    max,
                )
                .await;
                (end, writer)
            }))
        } else {
            let addr: SocketAddr = args
                .link
                .as_deref()
                .unwrap_or_default()
                .parse()
                .context("--link: expected ADDR:PORT")?;
            if !addr.ip().is_loopback() {
                bail!("--link must be a loopback address");
            }
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let link_token = match args.link_token.clone() {
                Some(t) => t,
                None => token::generate()?,
            };
            let mut text = ready.clone();
            let _ = writeln!(text, "link\t{}", listener.local_addr()?);
            let _ = writeln!(text, "link_token\t{link_token}");
            match &args.link_file {
                Some(f) => link::write_private(f, &text)
                    .with_context(|| format!("writing {}", f.display()))?,
                None => {
                    bail!("--link needs --link-file to tell the R session where and how to connect")
                }
            }
            let ready = ready.clone();
            Some(tokio::spawn(async move {
                // An R session that never connects must not leave a host behind.
                let accepted = tokio::time::timeout(
                    LINK_ACCEPT_TIMEOUT,
                    link::accept_socket(&listener, &link_token),
                )
                .await;
                let (r, w) = match accepted {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        drop(ends);
                        return (link::LinkEnd::Broken(e.to_string()), tokio::spawn(async {}));
                    }
                    Err(_) => {
                        drop(ends);
                        let why = format!("no client link within {LINK_ACCEPT_TIMEOUT:?}");
                        return (link::LinkEnd::Broken(why), tokio::spawn(async {}));
                    }
                };
                drop(listener);
                link::serve(r, w, ends, Some(ready), max).await
            }))
        }
    } else {
        print!("{banner}");
        None
    };

    let code = wait(handle.clone(), link_task, dispatcher_task).await;
    let _ = stop_tx.send(true);
    Ok(code)
}

/// Run until the link ends, a signal arrives, or the dispatcher ends; then
/// shut down gracefully.
async fn wait(
    handle: Handle,
    link_task: Option<tokio::task::JoinHandle<(link::LinkEnd, tokio::task::JoinHandle<()>)>>,
    mut dispatcher_task: tokio::task::JoinHandle<()>,
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
    // Let connection tasks send their shutdown notices.
    tokio::time::sleep(Duration::from_millis(100)).await;
    ExitCode::SUCCESS
}
