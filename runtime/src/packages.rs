//! Package sets: the compiled R packages a sandbox may load. Each package is
//! an installed package tree (as `R CMD INSTALL` leaves it: `DESCRIPTION`,
//! `R/`, `libs/NAME.so` as a wasm side module, ...) described by a manifest
//! of its files' sha256. The manifest's own hash names the tree, so a set is
//! content-addressed: the runtime checks every file against its manifest
//! before the tree is mounted read-only, and caches compiled side modules by
//! the file's hash.

use crate::vfs::MountSpec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Where the set's packages appear in the guest, one directory per package;
/// first in R's `.libPaths()`.
pub const LIBRARY: &str = "/hako/library";

/// One file of an installed package tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Lower-case hex sha256 of the file's bytes.
    pub sha256: String,
    pub size: u64,
}

/// What an installed package tree must contain, exactly: no other files, no
/// symlinks. Paths are relative to the package directory, `/`-separated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageManifest {
    pub name: String,
    pub version: String,
    pub files: BTreeMap<String, FileEntry>,
}

/// An installed package: its manifest and the host directory holding the
/// tree (the directory named `name`, containing `DESCRIPTION`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    pub manifest: PackageManifest,
    pub dir: PathBuf,
}

/// The packages one sandbox is given, dependencies included.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageSet {
    pub packages: Vec<InstalledPackage>,
}

/// Why a package tree is refused. Every variant names the package, and the
/// file where there is one.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("package {package}: {path} is not listed in its manifest")]
    Extra { package: String, path: String },
    #[error("package {package}: {path} is missing")]
    Missing { package: String, path: String },
    #[error("package {package}: {path} does not match its manifest ({what})")]
    Mismatch {
        package: String,
        path: String,
        what: &'static str,
    },
    #[error("package {package}: {path} is a symlink; package trees must be plain files")]
    Symlink { package: String, path: String },
    #[error("package {package}: {path} is not a regular file or directory")]
    Special { package: String, path: String },
    #[error("package {package}: {reason}")]
    Invalid { package: String, reason: String },
    #[error("package {package}: reading {path}: {source}")]
    Io {
        package: String,
        path: String,
        source: std::io::Error,
    },
}

/// A file of a tree as found on disk.
enum Found {
    File { size: u64 },
    Symlink,
    Special,
}

/// Every non-directory entry below `dir`, by `/`-separated relative path,
/// without following any symlink.
fn walk(package: &str, dir: &Path) -> Result<BTreeMap<String, Found>, PackageError> {
    let io = |path: &str, source| PackageError::Io {
        package: package.to_string(),
        path: path.to_string(),
        source,
    };
    let top = std::fs::symlink_metadata(dir).map_err(|e| io(".", e))?;
    if top.file_type().is_symlink() {
        return Err(PackageError::Symlink {
            package: package.to_string(),
            path: dir.display().to_string(),
        });
    }
    if !top.is_dir() {
        return Err(PackageError::Invalid {
            package: package.to_string(),
            reason: format!("{} is not a directory", dir.display()),
        });
    }
    let mut out = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let host = if rel.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(&rel)
        };
        for entry in std::fs::read_dir(&host).map_err(|e| io(&rel, e))? {
            let entry = entry.map_err(|e| io(&rel, e))?;
            let name = entry.file_name();
            let name = name.to_str().ok_or_else(|| PackageError::Invalid {
                package: package.to_string(),
                reason: format!("a file name in {rel:?} is not UTF-8"),
            })?;
            let path = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry.file_type().map_err(|e| io(&path, e))?;
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_symlink() {
                out.insert(path, Found::Symlink);
            } else if ft.is_file() {
                let size = entry.metadata().map_err(|e| io(&path, e))?.len();
                out.insert(path, Found::File { size });
            } else {
                out.insert(path, Found::Special);
            }
        }
    }
    Ok(out)
}

/// sha256 of a file, streamed, refusing to follow a symlink swapped in since
/// the walk.
fn hash_file(package: &str, dir: &Path, rel: &str) -> Result<(String, u64), PackageError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PackageError::Io {
        package: package.to_string(),
        path: rel.to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join(rel))
        .map_err(io)?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).map_err(io)?;
    Ok((hex::encode(h.finalize()), n))
}

fn refuse_odd(package: &str, path: &str, found: &Found) -> Result<u64, PackageError> {
    match found {
        Found::File { size } => Ok(*size),
        Found::Symlink => Err(PackageError::Symlink {
            package: package.to_string(),
            path: path.to_string(),
        }),
        Found::Special => Err(PackageError::Special {
            package: package.to_string(),
            path: path.to_string(),
        }),
    }
}

/// R's rule for package names (letters, digits, dots; starts with a letter,
/// does not end in a dot), which also keeps a name a single path component.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphabetic()
        && !name.ends_with('.')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'.')
}

/// `Field: value` of a DESCRIPTION file (first line of the value only).
fn dcf_field(text: &str, field: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.trim().to_string())
    })
}

impl PackageManifest {
    /// Describe the installed tree at `dir` as it is now: every file's size
    /// and sha256; name and version from its `DESCRIPTION`. A symlink or a
    /// special file anywhere in the tree is refused.
    pub fn of_dir(dir: &Path) -> Result<PackageManifest, PackageError> {
        let label = dir.display().to_string();
        let found = walk(&label, dir)?;
        let desc =
            std::fs::read_to_string(dir.join("DESCRIPTION")).map_err(|e| PackageError::Io {
                package: label.clone(),
                path: "DESCRIPTION".into(),
                source: e,
            })?;
        let field = |f: &str| {
            dcf_field(&desc, f).ok_or_else(|| PackageError::Invalid {
                package: label.clone(),
                reason: format!("DESCRIPTION has no {f} field"),
            })
        };
        let name = field("Package")?;
        let version = field("Version")?;
        if !valid_name(&name) {
            return Err(PackageError::Invalid {
                package: label,
                reason: format!("{name:?} is not a valid package name"),
            });
        }
        let mut files = BTreeMap::new();
        for (path, f) in &found {
            refuse_odd(&name, path, f)?;
            let (sha256, size) = hash_file(&name, dir, path)?;
            files.insert(path.clone(), FileEntry { sha256, size });
        }
        Ok(PackageManifest {
            name,
            version,
            files,
        })
    }

    /// The manifest's content address: sha256 of its canonical JSON (file
    /// order is the map's, so equal manifests have equal ids).
    pub fn id(&self) -> String {
        let json = serde_json::to_vec(self).expect("a manifest serializes");
        hex::encode(Sha256::digest(json))
    }

    /// Check the tree at `dir` against this manifest: exactly the files
    /// listed, plain files only, each of the listed size and sha256.
    pub fn check_tree(&self, dir: &Path) -> Result<(), PackageError> {
        let name = &self.name;
        if !valid_name(name) {
            return Err(PackageError::Invalid {
                package: name.clone(),
                reason: "not a valid package name".into(),
            });
        }
        let found = walk(name, dir)?;
        for (path, f) in &found {
            let size = refuse_odd(name, path, f)?;
            let Some(want) = self.files.get(path) else {
                return Err(PackageError::Extra {
                    package: name.clone(),
                    path: path.clone(),
                });
            };
            if size != want.size {
                return Err(PackageError::Mismatch {
                    package: name.clone(),
                    path: path.clone(),
                    what: "size",
                });
            }
        }
        if let Some(path) = self.files.keys().find(|p| !found.contains_key(*p)) {
            return Err(PackageError::Missing {
                package: name.clone(),
                path: path.clone(),
            });
        }
        for (path, want) in &self.files {
            let (sha256, size) = hash_file(name, dir, path)?;
            if size != want.size || !sha256.eq_ignore_ascii_case(&want.sha256) {
                return Err(PackageError::Mismatch {
                    package: name.clone(),
                    path: path.clone(),
                    what: "sha256",
                });
            }
        }
        Ok(())
    }
}

impl InstalledPackage {
    /// The package at `dir`, described as it is now (see
    /// [`PackageManifest::of_dir`]): for trees the caller vouches for.
    pub fn from_dir(dir: &Path) -> Result<InstalledPackage, PackageError> {
        Ok(InstalledPackage {
            manifest: PackageManifest::of_dir(dir)?,
            dir: dir.to_path_buf(),
        })
    }

    /// Where the guest sees this package.
    pub fn guest_dir(&self) -> String {
        format!("{LIBRARY}/{}", self.manifest.name)
    }
}

impl PackageSet {
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// Check every tree against its manifest (and that no name is given
    /// twice); the first failure, naming package and file, is the error.
    pub fn verify(&self) -> Result<(), PackageError> {
        let mut seen = std::collections::HashSet::new();
        for p in &self.packages {
            if !seen.insert(p.manifest.name.as_str()) {
                return Err(PackageError::Invalid {
                    package: p.manifest.name.clone(),
                    reason: "given twice in one package set".into(),
                });
            }
            p.manifest.check_tree(&p.dir)?;
        }
        Ok(())
    }

    /// Read-only mounts of the trees at [`LIBRARY`]`/<name>`.
    pub fn mounts(&self) -> Vec<MountSpec> {
        self.packages
            .iter()
            .map(|p| MountSpec {
                host_dir: p.dir.clone(),
                guest_path: p.guest_dir(),
                writable: false,
            })
            .collect()
    }

    /// The side modules the set provides, by guest path.
    pub fn modules(&self) -> PackageModules {
        let mut by_guest = HashMap::new();
        for p in &self.packages {
            for (rel, f) in &p.manifest.files {
                if rel.ends_with(".so") {
                    by_guest.insert(
                        format!("{}/{rel}", p.guest_dir()),
                        PackageModule {
                            host: p.dir.join(rel),
                            sha256: f.sha256.to_ascii_lowercase(),
                            size: f.size,
                        },
                    );
                }
            }
        }
        PackageModules { by_guest }
    }
}

/// A side module of a package: the host file and what it must hash to.
#[derive(Clone, Debug)]
pub struct PackageModule {
    pub host: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// The linker's view of a set: which guest paths are package side modules.
#[derive(Clone, Debug, Default)]
pub struct PackageModules {
    by_guest: HashMap<String, PackageModule>,
}

impl PackageModules {
    /// The module at normalised absolute guest path `guest`, if the set has one.
    pub fn get(&self, guest: &str) -> Option<&PackageModule> {
        self.by_guest.get(guest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("pkg");
        std::fs::create_dir_all(dir.join("libs")).unwrap();
        std::fs::write(dir.join("DESCRIPTION"), "Package: pkg\nVersion: 1.0\n").unwrap();
        std::fs::write(dir.join("libs/pkg.so"), b"\0asm").unwrap();
        (t, dir)
    }

    #[test]
    fn manifest_of_a_tree_verifies_and_names_what_changed() {
        let (_t, dir) = tree();
        let m = PackageManifest::of_dir(&dir).unwrap();
        assert_eq!((m.name.as_str(), m.version.as_str()), ("pkg", "1.0"));
        assert_eq!(m.files.len(), 2);
        m.check_tree(&dir).unwrap();
        assert_eq!(m.id(), PackageManifest::of_dir(&dir).unwrap().id());

        std::fs::write(dir.join("libs/pkg.so"), b"\0asX").unwrap();
        let e = m.check_tree(&dir).unwrap_err().to_string();
        assert!(
            e.contains("pkg") && e.contains("libs/pkg.so") && e.contains("sha256"),
            "{e}"
        );

        std::fs::write(dir.join("libs/pkg.so"), b"\0asm").unwrap();
        std::fs::write(dir.join("extra"), b"x").unwrap();
        let e = m.check_tree(&dir).unwrap_err().to_string();
        assert!(e.contains("extra") && e.contains("not listed"), "{e}");

        std::fs::remove_file(dir.join("extra")).unwrap();
        std::fs::remove_file(dir.join("DESCRIPTION")).unwrap();
        let e = m.check_tree(&dir).unwrap_err().to_string();
        assert!(e.contains("DESCRIPTION is missing"), "{e}");
    }

    #[test]
    fn symlinks_are_refused_by_manifest_and_check() {
        let (_t, dir) = tree();
        let m = PackageManifest::of_dir(&dir).unwrap();
        symlink("/etc/passwd", dir.join("libs/evil")).unwrap();
        for e in [
            m.check_tree(&dir).unwrap_err().to_string(),
            PackageManifest::of_dir(&dir).unwrap_err().to_string(),
        ] {
            assert!(e.contains("libs/evil") && e.contains("symlink"), "{e}");
        }
    }

    #[test]
    fn names_must_be_r_package_names() {
        for ok in ["a", "data.table", "R6"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".a", "a/b", "..", "a.", "1a", "a b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
