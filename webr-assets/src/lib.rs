//! hako-assets: fetches webR's R.wasm and friends, translates legacy wasm
//! exception handling to exnref (wasmtime only runs the latter), unpacks the
//! guest's read-only file tree, and caches the lot in a verified directory.
//!
//! Layout of an asset dir:
//! - `manifest.json`: sizes and sha256 of everything else; written last, so
//!   its presence marks a finished build;
//! - `R.wasm`: the main module, translated to exnref;
//! - `lib/libRblas.so`, `lib/libRlapack.so`: side modules R.js loads from `dist/`;
//! - `rootfs/...`: the guest's read-only tree (`rootfs/usr/lib/R/...`).

mod error;
mod lock;
pub mod manifest;
pub mod npm;
mod pipeline;
pub mod tarball;
pub mod translate;
pub mod vfs_image;
pub mod wasm;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

pub use error::{AssetError, FileProblem, ProblemKind};
use lock::DirLock;
pub use lock::{lock_exclusive, lock_file, lock_shared, try_lock_exclusive};
pub use manifest::Manifest;

pub const WEBR_VERSION: &str = "0.6.0";
pub const BINARYEN_VERSION: &str = "132.0.0";

/// A complete, checked asset dir.
#[derive(Debug, Clone)]
pub struct Assets {
    dir: PathBuf,
    manifest: Manifest,
    id: String,
}

/// Where the npm tarballs come from: a local file each, or `npm pack` if `None`.
/// Local files are integrity-checked exactly like downloaded ones.
#[derive(Debug, Clone, Default)]
pub struct TarballSources {
    pub webr: Option<PathBuf>,
    pub binaryen: Option<PathBuf>,
}

impl TarballSources {
    /// `$HAKO_WEBR_TARBALL` and `$HAKO_BINARYEN_TARBALL`, where set and non-empty.
    pub fn from_env() -> Self {
        let get = |var| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        TarballSources {
            webr: get(npm::WEBR.override_env),
            binaryen: get(npm::BINARYEN.override_env),
        }
    }
}

impl Assets {
    /// `$HAKO_ASSETS` if set, else `$XDG_CACHE_HOME/hako/webr-0.6.0`, else
    /// `$HOME/.cache/hako/webr-0.6.0`.
    pub fn default_dir() -> PathBuf {
        let var = |name| std::env::var_os(name).filter(|v: &OsString| !v.is_empty());
        if let Some(dir) = var("HAKO_ASSETS") {
            return PathBuf::from(dir);
        }
        let leaf = format!("webr-{WEBR_VERSION}");
        // XDG says relative values are invalid and must be ignored.
        if let Some(cache) = var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
        {
            return cache.join("hako").join(leaf);
        }
        match var("HOME") {
            Some(home) => PathBuf::from(home).join(".cache").join("hako").join(leaf),
            None => std::env::temp_dir().join("hako-cache").join(leaf),
        }
    }

    /// Cheap open for every sandbox start: the manifest is present and current,
    /// and every listed file exists with the right size. Hashes nothing.
    pub fn open(dir: &Path) -> Result<Assets, AssetError> {
        Self::load(dir, false)
    }

    /// Full check: also compares the sha256 of every file with the manifest.
    pub fn verify(dir: &Path) -> Result<Assets, AssetError> {
        Self::load(dir, true)
    }

    fn load(dir: &Path, hash: bool) -> Result<Assets, AssetError> {
        let (manifest, bytes) = Manifest::read(dir)?;
        let problems = manifest.check(dir, hash);
        if !problems.is_empty() {
            return Err(AssetError::Damaged {
                dir: dir.to_path_buf(),
                problems,
            });
        }
        Ok(Assets {
            dir: dir.to_path_buf(),
            manifest,
            id: hex::encode(Sha256::digest(&bytes)),
        })
    }

    /// Makes the assets exist at `dir` and verifies them. A verified cache is
    /// reused; a partial or damaged one is rebuilt. Tarballs come from
    /// [`TarballSources::from_env`] or `npm pack`.
    pub fn fetch(dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<Assets, AssetError> {
        Self::fetch_from(dir, &TarballSources::from_env(), progress)
    }

    /// [`Assets::fetch`] with explicit tarball sources.
    ///
    /// The build goes to `<dir>.tmp-<pid>` and is renamed into place, under a
    /// lock on `<dir>.lock`; a process that waited for the lock reuses what the
    /// other one built.
    pub fn fetch_from(
        dir: &Path,
        sources: &TarballSources,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Assets, AssetError> {
        match Self::verify(dir) {
            Ok(assets) => {
                progress(&format!(
                    "webR assets at {} verified; reusing them",
                    dir.display()
                ));
                return Ok(assets);
            }
            Err(AssetError::NotFound { .. }) => progress(&format!(
                "no webR assets at {} yet; building them",
                dir.display()
            )),
            Err(e) => progress(&format!("rebuilding webR assets: {e}")),
        }

        let started = Instant::now();
        let (parent, name) = split_dir(dir)?;
        fs::create_dir_all(&parent).map_err(AssetError::io("create directory", &parent))?;
        let _lock = DirLock::acquire(&parent.join(format!("{name}.lock")), progress)?;
        if let Ok(assets) = Self::verify(dir) {
            progress(&format!(
                "another process finished building webR assets at {}; reusing them",
                dir.display()
            ));
            return Ok(assets);
        }
        remove_leftovers(&parent, &name);

        let tmp = parent.join(format!("{name}.tmp-{}", std::process::id()));
        fs::create_dir_all(&tmp).map_err(AssetError::io("create directory", &tmp))?;
        let work = tempfile::Builder::new()
            .prefix(&format!("{name}.work-"))
            .tempdir_in(&parent)
            .map_err(AssetError::io("create scratch directory in", &parent))?;
        if let Err(e) = pipeline::build(&tmp, work.path(), sources, progress) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        drop(work);

        if dir.exists() {
            let old = parent.join(format!("{name}.old-{}", std::process::id()));
            fs::rename(dir, &old).map_err(AssetError::io("move aside", dir))?;
            let _ = fs::remove_dir_all(&old);
        }
        fs::rename(&tmp, dir).map_err(AssetError::io("move into place", dir))?;
        let assets = Self::verify(dir)?;
        progress(&format!(
            "webR assets ready at {} ({} files) after {:.1} s",
            dir.display(),
            assets.manifest.files.len(),
            started.elapsed().as_secs_f64()
        ));
        Ok(assets)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The main module, translated to exnref.
    pub fn r_wasm(&self) -> PathBuf {
        self.dir.join("R.wasm")
    }

    /// `libRblas.so` and `libRlapack.so` (translated if they needed it).
    pub fn lib_dir(&self) -> PathBuf {
        self.dir.join("lib")
    }

    /// The guest's read-only tree; guest paths sit below it (`rootfs/usr/lib/R/...`).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// sha256 hex of `manifest.json`: identifies this asset set for cache keys.
    pub fn id(&self) -> String {
        self.id.clone()
    }

    /// The manifest, e.g. to see which files are wasm modules (`translated` is set).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

/// `dir`'s parent and last component, for naming its siblings.
fn split_dir(dir: &Path) -> Result<(PathBuf, String), AssetError> {
    let bad = || AssetError::Io {
        action: "use as asset directory",
        path: dir.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "needs a parent and a UTF-8 name",
        ),
    };
    let name = dir.file_name().and_then(|n| n.to_str()).ok_or_else(bad)?;
    let parent = match dir.parent() {
        Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
        Some(p) => p.to_path_buf(),
        None => return Err(bad()),
    };
    Ok((parent, name.to_string()))
}

/// Removes what crashed builds left next to `dir`. Only called under the lock,
/// when no other process can be using them.
fn remove_leftovers(parent: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    let prefixes = ["tmp-", "old-", "work-"].map(|s| format!("{name}.{s}"));
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(n) = file_name.to_str() else {
            continue;
        };
        if prefixes.iter().any(|p| n.starts_with(p.as_str())) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
