//! Serving the client link (see `linkframe.rs`) to an R session, over the
//! host's stdin/stdout or one loopback socket guarded by a token. The same
//! code serves `hako client`, where the requests go to a remote host.

use crate::linkframe::{self as lf, LinkIn, LinkOut};
use crate::peer::Out;
use crate::protocol::{
    Everywhere, FailKind, InfoReport, Message, Outcome, Stream, Task, TaskReport,
};
use bytes::Bytes;
use std::fmt::Write as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

/// The side the link forwards to (the host's dispatcher, or a remote host
/// for `hako client`): where its requests go and its events come from.
pub struct Upstream {
    /// Submit a client message (task, cancel, everywhere, status).
    pub requests: Box<dyn Fn(Message) -> bool + Send + Sync>,
    /// Results, acks, info; `Out::Close` or the channel closing ends the link.
    pub events: mpsc::UnboundedReceiver<Out>,
}

/// Why the link stopped reading from the R side.
#[derive(Debug, PartialEq, Eq)]
pub enum EndReason {
    /// End of input: the R session closed the link or exited.
    Eof,
    /// A `SHUTDOWN` message.
    Shutdown,
    /// The framing broke; nothing more can be read.
    Broken(String),
}

/// The RESULT status of a failure: the one place a [`FailKind`] becomes a
/// link status (`host/PROTOCOL.md`'s RESULT table is the reference, and a
/// test below checks this against it).
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
        FailKind::Refused => lf::status::REFUSED,
        FailKind::Disagreed => lf::status::DISAGREED,
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
    s.push_str("id\tname\taddress\ttasks_done\tbusy_ms\tconnected_ms\tmemory_mb\ttask_timeout_ms\tmax_tasks\tkeep_state\tversion\tfailures\tdisagreements\n");
    for d in &i.daemons {
        // Names and versions come from daemons: no tabs or newlines (the
        // table's syntax), no terminal escapes.
        let clean = |t: &str| -> String {
            t.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        };
        let _ = writeln!(
            s,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
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
            d.failures,
            d.disagreements,
        );
    }
    s
}

/// A link TASK (replicas 0: the host's default) or TASK_REPLICAS as the
/// wire's Task; a timeout of 0 is none.
fn task(id: u32, timeout_ms: u32, replicas: u32, payload: Bytes) -> Message {
    Message::Task(Task {
        id: u64::from(id),
        payload,
        timeout_ms: (timeout_ms > 0).then_some(u64::from(timeout_ms)),
        replicas,
        user: String::new(),
    })
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
        // Why `hako client`'s host connection ended (client.rs).
        Message::Refused { reason } => LinkOut::Notice(reason),
        _ => return None,
    })
}

/// Read one whole frame: `Ok(None)` at a clean end of input.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u64,
) -> Result<Option<(u8, Bytes)>, ReadError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(ReadError::Broken(e.to_string())),
    }
    let len = u32::from_le_bytes(len) as u64;
    if len == 0 {
        return Err(ReadError::Broken("zero-length frame".into()));
    }
    if len > max {
        return Err(ReadError::TooLarge(len));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)
        .await
        .map_err(|e| ReadError::Broken(format!("short frame: {e}")))?;
    let ty = buf[0];
    Ok(Some((ty, Bytes::from(buf).slice(1..))))
}

/// Why [`read_frame`] returned no frame (a clean end of input is `Ok(None)`).
enum ReadError {
    /// A frame of this many bytes is over the bound: read its header, skip
    /// it, answer for its id; the link stays usable.
    TooLarge(u64),
    /// I/O failed or the framing broke: nothing more can be read.
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
        [ty, a, b, c, d, ..] if [lf::TASK, lf::TASK_REPLICAS, lf::EVERYWHERE].contains(&ty) => {
            Some(LinkOut::Result {
                id: u32::from_le_bytes([a, b, c, d]),
                status: lf::status::REJECTED,
                output: vec![],
                payload: Bytes::from(message),
            })
        }
        _ => Some(LinkOut::Notice(message)),
    })
}

/// Serve the link until the R side ends it. The writer keeps running after
/// this returns, until the events end: await the handle to flush it.
pub async fn serve<R, W>(
    r: R,
    w: W,
    upstream: Upstream,
    ready: Option<String>,
    max_payload: u64,
) -> (EndReason, tokio::task::JoinHandle<()>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (direct_tx, direct_rx) = mpsc::unbounded_channel::<LinkOut>();
    if let Some(text) = ready {
        let _ = direct_tx.send(LinkOut::Ready(text));
    }
    let writer = tokio::spawn(write_loop(w, upstream.events, direct_rx));
    let mut reader = tokio::io::BufReader::with_capacity(64 << 10, r);
    let max = max_payload + lf::TASK_HEADER_MAX as u64;
    let end = loop {
        let (ty, body) = match read_frame(&mut reader, max).await {
            Ok(Some(f)) => f,
            Ok(None) => break EndReason::Eof,
            Err(ReadError::Broken(e)) => break EndReason::Broken(e),
            Err(ReadError::TooLarge(len)) => {
                match skip_oversized(&mut reader, len, max_payload).await {
                    Ok(reply) => {
                        if let Some(reply) = reply {
                            let _ = direct_tx.send(reply);
                        }
                        continue;
                    }
                    Err(e) => break EndReason::Broken(e),
                }
            }
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
            } => (upstream.requests)(task(id, timeout_ms, 0, payload)),
            LinkIn::TaskReplicas {
                id,
                timeout_ms,
                replicas,
                payload,
            } => (upstream.requests)(task(id, timeout_ms, replicas, payload)),
            LinkIn::Cancel { id } => (upstream.requests)(Message::Cancel { id: id as u64 }),
            LinkIn::Everywhere { id, payload } => {
                (upstream.requests)(Message::Everywhere(Everywhere {
                    id: id as u64,
                    payload,
                }))
            }
            LinkIn::Info => (upstream.requests)(Message::Status),
            LinkIn::Ping(n) => direct_tx.send(LinkOut::Pong(n)).is_ok(),
            LinkIn::Shutdown => break EndReason::Shutdown,
            LinkIn::Hello { .. } => direct_tx
                .send(LinkOut::Notice(
                    "hello is only expected first on a socket link".into(),
                ))
                .is_ok(),
        };
        if !sent {
            break EndReason::Broken("the host is gone".into());
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
        // A counted result's ticket is dropped once its frame is written.
        let (frame, ticket) = tokio::select! {
            biased;
            d = direct.recv(), if direct_open => match d {
                Some(o) => (lf::encode_out(&o), None),
                None => { direct_open = false; continue; }
            },
            e = events.recv() => match e {
                Some(Out::Msg(m)) => match to_link(m) {
                    Some(o) => (lf::encode_out(&o), None),
                    None => continue,
                },
                Some(Out::Counted(m, t)) => match to_link(m) {
                    Some(o) => (lf::encode_out(&o), Some(t)),
                    None => continue,
                },
                Some(Out::Close(_)) | None => break,
            },
        };
        if w.write_all(&frame).await.is_err() {
            return;
        }
        drop(frame);
        drop(ticket);
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

/// Link handshakes served at once; a newcomer beyond it displaces the
/// oldest (so a local user's silent sockets cannot hold the R session out).
const MAX_LINK_HANDSHAKES: usize = 32;
/// How long a link connection has to present its hello.
const LINK_HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accept one link connection on a loopback socket: it must open with a
/// `HELLO` carrying `token`. Handshakes are served concurrently and the
/// first connection with the right token wins; others are told why and
/// closed, and a silent one delays nobody.
pub async fn accept_socket(
    listener: &tokio::net::TcpListener,
    token: &str,
) -> anyhow::Result<(
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
)> {
    let token: std::sync::Arc<str> = token.into();
    let mut handshakes = tokio::task::JoinSet::new();
    let mut order: std::collections::VecDeque<tokio::task::AbortHandle> = Default::default();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let (s, addr) = match r {
                    Ok(v) => v,
                    Err(e) => {
                        // Out of descriptors, a connection aborted: not fatal.
                        tracing::warn!("client link: accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = s.set_nodelay(true);
                order.retain(|h| !h.is_finished());
                if order.len() >= MAX_LINK_HANDSHAKES {
                    if let Some(oldest) = order.pop_front() {
                        oldest.abort();
                    }
                }
                let token = token.clone();
                order.push_back(handshakes.spawn(link_hello(s, addr, token)));
            }
            Some(done) = handshakes.join_next() => {
                if let Ok(Some(s)) = done {
                    // Dropping the set ends the other handshakes.
                    let (r, w) = s.into_split();
                    return Ok((r, w));
                }
            }
        }
    }
}

/// One connection's hello: the stream when it carries the token.
async fn link_hello(
    mut s: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    token: std::sync::Arc<str>,
) -> Option<tokio::net::TcpStream> {
    let hello = tokio::time::timeout(LINK_HELLO_TIMEOUT, read_frame(&mut s, 4096)).await;
    let verdict = match hello {
        Ok(Ok(Some((ty, body)))) => match lf::parse_in(ty, &body) {
            Ok(LinkIn::Hello { version, token: t }) if version == lf::LINK_VERSION => {
                if crate::token::matches(&token, &t) {
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
        Ok(()) => Some(s),
        Err(reason) => {
            tracing::warn!(%addr, %reason, "client link refused");
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                s.write_all(&lf::encode_out(&LinkOut::Notice(reason))),
            )
            .await;
            None
        }
    }
}

/// Write `text` to `path`, readable by its owner only, atomically and
/// without following links: refused unless `path`'s directory belongs to
/// this user and nobody else may write to it, and unless `path` is absent
/// or a regular file. The text goes to a fresh file with a random name
/// (created exclusively, never through a link), then is renamed into place.
pub fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind, Write};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let refuse = |why: String| Error::new(ErrorKind::PermissionDenied, why);
    let name = path
        .file_name()
        .ok_or_else(|| refuse("the link file needs a file name".into()))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let dir = std::fs::metadata(&parent)?;
    if !dir.is_dir() || dir.uid() != me || dir.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "{} must be a directory of this user that others cannot write to (the link file holds its tokens)",
            parent.display()
        )));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => {
            return Err(refuse(format!(
                "{} exists and is not a regular file (a link?)",
                path.display()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let suffix = crate::token::generate().map_err(|e| Error::other(e.to_string()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", &suffix[..suffix.len().min(16)]));
    let tmp = parent.join(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let written = f
        .write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DaemonRow;

    #[test]
    fn info_shows_daemon_text_without_control_characters() {
        let i = InfoReport {
            daemons: vec![DaemonRow {
                name: "a\tb\nc\x1b]0;pwned\x07".into(),
                version: "1\x1b[2J".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let t = info_text(&i);
        let row = t.lines().last().unwrap();
        assert!(!row.contains(['\x1b', '\x07']), "{row:?}");
        assert_eq!(row.split('\t').count(), 13, "{row:?}");
    }

    /// Every failure kind, listed so that adding one fails to compile here.
    fn all_fail_kinds() -> Vec<FailKind> {
        use FailKind::*;
        let all = vec![
            Timeout,
            Cancelled,
            ConnectionReset,
            MemoryLimit,
            OutputLimit,
            Crashed,
            Shutdown,
            Rejected,
            Refused,
            Disagreed,
        ];
        for k in &all {
            match k {
                Timeout | Cancelled | ConnectionReset | MemoryLimit | OutputLimit | Crashed
                | Shutdown | Rejected | Refused | Disagreed => {}
            }
        }
        all
    }

    /// PROTOCOL.md's RESULT table as (status, Rust name) rows.
    fn documented_statuses() -> Vec<(u8, String)> {
        let doc = include_str!("../PROTOCOL.md");
        let table = doc
            .split_once("RESULT `status` and `payload`")
            .expect("PROTOCOL.md has the RESULT status table")
            .1;
        table
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let code = cells.get(1)?.parse().ok()?;
                Some((code, cells.get(2)?.trim_matches('`').to_string()))
            })
            .collect()
    }

    #[test]
    fn result_statuses_are_the_ones_protocol_md_documents() {
        let mut ours = vec![
            (lf::status::VALUE, "Outcome::Value".to_string()),
            (lf::status::ERROR, "Outcome::Error".to_string()),
        ];
        ours.extend(
            all_fail_kinds()
                .into_iter()
                .map(|k| (status_of(k), format!("FailKind::{k:?}"))),
        );
        ours.sort();
        let documented = documented_statuses();
        assert_eq!(ours, documented);
        // each status once, and the link's oversize answer is one of them
        assert!(documented.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(status_of(FailKind::Rejected), lf::status::REJECTED);
    }
}
