//! Host directories mounted into the guest. Every access goes through the
//! mount's cap-std `Dir`, so `..`, absolute symlinks and symlink chains that
//! leave the directory are refused by construction; no path here ever reaches
//! an ambient host call. Read-only mounts refuse every mutation with `EROFS`
//! before the host is asked.

use super::types::{oflags, DirEntry, FileType, Stat, StatFs, Timespec};
use crate::errno::{
    from_io, Errno, EACCES, EBUSY, EEXIST, EINVAL, EISDIR, ELOOP, ENOENT, ENOTDIR, ENOTSUP, EPERM,
    EROFS,
};
use cap_fs_ext::{
    DirExt, FollowSymlinks, OpenOptionsFollowExt, OpenOptionsSyncExt, SystemTimeSpec,
};
use cap_std::fs::{
    Dir, DirBuilder, DirBuilderExt, Metadata, MetadataExt, OpenOptions, OpenOptionsExt,
    Permissions, PermissionsExt,
};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A host directory at a guest path.
#[derive(Debug)]
pub(crate) struct Mount {
    /// Normalised absolute guest path of the mount root.
    pub guest: String,
    pub writable: bool,
    /// `st_dev` reported for its files.
    pub dev: u32,
    dir: Dir,
}

/// What opening a mount path produced.
pub(crate) enum Opened {
    File(std::fs::File),
    Dir,
}

/// The only mode bits that ever reach a host file: permissions. Setuid,
/// setgid and sticky bits from the guest are dropped on every path that sets
/// a mode (chmod, fchmod, open with O_CREAT, mkdir), since a setuid file left
/// in a volunteer's directory would run with its owner's rights.
pub(crate) const HOST_PERM: u32 = 0o777;

fn p(rel: &str) -> &Path {
    Path::new(if rel.is_empty() { "." } else { rel })
}

fn err(e: std::io::Error) -> Errno {
    from_io(&e)
}

/// Whether symlink `target`, read from the link at `rel` (relative to the
/// mount root), names only paths inside the mount when followed lexically:
/// not absolute, and no prefix of it climbs above the root.
fn target_stays_inside(rel: &str, target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        return false;
    }
    // Depth of the link's directory below the mount root.
    let mut depth = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .count()
        .saturating_sub(1) as isize;
    for c in target.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

/// Convert host metadata to the guest's view: no host uid/gid, and no write
/// bits on a read-only mount.
pub(crate) fn to_stat(m: &Metadata, dev: u32, writable: bool) -> Stat {
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_file() {
        FileType::Regular
    } else {
        FileType::CharDevice
    };
    let mut perm = m.mode() & 0o7777;
    if !writable {
        perm &= !0o222;
    }
    let ts = |sec: i64, nsec: i64| Timespec {
        sec,
        nsec: u32::try_from(nsec).unwrap_or(0),
    };
    Stat {
        dev,
        ino: m.ino(),
        mode: kind.mode_bits() | perm,
        nlink: u32::try_from(m.nlink()).unwrap_or(u32::MAX),
        uid: 0,
        gid: 0,
        rdev: 0,
        size: m.size(),
        atime: ts(m.atime(), m.atime_nsec()),
        mtime: ts(m.mtime(), m.mtime_nsec()),
        ctime: ts(m.ctime(), m.ctime_nsec()),
    }
}

/// A symlink target a guest may create: relative and strictly downward
/// (no `..` at all). A lexical "stays inside" check is not enough once links
/// exist: a later rename of the link's directory, or a symlinked parent, can
/// move a `..`-target's resolution out of the mount for host users following
/// it. Downward-only targets stay inside wherever the link ends up.
pub(crate) fn symlink_target_ok(target: &str) -> bool {
    !target.is_empty() && !target.starts_with('/') && target.split('/').all(|c| c != "..")
}

fn to_spec(t: Option<Timespec>) -> Result<Option<SystemTimeSpec>, Errno> {
    match t {
        None => Ok(None),
        Some(t) => {
            let st = t.to_system().ok_or(EINVAL)?;
            Ok(Some(SystemTimeSpec::Absolute(
                cap_std::time::SystemTime::from_std(st),
            )))
        }
    }
}

impl Mount {
    /// Open the host directory: the only ambient-authority call in the VFS.
    pub fn open(
        host_dir: &Path,
        guest: String,
        writable: bool,
        dev: u32,
    ) -> std::io::Result<Mount> {
        let dir = Dir::open_ambient_dir(host_dir, cap_std::ambient_authority())?;
        Ok(Mount {
            guest,
            writable,
            dev,
            dir,
        })
    }

    fn rw(&self) -> Result<(), Errno> {
        if self.writable {
            Ok(())
        } else {
            Err(EROFS)
        }
    }

    fn meta(&self, rel: &str, follow: bool) -> Result<Metadata, Errno> {
        if follow {
            self.dir.metadata(p(rel)).map_err(err)
        } else {
            self.dir.symlink_metadata(p(rel)).map_err(err)
        }
    }

    pub fn stat(&self, rel: &str, follow: bool) -> Result<Stat, Errno> {
        Ok(to_stat(&self.meta(rel, follow)?, self.dev, self.writable))
    }

    pub fn file_stat(&self, f: &std::fs::File) -> Result<Stat, Errno> {
        let m = Metadata::from_file(f).map_err(err)?;
        Ok(to_stat(&m, self.dev, self.writable))
    }

    /// Open `rel` with guest open flags; `perm` is already masked by umask.
    pub fn open_path(&self, rel: &str, flags: u32, perm: u32) -> Result<Opened, Errno> {
        let acc = flags & oflags::O_ACCMODE;
        let nofollow = flags & oflags::O_NOFOLLOW != 0;
        let create = flags & oflags::O_CREAT != 0;
        let excl = create && flags & oflags::O_EXCL != 0;
        let writes = acc != oflags::O_RDONLY || flags & oflags::O_TRUNC != 0;
        let existing = match self.meta(rel, !nofollow && !excl) {
            Ok(m) => Some(m),
            Err(ENOENT) if create => None,
            Err(e) => return Err(e),
        };
        match &existing {
            Some(_) if excl => return Err(EEXIST),
            Some(m) if m.is_dir() => {
                return if writes { Err(EISDIR) } else { Ok(Opened::Dir) };
            }
            Some(_) if flags & oflags::O_DIRECTORY != 0 => return Err(ENOTDIR),
            Some(m) if m.file_type().is_symlink() => return Err(ELOOP),
            // FIFOs, sockets and devices: opening one could block the host.
            Some(m) if !m.is_file() => return Err(EACCES),
            Some(_) if writes => self.rw()?,
            Some(_) => {}
            None => {
                self.rw()?;
                if flags & oflags::O_DIRECTORY != 0 {
                    return Err(ENOENT);
                }
            }
        }
        let mut o = OpenOptions::new();
        o.read(acc == oflags::O_RDONLY || acc == oflags::O_RDWR)
            .write(acc == oflags::O_WRONLY || acc == oflags::O_RDWR)
            .append(flags & oflags::O_APPEND != 0)
            .truncate(flags & oflags::O_TRUNC != 0 && acc != oflags::O_RDONLY)
            .mode(perm & HOST_PERM)
            .nonblock(true);
        if nofollow {
            o.follow(FollowSymlinks::No);
        }
        if existing.is_none() {
            if acc == oflags::O_RDONLY {
                // The host insists on write access to create; create, then
                // reopen read-only below.
                let mut c = OpenOptions::new();
                c.write(true)
                    .create_new(true)
                    .mode(perm & HOST_PERM)
                    .follow(FollowSymlinks::No);
                drop(self.dir.open_with(p(rel), &c).map_err(err)?);
            } else {
                o.create_new(true);
            }
        }
        let f = self.dir.open_with(p(rel), &o).map_err(err)?.into_std();
        // The name may have changed type between the check and the open.
        let m = Metadata::from_file(&f).map_err(err)?;
        if !m.is_file() {
            return Err(EACCES);
        }
        Ok(Opened::File(f))
    }

    pub fn list(&self, rel: &str) -> Result<Vec<DirEntry>, Errno> {
        let mut out = Vec::new();
        for e in self.dir.read_dir(p(rel)).map_err(err)? {
            let e = e.map_err(err)?;
            let name = e.file_name();
            // The guest namespace is UTF-8; other names cannot be addressed.
            let Some(name) = name.to_str() else { continue };
            let Ok(m) = e.metadata() else { continue };
            let st = to_stat(&m, self.dev, self.writable);
            out.push(DirEntry {
                name: name.to_string(),
                ino: st.ino,
                kind: st.file_type(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn mkdir(&self, rel: &str, perm: u32) -> Result<(), Errno> {
        self.rw()?;
        let mut b = DirBuilder::new();
        b.mode(perm & HOST_PERM);
        self.dir.create_dir_with(p(rel), &b).map_err(err)
    }

    pub fn unlink(&self, rel: &str) -> Result<(), Errno> {
        self.rw()?;
        if self.meta(rel, false)?.is_dir() {
            return Err(EISDIR);
        }
        self.dir.remove_file(p(rel)).map_err(err)
    }

    pub fn rmdir(&self, rel: &str) -> Result<(), Errno> {
        self.rw()?;
        if rel.is_empty() {
            return Err(EBUSY);
        }
        self.dir.remove_dir(p(rel)).map_err(err)
    }

    pub fn rename(&self, from: &str, to: &str) -> Result<(), Errno> {
        self.rw()?;
        if from.is_empty() || to.is_empty() {
            return Err(EBUSY);
        }
        self.dir.rename(p(from), &self.dir, p(to)).map_err(err)
    }

    pub fn symlink(&self, target: &str, rel: &str) -> Result<(), Errno> {
        self.rw()?;
        if !symlink_target_ok(target) {
            return Err(EPERM);
        }
        self.dir.symlink(target, p(rel)).map_err(err)
    }

    /// A link's target, only if it stays inside the mount. A target that is
    /// absolute or climbs above the mount root (`../outside/secret.txt`)
    /// would name host paths the guest cannot see, so such a link reads as
    /// `EINVAL`, as a non-link does (R's `Sys.readlink()` shows `""`); the
    /// guest still sees that it is a link (`lstat`) but learns no host name.
    pub fn readlink(&self, rel: &str) -> Result<Vec<u8>, Errno> {
        let t = match self.dir.read_link(p(rel)) {
            Ok(t) => t,
            // cap-std refuses absolute targets: hidden the same way.
            Err(_)
                if self
                    .meta(rel, false)
                    .is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                return Err(EINVAL)
            }
            Err(e) => return Err(err(e)),
        };
        let t = t.as_os_str().as_bytes();
        if !target_stays_inside(rel, t) {
            return Err(EINVAL);
        }
        Ok(t.to_vec())
    }

    pub fn chmod(&self, rel: &str, perm: u32, follow: bool) -> Result<(), Errno> {
        self.rw()?;
        if !follow && self.meta(rel, false)?.file_type().is_symlink() {
            return Err(ENOTSUP);
        }
        self.dir
            .set_permissions(p(rel), Permissions::from_mode(perm & HOST_PERM))
            .map_err(err)
    }

    pub fn truncate(&self, rel: &str, len: u64) -> Result<(), Errno> {
        self.rw()?;
        let m = self.meta(rel, true)?;
        if m.is_dir() {
            return Err(EISDIR);
        }
        if !m.is_file() {
            return Err(EACCES);
        }
        let mut o = OpenOptions::new();
        o.write(true).nonblock(true);
        let f = self.dir.open_with(p(rel), &o).map_err(err)?;
        f.set_len(len).map_err(err)
    }

    pub fn set_times(
        &self,
        rel: &str,
        atime: Option<Timespec>,
        mtime: Option<Timespec>,
        follow: bool,
    ) -> Result<(), Errno> {
        self.rw()?;
        let (a, m) = (to_spec(atime)?, to_spec(mtime)?);
        if follow {
            self.dir.set_times(p(rel), a, m).map_err(err)
        } else {
            self.dir.set_symlink_times(p(rel), a, m).map_err(err)
        }
    }

    /// `access(2)` against the owner bits (the host's uid means nothing to the
    /// guest); `W_OK` on a read-only mount is `EROFS`.
    pub fn access(&self, rel: &str, amode: u32) -> Result<(), Errno> {
        let st = self.stat(rel, true)?;
        if amode & 2 != 0 {
            self.rw()?;
        }
        if (st.mode >> 6) & amode & 7 != amode & 7 {
            return Err(EACCES);
        }
        Ok(())
    }

    pub fn statfs(&self) -> StatFs {
        StatFs {
            fs_type: 0x6573_7466,
            bsize: 4096,
            blocks: 1 << 20,
            bfree: if self.writable { 1 << 19 } else { 0 },
            bavail: if self.writable { 1 << 19 } else { 0 },
            files: 1 << 20,
            ffree: 1 << 19,
            namelen: 255,
            readonly: !self.writable,
        }
    }

    /// Mutations through an open descriptor follow the same rule as by path.
    pub fn check_writable(&self) -> Result<(), Errno> {
        self.rw()
    }
}
