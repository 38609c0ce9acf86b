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
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(AssetError::io("open lock file", path))?;
        if !try_lock(&file, false).map_err(AssetError::io("lock", path))? {
            progress(&format!(
                "another process is building webR assets (lock {}); waiting for it",
                path.display()
            ));
            try_lock(&file, true).map_err(AssetError::io("lock", path))?;
        }
        Ok(DirLock { _file: file })
    }
}

/// Waits for an exclusive advisory lock on `file`, held until the file is
/// closed. The workspace's one flock: the runtime's compile cache locks
/// through it too.
pub fn lock_exclusive(file: &File) -> std::io::Result<()> {
    try_lock(file, true).map(|_| ())
}

/// `Ok(false)` if non-blocking and someone else holds the lock.
#[cfg(unix)]
fn try_lock(file: &File, block: bool) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let op = if block {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if !block => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Without flock, rely on the build-in-temp-dir-then-rename protocol alone.
#[cfg(not(unix))]
fn try_lock(_file: &File, _block: bool) -> std::io::Result<bool> {
    Ok(true)
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
