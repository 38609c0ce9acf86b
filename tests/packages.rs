//! Compiled packages from a package set: verified before they are mounted,
//! loaded by R's own `library()`, refused with an R error when a symbol is
//! missing, never writable, and gone again after a reset.
//!
//! The packages are real installed R packages (made by native `R CMD
//! INSTALL`, R code only) whose `libs/NAME.so` is a side module built here
//! with wasm-encoder, in the shape emcc gives one.

use hako_runtime::packages::{InstalledPackage, PackageSet};
use hako_runtime::{Limit, SandboxConfig, SandboxError};
use hako_tests::{eval_err, eval_ok, runtime, sandbox_with};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use wasm_encoder::{
    BlockType, Catch, CodeSection, CustomSection, EntityType, ExportKind, ExportSection, Function,
    FunctionSection, GlobalType, ImportSection, Instruction, MemoryType, Module, RefType,
    TableType, TagKind, TagType, TypeSection, ValType,
};

/// A side module exporting `<name>_one()` = `Rf_ScalarInteger(42)`, plus an
/// import of each of `extra_funcs` (called nowhere). With `cpp`, it imports
/// the exception tags and `__wasm_lpad_context` as emcc's C++ modules do, and
/// `<name>_caught()` throws a C++ exception and catches it.
fn side_module(name: &str, extra_funcs: &[&str], cpp: bool) -> Vec<u8> {
    let mut m = Module::new();
    // dylink.0 mem-info: no data, no table slots.
    m.section(&CustomSection {
        name: "dylink.0".into(),
        data: vec![1, 4, 0, 0, 0, 0].into(),
    });
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]); // 0: i32 -> i32
    types.ty().function([], [ValType::I32]); // 1: () -> i32
    types.ty().function([ValType::I32], []); // 2: tag payload
    m.section(&types);

    let mut imports = ImportSection::new();
    imports.import(
        "env",
        "memory",
        MemoryType {
            minimum: 0,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        },
    );
    imports.import(
        "env",
        "__indirect_function_table",
        TableType {
            element_type: RefType::FUNCREF,
            minimum: 0,
            maximum: None,
            table64: false,
            shared: false,
        },
    );
    let const_i32 = GlobalType {
        val_type: ValType::I32,
        mutable: false,
        shared: false,
    };
    imports.import("env", "__memory_base", const_i32);
    imports.import("env", "__table_base", const_i32);
    imports.import("env", "Rf_ScalarInteger", EntityType::Function(0));
    let mut funcs = 1u32;
    for f in extra_funcs {
        imports.import("env", f, EntityType::Function(0));
        funcs += 1;
    }
    if cpp {
        let tag = EntityType::Tag(TagType {
            kind: TagKind::Exception,
            func_type_idx: 2,
        });
        imports.import("env", "__cpp_exception", tag);
        imports.import("env", "__c_longjmp", tag);
        imports.import(
            "GOT.mem",
            "__wasm_lpad_context",
            GlobalType {
                val_type: ValType::I32,
                mutable: true,
                shared: false,
            },
        );
    }
    m.section(&imports);

    let mut fsec = FunctionSection::new();
    fsec.function(1);
    if cpp {
        fsec.function(1);
    }
    m.section(&fsec);
    let mut exports = ExportSection::new();
    exports.export(&format!("{name}_one"), ExportKind::Func, funcs);
    if cpp {
        exports.export(&format!("{name}_caught"), ExportKind::Func, funcs + 1);
    }
    m.section(&exports);

    let mut code = CodeSection::new();
    let mut one = Function::new([]);
    one.instruction(&Instruction::I32Const(42));
    one.instruction(&Instruction::Call(0));
    one.instruction(&Instruction::End);
    code.function(&one);
    if cpp {
        // block (result i32) try_table (catch __cpp_exception 0) throw 7 end
        // unreachable end; Rf_ScalarInteger(payload)
        let mut caught = Function::new([]);
        caught.instruction(&Instruction::Block(BlockType::Result(ValType::I32)));
        caught.instruction(&Instruction::TryTable(
            BlockType::Empty,
            vec![Catch::One { tag: 0, label: 0 }].into(),
        ));
        caught.instruction(&Instruction::I32Const(7));
        caught.instruction(&Instruction::Throw(0));
        caught.instruction(&Instruction::End);
        caught.instruction(&Instruction::Unreachable);
        caught.instruction(&Instruction::End);
        caught.instruction(&Instruction::Call(0));
        caught.instruction(&Instruction::End);
        code.function(&caught);
    }
    m.section(&code);
    m.finish()
}

/// An installed R package `name` (R code only, byte code off) whose
/// namespace loads `libs/<name>.so`, with `module` as that file.
fn installed_package(root: &Path, name: &str, module: &[u8]) -> PathBuf {
    let src = root.join("src").join(name);
    std::fs::create_dir_all(src.join("R")).unwrap();
    std::fs::write(
        src.join("DESCRIPTION"),
        format!(
            "Package: {name}\nVersion: 0.1\nTitle: Test\nDescription: Test.\n\
             License: MIT\nAuthor: hako\nMaintainer: hako <hako@example.org>\n"
        ),
    )
    .unwrap();
    std::fs::write(
        src.join("NAMESPACE"),
        format!("useDynLib({name})\nexport(one, caught)\n"),
    )
    .unwrap();
    std::fs::write(
        src.join("R").join("f.R"),
        format!(
            "one <- function() .Call(\"{name}_one\", PACKAGE = \"{name}\")\n\
             caught <- function() .Call(\"{name}_caught\", PACKAGE = \"{name}\")\n"
        ),
    )
    .unwrap();
    let lib = root.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let out = Command::new("R")
        .args(["CMD", "INSTALL", "--no-test-load", "--no-byte-compile"])
        .arg("--no-docs")
        .arg("-l")
        .arg(&lib)
        .arg(&src)
        .env("R_LIBS_USER", "")
        .output()
        .expect("native R (tests/setup.sh installs r-base-core)");
    assert!(
        out.status.success(),
        "R CMD INSTALL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = lib.join(name);
    std::fs::create_dir_all(dir.join("libs")).unwrap();
    std::fs::write(dir.join("libs").join(format!("{name}.so")), module).unwrap();
    dir
}

fn set(dirs: &[&Path]) -> Arc<PackageSet> {
    Arc::new(PackageSet {
        packages: dirs
            .iter()
            .map(|d| InstalledPackage::from_dir(d).unwrap())
            .collect(),
    })
}

fn config(packages: Arc<PackageSet>) -> SandboxConfig {
    SandboxConfig {
        packages,
        ..SandboxConfig::default()
    }
}

#[test]
fn a_package_set_loads_through_library_and_is_read_only() {
    let t = tempfile::tempdir().unwrap();
    let good = installed_package(t.path(), "hakogood", &side_module("hakogood", &[], true));
    let mut sb = sandbox_with(config(set(&[&good])));
    assert_eq!(
        eval_ok(&mut sb, r#"cat(.libPaths()[1], find.package("hakogood"))"#),
        "/hako/library /hako/library/hakogood"
    );
    assert_eq!(
        eval_ok(&mut sb, "library(hakogood); cat(one(), caught())"),
        "42 7"
    );
    // Nothing in the tree can be changed from inside.
    assert_eq!(
        eval_ok(
            &mut sb,
            r#"w <- function(f) !inherits(try(suppressWarnings(f), silent = TRUE), "try-error") && !isFALSE(f)
cat(w(writeLines("x", "/hako/library/hakogood/x")),
    w(writeLines("x", "/hako/library/hakogood/libs/hakogood.so")),
    suppressWarnings(file.remove("/hako/library/hakogood/DESCRIPTION")),
    suppressWarnings(dir.create("/hako/library/other")),
    file.exists("/hako/library/hakogood/libs/hakogood.so"), sep = ",")"#
        ),
        "FALSE,FALSE,FALSE,FALSE,TRUE"
    );
}

#[test]
fn a_missing_symbol_is_an_r_error_naming_it_and_the_sandbox_survives() {
    let t = tempfile::tempdir().unwrap();
    let bad = installed_package(
        t.path(),
        "hakobad",
        &side_module("hakobad", &["TRUELENGTH", "R_nchar"], false),
    );
    let mut sb = sandbox_with(config(set(&[&bad])));
    for code in [
        "library(hakobad)",
        r#"dyn.load("/hako/library/hakobad/libs/hakobad.so")"#,
    ] {
        let err = eval_err(&mut sb, code);
        assert!(
            err.contains("TRUELENGTH") && err.contains("R_nchar") && err.contains("undefined"),
            "{code}: {err}"
        );
        assert_eq!(eval_ok(&mut sb, "cat(6 * 7)"), "42");
    }
    // Refusing it left nothing behind: the DLL is not registered.
    assert_eq!(
        eval_ok(
            &mut sb,
            r#"cat("hakobad" %in% names(getLoadedDLLs()), is.loaded("hakobad_one"))"#
        ),
        "FALSE FALSE"
    );
}

#[test]
fn reset_unloads_packages_loaded_by_a_task() {
    let t = tempfile::tempdir().unwrap();
    let good = installed_package(t.path(), "hakoreset", &side_module("hakoreset", &[], false));
    let mut sb = sandbox_with(config(set(&[&good])));
    let loaded = r#"cat("hakoreset" %in% loadedNamespaces(), is.loaded("hakoreset_one"))"#;
    assert_eq!(eval_ok(&mut sb, loaded), "FALSE FALSE");
    assert_eq!(eval_ok(&mut sb, "cat(hakoreset::one())"), "42");
    assert_eq!(eval_ok(&mut sb, loaded), "TRUE TRUE");
    sb.reset().unwrap();
    assert_eq!(eval_ok(&mut sb, loaded), "FALSE FALSE");
    // And it loads again, at the same place as the first time.
    assert_eq!(eval_ok(&mut sb, "cat(hakoreset::one())"), "42");
    sb.reset().unwrap();
    assert_eq!(eval_ok(&mut sb, "cat(6 * 7)"), "42");
}

/// A side module in the legacy exception encoding (`try`/`catch_all`), as
/// emcc 3.1 writes C++ modules; the runtime's engine only runs exnref.
fn legacy_eh_module(name: &str) -> Vec<u8> {
    let mut m = Module::new();
    m.section(&CustomSection {
        name: "dylink.0".into(),
        data: vec![1, 4, 0, 0, 0, 0].into(),
    });
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I32]);
    m.section(&types);
    let mut fsec = FunctionSection::new();
    fsec.function(0);
    m.section(&fsec);
    let mut exports = ExportSection::new();
    exports.export(&format!("{name}_one"), ExportKind::Func, 0);
    m.section(&exports);
    let mut code = CodeSection::new();
    let mut f = Function::new([]);
    f.instruction(&Instruction::Try(BlockType::Result(ValType::I32)));
    f.instruction(&Instruction::I32Const(1));
    f.instruction(&Instruction::CatchAll);
    f.instruction(&Instruction::I32Const(0));
    f.instruction(&Instruction::End);
    f.instruction(&Instruction::End);
    code.function(&f);
    m.section(&code);
    m.finish()
}

#[test]
fn a_legacy_exception_module_is_an_r_error_that_says_so() {
    let t = tempfile::tempdir().unwrap();
    let old = installed_package(t.path(), "hakolegacy", &legacy_eh_module("hakolegacy"));
    let mut sb = sandbox_with(config(set(&[&old])));
    let err = eval_err(&mut sb, "library(hakolegacy)");
    assert!(err.contains("legacy wasm exception encoding"), "{err}");
    assert_eq!(eval_ok(&mut sb, "cat(6 * 7)"), "42");
}

/// A side module whose constructor runs `body` (e.g. a trap or a loop).
fn ctor_module(body: &[Instruction]) -> Vec<u8> {
    let mut m = Module::new();
    m.section(&CustomSection {
        name: "dylink.0".into(),
        data: vec![1, 4, 0, 0, 0, 0].into(),
    });
    let mut types = TypeSection::new();
    types.ty().function([], []);
    m.section(&types);
    let mut fsec = FunctionSection::new();
    fsec.function(0);
    m.section(&fsec);
    let mut exports = ExportSection::new();
    exports.export("__wasm_call_ctors", ExportKind::Func, 0);
    m.section(&exports);
    let mut code = CodeSection::new();
    let mut f = Function::new([]);
    for i in body {
        f.instruction(i);
    }
    f.instruction(&Instruction::End);
    code.function(&f);
    m.section(&code);
    m.finish()
}

/// A trap or the deadline inside a package's constructor ends the
/// evaluation as any trap or deadline does (it is not a load failure R
/// could carry on from), and the sandbox is whole again afterwards.
#[test]
fn a_trap_or_deadline_in_a_constructor_ends_the_evaluation() {
    let t = tempfile::tempdir().unwrap();
    let trap = installed_package(
        t.path(),
        "hakotrap",
        &ctor_module(&[Instruction::Unreachable]),
    );
    let spin = installed_package(
        t.path(),
        "hakospin",
        &ctor_module(&[
            Instruction::Loop(BlockType::Empty),
            Instruction::Br(0),
            Instruction::End,
        ]),
    );
    let mut sb = sandbox_with(SandboxConfig {
        timeout: Some(std::time::Duration::from_secs(1)),
        ..config(set(&[&trap, &spin]))
    });
    match sb.eval("library(hakotrap)") {
        Err(SandboxError::Crashed { message, .. }) => {
            assert!(message.contains("unreachable"), "{message}")
        }
        other => panic!("expected a crash, got {other:?}"),
    }
    assert_eq!(eval_ok(&mut sb, "cat(6 * 7)"), "42");
    match sb.eval("library(hakospin)") {
        Err(SandboxError::Limit {
            limit: Limit::Time, ..
        }) => {}
        other => panic!("expected the deadline, got {other:?}"),
    }
    assert_eq!(eval_ok(&mut sb, "cat(6 * 7)"), "42");
}

#[test]
fn tampered_trees_are_refused_before_any_sandbox_is_built() {
    let t = tempfile::tempdir().unwrap();
    let dir = installed_package(
        t.path(),
        "hakotamper",
        &side_module("hakotamper", &[], false),
    );
    let packages = set(&[&dir]);
    let so = dir.join("libs/hakotamper.so");
    let refused = |what: &str| {
        let e = match runtime().sandbox(config(packages.clone())) {
            Ok(_) => panic!("{what}: a sandbox was built"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains("hakotamper"), "{what}: {e}");
        e
    };

    // A changed side module (same size).
    let orig = std::fs::read(&so).unwrap();
    let mut changed = orig.clone();
    *changed.last_mut().unwrap() ^= 1;
    std::fs::write(&so, &changed).unwrap();
    let e = refused("changed .so");
    assert!(
        e.contains("libs/hakotamper.so") && e.contains("sha256"),
        "{e}"
    );
    std::fs::write(&so, &orig).unwrap();

    // A changed R file.
    let desc = dir.join("DESCRIPTION");
    let text = std::fs::read_to_string(&desc).unwrap();
    std::fs::write(&desc, format!("{text}X: 1\n")).unwrap();
    let e = refused("changed DESCRIPTION");
    assert!(e.contains("DESCRIPTION"), "{e}");
    std::fs::write(&desc, &text).unwrap();

    // A file the manifest does not list.
    std::fs::write(dir.join("R/extra.R"), "x <- 1\n").unwrap();
    let e = refused("extra file");
    assert!(e.contains("R/extra.R") && e.contains("not listed"), "{e}");
    std::fs::remove_file(dir.join("R/extra.R")).unwrap();

    // A symlink, even to a file of the tree.
    std::os::unix::fs::symlink("/etc/passwd", dir.join("libs/passwd")).unwrap();
    let e = refused("symlink");
    assert!(e.contains("libs/passwd") && e.contains("symlink"), "{e}");
    std::fs::remove_file(dir.join("libs/passwd")).unwrap();

    // Restored: accepted again.
    let mut sb = sandbox_with(config(packages));
    assert_eq!(eval_ok(&mut sb, "cat(hakotamper::one())"), "42");
}

/// Compiled code loads only from a verified set: a side module the guest
/// can see through an ordinary mount, even one placed under the package
/// library, is refused by dlopen.
#[test]
fn only_the_sets_modules_load() {
    let t = tempfile::tempdir().unwrap();
    let good = installed_package(t.path(), "hakoonly", &side_module("hakoonly", &[], false));
    let rogue = t.path().join("rogue");
    std::fs::create_dir_all(rogue.join("libs")).unwrap();
    std::fs::write(
        rogue.join("libs/rogue.so"),
        side_module("rogue", &[], false),
    )
    .unwrap();
    let mount = |guest: &str| hako_runtime::MountSpec {
        host_dir: rogue.clone(),
        guest_path: guest.to_string(),
        writable: false,
    };
    let mut sb = sandbox_with(SandboxConfig {
        mounts: vec![mount("/library/rogue"), mount("/hako/library/rogue")],
        ..config(set(&[&good]))
    });
    for path in [
        "/library/rogue/libs/rogue.so",
        "/hako/library/rogue/libs/rogue.so",
    ] {
        assert_eq!(
            eval_ok(&mut sb, &format!("cat(file.exists('{path}'))")),
            "TRUE"
        );
        let err = eval_err(&mut sb, &format!("dyn.load('{path}')"));
        assert!(
            err.contains("unable to load shared object"),
            "{path}: {err}"
        );
    }
    assert_eq!(
        eval_ok(&mut sb, "cat(is.loaded('rogue_one'), hakoonly::one())"),
        "FALSE 42"
    );
}

#[test]
fn a_rebased_sandbox_keeps_its_packages_and_drops_later_ones() {
    let t = tempfile::tempdir().unwrap();
    let kept = installed_package(t.path(), "hakokept", &side_module("hakokept", &[], true));
    let later = installed_package(t.path(), "hakolater", &side_module("hakolater", &[], false));
    let mut sb = sandbox_with(config(set(&[&kept, &later])));
    assert_eq!(eval_ok(&mut sb, "library(hakokept); cat(one())"), "42");
    // The base now holds the loaded module: re-created from the link state.
    sb.rebase().unwrap();
    let state = r#"cat(c("hakokept", "hakolater") %in% loadedNamespaces())"#;
    assert_eq!(eval_ok(&mut sb, state), "TRUE FALSE");
    assert_eq!(eval_ok(&mut sb, "cat(one(), caught())"), "42 7");
    assert_eq!(eval_ok(&mut sb, "cat(hakolater::one())"), "42");
    assert_eq!(eval_ok(&mut sb, state), "TRUE TRUE");
    sb.reset().unwrap();
    assert_eq!(eval_ok(&mut sb, state), "TRUE FALSE");
    assert_eq!(
        eval_ok(&mut sb, "cat(hakokept::one(), hakokept::caught())"),
        "42 7"
    );
}

/// The test repository tests/wasm-repo.sh builds (tests/run.sh exports it
/// as `HAKO_TEST_WASM_REPO`; otherwise the script runs here, cached under a
/// key, so only a first run builds), its binary packages extracted into `into`.
fn wasm_repo_packages(into: &Path) -> Vec<PathBuf> {
    let repo = match std::env::var_os("HAKO_TEST_WASM_REPO") {
        Some(r) => PathBuf::from(r),
        None => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
            let o = Command::new("bash")
                .arg(root.join("tests/wasm-repo.sh"))
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("running tests/wasm-repo.sh");
            assert!(o.status.success(), "tests/wasm-repo.sh failed");
            let out = String::from_utf8_lossy(&o.stdout);
            PathBuf::from(
                out.lines()
                    .last()
                    .expect("the repository's directory")
                    .trim(),
            )
        }
    };
    let contrib = repo.join("bin/emscripten/contrib/4.6");
    let mut dirs = Vec::new();
    for e in std::fs::read_dir(&contrib).expect("the test repository") {
        let path = e.unwrap().path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some((name, _)) = file.strip_suffix(".tgz").and_then(|f| f.split_once('_')) else {
            continue;
        };
        let ok = Command::new("tar")
            .arg("xzf")
            .arg(&path)
            .arg("-C")
            .arg(into)
            .status()
            .unwrap()
            .success();
        assert!(ok, "extracting {file}");
        dirs.push(into.join(name));
    }
    dirs
}

#[test]
fn real_compiled_packages_load_and_run() {
    let t = tempfile::tempdir().unwrap();
    let dirs = wasm_repo_packages(t.path());
    let has = |n: &str| dirs.iter().any(|d| d.ends_with(n));
    assert!(has("hakotest"), "the test repository has hakotest");
    let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let mut sb = sandbox_with(config(set(&dirs)));
    let started = std::time::Instant::now();
    eval_ok(&mut sb, "library(hakotest)");
    eprintln!(
        "library(hakotest) in a fresh sandbox: {:?}",
        started.elapsed()
    );
    assert_eq!(
        eval_ok(
            &mut sb,
            r#"cat(add(1, 2), cpp_catch("x"), cpp_unwind(5), c_setjmp(7),
    tryCatch(c_error("boom"), error = conditionMessage), sep = "|")"#
        ),
        "3|caught: x|5|7|hakotest: boom"
    );
    // C code in a package is inside the sandbox like R code.
    assert_eq!(
        eval_ok(
            &mut sb,
            r#"x <- open_file("/etc/passwd"); cat(length(x), !is.null(attr(x, "error")))"#
        ),
        "0 TRUE"
    );
    if has("Rcpp") {
        let started = std::time::Instant::now();
        eval_ok(&mut sb, "library(Rcpp)");
        eprintln!("library(Rcpp): {:?}", started.elapsed());
    }
    if has("digest") {
        assert_eq!(
            eval_ok(
                &mut sb,
                r#"cat(digest::digest("a", algo = "md5", serialize = FALSE))"#
            ),
            "0cc175b9c0f1b6a831c399e269772661"
        );
    }
    if has("glue") && has("magrittr") {
        assert_eq!(
            eval_ok(
                &mut sb,
                r#"library(magrittr); cat(glue::glue("n={1:3 %>% sum}"))"#
            ),
            "n=6"
        );
    }
    if has("purrr") {
        assert_eq!(
            eval_ok(&mut sb, "cat(purrr::map_dbl(1:3, function(x) x^2))"),
            "1 4 9"
        );
    }
    // A reset unloads every one of them; they load again.
    sb.reset().unwrap();
    assert_eq!(
        eval_ok(
            &mut sb,
            r#"cat(any(grepl("^/hako", sapply(getLoadedDLLs(), `[[`, "path"))))"#
        ),
        "FALSE"
    );
    assert_eq!(eval_ok(&mut sb, "cat(hakotest::cpp_unwind(3))"), "3");

    // A daemon loads its set once and rebases: every later task starts with
    // the packages loaded, at the cost of a reset (printed, not asserted).
    if has("purrr") {
        eval_ok(&mut sb, "library(purrr)");
        sb.rebase().unwrap();
        let task = "cat(map_dbl(1:3, function(x) x^2))";
        let started = std::time::Instant::now();
        for _ in 0..5 {
            sb.reset().unwrap();
            assert_eq!(eval_ok(&mut sb, task), "1 4 9");
        }
        eprintln!(
            "reset + map_dbl task on a base with purrr loaded: {:?} each",
            started.elapsed() / 5
        );
    }
}
