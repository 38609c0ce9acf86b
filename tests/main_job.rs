//! The README's main job: an R session (plain Rscript, base R only) drives
//! `hako host --local 2` over the client link.

use std::path::Path;
use std::process::Command;

#[test]
fn bootstrap_example_runs_through_the_client_link() {
    assert!(
        hako_tests::rscript().is_some(),
        "the main job needs R (tests/setup.sh installs it)"
    );
    hako_tests::runtime(); // assets and the pristine snapshot exist before the host starts
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let hako = root.join("target/release/hako");
    assert!(
        hako.exists(),
        "build the binary first: cargo build --release -p hako"
    );
    let out = Command::new("Rscript")
        .arg(root.join("tests/example-map.R"))
        .arg("40")
        .env("HAKO_BINARY", &hako)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("40 bootstrap replicates on 2 sandboxed daemons"),
        "{stdout}"
    );
    assert!(stdout.contains(", 0 errors"), "{stdout}");
    assert!(stdout.contains("slope of mpg on wt: -5.344"), "{stdout}");
}
