//! Where hako keeps its files: the verified webR assets and the cache of
//! compiled code and pristine snapshots.

use hako_assets::Assets;
use std::path::{Path, PathBuf};

/// `--assets`, else `$HAKO_ASSETS`, else the per-user default.
pub fn assets_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .unwrap_or_else(Assets::default_dir)
}

/// `$HAKO_CACHE`, else `$XDG_CACHE_HOME/hako`, else `~/.cache/hako`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HAKO_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("hako");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("hako")
}

/// Open verified assets, fetching them first if they are not there yet.
pub fn ensure_assets(dir: &Path) -> anyhow::Result<Assets> {
    match Assets::open(dir) {
        Ok(a) => Ok(a),
        Err(_) => {
            eprintln!("hako: preparing webR assets in {} (once)", dir.display());
            Ok(Assets::fetch(dir, &mut |m| eprintln!("hako: {m}"))?)
        }
    }
}

/// A new, empty directory below `parent` (created if missing), named for
/// this process: staging for the package store and the daemons' package
/// cache, whose garbage collection removes what a killed process left.
pub fn fresh_dir(parent: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    for n in 0u32.. {
        let d = parent.join(format!("{}-{n}", std::process::id()));
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", d.display())),
        }
    }
    unreachable!("a free staging name")
}
