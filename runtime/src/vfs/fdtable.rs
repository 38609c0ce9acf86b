//! The guest's descriptor table. As in POSIX, descriptors point at open file
//! *descriptions* (offset and status flags), which `dup` shares. The table
//! never grows past `max_fds`; new descriptors take the lowest free number
//! from 3 up, so stdio numbers are only ever reused on request (`dup2`).

use super::dev::Device;
use super::types::{oflags, DirEntry};
use crate::errno::{Errno, EBADF, EINVAL, EMFILE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What an open description refers to.
#[derive(Debug)]
pub(crate) enum OpenFile {
    Device(Device),
    Image {
        path: String,
        data: Arc<[u8]>,
    },
    Scratch {
        ino: u64,
        path: String,
    },
    Mount {
        mount: usize,
        file: std::fs::File,
        path: String,
    },
    /// A directory of any layer, by guest path (like Emscripten's streams):
    /// enough for getdents, fstat, `*at` lookups and fchdir.
    Dir {
        path: String,
        mount: Option<usize>,
        listing: Option<Vec<DirEntry>>,
    },
}

impl OpenFile {
    /// Refers to something outside the sandbox's own state (a host mount):
    /// such descriptions are not part of snapshots.
    fn is_mount(&self) -> bool {
        matches!(
            self,
            OpenFile::Mount { .. } | OpenFile::Dir { mount: Some(_), .. }
        )
    }

    /// The guest path it was opened by, if it has one.
    pub fn path(&self) -> Option<&str> {
        match self {
            OpenFile::Device(_) => None,
            OpenFile::Image { path, .. }
            | OpenFile::Scratch { path, .. }
            | OpenFile::Mount { path, .. }
            | OpenFile::Dir { path, .. } => Some(path),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Description {
    pub file: OpenFile,
    /// Byte offset; for directories the getdents offset.
    pub pos: u64,
    /// Access mode and status flags (`O_APPEND`, `O_NONBLOCK`).
    pub flags: u32,
    refs: u32,
}

impl Description {
    pub fn new(file: OpenFile, flags: u32) -> Description {
        Description {
            file,
            pos: 0,
            flags: flags & (oflags::O_ACCMODE | oflags::SETFL_MASK),
            refs: 0,
        }
    }

    pub fn readable(&self) -> bool {
        matches!(
            self.flags & oflags::O_ACCMODE,
            oflags::O_RDONLY | oflags::O_RDWR
        )
    }

    pub fn writable(&self) -> bool {
        matches!(
            self.flags & oflags::O_ACCMODE,
            oflags::O_WRONLY | oflags::O_RDWR
        )
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Slot {
    desc: u32,
    cloexec: bool,
}

#[derive(Debug)]
pub(crate) struct FdTable {
    slots: Vec<Option<Slot>>,
    descs: BTreeMap<u32, Description>,
    next_desc: u32,
    max: usize,
}

/// A description as a snapshot keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum SavedFile {
    Device(Device),
    Image { path: String },
    Scratch { ino: u64, path: String },
    Dir { path: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SavedDesc {
    file: SavedFile,
    pos: u64,
    flags: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct FdTableState {
    slots: Vec<Option<Slot>>,
    descs: BTreeMap<u32, SavedDesc>,
    next_desc: u32,
}

impl FdTable {
    /// A table with stdin, stdout and stderr open.
    pub fn new(max: usize) -> FdTable {
        let mut t = FdTable {
            slots: Vec::new(),
            descs: BTreeMap::new(),
            next_desc: 0,
            max,
        };
        for (dev, flags) in [
            (Device::Stdin, oflags::O_RDONLY),
            (Device::Stdout, oflags::O_WRONLY),
            (Device::Stderr, oflags::O_WRONLY),
        ] {
            // Cannot fail: max >= 3 is checked by the caller.
            let _ = t.insert_at(Description::new(OpenFile::Device(dev), flags), 0, false);
        }
        t
    }

    fn index(&self, fd: i32) -> Result<usize, Errno> {
        let i = usize::try_from(fd).map_err(|_| EBADF)?;
        match self.slots.get(i) {
            Some(Some(_)) => Ok(i),
            _ => Err(EBADF),
        }
    }

    fn slot(&self, fd: i32) -> Result<Slot, Errno> {
        let i = self.index(fd)?;
        self.slots.get(i).copied().flatten().ok_or(EBADF)
    }

    /// Lowest free descriptor number `>= min`.
    pub fn lowest_free(&self, min: usize) -> Result<usize, Errno> {
        (min..self.max)
            .find(|&i| !matches!(self.slots.get(i), Some(Some(_))))
            .ok_or(EMFILE)
    }

    fn put(&mut self, i: usize, slot: Slot) {
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        self.slots[i] = Some(slot);
    }

    fn insert_at(&mut self, mut d: Description, min: usize, cloexec: bool) -> Result<i32, Errno> {
        let i = self.lowest_free(min)?;
        let fd = i32::try_from(i).map_err(|_| EMFILE)?;
        let id = self.next_desc;
        self.next_desc = self.next_desc.wrapping_add(1);
        d.refs = 1;
        self.descs.insert(id, d);
        self.put(i, Slot { desc: id, cloexec });
        Ok(fd)
    }

    /// Install a new description at the lowest free descriptor >= 3.
    pub fn insert(&mut self, d: Description, cloexec: bool) -> Result<i32, Errno> {
        self.insert_at(d, 3, cloexec)
    }

    pub fn get(&self, fd: i32) -> Result<&Description, Errno> {
        let s = self.slot(fd)?;
        self.descs.get(&s.desc).ok_or(EBADF)
    }

    pub fn get_mut(&mut self, fd: i32) -> Result<&mut Description, Errno> {
        let s = self.slot(fd)?;
        self.descs.get_mut(&s.desc).ok_or(EBADF)
    }

    /// Close `fd`; returns the file when this was its description's last
    /// descriptor, so the caller can release what it holds.
    pub fn close(&mut self, fd: i32) -> Result<Option<OpenFile>, Errno> {
        let i = self.index(fd)?;
        let slot = self.slots.get_mut(i).and_then(Option::take).ok_or(EBADF)?;
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        Ok(self.unref(slot.desc))
    }

    fn unref(&mut self, id: u32) -> Option<OpenFile> {
        let d = self.descs.get_mut(&id)?;
        d.refs = d.refs.saturating_sub(1);
        if d.refs > 0 {
            return None;
        }
        self.descs.remove(&id).map(|d| d.file)
    }

    /// Put one more reference to description `desc` at slot `i`.
    fn share(&mut self, i: usize, desc: u32, cloexec: bool) {
        if let Some(d) = self.descs.get_mut(&desc) {
            d.refs = d.refs.saturating_add(1);
        }
        self.put(i, Slot { desc, cloexec });
    }

    /// `dup`/`F_DUPFD`: a new descriptor >= `min` sharing `fd`'s description.
    pub fn dup(&mut self, fd: i32, min: usize, cloexec: bool) -> Result<i32, Errno> {
        let s = self.slot(fd)?;
        let i = self.lowest_free(min)?;
        let new = i32::try_from(i).map_err(|_| EMFILE)?;
        self.share(i, s.desc, cloexec);
        Ok(new)
    }

    /// `dup3`: make `new` refer to `fd`'s description, closing what `new`
    /// held (returned for release).
    pub fn dup_to(&mut self, fd: i32, new: i32, cloexec: bool) -> Result<Option<OpenFile>, Errno> {
        let s = self.slot(fd)?;
        if fd == new {
            return Err(EINVAL);
        }
        let i = usize::try_from(new).map_err(|_| EBADF)?;
        if i >= self.max {
            return Err(EBADF);
        }
        let released = match self.slots.get_mut(i).and_then(Option::take) {
            Some(old) => self.unref(old.desc),
            None => None,
        };
        self.share(i, s.desc, cloexec);
        Ok(released)
    }

    pub fn cloexec(&self, fd: i32) -> Result<bool, Errno> {
        Ok(self.slot(fd)?.cloexec)
    }

    pub fn set_cloexec(&mut self, fd: i32, on: bool) -> Result<(), Errno> {
        let i = self.index(fd)?;
        if let Some(Some(s)) = self.slots.get_mut(i) {
            s.cloexec = on;
        }
        Ok(())
    }

    /// Every open description (for releasing them all).
    pub fn drain(&mut self) -> Vec<OpenFile> {
        self.slots.clear();
        std::mem::take(&mut self.descs)
            .into_values()
            .map(|d| d.file)
            .collect()
    }

    /// The state a snapshot keeps: everything but mount descriptions.
    pub fn save(&self) -> FdTableState {
        let descs: BTreeMap<u32, SavedDesc> = self
            .descs
            .iter()
            .filter(|(_, d)| !d.file.is_mount())
            .filter_map(|(&id, d)| {
                let file = match &d.file {
                    OpenFile::Device(dev) => SavedFile::Device(*dev),
                    OpenFile::Image { path, .. } => SavedFile::Image { path: path.clone() },
                    OpenFile::Scratch { ino, path } => SavedFile::Scratch {
                        ino: *ino,
                        path: path.clone(),
                    },
                    OpenFile::Dir { path, .. } => SavedFile::Dir { path: path.clone() },
                    OpenFile::Mount { .. } => return None,
                };
                Some((
                    id,
                    SavedDesc {
                        file,
                        pos: d.pos,
                        flags: d.flags,
                    },
                ))
            })
            .collect();
        let slots = self
            .slots
            .iter()
            .map(|s| s.filter(|s| descs.contains_key(&s.desc)))
            .collect();
        FdTableState {
            slots,
            descs,
            next_desc: self.next_desc,
        }
    }

    /// Rebuild a table from a snapshot; `open` turns a saved description back
    /// into a live one (or `None` if it no longer can be, e.g. image changed).
    pub fn restore(
        s: &FdTableState,
        max: usize,
        mut open: impl FnMut(&SavedFile) -> Option<OpenFile>,
    ) -> FdTable {
        let mut descs = BTreeMap::new();
        for (&id, sd) in &s.descs {
            if let Some(file) = open(&sd.file) {
                descs.insert(
                    id,
                    Description {
                        file,
                        pos: sd.pos,
                        flags: sd.flags,
                        refs: 0,
                    },
                );
            }
        }
        let mut slots: Vec<Option<Slot>> = s.slots.iter().take(max).copied().collect();
        for slot in slots.iter_mut() {
            match slot.and_then(|s| descs.get_mut(&s.desc)) {
                Some(d) => d.refs = d.refs.saturating_add(1),
                None => *slot = None,
            }
        }
        descs.retain(|_, d| d.refs > 0);
        while matches!(slots.last(), Some(None)) {
            slots.pop();
        }
        FdTable {
            slots,
            descs,
            next_desc: s.next_desc,
            max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn null() -> Description {
        Description::new(OpenFile::Device(Device::Null), oflags::O_RDWR)
    }

    #[test]
    fn allocation_dup_and_limits() {
        let mut t = FdTable::new(6);
        assert_eq!(t.insert(null(), false), Ok(3));
        assert_eq!(t.insert(null(), false), Ok(4));
        assert_eq!(t.dup(3, 0, true), Ok(5));
        assert_eq!(t.insert(null(), false), Err(EMFILE));
        assert_eq!(t.dup(3, 0, false), Err(EMFILE));
        assert!(t.cloexec(5).unwrap());
        // Shared description: offset moves for both.
        t.get_mut(3).unwrap().pos = 42;
        assert_eq!(t.get(5).unwrap().pos, 42);
        assert!(t.close(3).unwrap().is_none());
        assert!(t.close(5).unwrap().is_some());
        assert_eq!(t.close(5).unwrap_err(), EBADF);
        assert_eq!(t.get(-1).unwrap_err(), EBADF);
        assert_eq!(t.get(i32::MAX).unwrap_err(), EBADF);
        // Closing stdin does not make 0 the next number handed out.
        t.close(0).unwrap();
        assert_eq!(t.insert(null(), false), Ok(3));
        assert!(t.dup_to(4, 0, false).unwrap().is_none());
        assert_eq!(t.dup_to(4, 6, false).unwrap_err(), EBADF);
        assert_eq!(t.dup_to(4, 4, false).unwrap_err(), EINVAL);
        assert!(t.dup_to(4, 1, false).unwrap().is_some());
    }
}
