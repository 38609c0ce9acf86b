//! Path-based operations (`open`, `stat`, `mkdir`, `rename`, …): resolve,
//! route, then act on exactly one layer. Anything that would change the image,
//! `/dev` or a synthetic directory is `EROFS`; moving between layers is `EXDEV`.

use super::dev::Device;
use super::fdtable::{Description, OpenFile};
use super::image::{ImageFile, ImageNode, IMAGE_DEV};
use super::mount::Opened;
use super::namespace::Loc;
use super::path::{self, split_last, GuestPath};
use super::types::{mode, oflags, DirEntry, FileType, Stat, StatFs, TimeSet};
use super::{Vfs, AT_FDCWD};
use crate::errno::{
    Errno, EACCES, EBADF, EBUSY, EEXIST, EINVAL, EIO, EISDIR, ENOENT, ENOTDIR, EPERM, EROFS, EXDEV,
};

/// What a base-layer (image or synthetic) path is.
enum BaseNode<'a> {
    Dir(Stat),
    File(&'a ImageFile, Stat),
}

/// Owner permission bits.
const R: u32 = 0o400;
const W: u32 = 0o200;
const X: u32 = 0o100;

/// Inode numbers of synthetic directories: stable per path, away from the
/// image's small sequential numbers.
fn synthetic_ino(abs: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in abs.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h | (1 << 62)
}

fn dir_entry(name: &str, st: &Stat) -> DirEntry {
    DirEntry {
        name: name.to_string(),
        ino: st.ino,
        kind: st.file_type(),
    }
}

fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

impl Vfs {
    /// The absolute directory a relative path is taken from.
    fn base_of(&self, dirfd: i32) -> Result<String, Errno> {
        if dirfd == AT_FDCWD {
            return Ok(self.cwd.clone());
        }
        match &self.fds.get(dirfd)?.file {
            OpenFile::Dir { path, .. } => Ok(path.clone()),
            _ => Err(ENOTDIR),
        }
    }

    /// Resolve a guest path (raw bytes) relative to `dirfd`.
    pub fn resolve_at(&self, dirfd: i32, path: &[u8]) -> Result<GuestPath, Errno> {
        if path.first() == Some(&b'/') {
            return path::resolve("/", path);
        }
        if path.is_empty() {
            return Err(ENOENT);
        }
        path::resolve(&self.base_of(dirfd)?, path)
    }

    fn base_node(&self, abs: &str) -> Result<BaseNode<'_>, Errno> {
        let img = self.image.get(abs);
        if self.ns.is_synthetic_dir(abs) {
            return Ok(BaseNode::Dir(match img {
                Some(n @ ImageNode::Dir(_)) => n.stat(),
                _ => Stat {
                    dev: IMAGE_DEV,
                    ino: synthetic_ino(abs),
                    mode: FileType::Directory.mode_bits() | 0o555,
                    nlink: 2,
                    size: 4096,
                    ..Stat::default()
                },
            }));
        }
        match img {
            Some(n @ ImageNode::Dir(_)) => Ok(BaseNode::Dir(n.stat())),
            Some(n @ ImageNode::File(f)) => Ok(BaseNode::File(f, n.stat())),
            None => Err(ENOENT),
        }
    }

    fn mount(&self, i: usize) -> Result<&super::mount::Mount, Errno> {
        self.ns.mounts.get(i).ok_or(EIO)
    }

    /// Metadata of a normalised path.
    pub(crate) fn stat_abs(&self, abs: &str, follow: bool) -> Result<Stat, Errno> {
        match self.ns.route(abs) {
            Loc::Mount(i, rel) => self.mount(i)?.stat(&rel, follow),
            Loc::Scratch => self.scratch.stat(self.scratch.lookup(abs)?),
            Loc::Dev(rest) if rest.is_empty() => Ok(Device::dir_stat()),
            Loc::Dev(rest) => Device::by_name(&rest).map(Device::stat).ok_or(ENOENT),
            Loc::Base => match self.base_node(abs)? {
                BaseNode::Dir(st) | BaseNode::File(_, st) => Ok(st),
            },
        }
    }

    fn stat_path(&self, gp: &GuestPath, follow: bool) -> Result<Stat, Errno> {
        // A trailing slash resolves the last component as a directory.
        let st = self.stat_abs(&gp.abs, follow || gp.must_be_dir)?;
        if gp.must_be_dir && !st.is_dir() {
            return Err(ENOTDIR);
        }
        Ok(st)
    }

    /// `stat`/`lstat`/`fstatat`.
    pub fn stat_at(&self, dirfd: i32, path: &[u8], follow: bool) -> Result<Stat, Errno> {
        self.stat_path(&self.resolve_at(dirfd, path)?, follow)
    }

    /// A directory's entries, `.` and `..` first.
    pub(crate) fn list_abs(&self, abs: &str) -> Result<Vec<DirEntry>, Errno> {
        let st = self.stat_abs(abs, true)?;
        if !st.is_dir() {
            return Err(ENOTDIR);
        }
        let parent = split_last(abs).map_or("/", |(p, _)| p);
        let pst = self.stat_abs(parent, true).unwrap_or(st);
        let mut out = vec![dir_entry(".", &st), dir_entry("..", &pst)];
        match self.ns.route(abs) {
            Loc::Mount(i, rel) => out.extend(self.mount(i)?.list(&rel)?),
            Loc::Scratch => out.extend(self.scratch.list(self.scratch.lookup(abs)?)?.0),
            Loc::Dev(_) => out.extend(Device::list()),
            Loc::Base => {
                let mut children = self.image.list(abs);
                for name in self.ns.synthetic_children(abs) {
                    children.retain(|e| e.name != name);
                    let cst = self
                        .stat_abs(&child_path(abs, &name), true)
                        .unwrap_or_default();
                    children.push(DirEntry {
                        name,
                        ino: cst.ino,
                        kind: FileType::Directory,
                    });
                }
                children.sort_by(|a, b| a.name.cmp(&b.name));
                out.extend(children);
            }
        }
        Ok(out)
    }

    /// List a directory by path (`.` and `..` included).
    pub fn list_dir(&self, dirfd: i32, path: &[u8]) -> Result<Vec<DirEntry>, Errno> {
        self.list_abs(&self.resolve_at(dirfd, path)?.abs)
    }

    /// Owner-bit check on a scratch node.
    fn scratch_may(&self, ino: u64, need: u32) -> Result<(), Errno> {
        if self.scratch.perm(ino)? & need == need {
            Ok(())
        } else {
            Err(EACCES)
        }
    }

    /// The scratch directory that will hold `abs`, checked for write access.
    fn scratch_parent<'a>(&self, abs: &'a str) -> Result<(u64, &'a str), Errno> {
        let (parent, name) = split_last(abs).ok_or(EBUSY)?;
        let dir = self.scratch.lookup_parent(parent)?;
        self.scratch_may(dir, W | X)?;
        Ok((dir, name))
    }

    /// `EROFS` for a base/`/dev` path that exists (or whose parent does, when
    /// creating), `ENOENT` otherwise.
    fn read_only(&self, abs: &str, creating: bool) -> Errno {
        if self.stat_abs(abs, false).is_ok() {
            return EROFS;
        }
        match split_last(abs) {
            Some((parent, _))
                if creating && self.stat_abs(parent, true).is_ok_and(|s| s.is_dir()) =>
            {
                EROFS
            }
            _ => ENOENT,
        }
    }

    /// `openat`. Returns the new descriptor.
    pub fn open(
        &mut self,
        dirfd: i32,
        path: &[u8],
        flags: u32,
        mode_arg: u32,
    ) -> Result<i32, Errno> {
        let gp = self.resolve_at(dirfd, path)?;
        let acc = flags & oflags::O_ACCMODE;
        if acc == oflags::O_ACCMODE {
            return Err(EINVAL);
        }
        let create = flags & oflags::O_CREAT != 0;
        if create && flags & oflags::O_DIRECTORY != 0 {
            return Err(EINVAL);
        }
        if create && gp.must_be_dir {
            return Err(EISDIR);
        }
        // Like Linux, run out of descriptors before touching anything.
        self.fds.lowest_free(3)?;
        let flags = if gp.must_be_dir {
            flags | oflags::O_DIRECTORY
        } else {
            flags
        };
        let perm = mode_arg & mode::PERM_MASK & !self.umask;
        let abs = gp.abs;
        let file = match self.ns.route(&abs) {
            Loc::Mount(i, rel) => match self.mount(i)?.open_path(&rel, flags, perm)? {
                Opened::File(file) => OpenFile::Mount {
                    mount: i,
                    file,
                    path: abs,
                },
                Opened::Dir => OpenFile::Dir {
                    path: abs,
                    mount: Some(i),
                    listing: None,
                },
            },
            Loc::Scratch => self.open_scratch(abs, flags, perm)?,
            Loc::Dev(rest) => open_dev(&rest, abs, flags)?,
            Loc::Base => self.open_base(abs, flags)?,
        };
        // Cannot run out: a free slot was checked above and nothing since
        // has opened a descriptor.
        self.fds.insert(
            Description::new(file, flags),
            flags & oflags::O_CLOEXEC != 0,
        )
    }

    fn open_scratch(&mut self, abs: String, flags: u32, perm: u32) -> Result<OpenFile, Errno> {
        let acc = flags & oflags::O_ACCMODE;
        let writes = acc != oflags::O_RDONLY || flags & oflags::O_TRUNC != 0;
        let ino = match self.scratch.lookup(&abs) {
            Ok(_) if flags & oflags::O_CREAT != 0 && flags & oflags::O_EXCL != 0 => {
                return Err(EEXIST)
            }
            Ok(ino) => ino,
            Err(ENOENT) if flags & oflags::O_CREAT != 0 => {
                let (dir, name) = self.scratch_parent(&abs)?;
                let ino = self.scratch.create_file(dir, name, perm)?;
                self.scratch.open_ref(ino);
                return Ok(OpenFile::Scratch { ino, path: abs });
            }
            Err(e) => return Err(e),
        };
        if self.scratch.is_dir(ino) {
            if writes {
                return Err(EISDIR);
            }
            self.scratch_may(ino, R)?;
            return Ok(OpenFile::Dir {
                path: abs,
                mount: None,
                listing: None,
            });
        }
        if flags & oflags::O_DIRECTORY != 0 {
            return Err(ENOTDIR);
        }
        if flags & oflags::O_PATH == 0 {
            if acc != oflags::O_WRONLY {
                self.scratch_may(ino, R)?;
            }
            if writes {
                self.scratch_may(ino, W)?;
            }
        }
        if flags & oflags::O_TRUNC != 0 && acc != oflags::O_RDONLY {
            self.scratch.truncate(ino, 0)?;
        }
        self.scratch.open_ref(ino);
        Ok(OpenFile::Scratch { ino, path: abs })
    }

    fn open_base(&self, abs: String, flags: u32) -> Result<OpenFile, Errno> {
        let acc = flags & oflags::O_ACCMODE;
        let writes = acc != oflags::O_RDONLY || flags & oflags::O_TRUNC != 0;
        let excl = flags & oflags::O_CREAT != 0 && flags & oflags::O_EXCL != 0;
        match self.base_node(&abs) {
            Ok(_) if excl => Err(EEXIST),
            Ok(BaseNode::Dir(_)) if writes => Err(EISDIR),
            Ok(BaseNode::Dir(_)) => Ok(OpenFile::Dir {
                path: abs,
                mount: None,
                listing: None,
            }),
            Ok(BaseNode::File(..)) if flags & oflags::O_DIRECTORY != 0 => Err(ENOTDIR),
            Ok(BaseNode::File(..)) if writes => Err(EROFS),
            Ok(BaseNode::File(f, _)) => Ok(OpenFile::Image {
                data: f.data.clone(),
                path: abs,
            }),
            Err(_) => Err(self.read_only(&abs, flags & oflags::O_CREAT != 0)),
        }
    }

    /// `mkdirat`.
    pub fn mkdir(&mut self, dirfd: i32, path: &[u8], mode_arg: u32) -> Result<(), Errno> {
        let abs = self.resolve_at(dirfd, path)?.abs;
        let perm = mode_arg & mode::PERM_MASK & !self.umask;
        match self.ns.route(&abs) {
            Loc::Mount(_, rel) if rel.is_empty() => Err(EEXIST),
            Loc::Mount(i, rel) => self.mount(i)?.mkdir(&rel, perm),
            Loc::Scratch => {
                if self.scratch.lookup(&abs).is_ok() {
                    return Err(EEXIST);
                }
                let (dir, name) = self.scratch_parent(&abs)?;
                self.scratch.mkdir(dir, name, perm).map(drop)
            }
            Loc::Dev(_) | Loc::Base => match self.stat_abs(&abs, false) {
                Ok(_) => Err(EEXIST),
                Err(_) => Err(self.read_only(&abs, true)),
            },
        }
    }

    /// `unlinkat` (`remove_dir` for `AT_REMOVEDIR`) and `rmdir`.
    pub fn unlink(&mut self, dirfd: i32, path: &[u8], remove_dir: bool) -> Result<(), Errno> {
        let gp = self.resolve_at(dirfd, path)?;
        let abs = gp.abs;
        if gp.must_be_dir && !remove_dir {
            // "file/" names a directory or nothing.
            return Err(match self.stat_abs(&abs, true) {
                Ok(st) if st.is_dir() => EISDIR,
                Ok(_) => ENOTDIR,
                Err(e) => e,
            });
        }
        if self.ns.is_anchor(&abs) || abs == "/" {
            return Err(if remove_dir { EBUSY } else { EISDIR });
        }
        match self.ns.route(&abs) {
            Loc::Mount(i, rel) if remove_dir => self.mount(i)?.rmdir(&rel),
            Loc::Mount(i, rel) => self.mount(i)?.unlink(&rel),
            Loc::Scratch => {
                let (dir, name) = self.scratch_parent(&abs)?;
                self.scratch.remove(dir, name, remove_dir)
            }
            Loc::Dev(_) | Loc::Base => Err(self.read_only(&abs, false)),
        }
    }

    /// `renameat`: within the scratch tree or within one read-write mount.
    pub fn rename(
        &mut self,
        olddirfd: i32,
        old: &[u8],
        newdirfd: i32,
        new: &[u8],
    ) -> Result<(), Errno> {
        let from = self.resolve_at(olddirfd, old)?.abs;
        let to = self.resolve_at(newdirfd, new)?.abs;
        self.stat_abs(&from, false)?;
        if self.ns.is_anchor(&from) || self.ns.is_anchor(&to) || from == "/" || to == "/" {
            return Err(EBUSY);
        }
        match (self.ns.route(&from), self.ns.route(&to)) {
            (Loc::Scratch, Loc::Scratch) => {
                let (od, on) = self.scratch_parent(&from)?;
                let (nd, nn) = self.scratch_parent(&to)?;
                self.scratch.rename(od, on, nd, nn)
            }
            (Loc::Mount(i, a), Loc::Mount(j, b)) if i == j => self.mount(i)?.rename(&a, &b),
            (Loc::Mount(i, _), _) if !self.mount(i)?.writable => Err(EROFS),
            (Loc::Dev(_) | Loc::Base, _) | (_, Loc::Dev(_) | Loc::Base) => Err(EROFS),
            _ => Err(EXDEV),
        }
    }

    /// `symlinkat`. Only read-write mounts hold symlinks, and only to
    /// downward relative targets (see [`super::mount::symlink_target_ok`]).
    pub fn symlink(&mut self, target: &[u8], dirfd: i32, path: &[u8]) -> Result<(), Errno> {
        let abs = self.resolve_at(dirfd, path)?.abs;
        let target = std::str::from_utf8(target).map_err(|_| path::EILSEQ)?;
        if target.len() > path::PATH_MAX {
            return Err(crate::errno::ENAMETOOLONG);
        }
        match self.ns.route(&abs) {
            Loc::Mount(_, rel) if rel.is_empty() => Err(EEXIST),
            Loc::Mount(i, rel) => self.mount(i)?.symlink(target, &rel),
            Loc::Scratch => Err(EPERM),
            Loc::Dev(_) | Loc::Base => match self.stat_abs(&abs, false) {
                Ok(_) => Err(EEXIST),
                Err(_) => Err(self.read_only(&abs, true)),
            },
        }
    }

    /// `readlinkat`: the target bytes, or `EINVAL` for anything not a link.
    pub fn readlink(&self, dirfd: i32, path: &[u8]) -> Result<Vec<u8>, Errno> {
        let abs = self.resolve_at(dirfd, path)?.abs;
        match self.ns.route(&abs) {
            Loc::Mount(i, rel) if !rel.is_empty() => self.mount(i)?.readlink(&rel),
            _ => {
                self.stat_abs(&abs, false)?;
                Err(EINVAL)
            }
        }
    }

    /// `faccessat`: `amode` is `F_OK` (0) or a mask of `R_OK` 4, `W_OK` 2, `X_OK` 1.
    pub fn access(&self, dirfd: i32, path: &[u8], amode: u32) -> Result<(), Errno> {
        if amode & !7 != 0 {
            return Err(EINVAL);
        }
        let gp = self.resolve_at(dirfd, path)?;
        let st = self.stat_path(&gp, true)?;
        let writable = match self.ns.route(&gp.abs) {
            Loc::Mount(i, rel) => return self.mount(i)?.access(&rel, amode),
            Loc::Scratch => true,
            Loc::Dev(rest) => !rest.is_empty(),
            Loc::Base => false,
        };
        if amode & 2 != 0 && !writable {
            return Err(EROFS);
        }
        let owner = (st.mode >> 6) & 7;
        if owner & amode != amode {
            return Err(EACCES);
        }
        Ok(())
    }

    /// `chmod`/`fchmodat`.
    pub fn chmod(
        &mut self,
        dirfd: i32,
        path: &[u8],
        mode_arg: u32,
        follow: bool,
    ) -> Result<(), Errno> {
        let gp = self.resolve_at(dirfd, path)?;
        self.stat_path(&gp, follow)?;
        self.chmod_abs(&gp.abs, mode_arg, follow)
    }

    pub(crate) fn chmod_abs(
        &mut self,
        abs: &str,
        mode_arg: u32,
        follow: bool,
    ) -> Result<(), Errno> {
        match self.ns.route(abs) {
            Loc::Mount(i, rel) => self.mount(i)?.chmod(&rel, mode_arg, follow),
            Loc::Scratch => {
                let ino = self.scratch.lookup(abs)?;
                self.scratch.set_perm(ino, mode_arg)
            }
            Loc::Dev(_) | Loc::Base => Err(self.read_only(abs, false)),
        }
    }

    /// `chown` family: there is one user, so a successful no-op where the
    /// file is writable.
    pub fn chown(&mut self, dirfd: i32, path: &[u8], follow: bool) -> Result<(), Errno> {
        let gp = self.resolve_at(dirfd, path)?;
        self.stat_path(&gp, follow)?;
        self.chown_abs(&gp.abs)
    }

    pub(crate) fn chown_abs(&self, abs: &str) -> Result<(), Errno> {
        match self.ns.route(abs) {
            Loc::Mount(i, _) => self.mount(i)?.check_writable(),
            Loc::Scratch => Ok(()),
            Loc::Dev(_) | Loc::Base => Err(EROFS),
        }
    }

    /// `truncate`.
    pub fn truncate(&mut self, path: &[u8], len: i64) -> Result<(), Errno> {
        let len = u64::try_from(len).map_err(|_| EINVAL)?;
        let gp = self.resolve_at(AT_FDCWD, path)?;
        let st = self.stat_path(&gp, true)?;
        if st.is_dir() {
            return Err(EISDIR);
        }
        match self.ns.route(&gp.abs) {
            Loc::Mount(i, rel) => self.mount(i)?.truncate(&rel, len),
            Loc::Scratch => {
                let ino = self.scratch.lookup(&gp.abs)?;
                self.scratch_may(ino, W)?;
                self.scratch.truncate(ino, len)
            }
            Loc::Dev(_) => Err(EINVAL),
            Loc::Base => Err(EROFS),
        }
    }

    /// `utimensat` on a path.
    pub fn utimens(
        &mut self,
        dirfd: i32,
        path: &[u8],
        atime: TimeSet,
        mtime: TimeSet,
        follow: bool,
    ) -> Result<(), Errno> {
        let gp = self.resolve_at(dirfd, path)?;
        self.stat_path(&gp, follow)?;
        self.utimens_abs(&gp.abs, atime, mtime, follow)
    }

    pub(crate) fn utimens_abs(
        &mut self,
        abs: &str,
        atime: TimeSet,
        mtime: TimeSet,
        follow: bool,
    ) -> Result<(), Errno> {
        if atime == TimeSet::Omit && mtime == TimeSet::Omit {
            return Ok(());
        }
        match self.ns.route(abs) {
            Loc::Mount(i, rel) => {
                self.mount(i)?
                    .set_times(&rel, atime.resolve(), mtime.resolve(), follow)
            }
            Loc::Scratch => {
                let ino = self.scratch.lookup(abs)?;
                self.scratch
                    .set_times(ino, atime.resolve(), mtime.resolve())
            }
            // Devices have no stored times; touching one is harmless.
            Loc::Dev(rest) if !rest.is_empty() => Ok(()),
            Loc::Dev(_) | Loc::Base => Err(EROFS),
        }
    }

    /// `chdir`.
    pub fn chdir(&mut self, path: &[u8]) -> Result<(), Errno> {
        let gp = self.resolve_at(AT_FDCWD, path)?;
        if !self.stat_abs(&gp.abs, true)?.is_dir() {
            return Err(ENOTDIR);
        }
        self.cwd = gp.abs;
        Ok(())
    }

    /// `fchdir`.
    pub fn fchdir(&mut self, fd: i32) -> Result<(), Errno> {
        match &self.fds.get(fd)?.file {
            OpenFile::Dir { path, .. } => {
                self.cwd = path.clone();
                Ok(())
            }
            _ => Err(ENOTDIR),
        }
    }

    /// `statfs` on a path.
    pub fn statfs(&self, path: &[u8]) -> Result<StatFs, Errno> {
        let gp = self.resolve_at(AT_FDCWD, path)?;
        self.stat_path(&gp, true)?;
        self.statfs_abs(&gp.abs)
    }

    pub(crate) fn statfs_abs(&self, abs: &str) -> Result<StatFs, Errno> {
        let ro = |blocks: u64| StatFs {
            fs_type: 0x7275_6e66,
            bsize: 4096,
            blocks,
            files: blocks,
            namelen: path::NAME_MAX as u32,
            readonly: true,
            ..StatFs::default()
        };
        Ok(match self.ns.route(abs) {
            Loc::Mount(i, _) => self.mount(i)?.statfs(),
            Loc::Scratch => {
                let free = self.scratch.cap().saturating_sub(self.scratch.used()) / 4096;
                StatFs {
                    fs_type: 0x0102_1994, // tmpfs
                    bsize: 4096,
                    blocks: self.scratch.cap() / 4096,
                    bfree: free,
                    bavail: free,
                    files: self.scratch.cap() / super::scratch::NODE_COST,
                    ffree: self.scratch.cap().saturating_sub(self.scratch.used())
                        / super::scratch::NODE_COST,
                    namelen: path::NAME_MAX as u32,
                    readonly: false,
                }
            }
            Loc::Dev(_) => ro(0),
            Loc::Base => ro(self.image.total_bytes() / 4096),
        })
    }

    /// `umask`: set, returning the previous mask.
    pub fn umask(&mut self, mask: u32) -> u32 {
        std::mem::replace(&mut self.umask, mask & 0o777)
    }

    /// Descriptor sanity for calls that only need `fd` to be open.
    pub fn check_fd(&self, fd: i32) -> Result<(), Errno> {
        self.fds.get(fd).map(drop).map_err(|_| EBADF)
    }
}

/// Open something below `/dev`.
fn open_dev(rest: &str, abs: String, flags: u32) -> Result<OpenFile, Errno> {
    let acc = flags & oflags::O_ACCMODE;
    let excl = flags & oflags::O_CREAT != 0 && flags & oflags::O_EXCL != 0;
    if rest.is_empty() {
        if excl {
            return Err(EEXIST);
        }
        if acc != oflags::O_RDONLY {
            return Err(EISDIR);
        }
        return Ok(OpenFile::Dir {
            path: abs,
            mount: None,
            listing: None,
        });
    }
    match Device::by_name(rest) {
        Some(_) if excl => Err(EEXIST),
        Some(_) if flags & oflags::O_DIRECTORY != 0 => Err(ENOTDIR),
        Some(d) => Ok(OpenFile::Device(d)),
        None if rest.contains('/') => {
            let first = rest.split('/').next().unwrap_or_default();
            Err(if Device::by_name(first).is_some() {
                ENOTDIR
            } else {
                ENOENT
            })
        }
        None if flags & oflags::O_CREAT != 0 => Err(EROFS),
        None => Err(ENOENT),
    }
}
