//! The on-disk caches: a persisted pristine snapshot is reused by a new
//! runtime, and a corrupted one is detected and rebuilt, never used.

use hako_runtime::{Runtime, SandboxConfig};
use hako_tests::{cache_dir, eval_ok, runtime};

fn assets() -> hako_assets::Assets {
    runtime(); // makes sure assets and compiled code exist
    hako_assets::Assets::open(&hako_assets::Assets::default_dir()).unwrap()
}

/// A private cache holding a copy of the compiled code (so no test compiles
/// R.wasm again) and no snapshot.
fn private_cache() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("compiled");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(cache_dir().join("compiled")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    t
}

fn snapshot_image(cache: &std::path::Path) -> std::path::PathBuf {
    let dir = std::fs::read_dir(cache.join("pristine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .expect("a snapshot directory");
    dir.join("memory.img")
}

#[test]
fn snapshot_is_persisted_and_a_corrupted_one_is_rebuilt() {
    let assets = assets();
    let cache = private_cache();
    {
        let rt = Runtime::new(&assets, cache.path()).unwrap();
        let mut sb = rt.sandbox(SandboxConfig::default()).unwrap();
        assert_eq!(eval_ok(&mut sb, "cat(1 + 1)"), "2");
    }
    let img = snapshot_image(cache.path());
    let before = std::fs::metadata(&img).unwrap().modified().unwrap();

    // Corrupt one byte of R's heap image: the next runtime must notice and boot
    // R again rather than start from it.
    let mut bytes = std::fs::read(&img).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&img, &bytes).unwrap();
    let rt = Runtime::new(&assets, cache.path()).unwrap();
    let mut sb = rt.sandbox(SandboxConfig::default()).unwrap();
    assert_eq!(eval_ok(&mut sb, "cat(sum(1:10))"), "55");
    let rebuilt = std::fs::read(&img).unwrap();
    assert_ne!(
        rebuilt[mid], bytes[mid],
        "the corrupted image was rewritten"
    );
    assert!(std::fs::metadata(&img).unwrap().modified().unwrap() >= before);
}

#[test]
fn many_sandboxes_share_one_runtime() {
    let rt = runtime();
    let mut boxes: Vec<_> = (0..8)
        .map(|_| rt.sandbox(SandboxConfig::default()).unwrap())
        .collect();
    for (i, sb) in boxes.iter_mut().enumerate() {
        eval_ok(sb, &format!("x <- {i}"));
    }
    for (i, sb) in boxes.iter_mut().enumerate() {
        assert_eq!(eval_ok(sb, "cat(x)"), i.to_string());
    }
}

/// The compiled code is mapped from the cache file, not copied into each
/// process: a daemon keeps resident only the code it runs, and processes
/// share it (an idle daemon held ~32 MB of copied code before).
#[test]
fn compiled_code_is_mapped_from_the_cache() {
    let assets = assets();
    let cache = private_cache();
    let rt = Runtime::new(&assets, cache.path()).unwrap();
    let mut sb = rt.sandbox(SandboxConfig::default()).unwrap();
    assert_eq!(eval_ok(&mut sb, "cat(1 + 1)"), "2");
    let compiled = cache.path().join("compiled");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mapped = maps
        .lines()
        .filter(|l| l.contains(compiled.to_str().unwrap()))
        .count();
    assert!(mapped > 0, "no mapping of {}", compiled.display());
}
