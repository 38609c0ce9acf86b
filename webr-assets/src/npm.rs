//! Getting the pinned npm tarballs (`npm pack` or a local file) and checking
//! their sha512 integrity before anything else looks at them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use sha2::{Digest, Sha512};

use crate::error::AssetError;

/// An npm package pinned by version and by the sha512 of its tarball.
#[derive(Debug, Clone, Copy)]
pub struct NpmPackage {
    pub name: &'static str,
    pub version: &'static str,
    /// Subresource-integrity string as in npm's `package-lock.json`.
    pub integrity: &'static str,
    /// Environment variable naming a local tarball to use instead of `npm pack`.
    pub override_env: &'static str,
}

impl NpmPackage {
    /// `name@version`, as npm spells it.
    pub fn spec(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// webR: R.wasm, BLAS/LAPACK side modules and the file-packager images.
pub const WEBR: NpmPackage = NpmPackage {
    name: "webr",
    version: crate::WEBR_VERSION,
    integrity: "sha512-M2b8m3/ZBk7XMIR7LD97s5k/9jUla83Z0Hl4b+WnrK7XmSMpZdajCiP3XkSzHKHDUgscHKe+lVUvk3aym8q0bw==",
    override_env: "HAKO_WEBR_TARBALL",
};

/// binaryen.js: its wasm-opt has the `--translate-to-exnref` pass.
pub const BINARYEN: NpmPackage = NpmPackage {
    name: "binaryen",
    version: crate::BINARYEN_VERSION,
    integrity: "sha512-4Usg7yEvwO3FMso3Oov6qkOOHSod1IEv+boKkh77kTljM+eNBouqCTbqWswGzbG+vDNO/b/v2C4gfEh1WgB9Lg==",
    override_env: "HAKO_BINARYEN_TARBALL",
};

/// The `sha512-<base64>` integrity string of some bytes.
pub fn sri_sha512(bytes: &[u8]) -> String {
    let digest = Sha512::digest(bytes);
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Reads a tarball and returns its bytes only if their sha512 matches `expected`.
///
/// The bytes are read once and used from memory afterwards, so the file cannot
/// change between the check and the extraction.
pub fn check_integrity(
    package: &str,
    tarball: &Path,
    expected: &str,
) -> Result<Vec<u8>, AssetError> {
    let bytes = fs::read(tarball).map_err(AssetError::io("read tarball", tarball))?;
    let actual = sri_sha512(&bytes);
    if actual != expected {
        return Err(AssetError::Integrity {
            package: package.to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(bytes)
}

/// Gets `pkg`'s tarball (from `local` if given, else `npm pack` into `work`)
/// and returns its integrity-checked bytes.
pub fn obtain(
    pkg: &NpmPackage,
    local: Option<&Path>,
    work: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<u8>, AssetError> {
    let tarball = match local {
        Some(path) => {
            progress(&format!(
                "using {} from {} (${})",
                pkg.spec(),
                path.display(),
                pkg.override_env
            ));
            path.to_path_buf()
        }
        None => {
            progress(&format!("fetching {} with npm pack", pkg.spec()));
            npm_pack(pkg, work)?
        }
    };
    let bytes = check_integrity(&pkg.spec(), &tarball, pkg.integrity)?;
    progress(&format!(
        "{}: sha512 integrity matches the pinned value",
        pkg.spec()
    ));
    Ok(bytes)
}

/// Runs `npm pack` into a fresh directory and returns the one tarball it made.
/// npm serves the tarball from its cache when offline.
fn npm_pack(pkg: &NpmPackage, work: &Path) -> Result<PathBuf, AssetError> {
    let err = |detail: String| AssetError::Npm {
        package: pkg.spec(),
        detail,
    };
    let dest = work.join(format!("npm-{}", pkg.name));
    fs::create_dir_all(&dest).map_err(AssetError::io("create directory", &dest))?;
    let output = Command::new("npm")
        .arg("pack")
        .arg(pkg.spec())
        .arg("--pack-destination")
        .arg(&dest)
        .args(["--prefer-offline", "--ignore-scripts", "--json"])
        .current_dir(&dest)
        .output()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                err("`npm` is not on PATH (install Node.js and npm, or set the package's tarball env var)".into())
            } else {
                err(format!("cannot run npm: {e}"))
            }
        })?;
    if !output.status.success() {
        return Err(err(format!(
            "npm pack exited with {}: {}",
            output.status,
            tail(&String::from_utf8_lossy(&output.stderr))
        )));
    }
    let tgzs: Vec<PathBuf> = fs::read_dir(&dest)
        .map_err(AssetError::io("list", &dest))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tgz"))
        .collect();
    match tgzs.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(err(format!(
            "expected one .tgz from npm pack in {}, found {}",
            dest.display(),
            tgzs.len()
        ))),
    }
}

/// The last part of a tool's stderr: enough to diagnose, short enough to read.
pub(crate) fn tail(s: &str) -> String {
    const MAX: usize = 2000;
    let s = s.trim();
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut start = s.len() - MAX;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}
