//! Vfs behaviour against real temp directories: the namespace, read-only
//! layers, mount escapes, caps, descriptors and snapshots.

use super::*;
use crate::errno::*;
use crate::output::{Output, Stream};
use std::path::Path;
use tempfile::TempDir;

const HOME: &str = "/home/web_user";
const RDONLY: u32 = oflags::O_RDONLY;
const WRONLY_CREAT: u32 = oflags::O_WRONLY | oflags::O_CREAT | oflags::O_TRUNC;

struct Fixture {
    vfs: Vfs,
    out: Output,
    /// Holds `ro/`, `rw/`, `rw2/` (mounted) and `outside/` (not mounted).
    host: TempDir,
}

fn image() -> Arc<RoImage> {
    RoImage::from_files([
        ("/usr/lib/R/etc/Renviron", b"R_PAPERSIZE=a4\n".to_vec()),
        (
            "/usr/lib/R/library/base/DESCRIPTION",
            b"Package: base\n".to_vec(),
        ),
    ])
    .unwrap()
}

fn fixture_with(scratch_bytes: u64, max_fds: usize) -> Fixture {
    let host = tempfile::tempdir().unwrap();
    for d in ["ro/sub", "rw/sub", "rw2", "outside"] {
        std::fs::create_dir_all(host.path().join(d)).unwrap();
    }
    std::fs::write(host.path().join("ro/data.csv"), b"a,b\n1,2\n").unwrap();
    std::fs::write(host.path().join("rw/sub/f"), b"inside").unwrap();
    std::fs::write(host.path().join("outside/secret"), b"SECRET").unwrap();
    std::fs::write(host.path().join("secret"), b"SECRET").unwrap();
    let mount = |dir: &str, guest: &str, writable: bool| MountSpec {
        host_dir: host.path().join(dir),
        guest_path: guest.to_string(),
        writable,
    };
    let vfs = Vfs::new(VfsConfig {
        image: image(),
        mounts: vec![
            mount("ro", "/data", false),
            mount("rw", "/mnt/work", true),
            mount("rw2", "/mnt/other", true),
        ],
        home: HOME.to_string(),
        scratch_bytes,
        max_fds,
    })
    .unwrap();
    Fixture {
        vfs,
        out: Output::new(1 << 20),
        host,
    }
}

fn fixture() -> Fixture {
    fixture_with(1 << 20, 64)
}

impl Fixture {
    fn open(&mut self, path: &str, flags: u32) -> Result<i32, Errno> {
        self.vfs.open(AT_FDCWD, path.as_bytes(), flags, 0o644)
    }

    fn read_all(&mut self, path: &str) -> Result<Vec<u8>, Errno> {
        let fd = self.open(path, RDONLY)?;
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = self.vfs.read(fd, &mut buf)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        self.vfs.close(fd)?;
        Ok(out)
    }

    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), Errno> {
        let fd = self.open(path, WRONLY_CREAT)?;
        let r = self.vfs.write(fd, data, &mut self.out);
        self.vfs.close(fd)?;
        assert_eq!(r?, data.len());
        Ok(())
    }

    fn stat(&self, path: &str) -> Result<Stat, Errno> {
        self.vfs.stat_at(AT_FDCWD, path.as_bytes(), true)
    }

    fn names(&self, path: &str) -> Vec<String> {
        self.vfs
            .list_dir(AT_FDCWD, path.as_bytes())
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n != "." && n != "..")
            .collect()
    }

    fn host(&self, rel: &str) -> std::path::PathBuf {
        self.host.path().join(rel)
    }
}

#[test]
fn host_paths_do_not_exist() {
    let mut f = fixture();
    let host_home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cwd = std::env::current_dir().unwrap();
    let tmp = f.host.path().to_str().unwrap().to_string();
    for p in [
        "/etc/passwd",
        "/etc",
        "/proc/self/environ",
        "/proc",
        "/root",
        "/sys",
        "/usr/bin/env",
        "/home/other",
        host_home.as_str(),
        cwd.to_str().unwrap(),
        tmp.as_str(),
    ] {
        assert_eq!(f.stat(p).unwrap_err(), ENOENT, "{p}");
        assert_eq!(f.open(p, RDONLY).unwrap_err(), ENOENT, "{p}");
    }
    // Lexical `..` cannot climb out of a mount or the root.
    assert_eq!(
        f.open("/data/../../../etc/passwd", RDONLY).unwrap_err(),
        ENOENT
    );
    f.vfs.chdir(b"/data/sub").unwrap();
    assert_eq!(f.open("../../../../secret", RDONLY).unwrap_err(), ENOENT);
    assert_eq!(f.open("../../outside/secret", RDONLY).unwrap_err(), ENOENT);
    assert_eq!(f.vfs.cwd(), "/data/sub");
    assert_eq!(f.open("", RDONLY).unwrap_err(), ENOENT);
}

#[test]
fn root_lists_only_the_namespace() {
    let f = fixture();
    assert_eq!(f.names("/"), ["data", "dev", "home", "mnt", "tmp", "usr"]);
    assert_eq!(f.names("/home"), ["web_user"]);
    assert_eq!(f.names("/mnt"), ["other", "work"]);
    assert_eq!(f.names("/usr/lib/R"), ["etc", "library"]);
    assert_eq!(
        f.names("/dev"),
        [
            "hako-message",
            "hako-warning",
            "null",
            "stderr",
            "stdin",
            "stdout",
            "urandom",
            "zero"
        ]
    );
    assert_eq!(f.names("/data"), ["data.csv", "sub"]);
    assert!(f.names(HOME).is_empty());
    let all = f.vfs.list_dir(AT_FDCWD, b"/").unwrap();
    assert_eq!(all[0].name, ".");
    assert_eq!(all[1].name, "..");
    assert_eq!(f.stat("/").unwrap().mode & mode::S_IFMT, mode::S_IFDIR);
    assert_eq!(f.vfs.cwd(), HOME);
}

#[test]
fn image_is_read_only() {
    let mut f = fixture();
    assert_eq!(
        f.read_all("/usr/lib/R/etc/Renviron").unwrap(),
        b"R_PAPERSIZE=a4\n"
    );
    let st = f.stat("/usr/lib/R/etc/Renviron").unwrap();
    assert_eq!(st.size, 15);
    assert_eq!(st.mode & 0o222, 0);
    let renv = "/usr/lib/R/etc/Renviron";
    assert_eq!(f.open(renv, oflags::O_WRONLY).unwrap_err(), EROFS);
    assert_eq!(f.open(renv, oflags::O_RDWR).unwrap_err(), EROFS);
    assert_eq!(f.open(renv, RDONLY | oflags::O_TRUNC).unwrap_err(), EROFS);
    assert_eq!(
        f.open("/usr/lib/R/etc/new", WRONLY_CREAT).unwrap_err(),
        EROFS
    );
    assert_eq!(f.open("/newfile", WRONLY_CREAT).unwrap_err(), EROFS);
    assert_eq!(f.open("/etc/newfile", WRONLY_CREAT).unwrap_err(), ENOENT);
    assert_eq!(
        f.vfs.mkdir(AT_FDCWD, b"/usr/lib/R/x", 0o755).unwrap_err(),
        EROFS
    );
    assert_eq!(
        f.vfs.mkdir(AT_FDCWD, b"/usr/lib/R/etc", 0o755).unwrap_err(),
        EEXIST
    );
    assert_eq!(
        f.vfs.unlink(AT_FDCWD, renv.as_bytes(), false).unwrap_err(),
        EROFS
    );
    assert_eq!(
        f.vfs.unlink(AT_FDCWD, b"/usr/lib/R/etc", true).unwrap_err(),
        EROFS
    );
    assert_eq!(
        f.vfs
            .rename(AT_FDCWD, renv.as_bytes(), AT_FDCWD, b"/tmp/x")
            .unwrap_err(),
        EROFS
    );
    assert_eq!(
        f.vfs
            .chmod(AT_FDCWD, renv.as_bytes(), 0o777, true)
            .unwrap_err(),
        EROFS
    );
    assert_eq!(f.vfs.truncate(renv.as_bytes(), 0).unwrap_err(), EROFS);
    assert_eq!(
        f.vfs
            .utimens(AT_FDCWD, renv.as_bytes(), TimeSet::Now, TimeSet::Now, true)
            .unwrap_err(),
        EROFS
    );
    assert_eq!(
        f.vfs.access(AT_FDCWD, renv.as_bytes(), 2).unwrap_err(),
        EROFS
    );
    assert!(f.vfs.access(AT_FDCWD, renv.as_bytes(), 4).is_ok());
    assert_eq!(
        f.vfs.symlink(b"x", AT_FDCWD, b"/usr/lib/R/l").unwrap_err(),
        EROFS
    );
    assert_eq!(f.vfs.mkdir(AT_FDCWD, b"/dev/x", 0o755).unwrap_err(), EROFS);
    assert_eq!(f.vfs.unlink(AT_FDCWD, b"/tmp", true).unwrap_err(), EBUSY);
    assert_eq!(
        f.vfs.unlink(AT_FDCWD, HOME.as_bytes(), true).unwrap_err(),
        EBUSY
    );
    assert_eq!(
        f.vfs.unlink(AT_FDCWD, b"/mnt/work", true).unwrap_err(),
        EBUSY
    );
    assert_eq!(
        f.vfs.readlink(AT_FDCWD, renv.as_bytes()).unwrap_err(),
        EINVAL
    );
    assert_eq!(f.vfs.readlink(AT_FDCWD, b"/nope").unwrap_err(), ENOENT);
}

#[test]
fn read_only_mount_refuses_every_write() {
    let mut f = fixture();
    assert_eq!(f.read_all("/data/data.csv").unwrap(), b"a,b\n1,2\n");
    let csv = b"/data/data.csv";
    assert_eq!(
        f.open("/data/data.csv", oflags::O_WRONLY).unwrap_err(),
        EROFS
    );
    assert_eq!(
        f.open("/data/data.csv", oflags::O_RDWR | oflags::O_APPEND)
            .unwrap_err(),
        EROFS
    );
    assert_eq!(f.open("/data/new", WRONLY_CREAT).unwrap_err(), EROFS);
    assert_eq!(
        f.open("/data/new", RDONLY | oflags::O_CREAT).unwrap_err(),
        EROFS
    );
    assert_eq!(f.vfs.unlink(AT_FDCWD, csv, false).unwrap_err(), EROFS);
    assert_eq!(
        f.vfs.unlink(AT_FDCWD, b"/data/sub", true).unwrap_err(),
        EROFS
    );
    assert_eq!(
        f.vfs
            .rename(AT_FDCWD, csv, AT_FDCWD, b"/data/moved")
            .unwrap_err(),
        EROFS
    );
    assert_eq!(
        f.vfs
            .rename(AT_FDCWD, csv, AT_FDCWD, b"/tmp/moved")
            .unwrap_err(),
        EROFS
    );
    assert_eq!(f.vfs.mkdir(AT_FDCWD, b"/data/d", 0o755).unwrap_err(), EROFS);
    assert_eq!(f.vfs.chmod(AT_FDCWD, csv, 0o600, true).unwrap_err(), EROFS);
    assert_eq!(f.vfs.chown(AT_FDCWD, csv, true).unwrap_err(), EROFS);
    assert_eq!(f.vfs.truncate(csv, 0).unwrap_err(), EROFS);
    assert_eq!(
        f.vfs
            .utimens(AT_FDCWD, csv, TimeSet::Now, TimeSet::Now, true)
            .unwrap_err(),
        EROFS
    );
    assert_eq!(
        f.vfs
            .symlink(b"data.csv", AT_FDCWD, b"/data/l")
            .unwrap_err(),
        EROFS
    );
    assert_eq!(f.vfs.access(AT_FDCWD, csv, 2).unwrap_err(), EROFS);
    // Through a read-only descriptor too.
    let fd = f.open("/data/data.csv", RDONLY).unwrap();
    assert_eq!(f.vfs.write(fd, b"x", &mut f.out).unwrap_err(), EBADF);
    assert_eq!(f.vfs.ftruncate(fd, 0).unwrap_err(), EINVAL);
    assert_eq!(f.vfs.fchmod(fd, 0o777).unwrap_err(), EROFS);
    assert_eq!(
        f.vfs.futimens(fd, TimeSet::Now, TimeSet::Now).unwrap_err(),
        EROFS
    );
    assert_eq!(f.stat("/data/data.csv").unwrap().mode & 0o222, 0);
    assert_eq!(std::fs::read(f.host("ro/data.csv")).unwrap(), b"a,b\n1,2\n");
    assert!(f.vfs.statfs(b"/data").unwrap().readonly);
}

#[test]
fn read_write_mount_works() {
    let mut f = fixture();
    f.write_file("/mnt/work/out.txt", b"hello").unwrap();
    assert_eq!(std::fs::read(f.host("rw/out.txt")).unwrap(), b"hello");
    f.vfs.mkdir(AT_FDCWD, b"/mnt/work/d", 0o755).unwrap();
    f.vfs
        .rename(AT_FDCWD, b"/mnt/work/out.txt", AT_FDCWD, b"/mnt/work/d/o")
        .unwrap();
    assert_eq!(f.read_all("/mnt/work/d/o").unwrap(), b"hello");
    let fd = f
        .open("/mnt/work/d/o", oflags::O_WRONLY | oflags::O_APPEND)
        .unwrap();
    f.vfs.write(fd, b"!", &mut f.out).unwrap();
    f.vfs.close(fd).unwrap();
    assert_eq!(std::fs::read(f.host("rw/d/o")).unwrap(), b"hello!");
    f.vfs.truncate(b"/mnt/work/d/o", 2).unwrap();
    assert_eq!(f.stat("/mnt/work/d/o").unwrap().size, 2);
    f.vfs.unlink(AT_FDCWD, b"/mnt/work/d/o", false).unwrap();
    f.vfs.unlink(AT_FDCWD, b"/mnt/work/d", true).unwrap();
    assert!(!f.host("rw/d").exists());
    assert_eq!(f.open("/mnt/work/d", RDONLY).unwrap_err(), ENOENT);
}

#[test]
fn mount_escapes_are_refused() {
    let mut f = fixture();
    let secret = f.host("outside/secret");
    // An absolute symlink placed in the host directory.
    std::os::unix::fs::symlink(&secret, f.host("ro/abs")).unwrap();
    // A relative chain whose last hop leaves the mount.
    std::os::unix::fs::symlink("sub/hop", f.host("ro/chain")).unwrap();
    std::os::unix::fs::symlink("../../outside/secret", f.host("ro/sub/hop")).unwrap();
    // A directory symlink out of the mount.
    std::os::unix::fs::symlink("../outside", f.host("rw/dirlink")).unwrap();
    for p in [
        "/data/abs",
        "/data/chain",
        "/data/sub/hop",
        "/mnt/work/dirlink/secret",
    ] {
        let e = f.read_all(p).unwrap_err();
        assert!(e == EACCES || e == EPERM || e == ENOENT, "{p}: {e:?}");
        assert!(f.stat(p).is_err(), "{p}");
    }
    assert!(f.vfs.list_dir(AT_FDCWD, b"/mnt/work/dirlink").is_err());
    assert!(f.open("/mnt/work/dirlink/new", WRONLY_CREAT).is_err());
    assert!(!f.host("outside/new").exists());
    // Absolute targets are not even revealed.
    assert!(f.vfs.readlink(AT_FDCWD, b"/data/abs").is_err());
    // lstat sees the link itself.
    assert_eq!(
        f.vfs
            .stat_at(AT_FDCWD, b"/data/chain", false)
            .unwrap()
            .file_type(),
        FileType::Symlink
    );
    assert_eq!(
        f.vfs.readlink(AT_FDCWD, b"/data/chain").unwrap(),
        b"sub/hop"
    );
}

#[test]
fn guest_symlinks_only_point_down_inside_rw_mounts() {
    let mut f = fixture();
    for target in [
        "../outside/secret",
        "/etc/passwd",
        "sub/../../outside",
        "..",
        "",
        "a/../b",
    ] {
        assert_eq!(
            f.vfs
                .symlink(target.as_bytes(), AT_FDCWD, b"/mnt/work/l")
                .unwrap_err(),
            EPERM,
            "{target}"
        );
    }
    assert!(!f.host("rw/l").exists());
    f.vfs.symlink(b"sub/f", AT_FDCWD, b"/mnt/work/l").unwrap();
    assert_eq!(f.read_all("/mnt/work/l").unwrap(), b"inside");
    assert_eq!(
        std::fs::read_link(f.host("rw/l")).unwrap(),
        Path::new("sub/f")
    );
    assert_eq!(f.vfs.readlink(AT_FDCWD, b"/mnt/work/l").unwrap(), b"sub/f");
    f.vfs
        .symlink(b"./f", AT_FDCWD, b"/mnt/work/sub/l2")
        .unwrap();
    assert_eq!(f.read_all("/mnt/work/sub/l2").unwrap(), b"inside");
    // No symlinks in scratch at all.
    assert_eq!(f.vfs.symlink(b"x", AT_FDCWD, b"/tmp/l").unwrap_err(), EPERM);
    assert_eq!(f.vfs.symlink(b"x", AT_FDCWD, b"l").unwrap_err(), EPERM);
}

#[test]
fn rename_stays_within_one_filesystem() {
    let mut f = fixture();
    f.write_file("/mnt/work/a", b"1").unwrap();
    f.write_file("/tmp/t", b"2").unwrap();
    let r = |f: &mut Fixture, a: &str, b: &str| {
        f.vfs.rename(AT_FDCWD, a.as_bytes(), AT_FDCWD, b.as_bytes())
    };
    assert_eq!(r(&mut f, "/mnt/work/a", "/mnt/other/a").unwrap_err(), EXDEV);
    assert_eq!(r(&mut f, "/mnt/work/a", "/tmp/a").unwrap_err(), EXDEV);
    assert_eq!(r(&mut f, "/tmp/t", "/mnt/work/t").unwrap_err(), EXDEV);
    assert_eq!(
        r(&mut f, "/tmp/missing", "/mnt/work/t").unwrap_err(),
        ENOENT
    );
    assert_eq!(r(&mut f, "/tmp/t", "/usr/lib/R/t").unwrap_err(), EROFS);
    assert_eq!(r(&mut f, "/tmp", "/tmp2").unwrap_err(), EBUSY);
    assert_eq!(r(&mut f, "/tmp/t", HOME).unwrap_err(), EBUSY);
    r(&mut f, "/tmp/t", "/home/web_user/t").unwrap();
    assert_eq!(f.read_all("/home/web_user/t").unwrap(), b"2");
    r(&mut f, "/mnt/work/a", "/mnt/work/b").unwrap();
    assert!(f.host("rw/b").exists());
}

#[test]
fn scratch_is_private_and_capped() {
    let mut f = fixture_with(64 * 1024, 64);
    f.write_file("notes.txt", b"in home").unwrap();
    assert_eq!(f.read_all("/home/web_user/notes.txt").unwrap(), b"in home");
    f.vfs.mkdir(AT_FDCWD, b"/tmp/RtmpAB", 0o700).unwrap();
    f.write_file("/tmp/RtmpAB/f", &[7u8; 1000]).unwrap();
    assert_eq!(f.names("/tmp/RtmpAB"), ["f"]);
    let fd = f.open("/tmp/big", WRONLY_CREAT).unwrap();
    let chunk = vec![1u8; 8192];
    let mut written = 0;
    let err = loop {
        match f.vfs.write(fd, &chunk, &mut f.out) {
            Ok(n) => written += n,
            Err(e) => break e,
        }
    };
    assert_eq!(err, ENOSPC);
    assert!(written > 32 * 1024 && written < 64 * 1024);
    assert!(f.vfs.scratch_used() <= 64 * 1024);
    // Sparse growth is charged like data.
    assert_eq!(f.vfs.seek(fd, 1 << 40, 0).unwrap(), 1 << 40);
    assert_eq!(f.vfs.write(fd, b"x", &mut f.out).unwrap_err(), ENOSPC);
    assert_eq!(f.vfs.ftruncate(fd, 1 << 20).unwrap_err(), ENOSPC);
    f.vfs.close(fd).unwrap();
    f.vfs.unlink(AT_FDCWD, b"/tmp/big", false).unwrap();
    f.write_file("/tmp/after", &[0u8; 8192]).unwrap();
    // Nothing reached the host.
    assert!(std::fs::read_dir(f.host("rw"))
        .unwrap()
        .all(|e| e.unwrap().file_name() != "after"));
    assert_eq!(
        f.vfs.unlink(AT_FDCWD, b"/tmp/RtmpAB", true).unwrap_err(),
        ENOTEMPTY
    );
    assert_eq!(
        f.vfs.unlink(AT_FDCWD, b"/tmp/RtmpAB", false).unwrap_err(),
        EISDIR
    );
    assert_eq!(
        f.vfs.unlink(AT_FDCWD, b"/tmp/RtmpAB/f", true).unwrap_err(),
        ENOTDIR
    );
    assert_eq!(f.open("/tmp/RtmpAB/f/", RDONLY).unwrap_err(), ENOTDIR);
}

#[test]
fn unlinked_open_file_survives_until_close() {
    let mut f = fixture();
    f.write_file("/tmp/x", b"data").unwrap();
    let fd = f.open("/tmp/x", RDONLY).unwrap();
    let used = f.vfs.scratch_used();
    f.vfs.unlink(AT_FDCWD, b"/tmp/x", false).unwrap();
    assert_eq!(f.stat("/tmp/x").unwrap_err(), ENOENT);
    let mut buf = [0u8; 8];
    assert_eq!(f.vfs.read(fd, &mut buf).unwrap(), 4);
    assert_eq!(f.vfs.fstat(fd).unwrap().nlink, 0);
    assert!(f.vfs.scratch_used() < used);
    let before = f.vfs.scratch_used();
    f.vfs.close(fd).unwrap();
    assert!(f.vfs.scratch_used() < before);
}

#[test]
fn descriptors_run_out_with_emfile() {
    let mut f = fixture_with(1 << 20, 8);
    let fds: Vec<i32> = (0..5)
        .map(|_| f.open("/dev/null", RDONLY).unwrap())
        .collect();
    assert_eq!(fds, [3, 4, 5, 6, 7]);
    assert_eq!(f.open("/dev/null", RDONLY).unwrap_err(), EMFILE);
    // Running out creates nothing.
    assert_eq!(f.open("/tmp/new", WRONLY_CREAT).unwrap_err(), EMFILE);
    assert_eq!(f.stat("/tmp/new").unwrap_err(), ENOENT);
    assert_eq!(f.vfs.dup(3).unwrap_err(), EMFILE);
    f.vfs.close(5).unwrap();
    assert_eq!(f.vfs.dup(3).unwrap(), 5);
    assert_eq!(f.vfs.dup3(3, 8, 0).unwrap_err(), EBADF);
    assert_eq!(f.vfs.close(100).unwrap_err(), EBADF);
    assert_eq!(f.vfs.close(-1).unwrap_err(), EBADF);
}

#[test]
fn stdio_and_devices() {
    let mut f = fixture();
    assert_eq!(f.vfs.write(1, b"out", &mut f.out).unwrap(), 3);
    assert_eq!(f.vfs.write(2, b"err", &mut f.out).unwrap(), 3);
    let msg = f.open("/dev/hako-message", oflags::O_WRONLY).unwrap();
    let warn = f.open("/dev/hako-warning", oflags::O_WRONLY).unwrap();
    f.vfs.write(msg, b"note", &mut f.out).unwrap();
    f.vfs.write(warn, b"careful", &mut f.out).unwrap();
    let so = f.open("/dev/stdout", oflags::O_WRONLY).unwrap();
    f.vfs.write(so, b"!", &mut f.out).unwrap();
    let chunks = f.out.take();
    let got: Vec<(Stream, &[u8])> = chunks.iter().map(|c| (c.stream, &c.bytes[..])).collect();
    assert_eq!(
        got,
        [
            (Stream::Stdout, &b"out"[..]),
            (Stream::Stderr, b"err"),
            (Stream::Message, b"note"),
            (Stream::Warning, b"careful"),
            (Stream::Stdout, b"!"),
        ]
    );
    let mut buf = [1u8; 16];
    assert_eq!(f.vfs.read(0, &mut buf).unwrap(), 0);
    assert_eq!(f.read_all("/dev/stdin").unwrap(), b"");
    assert_eq!(f.read_all("/dev/null").unwrap(), b"");
    let z = f.open("/dev/zero", RDONLY).unwrap();
    assert_eq!(f.vfs.read(z, &mut buf).unwrap(), 16);
    assert_eq!(buf, [0u8; 16]);
    let r = f.open("/dev/urandom", RDONLY).unwrap();
    f.vfs.read(r, &mut buf).unwrap();
    assert_ne!(buf, [0u8; 16]);
    assert_eq!(f.vfs.read(1, &mut buf).unwrap_err(), EBADF);
    assert_eq!(f.vfs.write(0, b"x", &mut f.out).unwrap_err(), EBADF);
    // Stdio is pipe-like and never a terminal.
    assert_eq!(f.vfs.seek(1, 0, 1).unwrap_err(), ESPIPE);
    for fd in 0..3 {
        assert_ne!(f.vfs.fdstat(fd).unwrap().filetype, 2);
    }
    assert_eq!(f.open("/dev/tty", RDONLY).unwrap_err(), ENOENT);
    assert_eq!(f.open("/dev/null/x", RDONLY).unwrap_err(), ENOTDIR);
    assert_eq!(
        f.stat("/dev/null").unwrap().file_type(),
        FileType::CharDevice
    );
}

#[test]
fn seek_dup_and_flags() {
    let mut f = fixture();
    f.write_file("/tmp/s", b"0123456789").unwrap();
    let fd = f.open("/tmp/s", oflags::O_RDWR).unwrap();
    assert_eq!(f.vfs.seek(fd, -3, 2).unwrap(), 7);
    let d = f.vfs.dup(fd).unwrap();
    let mut b = [0u8; 2];
    f.vfs.read(d, &mut b).unwrap();
    assert_eq!(&b, b"78");
    assert_eq!(f.vfs.seek(fd, 0, 1).unwrap(), 9);
    assert_eq!(f.vfs.seek(fd, -10, 1).unwrap_err(), EINVAL);
    assert_eq!(f.vfs.seek(fd, 0, 9).unwrap_err(), EINVAL);
    assert_eq!(f.vfs.pread(fd, &mut b, 1).unwrap(), 2);
    assert_eq!(&b, b"12");
    assert_eq!(f.vfs.seek(fd, 0, 1).unwrap(), 9);
    f.vfs.pwrite(fd, b"ab", 0, &mut f.out).unwrap();
    f.vfs
        .set_fl(fd, oflags::O_APPEND | oflags::O_WRONLY)
        .unwrap();
    assert_eq!(f.vfs.get_fl(fd).unwrap(), oflags::O_RDWR | oflags::O_APPEND);
    f.vfs.seek(fd, 0, 0).unwrap();
    f.vfs.write(fd, b"Z", &mut f.out).unwrap();
    assert_eq!(f.read_all("/tmp/s").unwrap(), b"ab23456789Z");
    assert!(!f.vfs.get_cloexec(fd).unwrap());
    let c = f.vfs.dup_min(fd, 10, true).unwrap();
    assert_eq!(c, 10);
    assert!(f.vfs.get_cloexec(c).unwrap());
    assert_eq!(f.vfs.dup3(fd, 1, 0).unwrap(), 1);
    f.vfs.write(1, b"!", &mut f.out).unwrap();
    assert!(f.out.take().is_empty());
    assert_eq!(f.read_all("/tmp/s").unwrap(), b"ab23456789Z!");
}

#[test]
fn directories_through_descriptors() {
    let mut f = fixture();
    for n in ["b", "a", "c"] {
        f.write_file(&format!("/tmp/{n}"), b"").unwrap();
    }
    let dfd = f.open("/tmp", RDONLY | oflags::O_DIRECTORY).unwrap();
    let (first, i) = f.vfs.getdents(dfd, 2).unwrap();
    assert_eq!(i, 0);
    assert_eq!(
        first.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        [".", ".."]
    );
    let (rest, i) = f.vfs.getdents(dfd, 10).unwrap();
    assert_eq!(i, 2);
    assert_eq!(
        rest.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert!(f.vfs.getdents(dfd, 10).unwrap().0.is_empty());
    assert_eq!(f.vfs.seek(dfd, 0, 1).unwrap(), 5 * DIRENT_SIZE);
    // rewinddir re-reads.
    f.write_file("/tmp/d", b"").unwrap();
    f.vfs.seek(dfd, 0, 0).unwrap();
    assert_eq!(f.vfs.getdents(dfd, 10).unwrap().0.len(), 6);
    // openat relative to the directory descriptor, and fchdir.
    let fd = f.vfs.open(dfd, b"a", RDONLY, 0).unwrap();
    assert_eq!(f.vfs.fstat(fd).unwrap().size, 0);
    assert_eq!(f.vfs.read(dfd, &mut [0u8; 4]).unwrap_err(), EISDIR);
    assert_eq!(f.vfs.open(fd, b"x", RDONLY, 0).unwrap_err(), ENOTDIR);
    assert_eq!(f.vfs.open(99, b"x", RDONLY, 0).unwrap_err(), EBADF);
    // An absolute path ignores the dirfd, even a bad one.
    assert!(f.vfs.open(99, b"/tmp/a", RDONLY, 0).is_ok());
    f.vfs.fchdir(dfd).unwrap();
    assert_eq!(f.vfs.cwd(), "/tmp");
    assert_eq!(f.vfs.fchdir(fd).unwrap_err(), ENOTDIR);
    assert_eq!(f.open("/tmp", oflags::O_WRONLY).unwrap_err(), EISDIR);
    assert_eq!(f.open("/tmp/a", oflags::O_DIRECTORY).unwrap_err(), ENOTDIR);
    // Mount directories list through the host.
    let m = f.open("/mnt/work", RDONLY).unwrap();
    let names: Vec<String> = f
        .vfs
        .getdents(m, 10)
        .unwrap()
        .0
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, [".", "..", "sub"]);
}

#[test]
fn scratch_permissions_and_times() {
    let mut f = fixture();
    f.write_file("/tmp/p", b"x").unwrap();
    f.vfs.chmod(AT_FDCWD, b"/tmp/p", 0o400, true).unwrap();
    assert_eq!(f.open("/tmp/p", oflags::O_WRONLY).unwrap_err(), EACCES);
    assert_eq!(f.vfs.access(AT_FDCWD, b"/tmp/p", 2).unwrap_err(), EACCES);
    assert!(f.vfs.access(AT_FDCWD, b"/tmp/p", 4).is_ok());
    f.vfs.mkdir(AT_FDCWD, b"/tmp/ro", 0o500).unwrap();
    assert_eq!(f.open("/tmp/ro/f", WRONLY_CREAT).unwrap_err(), EACCES);
    let t = Timespec {
        sec: 1_000_000,
        nsec: 5,
    };
    f.vfs
        .utimens(AT_FDCWD, b"/tmp/p", TimeSet::Omit, TimeSet::At(t), true)
        .unwrap();
    assert_eq!(f.stat("/tmp/p").unwrap().mtime, t);
    assert_eq!(f.vfs.umask(0o077), 0o022);
    f.write_file("/tmp/u", b"").unwrap();
    assert_eq!(f.stat("/tmp/u").unwrap().mode & 0o777, 0o600);
}

#[test]
fn snapshot_restore_round_trip() {
    let mut f = fixture();
    f.write_file("/tmp/keep", b"one").unwrap();
    let kept = f.open("/tmp/keep", RDONLY).unwrap();
    let mut b = [0u8; 1];
    f.vfs.read(kept, &mut b).unwrap();
    let img = f.open("/usr/lib/R/etc/Renviron", RDONLY).unwrap();
    let snap = f.vfs.snapshot();
    // The state survives serialisation (pristine snapshots go to disk).
    let snap: VfsState = bincode::deserialize(&bincode::serialize(&snap).unwrap()).unwrap();

    f.write_file("/tmp/keep", b"two!").unwrap();
    f.write_file("/tmp/new", b"new").unwrap();
    f.vfs.mkdir(AT_FDCWD, b"/home/web_user/dir", 0o755).unwrap();
    let mount_fd = f.open("/mnt/work/sub/f", RDONLY).unwrap();
    let mount_dir = f.open("/mnt/work", RDONLY).unwrap();
    let extra = f.open("/dev/null", RDONLY).unwrap();
    f.vfs.chdir(b"/mnt/work").unwrap();
    f.vfs.umask(0);

    f.vfs.restore(&snap);
    assert_eq!(f.vfs.cwd(), HOME);
    assert_eq!(f.vfs.umask(0o022), 0o022);
    assert_eq!(f.stat("/tmp/new").unwrap_err(), ENOENT);
    assert_eq!(f.stat("/home/web_user/dir").unwrap_err(), ENOENT);
    assert_eq!(f.read_all("/tmp/keep").unwrap(), b"one");
    for fd in [mount_fd, mount_dir, extra] {
        assert_eq!(f.vfs.fstat(fd).unwrap_err(), EBADF, "fd {fd}");
    }
    // Descriptors open at snapshot time are back, offsets included.
    let mut rest = [0u8; 8];
    assert_eq!(f.vfs.read(kept, &mut rest).unwrap(), 2);
    assert_eq!(&rest[..2], b"ne");
    assert_eq!(f.vfs.read(img, &mut rest).unwrap(), 8);
    assert_eq!(&rest, b"R_PAPERS");
    // Restoring into a fresh Vfs (as a new sandbox does) works too.
    let mut g = fixture();
    g.vfs.restore(&snap);
    assert_eq!(g.read_all("/tmp/keep").unwrap(), b"one");
    assert!(g.vfs.fstat(kept).is_ok());
    // And the mount on the host was left alone.
    assert_eq!(std::fs::read(f.host("rw/sub/f")).unwrap(), b"inside");
}

#[test]
fn bad_configurations_are_rejected() {
    let t = tempfile::tempdir().unwrap();
    let cfg = |guest: &str, dir: &Path| VfsConfig {
        image: image(),
        mounts: vec![MountSpec {
            host_dir: dir.to_path_buf(),
            guest_path: guest.to_string(),
            writable: false,
        }],
        home: HOME.to_string(),
        scratch_bytes: 1 << 20,
        max_fds: 16,
    };
    for bad in [
        "relative",
        "/",
        "/dev",
        "/dev/x",
        "/tmp",
        "/tmp/x",
        "/usr",
        "/usr/lib/R/library",
        "/home",
        "/home/web_user/data",
    ] {
        assert!(Vfs::new(cfg(bad, t.path())).is_err(), "{bad}");
    }
    assert!(Vfs::new(cfg("/data", &t.path().join("missing"))).is_err());
    let mut two = cfg("/a", t.path());
    two.mounts.push(MountSpec {
        host_dir: t.path().to_path_buf(),
        guest_path: "/a/b".into(),
        writable: true,
    });
    assert!(Vfs::new(two).is_err());
    let mut home = cfg("/data", t.path());
    home.home = "/usr/lib/R/home".into();
    assert!(Vfs::new(home).is_err());
    let mut fds = cfg("/data", t.path());
    fds.max_fds = 2;
    assert!(Vfs::new(fds).is_err());
    assert!(Vfs::new(cfg("/srv//data/", t.path())).is_ok());
}

/// Host mode of a file under the fixture's host directory.
fn host_mode(f: &Fixture, rel: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(f.host(rel))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn only_permission_bits_reach_the_host() {
    let mut f = fixture();
    // chmod, on a file and a directory, setuid/setgid/sticky all requested.
    f.write_file("/mnt/work/s", b"#!/bin/sh\n").unwrap();
    for mode in [0o4755, 0o2755, 0o6777, 0o7777, 0o1777] {
        f.vfs.chmod(AT_FDCWD, b"/mnt/work/s", mode, true).unwrap();
        assert_eq!(host_mode(&f, "rw/s"), mode & 0o777, "chmod {mode:o}");
        f.vfs.chmod(AT_FDCWD, b"/mnt/work/sub", mode, true).unwrap();
        assert_eq!(host_mode(&f, "rw/sub"), mode & 0o777, "dir chmod {mode:o}");
    }
    // fchmod through a descriptor.
    let fd = f.open("/mnt/work/s", oflags::O_RDONLY).unwrap();
    f.vfs.fchmod(fd, 0o6755).unwrap();
    assert_eq!(host_mode(&f, "rw/s"), 0o755);
    f.vfs.close(fd).unwrap();
    // fchmod on a directory descriptor.
    let fd = f
        .open("/mnt/work/sub", oflags::O_RDONLY | oflags::O_DIRECTORY)
        .unwrap();
    f.vfs.fchmod(fd, 0o2775).unwrap();
    assert_eq!(host_mode(&f, "rw/sub"), 0o775);
    f.vfs.close(fd).unwrap();
    // open(O_CREAT) and mkdir with special bits in the mode.
    f.vfs.umask(0);
    let fd = f
        .vfs
        .open(AT_FDCWD, b"/mnt/work/new", WRONLY_CREAT, 0o6777)
        .unwrap();
    f.vfs.close(fd).unwrap();
    // (the host's umask may clear more)
    assert_eq!(host_mode(&f, "rw/new") & !0o777, 0);
    assert_eq!(host_mode(&f, "rw/new") & 0o700, 0o700);
    f.vfs.mkdir(AT_FDCWD, b"/mnt/work/gd", 0o3777).unwrap();
    assert_eq!(host_mode(&f, "rw/gd") & !0o777, 0);
    assert_eq!(host_mode(&f, "rw/gd") & 0o700, 0o700);
}

#[test]
fn readlink_hides_targets_outside_the_mount() {
    let f = fixture();
    let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, f.host(at)).unwrap();
    link("../outside/secret", "rw/up");
    link("../../outside/secret", "rw/sub/up2");
    link("sub/../../outside", "rw/zig");
    link("../outside/secret", "ro/up");
    link(f.host("outside/secret").to_str().unwrap(), "rw/abs");
    link("sub/f", "rw/down");
    link("../sub/f", "rw/sub/sib");
    link("./x/../f", "rw/sub/dots");
    for p in [
        "/mnt/work/up",
        "/mnt/work/sub/up2",
        "/mnt/work/zig",
        "/data/up",
        "/mnt/work/abs",
    ] {
        assert_eq!(
            f.vfs.readlink(AT_FDCWD, p.as_bytes()).unwrap_err(),
            EINVAL,
            "{p}"
        );
        // still a link to lstat, naming nothing
        assert_eq!(
            f.vfs
                .stat_at(AT_FDCWD, p.as_bytes(), false)
                .unwrap()
                .file_type(),
            FileType::Symlink
        );
    }
    assert_eq!(
        f.vfs.readlink(AT_FDCWD, b"/mnt/work/down").unwrap(),
        b"sub/f"
    );
    assert_eq!(
        f.vfs.readlink(AT_FDCWD, b"/mnt/work/sub/sib").unwrap(),
        b"../sub/f"
    );
    assert_eq!(
        f.vfs.readlink(AT_FDCWD, b"/mnt/work/sub/dots").unwrap(),
        b"./x/../f"
    );
}
