//! The guest's whole filesystem view, and nothing else of the host:
//!
//! - the read-only R image at its own paths (`/usr/lib/R/...`), shared by all
//!   sandboxes ([`RoImage`]);
//! - `/tmp` and the home directory: private, in memory, capped in bytes;
//! - `/dev/{null,zero,urandom,stdin,stdout,stderr,hako-message,hako-warning}`;
//! - configured host directories, each at its guest path, through cap-std.
//!
//! Paths are normalised lexically in the guest namespace first, then routed by
//! longest prefix ([`namespace`]). The descriptor table lives here too, so the
//! syscall layer (`abi::fs`) is only argument decoding and struct encoding.

mod dev;
mod error;
mod fdtable;
mod image;
mod io;
mod mount;
mod namespace;
mod ops;
pub mod path;
mod scratch;
pub mod types;

#[cfg(test)]
mod tests;

pub use dev::{fill_random, Device};
pub use error::VfsError;
pub use image::RoImage;
pub use types::{mode, oflags, DirEntry, FdStat, FileType, Stat, StatFs, TimeSet, Timespec};

use fdtable::{FdTable, FdTableState, OpenFile, SavedFile};
use image::ImageNode;
use namespace::{MountPlan, Namespace};
use scratch::Scratch;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// `dirfd` meaning "relative to the current directory".
pub const AT_FDCWD: i32 = -100;
/// Stride of directory offsets: getdents64 records are this size and a
/// directory descriptor's offset is `records consumed * DIRENT_SIZE`, as in
/// Emscripten, so `telldir`/`seekdir`/`rewinddir` keep working.
pub const DIRENT_SIZE: u64 = 280;

/// A host directory to expose to the guest.
#[derive(Clone, Debug)]
pub struct MountSpec {
    pub host_dir: PathBuf,
    pub guest_path: String,
    pub writable: bool,
}

/// Everything a sandbox's filesystem is made from.
#[derive(Clone, Debug)]
pub struct VfsConfig {
    pub image: Arc<RoImage>,
    pub mounts: Vec<MountSpec>,
    /// Home directory, e.g. `/home/web_user`; also the initial working directory.
    pub home: String,
    /// Cap on bytes stored in `/tmp` and home together.
    pub scratch_bytes: u64,
    /// Descriptor numbers available, stdio included (at least 3).
    pub max_fds: usize,
}

/// A sandbox's filesystem state without its mounts: the scratch tree, the
/// working directory, umask and the descriptors that do not refer to a mount.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VfsState {
    scratch: Scratch,
    cwd: String,
    umask: u32,
    fds: FdTableState,
}

/// One sandbox's filesystem.
#[derive(Debug)]
pub struct Vfs {
    image: Arc<RoImage>,
    ns: Namespace,
    scratch: Scratch,
    fds: FdTable,
    cwd: String,
    umask: u32,
    max_fds: usize,
}

/// Check mounts as [`Vfs::new`] would (layout rules, host directories
/// open), without building a filesystem: lets a command line be refused
/// before any sandbox starts.
pub fn check_mounts(home: &str, mounts: &[MountSpec]) -> Result<(), VfsError> {
    let (home, plans) = plan_mounts(home, mounts.to_vec())?;
    Namespace::new(&home, plans).map(drop)
}

fn plan_mounts(home: &str, mounts: Vec<MountSpec>) -> Result<(String, Vec<MountPlan>), VfsError> {
    let home = namespace::validate_home(home)?;
    let mut plans: Vec<MountPlan> = Vec::with_capacity(mounts.len());
    for m in mounts {
        let guest = namespace::validate_mount(&m.guest_path, &home, &plans)?;
        plans.push(MountPlan {
            host_dir: m.host_dir,
            guest,
            writable: m.writable,
        });
    }
    Ok((home, plans))
}

impl Vfs {
    /// Build the namespace. Opening the mounts' host directories is the only
    /// use of ambient authority; a missing directory or a mount point that is
    /// relative, `/`, or overlaps another mount, `/tmp`, home, `/dev` or
    /// `/usr/lib/R` is an error.
    pub fn new(cfg: VfsConfig) -> Result<Vfs, VfsError> {
        if cfg.max_fds < 3 {
            return Err(VfsError::MaxFds(cfg.max_fds));
        }
        let (home, plans) = plan_mounts(&cfg.home, cfg.mounts)?;
        let ns = Namespace::new(&home, plans)?;
        let mut scratch = Scratch::new(cfg.scratch_bytes);
        for root in &ns.scratch_roots {
            scratch.ensure_dir_all(root);
        }
        Ok(Vfs {
            image: cfg.image,
            ns,
            scratch,
            fds: FdTable::new(cfg.max_fds),
            cwd: home,
            umask: 0o022,
            max_fds: cfg.max_fds,
        })
    }

    /// Capture the scratch tree, cwd, umask and non-mount descriptors.
    pub fn snapshot(&self) -> VfsState {
        VfsState {
            scratch: self.scratch.clone(),
            cwd: self.cwd.clone(),
            umask: self.umask,
            fds: self.fds.save(),
        }
    }

    /// Return to a snapshot: scratch tree, cwd, umask and descriptor table are
    /// replaced; every current descriptor (mount ones included) is closed.
    pub fn restore(&mut self, s: &VfsState) {
        // The scratch tree is replaced wholesale, so nothing to release there;
        // dropping the old descriptions closes host files.
        drop(self.fds.drain());
        self.scratch = s.scratch.clone();
        self.cwd = s.cwd.clone();
        self.umask = s.umask;
        let image = &self.image;
        self.fds = FdTable::restore(&s.fds, self.max_fds, |f| match f {
            SavedFile::Device(d) => Some(OpenFile::Device(*d)),
            SavedFile::Image { path } => match image.get(path) {
                Some(ImageNode::File(img)) => Some(OpenFile::Image {
                    path: path.clone(),
                    data: img.data.clone(),
                }),
                _ => None,
            },
            SavedFile::Scratch { ino, path } => Some(OpenFile::Scratch {
                ino: *ino,
                path: path.clone(),
            }),
            SavedFile::Dir { path } => Some(OpenFile::Dir {
                path: path.clone(),
                mount: None,
                listing: None,
            }),
        });
    }

    /// The current working directory (normalised, absolute).
    pub fn cwd(&self) -> &str {
        &self.cwd
    }

    /// Bytes currently stored in the scratch tree (`/tmp` + home).
    pub fn scratch_used(&self) -> u64 {
        self.scratch.used()
    }

    /// Release what a closed description held.
    fn release(&mut self, f: OpenFile) {
        if let OpenFile::Scratch { ino, .. } = f {
            self.scratch.close_ref(ino);
        }
    }
}
