//! Safe extraction of npm `.tgz` tarballs with flate2 + tar.
//!
//! Every entry path is checked, not only the ones we keep: a tarball with an
//! absolute or `..` path is refused as a whole.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Component, Path};

use flate2::read::GzDecoder;
use tar::EntryType;

use crate::error::AssetError;

/// Reads the regular files for which `keep(path)` holds into memory, keyed by
/// their `/`-separated path inside the archive (e.g. `package/dist/R.wasm`).
pub fn read_tgz(
    archive: &str,
    tgz: &[u8],
    keep: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, Vec<u8>>, AssetError> {
    let mut out = BTreeMap::new();
    walk(archive, tgz, &keep, |path, data| {
        out.insert(path.to_string(), data);
        Ok(())
    })?;
    Ok(out)
}

/// Writes the regular files for which `keep(path)` holds below `dest`.
/// Returns how many files were written.
pub fn extract_tgz(
    archive: &str,
    tgz: &[u8],
    dest: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<usize, AssetError> {
    let mut count = 0;
    walk(archive, tgz, &keep, |path, data| {
        let target = dest.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(AssetError::io("create directory", parent))?;
        }
        fs::write(&target, data).map_err(AssetError::io("write", &target))?;
        count += 1;
        Ok(())
    })?;
    Ok(count)
}

fn walk(
    archive: &str,
    tgz: &[u8],
    keep: &dyn Fn(&str) -> bool,
    mut sink: impl FnMut(&str, Vec<u8>) -> Result<(), AssetError>,
) -> Result<(), AssetError> {
    let bad = |detail: String| AssetError::Tarball {
        archive: archive.to_string(),
        detail,
    };
    let mut ar = tar::Archive::new(GzDecoder::new(tgz));
    for entry in ar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let raw = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let shown = raw.to_string_lossy().into_owned();
        let path = safe_entry_path(&raw).ok_or_else(|| AssetError::UnsafeTarPath {
            archive: archive.to_string(),
            entry: shown.clone(),
        })?;
        let Some(path) = path else { continue };
        if !keep(&path) {
            continue;
        }
        match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous => {
                let mut data = Vec::with_capacity(entry.size().min(64 << 20) as usize);
                entry
                    .read_to_end(&mut data)
                    .map_err(|e| bad(format!("{shown}: {e}")))?;
                sink(&path, data)?;
            }
            EntryType::Directory => {}
            other => {
                return Err(bad(format!(
                    "{shown} is a {other:?} entry, only regular files are supported"
                )))
            }
        }
    }
    Ok(())
}

/// `None` if the path is unsafe; `Some(None)` for an empty path (e.g. `./`);
/// otherwise the normalised `/`-separated path.
fn safe_entry_path(path: &Path) -> Option<Option<String>> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some((!parts.is_empty()).then(|| parts.join("/")))
}
