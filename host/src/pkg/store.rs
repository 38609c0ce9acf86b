//! The content-addressed package store, `hako pkg list|remove`, and the
//! package sets sandboxes are given ([`resolve_set`]).
//!
//! Layout, below `$HAKO_PACKAGES` (default: hako's cache dir + `packages/`):
//! - `store/<id>/<name>/`: an installed package tree, never changed once
//!   there; `<id>` is the sha256 of its manifest ([`PackageManifest::id`]);
//! - `store/<id>/manifest.json`: that manifest;
//! - `installed.json`: which tree each installed name uses, its version and
//!   dependencies; replaced atomically (write, then rename), so readers never
//!   need the lock and see either the old or the new set of packages;
//! - `lock`: held by installs and removals (one writer at a time);
//! - `tmp/`: staging for an install in progress, cleared under the lock.
//!
//! A tree lands in `store/` by one rename, and is only referenced once
//! `installed.json` names it: an install that fails or is killed leaves at
//! most unreferenced directories, which the next writer removes.

use anyhow::{bail, Context};
use clap::Args;
use hako_runtime::packages::{InstalledPackage, PackageManifest, PackageSet};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::fetch::human;
use super::index::BASE_PACKAGES;

#[derive(Args)]
pub struct ListArgs {}

#[derive(Args)]
pub struct RemoveArgs {
    /// Packages to remove.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

/// One installed package, as `installed.json` records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub version: String,
    /// The tree's manifest id: `store/<id>/`.
    pub id: String,
    /// Needed at run time (Depends, Imports), base packages excluded.
    pub depends: Vec<String>,
    /// Needed at build time only (LinkingTo).
    #[serde(default)]
    pub linking_to: Vec<String>,
    /// The repository it came from.
    pub repo: String,
    /// Bytes in the tree.
    pub size: u64,
}

/// `installed.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Installed {
    pub packages: BTreeMap<String, Record>,
}

impl super::index::Installed for Installed {
    fn version(&self, name: &str) -> Option<String> {
        self.packages.get(name).map(|r| r.version.clone())
    }

    fn needs(&self, name: &str) -> Vec<String> {
        self.packages
            .get(name)
            .map(|r| r.depends.iter().chain(&r.linking_to).cloned().collect())
            .unwrap_or_default()
    }
}

/// The store at one root directory.
pub struct Store {
    root: PathBuf,
}

/// Held while an install or removal changes the store; released on drop.
pub struct Lock {
    _file: File,
}

impl Store {
    /// `$HAKO_PACKAGES`, else `packages/` in hako's cache dir.
    pub fn default_root() -> PathBuf {
        match std::env::var_os("HAKO_PACKAGES").filter(|v| !v.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => crate::paths::cache_dir().join("packages"),
        }
    }

    /// The store rooted at `root` (tests use their own).
    pub fn at(root: PathBuf) -> Store {
        Store { root }
    }

    pub fn open_default() -> Store {
        Store {
            root: Self::default_root(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("installed.json")
    }

    /// `store/<id>`: the tree is `<name>/` below it.
    pub fn entry_dir(&self, id: &str) -> PathBuf {
        self.root.join("store").join(id)
    }

    /// A fresh, empty staging directory below `tmp/`.
    pub fn staging(&self) -> anyhow::Result<PathBuf> {
        crate::paths::fresh_dir(&self.root.join("tmp"))
    }

    /// What is installed; an empty store when there is no index yet.
    pub fn installed(&self) -> anyhow::Result<Installed> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("{} is damaged; remove it to start over", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Installed::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Replaces `installed.json` atomically. Only under [`Store::lock`].
    pub fn write_installed(&self, installed: &Installed) -> anyhow::Result<()> {
        let path = self.index_path();
        let tmp = self
            .root
            .join(format!("installed.json.tmp-{}", std::process::id()));
        let json = serde_json::to_vec_pretty(installed)?;
        {
            let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
            std::io::Write::write_all(&mut f, &json)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }

    /// Takes the store's lock, waiting (and saying so) while another hako
    /// process installs or removes; then clears what a crashed one left.
    pub fn lock(&self) -> anyhow::Result<Lock> {
        let path = self.root.join("lock");
        let file = hako_assets::lock_file(&path, || {
            eprintln!(
                "hako pkg: another hako is changing the package store ({}); waiting for it",
                path.display()
            )
        })
        .with_context(|| format!("locking {}", path.display()))?;
        let lock = Lock { _file: file };
        self.collect_garbage()?;
        Ok(lock)
    }

    /// Removes staging directories and trees no record names. Only under the
    /// lock: then no install is in progress, and readers only follow records.
    fn collect_garbage(&self) -> anyhow::Result<()> {
        let _ = fs::remove_dir_all(self.root.join("tmp"));
        let live: HashSet<String> = self
            .installed()?
            .packages
            .into_values()
            .map(|r| r.id)
            .collect();
        if let Ok(dir) = fs::read_dir(self.root.join("store")) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !live.contains(&name) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }

    /// Moves a staged tree (`staged/<name>/`, with its manifest) into
    /// `store/<id>/` by one rename, unless that id is already there. Returns
    /// the id. Only under the lock.
    pub fn commit_tree(&self, staged: &Path, manifest: &PackageManifest) -> anyhow::Result<String> {
        let id = manifest.id();
        let dest = self.entry_dir(&id);
        fs::write(
            staged.join("manifest.json"),
            serde_json::to_vec_pretty(manifest)?,
        )?;
        if dest.join("manifest.json").is_file() {
            return Ok(id);
        }
        let parent = self.root.join("store");
        fs::create_dir_all(&parent)?;
        fs::rename(staged, &dest)
            .with_context(|| format!("moving the tree to {}", dest.display()))?;
        Ok(id)
    }

    /// A stored tree: its manifest, read back and checked against its id.
    pub fn package(&self, name: &str, rec: &Record) -> anyhow::Result<InstalledPackage> {
        let dir = self.entry_dir(&rec.id);
        let path = dir.join("manifest.json");
        let bytes = fs::read(&path).with_context(|| {
            format!(
                "package {name}: its tree is gone from {}; reinstall it with `hako pkg install {name}`",
                dir.display()
            )
        })?;
        let manifest: PackageManifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("package {name}: reading {}", path.display()))?;
        if manifest.id() != rec.id || manifest.name != name {
            bail!(
                "package {name}: {} does not match the store's record; reinstall it",
                path.display()
            );
        }
        Ok(InstalledPackage {
            manifest,
            dir: dir.join(name),
        })
    }
}

/// The package set for `names`: those packages and everything they need at
/// run time, dependencies before the packages that need them, each once.
///
/// Base R's packages are ignored (every sandbox has them). A name that is
/// not installed is an error that says how to install it. This reads the
/// store without locking it and hashes nothing: the runtime checks the
/// trees against their manifests ([`PackageSet::verify`]) before mounting.
///
/// `hako eval --packages` and `hako host --packages` build their sets here.
pub fn resolve_set(names: &[String]) -> anyhow::Result<PackageSet> {
    resolve_set_in(&Store::open_default(), names)
}

pub fn resolve_set_in(store: &Store, names: &[String]) -> anyhow::Result<PackageSet> {
    let installed = store.installed()?;
    let mut order: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    // Iterative depth-first post-order: (name, dependencies pushed yet?).
    let mut stack: Vec<(String, bool, String)> = names
        .iter()
        .rev()
        .map(|n| (n.trim().to_string(), false, String::new()))
        .collect();
    while let Some((name, expanded, needed_by)) = stack.pop() {
        if name.is_empty() || BASE_PACKAGES.contains(&name.as_str()) {
            continue;
        }
        if expanded {
            if seen.insert(name.clone()) {
                order.push(name);
            }
            continue;
        }
        if seen.contains(&name) {
            continue;
        }
        let Some(rec) = installed.packages.get(&name) else {
            let by = if needed_by.is_empty() {
                String::new()
            } else {
                format!(" (needed by {needed_by})")
            };
            bail!("package {name}{by} is not installed: run `hako pkg install {name}`");
        };
        stack.push((name.clone(), true, needed_by));
        for d in rec.depends.iter().rev() {
            if !seen.contains(d) && !stack.iter().any(|(n, e, _)| n == d && *e) {
                stack.push((d.clone(), false, name.clone()));
            }
        }
    }
    let packages = order
        .iter()
        .map(|n| store.package(n, &installed.packages[n]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(PackageSet { packages })
}

pub fn list(_args: ListArgs) -> anyhow::Result<()> {
    let store = Store::open_default();
    let installed = store.installed()?;
    if installed.packages.is_empty() {
        eprintln!(
            "hako pkg: no packages installed in {} (`hako pkg install NAME`)",
            store.root().display()
        );
        return Ok(());
    }
    let w = installed
        .packages
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max(7);
    let v = installed
        .packages
        .values()
        .map(|r| r.version.len())
        .max()
        .unwrap_or(0)
        .max(7);
    println!(
        "{:w$}  {:v$}  {:12}  {:>9}",
        "package", "version", "hash", "size"
    );
    for (name, r) in &installed.packages {
        println!(
            "{name:w$}  {:v$}  {:12}  {:>9}",
            r.version,
            &r.id[..r.id.len().min(12)],
            human(r.size)
        );
    }
    Ok(())
}

pub fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    let store = Store::open_default();
    let _lock = store.lock()?;
    let mut installed = store.installed()?;
    let gone: BTreeSet<&str> = args.names.iter().map(String::as_str).collect();
    let missing: Vec<&str> = gone
        .iter()
        .copied()
        .filter(|n| !installed.packages.contains_key(*n))
        .collect();
    if !missing.is_empty() {
        bail!("not installed: {}", missing.join(", "));
    }
    // Refuse to break a package that stays: its sets would fail to resolve.
    let mut needed = Vec::new();
    for (name, r) in &installed.packages {
        if gone.contains(name.as_str()) {
            continue;
        }
        for d in &r.depends {
            if gone.contains(d.as_str()) {
                needed.push(format!("{d} (needed by {name})"));
            }
        }
    }
    if !needed.is_empty() {
        bail!(
            "not removing: {}; remove those packages too, or keep these",
            needed.join(", ")
        );
    }
    for n in &gone {
        installed.packages.remove(*n);
    }
    store.write_installed(&installed)?;
    // Unreferenced trees go now (a reader that resolved before the index
    // changed may still be verifying one; it then reports it gone).
    store.collect_garbage()?;
    for n in &gone {
        eprintln!("hako pkg: removed {n}");
    }
    Ok(())
}
