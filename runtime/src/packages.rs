//! Package sets: the compiled R packages a sandbox may load. Each package is
//! an installed package tree (as `R CMD INSTALL` leaves it: `DESCRIPTION`,
//! `R/`, `libs/NAME.so` as a wasm side module, ...) described by a manifest
//! of its files' sha256. The manifest's own hash names the tree, so a set is
//! content-addressed: the runtime checks every file against its manifest
//! before the tree is mounted read-only, and caches compiled side modules by
//! the file's hash.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

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
