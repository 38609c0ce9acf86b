//! Errno numbers as the guest's libc (musl under Emscripten) knows them: WASI's.
//! `__syscall_*` imports return `-errno`; WASI `fd_*` imports return `+errno`.
//! The vocabulary sits at the crate's base, beneath both the filesystem and
//! the syscall layer that speak it.

/// A WASI errno value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The `-errno` a `__syscall_*` import returns.
    pub fn negated(self) -> i32 {
        -self.0
    }
}

pub const SUCCESS: i32 = 0;
pub const E2BIG: Errno = Errno(1);
pub const EACCES: Errno = Errno(2);
pub const EAFNOSUPPORT: Errno = Errno(5);
pub const EBADF: Errno = Errno(8);
pub const EBUSY: Errno = Errno(10);
pub const ECONNREFUSED: Errno = Errno(14);
pub const EEXIST: Errno = Errno(20);
pub const EFAULT: Errno = Errno(21);
pub const EFBIG: Errno = Errno(22);
pub const EINVAL: Errno = Errno(28);
pub const EIO: Errno = Errno(29);
pub const EISDIR: Errno = Errno(31);
pub const ELOOP: Errno = Errno(32);
pub const EMFILE: Errno = Errno(33);
pub const ENAMETOOLONG: Errno = Errno(37);
pub const ENETUNREACH: Errno = Errno(40);
pub const ENOENT: Errno = Errno(44);
pub const ENOEXEC: Errno = Errno(45);
pub const ENOMEM: Errno = Errno(48);
pub const ENOSPC: Errno = Errno(51);
pub const ENOSYS: Errno = Errno(52);
pub const ENOTDIR: Errno = Errno(54);
pub const ENOTEMPTY: Errno = Errno(55);
pub const ENOTSUP: Errno = Errno(58);
pub const ENOTTY: Errno = Errno(59);
pub const EPERM: Errno = Errno(63);
pub const ERANGE: Errno = Errno(68);
pub const EROFS: Errno = Errno(69);
pub const ESPIPE: Errno = Errno(70);
pub const EXDEV: Errno = Errno(75);

/// Map a host I/O error to the errno the guest should see. Unknown kinds become
/// `EIO`; the host's own error text never reaches the guest.
pub fn from_io(e: &std::io::Error) -> Errno {
    use std::io::ErrorKind as K;
    if let Some(code) = e.raw_os_error() {
        return match code {
            libc::ENOENT => ENOENT,
            libc::EACCES => EACCES,
            libc::EPERM => EPERM,
            libc::EEXIST => EEXIST,
            libc::ENOTDIR => ENOTDIR,
            libc::EISDIR => EISDIR,
            libc::ENOTEMPTY => ENOTEMPTY,
            libc::ELOOP => ELOOP,
            libc::ENAMETOOLONG => ENAMETOOLONG,
            libc::EXDEV => EXDEV,
            libc::EINVAL => EINVAL,
            libc::ENOSPC => ENOSPC,
            libc::EROFS => EROFS,
            libc::EBADF => EBADF,
            libc::EFBIG => EFBIG,
            libc::EMFILE | libc::ENFILE => EMFILE,
            _ => EIO,
        };
    }
    match e.kind() {
        K::NotFound => ENOENT,
        K::PermissionDenied => EACCES,
        K::AlreadyExists => EEXIST,
        K::InvalidInput => EINVAL,
        _ => EIO,
    }
}
