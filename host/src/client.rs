//! `hako client wss://… --token T --fingerprint …`: the client link (the
//! same framing as `hako host --stdio`) bridged to a remote, shared host
//! over TLS, so an R session can use it as if the host were its child.
//!
//! Exit status: 0 when the R side ended the link, 1 when the host refused,
//! is not trusted, or went away.

use crate::dial::{self, DialError};
use crate::link::{self, LinkEnds};
use crate::protocol::{FrameLimits, HelloBody, Message, Role};
use crate::tls::{self, Trust};
use crate::ws::{self, Flow, Out};
use clap::Args;
use std::fmt::Write as _;
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
    /// Pin the host's certificate (as printed by `hako host`).
    #[arg(long, value_name = "SHA256:HEX")]
    fingerprint: Option<String>,
    /// Without --fingerprint: also trust this CA (PEM), besides the web PKI.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
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
    let trust = match &args.fingerprint {
        Some(f) => Trust::Pinned(tls::parse_fingerprint(f)?),
        None => Trust::Roots {
            ca_file: args.ca.clone(),
        },
    };
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
            .unwrap_or_else(|| dial::default_name("client")),
        limits: Default::default(),
        caps: crate::local::capabilities(),
    };
    let (conn, welcome) = match dial::dial(&target, &trust, limits, hello).await {
        Ok(v) => v,
        Err(e @ (DialError::Refused(_) | DialError::Untrusted(_) | DialError::Unreachable(_))) => {
            eprintln!("hako: {}: {e}", target.url);
            return Ok(ExitCode::FAILURE);
        }
    };
    tracing::info!(id = welcome.id, "connected to {}", target.url);
    let mut ready = String::new();
    let _ = writeln!(ready, "version\t{}", crate::linkframe::LINK_VERSION);
    let _ = writeln!(ready, "protocol\t{}", crate::protocol::VERSION);
    let _ = writeln!(ready, "hako\t{}", welcome.hako_version);
    let _ = writeln!(ready, "max_payload\t{}", welcome.limits.bulk);
    let _ = writeln!(ready, "url\t{}", target.url);
    let _ = writeln!(ready, "remote\t1");

    let (out_tx, out_rx) = mpsc::unbounded_channel::<Out>();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Out>();
    let heartbeat = Duration::from_millis(welcome.heartbeat_ms.clamp(100, 3_600_000));
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
    let ends = LinkEnds {
        requests: Box::new(move |m| out_tx.send(Out::Msg(m)).is_ok()),
        events: ev_rx,
    };
    let max = welcome.limits.bulk;
    let serve = async move {
        match (&args.link, &args.link_file) {
            (Some(addr), Some(file)) => {
                let addr: std::net::SocketAddr = addr.parse()?;
                if !addr.ip().is_loopback() {
                    anyhow::bail!("--link must be a loopback address");
                }
                let listener = tokio::net::TcpListener::bind(addr).await?;
                let token = crate::token::generate()?;
                let mut text = ready.clone();
                let _ = writeln!(text, "link\t{}", listener.local_addr()?);
                let _ = writeln!(text, "link_token\t{token}");
                link::write_private(file, &text)?;
                let (r, w) = link::accept_socket(&listener, &token).await?;
                Ok(link::serve(r, w, ends, Some(ready), max).await)
            }
            _ => Ok(link::serve(
                crate::stdio::stdin(),
                crate::stdio::stdout(),
                ends,
                Some(ready),
                max,
            )
            .await),
        }
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
            // Give the link writer a moment to pass on what arrived.
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(ExitCode::FAILURE)
        }
    }
}
