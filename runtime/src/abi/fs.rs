//! File imports (`__syscall_*` and WASI `fd_*`) on the sandbox's [`Vfs`].
//! Each import decodes its arguments through [`mem`] (bounds-checked, `EFAULT`
//! on a bad pointer), calls one VFS operation and encodes the result
//! ([`layout`]). `__syscall_*` return `-errno`, WASI calls `+errno`.
//!
//! The decoding lives in [`Ctx`] methods over plain `&mut [u8]` memory so it
//! can be exercised without a wasm instance.

pub mod layout;

use super::mem;
use crate::errno::{Errno, EFAULT, EINVAL, ENOSYS, ENOTTY, EPERM, ERANGE};
use crate::output::Output;
use crate::store::StoreData;
use crate::vfs::{oflags, TimeSet, Vfs, AT_FDCWD};
use layout::{
    decode_timeset, encode_dirents, encode_fdstat, encode_stat, encode_statfs, DIRENT_SIZE,
    POLLFD_SIZE, STATFS_SIZE, TIMESPEC_SIZE,
};
use std::time::Duration;
use wasmtime::{Caller, Linker};

const ENV: &str = "env";
const WASI: &str = "wasi_snapshot_preview1";

const AT_SYMLINK_NOFOLLOW: u32 = 0x100;
const AT_REMOVEDIR: u32 = 0x200;
const AT_EACCESS: u32 = 0x200;
const AT_NO_AUTOMOUNT: u32 = 0x800;
const AT_EMPTY_PATH: u32 = 0x1000;

const F_DUPFD: u32 = 0;
const F_GETFD: u32 = 1;
const F_SETFD: u32 = 2;
const F_GETFL: u32 = 3;
const F_SETFL: u32 = 4;
const F_GETLK: u32 = 12;
const F_SETLK: u32 = 13;
const F_SETLKW: u32 = 14;
const F_DUPFD_CLOEXEC: u32 = 1030;
const F_UNLCK: u16 = 2;

const FIONREAD: u32 = 0x541b;
const FIONBIO: u32 = 0x5421;
const FIONCLEX: u32 = 0x5450;
const FIOCLEX: u32 = 0x5451;

const POLLIN: u16 = 0x1;
const POLLOUT: u16 = 0x4;
const POLLERR: u16 = 0x8;
const POLLHUP: u16 = 0x10;
const POLLNVAL: u16 = 0x20;

/// Most iovecs one read/write call accepts (Linux's `IOV_MAX`).
const IOV_MAX: u32 = 1024;
/// Most pollfds one `poll` accepts (a typical `RLIMIT_NOFILE`).
const POLL_MAX: u32 = 4096;
/// Longest a `poll` with nothing ready sleeps: short, so a deadline set by
/// the host is noticed promptly while R's `Sys.sleep` loops on it.
const POLL_SLEEP_MS: u64 = 10;
/// `ssize_t` on wasm32: no single call transfers more.
const MAX_XFER: u32 = i32::MAX as u32;

/// Guest memory plus the host state the file imports touch.
pub struct Ctx<'a> {
    pub mem: &'a mut [u8],
    pub vfs: &'a mut Vfs,
    pub out: &'a mut Output,
}

/// `__syscall_*` convention: a value, or `-errno`.
fn sys(r: Result<i32, Errno>) -> i32 {
    r.unwrap_or_else(Errno::negated)
}

/// WASI convention: 0, or `+errno`.
fn wasi(r: Result<(), Errno>) -> i32 {
    r.map_or_else(|e| e.0, |()| 0)
}

fn u16_at(mem: &[u8], ptr: u32) -> Result<u16, Errno> {
    let b = mem::bytes(mem, ptr, 2)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn add(ptr: u32, off: u32) -> Result<u32, Errno> {
    ptr.checked_add(off).ok_or(EFAULT)
}

impl Ctx<'_> {
    fn path(&self, ptr: u32) -> Result<&[u8], Errno> {
        mem::cstr(self.mem, ptr)
    }

    fn write_stat(&mut self, buf: u32, st: &crate::vfs::Stat) -> Result<i32, Errno> {
        mem::write_bytes(self.mem, buf, &encode_stat(st))?;
        Ok(0)
    }

    /// The `i`-th `{ptr, len}` of an iovec array.
    fn iovec(&self, iovs: u32, i: u32) -> Result<(u32, u32), Errno> {
        let at = add(iovs, i.checked_mul(8).ok_or(EFAULT)?)?;
        Ok((
            mem::read_u32(self.mem, at)?,
            mem::read_u32(self.mem, add(at, 4)?)?,
        ))
    }

    /// Scatter read; `at` = positional offset. Stops at the first short read;
    /// an error after some bytes were read reports those bytes.
    pub fn readv(
        &mut self,
        fd: i32,
        iovs: u32,
        n_iovs: u32,
        at: Option<u64>,
    ) -> Result<u32, Errno> {
        if n_iovs > IOV_MAX {
            return Err(EINVAL);
        }
        let mut total: u32 = 0;
        for i in 0..n_iovs {
            let (ptr, len) = self.iovec(iovs, i)?;
            let len = len.min(MAX_XFER - total);
            let buf = mem::bytes_mut(self.mem, ptr, len)?;
            let r = match at {
                Some(off) => self
                    .vfs
                    .pread(fd, buf, off.saturating_add(u64::from(total))),
                None => self.vfs.read(fd, buf),
            };
            let n = match r {
                Ok(n) => n as u32,
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            };
            total += n.min(len);
            if n < len || total == MAX_XFER {
                break;
            }
        }
        Ok(total)
    }

    /// Gather write, same rules as [`Ctx::readv`].
    pub fn writev(
        &mut self,
        fd: i32,
        iovs: u32,
        n_iovs: u32,
        at: Option<u64>,
    ) -> Result<u32, Errno> {
        if n_iovs > IOV_MAX {
            return Err(EINVAL);
        }
        let mut total: u32 = 0;
        for i in 0..n_iovs {
            let (ptr, len) = self.iovec(iovs, i)?;
            let len = len.min(MAX_XFER - total);
            let data = mem::bytes(self.mem, ptr, len)?;
            let r = match at {
                Some(off) => {
                    self.vfs
                        .pwrite(fd, data, off.saturating_add(u64::from(total)), self.out)
                }
                None => self.vfs.write(fd, data, self.out),
            };
            let n = match r {
                Ok(n) => n as u32,
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            };
            total += n.min(len);
            if n < len || total == MAX_XFER {
                break;
            }
        }
        Ok(total)
    }

    pub fn fd_read(
        &mut self,
        fd: i32,
        iovs: u32,
        n: u32,
        nread: u32,
        at: Option<i64>,
    ) -> Result<(), Errno> {
        mem::range(self.mem, nread, 4)?;
        let at = at
            .map(|o| u64::try_from(o).map_err(|_| EINVAL))
            .transpose()?;
        let total = self.readv(fd, iovs, n, at)?;
        mem::write_u32(self.mem, nread, total)
    }

    pub fn fd_write(
        &mut self,
        fd: i32,
        iovs: u32,
        n: u32,
        nwritten: u32,
        at: Option<i64>,
    ) -> Result<(), Errno> {
        mem::range(self.mem, nwritten, 4)?;
        let at = at
            .map(|o| u64::try_from(o).map_err(|_| EINVAL))
            .transpose()?;
        let total = self.writev(fd, iovs, n, at)?;
        mem::write_u32(self.mem, nwritten, total)
    }

    pub fn fd_seek(
        &mut self,
        fd: i32,
        offset: i64,
        whence: u32,
        newoffset: u32,
    ) -> Result<(), Errno> {
        mem::range(self.mem, newoffset, 8)?;
        let pos = self.vfs.seek(fd, offset, whence)?;
        mem::write_u64(self.mem, newoffset, pos)
    }

    pub fn fd_fdstat_get(&mut self, fd: i32, buf: u32) -> Result<(), Errno> {
        let st = self.vfs.fdstat(fd)?;
        mem::write_bytes(self.mem, buf, &encode_fdstat(&st))
    }

    pub fn openat(
        &mut self,
        dirfd: i32,
        path: u32,
        flags: u32,
        varargs: u32,
    ) -> Result<i32, Errno> {
        // musl passes a mode only when creating.
        let mode = if flags & oflags::O_CREAT != 0 && varargs != 0 {
            mem::read_u32(self.mem, varargs)?
        } else {
            0
        };
        let p = mem::cstr(self.mem, path)?;
        self.vfs.open(dirfd, p, flags, mode)
    }

    pub fn fcntl(&mut self, fd: i32, cmd: u32, varargs: u32) -> Result<i32, Errno> {
        self.vfs.check_fd(fd)?;
        let arg = || mem::read_u32(self.mem, varargs);
        match cmd {
            F_DUPFD => self.vfs.dup_min(fd, arg()? as i32, false),
            F_DUPFD_CLOEXEC => self.vfs.dup_min(fd, arg()? as i32, true),
            F_GETFD => Ok(i32::from(self.vfs.get_cloexec(fd)?)),
            F_SETFD => self.vfs.set_cloexec(fd, arg()? & 1 != 0).map(|()| 0),
            F_GETFL => Ok(self.vfs.get_fl(fd)? as i32),
            F_SETFL => self.vfs.set_fl(fd, arg()?).map(|()| 0),
            // One process: every lock is free and every lock is granted.
            F_GETLK => {
                let lk = arg()?;
                mem::write_u16(self.mem, lk, F_UNLCK)?;
                Ok(0)
            }
            F_SETLK | F_SETLKW => Ok(0),
            _ => Err(EINVAL),
        }
    }

    pub fn ioctl(&mut self, fd: i32, op: u32, varargs: u32) -> Result<i32, Errno> {
        self.vfs.check_fd(fd)?;
        let argp = || mem::read_u32(self.mem, varargs);
        match op {
            FIONBIO => {
                let p = argp()?;
                let on = mem::read_u32(self.mem, p)? != 0;
                let fl = self.vfs.get_fl(fd)?;
                let fl = if on {
                    fl | oflags::O_NONBLOCK
                } else {
                    fl & !oflags::O_NONBLOCK
                };
                self.vfs.set_fl(fd, fl).map(|()| 0)
            }
            FIONREAD => {
                let p = argp()?;
                let n = self.vfs.readable_bytes(fd)?;
                mem::write_u32(
                    self.mem,
                    p,
                    u32::try_from(n).unwrap_or(MAX_XFER).min(MAX_XFER),
                )?;
                Ok(0)
            }
            FIOCLEX => self.vfs.set_cloexec(fd, true).map(|()| 0),
            FIONCLEX => self.vfs.set_cloexec(fd, false).map(|()| 0),
            // No descriptor is a terminal (TCGETS, TIOCGWINSZ, …).
            _ => Err(ENOTTY),
        }
    }

    pub fn newfstatat(
        &mut self,
        dirfd: i32,
        path: u32,
        buf: u32,
        flags: u32,
    ) -> Result<i32, Errno> {
        if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT) != 0 {
            return Err(EINVAL);
        }
        let p = self.path(path)?;
        let st = if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
            if dirfd == AT_FDCWD {
                self.vfs.stat_at(AT_FDCWD, b".", true)?
            } else {
                self.vfs.fstat(dirfd)?
            }
        } else {
            self.vfs
                .stat_at(dirfd, p, flags & AT_SYMLINK_NOFOLLOW == 0)?
        };
        self.write_stat(buf, &st)
    }

    pub fn stat(&mut self, path: u32, buf: u32, follow: bool) -> Result<i32, Errno> {
        let st = self.vfs.stat_at(AT_FDCWD, self.path(path)?, follow)?;
        self.write_stat(buf, &st)
    }

    pub fn fstat(&mut self, fd: i32, buf: u32) -> Result<i32, Errno> {
        let st = self.vfs.fstat(fd)?;
        self.write_stat(buf, &st)
    }

    pub fn getcwd(&mut self, buf: u32, size: u32) -> Result<i32, Errno> {
        if size == 0 {
            return Err(EINVAL);
        }
        let mut cwd = self.vfs.cwd().as_bytes().to_vec();
        cwd.push(0);
        if cwd.len() > size as usize {
            return Err(ERANGE);
        }
        mem::write_bytes(self.mem, buf, &cwd)?;
        i32::try_from(cwd.len()).map_err(|_| ERANGE)
    }

    pub fn getdents64(&mut self, fd: i32, dirp: u32, count: u32) -> Result<i32, Errno> {
        // Check the buffer before consuming entries.
        mem::range(self.mem, dirp, count)?;
        let max = count as usize / DIRENT_SIZE;
        let (entries, first) = self.vfs.getdents(fd, max)?;
        let bytes = encode_dirents(&entries, first);
        mem::write_bytes(self.mem, dirp, &bytes)?;
        i32::try_from(bytes.len()).map_err(|_| EINVAL)
    }

    pub fn readlinkat(
        &mut self,
        dirfd: i32,
        path: u32,
        buf: u32,
        bufsize: u32,
    ) -> Result<i32, Errno> {
        if bufsize == 0 || bufsize > MAX_XFER {
            return Err(EINVAL);
        }
        let target = self.vfs.readlink(dirfd, self.path(path)?)?;
        let n = target.len().min(bufsize as usize);
        // No NUL: readlink never terminates the buffer.
        mem::write_bytes(self.mem, buf, &target[..n])?;
        i32::try_from(n).map_err(|_| EINVAL)
    }

    pub fn renameat(
        &mut self,
        olddirfd: i32,
        old: u32,
        newdirfd: i32,
        new: u32,
    ) -> Result<i32, Errno> {
        let (o, n) = (mem::cstr(self.mem, old)?, mem::cstr(self.mem, new)?);
        self.vfs.rename(olddirfd, o, newdirfd, n).map(|()| 0)
    }

    pub fn symlinkat(&mut self, target: u32, dirfd: i32, link: u32) -> Result<i32, Errno> {
        let (t, l) = (mem::cstr(self.mem, target)?, mem::cstr(self.mem, link)?);
        self.vfs.symlink(t, dirfd, l).map(|()| 0)
    }

    pub fn statfs(
        &mut self,
        path: Option<u32>,
        fd: i32,
        size: u32,
        buf: u32,
    ) -> Result<i32, Errno> {
        if (size as usize) < STATFS_SIZE {
            return Err(EINVAL);
        }
        let s = match path {
            Some(p) => self.vfs.statfs(self.path(p)?)?,
            None => self.vfs.fstatfs(fd)?,
        };
        mem::write_bytes(self.mem, buf, &encode_statfs(&s))?;
        Ok(0)
    }

    pub fn utimensat(
        &mut self,
        dirfd: i32,
        path: u32,
        times: u32,
        flags: u32,
    ) -> Result<i32, Errno> {
        if flags & !AT_SYMLINK_NOFOLLOW != 0 {
            return Err(EINVAL);
        }
        let (atime, mtime) = if times == 0 {
            (TimeSet::Now, TimeSet::Now)
        } else {
            let ts = |i: u32| -> Result<TimeSet, Errno> {
                let at = add(times, i * TIMESPEC_SIZE as u32)?;
                let b: &[u8; TIMESPEC_SIZE] = mem::bytes(self.mem, at, TIMESPEC_SIZE as u32)?
                    .try_into()
                    .map_err(|_| EFAULT)?;
                decode_timeset(b).ok_or(EINVAL)
            };
            (ts(0)?, ts(1)?)
        };
        // musl's futimens passes a NULL path: the descriptor itself.
        if path == 0 {
            return self.vfs.futimens(dirfd, atime, mtime).map(|()| 0);
        }
        let p = mem::cstr(self.mem, path)?;
        self.vfs
            .utimens(dirfd, p, atime, mtime, flags & AT_SYMLINK_NOFOLLOW == 0)
            .map(|()| 0)
    }

    /// Nothing ever blocks, so every open descriptor is ready; with nothing
    /// ready and a timeout, sleep briefly and report a timeout.
    pub fn poll(&mut self, fds: u32, nfds: u32, timeout: i32) -> Result<i32, Errno> {
        if nfds > POLL_MAX {
            return Err(EINVAL);
        }
        mem::range(self.mem, fds, nfds * POLLFD_SIZE as u32)?;
        let mut ready = 0;
        for i in 0..nfds {
            let at = add(fds, i * POLLFD_SIZE as u32)?;
            let fd = mem::read_i32(self.mem, at)?;
            let events = u16_at(self.mem, add(at, 4)?)?;
            let revents = if fd < 0 {
                0
            } else {
                match self.vfs.poll_ready(fd) {
                    None => POLLNVAL,
                    Some((r, w)) => {
                        let mut m = 0;
                        if r {
                            m |= POLLIN;
                        }
                        if w {
                            m |= POLLOUT;
                        }
                        m & (events | POLLERR | POLLHUP)
                    }
                }
            };
            mem::write_u16(self.mem, add(at, 6)?, revents)?;
            if revents != 0 {
                ready += 1;
            }
        }
        if ready == 0 && timeout != 0 {
            let ms = u64::try_from(timeout).map_or(POLL_SLEEP_MS, |t| t.min(POLL_SLEEP_MS));
            std::thread::sleep(Duration::from_millis(ms));
        }
        Ok(ready)
    }
}

/// Evaluate an import body, so `?` works inside it.
fn run<T>(body: impl FnOnce() -> Result<T, Errno>) -> Result<T, Errno> {
    body()
}

/// Define a `__syscall_*` import: `|cx, args…| -> Result<i32, Errno>`.
macro_rules! syscall {
    ($l:ident, $name:literal, |$cx:ident $(, $a:ident : $t:ty)*| $body:expr) => {
        $l.func_wrap(ENV, $name, |mut caller: Caller<'_, StoreData>, $($a: $t),*| -> i32 {
            let (mem, host) = mem::split(&mut caller);
            let $cx = &mut Ctx { mem, vfs: &mut host.vfs, out: &mut host.output };
            let r: Result<i32, Errno> = run(|| $body);
            sys(r)
        })?;
    };
}

/// Define a WASI import: `|cx, args…| -> Result<(), Errno>`.
macro_rules! wasi_fn {
    ($l:ident, $name:literal, |$cx:ident $(, $a:ident : $t:ty)*| $body:expr) => {
        $l.func_wrap(WASI, $name, |mut caller: Caller<'_, StoreData>, $($a: $t),*| -> i32 {
            let (mem, host) = mem::split(&mut caller);
            let $cx = &mut Ctx { mem, vfs: &mut host.vfs, out: &mut host.output };
            let r: Result<(), Errno> = run(|| $body);
            wasi(r)
        })?;
    };
}

fn ok(r: Result<(), Errno>) -> Result<i32, Errno> {
    r.map(|()| 0)
}

/// Define every file import of R.wasm.
pub fn add_to_linker(l: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    syscall!(
        l,
        "__syscall_openat",
        |cx, dirfd: i32, path: u32, flags: u32, va: u32| cx.openat(dirfd, path, flags, va)
    );
    syscall!(l, "__syscall_fcntl64", |cx, fd: i32, cmd: u32, va: u32| cx
        .fcntl(fd, cmd, va));
    syscall!(l, "__syscall_ioctl", |cx, fd: i32, op: u32, va: u32| cx
        .ioctl(fd, op, va));
    syscall!(
        l,
        "__syscall_faccessat",
        |cx, dirfd: i32, path: u32, amode: u32, flags: u32| {
            if flags & !(AT_EACCESS | AT_SYMLINK_NOFOLLOW) != 0 {
                Err(EINVAL)
            } else {
                ok(cx.vfs.access(dirfd, mem::cstr(cx.mem, path)?, amode))
            }
        }
    );
    syscall!(l, "__syscall_chdir", |cx, path: u32| ok(cx
        .vfs
        .chdir(mem::cstr(cx.mem, path)?)));
    syscall!(l, "__syscall_fchdir", |cx, fd: i32| ok(cx.vfs.fchdir(fd)));
    syscall!(l, "__syscall_chmod", |cx, path: u32, mode: u32| ok(cx
        .vfs
        .chmod(AT_FDCWD, mem::cstr(cx.mem, path)?, mode, true)));
    syscall!(l, "__syscall_fchmod", |cx, fd: i32, mode: u32| ok(cx
        .vfs
        .fchmod(fd, mode)));
    syscall!(
        l,
        "__syscall_fchmodat2",
        |cx, dirfd: i32, path: u32, mode: u32, flags: u32| {
            if flags & !AT_SYMLINK_NOFOLLOW != 0 {
                Err(EINVAL)
            } else {
                let follow = flags & AT_SYMLINK_NOFOLLOW == 0;
                ok(cx.vfs.chmod(dirfd, mem::cstr(cx.mem, path)?, mode, follow))
            }
        }
    );
    syscall!(
        l,
        "__syscall_fchownat",
        |cx, dirfd: i32, path: u32, _uid: u32, _gid: u32, flags: u32| {
            let p = mem::cstr(cx.mem, path)?;
            if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
                Err(EINVAL)
            } else if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
                ok(cx.vfs.fchown(dirfd))
            } else {
                ok(cx.vfs.chown(dirfd, p, flags & AT_SYMLINK_NOFOLLOW == 0))
            }
        }
    );
    syscall!(
        l,
        "__syscall_fchown32",
        |cx, fd: i32, _uid: u32, _gid: u32| ok(cx.vfs.fchown(fd))
    );
    syscall!(l, "__syscall_dup", |cx, fd: i32| cx.vfs.dup(fd));
    syscall!(l, "__syscall_dup3", |cx, fd: i32, new: i32, flags: u32| cx
        .vfs
        .dup3(fd, new, flags));
    syscall!(l, "__syscall_fstat64", |cx, fd: i32, buf: u32| cx
        .fstat(fd, buf));
    syscall!(l, "__syscall_stat64", |cx, path: u32, buf: u32| cx
        .stat(path, buf, true));
    syscall!(l, "__syscall_lstat64", |cx, path: u32, buf: u32| cx
        .stat(path, buf, false));
    syscall!(
        l,
        "__syscall_newfstatat",
        |cx, dirfd: i32, path: u32, buf: u32, flags: u32| cx.newfstatat(dirfd, path, buf, flags)
    );
    syscall!(l, "__syscall_ftruncate64", |cx, fd: i32, len: i64| ok(cx
        .vfs
        .ftruncate(fd, len)));
    syscall!(l, "__syscall_truncate64", |cx, path: u32, len: i64| ok(cx
        .vfs
        .truncate(mem::cstr(cx.mem, path)?, len)));
    syscall!(l, "__syscall_getcwd", |cx, buf: u32, size: u32| cx
        .getcwd(buf, size));
    syscall!(
        l,
        "__syscall_getdents64",
        |cx, fd: i32, dirp: u32, count: u32| cx.getdents64(fd, dirp, count)
    );
    syscall!(
        l,
        "__syscall_mkdirat",
        |cx, dirfd: i32, path: u32, mode: u32| ok(cx.vfs.mkdir(
            dirfd,
            mem::cstr(cx.mem, path)?,
            mode
        ))
    );
    // No device nodes, FIFOs or sockets in the sandbox.
    syscall!(
        l,
        "__syscall_mknodat",
        |_cx, _dirfd: i32, _path: u32, _mode: u32, _dev: u32| Err(EPERM)
    );
    syscall!(
        l,
        "__syscall_readlinkat",
        |cx, dirfd: i32, path: u32, buf: u32, size: u32| cx.readlinkat(dirfd, path, buf, size)
    );
    syscall!(
        l,
        "__syscall_unlinkat",
        |cx, dirfd: i32, path: u32, flags: u32| match flags {
            0 => ok(cx.vfs.unlink(dirfd, mem::cstr(cx.mem, path)?, false)),
            AT_REMOVEDIR => ok(cx.vfs.unlink(dirfd, mem::cstr(cx.mem, path)?, true)),
            _ => Err(EINVAL),
        }
    );
    syscall!(l, "__syscall_rmdir", |cx, path: u32| ok(cx.vfs.unlink(
        AT_FDCWD,
        mem::cstr(cx.mem, path)?,
        true
    )));
    syscall!(
        l,
        "__syscall_renameat",
        |cx, od: i32, old: u32, nd: i32, new: u32| cx.renameat(od, old, nd, new)
    );
    syscall!(
        l,
        "__syscall_statfs64",
        |cx, path: u32, size: u32, buf: u32| cx.statfs(Some(path), 0, size, buf)
    );
    syscall!(
        l,
        "__syscall_fstatfs64",
        |cx, fd: i32, size: u32, buf: u32| cx.statfs(None, fd, size, buf)
    );
    syscall!(
        l,
        "__syscall_symlinkat",
        |cx, target: u32, dirfd: i32, link: u32| cx.symlinkat(target, dirfd, link)
    );
    syscall!(
        l,
        "__syscall_utimensat",
        |cx, dirfd: i32, path: u32, times: u32, flags: u32| cx.utimensat(dirfd, path, times, flags)
    );
    syscall!(l, "__syscall_umask", |cx, mask: u32| Ok(
        cx.vfs.umask(mask) as i32
    ));
    syscall!(l, "__syscall_fdatasync", |cx, fd: i32| ok(cx
        .vfs
        .check_fd(fd)));
    syscall!(
        l,
        "__syscall_fadvise64",
        |cx, fd: i32, _off: i64, _len: i64, advice: u32| {
            cx.vfs.check_fd(fd)?;
            if advice > 5 {
                Err(EINVAL)
            } else {
                Ok(0)
            }
        }
    );
    syscall!(
        l,
        "__syscall_fallocate",
        |cx, fd: i32, mode: i32, off: i64, len: i64| ok(cx.vfs.fallocate(fd, mode, off, len))
    );
    // No pipes: nothing could be on the other end.
    syscall!(l, "__syscall_pipe2", |_cx, _fds: u32, _flags: u32| Err(
        ENOSYS
    ));
    syscall!(
        l,
        "__syscall_poll",
        |cx, fds: u32, nfds: u32, timeout: i32| cx.poll(fds, nfds, timeout)
    );

    wasi_fn!(l, "fd_close", |cx, fd: i32| cx.vfs.close(fd));
    wasi_fn!(l, "fd_read", |cx,
                            fd: i32,
                            iovs: u32,
                            n: u32,
                            nread: u32| cx
        .fd_read(fd, iovs, n, nread, None));
    wasi_fn!(l, "fd_write", |cx,
                             fd: i32,
                             iovs: u32,
                             n: u32,
                             nwritten: u32| {
        cx.fd_write(fd, iovs, n, nwritten, None)
    });
    wasi_fn!(l, "fd_pread", |cx,
                             fd: i32,
                             iovs: u32,
                             n: u32,
                             off: i64,
                             nread: u32| cx
        .fd_read(fd, iovs, n, nread, Some(off)));
    wasi_fn!(
        l,
        "fd_pwrite",
        |cx, fd: i32, iovs: u32, n: u32, off: i64, nwritten: u32| cx.fd_write(
            fd,
            iovs,
            n,
            nwritten,
            Some(off)
        )
    );
    wasi_fn!(l, "fd_seek", |cx,
                            fd: i32,
                            off: i64,
                            whence: u32,
                            newoff: u32| cx
        .fd_seek(fd, off, whence, newoff));
    wasi_fn!(l, "fd_sync", |cx, fd: i32| cx.vfs.check_fd(fd));
    wasi_fn!(l, "fd_fdstat_get", |cx, fd: i32, buf: u32| cx
        .fd_fdstat_get(fd, buf));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::{EBADF, ENOENT};
    use crate::output::Stream;
    use crate::vfs::{RoImage, VfsConfig};

    struct T {
        mem: Vec<u8>,
        vfs: Vfs,
        out: Output,
    }

    impl T {
        fn new() -> T {
            let image =
                RoImage::from_files([("/usr/lib/R/etc/Renviron", b"R=1\n".to_vec())]).unwrap();
            let vfs = Vfs::new(VfsConfig {
                image,
                mounts: vec![],
                home: "/home/web_user".into(),
                scratch_bytes: 1 << 20,
                max_fds: 32,
            })
            .unwrap();
            T {
                mem: vec![0; 65536],
                vfs,
                out: Output::new(1 << 16),
            }
        }

        fn cx(&mut self) -> Ctx<'_> {
            Ctx {
                mem: &mut self.mem,
                vfs: &mut self.vfs,
                out: &mut self.out,
            }
        }

        fn cstr(&mut self, at: u32, s: &str) -> u32 {
            let a = at as usize;
            self.mem[a..a + s.len()].copy_from_slice(s.as_bytes());
            self.mem[a + s.len()] = 0;
            at
        }

        fn u32(&self, at: usize) -> u32 {
            u32::from_le_bytes(self.mem[at..at + 4].try_into().unwrap())
        }
    }

    #[test]
    fn stat_and_getdents_into_guest_memory() {
        let mut t = T::new();
        let p = t.cstr(100, "/usr/lib/R/etc/Renviron");
        assert_eq!(t.cx().stat(p, 1000, true), Ok(0));
        assert_eq!(t.u32(1000 + 4) & 0o170000, 0o100000);
        assert_eq!(t.u32(1000 + 24), 4);
        let d = t.cstr(200, "/usr/lib/R/etc");
        let fd = t.cx().openat(AT_FDCWD, d, oflags::O_DIRECTORY, 0).unwrap();
        // Room for two records: ".", "..".
        assert_eq!(t.cx().getdents64(fd, 4096, 600), Ok(560));
        assert_eq!(&t.mem[4096 + 19..4096 + 21], b".\0");
        assert_eq!(t.mem[4096 + 18], 4);
        assert_eq!(t.cx().getdents64(fd, 4096, 600), Ok(280));
        assert_eq!(&t.mem[4096 + 19..4096 + 28], b"Renviron\0");
        assert_eq!(t.mem[4096 + 18], 8);
        assert_eq!(t.u32(4096 + 8), 3 * 280);
        assert_eq!(t.cx().getdents64(fd, 4096, 600), Ok(0));
        // Too small for one record, or a bad buffer.
        t.cx().fd_seek(fd, 0, 0, 300).unwrap();
        assert_eq!(t.cx().getdents64(fd, 4096, 100), Err(EINVAL));
        assert_eq!(t.cx().getdents64(fd, 65500, 600), Err(EFAULT));
        assert_eq!(t.cx().getdents64(fd, 4096, 900), Ok(840));
    }

    #[test]
    fn iovecs_stdio_and_fdstat() {
        let mut t = T::new();
        t.cstr(300, "hello ");
        t.cstr(400, "world");
        // iovec array at 500: {300, 6}, {400, 5}
        for (i, v) in [300u32, 6, 400, 5].iter().enumerate() {
            t.mem[500 + 4 * i..504 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        assert_eq!(t.cx().fd_write(1, 500, 2, 600, None), Ok(()));
        assert_eq!(t.u32(600), 11);
        let c = t.out.take();
        assert_eq!(
            (c[0].stream, &c[0].bytes[..]),
            (Stream::Stdout, &b"hello world"[..])
        );
        assert_eq!(t.cx().fd_write(1, 500, 2, 70000, None), Err(EFAULT));
        assert_eq!(t.cx().fd_write(1, 500, IOV_MAX + 1, 600, None), Err(EINVAL));
        assert_eq!(t.cx().fd_write(1, 65530, 2, 600, None), Err(EFAULT));
        assert_eq!(t.cx().fd_read(0, 500, 2, 600, None), Ok(()));
        assert_eq!(t.u32(600), 0);
        assert_eq!(t.cx().fd_read(9, 500, 2, 600, None), Err(EBADF));
        for fd in 0..3 {
            t.cx().fd_fdstat_get(fd, 700).unwrap();
            assert_ne!(t.mem[700], 2, "isatty({fd}) must be false");
        }
        assert_eq!(t.cx().ioctl(0, 0x5413, 800), Err(ENOTTY));
        assert_eq!(t.cx().ioctl(42, 0x5413, 800), Err(EBADF));
        assert_eq!(t.cx().fd_seek(1, 0, 1, 800), Err(crate::errno::ESPIPE));
        assert_eq!(t.cx().fd_seek(1, 0, 1, u32::MAX), Err(EFAULT));
    }

    #[test]
    fn files_paths_and_errors() {
        let mut t = T::new();
        let p = t.cstr(100, "/tmp/f");
        // mode passed through varargs
        t.mem[200..204].copy_from_slice(&0o600u32.to_le_bytes());
        let fd = t
            .cx()
            .openat(AT_FDCWD, p, oflags::O_CREAT | oflags::O_RDWR, 200)
            .unwrap();
        assert_eq!(t.cx().fstat(fd, 1000), Ok(0));
        assert_eq!(t.u32(1004) & 0o777, 0o600);
        assert_eq!(t.cx().readlinkat(AT_FDCWD, p, 300, 64), Err(EINVAL));
        let missing = t.cstr(400, "/etc/passwd");
        assert_eq!(t.cx().readlinkat(AT_FDCWD, missing, 300, 64), Err(ENOENT));
        assert_eq!(t.cx().openat(AT_FDCWD, 70000, 0, 0), Err(EFAULT));
        assert_eq!(t.cx().getcwd(500, 5), Err(ERANGE));
        assert_eq!(t.cx().getcwd(500, 64), Ok(15));
        assert_eq!(&t.mem[500..515], b"/home/web_user\0");
        assert_eq!(t.cx().fcntl(fd, F_GETFL, 0), Ok(oflags::O_RDWR as i32));
        t.mem[600..604].copy_from_slice(&10u32.to_le_bytes());
        assert_eq!(t.cx().fcntl(fd, F_DUPFD, 600), Ok(10));
        assert_eq!(t.cx().fcntl(fd, 999, 600), Err(EINVAL));
        assert_eq!(t.cx().statfs(Some(p), 0, 64, 700), Ok(0));
        assert_eq!(t.cx().statfs(Some(p), 0, 10, 700), Err(EINVAL));
        // utimensat with explicit times, then UTIME_OMIT for atime.
        let mut ts = [0u8; 32];
        ts[..8].copy_from_slice(&5i64.to_le_bytes());
        ts[8..12].copy_from_slice(&0x3fff_fffei32.to_le_bytes());
        ts[16..24].copy_from_slice(&77i64.to_le_bytes());
        t.mem[800..832].copy_from_slice(&ts);
        assert_eq!(t.cx().utimensat(AT_FDCWD, p, 800, 0), Ok(0));
        assert_eq!(t.vfs.fstat(fd).unwrap().mtime.sec, 77);
        // NULL path: the descriptor itself (futimens).
        assert_eq!(t.cx().utimensat(fd, 0, 0, 0), Ok(0));
        assert!(t.vfs.fstat(fd).unwrap().mtime.sec > 77);
        let empty = t.cstr(900, "");
        assert_eq!(t.cx().newfstatat(fd, empty, 1000, AT_EMPTY_PATH), Ok(0));
        assert_eq!(t.cx().newfstatat(fd, 100, 1000, 0x4000_0000), Err(EINVAL));
    }

    #[test]
    fn poll_reports_open_descriptors_ready() {
        let mut t = T::new();
        // {fd 0, POLLIN}, {fd 1, POLLOUT}, {fd 17 (closed), POLLIN}, {fd -1}
        let fds: [(i32, u16); 4] = [(0, POLLIN), (1, POLLOUT), (17, POLLIN), (-1, POLLIN)];
        for (i, (fd, ev)) in fds.iter().enumerate() {
            let at = 100 + 8 * i;
            t.mem[at..at + 4].copy_from_slice(&fd.to_le_bytes());
            t.mem[at + 4..at + 6].copy_from_slice(&ev.to_le_bytes());
        }
        assert_eq!(t.cx().poll(100, 4, 1000), Ok(3));
        let rev = |t: &T, i: usize| u16::from_le_bytes([t.mem[106 + 8 * i], t.mem[107 + 8 * i]]);
        assert_eq!(rev(&t, 0), POLLIN);
        assert_eq!(rev(&t, 1), POLLOUT);
        assert_eq!(rev(&t, 2), POLLNVAL);
        assert_eq!(rev(&t, 3), 0);
        // Nothing to wait for: a short sleep, then a timeout.
        let start = std::time::Instant::now();
        assert_eq!(t.cx().poll(0, 0, 5000), Ok(0));
        assert!(start.elapsed() < Duration::from_millis(500));
        assert_eq!(t.cx().poll(100, POLL_MAX + 1, 0), Err(EINVAL));
        assert_eq!(t.cx().poll(65530, 4, 0), Err(EFAULT));
    }
}
