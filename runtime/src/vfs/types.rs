//! Plain data the VFS hands to the syscall layer: metadata, directory entries,
//! open flags. Kept free of guest-ABI layout so the ABI layer alone decides how
//! these are encoded into guest memory.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// musl open(2) flags as the guest passes them (`flags` of `__syscall_openat`).
pub mod oflags {
    pub const O_ACCMODE: u32 = 0o3;
    pub const O_RDONLY: u32 = 0;
    pub const O_WRONLY: u32 = 1;
    pub const O_RDWR: u32 = 2;
    pub const O_CREAT: u32 = 0x40;
    pub const O_EXCL: u32 = 0x80;
    pub const O_TRUNC: u32 = 0x200;
    pub const O_APPEND: u32 = 0x400;
    pub const O_NONBLOCK: u32 = 0x800;
    pub const O_DIRECTORY: u32 = 0x1_0000;
    pub const O_NOFOLLOW: u32 = 0x2_0000;
    pub const O_CLOEXEC: u32 = 0x8_0000;
    pub const O_PATH: u32 = 0x20_0000;
    /// Status flags `F_SETFL` may change.
    pub const SETFL_MASK: u32 = O_APPEND | O_NONBLOCK;
}

/// File-type bits of `st_mode`.
pub mod mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFLNK: u32 = 0o120000;
    /// Permission bits a guest may set.
    pub const PERM_MASK: u32 = 0o7777;
}

/// A point in time as `struct timespec` holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

impl Timespec {
    pub fn now() -> Timespec {
        Timespec::from_system(SystemTime::now())
    }

    pub fn from_system(t: SystemTime) -> Timespec {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timespec {
                sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nsec: d.subsec_nanos(),
            },
            // Before 1970: whole seconds are enough for a guest's purposes.
            Err(e) => Timespec {
                sec: -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
                nsec: 0,
            },
        }
    }

    /// The `SystemTime` this names, if it can be represented.
    pub fn to_system(self) -> Option<SystemTime> {
        let nanos = std::time::Duration::from_nanos(u64::from(self.nsec));
        if self.sec >= 0 {
            UNIX_EPOCH
                .checked_add(std::time::Duration::from_secs(self.sec.unsigned_abs()))?
                .checked_add(nanos)
        } else {
            UNIX_EPOCH
                .checked_sub(std::time::Duration::from_secs(self.sec.unsigned_abs()))?
                .checked_add(nanos)
        }
    }
}

/// What a guest-visible name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    CharDevice,
}

impl FileType {
    /// The `S_IF*` bits of `st_mode`.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Regular => mode::S_IFREG,
            FileType::Directory => mode::S_IFDIR,
            FileType::Symlink => mode::S_IFLNK,
            FileType::CharDevice => mode::S_IFCHR,
        }
    }

    /// `d_type` of a `dirent`.
    pub fn dirent_type(self) -> u8 {
        match self {
            FileType::Regular => 8,
            FileType::Directory => 4,
            FileType::Symlink => 10,
            FileType::CharDevice => 2,
        }
    }
}

/// `stat` results, before encoding. `mode` includes the type bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub dev: u32,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub size: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
}

impl Stat {
    pub fn file_type(&self) -> FileType {
        match self.mode & mode::S_IFMT {
            mode::S_IFDIR => FileType::Directory,
            mode::S_IFLNK => FileType::Symlink,
            mode::S_IFCHR => FileType::CharDevice,
            _ => FileType::Regular,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }
}

/// One name in a directory listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub ino: u64,
    pub kind: FileType,
}

/// What `fd_fdstat_get` reports, before encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdStat {
    /// WASI filetype: 0 unknown, 3 directory, 4 regular file.
    ///
    /// Emscripten's `isatty` (checked in this R.wasm) is exactly
    /// `fd_fdstat_get(fd).fs_filetype == CHARACTER_DEVICE`, ignoring rights,
    /// so no descriptor ever reports 2: R must stay non-interactive.
    pub filetype: u8,
    /// WASI fdflags (APPEND 1, NONBLOCK 4).
    pub flags: u16,
    pub rights: u64,
}

/// Which timestamps `utimensat` sets, each either now, a value, or left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSet {
    Omit,
    Now,
    At(Timespec),
}

impl TimeSet {
    /// The concrete time to store, or `None` to leave it.
    pub fn resolve(self) -> Option<Timespec> {
        match self {
            TimeSet::Omit => None,
            TimeSet::Now => Some(Timespec::now()),
            TimeSet::At(t) => Some(t),
        }
    }
}

/// `statfs` results, before encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatFs {
    pub fs_type: u32,
    pub bsize: u32,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub namelen: u32,
    pub readonly: bool,
}
