//! Starting the client link, for `hako host` and `hako client` alike: the
//! READY text an R session reads first, and where the link is served (this
//! process's stdin/stdout, or one loopback socket announced with its token
//! in a private link file). Kept in one place so that a local host and a
//! remote host's client hand an R session the same link.

use crate::link::{self, EndReason, Upstream};
use anyhow::{bail, Context};
use std::fmt::{Display, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The READY lines: `key\tvalue`, one a line.
#[derive(Clone, Debug)]
pub struct Ready(String);

impl Ready {
    /// The lines every link starts with: the link and protocol versions,
    /// then the version and payload bound of the host that runs the tasks.
    pub fn new(hako_version: &str, max_payload: u64) -> Ready {
        let mut r = Ready(String::new());
        r.add("version", crate::linkframe::LINK_VERSION);
        r.add("protocol", crate::protocol::VERSION);
        r.add("hako", hako_version);
        r.add("max_payload", max_payload);
        r.add("max_replicas", crate::replicas::MAX_REPLICAS);
        r
    }

    pub fn add(&mut self, key: &str, value: impl Display) {
        let _ = writeln!(self.0, "{key}\t{value}");
    }

    pub fn text(&self) -> &str {
        &self.0
    }
}

/// Write `text` to the link file `path`, private to this user.
pub fn write_link_file(path: &Path, text: &str) -> anyhow::Result<()> {
    link::write_private(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Where the link is served.
pub enum Place {
    /// Standard input and output.
    Stdio,
    /// A bound loopback socket, announced, waiting for its R session.
    Socket(SocketLink),
}

pub struct SocketLink {
    listener: TcpListener,
    token: String,
}

/// Bind the link's loopback socket at `addr` and announce it: `ready`, the
/// bound address and `token` go to the private `file`, where the R session
/// reads how to connect.
pub async fn bind(addr: &str, token: String, file: &Path, ready: &Ready) -> anyhow::Result<Place> {
    let addr: SocketAddr = addr.parse().context("--link: expected ADDR:PORT")?;
    if !addr.ip().is_loopback() {
        bail!("--link must be a loopback address");
    }
    let listener = TcpListener::bind(addr).await?;
    let mut text = ready.clone();
    text.add("link", listener.local_addr()?);
    text.add("link_token", &token);
    write_link_file(file, text.text())?;
    Ok(Place::Socket(SocketLink { listener, token }))
}

/// Serve the link at `place` until the R side ends it; READY is its first
/// frame. A socket waits at most `accept_within` (None: for ever) for the
/// first connection with the token; an error means no R session came.
/// The writer keeps running after this returns: await it to flush.
pub async fn serve(
    place: Place,
    ends: Upstream,
    ready: Ready,
    max_payload: u64,
    accept_within: Option<Duration>,
) -> anyhow::Result<(EndReason, JoinHandle<()>)> {
    let ready = Some(ready.0);
    match place {
        Place::Stdio => Ok(link::serve(
            crate::stdio::stdin(),
            crate::stdio::stdout(),
            ends,
            ready,
            max_payload,
        )
        .await),
        Place::Socket(s) => {
            let accept = link::accept_socket(&s.listener, &s.token);
            let (r, w) = match accept_within {
                Some(t) => tokio::time::timeout(t, accept)
                    .await
                    .map_err(|_| anyhow::anyhow!("no client link within {t:?}"))??,
                None => accept.await?,
            };
            // One R session per link: later connections are refused.
            drop(s.listener);
            Ok(link::serve(r, w, ends, ready, max_payload).await)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_starts_with_the_versions_then_adds_lines() {
        let mut r = Ready::new("9.9.9", 1024);
        r.add("url", "wss://h:1");
        let lines: Vec<&str> = r.text().lines().collect();
        assert_eq!(
            lines,
            [
                format!("version\t{}", crate::linkframe::LINK_VERSION).as_str(),
                format!("protocol\t{}", crate::protocol::VERSION).as_str(),
                "hako\t9.9.9",
                "max_payload\t1024",
                "max_replicas\t5",
                "url\twss://h:1",
            ]
        );
    }

    #[tokio::test]
    async fn a_socket_link_is_loopback_only_and_announced_privately() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("link");
        let ready = Ready::new("1", 1);
        let err = bind("0.0.0.0:0", "t".repeat(16), &file, &ready)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("loopback"), "{err}");
        assert!(bind("nonsense", "t".repeat(16), &file, &ready)
            .await
            .is_err());
        assert!(!file.exists());
        let place = bind("127.0.0.1:0", "t".repeat(16), &file, &ready)
            .await
            .unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let Place::Socket(s) = place else {
            panic!("not a socket")
        };
        let bound = s.listener.local_addr().unwrap();
        assert!(text.starts_with(ready.text()), "{text}");
        assert!(text.contains(&format!("link\t{bound}\n")), "{text}");
        assert!(text.ends_with(&format!("link_token\t{}\n", "t".repeat(16))));
    }
}
