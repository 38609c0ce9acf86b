//! The host's listener: TLS, the WebSocket upgrade and the hello, each
//! connection in its own task under a handshake deadline and a byte budget,
//! then handed to the dispatcher. A refused peer is told why, logged, and
//! closed; nobody else notices.

use crate::dispatcher::{DaemonInfo, Event, Handle};
use crate::protocol::{FrameLimits, Message, Role, Welcome};
use crate::token;
use crate::ws::{self, Budget, Budgeted, End, Flow};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Most connections allowed to be mid-handshake at once: together with the
/// byte budget this bounds what unauthenticated peers can make us hold.
const MAX_HANDSHAKES: usize = 256;
/// Bytes an unauthenticated peer may send beyond a control frame (TLS
/// handshake, HTTP upgrade request).
const PREAUTH_SLACK: u64 = 32 << 10;

pub struct ServerConfig {
    pub tls: Arc<rustls::ServerConfig>,
    pub daemon_token: String,
    /// None: remote clients are refused.
    pub client_token: Option<String>,
    pub limits: FrameLimits,
    pub handshake_timeout: Duration,
    pub heartbeat: Duration,
}

/// Accept connections until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    cfg: Arc<ServerConfig>,
    handle: Handle,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(cfg.tls.clone());
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, addr)) => {
                    let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                        tracing::warn!(%addr, "too many connections mid-handshake; dropping");
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let cfg = cfg.clone();
                    let handle = handle.clone();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        connection(tcp, addr, acceptor, cfg, handle, permit).await;
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    tracing::info!("listener closed");
}

async fn connection(
    tcp: TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    cfg: Arc<ServerConfig>,
    handle: Handle,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let budget = Budget::new(cfg.limits.control + PREAUTH_SLACK);
    let limits = cfg.limits;
    let handshake = async {
        let tls = acceptor
            .accept(Budgeted::new(tcp, budget.clone()))
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        let mut ws = tokio_tungstenite::accept_async_with_config(tls, Some(ws::ws_config(&limits)))
            .await
            .map_err(|e| format!("WebSocket upgrade failed: {e}"))?;
        let first = ws::recv(&mut ws, &limits).await;
        Ok::<_, String>((ws, first))
    };
    let (mut ws, first) = match tokio::time::timeout(cfg.handshake_timeout, handshake).await {
        Err(_) => {
            tracing::warn!(%addr, "refused: no hello within {:?}", cfg.handshake_timeout);
            return;
        }
        Ok(Err(reason)) => {
            tracing::warn!(%addr, %reason, "refused");
            return;
        }
        Ok(Ok(v)) => v,
    };
    let hello = match first {
        Ok(Message::Hello(h)) => h,
        Ok(other) => {
            let reason = format!("expected a hello, got {:?}", other.kind());
            return refused(&mut ws, addr, &reason).await;
        }
        Err(End::Violation(reason)) => return refused(&mut ws, addr, &reason).await,
        Err(e) => {
            tracing::warn!(%addr, reason = %e, "refused: no hello");
            return;
        }
    };
    let body = hello.body;
    let expected = match body.role {
        Role::Daemon => Some(cfg.daemon_token.as_str()),
        Role::Client => cfg.client_token.as_deref(),
    };
    let Some(expected) = expected else {
        return refused(&mut ws, addr, "this host takes no remote clients").await;
    };
    if !token::matches(expected, &body.token) {
        return refused(&mut ws, addr, "wrong token").await;
    }
    // Authenticated: frames may now be as large as the bounds allow.
    budget.lift();
    drop(permit);
    let id = handle.next_id();
    let welcome = Message::Welcome(Welcome {
        id,
        hako_version: env!("CARGO_PKG_VERSION").to_string(),
        limits,
        heartbeat_ms: cfg.heartbeat.as_millis() as u64,
    });
    if let Err(e) = ws::send(&mut ws, &welcome).await {
        tracing::warn!(%addr, "lost before welcome: {e}");
        return;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let peer = Arc::new(tx);
    let name = if body.name.is_empty() {
        addr.to_string()
    } else {
        body.name.chars().take(64).collect()
    };
    let role = body.role;
    match role {
        Role::Daemon => handle.send(Event::DaemonJoined {
            id,
            peer,
            info: DaemonInfo {
                name,
                address: addr.to_string(),
                limits: body.limits,
                caps: body.caps,
            },
        }),
        Role::Client => handle.send(Event::ClientJoined { id, peer, name }),
    };
    let h = handle.clone();
    let end = ws::pump(ws, rx, limits, cfg.heartbeat, move |msg| {
        let ev = match role {
            Role::Daemon => Event::FromDaemon { id, msg },
            Role::Client => Event::FromClient { id, msg },
        };
        if h.send(ev) {
            Flow::Continue
        } else {
            Flow::Stop("the host is gone".into())
        }
    })
    .await;
    match &end {
        End::Violation(_) => tracing::warn!(%addr, conn = id, "closed: {end}"),
        _ => tracing::info!(%addr, conn = id, "closed: {end}"),
    }
    handle.send(Event::Left {
        id,
        reason: end.to_string(),
    });
}

async fn refused<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, addr: SocketAddr, reason: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tracing::warn!(%addr, %reason, "refused");
    let _ = ws::send(
        ws,
        &Message::Refused {
            reason: reason.to_string(),
        },
    )
    .await;
    ws::close(ws, CloseCode::Policy, reason).await;
}
