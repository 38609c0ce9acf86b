//! `hako pkg install`: packages and their dependencies from webR-style
//! repositories into the content-addressed store.
//!
//! Steps, under the store's lock: packages already installed are kept (a
//! second install touches no network); the repositories' `PACKAGES` are
//! read and the missing packages planned, dependencies first; each binary
//! is downloaded and its checksums (MD5sum, SHA256sum) checked against the
//! index; it is unpacked safely into a staging directory; legacy-exception
//! side modules are translated to exnref; every side module's imports are
//! checked against what R.wasm offers. Only when every package passed does
//! anything move into the store, and `installed.json` is replaced last, so
//! a failure leaves the installed set as it was.

use anyhow::{bail, Context};
use clap::Args;
use hako_runtime::packages::PackageManifest;
use md5::Md5;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::exnref::{self, Legacy};
use super::fetch::{human, Fetcher, Got};
use super::imports::{self, Provided, Surface};
use super::index::{self, Entry, Index, CONTRIB};
use super::store::{Record, Store};
use super::unpack;

/// webR's public repository of wasm binaries.
pub const DEFAULT_REPO: &str = "https://repo.r-wasm.org";

/// Largest index and binary a repository may send.
const MAX_INDEX: u64 = 64 << 20;
const MAX_BINARY: u64 = 1 << 30;

#[derive(Args)]
pub struct InstallArgs {
    /// Packages to install (their dependencies come along).
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
    /// A repository: a base URL below which `bin/emscripten/contrib/4.6/`
    /// holds `PACKAGES` and the `.tgz` binaries (webR's repository,
    /// r-universe, or one `hako pkg build` wrote). `https://` or `file://`
    /// (or a local path); repeat for several, searched together. Default:
    /// https://repo.r-wasm.org.
    #[arg(long = "repo", value_name = "URL")]
    repos: Vec<String>,
    /// Also trust the CA certificates in this PEM file for https
    /// repositories (the web PKI roots are always trusted).
    #[arg(long, value_name = "FILE", env = "HAKO_REPO_CA")]
    repo_ca: Option<PathBuf>,
    /// webR assets directory (its R.wasm decides which symbols exist).
    #[arg(long, value_name = "DIR", env = "HAKO_ASSETS")]
    assets: Option<PathBuf>,
}

pub fn run(args: InstallArgs) -> anyhow::Result<()> {
    for n in &args.names {
        if !index::is_package_name(n) {
            bail!("{n:?} is not a package name");
        }
    }
    for r in &args.repos {
        super::fetch::check_url(r).with_context(|| format!("--repo {r}"))?;
    }
    let store = Store::open_default();
    let _lock = store.lock()?;
    let mut installed = store.installed()?;
    // A record whose tree was deleted by hand is not installed: fetch it again.
    installed.packages.retain(|name, r| {
        let there = store.entry_dir(&r.id).join("manifest.json").is_file();
        if !there {
            eprintln!("hako pkg: {name}'s files are gone from the store; installing it again");
        }
        there
    });

    let assets_dir = crate::paths::assets_dir(args.assets.as_deref());
    let assets = match hako_assets::Assets::open(&assets_dir) {
        Ok(a) => a,
        Err(_) => hako_assets::Assets::fetch(&assets_dir, &mut |m| eprintln!("hako: {m}"))?,
    };
    let shipped = shipped_packages(&assets.rootfs());
    let wanted: Vec<String> = args
        .names
        .iter()
        .filter(|n| {
            let skip = index::BASE_PACKAGES.contains(&n.as_str()) || shipped.contains(*n);
            if skip {
                eprintln!("hako pkg: {n} comes with R.wasm; nothing to install");
            }
            !skip
        })
        .cloned()
        .collect();
    if wanted.iter().all(|n| installed_closure(&installed, n)) {
        for n in &wanted {
            let r = &installed.packages[n];
            eprintln!("hako pkg: {n} {} is already installed", r.version);
        }
        return Ok(());
    }

    let repos = if args.repos.is_empty() {
        vec![DEFAULT_REPO.to_string()]
    } else {
        args.repos.clone()
    };
    let fetcher = Fetcher::new(args.repo_ca.clone())?;
    let mut indexes = Vec::new();
    for repo in &repos {
        indexes.push(read_index(&fetcher, repo)?);
    }
    let plan = index::resolve(&wanted, &indexes, &installed, &shipped)?;
    if plan.is_empty() {
        return Ok(());
    }
    eprintln!(
        "hako pkg: installing {}",
        plan.iter()
            .map(|e| format!("{} {}", e.name, e.version))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let provided = Provided::from_assets(assets.dir())?;
    // Scratch for wasm-opt, outside the trees that move into the store.
    let work = store.staging()?;
    let mut staged = Vec::new();
    for entry in &plan {
        let started = Instant::now();
        let dir = store.staging()?;
        let (manifest, size) = stage(&fetcher, entry, &dir, &provided, &work)
            .with_context(|| format!("installing {} {}", entry.name, entry.version))?;
        eprintln!(
            "hako pkg: {} {} checked ({} files, {}) in {:.1} s",
            entry.name,
            entry.version,
            manifest.files.len(),
            human(size),
            started.elapsed().as_secs_f64()
        );
        staged.push((entry, dir, manifest, size));
    }

    // Everything passed: move the trees in, then name them in one write.
    for (entry, dir, manifest, size) in staged {
        let id = store.commit_tree(&dir, &manifest)?;
        let names = |deps: &[index::Dep]| -> Vec<String> {
            let mut v: Vec<String> = Vec::new();
            for d in deps {
                if !shipped.contains(&d.name) && !v.contains(&d.name) {
                    v.push(d.name.clone());
                }
            }
            v
        };
        installed.packages.insert(
            entry.name.clone(),
            Record {
                version: entry.version.clone(),
                id,
                depends: names(&entry.runtime_deps),
                linking_to: names(&entry.linking_to),
                repo: entry.repo.clone(),
                size,
            },
        );
    }
    store.write_installed(&installed)?;
    let _ = std::fs::remove_dir_all(&work);
    for e in &plan {
        eprintln!("hako pkg: installed {} {}", e.name, e.version);
    }
    Ok(())
}

/// Whether `name` and everything it needs (run time and LinkingTo) are
/// installed.
fn installed_closure(installed: &super::store::Installed, name: &str) -> bool {
    let mut stack = vec![name.to_string()];
    let mut seen = HashSet::new();
    while let Some(n) = stack.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        let Some(r) = installed.packages.get(&n) else {
            return false;
        };
        stack.extend(r.depends.iter().chain(&r.linking_to).cloned());
    }
    true
}

/// The packages R.wasm's library already has (base R and webR's own).
fn shipped_packages(rootfs: &Path) -> HashSet<String> {
    let lib = rootfs.join("usr/lib/R/library");
    std::fs::read_dir(lib)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A repository's index: `PACKAGES`, else `PACKAGES.gz`.
fn read_index(fetcher: &Fetcher, repo: &str) -> anyhow::Result<Index> {
    let base = repo.trim_end_matches('/');
    let contrib = format!("{base}/{CONTRIB}");
    eprintln!("hako pkg: reading the index of {base}");
    let text = match fetcher.get(&format!("{contrib}/PACKAGES"), MAX_INDEX, "PACKAGES")? {
        Got::Body(b) => b,
        Got::NotFound => {
            match fetcher.get(&format!("{contrib}/PACKAGES.gz"), MAX_INDEX, "PACKAGES.gz")? {
                Got::Body(gz) => {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(
                        &mut std::io::Read::take(flate2::read::GzDecoder::new(&gz[..]), MAX_INDEX),
                        &mut out,
                    )
                    .context("decompressing PACKAGES.gz")?;
                    out
                }
                Got::NotFound => bail!(
                "{base} has no {CONTRIB}/PACKAGES: is it a webR-style repository of wasm binaries?"
            ),
            }
        }
    };
    let text = String::from_utf8(text).context("PACKAGES is not UTF-8")?;
    Index::parse(base, &contrib, &text)
}

/// Downloads, checks and unpacks one package into `dir/<name>/`; returns its
/// manifest and size.
fn stage(
    fetcher: &Fetcher,
    entry: &Entry,
    dir: &Path,
    provided: &Provided,
    work: &Path,
) -> anyhow::Result<(PackageManifest, u64)> {
    if entry.md5.is_none() && entry.sha256.is_none() {
        bail!("the index gives no checksum (MD5sum or SHA256sum) for it; refusing to install it unchecked");
    }
    eprintln!("hako pkg: downloading {}", entry.url);
    let what = format!("{} {}", entry.name, entry.version);
    let tgz = match fetcher.get(&entry.url, MAX_BINARY, &what)? {
        Got::Body(b) => b,
        Got::NotFound => bail!("{} is listed in the index but not there", entry.url),
    };
    check_sums(entry, &tgz)?;
    unpack::unpack(&entry.name, &tgz, dir)?;
    drop(tgz);
    let tree = dir.join(&entry.name);
    check_description(&tree, entry)?;
    prepare_modules(&tree, work, provided)?;
    let manifest = PackageManifest::of_dir(&tree)?;
    let size = manifest.files.values().map(|f| f.size).sum();
    Ok((manifest, size))
}

/// Every checksum the index gives must match: a corrupted or swapped
/// download is refused before anything is unpacked.
fn check_sums(entry: &Entry, bytes: &[u8]) -> anyhow::Result<()> {
    let check = |kind: &str, want: &Option<String>, got: String| -> anyhow::Result<()> {
        if let Some(want) = want {
            if *want != got {
                bail!(
                    "{} does not match the index's {kind}: expected {want}, got {got}; \
                     the download is corrupt or not what the repository lists, refusing it",
                    entry.url
                );
            }
        }
        Ok(())
    };
    check(
        "SHA256sum",
        &entry.sha256,
        hex::encode(Sha256::digest(bytes)),
    )?;
    check("MD5sum", &entry.md5, hex::encode(Md5::digest(bytes)))
}

/// The unpacked DESCRIPTION names the package and version the index listed.
fn check_description(tree: &Path, entry: &Entry) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(tree.join("DESCRIPTION")).context("reading DESCRIPTION")?;
    let rec = index::parse_dcf(&text)
        .context("reading DESCRIPTION")?
        .into_iter()
        .next()
        .context("DESCRIPTION is empty")?;
    let field = |k: &str| rec.get(k).map(String::as_str).unwrap_or("");
    if field("Package") != entry.name || field("Version") != entry.version {
        bail!(
            "its DESCRIPTION says {} {}, the index {} {}",
            field("Package"),
            field("Version"),
            entry.name,
            entry.version
        );
    }
    if field("Built").is_empty() {
        bail!("its DESCRIPTION has no Built field: a source package, not an installed binary");
    }
    Ok(())
}

/// Every file in `libs/` ending in `.so` must be a wasm side module; legacy
/// ones are translated in place; then all of them must link against R.wasm.
fn prepare_modules(tree: &Path, work: &Path, provided: &Provided) -> anyhow::Result<()> {
    let libs = tree.join("libs");
    let mut paths = Vec::new();
    let mut stack = vec![libs.clone()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "so") {
                paths.push(p);
            }
        }
    }
    paths.sort();
    let rel = |p: &Path| p.strip_prefix(tree).unwrap_or(p).display().to_string();
    let mut legacy = Vec::new();
    for p in &paths {
        let bytes = std::fs::read(p)?;
        if !hako_assets::wasm::is_wasm(&bytes) {
            bail!(
                "{} is not a WebAssembly module: this is a binary package for another platform",
                rel(p)
            );
        }
        if hako_assets::wasm::has_legacy_eh(&rel(p), &bytes)? {
            legacy.push((p.clone(), bytes));
        }
    }
    if !legacy.is_empty() {
        let names: Vec<String> = legacy.iter().map(|(p, _)| rel(p)).collect();
        eprintln!(
            "hako pkg: translating {} to exnref (legacy exception handling; once, at install)",
            names.join(", ")
        );
        let jobs = legacy
            .iter_mut()
            .map(|(p, b)| Legacy {
                name: rel(p),
                bytes: std::mem::take(b),
            })
            .collect();
        for ((p, _), out) in legacy.iter().zip(exnref::translate(jobs, work)?) {
            std::fs::write(p, out)?;
        }
    }

    let mut surfaces = Vec::new();
    for p in &paths {
        let bytes = std::fs::read(p)?;
        hako_assets::wasm::validate_exnref(&bytes)
            .map_err(|e| anyhow::anyhow!("{} does not validate: {e}", rel(p)))?;
        let s = Surface::parse(&bytes).with_context(|| format!("reading {}", rel(p)))?;
        surfaces.push((p, s));
    }
    let mut problems = Vec::new();
    for (i, (p, s)) in surfaces.iter().enumerate() {
        let siblings: HashSet<String> = surfaces
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, (_, o))| o.exports().iter().cloned())
            .collect();
        let missing: BTreeSet<String> =
            imports::missing(s, provided, &siblings).with_context(|| rel(p))?;
        if !missing.is_empty() {
            problems.push(format!(
                "{} imports symbols R.wasm does not define: {}",
                rel(p),
                missing.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} (built against another R or webR? it would fail when called)",
            problems.join("; ")
        );
    }
    Ok(())
}
