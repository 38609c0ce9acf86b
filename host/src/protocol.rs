//! The wire protocol between `hako host`, its daemons and its remote clients:
//! one message per binary WebSocket frame, `kind:u8` then a bincode body.
//!
//! The layout is explicit (a kind byte we choose, not bincode's enum index) so
//! that a frame's size bound can be chosen from its first byte before any of
//! it is decoded, and so that `Hello` starts with a fixed magic and version a
//! peer of another protocol version can still read and refuse cleanly.
//! See `host/PROTOCOL.md`.

use bincode::Options;
use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt;

/// Bumped on any incompatible change of a message body. 2: `Started`
/// (kind 14) and `FailKind::Refused`, which a version-1 peer cannot read.
/// 3: `EverywhereDone` (kind 15): a daemon reports each `everywhere()`
/// outcome, and runs that code once (not after every reset).
/// 4: package sets (kinds 16-19): a host announces its set's manifests to a
/// daemon right after the welcome, and serves the files it lacks.
/// 5: a `Task` carries `replicas` (client -> host) and `user` (host ->
/// daemon, for the volunteer's log).
pub const VERSION: u32 = 5;
/// First bytes of a `Hello` body.
pub const MAGIC: [u8; 4] = *b"HAKO";

/// Size bounds of a frame. Task payloads and results can be large; nothing
/// else needs to be, so everything else gets the small bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameLimits {
    /// Bound of control frames (hello, cancel, ping, ...), in bytes.
    pub control: u64,
    /// Bound of bulk frames (task, result, everywhere, info), in bytes.
    pub bulk: u64,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            control: 64 << 10,
            bulk: 256 << 20,
        }
    }
}

impl FrameLimits {
    /// The bound of a frame of this kind.
    pub fn bound(&self, kind: Kind) -> u64 {
        if kind.is_bulk() {
            self.bulk.max(self.control)
        } else {
            self.control
        }
    }
}

/// The first byte of every frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Hello = 0,
    Welcome = 1,
    Refused = 2,
    Task = 3,
    Result = 4,
    Cancel = 5,
    Everywhere = 6,
    EverywhereAck = 7,
    Status = 8,
    Info = 9,
    Ping = 10,
    Pong = 11,
    Shutdown = 12,
    Bye = 13,
    /// Daemon → host: evaluation of this task began (see `Message::Started`).
    Started = 14,
    /// Daemon → host: the outcome of one `Everywhere` (see
    /// `Message::EverywhereDone`).
    EverywhereDone = 15,
    /// Host → daemon, first after `Welcome`: the package set's manifests.
    PackageSet = 16,
    /// Daemon → host: send me this file of the set.
    PackageFetch = 17,
    /// Host → daemon: a piece of a file asked for.
    PackageData = 18,
    /// Daemon → host: the set is in place (or refused, and why).
    PackagesReady = 19,
}

impl Kind {
    pub const ALL: [Kind; 20] = [
        Kind::Hello,
        Kind::Welcome,
        Kind::Refused,
        Kind::Task,
        Kind::Result,
        Kind::Cancel,
        Kind::Everywhere,
        Kind::EverywhereAck,
        Kind::Status,
        Kind::Info,
        Kind::Ping,
        Kind::Pong,
        Kind::Shutdown,
        Kind::Bye,
        Kind::Started,
        Kind::EverywhereDone,
        Kind::PackageSet,
        Kind::PackageFetch,
        Kind::PackageData,
        Kind::PackagesReady,
    ];

    pub fn from_u8(b: u8) -> Option<Kind> {
        Kind::ALL.get(b as usize).copied()
    }

    /// Frames that carry R objects or tables and so get the large bound.
    pub fn is_bulk(self) -> bool {
        matches!(
            self,
            Kind::Task
                | Kind::Result
                | Kind::Everywhere
                | Kind::Info
                | Kind::EverywhereDone
                | Kind::PackageSet
                | Kind::PackageData
        )
    }
}

/// Who is knocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Runs tasks.
    Daemon,
    /// Submits tasks (an R session through `hako client`).
    Client,
}

/// The caps a volunteer set on its daemon; the host cannot raise them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonLimits {
    pub memory_bytes: u64,
    /// Upper bound of any task's evaluation time.
    pub task_timeout_ms: Option<u64>,
    /// The daemon leaves after this many tasks.
    pub max_tasks: Option<u64>,
    /// The daemon leaves after being idle this long.
    pub idle_time_ms: Option<u64>,
    /// The daemon leaves after this long in total.
    pub wall_time_ms: Option<u64>,
    /// State is kept between tasks (no reset).
    pub keep_state: bool,
    /// Largest task payload the daemon reads (its frame bound), so the host
    /// sends it nothing larger; `None`: only the host's bound applies.
    pub max_task_bytes: Option<u64>,
}

/// What the daemon can do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub hako_version: String,
    pub webr_version: String,
    /// Free-form feature names, for forward compatibility.
    pub features: Vec<String>,
}

/// First message of a connection, from the side that dialled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u32,
    pub body: HelloBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloBody {
    pub role: Role,
    /// The join token (daemons) or client token (clients).
    pub token: String,
    /// A name for logs and `info()`, chosen by the peer.
    pub name: String,
    /// Daemons only.
    pub limits: DaemonLimits,
    pub caps: Capabilities,
}

/// The host accepted the hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The connection's id at the host (the daemon id shown by `info()`).
    pub id: u64,
    pub hako_version: String,
    pub limits: FrameLimits,
    /// Each side pings this often and gives up on a silent peer after three.
    pub heartbeat_ms: u64,
}

/// Longest task timeout anyone honours (30 days): a peer's `timeout_ms`
/// beyond it (up to `u64::MAX`) is clamped, so deadlines never overflow.
pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3600 * 1000;

/// A peer-given timeout, clamped to [`MAX_TIMEOUT_MS`].
pub fn clamp_timeout_ms(ms: u64) -> u64 {
    ms.min(MAX_TIMEOUT_MS)
}

/// A task: R's `serialize()` bytes, in either form `host/PROTOCOL.md`
/// describes (`list(expr, args)`, or the R package's `list(packages, task)`);
/// only the daemon's sandbox reads them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: u64,
    pub payload: Bytes,
    /// Bound of the evaluation (not of the wait in the queue).
    pub timeout_ms: Option<u64>,
    /// Client -> host: run it on this many distinct daemons and compare
    /// (0: the host's default). Host -> daemon: 0.
    pub replicas: u32,
    /// Host -> daemon: the submitting user's name, for the volunteer's log.
    /// Client -> host: ignored (the host knows who the client is).
    pub user: String,
}

/// Where a piece of output came from: the runtime's own classification,
/// carried on the wire as is.
pub use hako_runtime::Stream;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    pub stream: Stream,
    pub bytes: Bytes,
}

/// Why a task has no R value. On the wire it is bincode's variant index, so
/// new kinds are appended; its client link status is `link::status_of`
/// (`host/PROTOCOL.md`'s RESULT table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailKind {
    /// Ran past its timeout (or the daemon's cap) and was stopped.
    Timeout,
    /// Cancelled by its client (queued or running).
    Cancelled,
    /// Its daemon was lost and the retries are spent.
    ConnectionReset,
    MemoryLimit,
    OutputLimit,
    /// R left the sandbox abnormally (trap, `quit()`), or the host side failed.
    Crashed,
    /// The host is shutting down.
    Shutdown,
    /// Not accepted (too large, duplicate id, no daemon could take it).
    Rejected,
    /// The daemon's value failed the result verifier (`verify.rs`); its
    /// bytes were dropped.
    Refused,
    /// Its replicas (`Task.replicas`) gave no result k times over: the
    /// message names the distinct results and the daemons behind each.
    Disagreed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// `serialize()` of the value.
    Value(Bytes),
    /// `serialize()` of a `hakoError`/`errorValue` object.
    Error(Bytes),
    Failed {
        kind: FailKind,
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    pub id: u64,
    pub outcome: Outcome,
    pub output: Vec<OutputChunk>,
}

/// Code that runs on every daemon, now and on those that join later, once:
/// a daemon keeps the state it leaves as the one its resets return to. A
/// task payload; each daemon reports its outcome (`EverywhereDone`), which
/// the host forwards to the client as a `Result` of the client's id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Everywhere {
    pub id: u64,
    pub payload: Bytes,
}

/// mirai-style counters plus a row per daemon.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoReport {
    /// Daemons connected now.
    pub connections: u64,
    /// Daemons ever connected.
    pub cumulative: u64,
    /// Tasks in the queue.
    pub awaiting: u64,
    /// Tasks running on a daemon.
    pub executing: u64,
    /// Tasks resolved (any outcome).
    pub completed: u64,
    pub daemons: Vec<DaemonRow>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonRow {
    pub id: u64,
    pub name: String,
    /// Peer address, or `local` for an in-process daemon.
    pub address: String,
    pub tasks_done: u64,
    /// Milliseconds the current task has run, if busy.
    pub busy_ms: Option<u64>,
    pub connected_ms: u64,
    pub limits: DaemonLimits,
    /// The daemon's hako version.
    pub version: String,
    /// Its record over all its connections (by name and volunteer): runs
    /// it failed, and replicas where its result lost to the agreed one.
    pub failures: u64,
    pub disagreements: u64,
}

/// The package set a host's daemons sandbox with: each package's manifest
/// (name, version, every file's sha256 and size). Empty: no packages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageOffer {
    pub packages: Vec<hako_runtime::packages::PackageManifest>,
}

/// A daemon asks for one file of the offered set: `package` indexes
/// `PackageOffer::packages`, `path` is a key of its manifest's files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageFetch {
    pub package: u32,
    pub path: String,
}

/// Bytes `offset..offset+bytes.len()` of a file asked for; the file's
/// chunks come in order, and the one with `last` ends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageData {
    pub package: u32,
    pub path: String,
    pub offset: u64,
    pub bytes: Bytes,
    pub last: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    Welcome(Welcome),
    Refused {
        reason: String,
    },
    Task(Task),
    Result(TaskReport),
    Cancel {
        id: u64,
    },
    Everywhere(Everywhere),
    EverywhereAck {
        id: u64,
        daemons: u32,
    },
    Status,
    Info(InfoReport),
    Ping(u64),
    Pong(u64),
    Shutdown {
        reason: String,
    },
    Bye {
        reason: String,
    },
    // A daemon began evaluating this task: from now on, losing the daemon
    // is charged to the task (retried once, then 'crashed its daemon').
    Started {
        id: u64,
    },
    /// A daemon ran the `Everywhere` of this id (as the host numbered it):
    /// its value, R error or failure, once per `Everywhere` it was sent.
    EverywhereDone(TaskReport),
    PackageSet(PackageOffer),
    PackageFetch(PackageFetch),
    PackageData(PackageData),
    /// `None`: the daemon's sandbox has the set; `Some(why)`: it refused
    /// the set and leaves.
    PackagesReady {
        refused: Option<String>,
    },
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::Welcome(_) => Kind::Welcome,
            Message::Refused { .. } => Kind::Refused,
            Message::Task(_) => Kind::Task,
            Message::Result(_) => Kind::Result,
            Message::Cancel { .. } => Kind::Cancel,
            Message::Everywhere(_) => Kind::Everywhere,
            Message::EverywhereAck { .. } => Kind::EverywhereAck,
            Message::Status => Kind::Status,
            Message::Info(_) => Kind::Info,
            Message::Ping(_) => Kind::Ping,
            Message::Pong(_) => Kind::Pong,
            Message::Shutdown { .. } => Kind::Shutdown,
            Message::Bye { .. } => Kind::Bye,
            Message::Started { .. } => Kind::Started,
            Message::EverywhereDone(_) => Kind::EverywhereDone,
            Message::PackageSet(_) => Kind::PackageSet,
            Message::PackageFetch(_) => Kind::PackageFetch,
            Message::PackageData(_) => Kind::PackageData,
            Message::PackagesReady { .. } => Kind::PackagesReady,
        }
    }
}

/// Why a frame was not accepted. Every variant closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Empty,
    UnknownKind(u8),
    Oversized {
        kind: Kind,
        len: u64,
        bound: u64,
    },
    BadMagic,
    /// A hello of another protocol version: refuse with a clear reason.
    VersionMismatch {
        theirs: u32,
    },
    Malformed {
        kind: Kind,
        detail: String,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty frame"),
            DecodeError::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            DecodeError::Oversized { kind, len, bound } => {
                write!(
                    f,
                    "{kind:?} frame of {len} bytes exceeds the bound of {bound} bytes"
                )
            }
            DecodeError::BadMagic => write!(f, "not a hako hello"),
            DecodeError::VersionMismatch { theirs } => {
                write!(
                    f,
                    "protocol version mismatch: peer speaks {theirs}, this hako speaks {VERSION}"
                )
            }
            DecodeError::Malformed { kind, detail } => {
                write!(f, "malformed {kind:?} frame: {detail}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// bincode with a size limit (so a length prefix cannot make it allocate
/// more than the frame holds) and no trailing bytes.
fn opts(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(limit)
        .reject_trailing_bytes()
}

fn put<T: Serialize>(out: &mut Vec<u8>, v: &T) {
    // Serializing these plain data types into a Vec cannot fail: no maps with
    // complex keys, no custom Serialize impls, no size limit on encode.
    opts(u64::MAX)
        .serialize_into(out, v)
        .expect("bincode encoding of protocol types is infallible")
}

/// Encode a message as one frame.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = vec![msg.kind() as u8];
    match msg {
        Message::Hello(h) => {
            out.extend_from_slice(&MAGIC);
            out.extend_from_slice(&h.version.to_le_bytes());
            put(&mut out, &h.body);
        }
        Message::Welcome(w) => put(&mut out, w),
        Message::Refused { reason } => put(&mut out, reason),
        Message::Task(t) => put(&mut out, t),
        Message::Result(r) | Message::EverywhereDone(r) => put(&mut out, r),
        Message::Cancel { id } | Message::Started { id } => put(&mut out, id),
        Message::Everywhere(e) => put(&mut out, e),
        Message::EverywhereAck { id, daemons } => put(&mut out, &(id, daemons)),
        Message::Status => {}
        Message::Info(i) => put(&mut out, i),
        Message::Ping(n) | Message::Pong(n) => put(&mut out, n),
        Message::Shutdown { reason } | Message::Bye { reason } => put(&mut out, reason),
        Message::PackageSet(o) => put(&mut out, o),
        Message::PackageFetch(f) => put(&mut out, f),
        Message::PackageData(d) => put(&mut out, d),
        Message::PackagesReady { refused } => put(&mut out, refused),
    }
    out
}

fn body<T: DeserializeOwned>(kind: Kind, bytes: &[u8]) -> Result<T, DecodeError> {
    opts(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|e| DecodeError::Malformed {
            kind,
            detail: e.to_string(),
        })
}

/// The kind of a frame and whether its size is within bounds, without
/// decoding it.
pub fn check(frame: &[u8], limits: &FrameLimits) -> Result<Kind, DecodeError> {
    let first = *frame.first().ok_or(DecodeError::Empty)?;
    let kind = Kind::from_u8(first).ok_or(DecodeError::UnknownKind(first))?;
    let len = frame.len() as u64;
    let bound = limits.bound(kind);
    if len > bound {
        return Err(DecodeError::Oversized { kind, len, bound });
    }
    Ok(kind)
}

/// Decode one frame. Never panics, whatever the bytes.
pub fn decode(frame: &[u8], limits: &FrameLimits) -> Result<Message, DecodeError> {
    let kind = check(frame, limits)?;
    let rest = &frame[1..];
    Ok(match kind {
        Kind::Hello => {
            if rest.len() < 8 || rest[..4] != MAGIC {
                return Err(DecodeError::BadMagic);
            }
            let mut v = [0u8; 4];
            v.copy_from_slice(&rest[4..8]);
            let version = u32::from_le_bytes(v);
            if version != VERSION {
                return Err(DecodeError::VersionMismatch { theirs: version });
            }
            Message::Hello(Hello {
                version,
                body: body(kind, &rest[8..])?,
            })
        }
        Kind::Welcome => Message::Welcome(body(kind, rest)?),
        Kind::Refused => Message::Refused {
            reason: body(kind, rest)?,
        },
        Kind::Task => Message::Task(body(kind, rest)?),
        Kind::Result => Message::Result(body(kind, rest)?),
        Kind::EverywhereDone => Message::EverywhereDone(body(kind, rest)?),
        Kind::Cancel => Message::Cancel {
            id: body(kind, rest)?,
        },
        Kind::Everywhere => Message::Everywhere(body(kind, rest)?),
        Kind::EverywhereAck => {
            let (id, daemons) = body(kind, rest)?;
            Message::EverywhereAck { id, daemons }
        }
        Kind::Status => {
            if !rest.is_empty() {
                return Err(DecodeError::Malformed {
                    kind,
                    detail: "unexpected body".into(),
                });
            }
            Message::Status
        }
        Kind::Info => Message::Info(body(kind, rest)?),
        Kind::Ping => Message::Ping(body(kind, rest)?),
        Kind::Pong => Message::Pong(body(kind, rest)?),
        Kind::Shutdown => Message::Shutdown {
            reason: body(kind, rest)?,
        },
        Kind::Bye => Message::Bye {
            reason: body(kind, rest)?,
        },
        Kind::Started => Message::Started {
            id: body(kind, rest)?,
        },
        Kind::PackageSet => Message::PackageSet(body(kind, rest)?),
        Kind::PackageFetch => Message::PackageFetch(body(kind, rest)?),
        Kind::PackageData => Message::PackageData(body(kind, rest)?),
        Kind::PackagesReady => Message::PackagesReady {
            refused: body(kind, rest)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello(Hello {
                version: VERSION,
                body: HelloBody {
                    role: Role::Daemon,
                    token: "t".repeat(64),
                    name: "d1".into(),
                    limits: DaemonLimits {
                        memory_bytes: 1 << 30,
                        task_timeout_ms: Some(5000),
                        max_tasks: None,
                        idle_time_ms: Some(1),
                        wall_time_ms: None,
                        keep_state: true,
                        max_task_bytes: Some(128 << 20),
                    },
                    caps: Capabilities {
                        hako_version: "0.1.0".into(),
                        webr_version: "0.6.0".into(),
                        features: vec!["everywhere".into()],
                    },
                },
            }),
            Message::Welcome(Welcome {
                id: 7,
                hako_version: "0.1.0".into(),
                limits: FrameLimits::default(),
                heartbeat_ms: 15000,
            }),
            Message::Refused {
                reason: "no".into(),
            },
            Message::Task(Task {
                id: u64::MAX,
                payload: Bytes::from_static(b"X\n\0\0"),
                timeout_ms: Some(1),
                replicas: 0,
                user: String::new(),
            }),
            Message::Result(TaskReport {
                id: 1,
                outcome: Outcome::Value(Bytes::from_static(b"v")),
                output: vec![OutputChunk {
                    stream: Stream::Warning,
                    bytes: Bytes::from_static(b"w"),
                }],
            }),
            Message::Result(TaskReport {
                id: 2,
                outcome: Outcome::Failed {
                    kind: FailKind::ConnectionReset,
                    message: "lost".into(),
                },
                output: vec![],
            }),
            Message::Cancel { id: 3 },
            Message::Everywhere(Everywhere {
                id: 4,
                payload: Bytes::from_static(b"e"),
            }),
            Message::EverywhereAck { id: 4, daemons: 2 },
            Message::Status,
            Message::Info(InfoReport {
                connections: 1,
                daemons: vec![DaemonRow {
                    id: 1,
                    busy_ms: Some(3),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            Message::Ping(9),
            Message::Pong(9),
            Message::Shutdown {
                reason: "bye".into(),
            },
            Message::Bye {
                reason: "idle".into(),
            },
            Message::Started { id: 5 },
            Message::EverywhereDone(TaskReport {
                id: 2,
                outcome: Outcome::Error(Bytes::from_static(b"X\n")),
                output: vec![],
            }),
            Message::PackageSet(PackageOffer {
                packages: vec![hako_runtime::packages::PackageManifest {
                    name: "pkg".into(),
                    version: "1.0".into(),
                    files: [(
                        "DESCRIPTION".to_string(),
                        hako_runtime::packages::FileEntry {
                            sha256: "0".repeat(64),
                            size: 3,
                        },
                    )]
                    .into(),
                }],
            }),
            Message::PackageFetch(PackageFetch {
                package: 0,
                path: "libs/pkg.so".into(),
            }),
            Message::PackageData(PackageData {
                package: 0,
                path: "DESCRIPTION".into(),
                offset: 0,
                bytes: Bytes::from_static(b"abc"),
                last: true,
            }),
            Message::PackagesReady { refused: None },
            Message::PackagesReady {
                refused: Some("no room".into()),
            },
        ]
    }

    #[test]
    fn every_kind_round_trips_and_leads_with_its_kind() {
        let limits = FrameLimits::default();
        let msgs = samples();
        for k in Kind::ALL {
            assert!(msgs.iter().any(|m| m.kind() == k), "{k:?} has no sample");
        }
        for m in msgs {
            let f = encode(&m);
            assert_eq!(f[0], m.kind() as u8);
            assert_eq!(decode(&f, &limits).unwrap(), m);
        }
    }

    #[test]
    fn control_frames_get_the_small_bound() {
        let limits = FrameLimits {
            control: 16,
            bulk: 1000,
        };
        let big = Message::Refused {
            reason: "x".repeat(100),
        };
        assert!(matches!(
            decode(&encode(&big), &limits),
            Err(DecodeError::Oversized {
                kind: Kind::Refused,
                ..
            })
        ));
        let task = Message::Task(Task {
            id: 1,
            payload: Bytes::from(vec![0u8; 500]),
            timeout_ms: None,
            replicas: 0,
            user: String::new(),
        });
        assert!(decode(&encode(&task), &limits).is_ok());
        let huge = Message::Task(Task {
            id: 1,
            payload: Bytes::from(vec![0u8; 2000]),
            timeout_ms: None,
            replicas: 0,
            user: String::new(),
        });
        assert!(matches!(
            decode(&encode(&huge), &limits),
            Err(DecodeError::Oversized { .. })
        ));
    }

    #[test]
    fn another_version_is_named() {
        let mut f = encode(&samples()[0]);
        f[5..9].copy_from_slice(&(VERSION + 1).to_le_bytes());
        // Whatever follows, the version is read first.
        f.truncate(9);
        assert_eq!(
            decode(&f, &FrameLimits::default()),
            Err(DecodeError::VersionMismatch {
                theirs: VERSION + 1
            })
        );
    }

    #[test]
    fn a_lying_length_prefix_does_not_allocate() {
        // Task { id, payload: len = 2^60 } in a 20-byte frame.
        let mut f = vec![Kind::Task as u8, 1];
        f.push(255); // varint u64 marker
        f.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(
            decode(&f, &FrameLimits::default()),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut f = encode(&Message::Ping(1));
        f.push(0);
        assert!(decode(&f, &FrameLimits::default()).is_err());
        assert!(decode(&[Kind::Status as u8, 0], &FrameLimits::default()).is_err());
        assert!(decode(&[200], &FrameLimits::default()).is_err());
        assert!(decode(&[], &FrameLimits::default()).is_err());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = decode(&bytes, &FrameLimits::default());
            }

            #[test]
            fn random_bodies_of_every_kind_never_panic(
                kind in 0u8..20,
                bytes in proptest::collection::vec(any::<u8>(), 0..256),
            ) {
                let mut f = vec![kind];
                if kind == 0 {
                    f.extend_from_slice(&MAGIC);
                    f.extend_from_slice(&VERSION.to_le_bytes());
                }
                f.extend_from_slice(&bytes);
                let _ = decode(&f, &FrameLimits { control: 128, bulk: 4096 });
            }

            #[test]
            fn mutated_valid_frames_never_panic(
                which in 0usize..15,
                pos in any::<prop::sample::Index>(),
                byte in any::<u8>(),
                cut in any::<prop::sample::Index>(),
            ) {
                let msgs = samples();
                let mut f = encode(&msgs[which % msgs.len()]);
                let i = pos.index(f.len());
                f[i] = byte;
                let n = cut.index(f.len() + 1);
                f.truncate(n.max(1));
                let _ = decode(&f, &FrameLimits::default());
            }
        }
    }
}
