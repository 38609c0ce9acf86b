//! A daemon's half of package sets on the wire: read the host's
//! `PackageSet` (the first frame after its welcome), check the manifests
//! (names, paths, sizes, counts), take what the package cache has, and
//! fetch the rest from the host over the same connection, file by file,
//! each checked by size and sha256 before its tree enters the cache. Nothing
//! comes from anywhere else, and nothing here runs any of it: the trees are
//! only ever mounted read-only into the sandbox.
//!
//! A host that sends a set this daemon will not take (`--no-packages`, too
//! large for `--max-package-cache`, a path that leaves its tree, a file
//! that does not match its manifest, more bytes than announced, a frame
//! out of turn) is told why (`PackagesReady { refused }`) and left.

use crate::package_cache::{tree_bytes, Cache, InUse};
use crate::protocol::{FrameLimits, Message, PackageData, PackageFetch, PackageOffer};
use crate::ws;
use hako_runtime::packages::{valid_name, InstalledPackage, PackageManifest, PackageSet};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tokio_tungstenite::WebSocketStream;

/// Most packages in one set.
pub const MAX_PACKAGES: usize = 1000;
/// Most files in one set, all packages together.
pub const MAX_FILES: usize = 100_000;
/// Longest path of a file within its package.
const MAX_PATH: usize = 1024;

/// How long the host may be silent while the set is announced or sent.
const PATIENCE: Duration = Duration::from_secs(120);

/// Why there is no set.
#[derive(Debug)]
pub enum Failure {
    /// The daemon will not take this set from this host (tell it, and leave).
    Refused(String),
    /// The connection failed: try again later, like any lost connection.
    Broken(String),
}

/// What a daemon takes, as the volunteer set it.
pub struct Policy<'a> {
    /// `--no-packages`: refuse any non-empty set.
    pub allow: bool,
    pub cache: &'a Cache,
}

/// The set the host announces, in place in the cache and held there (keep
/// the holds as long as a sandbox mounts the set). An empty set needs no
/// answer; for any other, the caller answers `PackagesReady` once its
/// sandbox has it (or with the refusal).
pub async fn receive<S>(
    conn: &mut WebSocketStream<S>,
    limits: &FrameLimits,
    policy: &Policy<'_>,
) -> Result<(PackageSet, Vec<InUse>), Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let offer = match next(conn, limits).await? {
        Message::PackageSet(o) => o,
        other => {
            return Err(Failure::Broken(format!(
                "expected the host's package set first, got {:?}",
                other.kind()
            )))
        }
    };
    if offer.packages.is_empty() {
        return Ok((PackageSet::default(), Vec::new()));
    }
    let names: Vec<String> = offer
        .packages
        .iter()
        .take(20)
        .map(|m| {
            crate::dial::printable(&format!("{} {}", m.name, m.version))
                .chars()
                .take(80)
                .collect()
        })
        .collect();
    if !policy.allow {
        return Err(Failure::Refused(format!(
            "this daemon runs with --no-packages and takes no package set (the host's: {})",
            names.join(", ")
        )));
    }
    check_offer(&offer, policy.cache.max_bytes).map_err(Failure::Refused)?;
    let cache = policy.cache;
    let lock = cache
        .lock_async()
        .await
        .map_err(|e| Failure::Refused(format!("{e:#}")))?;
    let mut out = Vec::with_capacity(offer.packages.len());
    let mut missing = Vec::new();
    for (i, m) in offer.packages.iter().enumerate() {
        match cache.get(m, &lock) {
            Some(p) => out.push(Some(p)),
            None => {
                out.push(None);
                missing.push(i);
            }
        }
    }
    let ids: Vec<String> = offer.packages.iter().map(PackageManifest::id).collect();
    let need: u64 = missing
        .iter()
        .map(|&i| tree_bytes(&offer.packages[i]))
        .sum();
    cache
        .make_room(need, &ids, &lock)
        .map_err(|e| Failure::Refused(format!("{e:#}")))?;
    let mut fetched_bytes = 0u64;
    for &i in &missing {
        let m = &offer.packages[i];
        let staged = cache
            .staging(&lock)
            .map_err(|e| Failure::Refused(format!("{e:#}")))?;
        fetch_tree(conn, limits, i as u32, m, &staged.join(&m.name)).await?;
        m.check_tree(&staged.join(&m.name))
            .map_err(|e| Failure::Refused(e.to_string()))?;
        let p = cache
            .commit(&staged, m, &lock)
            .map_err(|e| Failure::Refused(format!("{e:#}")))?;
        fetched_bytes += tree_bytes(m);
        out[i] = Some(p);
    }
    tracing::info!(
        "package set: {} package(s), {} from the cache, {} fetched from the host ({} bytes): {}",
        offer.packages.len(),
        offer.packages.len() - missing.len(),
        missing.len(),
        fetched_bytes,
        names.join(", ")
    );
    let holds = ids
        .iter()
        .map(|id| cache.hold(id, &lock))
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(|e| Failure::Refused(format!("{e:#}")))?;
    let set = PackageSet {
        packages: out.into_iter().flatten().collect::<Vec<InstalledPackage>>(),
    };
    Ok((set, holds))
}

/// The next frame from the host, answering its pings.
async fn next<S>(conn: &mut WebSocketStream<S>, limits: &FrameLimits) -> Result<Message, Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let m = match tokio::time::timeout(PATIENCE, ws::recv(conn, limits)).await {
            Err(_) => {
                return Err(Failure::Broken(format!(
                    "the host was silent for {PATIENCE:?} while sending its package set"
                )))
            }
            Ok(Err(ws::End::Violation(v))) => return Err(Failure::Refused(v)),
            Ok(Err(e)) => return Err(Failure::Broken(e.to_string())),
            Ok(Ok(m)) => m,
        };
        match m {
            Message::Ping(n) => ws::send(conn, &Message::Pong(n))
                .await
                .map_err(Failure::Broken)?,
            Message::Pong(_) => {}
            Message::Shutdown { reason } => {
                return Err(Failure::Broken(format!(
                    "host shut down: {}",
                    crate::dial::printable(&reason)
                )))
            }
            m => return Ok(m),
        }
    }
}

/// Every manifest well formed and the whole set within `max_bytes`, before
/// anything is fetched or written.
pub fn check_offer(offer: &PackageOffer, max_bytes: u64) -> Result<(), String> {
    if offer.packages.len() > MAX_PACKAGES {
        return Err(format!(
            "a set of {} packages is more than the {MAX_PACKAGES} a daemon takes",
            offer.packages.len()
        ));
    }
    let files: usize = offer.packages.iter().map(|m| m.files.len()).sum();
    if files > MAX_FILES {
        return Err(format!(
            "a set of {files} files is more than the {MAX_FILES} a daemon takes"
        ));
    }
    let mut names = HashSet::new();
    let mut total = 0u64;
    for m in &offer.packages {
        let name = crate::dial::printable(&m.name);
        if !valid_name(&m.name) {
            return Err(format!("{name:?} is not a package name"));
        }
        if !names.insert(m.name.as_str()) {
            return Err(format!("package {name} is in the set twice"));
        }
        for (path, f) in &m.files {
            if let Err(why) = check_path(path) {
                return Err(format!(
                    "package {name}: file {:?} {why}",
                    crate::dial::printable(path)
                ));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "package {name}: file {:?} has no sha256",
                    crate::dial::printable(path)
                ));
            }
            total = total.saturating_add(f.size);
        }
    }
    if total > max_bytes {
        return Err(format!(
            "the package set is {} MiB, more than this daemon's --max-package-cache of {} MiB",
            total.div_ceil(1 << 20),
            max_bytes >> 20
        ));
    }
    Ok(())
}

/// A file path within a package tree: relative, `/`-separated, no `.` or
/// `..` or empty component, no NUL or backslash.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() || path.len() > MAX_PATH {
        return Err("has an empty or overlong path");
    }
    if path.contains('\0') || path.contains('\\') {
        return Err("has a NUL or backslash in its path");
    }
    if path.starts_with('/') {
        return Err("has an absolute path");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("has a path that leaves its package (., .. or an empty component)");
    }
    Ok(())
}

/// Fetch every file of package `index` into `dir`, each checked against
/// the manifest as it arrives.
async fn fetch_tree<S>(
    conn: &mut WebSocketStream<S>,
    limits: &FrameLimits,
    index: u32,
    m: &PackageManifest,
    dir: &Path,
) -> Result<(), Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let refuse = |what: String| Failure::Refused(format!("package {}: {what}", m.name));
    for (path, want) in &m.files {
        let shown = crate::dial::printable(path);
        let ask = Message::PackageFetch(PackageFetch {
            package: index,
            path: path.clone(),
        });
        ws::send(conn, &ask).await.map_err(Failure::Broken)?;
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| refuse(format!("creating the directory of {shown}: {e}")))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|e| refuse(format!("writing {shown}: {e}")))?;
        let mut hash = Sha256::new();
        let mut got = 0u64;
        loop {
            let d: PackageData = match next(conn, limits).await? {
                Message::PackageData(d) => d,
                other => {
                    return Err(refuse(format!(
                        "expected {shown}, the host sent {:?}",
                        other.kind()
                    )))
                }
            };
            if d.package != index || d.path != *path || d.offset != got {
                return Err(refuse(format!(
                    "expected {shown} at byte {got}, the host sent another file or offset"
                )));
            }
            got = got.saturating_add(d.bytes.len() as u64);
            if got > want.size {
                return Err(refuse(format!(
                    "the host sent more of {shown} than the {} bytes its manifest announces",
                    want.size
                )));
            }
            hash.update(&d.bytes);
            file.write_all(&d.bytes)
                .map_err(|e| refuse(format!("writing {shown}: {e}")))?;
            if d.last {
                break;
            }
        }
        if got != want.size || !hex::encode(hash.finalize()).eq_ignore_ascii_case(&want.sha256) {
            return Err(refuse(format!(
                "{shown} as the host sent it does not match its manifest (size or sha256)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hako_runtime::packages::FileEntry;

    fn offer(name: &str, files: &[(&str, u64)]) -> PackageOffer {
        PackageOffer {
            packages: vec![PackageManifest {
                name: name.into(),
                version: "1".into(),
                files: files
                    .iter()
                    .map(|(p, s)| {
                        (
                            p.to_string(),
                            FileEntry {
                                sha256: "a".repeat(64),
                                size: *s,
                            },
                        )
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn paths_that_leave_the_tree_are_refused() {
        assert!(check_offer(&offer("pkg", &[("DESCRIPTION", 1), ("libs/pkg.so", 2)]), 10).is_ok());
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a\0b",
            "a//b",
            "./a",
            "a/",
            "",
            "a\\b",
        ] {
            let e = check_offer(&offer("pkg", &[(bad, 1)]), 10).unwrap_err();
            assert!(e.contains("pkg"), "{bad:?}: {e}");
        }
        assert!(check_offer(&offer("../pkg", &[("a", 1)]), 10).is_err());
    }

    #[test]
    fn a_set_beyond_the_cache_is_refused() {
        let e = check_offer(&offer("pkg", &[("a", 3 << 20), ("b", 1)]), 2 << 20).unwrap_err();
        assert!(e.contains("--max-package-cache of 2 MiB"), "{e}");
        // Sizes that would overflow a sum are still refused.
        let e = check_offer(&offer("pkg", &[("a", u64::MAX), ("b", u64::MAX)]), 1 << 30);
        assert!(e.is_err());
    }
}
