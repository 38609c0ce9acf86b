//! A daemon's package cache: the package trees hosts sent it, content
//! addressed (`store/<manifest id>/<name>/`, with `manifest.json` beside the
//! tree), bounded by the volunteer's `--max-package-cache`. Trees used least
//! recently go first when a new set needs room; a set larger than the bound
//! is refused. Several daemons may share one cache: changes happen under a
//! lock file, and a tree lands by one rename of a fully checked staging
//! directory, so a reader never sees half of one.

use anyhow::Context;
use hako_runtime::packages::{InstalledPackage, PackageManifest};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Default `--max-package-cache`, in MiB.
pub const DEFAULT_MAX_MIB: u64 = 1024;

pub struct Cache {
    root: PathBuf,
    /// Bytes of package files the cache may hold.
    pub max_bytes: u64,
    /// Taken before the lock file by the jobs of one process (`--jobs N`),
    /// which wait for it without blocking the runtime's thread: a job that
    /// holds the lock file across a fetch would otherwise block the others
    /// in `flock`, and with them the connection that fetch needs.
    gate: Arc<tokio::sync::Mutex<()>>,
}

/// Held while the cache changes; released on drop.
pub struct Lock {
    _file: File,
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// A tree a sandbox has mounted: other daemons sharing the cache do not
/// remove it to make room while this is held (a shared flock on its
/// manifest); released on drop.
pub struct InUse {
    _file: File,
}

/// Bytes a manifest's files take.
pub fn tree_bytes(m: &PackageManifest) -> u64 {
    m.files.values().fold(0u64, |a, f| a.saturating_add(f.size))
}

impl Cache {
    /// `dir`, else `daemon-packages/` in hako's cache dir.
    pub fn new(dir: Option<PathBuf>, max_bytes: u64) -> Cache {
        Cache {
            root: dir.unwrap_or_else(|| crate::paths::cache_dir().join("daemon-packages")),
            max_bytes,
            gate: Arc::default(),
        }
    }

    fn entry(&self, id: &str) -> PathBuf {
        self.root.join("store").join(id)
    }

    /// Waits for any other daemon changing this cache (synchronous code:
    /// the tests; daemons use [`Cache::lock_async`]).
    #[cfg(test)]
    pub fn lock(&self) -> anyhow::Result<Lock> {
        Ok(Lock {
            _file: lock_root(&self.root)?,
            _gate: None,
        })
    }

    /// [`Cache::lock`] for async code: waits for the other jobs of this
    /// process first, then for other processes on a blocking thread. Of
    /// jobs that want the same set, one fetches it and the others find it
    /// in the cache.
    pub async fn lock_async(&self) -> anyhow::Result<Lock> {
        let gate = self.gate.clone().lock_owned().await;
        let root = self.root.clone();
        let file = tokio::task::spawn_blocking(move || lock_root(&root)).await??;
        Ok(Lock {
            _file: file,
            _gate: Some(gate),
        })
    }

    /// The cached tree of `manifest`, if it is there and whole (a damaged
    /// one is removed, to be fetched again). Marks it used.
    pub fn get(&self, manifest: &PackageManifest, _lock: &Lock) -> Option<InstalledPackage> {
        let dir = self.entry(&manifest.id());
        let stored: PackageManifest = fs::read(dir.join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())?;
        let tree = dir.join(&manifest.name);
        if stored != *manifest || manifest.check_tree(&tree).is_err() {
            tracing::warn!(
                "package cache: {} {} was damaged; fetching it again",
                manifest.name,
                manifest.version
            );
            let _ = fs::remove_dir_all(&dir);
            return None;
        }
        touch(&dir.join("manifest.json"));
        Some(InstalledPackage {
            manifest: manifest.clone(),
            dir: tree,
        })
    }

    /// A fresh staging directory for one tree: `<staging>/<name>/` gets
    /// the files, [`Cache::commit`] moves it into the store.
    pub fn staging(&self, _lock: &Lock) -> anyhow::Result<PathBuf> {
        crate::paths::fresh_dir(&self.root.join("tmp"))
    }

    /// Moves a staged, checked tree into the store.
    pub fn commit(
        &self,
        staged: &Path,
        manifest: &PackageManifest,
        _lock: &Lock,
    ) -> anyhow::Result<InstalledPackage> {
        let dir = self.entry(&manifest.id());
        fs::write(staged.join("manifest.json"), serde_json::to_vec(manifest)?)?;
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(self.root.join("store"))?;
        fs::rename(staged, &dir).with_context(|| format!("moving a tree to {}", dir.display()))?;
        Ok(InstalledPackage {
            manifest: manifest.clone(),
            dir: dir.join(&manifest.name),
        })
    }

    /// Marks the tree of manifest id `id` in use (see [`InUse`]).
    pub fn hold(&self, id: &str, _lock: &Lock) -> anyhow::Result<InUse> {
        let path = self.entry(id).join("manifest.json");
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        hako_assets::lock_shared(&file).with_context(|| format!("locking {}", path.display()))?;
        Ok(InUse { _file: file })
    }

    /// Makes room for `need` more bytes, removing the trees used least
    /// recently except those of `keep` (manifest ids). Err: even then they
    /// would not fit.
    pub fn make_room(&self, need: u64, keep: &[String], _lock: &Lock) -> anyhow::Result<()> {
        let mut held: Vec<(std::time::SystemTime, u64, PathBuf, bool)> = Vec::new();
        if let Ok(dir) = fs::read_dir(self.root.join("store")) {
            for e in dir.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let mpath = e.path().join("manifest.json");
                let parsed: Option<PackageManifest> = fs::read(&mpath)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                let Some(m) = parsed else {
                    // Not a tree this cache made whole: it goes.
                    let _ = fs::remove_dir_all(e.path());
                    continue;
                };
                let used = fs::metadata(&mpath)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                held.push((used, tree_bytes(&m), e.path(), keep.contains(&id)));
            }
        }
        let mut total: u64 = held.iter().map(|h| h.1).sum();
        held.sort_by_key(|h| h.0);
        for (_, bytes, path, kept) in &held {
            if total.saturating_add(need) <= self.max_bytes {
                break;
            }
            if !kept && !in_use(path) {
                tracing::info!(
                    "package cache: removing {} (least recently used)",
                    path.display()
                );
                let _ = fs::remove_dir_all(path);
                total -= bytes;
            }
        }
        if total.saturating_add(need) > self.max_bytes {
            anyhow::bail!(
                "the package set does not fit in this daemon's package cache \
                 (--max-package-cache {} MiB)",
                self.max_bytes >> 20
            );
        }
        Ok(())
    }
}

/// The cache's lock file, locked; what a daemon killed mid-fetch left is
/// cleared.
fn lock_root(root: &Path) -> anyhow::Result<File> {
    let path = root.join("lock");
    let file = hako_assets::lock_file(&path, || {})
        .with_context(|| format!("locking {}", path.display()))?;
    let _ = fs::remove_dir_all(root.join("tmp"));
    Ok(file)
}

/// Whether a daemon's sandbox has the tree at `dir` mounted ([`InUse`]).
fn in_use(dir: &Path) -> bool {
    match File::open(dir.join("manifest.json")) {
        Ok(f) => !matches!(hako_assets::try_lock_exclusive(&f), Ok(true)),
        Err(_) => false,
    }
}

/// Marks a tree used now (its manifest's modification time).
fn touch(path: &Path) {
    if let Ok(f) = OpenOptions::new().write(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hako_runtime::packages::FileEntry;

    fn tree(cache: &Cache, lock: &Lock, name: &str, bytes: usize) -> PackageManifest {
        let staged = cache.staging(lock).unwrap();
        let dir = staged.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("DESCRIPTION"), vec![b'x'; bytes]).unwrap();
        let m = PackageManifest {
            name: name.into(),
            version: "1".into(),
            files: [(
                "DESCRIPTION".to_string(),
                FileEntry {
                    sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(vec![b'x'; bytes])),
                    size: bytes as u64,
                },
            )]
            .into(),
        };
        cache.commit(&staged, &m, lock).unwrap();
        m
    }

    #[test]
    fn room_is_made_by_the_least_recently_used_trees_never_the_kept_ones() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::new(Some(t.path().to_path_buf()), 300);
        let lock = cache.lock().unwrap();
        let a = tree(&cache, &lock, "a", 100);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = tree(&cache, &lock, "b", 100);
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Using a makes b the least recently used.
        assert!(cache.get(&a, &lock).is_some());
        cache.make_room(150, &[], &lock).unwrap();
        assert!(cache.get(&a, &lock).is_some());
        assert!(cache.get(&b, &lock).is_none());
        // A kept tree stays even when that means no room.
        let e = cache.make_room(250, &[a.id()], &lock).unwrap_err();
        assert!(e.to_string().contains("--max-package-cache"), "{e}");
        assert!(cache.get(&a, &lock).is_some());
        // So does one another daemon's sandbox has mounted.
        let held = cache.hold(&a.id(), &lock).unwrap();
        assert!(cache.make_room(250, &[], &lock).is_err());
        assert!(cache.get(&a, &lock).is_some());
        drop(held);
        cache.make_room(250, &[], &lock).unwrap();
        assert!(cache.get(&a, &lock).is_none());
    }
}
