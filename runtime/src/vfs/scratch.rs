//! The private, writable, in-memory tree behind `/tmp` and the home directory.
//! Every byte it holds (file contents, names, a fixed cost per node) is
//! charged against one cap, so a guest cannot exhaust host memory through it;
//! past the cap writes fail with `ENOSPC`. It is plain data, so a snapshot is a
//! clone.

use super::path::components;
use super::types::{DirEntry, FileType, Stat, Timespec};
use crate::errno::{Errno, EEXIST, EFBIG, EINVAL, EISDIR, ENOENT, ENOSPC, ENOTDIR, ENOTEMPTY};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `st_dev` of scratch files.
pub(crate) const SCRATCH_DEV: u32 = 2;
/// Bytes charged per node on top of its name and contents: bounds the number
/// of (empty) files and directories a guest can create.
pub(crate) const NODE_COST: u64 = 256;
const ROOT: u64 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum NodeKind {
    File(Vec<u8>),
    Dir(BTreeMap<String, u64>),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Node {
    kind: NodeKind,
    perm: u32,
    atime: Timespec,
    mtime: Timespec,
    ctime: Timespec,
    parent: u64,
    /// Has a directory entry (false once unlinked).
    linked: bool,
    /// Open descriptions referring to it: an unlinked file lives until the
    /// last one closes, as in POSIX.
    open: u32,
}

/// The scratch tree. Paths given to it are absolute guest paths; the caller
/// has already routed them here.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Scratch {
    nodes: BTreeMap<u64, Node>,
    next_ino: u64,
    used: u64,
    cap: u64,
}

impl Scratch {
    pub fn new(cap: u64) -> Scratch {
        let now = Timespec::now();
        let root = Node {
            kind: NodeKind::Dir(BTreeMap::new()),
            perm: 0o755,
            atime: now,
            mtime: now,
            ctime: now,
            parent: ROOT,
            linked: true,
            open: 0,
        };
        Scratch {
            nodes: BTreeMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            used: 0,
            cap,
        }
    }

    /// Bytes currently charged.
    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Create `abs` and its parents as directories; setup only (not charged
    /// against the cap, so a small cap cannot make the roots fail).
    pub fn ensure_dir_all(&mut self, abs: &str) {
        let mut cur = ROOT;
        for name in components(abs) {
            cur = match self.child(cur, name) {
                Some(ino) => ino,
                None => {
                    match self.insert(cur, name, NodeKind::Dir(BTreeMap::new()), 0o755, false) {
                        Ok(ino) => ino,
                        Err(_) => return,
                    }
                }
            };
        }
    }

    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(ENOENT)
    }

    fn child(&self, dir: u64, name: &str) -> Option<u64> {
        match &self.nodes.get(&dir)?.kind {
            NodeKind::Dir(entries) => entries.get(name).copied(),
            NodeKind::File(_) => None,
        }
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<String, u64>, Errno> {
        match &self.node(dir)?.kind {
            NodeKind::Dir(e) => Ok(e),
            NodeKind::File(_) => Err(ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<String, u64>, Errno> {
        match &mut self.node_mut(dir)?.kind {
            NodeKind::Dir(e) => Ok(e),
            NodeKind::File(_) => Err(ENOTDIR),
        }
    }

    fn charge(&mut self, bytes: u64) -> Result<(), Errno> {
        let total = self.used.checked_add(bytes).ok_or(ENOSPC)?;
        if total > self.cap {
            return Err(ENOSPC);
        }
        self.used = total;
        Ok(())
    }

    fn refund(&mut self, bytes: u64) {
        self.used = self.used.saturating_sub(bytes);
    }

    /// The node at `abs`.
    pub fn lookup(&self, abs: &str) -> Result<u64, Errno> {
        let mut cur = ROOT;
        for name in components(abs) {
            self.entries(cur)?;
            cur = self.child(cur, name).ok_or(ENOENT)?;
        }
        Ok(cur)
    }

    /// The directory holding `abs` (which must not be `/`).
    pub fn lookup_parent(&self, parent_abs: &str) -> Result<u64, Errno> {
        let dir = self.lookup(parent_abs)?;
        self.entries(dir)?;
        Ok(dir)
    }

    pub fn is_dir(&self, ino: u64) -> bool {
        matches!(
            self.nodes.get(&ino).map(|n| &n.kind),
            Some(NodeKind::Dir(_))
        )
    }

    pub fn stat(&self, ino: u64) -> Result<Stat, Errno> {
        let n = self.node(ino)?;
        let (kind, size) = match &n.kind {
            NodeKind::File(d) => (FileType::Regular, d.len() as u64),
            NodeKind::Dir(_) => (FileType::Directory, 4096),
        };
        Ok(Stat {
            dev: SCRATCH_DEV,
            ino,
            mode: kind.mode_bits() | n.perm,
            nlink: match (n.linked, kind) {
                (false, _) => 0,
                (true, FileType::Directory) => 2,
                (true, _) => 1,
            },
            size,
            atime: n.atime,
            mtime: n.mtime,
            ctime: n.ctime,
            ..Stat::default()
        })
    }

    /// Children of a directory (without `.`/`..`) and the parent's inode.
    pub fn list(&self, dir: u64) -> Result<(Vec<DirEntry>, u64), Errno> {
        let entries = self.entries(dir)?;
        let list = entries
            .iter()
            .map(|(name, &ino)| DirEntry {
                name: name.clone(),
                ino,
                kind: if self.is_dir(ino) {
                    FileType::Directory
                } else {
                    FileType::Regular
                },
            })
            .collect();
        Ok((list, self.node(dir)?.parent))
    }

    fn insert(
        &mut self,
        dir: u64,
        name: &str,
        kind: NodeKind,
        perm: u32,
        charged: bool,
    ) -> Result<u64, Errno> {
        if self.entries(dir)?.contains_key(name) {
            return Err(EEXIST);
        }
        let cost = NODE_COST.saturating_add(name.len() as u64);
        if charged {
            self.charge(cost)?;
        } else {
            self.used = self.used.saturating_add(cost);
        }
        let ino = self.next_ino;
        self.next_ino = self.next_ino.checked_add(1).ok_or(ENOSPC)?;
        let now = Timespec::now();
        self.nodes.insert(
            ino,
            Node {
                kind,
                perm,
                atime: now,
                mtime: now,
                ctime: now,
                parent: dir,
                linked: true,
                open: 0,
            },
        );
        self.entries_mut(dir)?.insert(name.to_string(), ino);
        self.touch_dir(dir);
        Ok(ino)
    }

    fn touch_dir(&mut self, dir: u64) {
        if let Some(d) = self.nodes.get_mut(&dir) {
            let now = Timespec::now();
            d.mtime = now;
            d.ctime = now;
        }
    }

    pub fn create_file(&mut self, dir: u64, name: &str, perm: u32) -> Result<u64, Errno> {
        self.insert(dir, name, NodeKind::File(Vec::new()), perm, true)
    }

    pub fn mkdir(&mut self, dir: u64, name: &str, perm: u32) -> Result<u64, Errno> {
        self.insert(dir, name, NodeKind::Dir(BTreeMap::new()), perm, true)
    }

    /// Remove the entry `name` of `dir`: a file (`want_dir` false, `EISDIR` on
    /// a directory) or an empty directory (`want_dir` true, `ENOTDIR` on a file).
    pub fn remove(&mut self, dir: u64, name: &str, want_dir: bool) -> Result<(), Errno> {
        let ino = self.entries(dir)?.get(name).copied().ok_or(ENOENT)?;
        match (&self.node(ino)?.kind, want_dir) {
            (NodeKind::Dir(_), false) => return Err(EISDIR),
            (NodeKind::File(_), true) => return Err(ENOTDIR),
            (NodeKind::Dir(e), true) if !e.is_empty() => return Err(ENOTEMPTY),
            _ => {}
        }
        self.unlink_entry(dir, name, ino)?;
        self.refund(name.len() as u64);
        Ok(())
    }

    /// Drop a directory entry (its name's charge is the caller's business).
    fn unlink_entry(&mut self, dir: u64, name: &str, ino: u64) -> Result<(), Errno> {
        self.entries_mut(dir)?.remove(name);
        self.touch_dir(dir);
        let n = self.node_mut(ino)?;
        n.linked = false;
        n.ctime = Timespec::now();
        self.maybe_free(ino);
        Ok(())
    }

    fn maybe_free(&mut self, ino: u64) {
        let Some(n) = self.nodes.get(&ino) else {
            return;
        };
        if n.linked || n.open > 0 || ino == ROOT {
            return;
        }
        let data = match &n.kind {
            NodeKind::File(d) => d.len() as u64,
            NodeKind::Dir(_) => 0,
        };
        self.nodes.remove(&ino);
        self.refund(NODE_COST.saturating_add(data));
    }

    /// Move `old_name` of `old_dir` to `new_name` of `new_dir`, replacing a
    /// compatible target as rename(2) does.
    pub fn rename(
        &mut self,
        old_dir: u64,
        old_name: &str,
        new_dir: u64,
        new_name: &str,
    ) -> Result<(), Errno> {
        let ino = self
            .entries(old_dir)?
            .get(old_name)
            .copied()
            .ok_or(ENOENT)?;
        self.entries(new_dir)?;
        let moving_dir = self.is_dir(ino);
        if moving_dir {
            // A directory cannot move below itself.
            let mut cur = new_dir;
            loop {
                if cur == ino {
                    return Err(EINVAL);
                }
                if cur == ROOT {
                    break;
                }
                cur = self.node(cur)?.parent;
            }
        }
        let target = self.entries(new_dir)?.get(new_name).copied();
        if target == Some(ino) {
            return Ok(());
        }
        if let Some(t) = target {
            match (&self.node(t)?.kind, moving_dir) {
                (NodeKind::Dir(_), false) => return Err(EISDIR),
                (NodeKind::File(_), true) => return Err(ENOTDIR),
                (NodeKind::Dir(e), true) if !e.is_empty() => return Err(ENOTEMPTY),
                _ => {}
            }
        }
        let (old_len, new_len) = (old_name.len() as u64, new_name.len() as u64);
        match target {
            // The target's name stays charged: the moved node takes it over.
            Some(t) => {
                self.unlink_entry(new_dir, new_name, t)?;
                self.refund(old_len);
            }
            None => {
                self.charge(new_len.saturating_sub(old_len))?;
                self.refund(old_len.saturating_sub(new_len));
            }
        }
        self.entries_mut(old_dir)?.remove(old_name);
        self.entries_mut(new_dir)?.insert(new_name.to_string(), ino);
        self.touch_dir(old_dir);
        self.touch_dir(new_dir);
        let n = self.node_mut(ino)?;
        n.parent = new_dir;
        n.ctime = Timespec::now();
        Ok(())
    }

    fn data(&self, ino: u64) -> Result<&Vec<u8>, Errno> {
        match &self.node(ino)?.kind {
            NodeKind::File(d) => Ok(d),
            NodeKind::Dir(_) => Err(EISDIR),
        }
    }

    pub fn size(&self, ino: u64) -> Result<u64, Errno> {
        Ok(self.data(ino)?.len() as u64)
    }

    pub fn read_at(&self, ino: u64, off: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let data = self.data(ino)?;
        let Ok(start) = usize::try_from(off) else {
            return Ok(0);
        };
        let Some(avail) = data.get(start..) else {
            return Ok(0);
        };
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        Ok(n)
    }

    /// Resize a file's contents, charging growth and refunding shrinkage.
    fn resize(&mut self, ino: u64, new_len: u64) -> Result<(), Errno> {
        let old_len = self.size(ino)?;
        let new_usize = usize::try_from(new_len).map_err(|_| EFBIG)?;
        if new_len > old_len {
            self.charge(new_len - old_len)?;
            let headroom =
                usize::try_from(self.cap.saturating_sub(self.used)).unwrap_or(usize::MAX);
            let NodeKind::File(d) = &mut self.node_mut(ino)?.kind else {
                return Err(EISDIR);
            };
            if new_usize > d.capacity() {
                // Amortised growth, but never past what the cap still allows.
                let target = new_usize.max(
                    d.capacity()
                        .saturating_mul(2)
                        .min(new_usize.saturating_add(headroom)),
                );
                if d.try_reserve_exact(target - d.len()).is_err() {
                    self.refund(new_len - old_len);
                    return Err(ENOSPC);
                }
            }
            d.resize(new_usize, 0);
        } else {
            let NodeKind::File(d) = &mut self.node_mut(ino)?.kind else {
                return Err(EISDIR);
            };
            d.truncate(new_usize);
            if d.capacity() > 2 * d.len() + 4096 {
                d.shrink_to_fit();
            }
            self.refund(old_len - new_len);
        }
        Ok(())
    }

    pub fn write_at(&mut self, ino: u64, off: u64, src: &[u8]) -> Result<usize, Errno> {
        let end = off.checked_add(src.len() as u64).ok_or(EFBIG)?;
        if end > self.size(ino)? {
            self.resize(ino, end)?;
        }
        let now = Timespec::now();
        let n = self.node_mut(ino)?;
        n.mtime = now;
        n.ctime = now;
        let NodeKind::File(d) = &mut n.kind else {
            return Err(EISDIR);
        };
        // In range: `end <= d.len()` after the resize above.
        let start = usize::try_from(off).map_err(|_| EFBIG)?;
        let stop = usize::try_from(end).map_err(|_| EFBIG)?;
        d.get_mut(start..stop).ok_or(EFBIG)?.copy_from_slice(src);
        Ok(src.len())
    }

    pub fn truncate(&mut self, ino: u64, len: u64) -> Result<(), Errno> {
        self.resize(ino, len)?;
        let now = Timespec::now();
        let n = self.node_mut(ino)?;
        n.mtime = now;
        n.ctime = now;
        Ok(())
    }

    pub fn set_perm(&mut self, ino: u64, perm: u32) -> Result<(), Errno> {
        let n = self.node_mut(ino)?;
        n.perm = perm & super::types::mode::PERM_MASK;
        n.ctime = Timespec::now();
        Ok(())
    }

    pub fn set_times(
        &mut self,
        ino: u64,
        atime: Option<Timespec>,
        mtime: Option<Timespec>,
    ) -> Result<(), Errno> {
        let n = self.node_mut(ino)?;
        if let Some(t) = atime {
            n.atime = t;
        }
        if let Some(t) = mtime {
            n.mtime = t;
        }
        n.ctime = Timespec::now();
        Ok(())
    }

    pub fn perm(&self, ino: u64) -> Result<u32, Errno> {
        Ok(self.node(ino)?.perm)
    }

    /// An open description now refers to `ino`.
    pub fn open_ref(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.open = n.open.saturating_add(1);
        }
    }

    /// An open description of `ino` went away.
    pub fn close_ref(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.open = n.open.saturating_sub(1);
        }
        self.maybe_free(ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(cap: u64) -> (Scratch, u64) {
        let mut s = Scratch::new(cap);
        s.ensure_dir_all("/tmp");
        let tmp = s.lookup("/tmp").unwrap();
        (s, tmp)
    }

    #[test]
    fn files_and_dirs() {
        let (mut s, tmp) = setup(1 << 20);
        let f = s.create_file(tmp, "a", 0o644).unwrap();
        assert_eq!(s.create_file(tmp, "a", 0o644), Err(EEXIST));
        assert_eq!(s.write_at(f, 3, b"xyz").unwrap(), 3);
        let mut buf = [9u8; 10];
        assert_eq!(s.read_at(f, 0, &mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"\0\0\0xyz");
        assert_eq!(s.read_at(f, u64::MAX, &mut buf).unwrap(), 0);
        let d = s.mkdir(tmp, "d", 0o755).unwrap();
        assert_eq!(s.lookup("/tmp/a/x"), Err(ENOTDIR));
        assert_eq!(s.remove(tmp, "d", false), Err(EISDIR));
        assert_eq!(s.remove(tmp, "a", true), Err(ENOTDIR));
        s.create_file(d, "inner", 0o600).unwrap();
        assert_eq!(s.remove(tmp, "d", true), Err(ENOTEMPTY));
        assert_eq!(s.rename(tmp, "d", d, "self"), Err(EINVAL));
        assert_eq!(s.rename(tmp, "a", tmp, "d"), Err(EISDIR));
        s.rename(tmp, "a", d, "moved").unwrap();
        assert_eq!(s.lookup("/tmp/d/moved").unwrap(), f);
        assert_eq!(s.write_at(f, u64::MAX, b"x"), Err(EFBIG));
    }

    #[test]
    fn cap_is_enforced_and_refunded() {
        let (mut s, tmp) = setup(4096);
        let base = s.used();
        let f = s.create_file(tmp, "f", 0o644).unwrap();
        let room = s.cap() - s.used();
        assert_eq!(s.write_at(f, 0, &vec![1u8; room as usize + 1]), Err(ENOSPC));
        assert_eq!(
            s.write_at(f, 0, &vec![1u8; room as usize]).unwrap(),
            room as usize
        );
        assert_eq!(s.create_file(tmp, "g", 0o644), Err(ENOSPC));
        assert_eq!(s.truncate(f, room + 1), Err(ENOSPC));
        assert_eq!(s.write_at(f, 1 << 40, b"x"), Err(ENOSPC));
        // Open and unlinked: still charged until closed.
        s.open_ref(f);
        s.remove(tmp, "f", false).unwrap();
        assert!(s.used() > base + room);
        s.close_ref(f);
        assert_eq!(s.used(), base);
    }
}
