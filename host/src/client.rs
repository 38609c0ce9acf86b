//! `hako client wss://… --token T --fingerprint …`: the client link (the
//! same framing as `hako host --stdio`) bridged to a remote, shared host
//! over TLS, so an R session can use it as if the host were its child.
//!
//! Exit status: 0 when the R side ended the link, 1 when the host refused,
//! is not trusted, or went away.

use crate::dial::{self, DialError};
use crate::link::Upstream;
use crate::link_setup::{self, Place, Ready};
use crate::peer::Out;
use crate::protocol::{FrameLimits, HelloBody, Message, Role};
use crate::trust_args::TrustArgs;
use crate::whoami;
use crate::ws::{self, Flow};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// The host's URL, wss://HOST:PORT.
    url: String,
    /// The host's client token.
    #[arg(long, env = "HAKO_CLIENT_TOKEN", hide_env_values = true)]
    token: String,
    #[command(flatten)]
    trust: TrustArgs,
    /// Serve the link on this loopback address instead of stdin/stdout.
    #[arg(long, value_name = "ADDR:PORT", requires = "link_file")]
    link: Option<String>,
    /// With --link: where to write the link address and token.
    #[arg(long, value_name = "PATH")]
    link_file: Option<PathBuf>,
    /// Name shown in the host's logs.
    #[arg(long)]
    name: Option<String>,
}

pub fn run(args: ClientArgs) -> ExitCode {
    crate::async_main::run(client(args))
}

async fn client(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let target = dial::parse_url(&args.url)?;
    let trust = args.trust.trust()?;
    let limits = FrameLimits {
        control: 64 << 10,
        bulk: 1 << 30,
    };
    let hello = HelloBody {
        role: Role::Client,
        token: args.token.clone(),
        name: args
            .name
            .clone()
            .unwrap_or_else(|| whoami::default_name("client")),
        limits: Default::default(),
        caps: whoami::capabilities(),
    };
    let (conn, welcome) = match dial::dial(&target, &trust, limits, hello).await {
        Ok(v) => v,
        Err(e @ (DialError::Refused(_) | DialError::Untrusted(_) | DialError::Unreachable(_))) => {
            eprintln!("hako: {}: {e}", target.url);
            return Ok(ExitCode::FAILURE);
        }
    };
    tracing::info!(id = welcome.id, "connected to {}", target.url);
    let mut ready = Ready::new(&welcome.hako_version, welcome.limits.bulk);
    ready.add("url", &target.url);
    ready.add("remote", 1);
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Out>();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Out>();
    let heartbeat = Duration::from_millis(welcome.heartbeat_ms.clamp(100, 3_600_000));
    let notices = ev_tx.clone();
    let pump = tokio::spawn(ws::pump(
        conn,
        out_rx,
        limits,
        heartbeat,
        move |m| match m {
            // Verified again before it reaches R: the remote host may not be
            // honest (defense in depth, see verify.rs).
            Message::Result(mut r) => {
                r.outcome = crate::verify::checked(r.outcome);
                let _ = ev_tx.send(Out::Msg(Message::Result(r)));
                Flow::Continue
            }
            Message::EverywhereAck { .. } | Message::Info(_) | Message::Shutdown { .. } => {
                let _ = ev_tx.send(Out::Msg(m));
                Flow::Continue
            }
            other => Flow::Violation(format!(
                "a host may not send {:?} to a client",
                other.kind()
            )),
        },
    ));
    let ends = Upstream {
        requests: Box::new(move |m| out_tx.send(Out::Msg(m)).is_ok()),
        events: ev_rx,
    };
    let max = welcome.limits.bulk;
    let serve = async move {
        let place = match (&args.link, &args.link_file) {
            (Some(addr), Some(file)) => {
                link_setup::bind(addr, crate::token::generate()?, file, &ready).await?
            }
            _ => Place::Stdio,
        };
        link_setup::serve(place, ends, ready, max, None).await
    };
    tokio::pin!(pump);
    tokio::select! {
        r = serve => {
            let (end, writer) = r?;
            tracing::info!("client link ended: {end:?}");
            // Dropping the request side closes the WebSocket; the writer ends with it.
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut pump).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
            Ok(ExitCode::SUCCESS)
        }
        end = &mut pump => {
            let end = end.map(|e| e.to_string()).unwrap_or_else(|e| e.to_string());
            eprintln!("hako: the host connection ended: {end}");
            // The R session is told why (a revoked token, a shutdown).
            let why = match end.strip_prefix("connection lost: closed by peer ") {
                Some(reason) => format!("the host closed this connection: {reason}"),
                None => format!("the host connection ended: {end}"),
            };
            let _ = notices.send(Out::Msg(Message::Refused { reason: why }));
            // Give the link writer a moment to pass on what arrived. Kept as
            // a pause on purpose: the writer belongs to `serve`, which is still
            // running in this select and only hands it back when the link ends,
            // and a failure exit loses nothing a client would wait for (R sees
            // EOF and fails its pending tasks as 'connection reset').
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(ExitCode::FAILURE)
        }
    }
}
