//! The README's main job: an R session maps a bootstrap over a local host
//! with two sandboxed daemons through `library(hako)`, and the same job with
//! nothing but base R over the client link (the protocol's worked example).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The release binary, with assets and the pristine snapshot ready before a
/// host starts (so the script's own wait is not the first compile).
fn binary() -> PathBuf {
    assert!(
        hako_tests::rscript().is_some(),
        "the main job needs R (tests/setup.sh installs it)"
    );
    hako_tests::runtime();
    let hako = root().join("target/release/hako");
    assert!(
        hako.exists(),
        "build the binary first: cargo build --release -p hako"
    );
    hako
}

fn check_bootstrap(out: &Output, n: usize) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{n} bootstrap replicates on 2 sandboxed daemons")),
        "{stdout}"
    );
    assert!(stdout.contains(", 0 errors"), "{stdout}");
    assert!(stdout.contains("slope of mpg on wt: -5.344"), "{stdout}");
}

#[test]
fn bootstrap_runs_through_the_r_package() {
    let hako = binary();
    let lib = tempfile::tempdir().unwrap();
    let install = Command::new("R")
        .args(["CMD", "INSTALL", "--no-docs", "-l"])
        .arg(lib.path())
        .arg(root().join("r-package"))
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "R CMD INSTALL r-package: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let out = Command::new("Rscript")
        .arg(root().join("tests/example-map.R"))
        .arg("40")
        .env("HAKO_BINARY", &hako)
        .env("R_LIBS", lib.path())
        .output()
        .unwrap();
    check_bootstrap(&out, 40);
}

#[test]
fn bootstrap_runs_over_the_client_link_in_base_r() {
    let hako = binary();
    let out = Command::new("Rscript")
        .arg(root().join("tests/link-client.R"))
        .arg("40")
        .env("HAKO_BINARY", &hako)
        .output()
        .unwrap();
    check_bootstrap(&out, 40);
}
