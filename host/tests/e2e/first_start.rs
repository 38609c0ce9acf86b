//! A first start on a machine (no webR assets, no compiled code, no saved
//! start-up state) takes a minute or two: it must say what it is doing, on
//! a terminal as a live status line and elsewhere one line per step, and a
//! failure must say what failed in its own words. "Fresh" is simulated with
//! private `HAKO_ASSETS` / `HAKO_CACHE` directories, never by touching the
//! real cache.

use crate::common::hako;
use std::process::{Command, Output};

/// `hako eval 1+1` with PATH lacking npm and an empty asset directory.
fn eval_without_npm(assets: &std::path::Path, empty_path: &std::path::Path) -> Command {
    let mut c = hako();
    c.args(["eval", "1+1"])
        .env("HAKO_ASSETS", assets)
        .env("PATH", empty_path)
        .env_remove("HAKO_WEBR_TARBALL");
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_first_start_without_npm_says_so_after_saying_what_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("bin");
    std::fs::create_dir(&empty).unwrap();
    let assets = dir.path().join("assets");
    let out = eval_without_npm(&assets, &empty).output().unwrap();
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // Not a terminal: one plain line per step, marked, then the cause.
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("hako: [start-up] first start: preparing webR's R in"),
        "{err}"
    );
    assert!(
        lines.contains(&"hako: [start-up] fetching webr@0.6.0 with npm pack"),
        "{err}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("hako: could not get npm package webr@0.6.0")
            && last.contains("`npm` is not on PATH"),
        "{err}"
    );
}

#[test]
fn on_a_terminal_the_first_start_is_one_status_line_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("bin");
    std::fs::create_dir(&empty).unwrap();
    let assets = dir.path().join("assets");
    // util-linux's script(1) gives the command a terminal (Debian: bsdutils,
    // an essential package).
    let cmd = format!(
        "HAKO_ASSETS='{}' PATH='{}' '{}' eval 1+1",
        assets.display(),
        empty.display(),
        env!("CARGO_BIN_EXE_hako")
    );
    let out = Command::new("/usr/bin/script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("HAKO_WEBR_TARBALL")
        .output()
        .unwrap();
    let (tty, _) = text(&out);
    // Each step is drawn in place (carriage return, erase line) and ended
    // before the next; the error follows on a line of its own.
    assert!(
        tty.contains("\r\x1b[Khako: first start: preparing webR's R in"),
        "{tty:?}"
    );
    assert!(
        tty.contains("\r\x1b[Khako: fetching webr@0.6.0 with npm pack"),
        "{tty:?}"
    );
    assert!(
        tty.contains("\r\nhako: could not get npm package webr@0.6.0"),
        "{tty:?}"
    );
}

#[test]
fn compiling_r_and_starting_it_are_reported_and_later_starts_are_quiet() {
    // The real assets, a private cache: R.wasm is compiled and R's start-up
    // state saved again, as on a machine that has never run hako.
    let cache = tempfile::tempdir().unwrap();
    let run = || {
        hako()
            .args(["eval", "1+1"])
            .env("HAKO_CACHE", cache.path())
            .output()
            .unwrap()
    };
    let out = run();
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(stdout, "[1] 2\n");
    let lines: Vec<&str> = err.lines().collect();
    let at = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{err}"))
    };
    let compiling = lines
        .iter()
        .position(|l| {
            l.starts_with("hako: [start-up] compiling ")
                && l.contains(" MB of WebAssembly to machine code (once)")
                && !l.contains(": done in")
        })
        .unwrap_or_else(|| panic!("no start of compiling in:\n{err}"));
    let compiled = lines
        .iter()
        .position(|l| l.starts_with("hako: [start-up] compiling") && l.contains(": done in"))
        .unwrap_or_else(|| panic!("no end of compiling in:\n{err}"));
    let ready = at("hako: [start-up] R is ready after");
    assert!(compiling < compiled && compiled < ready, "{err}");
    assert_eq!(ready, lines.len() - 1, "{err}");
    // Everything is cached now: nothing to report.
    let again = run();
    let (stdout, err) = text(&again);
    assert_eq!((stdout.as_str(), err.as_str()), ("[1] 2\n", ""));
}

#[test]
fn a_host_whose_local_daemons_cannot_start_exits_with_failure() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("bin");
    std::fs::create_dir(&empty).unwrap();
    let out = hako()
        .args(["host", "--local", "1"])
        .env("HAKO_ASSETS", dir.path().join("assets"))
        .env("PATH", &empty)
        .env_remove("HAKO_WEBR_TARBALL")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("local daemons failed to start"), "{err}");
    assert!(err.contains("`npm` is not on PATH"), "{err}");
}
