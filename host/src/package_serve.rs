//! The host's half of package sets on the wire: right after a daemon's
//! welcome, announce the set's manifests (`PackageSet`), then serve the
//! files the daemon asks for (`PackageFetch` → `PackageData` chunks) until
//! it says the set is in place (`PackagesReady`). Only files listed in the
//! set's manifests are served, each from its tree in the host's package
//! store; a daemon asking for anything else, or for more files than the set
//! has, is dropped. The daemon is handed to the dispatcher only once its
//! sandbox has the set, so no task ever reaches a daemon without it.

use crate::protocol::{FrameLimits, Message, PackageData, PackageFetch, PackageOffer};
use crate::ws;
use bytes::Bytes;
use hako_runtime::packages::PackageSet;
use std::io::Read;
use std::time::Duration;
use tokio_tungstenite::WebSocketStream;

/// Bytes of file per `PackageData` frame: well inside any daemon's frame
/// bound (at least 1 MiB), large enough that frames cost little.
pub const CHUNK: usize = 256 << 10;

/// How long a daemon may be silent while it fetches, verifies, and builds
/// its sandbox with the set.
pub const PATIENCE: Duration = Duration::from_secs(300);

/// The wire form of a set: its manifests, in order.
pub fn offer(set: &PackageSet) -> PackageOffer {
    PackageOffer {
        packages: set.packages.iter().map(|p| p.manifest.clone()).collect(),
    }
}

/// Announce `set` to a daemon that was just welcomed, and serve it. `Ok`
/// once the daemon's sandbox has it (at once for an empty set); `Err` says
/// why the daemon is not taken (it refused the set, or broke the protocol).
pub async fn serve<S>(
    ws: &mut WebSocketStream<S>,
    set: &PackageSet,
    limits: &FrameLimits,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws::send(ws, &Message::PackageSet(offer(set))).await?;
    if set.is_empty() {
        return Ok(());
    }
    let files: usize = set.packages.iter().map(|p| p.manifest.files.len()).sum();
    let mut served = 0usize;
    loop {
        let m = match tokio::time::timeout(PATIENCE, ws::recv(ws, limits)).await {
            Err(_) => {
                return Err(format!(
                    "silent for {PATIENCE:?} while getting the package set"
                ))
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(m)) => m,
        };
        match m {
            Message::PackageFetch(f) => {
                served += 1;
                // Each file once, and a few more for a daemon that retries
                // after finding its cached copy damaged.
                if served > files.saturating_mul(2) {
                    return Err(format!(
                        "asked for {served} files of a set of {files}: not serving more"
                    ));
                }
                send_file(ws, set, &f).await?;
            }
            Message::PackagesReady { refused: None } => return Ok(()),
            Message::PackagesReady { refused: Some(why) } => {
                return Err(format!(
                    "it refused the package set: {}",
                    crate::dial::printable(&why)
                ))
            }
            Message::Ping(n) => ws::send(ws, &Message::Pong(n)).await?,
            Message::Pong(_) => {}
            Message::Bye { reason } => {
                return Err(format!("it left: {}", crate::dial::printable(&reason)))
            }
            other => {
                return Err(format!(
                    "a daemon may not send {:?} while getting the package set",
                    other.kind()
                ))
            }
        }
    }
}

/// Send one file of the set in [`CHUNK`]s; a file not in the set's
/// manifests is refused, whatever the path says.
async fn send_file<S>(
    ws: &mut WebSocketStream<S>,
    set: &PackageSet,
    f: &PackageFetch,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let listed = set
        .packages
        .get(f.package as usize)
        .and_then(|p| p.manifest.files.get(&f.path).map(|e| (p, e)));
    let Some((p, entry)) = listed else {
        return Err(format!(
            "asked for {:?} of package #{}, which the set does not list",
            crate::dial::printable(&f.path),
            f.package
        ));
    };
    // The key is the manifest's own: a relative path below the tree.
    let path = p.dir.join(&f.path);
    // Files of a package are small (a few MiB at most): read in place.
    let mut file =
        std::fs::File::open(&path).map_err(|e| format!("host: reading {}: {e}", path.display()))?;
    let mut offset = 0u64;
    loop {
        let want = CHUNK.min((entry.size.saturating_sub(offset)) as usize);
        let mut buf = vec![0u8; want];
        let mut got = 0;
        while got < want {
            let n = file
                .read(&mut buf[got..])
                .map_err(|e| format!("host: reading {}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        let last = offset + got as u64 >= entry.size || got == 0;
        let data = PackageData {
            package: f.package,
            path: f.path.clone(),
            offset,
            bytes: Bytes::from(buf),
            last,
        };
        ws::send(ws, &Message::PackageData(data)).await?;
        offset += got as u64;
        if last {
            return Ok(());
        }
    }
}
