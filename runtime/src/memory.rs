//! Linear memory that can be put back to a pristine image in time proportional
//! to the pages a task touched.
//!
//! The main module's memory is a private (copy-on-write) mapping of a pristine
//! image file. A task writes private copies of the pages it touches. A reset
//! asks the kernel which pages are private copies (the `PAGEMAP_SCAN` ioctl
//! on Linux 6.7 and later, which returns just the matching ranges; else one
//! `/proc/self/pagemap` entry per page) and copies just those back from the
//! image, so untouched pages cost nothing and
//! the next task does not fault them in again; past a threshold (a task that
//! touched a lot) it drops the copies with `madvise(MADV_DONTNEED)` instead,
//! returning the memory. Many sandboxes of one process share the image's page
//! cache.

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
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
    /// Reused buffers of the private-page queries.
    scratch: Mutex<Scratch>,
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
        let page = page_size();
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let ranges = private_ranges(self.base, size, page, &mut scratch)?;
        let image = self.image.as_ref().map(|i| i.bytes()).unwrap_or(&[]);
        let count: usize = ranges.iter().map(|r| r.len()).sum::<usize>() / page;
        if count > COPY_BACK_MAX_PAGES {
            return Err(std::io::Error::other("too many pages to copy back"));
        }
        for r in ranges.iter() {
            // Split at the image's end: below it copy, above it zero.
            let split = r.end.min(image.len()).max(r.start);
            // SAFETY: the ranges lie inside [0, size) of our accessible
            // mapping, no wasm runs, and the source is the image view.
            unsafe {
                let dst = (self.base + r.start) as *mut u8;
                std::ptr::copy_nonoverlapping(image.as_ptr().add(r.start), dst, split - r.start);
                std::ptr::write_bytes((self.base + split) as *mut u8, 0, r.end - split);
            }
        }
        Ok(())
    }

    /// Make the image the memory's current content: the pages written since
    /// it was mapped are written into the image file itself, then mapped
    /// from it again. Cost: those pages, like a reset. Only for an image no
    /// other memory maps (a sandbox's own base, never the shared pristine
    /// one) and that covers the whole memory.
    pub fn commit(&self) -> std::io::Result<()> {
        let size = self.size();
        let image = self.image.as_ref().filter(|i| i.len == size);
        let image =
            image.ok_or_else(|| std::io::Error::other("the image does not cover the memory"))?;
        let page = page_size();
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let ranges = private_ranges(self.base, size, page, &mut scratch)?;
        for r in ranges.iter() {
            // SAFETY: the range lies inside [0, size) of our accessible
            // mapping and no wasm runs on it.
            let bytes =
                unsafe { std::slice::from_raw_parts((self.base + r.start) as *const u8, r.len()) };
            image.file.write_all_at(bytes, r.start as u64)?;
        }
        for r in ranges.iter() {
            // SAFETY: as in `drop_pages`; the file now holds these bytes.
            let rc = unsafe {
                libc::madvise(
                    (self.base + r.start) as *mut libc::c_void,
                    r.len(),
                    libc::MADV_DONTNEED,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
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

/// Reused buffers of the private-page queries.
#[derive(Default)]
struct Scratch {
    entries: Vec<u64>,
    regions: Vec<PageRegion>,
    ranges: Vec<std::ops::Range<usize>>,
}

/// Byte ranges (offsets from `base`) of the pages of `[base, base+size)`
/// that are private copies (written since mapped) or swapped out. Pages
/// still shared with the image are not, nor (where the kernel can tell)
/// zero-page mappings.
fn private_ranges(
    base: usize,
    size: usize,
    page: usize,
    s: &mut Scratch,
) -> std::io::Result<&[std::ops::Range<usize>]> {
    /// Whether this kernel has PAGEMAP_SCAN: 0 not known yet, 1 yes, 2 no.
    static SCAN: AtomicU8 = AtomicU8::new(0);
    s.ranges.clear();
    if SCAN.load(Ordering::Relaxed) != 2 {
        match scan_ranges(base, size, s) {
            Ok(()) => {
                SCAN.store(1, Ordering::Relaxed);
                return Ok(&s.ranges);
            }
            Err(_) if SCAN.load(Ordering::Relaxed) == 0 => {
                SCAN.store(2, Ordering::Relaxed);
                s.ranges.clear();
            }
            Err(e) => return Err(e),
        }
    }
    pagemap_ranges(base, size, page, s)?;
    Ok(&s.ranges)
}

fn push_range(ranges: &mut Vec<std::ops::Range<usize>>, r: std::ops::Range<usize>) {
    match ranges.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ => ranges.push(r),
    }
}

/// PAGEMAP_SCAN (Linux 6.7): the kernel walks the range and returns only
/// the matching regions.
fn scan_ranges(base: usize, size: usize, s: &mut Scratch) -> std::io::Result<()> {
    let f = pagemap()?;
    if s.regions.is_empty() {
        s.regions.resize(256, PageRegion::default());
    }
    let (mut at, end) = (base, base + size);
    while at < end {
        let (n, walked) = pagemap_scan(f, at, end, &mut s.regions)?;
        for r in &s.regions[..n] {
            push_range(
                &mut s.ranges,
                (r.start as usize - base)..(r.end as usize - base),
            );
        }
        if walked <= at || walked > end {
            return Err(std::io::Error::other("PAGEMAP_SCAN walked nowhere"));
        }
        at = walked;
    }
    Ok(())
}

/// Older kernels: read one `/proc/self/pagemap` entry per page. Cannot tell
/// the zero page from a private copy, so those count too.
fn pagemap_ranges(base: usize, size: usize, page: usize, s: &mut Scratch) -> std::io::Result<()> {
    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    const FILE_OR_SHARED: u64 = 1 << 61;
    let pages = size / page;
    s.entries.resize(pages, 0);
    // SAFETY: the u64 buffer viewed as bytes for the read; any bit pattern is
    // a valid u64.
    let buf =
        unsafe { std::slice::from_raw_parts_mut(s.entries.as_mut_ptr() as *mut u8, pages * 8) };
    pagemap()?.read_exact_at(buf, (base / page * 8) as u64)?;
    for (i, &e) in s.entries.iter().enumerate() {
        if e & SWAPPED != 0 || (e & PRESENT != 0 && e & FILE_OR_SHARED == 0) {
            push_range(&mut s.ranges, i * page..(i + 1) * page);
        }
    }
    Ok(())
}

fn pagemap() -> std::io::Result<&'static File> {
    static PAGEMAP: OnceLock<Option<File>> = OnceLock::new();
    PAGEMAP
        .get_or_init(|| File::open("/proc/self/pagemap").ok())
        .as_ref()
        .ok_or_else(|| std::io::Error::other("no pagemap"))
}

/// `struct page_region` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `struct pm_scan_arg` of `<linux/fs.h>`.
#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 =
    (3 << 30) | ((std::mem::size_of::<PmScanArg>() as u64) << 16) | (0x66 << 8) | 16;

/// One PAGEMAP_SCAN call over `[start, end)`: pages that are neither file
/// pages (still the image's) nor the shared zero page, and are present or
/// swapped. Returns the regions filled and where the walk stopped.
fn pagemap_scan(
    f: &File,
    start: usize,
    end: usize,
    out: &mut [PageRegion],
) -> std::io::Result<(usize, usize)> {
    let mut arg = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        flags: 0,
        start: start as u64,
        end: end as u64,
        walk_end: 0,
        vec: out.as_mut_ptr() as u64,
        vec_len: out.len() as u64,
        max_pages: 0,
        category_inverted: PAGE_IS_FILE | PAGE_IS_PFNZERO,
        category_mask: PAGE_IS_FILE | PAGE_IS_PFNZERO,
        category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
    };
    // SAFETY: PAGEMAP_SCAN reads `arg` and writes at most `vec_len` regions
    // into `out` and `walk_end` into `arg`, both live and exclusively ours.
    let n = unsafe { libc::ioctl(f.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg as *mut PmScanArg) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((n as usize, arg.walk_end as usize))
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
                scratch: Mutex::new(Scratch::default()),
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
                scratch: Mutex::new(Scratch::default()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A 32-page image (page i filled with byte i + 1) mapped privately at
    /// the start of a 64-page read-write region, as a sandbox's memory is.
    fn mapped() -> (MemCtl, usize) {
        let page = page_size();
        let mut f = tempfile::tempfile().unwrap();
        for i in 0..32u8 {
            f.write_all(&vec![i + 1; page]).unwrap();
        }
        let img = MemImage::new(f, 32 * page, 1).unwrap();
        // SAFETY: a fresh anonymous mapping, then the image over its start
        // with MAP_FIXED; both unmapped at the end of the test by process exit.
        let base = unsafe {
            let b = libc::mmap(
                std::ptr::null_mut(),
                64 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(b, libc::MAP_FAILED);
            let p = libc::mmap(
                b,
                32 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                img.file.as_raw_fd(),
                0,
            );
            assert_eq!(p, b);
            b as usize
        };
        let ctl = MemCtl {
            base,
            image: Some(Arc::new(img)),
            size: AtomicUsize::new(64 * page),
            scratch: Mutex::new(Scratch::default()),
        };
        (ctl, page)
    }

    /// Read every page, write a few in and above the image.
    fn touch(ctl: &MemCtl, page: usize, written: &[usize]) {
        // SAFETY: all offsets lie inside the 64-page mapping of `mapped`.
        unsafe {
            let mut sum = 0u64;
            for i in 0..64 {
                sum += u64::from(std::ptr::read_volatile((ctl.base + i * page) as *const u8));
            }
            assert!(sum > 0);
            for &i in written {
                std::ptr::write_volatile((ctl.base + i * page + 7) as *mut u8, 0xEE);
            }
        }
    }

    fn pages_of(ranges: &[std::ops::Range<usize>], page: usize) -> Vec<usize> {
        ranges
            .iter()
            .flat_map(|r| r.start / page..r.end / page)
            .collect()
    }

    #[test]
    fn commit_makes_the_written_pages_the_image() {
        let (mut ctl, page) = mapped();
        ctl.size = AtomicUsize::new(32 * page);
        touch(&ctl, page, &[2, 9, 30]);
        ctl.commit().unwrap();
        let image = ctl.image.as_ref().unwrap().bytes();
        assert_eq!(image[2 * page + 7], 0xEE);
        assert_eq!(image[9 * page + 7], 0xEE);
        assert_eq!(image[9 * page + 8], 10);
        let mut s = Scratch::default();
        if scan_ranges(ctl.base, 32 * page, &mut s).is_ok() {
            assert!(s.ranges.is_empty(), "pages still private: {:?}", s.ranges);
        }
        // A reset now returns to the committed content.
        touch(&ctl, page, &[4]);
        ctl.reset().unwrap();
        // SAFETY: the 32 accessible pages of `mapped`.
        let now = unsafe { std::slice::from_raw_parts(ctl.base as *const u8, 32 * page) };
        assert!(now == image);
        assert_eq!(now[9 * page + 7], 0xEE);
        // An image that does not cover the memory is not written.
        ctl.size = AtomicUsize::new(40 * page);
        assert!(ctl.commit().is_err());
    }

    #[test]
    fn written_pages_are_found_and_put_back() {
        let (ctl, page) = mapped();
        let written = [3, 10, 11, 12, 31, 40, 63];
        touch(&ctl, page, &written);
        let mut s = Scratch::default();
        // The fallback reads zero-page mappings above the image as private.
        pagemap_ranges(ctl.base, 64 * page, page, &mut s).unwrap();
        let found = pages_of(&s.ranges, page);
        let below: Vec<usize> = found.iter().copied().filter(|&i| i < 32).collect();
        assert_eq!(below, [3, 10, 11, 12, 31]);
        assert!(found.contains(&40) && found.contains(&63));
        // PAGEMAP_SCAN, where the kernel has it, reports exactly the writes.
        s.ranges.clear();
        match scan_ranges(ctl.base, 64 * page, &mut s) {
            Ok(()) => assert_eq!(pages_of(&s.ranges, page), written),
            Err(e) => eprintln!("no PAGEMAP_SCAN here ({e}): fallback only"),
        }
        for round in 0..3 {
            ctl.reset().unwrap();
            let image = ctl.image.as_ref().unwrap().bytes();
            // SAFETY: the 64 accessible pages of `mapped`.
            let now = unsafe { std::slice::from_raw_parts(ctl.base as *const u8, 64 * page) };
            assert!(
                now[..32 * page] == *image,
                "round {round}: image part differs"
            );
            assert!(now[32 * page..].iter().all(|&b| b == 0), "round {round}");
            touch(&ctl, page, &[round, 33 + round]);
        }
    }
}
