//! Translating legacy-EH modules to exnref with binaryen.js's wasm-opt under
//! Node, several at a time, validating each result.

use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use crate::error::AssetError;
use crate::npm::tail;
use crate::wasm::validate_exnref;

/// wasm-opt flags: enable what the input uses (reference types are needed for
/// exnref), then rewrite `try`/`catch`/`delegate`/`rethrow` as `try_table`/`throw_ref`.
pub const WASM_OPT_FLAGS: &[&str] = &[
    "--enable-exception-handling",
    "--enable-reference-types",
    "--enable-bulk-memory",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--translate-to-exnref",
];

/// A module to translate: a display name, its bytes, and wasm-opt flags
/// beyond [`WASM_OPT_FLAGS`] (package side modules from emcc 3.1.x need
/// `--enable-multivalue` where they catch exceptions; R.wasm's flags stay as
/// they were, so its translation, and every cache keyed by it, is unchanged).
pub struct Job {
    pub name: String,
    pub input: Vec<u8>,
    pub extra_flags: &'static [&'static str],
}

/// Translates every job with `node <wasm_opt>`, up to one process per core,
/// and returns the validated outputs in job order.
pub fn translate_all(
    wasm_opt: &Path,
    work: &Path,
    jobs: &[Job],
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Vec<u8>>, AssetError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len());
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<Result<Vec<u8>, AssetError>>> = jobs.iter().map(|_| None).collect();
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let tx = tx.clone();
            let next = &next;
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let started = Instant::now();
                let result = translate_one(wasm_opt, work, i, job);
                if tx.send((i, result, started.elapsed())).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (i, result, took) in rx {
            if result.is_ok() {
                progress(&format!(
                    "translated {} to exnref in {:.1} s",
                    jobs[i].name,
                    took.as_secs_f64()
                ));
            }
            results[i] = Some(result);
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every job reports exactly once"))
        .collect()
}

fn translate_one(wasm_opt: &Path, work: &Path, i: usize, job: &Job) -> Result<Vec<u8>, AssetError> {
    let err = |detail: String| AssetError::Translate {
        module: job.name.clone(),
        detail,
    };
    let input = work.join(format!("translate-{i}.in.wasm"));
    let output = work.join(format!("translate-{i}.out.wasm"));
    fs::write(&input, &job.input).map_err(AssetError::io("write", &input))?;
    let run = Command::new("node")
        .arg(wasm_opt)
        .args(WASM_OPT_FLAGS)
        .args(job.extra_flags)
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .output()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                err("`node` is not on PATH (binaryen's wasm-opt runs under Node.js)".into())
            } else {
                err(format!("cannot run node: {e}"))
            }
        })?;
    let _ = fs::remove_file(&input);
    if !run.status.success() {
        let _ = fs::remove_file(&output);
        return Err(err(format!(
            "wasm-opt exited with {}: {}",
            run.status,
            tail(&String::from_utf8_lossy(&run.stderr))
        )));
    }
    let bytes = fs::read(&output).map_err(|e| err(format!("wasm-opt wrote no output: {e}")))?;
    let _ = fs::remove_file(&output);
    validate_exnref(&bytes)
        .map_err(|e| err(format!("the result does not validate as exnref wasm: {e}")))?;
    Ok(bytes)
}
