//! `manifest.json`: what an asset dir contains, with sizes and hashes.
//!
//! The manifest is written last and atomically, so its presence is the mark
//! that a build finished; a dir without one is a partial build.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AssetError, FileProblem, ProblemKind};
use crate::npm::WEBR;
use crate::{BINARYEN_VERSION, WEBR_VERSION};

/// File name of the manifest inside an asset dir.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Bumped whenever the layout of an asset dir changes.
pub const FORMAT: u32 = 1;

/// Files every asset dir must list; the runtime cannot start without them.
pub(crate) const REQUIRED_FILES: &[&str] = &["R.wasm", "lib/libRblas.so", "lib/libRlapack.so"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub webr: String,
    pub webr_integrity: String,
    pub binaryen: String,
    /// Every file of the asset dir except the manifest, by `/`-separated relative path.
    pub files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub sha256: String,
    pub size: u64,
    /// Present only for wasm modules: whether legacy EH forced a translation to exnref.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translated: Option<bool>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self::new()
    }
}

impl Manifest {
    /// An empty manifest for the pinned webR and binaryen.
    pub fn new() -> Self {
        Manifest {
            format: FORMAT,
            webr: WEBR_VERSION.to_string(),
            webr_integrity: WEBR.integrity.to_string(),
            binaryen: BINARYEN_VERSION.to_string(),
            files: BTreeMap::new(),
        }
    }

    /// Writes `bytes` to `dir/rel` (creating parents) and records it.
    /// `translated` is `Some` for wasm modules, saying whether they were translated.
    pub fn write_file(
        &mut self,
        dir: &Path,
        rel: &str,
        bytes: &[u8],
        translated: Option<bool>,
    ) -> Result<(), AssetError> {
        if !is_safe_relative(rel) {
            return Err(AssetError::Partial {
                dir: dir.to_path_buf(),
                reason: format!("refusing to write unsafe path {rel:?}"),
            });
        }
        if self.files.contains_key(rel) {
            return Err(AssetError::DuplicateFile {
                path: rel.to_string(),
            });
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(AssetError::io("create directory", parent))?;
        }
        fs::write(&path, bytes).map_err(AssetError::io("write", &path))?;
        self.files.insert(
            rel.to_string(),
            FileEntry {
                sha256: hex::encode(Sha256::digest(bytes)),
                size: bytes.len() as u64,
                translated,
            },
        );
        Ok(())
    }

    /// Serialises and atomically installs `dir/manifest.json` (temp file, fsync, rename).
    /// Returns the bytes written, whose hash is the asset set's id.
    pub fn write(&self, dir: &Path) -> Result<Vec<u8>, AssetError> {
        sync_filesystem(dir);
        let mut bytes = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        bytes.push(b'\n');
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp-{}", std::process::id()));
        let mut f = File::create(&tmp).map_err(AssetError::io("create", &tmp))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(AssetError::io("write", &tmp))?;
        drop(f);
        let path = dir.join(MANIFEST_FILE);
        fs::rename(&tmp, &path).map_err(AssetError::io("rename into place", &path))?;
        Ok(bytes)
    }

    /// Reads and checks `dir/manifest.json`, returning it with its raw bytes.
    pub fn read(dir: &Path) -> Result<(Manifest, Vec<u8>), AssetError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(if dir.is_dir() {
                    AssetError::Partial {
                        dir: dir.to_path_buf(),
                        reason: format!("no {MANIFEST_FILE}: an earlier fetch did not finish"),
                    }
                } else {
                    AssetError::NotFound {
                        dir: dir.to_path_buf(),
                    }
                });
            }
            Err(e) => return Err(AssetError::io("read", path)(e)),
        };
        let partial = |reason: String| AssetError::Partial {
            dir: dir.to_path_buf(),
            reason,
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| partial(format!("{MANIFEST_FILE} is unreadable: {e}")))?;
        if manifest.format != FORMAT
            || manifest.webr != WEBR_VERSION
            || manifest.binaryen != BINARYEN_VERSION
            || manifest.webr_integrity != WEBR.integrity
        {
            return Err(AssetError::WrongVersion {
                dir: dir.to_path_buf(),
                found: format!(
                    "format {}, webR {}, binaryen {}",
                    manifest.format, manifest.webr, manifest.binaryen
                ),
            });
        }
        if let Some(bad) = manifest.files.keys().find(|k| !is_safe_relative(k)) {
            return Err(partial(format!(
                "{MANIFEST_FILE} lists unsafe path {bad:?}"
            )));
        }
        if let Some(missing) = REQUIRED_FILES
            .iter()
            .find(|f| !manifest.files.contains_key(**f))
        {
            return Err(partial(format!("{MANIFEST_FILE} does not list {missing}")));
        }
        Ok((manifest, bytes))
    }

    /// Compares the files on disk with the manifest: sizes always, sha256 if `hash`.
    pub fn check(&self, dir: &Path, hash: bool) -> Vec<FileProblem> {
        let mut problems = Vec::new();
        for (rel, entry) in &self.files {
            let path = dir.join(rel);
            let kind = match fs::metadata(&path) {
                Ok(m) if !m.is_file() => Some(ProblemKind::Missing),
                Err(_) => Some(ProblemKind::Missing),
                Ok(m) if m.len() != entry.size => Some(ProblemKind::WrongSize {
                    expected: entry.size,
                    actual: m.len(),
                }),
                Ok(_) if hash => match sha256_file(&path) {
                    Ok(h) if h == entry.sha256 => None,
                    Ok(_) => Some(ProblemKind::WrongHash),
                    Err(_) => Some(ProblemKind::Missing),
                },
                Ok(_) => None,
            };
            if let Some(kind) = kind {
                problems.push(FileProblem {
                    path: rel.clone(),
                    kind,
                });
            }
        }
        problems
    }
}

/// Flushes the files written so far before the manifest declares them
/// complete, so a power cut cannot leave a manifest over unwritten data.
/// One `syncfs` instead of an fsync per file (there are about a thousand).
fn sync_filesystem(dir: &Path) {
    #[cfg(target_os = "linux")]
    if let Ok(d) = File::open(dir) {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs on a descriptor we own; no memory is passed.
        unsafe { libc::syncfs(d.as_raw_fd()) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = dir;
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A non-empty relative path made only of normal components (no `..`, no root).
pub(crate) fn is_safe_relative(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.contains('\0')
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}
