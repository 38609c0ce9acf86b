//! Linear memory that can be put back to a pristine image in time proportional
//! to the pages a task touched.
//!
//! The main module's memory is a private (copy-on-write) mapping of a pristine
//! image file. A task writes private copies of the pages it touches; a reset
//! drops those copies with `madvise(MADV_DONTNEED)`, so untouched pages cost
//! nothing and touched pages fall back to the image. Many sandboxes of one
//! process share the image's page cache.

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use wasmtime::{LinearMemory, MemoryCreator, MemoryType};

/// A pristine memory image: a page-aligned file mapped copy-on-write.
pub struct MemImage {
    pub file: File,
    pub len: usize,
    /// Wasm page count the image was taken at, used to recognise the memory it
    /// belongs to.
    pub min_pages: u64,
}

/// What a sandbox keeps of its memory to reset it.
pub struct MemCtl {
    base: usize,
    image_len: usize,
    size: AtomicUsize,
}

impl MemCtl {
    /// Bytes of the image at the bottom of the memory.
    pub fn image_len(&self) -> usize {
        self.image_len
    }

    /// Current accessible size in bytes.
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Acquire)
    }

    /// Drop every private page: the image part reads as the image again and
    /// the rest as zeros.
    ///
    /// Must only be called while no wasm runs on this memory (the sandbox owns
    /// the store, so it knows).
    pub fn reset(&self) -> std::io::Result<()> {
        let size = self.size();
        if size == 0 {
            return Ok(());
        }
        // SAFETY: [base, base+size) is our own mapping (see `SnapMemory`), and
        // no wasm code is running on it, so no reference into it is live.
        let rc =
            unsafe { libc::madvise(self.base as *mut libc::c_void, size, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

thread_local! {
    static PENDING_IMAGE: RefCell<Option<Arc<MemImage>>> = const { RefCell::new(None) };
    static LAST_CREATED: RefCell<Option<Arc<MemCtl>>> = const { RefCell::new(None) };
}

/// Back the next memory of `image.min_pages` pages created on this thread by
/// `image`. Call right before instantiating the main module.
pub fn set_pending_image(image: Option<Arc<MemImage>>) {
    PENDING_IMAGE.with(|p| *p.borrow_mut() = image);
}

/// The control handle of the memory most recently created on this thread.
pub fn take_last_created() -> Option<Arc<MemCtl>> {
    LAST_CREATED.with(|p| p.borrow_mut().take())
}

/// The engine-wide memory creator (see [`crate::engine`]).
pub struct SnapshotMemoryCreator;

// SAFETY: memories are reserved with the requested size plus guard, never
// move, are zero-filled (or image-filled for the main memory, which wasmtime
// then initialises with its data segments like any other memory), and only
// the accessible prefix is readable/writable.
unsafe impl MemoryCreator for SnapshotMemoryCreator {
    fn new_memory(
        &self,
        ty: MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn LinearMemory>, String> {
        let page = page_size();
        let image = PENDING_IMAGE.with(|p| {
            let mut p = p.borrow_mut();
            match p.as_ref() {
                Some(img) if !ty.is_64() && ty.minimum() == img.min_pages => p.take(),
                _ => None,
            }
        });
        let reserved = match reserved_size_in_bytes {
            Some(r) => r,
            None => align_up(maximum.unwrap_or(1 << 32).max(minimum), page),
        };
        let total = reserved
            .checked_add(guard_size_in_bytes)
            .ok_or("memory reservation overflows")?;
        // SAFETY: a fresh anonymous PROT_NONE reservation; nothing else maps it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!(
                "reserving linear memory: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut mem = SnapMemory {
            base: base as usize,
            total,
            reserved,
            size: 0,
            ctl: Arc::new(MemCtl {
                base: base as usize,
                image_len: 0,
                size: AtomicUsize::new(0),
            }),
        };
        let mut initial = minimum;
        if let Some(img) = image {
            if img.len > reserved || img.len % page != 0 {
                return Err("memory image does not fit the reservation".into());
            }
            // SAFETY: maps the image file privately over the start of our own
            // reservation (MAP_FIXED inside a region we just mapped).
            let p = unsafe {
                libc::mmap(
                    base,
                    img.len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_FIXED,
                    img.file.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(format!(
                    "mapping memory image: {}",
                    std::io::Error::last_os_error()
                ));
            }
            mem.size = img.len;
            mem.ctl = Arc::new(MemCtl {
                base: base as usize,
                image_len: img.len,
                size: AtomicUsize::new(img.len),
            });
            initial = initial.max(img.len);
        }
        mem.grow_to(initial).map_err(|e| e.to_string())?;
        LAST_CREATED.with(|p| *p.borrow_mut() = Some(mem.ctl.clone()));
        Ok(Box::new(mem))
    }
}

struct SnapMemory {
    base: usize,
    total: usize,
    reserved: usize,
    size: usize,
    ctl: Arc<MemCtl>,
}

// SAFETY: LinearMemory requires Send + Sync; the mapping is plain memory whose
// accesses wasmtime serialises through the store.
unsafe impl LinearMemory for SnapMemory {
    fn byte_size(&self) -> usize {
        self.size
    }

    fn byte_capacity(&self) -> usize {
        self.reserved
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        if new_size <= self.size {
            return Ok(());
        }
        if new_size > self.reserved {
            wasmtime::bail!("memory grow beyond reservation");
        }
        let page = page_size();
        let from = align_up(self.size, page);
        let to = align_up(new_size, page);
        if to > from {
            // SAFETY: [from, to) lies inside our reservation and beyond any
            // image mapping; making it accessible yields zero pages.
            let rc = unsafe {
                libc::mprotect(
                    (self.base + from) as *mut libc::c_void,
                    to - from,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            if rc != 0 {
                wasmtime::bail!("growing memory: {}", std::io::Error::last_os_error());
            }
        }
        self.size = new_size;
        self.ctl.size.store(new_size, Ordering::Release);
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.base as *mut u8
    }
}

impl Drop for SnapMemory {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region we mapped; wasmtime drops the
        // memory only once no instance uses it.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.total);
        }
    }
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

fn align_up(v: usize, a: usize) -> usize {
    v.div_ceil(a) * a
}
