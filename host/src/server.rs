//! The host's listener: TLS, the WebSocket upgrade and the hello, each
//! connection in its own task under a handshake deadline and a byte budget,
//! then handed to the dispatcher. A refused peer is told why, logged, and
//! closed; nobody else notices.
//!
//! Before the upgrade the request head is read: anything but a WebSocket
//! upgrade is the status page's (see [`crate::status_page`]), answered
//! under the same deadline and budget.
//!
//! Connections mid-handshake are admitted by source address (see
//! [`Admission`]), so that sockets held open by one source cannot keep
//! honest daemons and clients out.

use crate::dispatcher::{DaemonInfo, Event, Handle};
use crate::peer::ClientTx;
use crate::protocol::{FrameLimits, Message, Role, Welcome};
use crate::shutdown::Enlist;
use crate::status_page;
use crate::users::{Access, Principal};
use crate::ws::{self, Budget, Budgeted, End, Flow};
use prefixed::Prefixed;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

mod prefixed;

/// Most connections allowed to be mid-handshake at once: together with the
/// byte budget this bounds what unauthenticated peers can make us hold.
const MAX_HANDSHAKES: usize = 256;
/// Most connections mid-handshake from one source (an IPv4 address or an
/// IPv6 /64).
const MAX_HANDSHAKES_PER_SOURCE: usize = 16;
/// A source's connection past its share is displaced only once it has had
/// this long to finish its handshake.
const GRACE: Duration = Duration::from_secs(1);
/// Bytes an unauthenticated peer may send beyond a control frame (TLS
/// handshake, HTTP upgrade request).
const PREAUTH_SLACK: u64 = 32 << 10;

pub struct ServerConfig {
    pub tls: Arc<rustls::ServerConfig>,
    /// Which tokens are accepted, and whose they are.
    pub access: Arc<Access>,
    pub limits: FrameLimits,
    pub handshake_timeout: Duration,
    pub heartbeat: Duration,
    /// The package set daemons are sent after their welcome.
    pub packages: Arc<hako_runtime::packages::PackageSet>,
}

/// Accept connections until `stop` turns true; each one, once
/// authenticated, is enlisted for shutdown to wait for.
pub async fn serve(
    listener: TcpListener,
    cfg: Arc<ServerConfig>,
    handle: Handle,
    mut stop: watch::Receiver<bool>,
    enlist: Enlist,
) {
    let acceptor = TlsAcceptor::from(cfg.tls.clone());
    let admission = Admission::new(MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, addr)) => {
                    let permit = admission.admit(addr.ip());
                    let _ = tcp.set_nodelay(true);
                    let cfg = cfg.clone();
                    let handle = handle.clone();
                    let acceptor = acceptor.clone();
                    let enlist = enlist.clone();
                    tokio::spawn(async move {
                        connection(tcp, addr, acceptor, cfg, handle, permit, enlist).await;
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
    permit: Slot,
    enlist: Enlist,
) {
    let budget = Budget::new(cfg.limits.control + PREAUTH_SLACK);
    let limits = cfg.limits;
    let handshake = async {
        let mut tls = acceptor
            .accept(Budgeted::new(tcp, budget.clone()))
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        // The head decides: a WebSocket upgrade goes on to the protocol
        // (given the bytes read), anything else is the status page's,
        // answered here (then there is no protocol connection: `None`).
        let head = status_page::read_head(&mut tls).await?;
        let req = status_page::Request::parse(&head)?;
        if status_page::route(&req) != status_page::Route::WebSocket {
            status_page::answer(&mut tls, &req, &cfg.access, &handle)
                .await
                .map_err(|e| format!("answering {:?}: {e}", req.path))?;
            tracing::debug!(%addr, path = ?req.path, "answered over HTTP");
            return Ok(None);
        }
        let stream = Prefixed::new(head, tls);
        let mut ws =
            tokio_tungstenite::accept_async_with_config(stream, Some(ws::ws_config(&limits)))
                .await
                .map_err(|e| format!("WebSocket upgrade failed: {e}"))?;
        let first = ws::recv(&mut ws, &limits).await;
        Ok::<_, String>(Some((ws, first)))
    };
    let evicted = permit.evicted.clone();
    let outcome = tokio::select! {
        r = tokio::time::timeout(cfg.handshake_timeout, handshake) => r,
        _ = evicted.notified() => {
            tracing::warn!(%addr, "dropped mid-handshake: its source holds too many half-open connections");
            return;
        }
    };
    let (mut ws, first) = match outcome {
        Err(_) => {
            tracing::warn!(%addr, "refused: no hello within {:?}", cfg.handshake_timeout);
            return;
        }
        Ok(Err(reason)) => {
            tracing::warn!(%addr, %reason, "refused");
            return;
        }
        // An HTTP request, answered: nothing more on this connection.
        Ok(Ok(None)) => return,
        Ok(Ok(Some(v))) => v,
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
    let principal = match cfg.access.authenticate(body.role, &body.token, &body.name) {
        Ok(p) => p,
        Err(reason) => return refused(&mut ws, addr, &reason).await,
    };
    // Authenticated: frames may now be as large as the bounds allow.
    budget.lift();
    drop(permit);
    // From here it has a peer to tell when the host shuts down.
    let _running = enlist.enlist();
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
    if body.role == Role::Daemon {
        // Taken only once its sandbox has the set (package_serve.rs).
        if let Err(reason) = crate::package_serve::serve(&mut ws, &cfg.packages, &limits).await {
            tracing::warn!(%addr, conn = id, "daemon not taken: {reason}");
            ws::close(&mut ws, CloseCode::Policy, &reason).await;
            return;
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let name = if body.name.is_empty() {
        addr.to_string()
    } else {
        body.name.chars().take(64).collect()
    };
    let role = body.role;
    match principal {
        Principal::Daemon(volunteer) => handle.send(Event::DaemonJoined {
            id,
            peer: Arc::new(tx),
            info: DaemonInfo {
                name,
                address: addr.to_string(),
                limits: body.limits,
                caps: body.caps,
                volunteer,
            },
        }),
        Principal::Client(user) => handle.send(Event::ClientJoined {
            id,
            peer: Arc::new(ClientTx::new(tx)),
            name,
            user,
        }),
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

/// The source a connection is counted under: its IPv4 address, or the /64
/// of its IPv6 address (one host usually owns a whole /64).
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Connections mid-handshake, oldest first per source. A newcomer is always
/// let in: when its source already holds its share, that source's oldest
/// half-open connection is dropped if it has had [`GRACE`] to finish; when
/// every slot is taken, the oldest of the most represented source is. So a
/// flood of silent sockets only ever displaces itself, an honest peer's
/// handshake (milliseconds) completes while an attacker's sockets wait for
/// the handshake deadline, and a burst of honest daemons from one machine
/// is not cut short by its own share.
pub struct Admission {
    inner: Mutex<Pending>,
    max: usize,
    per_source: usize,
}

#[derive(Default)]
struct Pending {
    by_source: HashMap<IpAddr, VecDeque<(u64, Instant, Arc<Notify>)>>,
    total: usize,
    next: u64,
}

impl Pending {
    fn evict_oldest(&mut self, src: IpAddr) {
        if let Some(q) = self.by_source.get_mut(&src) {
            if let Some((_, _, n)) = q.pop_front() {
                n.notify_one();
                self.total -= 1;
            }
            if q.is_empty() {
                self.by_source.remove(&src);
            }
        }
    }
}

/// A connection's place in [`Admission`], released when dropped.
pub struct Slot {
    admission: Arc<Admission>,
    src: IpAddr,
    id: u64,
    /// Notified when the connection is displaced by newer ones.
    evicted: Arc<Notify>,
}

impl Admission {
    pub fn new(max: usize, per_source: usize) -> Arc<Admission> {
        Arc::new(Admission {
            inner: Mutex::new(Pending::default()),
            max: max.max(1),
            per_source: per_source.max(1),
        })
    }

    /// Admit a connection from `ip`, displacing an older one if needed.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Slot {
        self.admit_at(ip, Instant::now())
    }

    fn admit_at(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Slot {
        let src = source(ip);
        let evicted = Arc::new(Notify::new());
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let overdue = |q: &VecDeque<(u64, Instant, Arc<Notify>)>| {
            q.front()
                .is_some_and(|(_, at, _)| now.saturating_duration_since(*at) >= GRACE)
        };
        if p.by_source
            .get(&src)
            .is_some_and(|q| q.len() >= self.per_source && overdue(q))
        {
            p.evict_oldest(src);
        }
        if p.total >= self.max {
            let most = p
                .by_source
                .iter()
                .max_by_key(|(_, q)| q.len())
                .map(|(s, _)| *s);
            if let Some(most) = most {
                p.evict_oldest(most);
            }
        }
        let id = p.next;
        p.next += 1;
        p.total += 1;
        p.by_source
            .entry(src)
            .or_default()
            .push_back((id, now, evicted.clone()));
        Slot {
            admission: self.clone(),
            src,
            id,
            evicted,
        }
    }

    /// Connections mid-handshake now.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut guard = self
            .admission
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let p = &mut *guard;
        if let Some(q) = p.by_source.get_mut(&self.src) {
            if let Some(i) = q.iter().position(|(id, _, _)| *id == self.id) {
                q.remove(i);
                p.total -= 1;
            }
            if q.is_empty() {
                p.by_source.remove(&self.src);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_source_displaces_only_itself() {
        let a = Admission::new(8, 3);
        let bad: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        let mut held: Vec<Slot> = (0..3).map(|_| a.admit_at(bad, t0)).collect();
        // A burst within the grace is let in beyond the share...
        held.push(a.admit_at(bad, t0));
        assert_eq!(a.pending(), 4);
        // ...but once they had their time, each newcomer displaces the oldest.
        let later = t0 + GRACE;
        held.extend((0..6).map(|_| a.admit_at(bad, later)));
        {
            let q = &a.inner.lock().unwrap().by_source[&bad];
            assert_eq!(q.len(), 6, "the four overdue ones gave way");
            assert!(q.iter().all(|(_, at, _)| *at == later));
        }
        // Past the global bound, the most represented source gives way.
        held.extend((0..2).map(|_| a.admit_at(bad, later)));
        assert_eq!(a.pending(), 8);
        let good = a.admit_at("10.0.0.2".parse().unwrap(), later);
        assert_eq!(a.pending(), 8);
        drop(held);
        assert_eq!(a.pending(), 1);
        drop(good);
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn when_full_the_most_represented_source_gives_way() {
        let a = Admission::new(4, 3);
        let s1: Vec<Slot> = (0..3)
            .map(|_| a.admit("10.0.0.1".parse().unwrap()))
            .collect();
        let _s2 = a.admit("10.0.0.2".parse().unwrap());
        assert_eq!(a.pending(), 4);
        let _s3 = a.admit("10.0.0.3".parse().unwrap());
        assert_eq!(a.pending(), 4);
        {
            let q = &a.inner.lock().unwrap().by_source;
            assert_eq!(q[&"10.0.0.1".parse::<IpAddr>().unwrap()].len(), 2);
            assert_eq!(q.len(), 3);
        }
        drop(s1);
        assert_eq!(a.pending(), 2);
    }

    #[test]
    fn ipv6_sources_are_counted_by_64() {
        let a: IpAddr = "2001:db8:1:2:3::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(source(a), source(b));
        let v4: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source(v4), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
