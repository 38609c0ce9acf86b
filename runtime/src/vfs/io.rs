//! Descriptor-based operations: read/write/seek, getdents, fstat and the
//! descriptor-table calls (dup, fcntl flags). Stdio behaves like a pipe
//! (`ESPIPE` on seek and positional I/O), which together with its fdstat
//! filetype keeps the guest's `isatty` false.

use super::dev::Device;
use super::fdtable::{Description, OpenFile};
use super::types::{oflags, DirEntry, FdStat, Stat, StatFs, TimeSet};
use super::{Vfs, DIRENT_SIZE};
use crate::errno::{
    from_io, Errno, EBADF, EFBIG, EINVAL, EIO, EISDIR, ENOTDIR, ENOTSUP, EPERM, EROFS, ESPIPE,
};
use crate::output::Output;
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};

/// WASI rights bits reported by `fd_fdstat_get`.
mod rights {
    pub const FD_READ: u64 = 1 << 1;
    pub const FD_SEEK: u64 = 1 << 2;
    pub const FD_TELL: u64 = 1 << 5;
    pub const FD_WRITE: u64 = 1 << 6;
    pub const FD_READDIR: u64 = 1 << 14;
    pub const FD_FILESTAT_GET: u64 = 1 << 21;
}

fn is_stdio(d: Device) -> bool {
    matches!(d, Device::Stdin | Device::Stdout | Device::Stderr)
}

impl Vfs {
    /// `close`.
    pub fn close(&mut self, fd: i32) -> Result<(), Errno> {
        if let Some(f) = self.fds.close(fd)? {
            self.release(f);
        }
        Ok(())
    }

    /// `read` at the descriptor's offset, advancing it.
    pub fn read(&mut self, fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
        self.read_impl(fd, buf, None)
    }

    /// `pread`: at `off`, offset unchanged.
    pub fn pread(&mut self, fd: i32, buf: &mut [u8], off: u64) -> Result<usize, Errno> {
        self.read_impl(fd, buf, Some(off))
    }

    fn read_impl(&mut self, fd: i32, buf: &mut [u8], at: Option<u64>) -> Result<usize, Errno> {
        let Vfs { fds, scratch, .. } = self;
        let d = fds.get_mut(fd)?;
        if !d.readable() {
            return Err(EBADF);
        }
        let off = at.unwrap_or(d.pos);
        let n = match &mut d.file {
            OpenFile::Device(dev) if at.is_some() && is_stdio(*dev) => return Err(ESPIPE),
            OpenFile::Device(dev) => return dev.read(buf),
            OpenFile::Image { data, .. } => {
                let avail = usize::try_from(off)
                    .ok()
                    .and_then(|o| data.get(o..))
                    .unwrap_or_default();
                let n = avail.len().min(buf.len());
                buf[..n].copy_from_slice(&avail[..n]);
                n
            }
            OpenFile::Scratch { ino, .. } => scratch.read_at(*ino, off, buf)?,
            OpenFile::Mount { file, .. } => file.read_at(buf, off).map_err(|e| from_io(&e))?,
            OpenFile::Dir { .. } => return Err(EISDIR),
        };
        if at.is_none() {
            d.pos = off.saturating_add(n as u64);
        }
        Ok(n)
    }

    /// `write` at the descriptor's offset (or the end, with `O_APPEND`).
    pub fn write(&mut self, fd: i32, data: &[u8], out: &mut Output) -> Result<usize, Errno> {
        self.write_impl(fd, data, None, out)
    }

    /// `pwrite`: at `off`, offset unchanged.
    pub fn pwrite(
        &mut self,
        fd: i32,
        data: &[u8],
        off: u64,
        out: &mut Output,
    ) -> Result<usize, Errno> {
        self.write_impl(fd, data, Some(off), out)
    }

    fn write_impl(
        &mut self,
        fd: i32,
        data: &[u8],
        at: Option<u64>,
        out: &mut Output,
    ) -> Result<usize, Errno> {
        let Vfs {
            fds, scratch, ns, ..
        } = self;
        let d = fds.get_mut(fd)?;
        if !d.writable() {
            return Err(EBADF);
        }
        let append = d.flags & oflags::O_APPEND != 0;
        match &mut d.file {
            OpenFile::Device(dev) if at.is_some() && is_stdio(*dev) => Err(ESPIPE),
            OpenFile::Device(dev) => Ok(dev.write(data, out)),
            OpenFile::Image { .. } => Err(EBADF),
            OpenFile::Dir { .. } => Err(EISDIR),
            _ if data.is_empty() => Ok(0),
            OpenFile::Scratch { ino, .. } => {
                let off = match at {
                    Some(off) => off,
                    None if append => scratch.size(*ino)?,
                    None => d.pos,
                };
                let n = scratch.write_at(*ino, off, data)?;
                if at.is_none() {
                    d.pos = off.saturating_add(n as u64);
                }
                Ok(n)
            }
            OpenFile::Mount { mount, file, .. } => {
                ns.mounts.get(*mount).ok_or(EIO)?.check_writable()?;
                if append && at.is_none() {
                    // The host descriptor is O_APPEND: it writes at the end.
                    let n = (&*file).write(data).map_err(|e| from_io(&e))?;
                    d.pos = file.metadata().map_err(|e| from_io(&e))?.len();
                    Ok(n)
                } else {
                    let off = at.unwrap_or(d.pos);
                    let n = file.write_at(data, off).map_err(|e| from_io(&e))?;
                    if at.is_none() {
                        d.pos = off.saturating_add(n as u64);
                    }
                    Ok(n)
                }
            }
        }
    }

    /// `lseek`; `whence` 0 SET, 1 CUR, 2 END. Returns the new offset.
    pub fn seek(&mut self, fd: i32, offset: i64, whence: u32) -> Result<u64, Errno> {
        let Vfs { fds, scratch, .. } = self;
        let d = fds.get_mut(fd)?;
        let size = match &mut d.file {
            OpenFile::Device(dev) if is_stdio(*dev) => return Err(ESPIPE),
            OpenFile::Device(_) => return Ok(0),
            OpenFile::Image { data, .. } => data.len() as u64,
            OpenFile::Scratch { ino, .. } => scratch.size(*ino)?,
            OpenFile::Mount { file, .. } => file.metadata().map_err(|e| from_io(&e))?.len(),
            OpenFile::Dir { listing, .. } => {
                let new = match whence {
                    0 => u64::try_from(offset).map_err(|_| EINVAL)?,
                    1 => d.pos.checked_add_signed(offset).ok_or(EINVAL)?,
                    _ => return Err(EINVAL),
                };
                if new == 0 {
                    // rewinddir: list afresh.
                    *listing = None;
                }
                d.pos = new;
                return Ok(new);
            }
        };
        let base = match whence {
            0 => 0,
            1 => d.pos,
            2 => size,
            _ => return Err(EINVAL),
        };
        let new = base.checked_add_signed(offset).ok_or(EINVAL)?;
        if i64::try_from(new).is_err() {
            return Err(EINVAL);
        }
        d.pos = new;
        Ok(new)
    }

    /// Next directory entries of `fd`, at most `max` of them, with the index
    /// of the first (its `d_off` is `(index + 1) * DIRENT_SIZE`).
    pub fn getdents(&mut self, fd: i32, max: usize) -> Result<(Vec<DirEntry>, u64), Errno> {
        let (path, fresh) = match &self.fds.get(fd)?.file {
            OpenFile::Dir { path, listing, .. } => (path.clone(), listing.is_none()),
            _ => return Err(ENOTDIR),
        };
        if fresh {
            let list = self.list_abs(&path)?;
            if let OpenFile::Dir { listing, .. } = &mut self.fds.get_mut(fd)?.file {
                *listing = Some(list);
            }
        }
        let d = self.fds.get_mut(fd)?;
        let OpenFile::Dir {
            listing: Some(list),
            ..
        } = &d.file
        else {
            return Err(EIO);
        };
        let start = d.pos / DIRENT_SIZE;
        let skip = usize::try_from(start).unwrap_or(usize::MAX);
        if max == 0 && skip < list.len() {
            // Buffer too small for one record.
            return Err(EINVAL);
        }
        let out: Vec<DirEntry> = list.iter().skip(skip).take(max).cloned().collect();
        d.pos = (start.saturating_add(out.len() as u64)).saturating_mul(DIRENT_SIZE);
        Ok((out, start))
    }

    /// `fstat`.
    pub fn fstat(&self, fd: i32) -> Result<Stat, Errno> {
        match &self.fds.get(fd)?.file {
            OpenFile::Device(d) => Ok(d.stat()),
            OpenFile::Image { path, .. } | OpenFile::Dir { path, .. } => self.stat_abs(path, true),
            OpenFile::Scratch { ino, .. } => self.scratch.stat(*ino),
            OpenFile::Mount { mount, file, .. } => {
                self.ns.mounts.get(*mount).ok_or(EIO)?.file_stat(file)
            }
        }
    }

    /// What `fd_fdstat_get` reports. Nothing reports a character device:
    /// Emscripten's `isatty` is `filetype == CHARACTER_DEVICE`.
    pub fn fdstat(&self, fd: i32) -> Result<FdStat, Errno> {
        let d = self.fds.get(fd)?;
        let mut r = 0;
        if d.readable() {
            r |= rights::FD_READ;
        }
        if d.writable() {
            r |= rights::FD_WRITE;
        }
        let filetype = match &d.file {
            OpenFile::Device(_) => 0,
            OpenFile::Dir { .. } => {
                r |= rights::FD_READDIR | rights::FD_FILESTAT_GET;
                3
            }
            _ => {
                r |= rights::FD_SEEK | rights::FD_TELL | rights::FD_FILESTAT_GET;
                4
            }
        };
        let mut flags = 0;
        if d.flags & oflags::O_APPEND != 0 {
            flags |= 1;
        }
        if d.flags & oflags::O_NONBLOCK != 0 {
            flags |= 4;
        }
        Ok(FdStat {
            filetype,
            flags,
            rights: r,
        })
    }

    /// `ftruncate`.
    pub fn ftruncate(&mut self, fd: i32, len: i64) -> Result<(), Errno> {
        let len = u64::try_from(len).map_err(|_| EINVAL)?;
        let Vfs {
            fds, scratch, ns, ..
        } = self;
        let d = fds.get(fd)?;
        if !d.writable() {
            return Err(EINVAL);
        }
        match &d.file {
            OpenFile::Scratch { ino, .. } => scratch.truncate(*ino, len),
            OpenFile::Mount { mount, file, .. } => {
                ns.mounts.get(*mount).ok_or(EIO)?.check_writable()?;
                file.set_len(len).map_err(|e| from_io(&e))
            }
            OpenFile::Dir { .. } => Err(EISDIR),
            OpenFile::Device(_) | OpenFile::Image { .. } => Err(EINVAL),
        }
    }

    /// `fallocate` mode 0: grow the file to at least `off + len`.
    pub fn fallocate(&mut self, fd: i32, mode: i32, off: i64, len: i64) -> Result<(), Errno> {
        if mode != 0 {
            return Err(ENOTSUP);
        }
        if off < 0 || len <= 0 {
            return Err(EINVAL);
        }
        let end = off.checked_add(len).ok_or(EFBIG)?;
        let size = self.fstat(fd)?.size;
        if u64::try_from(end).is_ok_and(|e| e > size) {
            self.ftruncate(fd, end)?;
        }
        Ok(())
    }

    /// `fchmod`.
    pub fn fchmod(&mut self, fd: i32, mode: u32) -> Result<(), Errno> {
        let path = match &self.fds.get(fd)?.file {
            OpenFile::Scratch { ino, .. } => return self.scratch.set_perm(*ino, mode),
            OpenFile::Mount { mount, file, .. } => {
                self.ns.mounts.get(*mount).ok_or(EIO)?.check_writable()?;
                let perm = std::fs::Permissions::from_mode(mode & super::mount::HOST_PERM);
                return file.set_permissions(perm).map_err(|e| from_io(&e));
            }
            OpenFile::Dir { path, .. } => path.clone(),
            OpenFile::Image { .. } => return Err(EROFS),
            OpenFile::Device(_) => return Err(EPERM),
        };
        self.chmod_abs(&path, mode, true)
    }

    /// `fchown`: a no-op where the file may be changed.
    pub fn fchown(&mut self, fd: i32) -> Result<(), Errno> {
        match &self.fds.get(fd)?.file {
            OpenFile::Scratch { .. } => Ok(()),
            OpenFile::Mount { mount, .. } => {
                self.ns.mounts.get(*mount).ok_or(EIO)?.check_writable()
            }
            OpenFile::Dir { path, .. } => self.chown_abs(path),
            OpenFile::Image { .. } => Err(EROFS),
            OpenFile::Device(_) => Err(EPERM),
        }
    }

    /// `futimens` (`utimensat` with a NULL path).
    pub fn futimens(&mut self, fd: i32, atime: TimeSet, mtime: TimeSet) -> Result<(), Errno> {
        let path = match &self.fds.get(fd)?.file {
            OpenFile::Scratch { ino, .. } => {
                return self
                    .scratch
                    .set_times(*ino, atime.resolve(), mtime.resolve());
            }
            OpenFile::Mount { mount, file, .. } => {
                self.ns.mounts.get(*mount).ok_or(EIO)?.check_writable()?;
                let mut t = std::fs::FileTimes::new();
                if let Some(a) = atime.resolve() {
                    t = t.set_accessed(a.to_system().ok_or(EINVAL)?);
                }
                if let Some(m) = mtime.resolve() {
                    t = t.set_modified(m.to_system().ok_or(EINVAL)?);
                }
                return file.set_times(t).map_err(|e| from_io(&e));
            }
            OpenFile::Dir { path, .. } => path.clone(),
            OpenFile::Image { .. } => return Err(EROFS),
            OpenFile::Device(_) => return Ok(()),
        };
        self.utimens_abs(&path, atime, mtime, true)
    }

    /// `fstatfs`.
    pub fn fstatfs(&self, fd: i32) -> Result<StatFs, Errno> {
        match self.fds.get(fd)?.file.path() {
            Some(p) => self.statfs_abs(p),
            None => self.statfs_abs("/dev"),
        }
    }

    /// `dup`: lowest free descriptor >= 3.
    pub fn dup(&mut self, fd: i32) -> Result<i32, Errno> {
        self.fds.dup(fd, 3, false)
    }

    /// `F_DUPFD`/`F_DUPFD_CLOEXEC`: lowest free descriptor >= `min`.
    pub fn dup_min(&mut self, fd: i32, min: i32, cloexec: bool) -> Result<i32, Errno> {
        let min = usize::try_from(min).map_err(|_| EINVAL)?;
        if min >= self.max_fds {
            return Err(EINVAL);
        }
        self.fds.dup(fd, min, cloexec)
    }

    /// `dup3` (and musl's `dup2`).
    pub fn dup3(&mut self, fd: i32, new: i32, flags: u32) -> Result<i32, Errno> {
        if flags & !oflags::O_CLOEXEC != 0 {
            return Err(EINVAL);
        }
        if let Some(f) = self.fds.dup_to(fd, new, flags & oflags::O_CLOEXEC != 0)? {
            self.release(f);
        }
        Ok(new)
    }

    /// `F_GETFL`: access mode and status flags.
    pub fn get_fl(&self, fd: i32) -> Result<u32, Errno> {
        Ok(self.fds.get(fd)?.flags)
    }

    /// `F_SETFL`: only `O_APPEND` and `O_NONBLOCK` change.
    pub fn set_fl(&mut self, fd: i32, flags: u32) -> Result<(), Errno> {
        let d: &mut Description = self.fds.get_mut(fd)?;
        d.flags = (d.flags & !oflags::SETFL_MASK) | (flags & oflags::SETFL_MASK);
        Ok(())
    }

    /// `F_GETFD`: `FD_CLOEXEC`.
    pub fn get_cloexec(&self, fd: i32) -> Result<bool, Errno> {
        self.fds.cloexec(fd)
    }

    /// `F_SETFD`.
    pub fn set_cloexec(&mut self, fd: i32, on: bool) -> Result<(), Errno> {
        self.fds.set_cloexec(fd, on)
    }

    /// Bytes a read at the current offset could return (`FIONREAD`).
    pub fn readable_bytes(&self, fd: i32) -> Result<u64, Errno> {
        let d = self.fds.get(fd)?;
        let size = match &d.file {
            OpenFile::Device(_) | OpenFile::Dir { .. } => return Ok(0),
            _ => self.fstat(fd)?.size,
        };
        Ok(size.saturating_sub(d.pos))
    }

    /// Readiness for `poll`: `(readable, writable)`, or `None` if `fd` is not
    /// open. Nothing here ever blocks, so an open descriptor is always ready.
    pub fn poll_ready(&self, fd: i32) -> Option<(bool, bool)> {
        let d = self.fds.get(fd).ok()?;
        Some((d.readable(), d.writable()))
    }
}
