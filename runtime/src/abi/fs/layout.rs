//! Byte layouts of the structs the file imports exchange with the guest
//! (Emscripten's wasm32 musl: `struct stat`, `struct dirent`, `struct statfs`,
//! `__wasi_fdstat_t`, `struct timespec`, `struct pollfd`). Pure functions over
//! byte arrays, so they are tested without a wasm instance.

use crate::vfs::{DirEntry, FdStat, Stat, StatFs, TimeSet, Timespec};

/// `sizeof(struct stat)`.
pub const STAT_SIZE: usize = 96;
/// `sizeof(struct dirent)`: every getdents64 record has this length.
pub const DIRENT_SIZE: usize = crate::vfs::DIRENT_SIZE as usize;
/// Offset of `d_name` in `struct dirent`; the name field is 256 bytes.
const D_NAME: usize = 19;
/// `sizeof(struct statfs)`.
pub const STATFS_SIZE: usize = 64;
/// `sizeof(__wasi_fdstat_t)`.
pub const FDSTAT_SIZE: usize = 24;
/// `sizeof(struct timespec)` (i64 seconds, i32 nanoseconds, padding).
pub const TIMESPEC_SIZE: usize = 16;
/// `sizeof(struct pollfd)`: fd i32 @0, events i16 @4, revents i16 @6.
pub const POLLFD_SIZE: usize = 8;

/// `utimensat` special nanosecond values.
const UTIME_NOW: i32 = 0x3fff_ffff;
const UTIME_OMIT: i32 = 0x3fff_fffe;

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

fn put_time(buf: &mut [u8], at: usize, t: Timespec) {
    put(buf, at, &t.sec.to_le_bytes());
    put(buf, at + 8, &t.nsec.to_le_bytes());
}

/// `struct stat`, laid out as Emscripten's `writeStat` does: dev u32 @0,
/// mode @4, nlink @8, uid @12, gid @16, rdev @20, size i64 @24, blksize i32
/// @32, blocks i32 @36, atim @40, mtim @56, ctim @72 (i64 sec + u32 nsec),
/// ino i64 @88.
pub fn encode_stat(st: &Stat) -> [u8; STAT_SIZE] {
    let mut b = [0u8; STAT_SIZE];
    put(&mut b, 0, &st.dev.to_le_bytes());
    put(&mut b, 4, &st.mode.to_le_bytes());
    put(&mut b, 8, &st.nlink.to_le_bytes());
    put(&mut b, 12, &st.uid.to_le_bytes());
    put(&mut b, 16, &st.gid.to_le_bytes());
    put(&mut b, 20, &st.rdev.to_le_bytes());
    let size = i64::try_from(st.size).unwrap_or(i64::MAX);
    put(&mut b, 24, &size.to_le_bytes());
    put(&mut b, 32, &4096i32.to_le_bytes());
    let blocks = i32::try_from(st.size.div_ceil(512)).unwrap_or(i32::MAX);
    put(&mut b, 36, &blocks.to_le_bytes());
    put_time(&mut b, 40, st.atime);
    put_time(&mut b, 56, st.mtime);
    put_time(&mut b, 72, st.ctime);
    let ino = i64::try_from(st.ino).unwrap_or(i64::MAX);
    put(&mut b, 88, &ino.to_le_bytes());
    b
}

/// getdents64 records for `entries`, the first being entry number `first`
/// of its directory: ino i64 @0, off i64 @8 (offset of the *next* record),
/// reclen u16 @16, type u8 @18, NUL-terminated name @19.
pub fn encode_dirents(entries: &[DirEntry], first: u64) -> Vec<u8> {
    let mut out = vec![0u8; entries.len() * DIRENT_SIZE];
    for (i, (e, rec)) in entries
        .iter()
        .zip(out.chunks_exact_mut(DIRENT_SIZE))
        .enumerate()
    {
        let next = first
            .saturating_add(i as u64 + 1)
            .saturating_mul(DIRENT_SIZE as u64);
        put(rec, 0, &e.ino.to_le_bytes());
        put(rec, 8, &next.to_le_bytes());
        put(rec, 16, &(DIRENT_SIZE as u16).to_le_bytes());
        rec[18] = e.kind.dirent_type();
        // d_name is 256 bytes; names are at most 255 (NAME_MAX) already.
        let name = &e.name.as_bytes()[..e.name.len().min(255)];
        put(rec, D_NAME, name);
    }
    out
}

/// `struct statfs` (wasm32 musl): f_type @0, f_bsize @4, f_blocks @8,
/// f_bfree @12, f_bavail @16, f_files @20, f_ffree @24 (u32 counts),
/// f_fsid @28 (8 bytes), f_namelen @36, f_frsize @40, f_flags @44.
pub fn encode_statfs(s: &StatFs) -> [u8; STATFS_SIZE] {
    let c = |v: u64| u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes();
    let mut b = [0u8; STATFS_SIZE];
    put(&mut b, 0, &s.fs_type.to_le_bytes());
    put(&mut b, 4, &s.bsize.to_le_bytes());
    put(&mut b, 8, &c(s.blocks));
    put(&mut b, 12, &c(s.bfree));
    put(&mut b, 16, &c(s.bavail));
    put(&mut b, 20, &c(s.files));
    put(&mut b, 24, &c(s.ffree));
    put(&mut b, 36, &s.namelen.to_le_bytes());
    put(&mut b, 40, &s.bsize.to_le_bytes());
    // ST_NOSUID (2), plus ST_RDONLY (1) where nothing can be written.
    let flags: u32 = if s.readonly { 3 } else { 2 };
    put(&mut b, 44, &flags.to_le_bytes());
    b
}

/// `__wasi_fdstat_t`: filetype u8 @0, flags u16 @2, rights base u64 @8,
/// rights inheriting u64 @16.
pub fn encode_fdstat(s: &FdStat) -> [u8; FDSTAT_SIZE] {
    let mut b = [0u8; FDSTAT_SIZE];
    b[0] = s.filetype;
    put(&mut b, 2, &s.flags.to_le_bytes());
    put(&mut b, 8, &s.rights.to_le_bytes());
    b
}

/// One `struct timespec` of `utimensat`'s array, with `UTIME_NOW`/`UTIME_OMIT`.
/// `None` for an out-of-range nanosecond field (`EINVAL`).
pub fn decode_timeset(b: &[u8; TIMESPEC_SIZE]) -> Option<TimeSet> {
    let mut sec = [0u8; 8];
    sec.copy_from_slice(&b[..8]);
    let mut nsec = [0u8; 4];
    nsec.copy_from_slice(&b[8..12]);
    let sec = i64::from_le_bytes(sec);
    match i32::from_le_bytes(nsec) {
        UTIME_NOW => Some(TimeSet::Now),
        UTIME_OMIT => Some(TimeSet::Omit),
        n @ 0..=999_999_999 => Some(TimeSet::At(Timespec {
            sec,
            nsec: n as u32,
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::FileType;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn stat_layout() {
        let st = Stat {
            dev: 7,
            ino: 0x1122_3344_5566,
            mode: 0o100644,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 9,
            size: 1025,
            atime: Timespec {
                sec: 1_700_000_000,
                nsec: 5,
            },
            mtime: Timespec { sec: -1, nsec: 6 },
            ctime: Timespec {
                sec: 3,
                nsec: 999_999_999,
            },
        };
        let b = encode_stat(&st);
        assert_eq!(u32_at(&b, 0), 7);
        assert_eq!(u32_at(&b, 4), 0o100644);
        assert_eq!(u32_at(&b, 8), 1);
        assert_eq!(u32_at(&b, 20), 9);
        assert_eq!(u64_at(&b, 24), 1025);
        assert_eq!(u32_at(&b, 32), 4096);
        assert_eq!(u32_at(&b, 36), 3);
        assert_eq!(u64_at(&b, 40), 1_700_000_000);
        assert_eq!(u32_at(&b, 48), 5);
        assert_eq!(u64_at(&b, 56) as i64, -1);
        assert_eq!(u32_at(&b, 64), 6);
        assert_eq!(u64_at(&b, 72), 3);
        assert_eq!(u32_at(&b, 80), 999_999_999);
        assert_eq!(u64_at(&b, 88), 0x1122_3344_5566);
        let huge = encode_stat(&Stat {
            size: u64::MAX,
            ..st
        });
        assert_eq!(u64_at(&huge, 24), i64::MAX as u64);
        assert_eq!(u32_at(&huge, 36), i32::MAX as u32);
    }

    #[test]
    fn dirent_layout() {
        let entries = [
            DirEntry {
                name: ".".into(),
                ino: 5,
                kind: FileType::Directory,
            },
            DirEntry {
                name: "Renviron".into(),
                ino: 6,
                kind: FileType::Regular,
            },
            DirEntry {
                name: "null".into(),
                ino: 7,
                kind: FileType::CharDevice,
            },
            DirEntry {
                name: "l".into(),
                ino: 8,
                kind: FileType::Symlink,
            },
        ];
        let b = encode_dirents(&entries, 2);
        assert_eq!(b.len(), 4 * 280);
        let r = &b[280..560];
        assert_eq!(u64_at(r, 0), 6);
        assert_eq!(u64_at(r, 8), 4 * 280);
        assert_eq!(u16::from_le_bytes([r[16], r[17]]), 280);
        assert_eq!(r[18], 8);
        assert_eq!(&r[19..28], b"Renviron\0");
        assert_eq!(b[18], 4);
        assert_eq!(b[560 + 18], 2);
        assert_eq!(b[840 + 18], 10);
        assert_eq!(u64_at(&b, 8), 3 * 280);
        let long = DirEntry {
            name: "n".repeat(300),
            ino: 1,
            kind: FileType::Regular,
        };
        let b = encode_dirents(&[long], 0);
        assert_eq!(b[19 + 254], b'n');
        assert_eq!(b[19 + 255], 0);
    }

    #[test]
    fn statfs_fdstat_timespec() {
        let s = StatFs {
            fs_type: 1,
            bsize: 4096,
            blocks: u64::MAX,
            bfree: 2,
            bavail: 2,
            files: 3,
            ffree: 4,
            namelen: 255,
            readonly: true,
        };
        let b = encode_statfs(&s);
        assert_eq!(u32_at(&b, 4), 4096);
        assert_eq!(u32_at(&b, 8), u32::MAX);
        assert_eq!(u32_at(&b, 36), 255);
        assert_eq!(u32_at(&b, 40), 4096);
        assert_eq!(u32_at(&b, 44), 3);
        let f = encode_fdstat(&FdStat {
            filetype: 4,
            flags: 1,
            rights: 0x66,
        });
        assert_eq!(f[0], 4);
        assert_eq!(u16::from_le_bytes([f[2], f[3]]), 1);
        assert_eq!(u64_at(&f, 8), 0x66);
        assert_eq!(u64_at(&f, 16), 0);
        let ts = |sec: i64, nsec: i32| {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&sec.to_le_bytes());
            b[8..12].copy_from_slice(&nsec.to_le_bytes());
            decode_timeset(&b)
        };
        assert_eq!(ts(5, 7), Some(TimeSet::At(Timespec { sec: 5, nsec: 7 })));
        assert_eq!(ts(0, UTIME_NOW), Some(TimeSet::Now));
        assert_eq!(ts(0, UTIME_OMIT), Some(TimeSet::Omit));
        assert_eq!(ts(0, -1), None);
        assert_eq!(ts(0, 1_000_000_000), None);
    }
}
