//! `hako pkg build`: source packages into wasm binary packages in a
//! CRAN-like repository laid out as webR's (and r-wasm/rwasm's):
//! `DIR/bin/emscripten/contrib/4.6/<name>_<version>.tgz` plus `PACKAGES`.
//!
//! Each package is built in two halves. configure and make run on the host
//! (`build/compile.sh`: the host's `R CMD INSTALL --libs-only` in the
//! toolchain's stand-in R home), unsandboxed, so only for trusted sources.
//! The R half (R code, lazy-load database, byte code, Meta, help indices)
//! runs inside the sandbox with R.wasm's own R 4.6 (`build/install.R`), so
//! the result says `Built: R 4.6.0` and matches what R.wasm loads. Side
//! modules with legacy exception handling are translated to exnref.
//! Packages a build needs (Depends, Imports, LinkingTo) come from the
//! repository being written; several sources are built dependencies first.

use super::toolchain::Toolchain;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const COMPILE: &str = include_str!("build/compile.sh");
const INSTALL_R: &str = include_str!("build/install.R");

/// Where a repository keeps its binaries, as webR's does for R 4.6.
pub const CONTRIB: &str = "bin/emscripten/contrib/4.6";

/// R's base and recommended-free packages that R.wasm ships: never built,
/// never looked for in the repository.
const BASE: &[&str] = &[
    "R",
    "base",
    "compiler",
    "datasets",
    "grDevices",
    "graphics",
    "grid",
    "methods",
    "parallel",
    "splines",
    "stats",
    "stats4",
    "tcltk",
    "tools",
    "utils",
    "webr",
];

/// Fields of `PACKAGES`, in the order `tools::write_PACKAGES` writes them.
const INDEX_FIELDS: &[&str] = &[
    "Package",
    "Version",
    "Priority",
    "Depends",
    "Imports",
    "LinkingTo",
    "Suggests",
    "Enhances",
    "License",
    "License_is_FOSS",
    "License_restricts_use",
    "OS_type",
    "Archs",
    "NeedsCompilation",
    "Built",
];

#[derive(Args)]
#[command(
    after_help = "Building runs the packages' configure scripts and compilers on this \
machine, outside the sandbox, as R CMD INSTALL does: build only sources you trust. The R half \
of the install runs in the sandbox with R.wasm's R 4.6, and every package is test-loaded there."
)]
pub struct BuildArgs {
    /// Source packages: `NAME_VERSION.tar.gz` as CRAN serves them, or a
    /// package directory.
    /// configure scripts and make run on this machine, outside the sandbox:
    /// build only sources you trust.
    #[arg(required = true, value_name = "SOURCE")]
    sources: Vec<PathBuf>,
    /// The repository to write (created if missing); `PACKAGES` there is
    /// rewritten to list every binary in it.
    #[arg(long, value_name = "DIR")]
    repo: PathBuf,
    /// Go on with the other packages after one fails (the command still
    /// fails at the end, naming them).
    #[arg(long)]
    keep_going: bool,
    /// Parallel compile jobs on the host.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Memory cap of the sandbox that runs the R half, in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: usize,
    /// Skip loading each built package in a sandbox (which catches side
    /// modules that import what R.wasm lacks).
    #[arg(long)]
    no_test_load: bool,
    /// Asset directory (default: $HAKO_ASSETS or the per-user cache).
    #[arg(long, value_name = "DIR")]
    assets: Option<PathBuf>,
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let tc = Toolchain::ensure(args.assets.as_deref())?;
    let contrib = args.repo.join(CONTRIB);
    fs::create_dir_all(&contrib).with_context(|| format!("create {}", contrib.display()))?;
    let lock_path = args.repo.join(".hako-build.lock");
    let lock =
        fs::File::create(&lock_path).with_context(|| format!("create {}", lock_path.display()))?;
    hako_assets::lock_exclusive(&lock).context("lock the repository")?;

    sweep_scratch(&crate::paths::cache_dir());
    let scratch = crate::paths::cache_dir().join(format!("build-{}", std::process::id()));
    let result = build_all(&args, &tc, &contrib, &scratch);
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// Removes the scratch directories (`build-<pid>`) of builds that were
/// killed: their process is gone, so nothing else will.
fn sweep_scratch(cache: &Path) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("build-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// A source package, unpacked.
struct Source {
    name: String,
    version: String,
    dir: PathBuf,
    /// Depends, Imports and LinkingTo (the packages its build needs).
    needs: BTreeSet<String>,
}

fn build_all(
    args: &BuildArgs,
    tc: &Toolchain,
    contrib: &Path,
    scratch: &Path,
) -> anyhow::Result<()> {
    let mut sources = Vec::new();
    for (i, tarball) in args.sources.iter().enumerate() {
        let dir = scratch.join(format!("src-{i}"));
        sources.push(unpack_source(tarball, &dir)?);
    }
    let order = build_order(&sources)?;
    let mut failed = Vec::new();
    for i in order {
        let src = &sources[i];
        let started = Instant::now();
        eprintln!("hako pkg build: {} {}", src.name, src.version);
        let work = scratch.join(format!("work-{}", src.name));
        match build_one(args, tc, contrib, src, &work) {
            Ok(tgz) => {
                eprintln!(
                    "hako pkg build: {} {} built in {:.1} s: {}",
                    src.name,
                    src.version,
                    started.elapsed().as_secs_f64(),
                    tgz.display()
                );
                write_index(contrib)?;
            }
            Err(e) => {
                eprintln!("hako pkg build: {} failed: {e:#}", src.name);
                failed.push(src.name.clone());
                if !args.keep_going {
                    break;
                }
            }
        }
        let _ = fs::remove_dir_all(&work);
        let _ = fs::remove_dir_all(work.with_extension("deps"));
    }
    write_index(contrib)?;
    if !failed.is_empty() {
        bail!("{} package(s) failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}

/// Unpacks a source tarball with the system's tar into `dir` and reads its
/// DESCRIPTION (the one top-level directory is the package).
fn unpack_source(tarball: &Path, dir: &Path) -> anyhow::Result<Source> {
    fs::create_dir_all(dir)?;
    if tarball.join("DESCRIPTION").is_file() {
        // A package directory (a source tree checked out, not yet `R CMD build`).
        run_quiet(
            Command::new("cp").arg("-a").arg(tarball).arg(dir),
            &format!("copy {}", tarball.display()),
        )?;
    } else {
        run_quiet(
            Command::new("tar")
                .arg("-xzf")
                .arg(tarball)
                .arg("-C")
                .arg(dir)
                .arg("--no-same-owner"),
            &format!("unpack {}", tarball.display()),
        )?;
    }
    let tops: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("DESCRIPTION").is_file())
        .collect();
    let [pkg] = tops.as_slice() else {
        bail!(
            "{}: expected one package directory with a DESCRIPTION",
            tarball.display()
        );
    };
    let desc = parse_dcf(&fs::read_to_string(pkg.join("DESCRIPTION"))?);
    let field = |f: &str| {
        desc.get(f)
            .cloned()
            .ok_or_else(|| anyhow!("{}: DESCRIPTION has no {f}", tarball.display()))
    };
    let name = field("Package")?;
    if pkg.file_name().and_then(|n| n.to_str()) != Some(name.as_str()) {
        bail!("{}: its directory is not named {name}", tarball.display());
    }
    Ok(Source {
        version: field("Version")?,
        needs: needs(&desc),
        name,
        dir: pkg.clone(),
    })
}

/// Dependencies first; a cycle among the given sources is an error.
fn build_order(sources: &[Source]) -> anyhow::Result<Vec<usize>> {
    let index: BTreeMap<&str, usize> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut order = Vec::new();
    let mut state = vec![0u8; sources.len()]; // 0 new, 1 visiting, 2 done
    fn visit(
        i: usize,
        sources: &[Source],
        index: &BTreeMap<&str, usize>,
        state: &mut [u8],
        order: &mut Vec<usize>,
    ) -> anyhow::Result<()> {
        match state[i] {
            2 => return Ok(()),
            1 => bail!("dependency cycle through {}", sources[i].name),
            _ => {}
        }
        state[i] = 1;
        for dep in &sources[i].needs {
            if let Some(&j) = index.get(dep.as_str()) {
                visit(j, sources, index, state, order)?;
            }
        }
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..sources.len() {
        visit(i, sources, &index, &mut state, &mut order)?;
    }
    Ok(order)
}

fn build_one(
    args: &BuildArgs,
    tc: &Toolchain,
    contrib: &Path,
    src: &Source,
    work: &Path,
) -> anyhow::Result<PathBuf> {
    let _ = fs::remove_dir_all(work);
    // Outside the sandbox's writable mount: the R half gets them as a
    // package set, checked and mounted read-only like any other.
    let deps = work.with_extension("deps");
    let _ = fs::remove_dir_all(&deps);
    let lib = work.join("lib");
    let libs_out = work.join("libs");
    for d in [&deps, &lib, &libs_out] {
        fs::create_dir_all(d)?;
    }
    // The sandbox sees the work directory only; the source goes in it.
    let pkg_src = work.join("src").join(&src.name);
    fs::create_dir_all(work.join("src"))?;
    run_quiet(
        Command::new("cp").arg("-a").arg(&src.dir).arg(&pkg_src),
        "copy the source",
    )?;
    let repo = read_repo(contrib)?;
    let dep_names = closure(&src.needs, &repo);
    for dep in &dep_names {
        let entry = &repo[dep];
        run_quiet(
            Command::new("tar")
                .arg("-xzf")
                .arg(contrib.join(&entry.file))
                .arg("-C")
                .arg(&deps)
                .arg("--no-same-owner"),
            &format!("unpack {}", entry.file),
        )?;
    }
    let missing: Vec<&String> = src
        .needs
        .iter()
        .filter(|n| !BASE.contains(&n.as_str()) && !repo.contains_key(*n))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "hako pkg build: {}: not in the repository (the build may need them): {}",
            src.name,
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let log = work.join("build.log");
    if pkg_src.join("src").is_dir() {
        eprintln!("hako pkg build: {}: configure and compile (host)", src.name);
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(COMPILE)
            .arg("hako-compile")
            .env("TC", &tc.dir)
            .env("PKGDIR", &pkg_src)
            .env("WORK", work.join("host"))
            .env("DEPS", &deps)
            .env("OUTLIB", &libs_out)
            .env("JOBS", args.jobs.to_string());
        run_logged(&mut cmd, &log, "compile")?;
        translate_modules(tc, &libs_out.join(&src.name).join("libs"))?;
    }

    eprintln!(
        "hako pkg build: {}: R code, lazy-load database, help (sandbox)",
        src.name
    );
    let job = work.join("job.R");
    fs::write(
        &job,
        format!(
            "hako_name <- \"{}\"\nhako_src <- \"/w/src/{}\"\nhako_lib <- \"/w/lib\"\n{INSTALL_R}",
            src.name, src.name
        ),
    )?;
    let mut set: Vec<PathBuf> = dep_names.iter().map(|d| deps.join(d)).collect();
    let mut cmd = sandbox_eval(args, &set)?;
    cmd.arg("--mount")
        .arg(format!("{}:/w:rw", work.display()))
        .arg("-f")
        .arg(&job);
    let out = run_logged(&mut cmd, &log, "R half")?;
    if !out.contains("hako-build: R half done") {
        bail!(
            "the R half did not finish: {}\n{}",
            first_error(&out),
            tail(&out)
        );
    }

    let installed = lib.join(&src.name);
    let built_libs = libs_out.join(&src.name).join("libs");
    if built_libs.is_dir() {
        run_quiet(
            Command::new("cp")
                .arg("-a")
                .arg(&built_libs)
                .arg(installed.join("libs")),
            "copy libs",
        )?;
    }
    if !args.no_test_load {
        eprintln!("hako pkg build: {}: test load (sandbox)", src.name);
        set.push(installed.clone());
        let mut cmd = sandbox_eval(args, &set)?;
        cmd.arg(format!(
            "invisible(loadNamespace(\"{}\")); cat(\"hako-build: test load ok\\n\")",
            src.name
        ));
        let out = run_logged(&mut cmd, &log, "test load")?;
        if !out.contains("hako-build: test load ok") {
            bail!("test load failed: {}\n{}", first_error(&out), tail(&out));
        }
    }
    let file = format!("{}_{}.tgz", src.name, src.version);
    let tmp = contrib.join(format!(".{file}.tmp"));
    run_quiet(
        Command::new("tar")
            .arg("-czf")
            .arg(&tmp)
            .arg("--owner=0")
            .arg("--group=0")
            .arg("--numeric-owner")
            .arg("--sort=name")
            .arg("-C")
            .arg(&lib)
            .arg(&src.name),
        "pack the binary",
    )?;
    // A new version replaces the old one's binary.
    for old in fs::read_dir(contrib)?.filter_map(|e| e.ok()) {
        let n = old.file_name().to_string_lossy().to_string();
        if n.starts_with(&format!("{}_", src.name)) && n.ends_with(".tgz") && n != file {
            let _ = fs::remove_file(old.path());
        }
    }
    let dest = contrib.join(&file);
    fs::rename(&tmp, &dest)?;
    Ok(dest)
}

/// `hako eval` in a sandbox given `set` (installed package directories) as
/// its package set, with the build's memory cap and assets.
fn sandbox_eval(args: &BuildArgs, set: &[PathBuf]) -> anyhow::Result<Command> {
    // This very binary, even if a rebuild replaced the file meanwhile.
    let exe = match Path::new("/proc/self/exe") {
        p if p.exists() => p.to_path_buf(),
        _ => std::env::current_exe().context("find the hako binary")?,
    };
    let mut cmd = Command::new(exe);
    cmd.arg("eval").arg("--memory").arg(args.memory.to_string());
    if !set.is_empty() {
        let dirs: Vec<String> = set.iter().map(|d| d.display().to_string()).collect();
        cmd.arg("--packages").arg(dirs.join(","));
    }
    if let Some(a) = &args.assets {
        cmd.arg("--assets").arg(a);
    }
    Ok(cmd)
}

/// Translates every side module in `libs` that uses legacy exception
/// handling to exnref (wasmtime runs only the latter), and checks it.
fn translate_modules(tc: &Toolchain, libs: &Path) -> anyhow::Result<()> {
    let Ok(entries) = fs::read_dir(libs) else {
        return Ok(());
    };
    for e in entries.filter_map(|e| e.ok()) {
        let path = e.path();
        let bytes = fs::read(&path)?;
        if !hako_assets::wasm::is_wasm(&bytes) {
            continue;
        }
        let name = path.display().to_string();
        if hako_assets::wasm::has_legacy_eh(&name, &bytes)? {
            let out = path.with_extension("exnref");
            run_quiet(
                Command::new(tc.bin("wasm-opt-exnref"))
                    .arg(&path)
                    .arg("-o")
                    .arg(&out),
                "translate to exnref",
            )?;
            fs::rename(&out, &path)?;
        }
        let bytes = fs::read(&path)?;
        hako_assets::wasm::validate_exnref(&bytes)
            .map_err(|e| anyhow!("{}: not a valid exnref module: {e}", path.display()))?;
    }
    Ok(())
}

/// A binary in the repository.
struct RepoEntry {
    file: String,
    fields: BTreeMap<String, String>,
}

/// The repository's binaries, by package name, read from each `.tgz`'s
/// DESCRIPTION.
fn read_repo(contrib: &Path) -> anyhow::Result<BTreeMap<String, RepoEntry>> {
    let mut repo = BTreeMap::new();
    let mut files: Vec<String> = fs::read_dir(contrib)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tgz") && !n.starts_with('.'))
        .collect();
    files.sort();
    for file in files {
        let Some((name, _)) = file.split_once('_') else {
            continue;
        };
        let out = Command::new("tar")
            .arg("-xzOf")
            .arg(contrib.join(&file))
            .arg(format!("{name}/DESCRIPTION"))
            .output()
            .with_context(|| format!("run tar on {file}"))?;
        if !out.status.success() {
            bail!("{file}: no {name}/DESCRIPTION inside");
        }
        let fields = parse_dcf(&String::from_utf8_lossy(&out.stdout));
        repo.insert(name.to_string(), RepoEntry { file, fields });
    }
    Ok(repo)
}

/// Everything `needs` reaches through Depends, Imports and LinkingTo within
/// the repository.
fn closure(needs: &BTreeSet<String>, repo: &BTreeMap<String, RepoEntry>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = needs.iter().cloned().collect();
    while let Some(n) = todo.pop() {
        if let Some(e) = repo.get(&n) {
            if seen.insert(n) {
                todo.extend(needs_of(&e.fields));
            }
        }
    }
    seen
}

fn needs(desc: &BTreeMap<String, String>) -> BTreeSet<String> {
    needs_of(desc)
}

fn needs_of(desc: &BTreeMap<String, String>) -> BTreeSet<String> {
    ["Depends", "Imports", "LinkingTo"]
        .iter()
        .filter_map(|f| desc.get(*f))
        .flat_map(|v| dep_names(v))
        .filter(|n| !BASE.contains(&n.as_str()))
        .collect()
}

/// Package names of a dependency field (`a (>= 1.0), b`).
pub fn dep_names(field: &str) -> Vec<String> {
    field
        .split(',')
        .map(|d| d.split('(').next().unwrap_or("").trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// A DESCRIPTION-style file: `Field: value` with indented continuation
/// lines, folded to single spaces.
pub fn parse_dcf(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(k) = &current {
                let v: &mut String = out.get_mut(k).expect("current field exists");
                let t = line.trim();
                if !t.is_empty() {
                    if !v.is_empty() {
                        v.push(' ');
                    }
                    v.push_str(t);
                }
            }
        } else if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_string();
            out.insert(k.clone(), v.trim().to_string());
            current = Some(k);
        }
    }
    out
}

/// Rewrites `PACKAGES`, `PACKAGES.gz` and `PACKAGES.rds` from the binaries
/// present, with `MD5sum` (what R's `available.packages` checks) and
/// `SHA256sum`.
fn write_index(contrib: &Path) -> anyhow::Result<()> {
    let repo = read_repo(contrib)?;
    let mut text = String::new();
    for (name, e) in &repo {
        let path = contrib.join(&e.file);
        let bytes = fs::read(&path)?;
        for f in INDEX_FIELDS {
            if let Some(v) = e.fields.get(*f) {
                let _ = writeln!(text, "{f}: {v}");
            }
        }
        let _ = writeln!(text, "MD5sum: {}", md5_hex(&path)?);
        let _ = writeln!(text, "SHA256sum: {}", hex::encode(Sha256::digest(&bytes)));
        if e.fields.get("Package") != Some(name) {
            bail!("{}: its DESCRIPTION names another package", e.file);
        }
        text.push('\n');
    }
    let tmp = contrib.join(".PACKAGES.tmp");
    fs::write(&tmp, &text)?;
    fs::rename(&tmp, contrib.join("PACKAGES"))?;
    let gz = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .arg(contrib.join("PACKAGES"))
        .output()
        .context("run gzip")?;
    if !gz.status.success() {
        bail!("gzip PACKAGES failed");
    }
    let tmp = contrib.join(".PACKAGES.gz.tmp");
    fs::write(&tmp, &gz.stdout)?;
    fs::rename(&tmp, contrib.join("PACKAGES.gz"))?;
    // PACKAGES.rds, which R's available.packages() reads first: the same
    // records as a character matrix, as tools::write_PACKAGES saves them
    // (the host's R, which the compile half needs anyway).
    let tmp = contrib.join(".PACKAGES.rds.tmp");
    run_quiet(
        Command::new("Rscript")
            .arg("--vanilla")
            .arg("-e")
            .arg("a <- commandArgs(TRUE); saveRDS(read.dcf(a[1]), a[2], compress = 'xz')")
            .arg(contrib.join("PACKAGES"))
            .arg(&tmp),
        "write PACKAGES.rds with Rscript",
    )?;
    fs::rename(&tmp, contrib.join("PACKAGES.rds"))?;
    Ok(())
}

/// MD5 through coreutils' md5sum (present wherever tar and gzip are).
fn md5_hex(path: &Path) -> anyhow::Result<String> {
    let out = Command::new("md5sum")
        .arg(path)
        .output()
        .context("run md5sum")?;
    let s = String::from_utf8_lossy(&out.stdout);
    let h = s.split_whitespace().next().unwrap_or("");
    if !out.status.success() || h.len() != 32 {
        bail!("md5sum {} failed", path.display());
    }
    Ok(h.to_string())
}

fn run_quiet(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot start"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `cmd` with its output appended to `log` and returned; on failure
/// the error carries the output's tail.
fn run_logged(cmd: &mut Command, log: &Path, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot start"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let mut f = fs::OpenOptions::new().create(true).append(true).open(log)?;
    f.write_all(text.as_bytes())?;
    if std::env::var_os("HAKO_BUILD_VERBOSE").is_some() {
        eprint!("{text}");
    }
    if !out.status.success() {
        bail!("{what} failed: {}\n{}", first_error(&text), tail(&text));
    }
    Ok(text)
}

/// The first line of a log that reports an error (a compiler's, R's, the
/// dynamic linker's): what a one-line summary of a failed build says.
fn first_error(log: &str) -> &str {
    log.lines()
        .map(str::trim)
        .find(|l| {
            l.contains("error:")
                || l.starts_with("ERROR")
                || l.starts_with("Error")
                || l.contains("undefined symbols")
        })
        .unwrap_or("see the log below")
}

/// The last lines of a log: where build errors are.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcf_and_dependencies() {
        let d = parse_dcf(
            "Package: vctrs\nVersion: 0.6.5\nDepends: R (>= 3.5.0)\nImports: cli (>= 3.4.0), glue,\n    lifecycle (>= 1.0.3), rlang\n    (>= 1.1.0)\nLinkingTo: cpp11\n",
        );
        assert_eq!(
            d["Imports"],
            "cli (>= 3.4.0), glue, lifecycle (>= 1.0.3), rlang (>= 1.1.0)"
        );
        let n: Vec<String> = needs(&d).into_iter().collect();
        assert_eq!(n, ["cli", "cpp11", "glue", "lifecycle", "rlang"]);
    }

    #[test]
    fn failure_summary_is_the_first_error_line() {
        let log = "gcc -c a.c\nwarning: x\na.c:3:1: error: use of undeclared identifier 'Rf_findVar'\nb.c: error: y\n";
        assert_eq!(
            first_error(log),
            "a.c:3:1: error: use of undeclared identifier 'Rf_findVar'"
        );
        assert_eq!(first_error("nothing\n"), "see the log below");
    }

    #[test]
    fn scratch_of_dead_builds_is_swept_and_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let live = d.path().join(format!("build-{}", std::process::id()));
        // No process has pid u32::MAX - 1 (above Linux's pid_max).
        let dead = d.path().join(format!("build-{}", u32::MAX - 1));
        let other = d.path().join("build-notapid");
        for p in [&live, &dead, &other] {
            fs::create_dir_all(p.join("src-0")).unwrap();
        }
        sweep_scratch(d.path());
        assert!(live.exists() && other.exists());
        assert!(!dead.exists());
    }

    #[test]
    fn order_puts_dependencies_first_and_refuses_cycles() {
        let s = |name: &str, needs: &[&str]| Source {
            name: name.into(),
            version: "1".into(),
            dir: PathBuf::new(),
            needs: needs.iter().map(|n| n.to_string()).collect(),
        };
        let v = vec![
            s("purrr", &["rlang", "vctrs"]),
            s("vctrs", &["rlang"]),
            s("rlang", &[]),
        ];
        let o: Vec<&str> = build_order(&v)
            .unwrap()
            .iter()
            .map(|&i| v[i].name.as_str())
            .collect();
        assert_eq!(o, ["rlang", "vctrs", "purrr"]);
        let c = vec![s("a", &["b"]), s("b", &["a"])];
        assert!(build_order(&c).is_err());
    }
}
