//! The real thing: `npm pack` webR and binaryen, translate R.wasm under Node,
//! unpack the rootfs. Needs node and npm (npm's cache suffices offline).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use hako_assets::wasm::{embedded_files, has_legacy_eh, validate_exnref};
use hako_assets::Assets;

fn fetch_logged(dir: &Path) -> (Assets, Vec<String>, Duration) {
    let started = Instant::now();
    let mut msgs = Vec::new();
    let assets = Assets::fetch(dir, &mut |m| {
        eprintln!("[{:5.1} s] {m}", started.elapsed().as_secs_f64());
        msgs.push(m.to_string());
    })
    .unwrap_or_else(|e| panic!("fetch failed: {e}"));
    (assets, msgs, started.elapsed())
}

fn built(msgs: &[String]) -> bool {
    msgs.iter().any(|m| m.contains("translated R.wasm"))
}

#[test]
fn fetch_builds_verifies_and_reuses_real_webr_assets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("webr-0.6.0");

    // Two fetches race for an empty dir: one builds, the other waits and reuses.
    let (first, second) = std::thread::scope(|s| {
        let a = s.spawn(|| fetch_logged(&dir));
        let b = s.spawn(|| fetch_logged(&dir));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(first.0.id(), second.0.id());
    assert!(
        built(&first.1) != built(&second.1),
        "exactly one builds: {first:?} {second:?}"
    );
    let assets = first.0;

    // R.wasm is exnref wasm that wasmtime accepts, and the manifest says so.
    let r_wasm = fs::read(assets.r_wasm()).unwrap();
    validate_exnref(&r_wasm).unwrap();
    assert!(!has_legacy_eh("R.wasm", &r_wasm).unwrap());
    let files = &assets.manifest().files;
    assert_eq!(files["R.wasm"].translated, Some(true));
    for lib in ["libRblas.so", "libRlapack.so"] {
        let bytes = fs::read(assets.lib_dir().join(lib)).unwrap();
        assert!(!has_legacy_eh(lib, &bytes).unwrap(), "{lib}");
        assert!(files[&format!("lib/{lib}")].translated.is_some(), "{lib}");
    }

    // Data sections survive translation byte for byte, so the embedded files
    // read from the translated module must all be in the rootfs.
    let embedded = embedded_files(&r_wasm).unwrap();
    assert_eq!(embedded.len(), 196);
    assert_eq!(
        embedded.iter().map(|f| f.data.len()).sum::<usize>(),
        11_444_564
    );
    let rootfs = assets.rootfs();
    for f in &embedded {
        let on_disk = fs::read(rootfs.join(&f.path[1..])).unwrap();
        assert!(on_disk == f.data, "{} differs", f.path);
    }
    for guest in [
        "usr/lib/R/etc/Renviron",
        "usr/lib/R/library/base/R/base",
        "usr/lib/R/share/zoneinfo/Europe/London",
        "usr/lib/R/library/parallel/DESCRIPTION",
        "usr/lib/R/library/parallel/libs/parallel.so",
        "usr/lib/R/library/grDevices/afm/Helvetica.afm.gz",
        "usr/lib/R/library/grDevices/enc/WinAnsi.enc",
    ] {
        assert!(rootfs.join(guest).is_file(), "{guest} missing");
    }

    // Warm: verified and reused, no npm, no translation.
    let (again, msgs, took) = fetch_logged(&dir);
    assert_eq!(again.id(), assets.id());
    assert!(msgs.iter().any(|m| m.contains("reusing")), "{msgs:?}");
    assert!(
        !msgs
            .iter()
            .any(|m| m.contains("npm") || m.contains("translat")),
        "{msgs:?}"
    );
    assert!(took < Duration::from_secs(5), "warm fetch took {took:?}");

    // Damaged: a corrupted file is noticed and the dir rebuilt in place.
    let victim = rootfs.join("usr/lib/R/etc/Renviron");
    let mut bytes = fs::read(&victim).unwrap();
    bytes[0] ^= 1;
    fs::write(&victim, bytes).unwrap();
    let (rebuilt, msgs, _) = fetch_logged(&dir);
    assert!(
        msgs.iter()
            .any(|m| m.contains("rebuilding") && m.contains("usr/lib/R/etc/Renviron")),
        "{msgs:?}"
    );
    assert!(built(&msgs), "{msgs:?}");
    assert_eq!(rebuilt.id(), assets.id(), "builds are reproducible");
    Assets::verify(&dir).unwrap();
    let siblings: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        siblings.len(),
        2,
        "only the dir and its lock remain: {siblings:?}"
    );
}
