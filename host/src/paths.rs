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
