//! The one error type of this crate, worded for the person running `hako`.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::{BINARYEN_VERSION, WEBR_VERSION};

/// Everything that can go wrong opening, verifying or fetching the assets.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("no webR assets at {dir}: run `hako assets fetch`")]
    NotFound { dir: PathBuf },

    #[error(
        "webR assets at {dir} are incomplete ({reason}): run `hako assets fetch` to rebuild them"
    )]
    Partial { dir: PathBuf, reason: String },

    #[error(
        "webR assets at {dir} were built for {found}, but this hako needs webR {WEBR_VERSION} \
         translated with binaryen {BINARYEN_VERSION}: run `hako assets fetch`"
    )]
    WrongVersion { dir: PathBuf, found: String },

    #[error(
        "webR assets at {dir} are damaged: {}; run `hako assets fetch` to rebuild them",
        ProblemList(problems)
    )]
    Damaged {
        dir: PathBuf,
        problems: Vec<FileProblem>,
    },

    #[error(
        "npm package {package}: the tarball's integrity is {actual}, not the pinned {expected}; \
         refusing to use it"
    )]
    Integrity {
        package: String,
        expected: String,
        actual: String,
    },

    #[error("could not get npm package {package}: {detail}")]
    Npm { package: String, detail: String },

    #[error("tarball {archive} is unreadable: {detail}")]
    Tarball { archive: String, detail: String },

    #[error("tarball {archive} has an unsafe entry {entry:?} (absolute or containing `..`); refusing it")]
    UnsafeTarPath { archive: String, entry: String },

    #[error("npm package {package} lacks {path}")]
    MissingFromPackage { package: String, path: String },

    #[error("wasm module {module}: {detail}")]
    Wasm { module: String, detail: String },

    #[error("translating {module} to exnref with binaryen's wasm-opt failed: {detail}")]
    Translate { module: String, detail: String },

    #[error("files embedded in R.wasm: {detail}")]
    EmbeddedFiles { detail: String },

    #[error("file-packager image {image}: {detail}")]
    VfsImage { image: String, detail: String },

    #[error("two sources provide the same asset file {path}")]
    DuplicateFile { path: String },

    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl AssetError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| AssetError::Io {
            action,
            path,
            source,
        }
    }
}

/// One file of an asset dir that does not match its manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// Path relative to the asset dir, as in the manifest.
    pub path: String,
    pub kind: ProblemKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    Missing,
    WrongSize { expected: u64, actual: u64 },
    WrongHash,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ProblemKind::Missing => write!(f, "{} is missing", self.path),
            ProblemKind::WrongSize { expected, actual } => {
                write!(f, "{} has {actual} bytes, expected {expected}", self.path)
            }
            ProblemKind::WrongHash => write!(f, "{} fails its sha256 check", self.path),
        }
    }
}

/// Lists the first few problems so a wiped cache does not print a thousand lines.
struct ProblemList<'a>(&'a [FileProblem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 5;
        for (i, p) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{p}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, " and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}
