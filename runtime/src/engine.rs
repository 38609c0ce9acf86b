//! The wasmtime engine hako runs R on, and the on-disk cache of compiled code.
//!
//! Cranelift needs ~25 s on two cores for R.wasm, so every module is compiled
//! once and its machine code kept on disk, keyed by everything that makes the
//! code valid: wasmtime's version, the engine's settings and the module's
//! bytes. An entry whose checksum does not match is rebuilt, never loaded.

use crate::memory::SnapshotMemoryCreator;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use wasmtime::error::{Context, Result};
use wasmtime::{Config, Engine, Module};

/// Native stack wasm may use. R needs ~1 KB of wasm stack per R call level and
/// R's own C-stack check stops recursion well before this.
pub const MAX_WASM_STACK: usize = 8 << 20;

/// Modules at least this large (bytes) have their compilation reported as
/// progress: it takes seconds to minutes.
const REPORTED_COMPILE: usize = 4 << 20;

/// An engine plus a process-wide table of compiled modules, shared by every
/// sandbox of the process.
#[derive(Clone)]
pub struct HakoEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: Engine,
    cache_dir: PathBuf,
    fingerprint: String,
    modules: Mutex<HashMap<String, Module>>,
}

impl HakoEngine {
    /// Build the engine. `cache_dir` holds compiled code and pristine snapshots.
    pub fn new(cache_dir: &Path) -> Result<Self> {
        let mut config = Config::new();
        // R.wasm's setjmp/longjmp, after translation to the standard encoding.
        config.wasm_exceptions(true);
        config.wasm_reference_types(true);
        config.wasm_bulk_memory(true);
        config.max_wasm_stack(MAX_WASM_STACK);
        // Checked against the stack size even without async support.
        config.async_stack_size(MAX_WASM_STACK + (1 << 20));
        // The deadline backstop: a trap at the next epoch check once R's own
        // interrupt has not stopped it.
        config.epoch_interruption(true);
        // Linear memories come from our creator so that a pristine image can
        // back them copy-on-write; wasmtime's own CoW images cannot be used
        // with a custom creator.
        config.memory_init_cow(false);
        config.with_host_memory(Arc::new(SnapshotMemoryCreator));
        config.parallel_compilation(true);
        let engine = Engine::new(&config).context("creating the wasmtime engine")?;

        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let fingerprint = format!(
            "wasmtime-{}-{:016x}-stack{}",
            wasmtime_version(),
            h.finish(),
            MAX_WASM_STACK
        );
        std::fs::create_dir_all(cache_dir)
            .with_context(|| format!("creating cache directory {}", cache_dir.display()))?;
        Ok(HakoEngine {
            inner: Arc::new(EngineInner {
                engine,
                cache_dir: cache_dir.to_path_buf(),
                fingerprint,
                modules: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn cache_dir(&self) -> &Path {
        &self.inner.cache_dir
    }

    /// Identifies engine settings: part of every cache key.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }

    /// The compiled module for `bytes`, from memory, from disk, or compiled now.
    /// `content_id` must identify `bytes` (e.g. their sha256).
    pub fn module(
        &self,
        content_id: &str,
        bytes: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Module> {
        let key = cache_key(&self.inner.fingerprint, content_id);
        if let Some(m) = self.inner.modules.lock().unwrap().get(&key) {
            return Ok(m.clone());
        }
        let module = self.load_or_compile(&key, bytes)?;
        self.inner
            .modules
            .lock()
            .unwrap()
            .insert(key, module.clone());
        Ok(module)
    }

    fn load_or_compile(
        &self,
        key: &str,
        bytes: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Module> {
        let dir = self.inner.cache_dir.join("compiled");
        let path = dir.join(format!("{key}.cwasm"));
        let sum_path = dir.join(format!("{key}.sha256"));
        if let Some(module) = self.try_load(&path, &sum_path) {
            return Ok(module);
        }
        let wasm = bytes()?;
        let compile = || Module::new(&self.inner.engine, &wasm);
        // Only R.wasm is large enough to keep a first start waiting.
        let module = if wasm.len() >= REPORTED_COMPILE {
            let what = format!(
                "compiling {:.0} MB of WebAssembly to machine code (once)",
                wasm.len() as f64 / 1e6
            );
            crate::progress::step(&what, compile)
        } else {
            compile()
        }
        .context("compiling wasm module")?;
        let serialized = module.serialize()?;
        std::fs::create_dir_all(&dir)?;
        let sum = hex::encode(Sha256::digest(&serialized));
        // Write code then checksum, each atomically: a reader that sees the
        // checksum sees complete code.
        write_atomic(&path, &serialized)?;
        write_atomic(&sum_path, sum.as_bytes())?;
        Ok(module)
    }

    /// A cached module, only if its checksum matches what was written.
    fn try_load(&self, path: &Path, sum_path: &Path) -> Option<Module> {
        let want = std::fs::read_to_string(sum_path).ok()?;
        let bytes = std::fs::read(path).ok()?;
        if hex::encode(Sha256::digest(&bytes)) != want.trim() {
            return None;
        }
        // SAFETY: the file was produced by `Module::serialize` of this engine
        // configuration (the key includes its compatibility hash) and its
        // checksum matches what we wrote, so it is not truncated or corrupted.
        // The cache directory is the user's own, trusted like the binary.
        // Mapped from the file, not copied: a process keeps resident only
        // the code it runs (~32 MB of R.wasm's code were copied whole into
        // every daemon), and processes share it in the page cache. A cache
        // file is only ever replaced by rename, so the checked one stays.
        drop(bytes);
        unsafe { Module::deserialize_file(&self.inner.engine, path) }.ok()
    }
}

fn cache_key(fingerprint: &str, content_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(fingerprint.as_bytes());
    h.update([0]);
    h.update(content_id.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The wasmtime version compiled in (from Cargo metadata of this build).
pub fn wasmtime_version() -> &'static str {
    "48.0.8"
}

/// An exclusive advisory lock held until the returned file is dropped.
pub fn lock_file(path: &Path) -> Result<std::fs::File> {
    hako_assets::lock_file(path, || {}).with_context(|| format!("locking {}", path.display()))
}

/// Write a file so that readers see either the old or the whole new content.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn cached_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("compiled"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn corrupted_cache_entry_is_rebuilt_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let e = HakoEngine::new(dir.path()).unwrap();
        e.module("empty", || Ok(EMPTY_MODULE.to_vec())).unwrap();
        let files = cached_files(dir.path());
        let cwasm = files
            .iter()
            .find(|p| p.extension().unwrap() == "cwasm")
            .unwrap();
        let good = std::fs::read(cwasm).unwrap();
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        std::fs::write(cwasm, &bad).unwrap();

        // A fresh engine (no in-memory copy) must not load the corrupted code:
        // it recompiles, which calls the byte source again.
        let e2 = HakoEngine::new(dir.path()).unwrap();
        let mut recompiled = false;
        e2.module("empty", || {
            recompiled = true;
            Ok(EMPTY_MODULE.to_vec())
        })
        .unwrap();
        assert!(recompiled);
        assert_eq!(std::fs::read(cwasm).unwrap(), good);

        // An intact entry is loaded without compiling.
        let e3 = HakoEngine::new(dir.path()).unwrap();
        e3.module("empty", || panic!("should come from the cache"))
            .unwrap();
    }

    #[test]
    fn keys_differ_by_content_and_engine() {
        assert_ne!(cache_key("a", "x"), cache_key("b", "x"));
        assert_ne!(cache_key("a", "x"), cache_key("a", "y"));
    }
}
