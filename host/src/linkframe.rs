//! The client link's framing: what an R session (with nothing but base R's
//! `readBin`/`writeBin`) and `hako host`/`hako client` exchange over a pipe
//! or a loopback socket.
//!
//! Every message is `len:u32le type:u8 body`, where `len` counts the type
//! byte and the body. All integers are little-endian; ids are u32 (R reads
//! them as integers, so R keeps them below 2^31). Task payloads and values are
//! R's own `serialize()` bytes, untouched. See `host/PROTOCOL.md`.
//!
//! Bytes only (no I/O): the host, `hako bench` and the tests share it.

use bytes::Bytes;

/// Version of this framing, sent in `HELLO` and `READY`.
pub const LINK_VERSION: u32 = 1;

// R -> hako
pub const HELLO: u8 = 0x00;
pub const TASK: u8 = 0x01;
pub const CANCEL: u8 = 0x02;
pub const EVERYWHERE: u8 = 0x03;
pub const INFO: u8 = 0x04;
pub const PING: u8 = 0x05;
pub const SHUTDOWN: u8 = 0x06;
/// A TASK with the number of replicas to run (`.replicas = k`).
pub const TASK_REPLICAS: u8 = 0x07;
// hako -> R
pub const READY: u8 = 0x80;
pub const RESULT: u8 = 0x81;
pub const EVERYWHERE_ACK: u8 = 0x82;
pub const INFO_REPLY: u8 = 0x83;
pub const PONG: u8 = 0x85;
pub const NOTICE: u8 = 0x8F;

/// `RESULT` status byte.
pub mod status {
    /// Payload: `serialize()` of the value.
    pub const VALUE: u8 = 0;
    /// Payload: `serialize()` of a `hakoError` condition value.
    pub const ERROR: u8 = 1;
    // Payload of the rest: a UTF-8 message.
    pub const TIMEOUT: u8 = 2;
    pub const CANCELLED: u8 = 3;
    pub const CONNECTION_RESET: u8 = 4;
    pub const MEMORY_LIMIT: u8 = 5;
    pub const OUTPUT_LIMIT: u8 = 6;
    pub const CRASHED: u8 = 7;
    pub const SHUTDOWN: u8 = 8;
    pub const REJECTED: u8 = 9;
    /// The result failed the verifier: never forwarded (message says why).
    pub const REFUSED: u8 = 10;
    /// The task's replicas gave no result k times (message says what).
    pub const DISAGREED: u8 = 11;
}

/// Output chunk stream codes.
pub mod stream {
    pub const STDOUT: u8 = 0;
    pub const STDERR: u8 = 1;
    pub const MESSAGE: u8 = 2;
    pub const WARNING: u8 = 3;
}

/// Bytes of a task or everywhere frame before its payload (type, id,
/// timeout): read even from an oversized frame, to answer for its id.
pub const TASK_HEADER: usize = 1 + 4 + 4;
/// The largest such header: TASK_REPLICAS's, with its replica count.
pub const TASK_HEADER_MAX: usize = TASK_HEADER + 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkIn {
    /// Required first message on a socket link: `"HAKO" version:u32 token`.
    Hello {
        version: u32,
        token: String,
    },
    /// `id:u32 timeout_ms:u32 (0 = none) payload`.
    Task {
        id: u32,
        timeout_ms: u32,
        payload: Bytes,
    },
    /// `id:u32 timeout_ms:u32 replicas:u32 payload`: a task to run on
    /// `replicas` distinct daemons (0: the host's default, as TASK).
    TaskReplicas {
        id: u32,
        timeout_ms: u32,
        replicas: u32,
        payload: Bytes,
    },
    Cancel {
        id: u32,
    },
    /// `id:u32 payload`.
    Everywhere {
        id: u32,
        payload: Bytes,
    },
    Info,
    Ping(u32),
    Shutdown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkOut {
    /// `key<TAB>value` lines: version, max_payload, urls, daemon command...
    Ready(String),
    /// `id:u32 status:u8 nchunks:u32 (stream:u8 len:u32 bytes)* payload`.
    Result {
        id: u32,
        status: u8,
        output: Vec<(u8, Bytes)>,
        payload: Bytes,
    },
    EverywhereAck {
        id: u32,
        daemons: u32,
    },
    /// Counters as `name<TAB>value` lines, a blank line, then a
    /// tab-separated table of daemons with a header line.
    Info(String),
    Pong(u32),
    /// Something the R side should log (a refused frame, ...).
    Notice(String),
}

fn frame(ty: u8, body_len: usize, fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body_len);
    out.extend_from_slice(&((1 + body_len) as u32).to_le_bytes());
    out.push(ty);
    fill(&mut out);
    debug_assert_eq!(out.len(), 5 + body_len);
    out
}

pub fn encode_in(m: &LinkIn) -> Vec<u8> {
    match m {
        LinkIn::Hello { version, token } => frame(HELLO, 8 + token.len(), |o| {
            o.extend_from_slice(b"HAKO");
            o.extend_from_slice(&version.to_le_bytes());
            o.extend_from_slice(token.as_bytes());
        }),
        LinkIn::Task {
            id,
            timeout_ms,
            payload,
        } => frame(TASK, 8 + payload.len(), |o| {
            o.extend_from_slice(&id.to_le_bytes());
            o.extend_from_slice(&timeout_ms.to_le_bytes());
            o.extend_from_slice(payload);
        }),
        LinkIn::TaskReplicas {
            id,
            timeout_ms,
            replicas,
            payload,
        } => frame(TASK_REPLICAS, 12 + payload.len(), |o| {
            o.extend_from_slice(&id.to_le_bytes());
            o.extend_from_slice(&timeout_ms.to_le_bytes());
            o.extend_from_slice(&replicas.to_le_bytes());
            o.extend_from_slice(payload);
        }),
        LinkIn::Cancel { id } => frame(CANCEL, 4, |o| o.extend_from_slice(&id.to_le_bytes())),
        LinkIn::Everywhere { id, payload } => frame(EVERYWHERE, 4 + payload.len(), |o| {
            o.extend_from_slice(&id.to_le_bytes());
            o.extend_from_slice(payload);
        }),
        LinkIn::Info => frame(INFO, 0, |_| {}),
        LinkIn::Ping(n) => frame(PING, 4, |o| o.extend_from_slice(&n.to_le_bytes())),
        LinkIn::Shutdown => frame(SHUTDOWN, 0, |_| {}),
    }
}

pub fn encode_out(m: &LinkOut) -> Vec<u8> {
    match m {
        LinkOut::Ready(t) => frame(READY, t.len(), |o| o.extend_from_slice(t.as_bytes())),
        LinkOut::Result {
            id,
            status,
            output,
            payload,
        } => {
            let chunks: usize = output.iter().map(|(_, b)| 5 + b.len()).sum();
            frame(RESULT, 9 + chunks + payload.len(), |o| {
                o.extend_from_slice(&id.to_le_bytes());
                o.push(*status);
                o.extend_from_slice(&(output.len() as u32).to_le_bytes());
                for (s, b) in output {
                    o.push(*s);
                    o.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    o.extend_from_slice(b);
                }
                o.extend_from_slice(payload);
            })
        }
        LinkOut::EverywhereAck { id, daemons } => frame(EVERYWHERE_ACK, 8, |o| {
            o.extend_from_slice(&id.to_le_bytes());
            o.extend_from_slice(&daemons.to_le_bytes());
        }),
        LinkOut::Info(t) => frame(INFO_REPLY, t.len(), |o| o.extend_from_slice(t.as_bytes())),
        LinkOut::Pong(n) => frame(PONG, 4, |o| o.extend_from_slice(&n.to_le_bytes())),
        LinkOut::Notice(t) => frame(NOTICE, t.len(), |o| o.extend_from_slice(t.as_bytes())),
    }
}

/// A cursor over a body that reports, instead of panicking, when it is short.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() < n {
            return Err(format!(
                "body too short: needed {n} more bytes, have {}",
                self.b.len()
            ));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.b)
    }
    fn end(&self) -> Result<(), String> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(format!("{} unexpected trailing bytes", self.b.len()))
        }
    }
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "text is not UTF-8".to_string())
}

/// Parse an R -> hako message from its type byte and body. Payloads are
/// slices of `body`, not copies.
pub fn parse_in(ty: u8, body: &Bytes) -> Result<LinkIn, String> {
    let mut r = Reader { b: body };
    let m = match ty {
        HELLO => {
            if r.take(4)? != b"HAKO" {
                return Err("hello does not start with HAKO".into());
            }
            let version = r.u32()?;
            LinkIn::Hello {
                version,
                token: text(r.rest())?,
            }
        }
        TASK => {
            let id = r.u32()?;
            let timeout_ms = r.u32()?;
            r.rest();
            LinkIn::Task {
                id,
                timeout_ms,
                payload: body.slice(8..),
            }
        }
        TASK_REPLICAS => {
            let id = r.u32()?;
            let timeout_ms = r.u32()?;
            let replicas = r.u32()?;
            r.rest();
            LinkIn::TaskReplicas {
                id,
                timeout_ms,
                replicas,
                payload: body.slice(12..),
            }
        }
        CANCEL => LinkIn::Cancel { id: r.u32()? },
        EVERYWHERE => {
            let id = r.u32()?;
            r.rest();
            LinkIn::Everywhere {
                id,
                payload: body.slice(4..),
            }
        }
        INFO => LinkIn::Info,
        PING => LinkIn::Ping(r.u32()?),
        SHUTDOWN => LinkIn::Shutdown,
        t => return Err(format!("unknown message type 0x{t:02x}")),
    };
    r.end()?;
    Ok(m)
}

/// Parse a hako -> R message (used by tests, the benchmark and `hako client`).
pub fn parse_out(ty: u8, body: &[u8]) -> Result<LinkOut, String> {
    let mut r = Reader { b: body };
    let m = match ty {
        READY => LinkOut::Ready(text(r.rest())?),
        RESULT => {
            let id = r.u32()?;
            let status = r.u8()?;
            let n = r.u32()?;
            let mut output = Vec::new();
            for _ in 0..n {
                let s = r.u8()?;
                let len = r.u32()? as usize;
                output.push((s, Bytes::copy_from_slice(r.take(len)?)));
            }
            LinkOut::Result {
                id,
                status,
                output,
                payload: Bytes::copy_from_slice(r.rest()),
            }
        }
        EVERYWHERE_ACK => LinkOut::EverywhereAck {
            id: r.u32()?,
            daemons: r.u32()?,
        },
        INFO_REPLY => LinkOut::Info(text(r.rest())?),
        PONG => LinkOut::Pong(r.u32()?),
        NOTICE => LinkOut::Notice(text(r.rest())?),
        t => return Err(format!("unknown message type 0x{t:02x}")),
    };
    r.end()?;
    Ok(m)
}

/// Split a complete frame (with its length prefix) into type and body.
#[cfg(any(test, feature = "test-support"))]
pub fn split(frame: &[u8]) -> Result<(u8, &[u8]), String> {
    if frame.len() < 5 {
        return Err("frame shorter than its header".into());
    }
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    if len == 0 || frame.len() != 4 + len {
        return Err("length prefix does not match the frame".into());
    }
    Ok((frame[4], &frame[5..]))
}

/// `key<TAB>value` lines, as `READY` carries them.
pub fn parse_kv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips() {
        let ins = [
            LinkIn::Hello {
                version: 1,
                token: "abc".into(),
            },
            LinkIn::Task {
                id: 5,
                timeout_ms: 100,
                payload: Bytes::from_static(b"X\n"),
            },
            LinkIn::TaskReplicas {
                id: 7,
                timeout_ms: 0,
                replicas: 3,
                payload: Bytes::from_static(b"X\n"),
            },
            LinkIn::Cancel { id: 5 },
            LinkIn::Everywhere {
                id: 6,
                payload: Bytes::from_static(b"p"),
            },
            LinkIn::Info,
            LinkIn::Ping(3),
            LinkIn::Shutdown,
        ];
        for m in ins {
            let f = encode_in(&m);
            let (t, b) = split(&f).unwrap();
            assert_eq!(parse_in(t, &Bytes::copy_from_slice(b)).unwrap(), m);
        }
        let outs = [
            LinkOut::Ready("version\t1\n".into()),
            LinkOut::Result {
                id: 1,
                status: status::VALUE,
                output: vec![
                    (stream::STDOUT, Bytes::from_static(b"hi\n")),
                    (stream::WARNING, Bytes::new()),
                ],
                payload: Bytes::from_static(b"X\n"),
            },
            LinkOut::EverywhereAck { id: 2, daemons: 3 },
            LinkOut::Info("connections\t1\n".into()),
            LinkOut::Pong(4),
            LinkOut::Notice("n".into()),
        ];
        for m in outs {
            let f = encode_out(&m);
            let (t, b) = split(&f).unwrap();
            assert_eq!(parse_out(t, b).unwrap(), m);
        }
    }

    proptest! {
        #[test]
        fn random_bodies_never_panic(ty in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_in(ty, &Bytes::from(body.clone()));
            let _ = parse_out(ty, &body);
            let _ = split(&body);
        }
    }
}
