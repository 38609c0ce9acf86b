//! An advisory lock so two `hako` processes do not build the same asset dir
//! at once. The kernel drops it when the process dies, so it never goes stale.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::AssetError;

/// Held while building; released on drop (the file is closed).
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes an exclusive lock on `path`, waiting (and saying so) if another
    /// process holds it.
    pub(crate) fn acquire(
        path: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<DirLock, AssetError> {
        let file = lock_file(path, || {
            progress(&format!(
                "another process is building webR assets (lock {}); waiting for it",
                path.display()
            ))
        })
        .map_err(AssetError::io("lock", path))?;
        Ok(DirLock { _file: file })
    }
}

/// An exclusive lock on the file at `path` (created, with its directory, if
/// missing), held until the returned file is closed; `on_wait` runs first
/// when another process holds it, so the caller can say why it waits.
pub fn lock_file(path: &Path, on_wait: impl FnOnce()) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    if !try_lock(&file, false)? {
        on_wait();
        try_lock(&file, true)?;
    }
    Ok(file)
}

/// Waits for an exclusive advisory lock on `file`, held until the file is
/// closed. The workspace's one flock: the runtime's compile cache, the
/// package store and the daemons' package cache lock through this module.
pub fn lock_exclusive(file: &File) -> std::io::Result<()> {
    try_lock(file, true).map(|_| ())
}

/// An exclusive lock if no one holds one: `Ok(false)` if someone does.
pub fn try_lock_exclusive(file: &File) -> std::io::Result<bool> {
    try_lock(file, false)
}

/// Waits for a shared lock on `file` (readers of what an exclusive holder
/// would change or remove), held until the file is closed.
#[cfg(unix)]
pub fn lock_shared(file: &File) -> std::io::Result<()> {
    flock(file, libc::LOCK_SH).map(|_| ())
}

/// `Ok(false)` if non-blocking and someone else holds the lock.
#[cfg(unix)]
fn try_lock(file: &File, block: bool) -> std::io::Result<bool> {
    let op = if block {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    flock(file, op)
}

/// flock(2), retried when interrupted; `Ok(false)` when a non-blocking
/// request finds the lock held.
#[cfg(unix)]
fn flock(file: &File, op: i32) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if op & libc::LOCK_NB != 0 => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Without flock, rely on the build-in-temp-dir-then-rename protocol alone.
#[cfg(not(unix))]
fn try_lock(_file: &File, _block: bool) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(not(unix))]
pub fn lock_shared(_file: &File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_until_it_closes() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!("hako-lock-{}-{nanos}", std::process::id()));
        let open = || {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap()
        };
        let first = open();
        lock_exclusive(&first).unwrap();
        let second = open();
        assert!(!try_lock(&second, false).unwrap(), "locked twice");
        drop(first);
        assert!(try_lock(&second, false).unwrap(), "not released on close");
        drop(second);
        let _ = std::fs::remove_file(&path);
    }
}
