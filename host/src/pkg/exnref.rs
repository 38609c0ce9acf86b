//! Side modules built with the legacy exception encoding (`try`/`catch`,
//! what emcc 3.1.x emits) are translated once, at install time, with
//! binaryen's `wasm-opt --translate-to-exnref`, exactly as webr-assets does
//! for R.wasm: the same pinned, integrity-checked binaryen from npm, run
//! under Node. binaryen is unpacked once into hako's cache
//! (`binaryen-<version>/`) and only fetched when a package needs it.

use anyhow::Context;
use hako_assets::{npm, tarball, translate, TarballSources, BINARYEN_VERSION};
use std::path::{Path, PathBuf};

/// Where binaryen.js keeps wasm-opt inside its tarball.
const WASM_OPT: &str = "package/bin/wasm-opt";

/// A module to translate: its path in the package and its bytes.
pub struct Legacy {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Translates `modules` to exnref; returns the validated results in order.
pub fn translate(modules: Vec<Legacy>, work: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let wasm_opt = wasm_opt(work)?;
    let jobs: Vec<translate::Job> = modules
        .into_iter()
        .map(|m| translate::Job {
            name: m.name,
            input: m.bytes,
            // emcc 3.1.x modules that catch exceptions return several values
            // from their landing pads: wasm-opt must be allowed multivalue.
            extra_flags: &["--enable-multivalue"],
        })
        .collect();
    let mut say = |m: &str| eprintln!("hako pkg: {m}");
    Ok(translate::translate_all(&wasm_opt, work, &jobs, &mut say)?)
}

/// binaryen's wasm-opt, unpacked into the cache on first use.
fn wasm_opt(work: &Path) -> anyhow::Result<PathBuf> {
    let dir = crate::paths::cache_dir().join(format!("binaryen-{BINARYEN_VERSION}"));
    let exe = dir.join(WASM_OPT);
    if exe.is_file() {
        return Ok(exe);
    }
    let mut say = |m: &str| eprintln!("hako pkg: {m}");
    let tgz = npm::obtain(
        &npm::BINARYEN,
        TarballSources::from_env().binaryen.as_deref(),
        work,
        &mut say,
    )?;
    // Unpack beside the final place, then rename: a killed unpack leaves no
    // half a binaryen behind that the `is_file` check above would accept.
    let parent = dir.parent().context("the cache dir has no parent")?;
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(
        "binaryen-{BINARYEN_VERSION}.tmp-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    tarball::extract_tgz(&npm::BINARYEN.spec(), &tgz, &tmp, |_| true)?;
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        if !exe.is_file() {
            return Err(e).with_context(|| format!("moving binaryen to {}", dir.display()));
        }
    }
    Ok(exe)
}
