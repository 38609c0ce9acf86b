//! One protocol connection over a WebSocket: sending and receiving
//! [`Message`]s, heartbeats, and the byte budget that keeps an
//! unauthenticated peer from making us buffer a large frame.

use crate::peer::Out;
use crate::protocol::{self, DecodeError, FrameLimits, Message};
use futures_util::{SinkExt, StreamExt};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// Bytes a bulk frame may carry beyond its payload (ids, length prefixes).
const FRAME_SLACK: u64 = 4096;

/// WebSocket limits matching the protocol's frame bounds. Buffers are kept
/// small so that a thousand idle daemons cost little memory.
pub fn ws_config(limits: &FrameLimits) -> WebSocketConfig {
    let max = usize::try_from(limits.bulk.saturating_add(FRAME_SLACK)).unwrap_or(usize::MAX);
    WebSocketConfig::default()
        .read_buffer_size(16 << 10)
        .write_buffer_size(0)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// A stream whose reads are limited to a byte budget until [`Budget::lift`]:
/// before authentication a peer gets a few kilobytes, not a frame bound.
pub struct Budgeted<S> {
    inner: S,
    budget: Arc<Budget>,
}

#[derive(Debug)]
pub struct Budget(AtomicU64);

impl Budget {
    pub fn new(bytes: u64) -> Arc<Budget> {
        Arc::new(Budget(AtomicU64::new(bytes)))
    }
    /// No more limit (the peer authenticated).
    pub fn lift(&self) {
        self.0.store(u64::MAX, Ordering::Release);
    }
}

impl<S> Budgeted<S> {
    pub fn new(inner: S, budget: Arc<Budget>) -> Self {
        Budgeted { inner, budget }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Budgeted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            let left = this.budget.0.load(Ordering::Acquire);
            if left != u64::MAX {
                if n > left {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the peer sent too much before authenticating",
                    )));
                }
                this.budget.0.store(left - n, Ordering::Release);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budgeted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The peer closed or the transport failed.
    Lost(String),
    /// The peer broke the protocol (the reason was sent in a close frame).
    Violation(String),
    /// Our side ended it (shutdown, or the handler said stop).
    Local(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Lost(r) => write!(f, "connection lost: {r}"),
            End::Violation(r) => write!(f, "protocol violation: {r}"),
            End::Local(r) => write!(f, "closed: {r}"),
        }
    }
}

fn close_code(e: &DecodeError) -> CloseCode {
    match e {
        DecodeError::Oversized { .. } => CloseCode::Size,
        _ => CloseCode::Policy,
    }
}

/// Send one message (before the pump runs: hello, welcome, refused).
pub async fn send<S>(ws: &mut WebSocketStream<S>, m: &Message) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(WsMessage::Binary(protocol::encode(m).into()))
        .await
        .map_err(|e| e.to_string())
}

/// Close with a reason, not waiting long for the peer.
pub async fn close<S>(ws: &mut WebSocketStream<S>, code: CloseCode, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: truncate(reason, 120).into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(frame))).await;
}

fn truncate(s: &str, n: usize) -> String {
    let mut end = s.len().min(n);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Receive the next protocol message, skipping WebSocket control frames.
pub async fn recv<S>(ws: &mut WebSocketStream<S>, limits: &FrameLimits) -> Result<Message, End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            None => return Err(End::Lost("closed".into())),
            Some(Err(e)) => return Err(End::Lost(e.to_string())),
            Some(Ok(WsMessage::Binary(b))) => {
                return protocol::decode(&b, limits).map_err(|e| End::Violation(e.to_string()));
            }
            Some(Ok(WsMessage::Close(f))) => {
                let why = f.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(End::Lost(
                    format!("closed by peer {why}").trim_end().to_string(),
                ));
            }
            Some(Ok(WsMessage::Text(_))) => return Err(End::Violation("text frame".into())),
            Some(Ok(_)) => continue,
        }
    }
}

/// What the message handler wants after a message.
pub enum Flow {
    Continue,
    /// End the connection, telling the peer why.
    Stop(String),
    /// The peer broke the protocol.
    Violation(String),
}

/// Run a connection until it ends: incoming messages go to `on_msg`,
/// `out` is sent, pings are answered, and a peer silent for three
/// heartbeats is dropped.
pub async fn pump<S>(
    ws: WebSocketStream<S>,
    mut out: mpsc::UnboundedReceiver<Out>,
    limits: FrameLimits,
    heartbeat: Duration,
    mut on_msg: impl FnMut(Message) -> Flow,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last_rx = Instant::now();
    let mut pings = 0u64;
    let closing = |code: CloseCode, reason: &str| {
        WsMessage::Close(Some(CloseFrame {
            code,
            reason: truncate(reason, 120).into(),
        }))
    };
    let end = loop {
        tokio::select! {
            incoming = stream.next() => {
                last_rx = Instant::now();
                match incoming {
                    None => break End::Lost("closed".into()),
                    Some(Err(e)) => {
                        // An oversized frame is reported here by tungstenite.
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            sink.send(closing(CloseCode::Size, &e.to_string())),
                        )
                        .await;
                        break End::Lost(e.to_string());
                    }
                    Some(Ok(WsMessage::Binary(b))) => match protocol::decode(&b, &limits) {
                        Err(e) => {
                            let reason = e.to_string();
                            let _ = sink.send(closing(close_code(&e), &reason)).await;
                            break End::Violation(reason);
                        }
                        Ok(Message::Ping(n)) => {
                            if sink.send(WsMessage::Binary(protocol::encode(&Message::Pong(n)).into())).await.is_err() {
                                break End::Lost("write failed".into());
                            }
                        }
                        Ok(Message::Pong(_)) => {}
                        Ok(m) => match on_msg(m) {
                            Flow::Continue => {}
                            Flow::Stop(reason) => {
                                let _ = sink.send(closing(CloseCode::Normal, &reason)).await;
                                break End::Local(reason);
                            }
                            Flow::Violation(reason) => {
                                let _ = sink.send(closing(CloseCode::Policy, &reason)).await;
                                break End::Violation(reason);
                            }
                        },
                    },
                    Some(Ok(WsMessage::Close(f))) => {
                        let why = f.map(|f| f.reason.to_string()).unwrap_or_default();
                        break End::Lost(format!("closed by peer {why}").trim_end().to_string());
                    }
                    Some(Ok(WsMessage::Text(_))) => {
                        let _ = sink.send(closing(CloseCode::Unsupported, "text frames are not part of the protocol")).await;
                        break End::Violation("text frame".into());
                    }
                    Some(Ok(_)) => {}
                }
            }
            o = out.recv() => match o {
                None => {
                    let _ = sink.send(closing(CloseCode::Away, "going away")).await;
                    break End::Local("going away".into());
                }
                Some(Out::Close(reason)) => {
                    let _ = sink.send(closing(CloseCode::Normal, &reason)).await;
                    break End::Local(reason);
                }
                Some(Out::Msg(m)) | Some(Out::Counted(m, _)) => {
                    // Batch whatever else is ready into one flush.
                    let mut ok = sink.feed(WsMessage::Binary(protocol::encode(&m).into())).await.is_ok();
                    drop(m);
                    let mut close_after = None;
                    while ok {
                        match out.try_recv() {
                            Ok(Out::Msg(m)) | Ok(Out::Counted(m, _)) => ok = sink.feed(WsMessage::Binary(protocol::encode(&m).into())).await.is_ok(),
                            Ok(Out::Close(r)) => { close_after = Some(r); break; }
                            Err(_) => break,
                        }
                    }
                    if !ok || sink.flush().await.is_err() {
                        break End::Lost("write failed".into());
                    }
                    if let Some(reason) = close_after {
                        let _ = sink.send(closing(CloseCode::Normal, &reason)).await;
                        break End::Local(reason);
                    }
                }
            },
            _ = tick.tick() => {
                if last_rx.elapsed() > heartbeat * 3 {
                    break End::Lost(format!("peer silent for {:.0?}", last_rx.elapsed()));
                }
                pings += 1;
                if sink.send(WsMessage::Binary(protocol::encode(&Message::Ping(pings)).into())).await.is_err() {
                    break End::Lost("write failed".into());
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    end
}
