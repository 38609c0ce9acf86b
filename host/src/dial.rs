//! Dialling a host: TCP, TLS with the host's certificate pinned (or checked
//! against CA roots), the WebSocket upgrade, hello and welcome. Used by
//! `hako daemon` and `hako client`.

use crate::protocol::{FrameLimits, Hello, HelloBody, Message, Welcome, VERSION};
use crate::tls::{self, Trust};
use crate::ws;
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;

pub type Conn = WebSocketStream<TlsStream<TcpStream>>;

/// A parsed `wss://HOST:PORT[/path]`.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub host: String,
    pub port: u16,
}

pub fn parse_url(url: &str) -> anyhow::Result<Target> {
    let Some(rest) = url.strip_prefix("wss://") else {
        if url.starts_with("ws://") {
            anyhow::bail!("{url}: plain ws:// is not supported; hako hosts speak wss:// only");
        }
        anyhow::bail!("{url}: expected wss://HOST:PORT");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6
            .split_once("]:")
            .ok_or_else(|| anyhow::anyhow!("{url}: expected wss://[ADDR]:PORT"))?;
        (h.to_string(), p)
    } else {
        let (h, p) = authority
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("{url}: expected wss://HOST:PORT"))?;
        (h.to_string(), p)
    };
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("{url}: bad port {port:?}"))?;
    if host.is_empty() {
        anyhow::bail!("{url}: no host");
    }
    Ok(Target {
        url: url.to_string(),
        host,
        port,
    })
}

#[derive(Debug)]
pub enum DialError {
    /// Could not reach the host, or it went away mid-handshake: try again.
    Unreachable(String),
    /// The host's certificate is not the pinned one, or fails CA checks:
    /// never retried.
    Untrusted(String),
    /// The host said no (wrong token, version mismatch): never retried.
    Refused(String),
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // What the host sent (a close reason, a refusal) may be in it.
            DialError::Unreachable(e) => write!(f, "cannot reach the host: {}", printable(e)),
            DialError::Untrusted(e) => write!(f, "the host is not trusted: {}", printable(e)),
            DialError::Refused(e) => write!(f, "the host refused: {}", printable(e)),
        }
    }
}

/// How long a host gets, once the TCP connection is up, to complete TLS,
/// the upgrade and its welcome: a host that accepts and stays silent cannot
/// hold a daemon or client for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn dial(
    target: &Target,
    trust: &Trust,
    limits: FrameLimits,
    hello: HelloBody,
) -> Result<(Conn, Welcome), DialError> {
    dial_within(target, trust, limits, hello, HANDSHAKE_TIMEOUT).await
}

/// [`dial`], with the host given `handshake` to welcome us once connected.
pub async fn dial_within(
    target: &Target,
    trust: &Trust,
    limits: FrameLimits,
    hello: HelloBody,
    handshake: Duration,
) -> Result<(Conn, Welcome), DialError> {
    let tls = tls::client_config(trust).map_err(|e| DialError::Untrusted(format!("{e:#}")))?;
    dial_using(target, trust, &tls, limits, hello, handshake).await
}

/// A TLS client configuration made once for many connections (the jobs of
/// one daemon share it), and what its verifier saw last.
pub type Tls = (Arc<rustls::ClientConfig>, Arc<tls::Seen>);

/// [`dial_within`] on a TLS configuration made for `trust` beforehand.
pub async fn dial_using(
    target: &Target,
    trust: &Trust,
    tls: &Tls,
    limits: FrameLimits,
    hello: HelloBody,
    handshake: Duration,
) -> Result<(Conn, Welcome), DialError> {
    let unreachable = |e: String| DialError::Unreachable(e);
    let (config, seen) = (tls.0.clone(), tls.1.clone());
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| unreachable("connect timed out".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    tokio::time::timeout(
        handshake,
        handshake_on(tcp, target, config, seen, trust, limits, hello),
    )
    .await
    .map_err(|_| unreachable(format!("no welcome within {handshake:?} of connecting")))?
}

/// TLS, the upgrade, hello and welcome on a connected socket.
async fn handshake_on(
    tcp: TcpStream,
    target: &Target,
    config: Arc<rustls::ClientConfig>,
    seen: Arc<tls::Seen>,
    trust: &Trust,
    limits: FrameLimits,
    hello: HelloBody,
) -> Result<(Conn, Welcome), DialError> {
    let unreachable = |e: String| DialError::Unreachable(e);
    let name = ServerName::try_from(target.host.clone())
        .map_err(|e| DialError::Untrusted(format!("{}: {e}", target.host)))?;
    let tls = match TlsConnector::from(Arc::clone(&config))
        .connect(name, tcp)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            let is_cert = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
            if is_cert {
                let msg = match (trust, seen.fingerprint.lock().ok().and_then(|s| s.clone())) {
                    (Trust::Pinned(pin), Some(got)) => format!(
                        "its certificate is {got}, not the pinned SHA256:{}",
                        hex::encode(pin)
                    ),
                    _ => e.to_string(),
                };
                return Err(DialError::Untrusted(msg));
            }
            return Err(unreachable(format!("TLS: {e}")));
        }
    };
    let (mut conn, _) = tokio_tungstenite::client_async_with_config(
        target.url.as_str(),
        tls,
        Some(ws::ws_config(&limits)),
    )
    .await
    .map_err(|e| unreachable(format!("WebSocket upgrade: {e}")))?;
    ws::send(
        &mut conn,
        &Message::Hello(Hello {
            version: VERSION,
            body: hello,
        }),
    )
    .await
    .map_err(unreachable)?;
    match ws::recv(&mut conn, &limits).await {
        Ok(Message::Welcome(mut w)) => {
            w.hako_version = printable(&w.hako_version);
            Ok((conn, w))
        }
        Ok(Message::Refused { reason }) => Err(DialError::Refused(printable(&reason))),
        Ok(other) => Err(unreachable(format!(
            "expected a welcome, got {:?}",
            other.kind()
        ))),
        Err(e) => Err(unreachable(e.to_string())),
    }
}

/// Text a host chose, made safe to show on a terminal: control characters
/// (escape sequences that retitle, clear or write the clipboard) are shown
/// escaped, and the length is bounded.
pub fn printable(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().take(500) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("wss://127.0.0.1:5555").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 5555));
        let t = parse_url("wss://[::1]:80/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert!(parse_url("ws://h:1").is_err());
        assert!(parse_url("wss://h").is_err());
        assert!(parse_url("wss://:1").is_err());
    }

    #[test]
    fn printable_escapes_controls() {
        let p = printable("a\x1b]0;t\x07\u{9b}b\nc");
        assert!(!p.chars().any(char::is_control), "{p:?}");
        assert!(p.starts_with('a') && p.ends_with('c'));
        assert_eq!(printable(&"x".repeat(1000)).len(), 500);
    }
}
