//! Linear memory that can be put back to a pristine image in time proportional
//! to the pages a task touched.
//!
//! The main module's memory is a private (copy-on-write) mapping of a pristine
//! image file. A task writes private copies of the pages it touches. A reset
//! asks the kernel which pages are private copies (`/proc/self/pagemap`) and
//! copies just those back from the image, so untouched pages cost nothing and
//! the next task does not fault them in again; past a threshold (a task that
//! touched a lot) it drops the copies with `madvise(MADV_DONTNEED)` instead,
//! returning the memory. Many sandboxes of one process share the image's page
//! cache.

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use wasmtime::{LinearMemory, MemoryCreator, MemoryType};

/// A pristine memory image: a page-aligned file mapped copy-on-write into
/// every sandbox, plus one read-only view of it to copy pages back from.
pub struct MemImage {
    pub file: File,
    pub len: usize,
    /// Wasm page count the image was taken at, used to recognise the memory it
    /// belongs to.
    pub min_pages: u64,
    view: usize,
}

impl MemImage {
    pub fn new(file: File, len: usize, min_pages: u64) -> std::io::Result<MemImage> {
        let view = if len == 0 {
            0
        } else {
            // SAFETY: a fresh read-only private mapping of a file we own.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    file.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            p as usize
        };
        Ok(MemImage {
            file,
            len,
            min_pages,
            view,
        })
    }

    /// The image's bytes.
    pub fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `view` maps `len` bytes read-only for the life of `self`;
        // the file is only ever replaced by rename, never written in place.
        unsafe { std::slice::from_raw_parts(self.view as *const u8, self.len) }
    }
}

impl Drop for MemImage {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly the view mapped in `new`.
            unsafe {
                libc::munmap(self.view as *mut libc::c_void, self.len);
            }
        }
    }
}

/// What a sandbox keeps of its memory to reset it.
pub struct MemCtl {
    base: usize,
    image: Option<Arc<MemImage>>,
    size: AtomicUsize,
    /// Reused pagemap buffer.
    scratch: Mutex<Vec<u64>>,
}

/// Above this many private pages (4 MiB) a reset returns them to the kernel
/// instead of copying them back. Copied-back pages stay private, so every
/// later reset copies them again; a task that touched that much (R's full GC
/// marks the whole heap) resets the set to empty and keeps no footprint.
const COPY_BACK_MAX_PAGES: usize = 1024;

impl MemCtl {
    /// Bytes of the image at the bottom of the memory.
    pub fn image_len(&self) -> usize {
        self.image.as_ref().map_or(0, |i| i.len)
    }

    /// Current accessible size in bytes.
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Acquire)
    }

    /// Put the memory back to the image (and zeros above it).
    ///
    /// Must only be called while no wasm runs on this memory (the sandbox owns
    /// the store, so it knows).
    pub fn reset(&self) -> std::io::Result<()> {
        let size = self.size();
        if size == 0 {
            return Ok(());
        }
        if self.copy_back(size).is_err() {
            self.drop_pages(size)?;
        }
        Ok(())
    }

    /// Restore only the pages the kernel reports as written since they were
    /// mapped: copied from the image, or zeroed above it.
    fn copy_back(&self, size: usize) -> std::io::Result<()> {
        const PRESENT: u64 = 1 << 63;
        const SWAPPED: u64 = 1 << 62;
        const FILE_OR_SHARED: u64 = 1 << 61;
        let page = page_size();
        let pages = size / page;
        let mut entries = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        entries.resize(pages, 0);
        read_pagemap(self.base / page, &mut entries)?;
        let image = self.image.as_ref().map(|i| i.bytes()).unwrap_or(&[]);
        let image_pages = image.len() / page;
        let dirty = |i: usize| {
            let e = entries[i];
            e & SWAPPED != 0 || (e & PRESENT != 0 && (i >= image_pages || e & FILE_OR_SHARED == 0))
        };
        if (0..pages).filter(|&i| dirty(i)).count() > COPY_BACK_MAX_PAGES {
            return Err(std::io::Error::other("too many pages to copy back"));
        }
        for i in (0..pages).filter(|&i| dirty(i)) {
            let off = i * page;
            // SAFETY: [base+off, base+off+page) is inside our accessible
            // mapping and no wasm runs; the source is the image view.
            unsafe {
                let dst = (self.base + off) as *mut u8;
                if i < image_pages {
                    std::ptr::copy_nonoverlapping(image.as_ptr().add(off), dst, page);
                } else {
                    std::ptr::write_bytes(dst, 0, page);
                }
            }
        }
        Ok(())
    }

    /// Drop every private page, returning the memory to the kernel.
    pub fn release(&self) -> std::io::Result<()> {
        self.drop_pages(self.size())
    }

    /// Drop every private page: the image part reads as the image again and
    /// the rest as zeros.
    fn drop_pages(&self, size: usize) -> std::io::Result<()> {
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

/// Read `/proc/self/pagemap` entries for `entries.len()` pages from `first`.
fn read_pagemap(first: usize, entries: &mut [u64]) -> std::io::Result<()> {
    static PAGEMAP: OnceLock<Option<File>> = OnceLock::new();
    let f = PAGEMAP
        .get_or_init(|| File::open("/proc/self/pagemap").ok())
        .as_ref()
        .ok_or_else(|| std::io::Error::other("no pagemap"))?;
    // SAFETY: the u64 buffer viewed as bytes for the read; any bit pattern is
    // a valid u64.
    let buf = unsafe {
        std::slice::from_raw_parts_mut(entries.as_mut_ptr() as *mut u8, entries.len() * 8)
    };
    f.read_exact_at(buf, (first * 8) as u64)
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
                image: None,
                size: AtomicUsize::new(0),
                scratch: Mutex::new(Vec::new()),
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
            initial = initial.max(img.len);
            mem.ctl = Arc::new(MemCtl {
                base: base as usize,
                image: Some(img),
                size: AtomicUsize::new(mem.size),
                scratch: Mutex::new(Vec::new()),
            });
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
