//! The build behind `Assets::fetch`: tarballs in, a complete asset dir out.

use std::path::Path;
use std::time::Instant;

use crate::error::AssetError;
use crate::manifest::Manifest;
use crate::npm::{self, BINARYEN, WEBR};
use crate::tarball::{extract_tgz, read_tgz};
use crate::translate::{translate_all, Job};
use crate::vfs_image::{ImageMetadata, SHIPPED_IMAGES};
use crate::wasm::{embedded_files, has_legacy_eh, is_wasm};
use crate::TarballSources;

/// Top-level modules taken from `package/dist`: (path in the tarball, path in the asset dir).
const DIST_MODULES: &[(&str, &str)] = &[
    ("package/dist/R.wasm", "R.wasm"),
    ("package/dist/libRblas.so", "lib/libRblas.so"),
    ("package/dist/libRlapack.so", "lib/libRlapack.so"),
];
const VFS_PREFIX: &str = "package/dist/vfs/";
/// Where binaryen.js keeps wasm-opt (a Node script) inside its tarball.
const WASM_OPT: &str = "package/bin/wasm-opt";

/// One file of the asset dir, still in memory.
struct Output {
    rel: String,
    data: Vec<u8>,
    translated: Option<bool>,
}

/// Builds a complete asset dir in `out` (empty), using `work` for scratch.
/// Writes `manifest.json` last.
pub(crate) fn build(
    out: &Path,
    work: &Path,
    sources: &TarballSources,
    progress: &mut dyn FnMut(&str),
) -> Result<(), AssetError> {
    let webr_spec = WEBR.spec();
    let tgz = npm::obtain(&WEBR, sources.webr.as_deref(), work, progress)?;
    let mut entries = read_tgz(&webr_spec, &tgz, wanted_webr_entry)?;
    drop(tgz);
    let mut take = |path: &str| {
        entries
            .remove(path)
            .ok_or_else(|| AssetError::MissingFromPackage {
                package: webr_spec.clone(),
                path: path.to_string(),
            })
    };

    let mut outputs = Vec::new();
    for (from, to) in DIST_MODULES {
        outputs.push(Output {
            rel: to.to_string(),
            data: take(from)?,
            translated: None,
        });
    }

    let embedded = embedded_files(&outputs[0].data)?;
    let n_embedded = embedded.len();
    outputs.extend(embedded.into_iter().map(|f| rootfs_output(&f.path, f.data)));

    let mut unpacked = 0;
    for (image, _why) in SHIPPED_IMAGES {
        let base = format!("{VFS_PREFIX}{image}");
        let meta = ImageMetadata::parse(image, &take(&format!("{base}.js.metadata"))?)?;
        let files = meta.unpack(image, &take(&format!("{base}{}", meta.data_suffix()))?)?;
        unpacked += files.len();
        outputs.extend(files.into_iter().map(|f| rootfs_output(&f.path, f.data)));
    }
    // One line for all: each takes milliseconds, and a first start shows it.
    progress(&format!(
        "unpacked R's files ({n_embedded} from R.wasm, {unpacked} from {} images)",
        SHIPPED_IMAGES.len()
    ));

    translate_legacy_eh(&mut outputs, sources, work, progress)?;

    let mut manifest = Manifest::new();
    for o in &outputs {
        manifest.write_file(out, &o.rel, &o.data, o.translated)?;
    }
    manifest.write(out)?;
    Ok(())
}

/// The webR tarball entries the build reads.
fn wanted_webr_entry(path: &str) -> bool {
    DIST_MODULES.iter().any(|(from, _)| *from == path)
        || path.strip_prefix(VFS_PREFIX).is_some_and(|rest| {
            SHIPPED_IMAGES.iter().any(|(image, _)| {
                rest.strip_prefix(image)
                    .is_some_and(|s| matches!(s, ".js.metadata" | ".data.gz" | ".data"))
            })
        })
}

fn rootfs_output(guest_path: &str, data: Vec<u8>) -> Output {
    Output {
        rel: format!("rootfs{guest_path}"),
        data,
        translated: None,
    }
}

/// Scans every wasm module among `outputs`, translates those with legacy EH
/// (fetching binaryen only if needed) and marks each module's `translated`.
fn translate_legacy_eh(
    outputs: &mut [Output],
    sources: &TarballSources,
    work: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), AssetError> {
    let started = Instant::now();
    let mut legacy = Vec::new();
    let mut modules = 0;
    for (i, o) in outputs.iter_mut().enumerate() {
        if !is_wasm(&o.data) {
            continue;
        }
        modules += 1;
        let has = has_legacy_eh(&o.rel, &o.data)?;
        o.translated = Some(has);
        if has {
            legacy.push(i);
        }
    }
    let names: Vec<&str> = legacy.iter().map(|&i| outputs[i].rel.as_str()).collect();
    progress(&format!(
        "scanned {modules} wasm modules in {:.1} s; legacy exception handling in: {}",
        started.elapsed().as_secs_f64(),
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    ));
    if legacy.is_empty() {
        return Ok(());
    }

    let tgz = npm::obtain(&BINARYEN, sources.binaryen.as_deref(), work, progress)?;
    let binaryen_dir = work.join("binaryen");
    extract_tgz(&BINARYEN.spec(), &tgz, &binaryen_dir, |_| true)?;
    drop(tgz);
    let wasm_opt = binaryen_dir.join(WASM_OPT);
    if !wasm_opt.is_file() {
        return Err(AssetError::MissingFromPackage {
            package: BINARYEN.spec(),
            path: WASM_OPT.to_string(),
        });
    }

    let jobs: Vec<Job> = legacy
        .iter()
        .map(|&i| Job {
            name: outputs[i].rel.clone(),
            input: std::mem::take(&mut outputs[i].data),
            extra_flags: &[],
        })
        .collect();
    progress(&format!(
        "translating {} to exnref with binaryen's wasm-opt (takes a while)",
        names_of(&jobs)
    ));
    let translated = translate_all(&wasm_opt, work, &jobs, progress)?;
    for (&i, data) in legacy.iter().zip(translated) {
        outputs[i].data = data;
    }
    Ok(())
}

fn names_of(jobs: &[Job]) -> String {
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    names.join(", ")
}
