//! Shared helpers for hako's end-to-end tests: one real runtime per test
//! binary (real webR assets, real wasmtime), fresh sandboxes from it.

use hako_runtime::{Chunk, EvalResult, Runtime, Sandbox, SandboxConfig, SandboxError, Stream};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The runtime, on the verified assets (fetched if missing) and the user's
/// cache, like the `hako` binary uses.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let dir = hako_assets::Assets::default_dir();
        let assets = match hako_assets::Assets::open(&dir) {
            Ok(a) => a,
            Err(_) => hako_assets::Assets::fetch(&dir, &mut |m| eprintln!("assets: {m}"))
                .expect("fetching assets"),
        };
        Runtime::new(&assets, &cache_dir()).expect("creating the runtime")
    })
}

pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HAKO_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("hako")
}

pub fn sandbox() -> Sandbox {
    runtime()
        .sandbox(SandboxConfig::default())
        .expect("creating a sandbox")
}

pub fn sandbox_with(config: SandboxConfig) -> Sandbox {
    runtime().sandbox(config).expect("creating a sandbox")
}

/// Text of the chunks of `stream`.
pub fn text(chunks: &[Chunk], stream: Stream) -> String {
    chunks
        .iter()
        .filter(|c| c.stream == stream)
        .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
        .collect()
}

/// Evaluate and require success; returns stdout.
pub fn eval_ok(sb: &mut Sandbox, code: &str) -> String {
    match sb.eval(code) {
        Ok(EvalResult { ok: true, output }) => text(&output, Stream::Stdout),
        Ok(EvalResult { ok: false, output }) => panic!("R error for {code:?}: {output:?}"),
        Err(e) => panic!("sandbox error for {code:?}: {e}"),
    }
}

/// Evaluate, expect an R error; returns stderr.
pub fn eval_err(sb: &mut Sandbox, code: &str) -> String {
    match sb.eval(code) {
        Ok(EvalResult { ok: false, output }) => text(&output, Stream::Stderr),
        Ok(EvalResult { ok: true, output }) => {
            panic!("expected an R error for {code:?}, got {output:?}")
        }
        Err(e) => panic!("sandbox error for {code:?}: {e}"),
    }
}

/// Evaluate, expect a limit.
pub fn eval_limit(sb: &mut Sandbox, code: &str) -> (hako_runtime::Limit, Vec<Chunk>) {
    match sb.eval(code) {
        Err(SandboxError::Limit { limit, output }) => (limit, output),
        other => panic!("expected a limit for {code:?}, got {other:?}"),
    }
}

/// Native R's `Rscript`, when installed.
pub fn rscript() -> Option<PathBuf> {
    let out = std::process::Command::new("Rscript")
        .arg("--version")
        .output()
        .ok()?;
    out.status.success().then(|| PathBuf::from("Rscript"))
}
