//! The pristine state: R right after start-up, captured once and persisted so
//! that every sandbox, in this process or a later one, starts from it instead
//! of booting R.
//!
//! On disk (`<cache>/pristine/<key>/`): `memory.img`, the linear memory, page
//! aligned, mapped copy-on-write by every sandbox; and `state.bin`, the linker
//! and filesystem state plus a checksum of the image. A snapshot that fails
//! its checks is rebuilt, never used.

use crate::dylink::LinkState;
use crate::engine::write_atomic;
use crate::memory::{page_size, MemImage};
use crate::vfs::VfsState;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::error::{bail, Context, Result};

/// Bumped whenever what boot does changes, so old snapshots are not reused.
pub const BOOT_VERSION: u32 = 5;

#[derive(Clone, Serialize, Deserialize)]
pub struct PristineState {
    pub link: LinkState,
    pub vfs: VfsState,
    /// `.hako$eval_text`, `.hako$task` and `.hako$task_error` closures
    /// (preserved, so their addresses are stable in every copy of the image).
    pub eval_fn: u32,
    pub task_fn: u32,
    pub task_error_fn: u32,
    pub mem_len: usize,
    pub mem_min_pages: u64,
    pub mem_sha256: String,
}

/// A loaded pristine snapshot.
pub struct Pristine {
    pub state: PristineState,
    pub image: Arc<MemImage>,
    /// Where it is persisted (empty for one kept only in memory).
    pub dir: PathBuf,
}

impl Pristine {
    /// Persist a snapshot: the image first, the state (which vouches for the
    /// image by checksum) last.
    pub fn save(dir: &Path, memory: &[u8], mut state: PristineState) -> Result<Pristine> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let page = page_size();
        let len = memory.len().div_ceil(page) * page;
        let mut img = memory.to_vec();
        img.resize(len, 0);
        state.mem_len = len;
        state.mem_sha256 = hex::encode(Sha256::digest(&img));
        write_atomic(&dir.join("memory.img"), &img)?;
        write_atomic(&dir.join("state.bin"), &bincode::serialize(&state)?)?;
        Pristine::load(dir)
    }

    /// A snapshot kept only in memory, in an unlinked `memfd`: a sandbox's
    /// own reset point once `everywhere()` code ran in it (see
    /// `Sandbox::rebase`). All-zero pages are not written, so they cost
    /// nothing; the file is freed when the last mapping of it goes.
    pub fn in_memory(memory: &[u8], mut state: PristineState) -> Result<Pristine> {
        use std::os::unix::fs::FileExt;
        let page = page_size();
        let len = memory.len().div_ceil(page) * page;
        let file = memfd("hako-base")?;
        file.set_len(len as u64)?;
        // Runs of non-zero pages, written at their offsets (the rest stays a hole).
        let mut at = 0;
        while at < memory.len() {
            let end = (at + page).min(memory.len());
            if memory[at..end].iter().all(|&b| b == 0) {
                at = end;
                continue;
            }
            let mut run_end = end;
            while run_end < memory.len() {
                let next = (run_end + page).min(memory.len());
                if memory[run_end..next].iter().all(|&b| b == 0) {
                    break;
                }
                run_end = next;
            }
            file.write_all_at(&memory[at..run_end], at as u64)?;
            at = run_end;
        }
        state.mem_len = len;
        state.mem_sha256 = String::new();
        let image = MemImage::new(file, len, state.mem_min_pages)?;
        Ok(Pristine {
            image: Arc::new(image),
            state,
            dir: PathBuf::new(),
        })
    }

    /// Load and check a persisted snapshot.
    pub fn load(dir: &Path) -> Result<Pristine> {
        let state_bytes = std::fs::read(dir.join("state.bin")).context("no snapshot state")?;
        let state: PristineState =
            bincode::deserialize(&state_bytes).context("snapshot state is corrupt")?;
        let file = std::fs::File::open(dir.join("memory.img")).context("no snapshot image")?;
        let meta = file.metadata()?;
        if meta.len() != state.mem_len as u64 {
            bail!("snapshot image has the wrong size");
        }
        // Hash through reads, not the mapping: a mapped page read here would
        // stay in this process's resident set for nothing.
        if hash_file(&file)? != state.mem_sha256 {
            bail!("snapshot image checksum mismatch");
        }
        let image = MemImage::new(file, state.mem_len, state.mem_min_pages)?;
        Ok(Pristine {
            image: Arc::new(image),
            state,
            dir: dir.to_path_buf(),
        })
    }
}

/// An anonymous in-memory file, never linked into any directory.
fn memfd(name: &str) -> Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let name = std::ffi::CString::new(name)?;
    // SAFETY: a valid C string; on success the descriptor is new and ours.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create");
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

fn hash_file(file: &std::fs::File) -> Result<String> {
    use std::os::unix::fs::FileExt;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::{RoImage, Vfs, VfsConfig};

    fn state() -> PristineState {
        let image = RoImage::from_files(Vec::<(String, Vec<u8>)>::new()).unwrap();
        let vfs = Vfs::new(VfsConfig {
            image,
            mounts: Vec::new(),
            home: "/home/web_user".into(),
            scratch_bytes: 1 << 20,
            max_fds: 16,
        })
        .unwrap();
        PristineState {
            link: LinkState {
                libs: Vec::new(),
                handles: Vec::new(),
                got: Vec::new(),
                appended: Vec::new(),
                table_len: 0,
                stack_pointer: 0,
            },
            vfs: vfs.snapshot(),
            eval_fn: 1,
            task_fn: 2,
            task_error_fn: 3,
            mem_len: 0,
            mem_min_pages: 1,
            mem_sha256: String::new(),
        }
    }

    #[test]
    fn saved_snapshot_loads_and_a_corrupted_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let memory: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let p = Pristine::save(dir.path(), &memory, state()).unwrap();
        assert_eq!(p.image.len % page_size(), 0);
        assert!(p.image.len >= memory.len());
        assert!(Pristine::load(dir.path()).is_ok());

        let img = dir.path().join("memory.img");
        let mut bytes = std::fs::read(&img).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&img, &bytes).unwrap();
        assert!(Pristine::load(dir.path()).is_err());

        std::fs::write(dir.path().join("state.bin"), b"junk").unwrap();
        assert!(Pristine::load(dir.path()).is_err());
    }

    #[test]
    fn in_memory_snapshot_holds_the_bytes_zero_pages_included() {
        let page = page_size();
        let mut memory = vec![0u8; 5 * page + 100];
        memory[page + 3] = 7;
        memory[3 * page..4 * page].fill(9);
        memory[5 * page + 99] = 1;
        let p = Pristine::in_memory(&memory, state()).unwrap();
        assert_eq!(p.image.len, 6 * page);
        assert_eq!(p.state.mem_len, 6 * page);
        assert_eq!(&p.image.bytes()[..memory.len()], &memory[..]);
        assert!(p.image.bytes()[memory.len()..].iter().all(|&b| b == 0));
    }
}
