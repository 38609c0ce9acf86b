//! `/dev`: the few character devices the guest gets, stdio included. Output
//! devices write to the sandbox's [`Output`], never to the host's streams.

use super::types::{DirEntry, FileType, Stat, Timespec};
use crate::errno::{Errno, EIO};
use crate::output::{Output, Stream};
use serde::{Deserialize, Serialize};

/// `st_dev` of `/dev` and its devices.
pub(crate) const DEV_DEV: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Device {
    Null,
    Zero,
    Urandom,
    /// Always at end of file: the guest never gets input from the host.
    Stdin,
    Stdout,
    Stderr,
    /// R `message()` conditions (written by hako's condition handlers).
    HakoMessage,
    /// R `warning()` conditions.
    HakoWarning,
}

impl Device {
    /// Name under `/dev`, in listing order.
    pub const ALL: [(&'static str, Device); 8] = [
        ("hako-message", Device::HakoMessage),
        ("hako-warning", Device::HakoWarning),
        ("null", Device::Null),
        ("stderr", Device::Stderr),
        ("stdin", Device::Stdin),
        ("stdout", Device::Stdout),
        ("urandom", Device::Urandom),
        ("zero", Device::Zero),
    ];

    pub fn by_name(name: &str) -> Option<Device> {
        Device::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| *d)
    }

    fn index(self) -> u32 {
        Device::ALL
            .iter()
            .position(|(_, d)| *d == self)
            .unwrap_or(0) as u32
    }

    pub fn stat(self) -> Stat {
        let t = Timespec::default();
        Stat {
            dev: DEV_DEV,
            ino: 2 + u64::from(self.index()),
            mode: FileType::CharDevice.mode_bits() | 0o666,
            nlink: 1,
            rdev: (1 << 8) | self.index(),
            atime: t,
            mtime: t,
            ctime: t,
            ..Stat::default()
        }
    }

    /// Stat of the `/dev` directory itself.
    pub fn dir_stat() -> Stat {
        Stat {
            dev: DEV_DEV,
            ino: 1,
            mode: FileType::Directory.mode_bits() | 0o755,
            nlink: 2,
            size: 4096,
            ..Stat::default()
        }
    }

    pub fn list() -> Vec<DirEntry> {
        Device::ALL
            .iter()
            .map(|(name, d)| DirEntry {
                name: (*name).to_string(),
                ino: d.stat().ino,
                kind: FileType::CharDevice,
            })
            .collect()
    }

    /// Fill `buf` as a read would; returns the byte count (0 = end of file).
    pub fn read(self, buf: &mut [u8]) -> Result<usize, Errno> {
        match self {
            Device::Zero => {
                buf.fill(0);
                Ok(buf.len())
            }
            Device::Urandom => {
                fill_random(buf)?;
                Ok(buf.len())
            }
            _ => Ok(0),
        }
    }

    /// Consume `data` as a write would. Everything is accepted (the output
    /// log enforces its own cap), so a guest never spins on a short write.
    pub fn write(self, data: &[u8], out: &mut Output) -> usize {
        let stream = match self {
            Device::Stdout => Stream::Stdout,
            Device::Stderr => Stream::Stderr,
            Device::HakoMessage => Stream::Message,
            Device::HakoWarning => Stream::Warning,
            _ => return data.len(),
        };
        out.write(stream, data);
        data.len()
    }
}

/// Host randomness for `/dev/urandom`, straight from the kernel's CSPRNG.
/// A host without randomness is an `EIO`, never predictable bytes.
pub fn fill_random(buf: &mut [u8]) -> Result<(), Errno> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let n = {
            let len = rest.len().min(256);
            // SAFETY: as above; getentropy takes at most 256 bytes.
            if unsafe { libc::getentropy(rest.as_mut_ptr().cast(), len) } == 0 {
                len as isize
            } else {
                -1
            }
        };
        if n > 0 {
            done += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(EIO);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_behave() {
        let mut out = Output::new(100);
        let mut buf = [7u8; 64];
        assert_eq!(Device::Stdin.read(&mut buf), Ok(0));
        assert_eq!(Device::Null.read(&mut buf), Ok(0));
        assert_eq!(Device::Zero.read(&mut buf), Ok(64));
        assert_eq!(buf, [0u8; 64]);
        assert_eq!(Device::Urandom.read(&mut buf), Ok(64));
        assert_ne!(buf, [0u8; 64]);
        assert_eq!(Device::Null.write(b"gone", &mut out), 4);
        assert_eq!(Device::HakoWarning.write(b"w", &mut out), 1);
        assert_eq!(Device::Stdout.write(b"o", &mut out), 1);
        let c = out.take();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].stream, Stream::Warning);
        assert_eq!(Device::by_name("hako-message"), Some(Device::HakoMessage));
        assert_eq!(Device::by_name("tty"), None);
    }
}
