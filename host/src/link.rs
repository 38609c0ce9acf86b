//! Serving the client link (see `linkframe.rs`) to an R session, over the
//! host's stdin/stdout or one loopback socket guarded by a token. The same
//! code serves `hako client`, where the requests go to a remote host.

use crate::linkframe::{self as lf, LinkIn, LinkOut};
use crate::protocol::{
    Everywhere, FailKind, InfoReport, Message, Outcome, Stream, Task, TaskReport,
};
use crate::ws::Out;
use bytes::Bytes;
use std::fmt::Write as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

/// Where the link's requests go and its events come from.
pub struct LinkEnds {
    /// Submit a client message (task, cancel, everywhere, status).
    pub requests: Box<dyn Fn(Message) -> bool + Send + Sync>,
    /// Results, acks, info; `Out::Close` or the channel closing ends the link.
    pub events: mpsc::UnboundedReceiver<Out>,
}

/// Why the R side stopped talking.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkEnd {
    /// End of input: the R session closed the link or exited.
    Eof,
    /// A `SHUTDOWN` message.
    Shutdown,
    /// The framing broke; nothing more can be read.
    Broken(String),
}

pub fn status_of(kind: FailKind) -> u8 {
    match kind {
        FailKind::Timeout => lf::status::TIMEOUT,
        FailKind::Cancelled => lf::status::CANCELLED,
        FailKind::ConnectionReset => lf::status::CONNECTION_RESET,
        FailKind::MemoryLimit => lf::status::MEMORY_LIMIT,
        FailKind::OutputLimit => lf::status::OUTPUT_LIMIT,
        FailKind::Crashed => lf::status::CRASHED,
        FailKind::Shutdown => lf::status::SHUTDOWN,
        FailKind::Rejected => lf::status::REJECTED,
    }
}

fn stream_code(s: Stream) -> u8 {
    match s {
        Stream::Stdout => lf::stream::STDOUT,
        Stream::Stderr => lf::stream::STDERR,
        Stream::Message => lf::stream::MESSAGE,
        Stream::Warning => lf::stream::WARNING,
    }
}

pub fn result_frame(r: TaskReport) -> LinkOut {
    let (status, payload) = match r.outcome {
        Outcome::Value(b) => (lf::status::VALUE, b),
        Outcome::Error(b) => (lf::status::ERROR, b),
        Outcome::Failed { kind, message } => (status_of(kind), Bytes::from(message)),
    };
    LinkOut::Result {
        id: r.id as u32,
        status,
        output: r
            .output
            .into_iter()
            .map(|c| (stream_code(c.stream), c.bytes))
            .collect(),
        payload,
    }
}

fn na<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "NA".into())
}

/// The `INFO` text: counters, a blank line, a table of daemons.
pub fn info_text(i: &InfoReport) -> String {
    let mut s = String::new();
    for (k, v) in [
        ("connections", i.connections),
        ("cumulative", i.cumulative),
        ("awaiting", i.awaiting),
        ("executing", i.executing),
        ("completed", i.completed),
    ] {
        let _ = writeln!(s, "{k}\t{v}");
    }
    s.push('\n');
    s.push_str("id\tname\taddress\ttasks_done\tbusy_ms\tconnected_ms\tmemory_mb\ttask_timeout_ms\tmax_tasks\tkeep_state\tversion\n");
    for d in &i.daemons {
        let clean = |t: &str| t.replace(['\t', '\n'], " ");
        let _ = writeln!(
            s,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            d.id,
            clean(&d.name),
            clean(&d.address),
            d.tasks_done,
            na(d.busy_ms),
            d.connected_ms,
            d.limits.memory_bytes >> 20,
            na(d.limits.task_timeout_ms),
            na(d.limits.max_tasks),
            if d.limits.keep_state { "TRUE" } else { "FALSE" },
            clean(&d.version),
        );
    }
    s
}

fn to_link(m: Message) -> Option<LinkOut> {
    Some(match m {
        Message::Result(r) => result_frame(r),
        Message::EverywhereAck { id, daemons } => LinkOut::EverywhereAck {
            id: id as u32,
            daemons,
        },
        Message::Info(i) => LinkOut::Info(info_text(&i)),
        Message::Shutdown { reason } => {
            LinkOut::Notice(format!("the host is shutting down: {reason}"))
        }
        _ => return None,
    })
}

/// Read one whole frame: `Ok(None)` at a clean end of input.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u64,
) -> Result<Option<(u8, Bytes)>, Oversize> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Oversize::Broken(e.to_string())),
    }
    let len = u32::from_le_bytes(len) as u64;
    if len == 0 {
        return Err(Oversize::Broken("zero-length frame".into()));
    }
    if len > max {
        return Err(Oversize::Skip(len));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)
        .await
        .map_err(|e| Oversize::Broken(format!("short frame: {e}")))?;
    let ty = buf[0];
    Ok(Some((ty, Bytes::from(buf).slice(1..))))
}

enum Oversize {
    /// A frame of this many bytes is too large: read its header, skip it.
    Skip(u64),
    Broken(String),
}

/// Read and answer a frame over the bound without holding it: the task's id
/// gets a 'rejected' result and the link stays usable.
async fn skip_oversized<R: AsyncRead + Unpin>(
    r: &mut R,
    len: u64,
    max: u64,
) -> Result<Option<LinkOut>, String> {
    let head_len = (lf::TASK_HEADER as u64).min(len);
    let mut head = vec![0u8; head_len as usize];
    r.read_exact(&mut head)
        .await
        .map_err(|e| format!("short frame: {e}"))?;
    let skipped = tokio::io::copy(&mut r.take(len - head_len), &mut tokio::io::sink())
        .await
        .map_err(|e| format!("short frame: {e}"))?;
    if skipped != len - head_len {
        return Err("short frame".into());
    }
    let message = format!("the message of {len} bytes exceeds the link's bound of {max} bytes");
    Ok(match head[..] {
        [ty, a, b, c, d, ..] if ty == lf::TASK || ty == lf::EVERYWHERE => Some(LinkOut::Result {
            id: u32::from_le_bytes([a, b, c, d]),
            status: lf::status::REJECTED,
            output: vec![],
            payload: Bytes::from(message),
        }),
        _ => Some(LinkOut::Notice(message)),
    })
}

/// Serve the link until the R side ends it. The writer keeps running after
/// this returns, until the events end: await the handle to flush it.
pub async fn serve<R, W>(
    r: R,
    w: W,
    ends: LinkEnds,
    ready: Option<String>,
    max_payload: u64,
) -> (LinkEnd, tokio::task::JoinHandle<()>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (direct_tx, direct_rx) = mpsc::unbounded_channel::<LinkOut>();
    if let Some(text) = ready {
        let _ = direct_tx.send(LinkOut::Ready(text));
    }
    let writer = tokio::spawn(write_loop(w, ends.events, direct_rx));
    let mut reader = tokio::io::BufReader::with_capacity(64 << 10, r);
    let max = max_payload + lf::TASK_HEADER as u64;
    let end = loop {
        let (ty, body) = match read_frame(&mut reader, max).await {
            Ok(Some(f)) => f,
            Ok(None) => break LinkEnd::Eof,
            Err(Oversize::Broken(e)) => break LinkEnd::Broken(e),
            Err(Oversize::Skip(len)) => match skip_oversized(&mut reader, len, max_payload).await {
                Ok(reply) => {
                    if let Some(reply) = reply {
                        let _ = direct_tx.send(reply);
                    }
                    continue;
                }
                Err(e) => break LinkEnd::Broken(e),
            },
        };
        let m = match lf::parse_in(ty, &body) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("client link: bad message: {e}");
                let _ = direct_tx.send(LinkOut::Notice(format!(
                    "bad message of type 0x{ty:02x}: {e}"
                )));
                continue;
            }
        };
        let sent = match m {
            LinkIn::Task {
                id,
                timeout_ms,
                payload,
            } => (ends.requests)(Message::Task(Task {
                id: id as u64,
                payload,
                timeout_ms: (timeout_ms > 0).then_some(timeout_ms as u64),
            })),
            LinkIn::Cancel { id } => (ends.requests)(Message::Cancel { id: id as u64 }),
            LinkIn::Everywhere { id, payload } => {
                (ends.requests)(Message::Everywhere(Everywhere {
                    id: id as u64,
                    payload,
                }))
            }
            LinkIn::Info => (ends.requests)(Message::Status),
            LinkIn::Ping(n) => direct_tx.send(LinkOut::Pong(n)).is_ok(),
            LinkIn::Shutdown => break LinkEnd::Shutdown,
            LinkIn::Hello { .. } => direct_tx
                .send(LinkOut::Notice(
                    "hello is only expected first on a socket link".into(),
                ))
                .is_ok(),
        };
        if !sent {
            break LinkEnd::Broken("the host is gone".into());
        }
    };
    (end, writer)
}

async fn write_loop<W: AsyncWrite + Unpin>(
    w: W,
    mut events: mpsc::UnboundedReceiver<Out>,
    mut direct: mpsc::UnboundedReceiver<LinkOut>,
) {
    let mut w = BufWriter::with_capacity(64 << 10, w);
    let mut direct_open = true;
    loop {
        let frame = tokio::select! {
            biased;
            d = direct.recv(), if direct_open => match d {
                Some(o) => lf::encode_out(&o),
                None => { direct_open = false; continue; }
            },
            e = events.recv() => match e {
                Some(Out::Msg(m)) => match to_link(m) {
                    Some(o) => lf::encode_out(&o),
                    None => continue,
                },
                Some(Out::Close(_)) | None => break,
            },
        };
        if w.write_all(&frame).await.is_err() {
            return;
        }
        // Flush when nothing else is ready, so bursts share a write.
        if direct.is_empty() && events.is_empty() && w.flush().await.is_err() {
            return;
        }
    }
    // Whatever the R side did not get yet.
    while let Ok(o) = direct.try_recv() {
        let _ = w.write_all(&lf::encode_out(&o)).await;
    }
    let _ = w.flush().await;
}

/// Accept one link connection on a loopback socket: it must open with a
/// `HELLO` carrying `token`. Others are told why and closed.
pub async fn accept_socket(
    listener: &tokio::net::TcpListener,
    token: &str,
) -> anyhow::Result<(
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
)> {
    loop {
        let (mut s, addr) = listener.accept().await?;
        let _ = s.set_nodelay(true);
        let hello =
            tokio::time::timeout(std::time::Duration::from_secs(10), read_frame(&mut s, 4096))
                .await;
        let verdict = match hello {
            Ok(Ok(Some((ty, body)))) => match lf::parse_in(ty, &body) {
                Ok(LinkIn::Hello { version, token: t }) if version == lf::LINK_VERSION => {
                    if crate::token::matches(token, &t) {
                        Ok(())
                    } else {
                        Err("wrong token".to_string())
                    }
                }
                Ok(LinkIn::Hello { version, .. }) => Err(format!(
                    "link version mismatch: R speaks {version}, hako speaks {}",
                    lf::LINK_VERSION
                )),
                _ => Err("expected a hello".into()),
            },
            Ok(_) => Err("expected a hello".into()),
            Err(_) => Err("no hello in time".into()),
        };
        match verdict {
            Ok(()) => {
                let (r, w) = s.into_split();
                return Ok((r, w));
            }
            Err(reason) => {
                tracing::warn!(%addr, %reason, "client link refused");
                let _ = s.write_all(&lf::encode_out(&LinkOut::Notice(reason))).await;
            }
        }
    }
}

/// Write `text` to `path` readable by its owner only, atomically.
pub fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
