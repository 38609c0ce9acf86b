//! The repository `hako pkg build` wrote for tests/wasm-repo.sh, checked as
//! a client sees it: the index lists every binary with checksums that
//! match, each binary is an installed package tree built by R 4.6 whose
//! side modules wasmtime can run, and the packages work in a real sandbox:
//! hakotest's C and C++ (exceptions, setjmp/longjmp, an R error from C, a
//! file it must not open) and purrr on top of rlang, vctrs and cli.
//!
//! The repository is `$HAKO_TEST_WASM_REPO` (tests/run.sh sets it), else the
//! script is run here (cached under a key, so only the first run builds).

use hako_runtime::packages::{InstalledPackage, PackageSet};
use hako_runtime::SandboxConfig;
use hako_tests::{eval_ok, sandbox_with};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

const CONTRIB: &str = "bin/emscripten/contrib/4.6";

/// What tests/wasm-repo.sh must always build.
const REQUIRED: &[&str] = &[
    "hakotest",
    "glue",
    "magrittr",
    "rlang",
    "cli",
    "digest",
    "Rcpp",
    "lifecycle",
    "vctrs",
    "purrr",
    "future",
    "furrr",
    "MASS",
    "lattice",
    "Matrix",
];

fn repo() -> &'static Path {
    static REPO: OnceLock<PathBuf> = OnceLock::new();
    REPO.get_or_init(|| {
        if let Some(d) = std::env::var_os("HAKO_TEST_WASM_REPO") {
            return PathBuf::from(d);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm-repo.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("run wasm-repo.sh");
        assert!(
            out.status.success(),
            "wasm-repo.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(stdout.lines().last().expect("a directory").trim())
    })
}

/// `PACKAGES` as records of fields (continuation lines folded).
fn index(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut rec = BTreeMap::new();
        let mut last = String::new();
        for line in block.lines() {
            if line.starts_with([' ', '\t']) {
                let v: &mut String = rec.get_mut(&last).unwrap();
                v.push(' ');
                v.push_str(line.trim());
            } else {
                let (k, v) = line.split_once(':').unwrap();
                last = k.to_string();
                rec.insert(last.clone(), v.trim().to_string());
            }
        }
        out.push(rec);
    }
    out
}

fn tool_hash(tool: &str, path: &Path) -> String {
    let out = Command::new(tool).arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn unpack(tgz: &Path, into: &Path) {
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(tgz)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(st.success(), "unpack {}", tgz.display());
}

#[test]
fn index_lists_every_binary_with_matching_checksums() {
    let contrib = repo().join(CONTRIB);
    let text = std::fs::read_to_string(contrib.join("PACKAGES")).unwrap();
    let gz = Command::new("gzip")
        .arg("-dc")
        .arg(contrib.join("PACKAGES.gz"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(gz.stdout).unwrap(),
        text,
        "PACKAGES.gz differs from PACKAGES"
    );
    let recs = index(&text);
    let names: Vec<&str> = recs.iter().map(|r| r["Package"].as_str()).collect();
    for want in REQUIRED {
        assert!(
            names.contains(want),
            "{want} missing from PACKAGES ({names:?})"
        );
    }
    let mut tgzs: Vec<String> = std::fs::read_dir(&contrib)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tgz"))
        .collect();
    tgzs.sort();
    assert_eq!(
        tgzs.len(),
        recs.len(),
        "binaries and index entries differ: {tgzs:?}"
    );
    for r in &recs {
        let file = contrib.join(format!("{}_{}.tgz", r["Package"], r["Version"]));
        assert!(file.is_file(), "{} is listed but absent", file.display());
        assert_eq!(
            r["MD5sum"],
            tool_hash("md5sum", &file),
            "{}",
            file.display()
        );
        assert_eq!(
            r["SHA256sum"],
            tool_hash("sha256sum", &file),
            "{}",
            file.display()
        );
        assert!(
            r["Built"].starts_with("R 4.6.0;"),
            "{}: Built {}",
            r["Package"],
            r["Built"]
        );
    }
}

#[test]
fn binaries_are_installed_trees_with_exnref_side_modules() {
    let contrib = repo().join(CONTRIB);
    let tmp = tempfile::tempdir().unwrap();
    let recs = index(&std::fs::read_to_string(contrib.join("PACKAGES")).unwrap());
    for r in &recs {
        let name = &r["Package"];
        unpack(
            &contrib.join(format!("{name}_{}.tgz", r["Version"])),
            tmp.path(),
        );
        let pkg = tmp.path().join(name);
        for f in [
            "DESCRIPTION",
            "NAMESPACE",
            "Meta/package.rds",
            "Meta/nsInfo.rds",
        ] {
            assert!(pkg.join(f).is_file(), "{name}: {f} missing");
        }
        assert!(
            pkg.join("R").join(format!("{name}.rdb")).is_file(),
            "{name}: no lazy-load DB"
        );
        if r.get("NeedsCompilation").map(String::as_str) == Some("yes") {
            let so = pkg.join("libs").join(format!("{name}.so"));
            let bytes = std::fs::read(&so).unwrap_or_else(|e| panic!("{}: {e}", so.display()));
            assert!(hako_assets::wasm::is_wasm(&bytes), "{name}: not wasm");
            assert!(
                !hako_assets::wasm::has_legacy_eh(name, &bytes).unwrap(),
                "{name}: legacy exception handling left"
            );
            hako_assets::wasm::validate_exnref(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

/// A sandbox given every package of the repository as its package set.
fn sandbox_with_repo(tmp: &Path) -> hako_runtime::Sandbox {
    let contrib = repo().join(CONTRIB);
    let mut packages = Vec::new();
    for e in std::fs::read_dir(&contrib).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "tgz") {
            unpack(&p, tmp);
        }
    }
    for e in std::fs::read_dir(tmp).unwrap() {
        packages.push(InstalledPackage::from_dir(&e.unwrap().path()).unwrap());
    }
    sandbox_with(SandboxConfig {
        packages: Arc::new(PackageSet { packages }),
        ..SandboxConfig::default()
    })
}

#[test]
fn hakotest_c_and_cpp_run_in_the_sandbox() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sb = sandbox_with_repo(tmp.path());
    eval_ok(&mut sb, "library(hakotest)");
    assert_eq!(eval_ok(&mut sb, "cat(add(1, 2))"), "3");
    // A C++ exception thrown and caught inside the module.
    assert_eq!(eval_ok(&mut sb, "cat(cpp_catch('x'))"), "caught: x");
    // Unwinding through five frames runs all five destructors.
    assert_eq!(eval_ok(&mut sb, "cat(cpp_unwind(5L))"), "5");
    // setjmp/longjmp within the module.
    assert_eq!(eval_ok(&mut sb, "cat(c_setjmp(7L))"), "7");
    // Rf_error longjmps out of C into R's tryCatch; the sandbox goes on.
    assert_eq!(
        eval_ok(
            &mut sb,
            "cat(tryCatch(c_error('boom'), error = conditionMessage))"
        ),
        "hakotest: boom"
    );
    assert_eq!(eval_ok(&mut sb, "cat(add(2, 3))"), "5");
    // fopen("/etc/passwd") from C finds nothing: the host's files are not there.
    assert_eq!(
        eval_ok(
            &mut sb,
            "x <- open_file('/etc/passwd'); cat(length(x), attr(x, 'error'))"
        ),
        "0 No such file or directory"
    );
}

#[test]
fn purrr_runs_on_rlang_vctrs_and_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sb = sandbox_with_repo(tmp.path());
    assert_eq!(
        eval_ok(&mut sb, "cat(purrr::map_dbl(1:3, function(x) x^2))"),
        "1 4 9"
    );
    assert_eq!(
        eval_ok(
            &mut sb,
            "cat(tryCatch(rlang::abort('no'), error = conditionMessage))"
        ),
        "no"
    );
    assert_eq!(
        eval_ok(&mut sb, "cat(class(vctrs::vec_c(1L, 2.5)))"),
        "numeric"
    );
    assert_eq!(
        eval_ok(
            &mut sb,
            "cat(digest::digest('a', algo = 'md5', serialize = FALSE))"
        ),
        "0cc175b9c0f1b6a831c399e269772661"
    );
}

/// The hako binary the repository was built with.
fn hako_bin() -> PathBuf {
    std::env::var_os("HAKO")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/hako"))
}

#[test]
fn build_refuses_a_module_that_imports_what_r_wasm_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("hakobad");
    std::fs::create_dir_all(pkg.join("src")).unwrap();
    std::fs::create_dir_all(pkg.join("R")).unwrap();
    std::fs::write(
        pkg.join("DESCRIPTION"),
        "Package: hakobad\nVersion: 0.1\nTitle: Bad\nDescription: Calls SETLENGTH.\n\
         License: MIT\nAuthors@R: person('a', 'b', role = c('aut', 'cre'), email = 'a@b.c')\n",
    )
    .unwrap();
    std::fs::write(
        pkg.join("NAMESPACE"),
        "useDynLib(hakobad)\nexport(shorten)\n",
    )
    .unwrap();
    std::fs::write(
        pkg.join("R/shorten.R"),
        "shorten <- function(x) .Call('bad_shorten', x)\n",
    )
    .unwrap();
    // R 4.6's headers hide SETLENGTH and R.wasm does not export it.
    std::fs::write(
        pkg.join("src/bad.c"),
        "#include <Rinternals.h>\nvoid SETLENGTH(SEXP, R_xlen_t);\n\
         SEXP bad_shorten(SEXP x) { SETLENGTH(x, 1); return x; }\n",
    )
    .unwrap();
    let out_repo = tmp.path().join("repo");
    let out = Command::new(hako_bin())
        .args(["pkg", "build", "--repo"])
        .arg(&out_repo)
        .arg(&pkg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "built anyway: {stderr}");
    assert!(
        stderr.contains("SETLENGTH"),
        "the missing symbol is not named: {stderr}"
    );
    let contrib = out_repo.join(CONTRIB);
    assert!(!contrib.join("hakobad_0.1.tgz").exists());
    assert_eq!(
        std::fs::read_to_string(contrib.join("PACKAGES")).unwrap(),
        ""
    );
}

#[test]
fn future_and_recommended_packages_run() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sb = sandbox_with_repo(tmp.path());
    assert_eq!(
        eval_ok(&mut sb, "cat(future::value(future::future(6 * 7)))"),
        "42"
    );
    assert_eq!(
        eval_ok(&mut sb, "cat(furrr::future_map_dbl(1:3, sqrt)^2)"),
        "1 2 3"
    );
    // Matrix's dense solve goes through LAPACK (libRlapack.so, a needed
    // library of its module), its sparse one through CHOLMOD.
    assert_eq!(
        eval_ok(
            &mut sb,
            "library(Matrix); m <- Matrix(c(4, 1, 1, 3), 2); \
             s <- sparseMatrix(i = 1:3, j = 1:3, x = c(2, 4, 8)); \
             cat(round(as.vector(solve(m) %*% m), 12), as.vector(solve(s, c(2, 4, 8))))"
        ),
        "1 0 0 1 1 1 1"
    );
    assert_eq!(
        eval_ok(
            &mut sb,
            "cat(round(MASS::ginv(matrix(c(2, 0, 0, 4), 2))[2, 2], 3))"
        ),
        "0.25"
    );
}
