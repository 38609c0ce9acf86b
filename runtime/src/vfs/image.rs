//! The read-only R tree (`/usr/lib/R/...`), loaded once into memory and shared
//! by every sandbox of a process through an `Arc`. Nothing a guest does can
//! change it, so sandboxes never see each other through it.

use super::types::{DirEntry, FileType, Stat, Timespec};
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::Path;
use std::sync::Arc;

/// `st_dev` of everything in the image.
pub(crate) const IMAGE_DEV: u32 = 1;

/// A regular file of the image.
#[derive(Debug)]
pub(crate) struct ImageFile {
    pub data: Arc<[u8]>,
    pub perm: u32,
    pub mtime: Timespec,
    pub ino: u64,
}

/// A directory of the image: child names, each also a key of [`RoImage::nodes`].
#[derive(Debug, Default)]
pub(crate) struct ImageDir {
    pub children: BTreeSet<String>,
    pub mtime: Timespec,
    pub ino: u64,
}

#[derive(Debug)]
pub(crate) enum ImageNode {
    File(ImageFile),
    Dir(ImageDir),
}

impl ImageNode {
    pub fn stat(&self) -> Stat {
        match self {
            ImageNode::File(f) => Stat {
                dev: IMAGE_DEV,
                ino: f.ino,
                mode: FileType::Regular.mode_bits() | f.perm,
                nlink: 1,
                size: f.data.len() as u64,
                atime: f.mtime,
                mtime: f.mtime,
                ctime: f.mtime,
                ..Stat::default()
            },
            ImageNode::Dir(d) => Stat {
                dev: IMAGE_DEV,
                ino: d.ino,
                mode: FileType::Directory.mode_bits() | 0o555,
                nlink: 2,
                size: 4096,
                atime: d.mtime,
                mtime: d.mtime,
                ctime: d.mtime,
                ..Stat::default()
            },
        }
    }
}

/// The read-only R tree, keyed by absolute guest path.
#[derive(Debug)]
pub struct RoImage {
    nodes: HashMap<String, ImageNode>,
    bytes: u64,
}

impl RoImage {
    /// Load every regular file below `rootfs` (guest path = path below it, so
    /// `rootfs/usr/lib/R/etc/Renviron` is `/usr/lib/R/etc/Renviron`).
    /// Directories come from the files' paths and the host tree. Symlinks,
    /// devices and names that are not UTF-8 are skipped: the image is plain data.
    pub fn load(rootfs: &Path) -> io::Result<Arc<RoImage>> {
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        walk(rootfs, String::new(), &mut files, &mut dirs)?;
        let mut img = RoImage::empty();
        for d in dirs {
            img.add_dir(&d);
        }
        for (path, data, perm, mtime) in files {
            img.add_file(&path, data.into(), perm, mtime)?;
        }
        Ok(Arc::new(img))
    }

    /// Build an image from in-memory `(absolute guest path, contents)` pairs,
    /// e.g. the files embedded in R.wasm's data segments.
    pub fn from_files<I, P>(files: I) -> io::Result<Arc<RoImage>>
    where
        I: IntoIterator<Item = (P, Vec<u8>)>,
        P: AsRef<str>,
    {
        let mut img = RoImage::empty();
        for (path, data) in files {
            img.add_file(path.as_ref(), data.into(), 0o444, Timespec::default())?;
        }
        Ok(Arc::new(img))
    }

    /// Total bytes of file contents.
    pub fn total_bytes(&self) -> u64 {
        self.bytes
    }

    fn empty() -> RoImage {
        let mut nodes = HashMap::new();
        nodes.insert(
            "/".to_string(),
            ImageNode::Dir(ImageDir {
                ino: 1,
                ..ImageDir::default()
            }),
        );
        RoImage { nodes, bytes: 0 }
    }

    fn next_ino(&self) -> u64 {
        self.nodes.len() as u64 + 1
    }

    /// Create `abs` and its parents as directories (no-op where they exist).
    fn add_dir(&mut self, abs: &str) -> bool {
        if let Some(node) = self.nodes.get(abs) {
            return matches!(node, ImageNode::Dir(_));
        }
        let Some((parent, name)) = super::path::split_last(abs) else {
            return true;
        };
        let (parent, name) = (parent.to_string(), name.to_string());
        if !self.add_dir(&parent) {
            return false;
        }
        let ino = self.next_ino();
        self.nodes.insert(
            abs.to_string(),
            ImageNode::Dir(ImageDir {
                ino,
                ..ImageDir::default()
            }),
        );
        if let Some(ImageNode::Dir(p)) = self.nodes.get_mut(&parent) {
            p.children.insert(name);
        }
        true
    }

    fn add_file(
        &mut self,
        path: &str,
        data: Arc<[u8]>,
        perm: u32,
        mtime: Timespec,
    ) -> io::Result<()> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad image path {path:?}"),
            )
        };
        let abs = super::path::normalize_config(path).map_err(|_| bad())?;
        let (parent, name) = super::path::split_last(&abs).ok_or_else(bad)?;
        if !self.add_dir(parent) || self.nodes.contains_key(&abs) {
            return Err(bad());
        }
        let (parent, name) = (parent.to_string(), name.to_string());
        self.bytes += data.len() as u64;
        let ino = self.next_ino();
        self.nodes.insert(
            abs,
            ImageNode::File(ImageFile {
                data,
                perm: perm & 0o555,
                mtime,
                ino,
            }),
        );
        if let Some(ImageNode::Dir(p)) = self.nodes.get_mut(&parent) {
            p.children.insert(name);
        }
        Ok(())
    }

    pub(crate) fn get(&self, abs: &str) -> Option<&ImageNode> {
        self.nodes.get(abs)
    }

    /// Children of the directory `abs` (without `.`/`..`).
    pub(crate) fn list(&self, abs: &str) -> Vec<DirEntry> {
        let Some(ImageNode::Dir(d)) = self.nodes.get(abs) else {
            return Vec::new();
        };
        d.children
            .iter()
            .filter_map(|name| {
                let child = if abs == "/" {
                    format!("/{name}")
                } else {
                    format!("{abs}/{name}")
                };
                let st = self.nodes.get(&child)?.stat();
                Some(DirEntry {
                    name: name.clone(),
                    ino: st.ino,
                    kind: st.file_type(),
                })
            })
            .collect()
    }
}

type LoadedFile = (String, Vec<u8>, u32, Timespec);

fn walk(
    dir: &Path,
    guest: String,
    files: &mut Vec<LoadedFile>,
    dirs: &mut Vec<String>,
) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let meta = std::fs::symlink_metadata(e.path())?;
        let child = format!("{guest}/{name}");
        if meta.is_dir() {
            dirs.push(child.clone());
            walk(&e.path(), child, files, dirs)?;
        } else if meta.is_file() {
            let data = std::fs::read(e.path())?;
            let mtime = meta
                .modified()
                .map(Timespec::from_system)
                .unwrap_or_default();
            files.push((child, data, meta.permissions().mode(), mtime));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_walks_host_dir() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("usr/lib/R/etc")).unwrap();
        std::fs::create_dir_all(t.path().join("usr/lib/R/empty")).unwrap();
        std::fs::write(t.path().join("usr/lib/R/etc/Renviron"), b"R_X=1\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", t.path().join("usr/lib/R/link")).unwrap();
        let img = RoImage::load(t.path()).unwrap();
        assert_eq!(img.total_bytes(), 6);
        match img.get("/usr/lib/R/etc/Renviron") {
            Some(ImageNode::File(f)) => assert_eq!(&*f.data, b"R_X=1\n"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            img.get("/usr/lib/R/empty"),
            Some(ImageNode::Dir(_))
        ));
        assert!(img.get("/usr/lib/R/link").is_none());
        let names: Vec<_> = img.list("/usr/lib/R").into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["empty", "etc"]);
        assert_eq!(img.list("/").len(), 1);
    }

    #[test]
    fn from_files_rejects_relative_and_duplicates() {
        assert!(RoImage::from_files([("rel/x", vec![])]).is_err());
        assert!(RoImage::from_files([("/a/x", vec![]), ("/a/x", vec![])]).is_err());
        assert!(RoImage::from_files([("/a", vec![]), ("/a/x", vec![])]).is_err());
        let img = RoImage::from_files([("/a/b/c", vec![1, 2])]).unwrap();
        assert!(matches!(img.get("/a/b"), Some(ImageNode::Dir(_))));
    }
}
