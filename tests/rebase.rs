//! `Sandbox::rebase`: what `everywhere()` sets up becomes the state every
//! reset returns to, while a task's own changes still go, through every
//! kind of reset (in place, re-created after a new library, rebuilt after
//! a crash); and an old base is freed, not kept.

use hako_runtime::SandboxError;
use hako_tests::{eval_ok, sandbox};
use std::sync::{Mutex, MutexGuard};

/// One test at a time: the leak check counts this process's images.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Open descriptors and mappings of this process that are rebased images.
fn base_images() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().contains("memfd:hako-base"))
        .count();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:hako-base"))
        .count();
    (fds, maps)
}

fn state(sb: &mut hako_runtime::Sandbox) -> String {
    eval_ok(
        sb,
        r#"cat(exists("kept"), exists("mine"), "package:stats4" %in% search(), "\n")"#,
    )
}

#[test]
fn everywhere_state_survives_resets_and_task_state_does_not() {
    let _serial = serial();
    let mut sb = sandbox();
    eval_ok(&mut sb, "kept <- 42; library(stats4)");
    assert!(!sb.rebased());
    sb.rebase().unwrap();
    assert!(sb.rebased());

    // An ordinary reset (memory copied back in place).
    eval_ok(&mut sb, "mine <- 1; kept <- 0");
    sb.reset().unwrap();
    assert_eq!(state(&mut sb).trim(), "TRUE FALSE TRUE");
    assert_eq!(eval_ok(&mut sb, "cat(kept)"), "42");

    // A base may hold a shared library too (splines.so): re-created with it.
    let mut with_lib = sandbox();
    eval_ok(&mut with_lib, "library(splines); knots <- 3");
    with_lib.rebase().unwrap();
    eval_ok(&mut with_lib, "mine <- 1");
    with_lib.reset().unwrap();
    assert_eq!(
        eval_ok(
            &mut with_lib,
            "cat(exists('mine'), knots, ncol(splines::bs(1:10, df = 4)))"
        ),
        "FALSE 3 4"
    );
    drop(with_lib);

    // A task that loads a shared library changes the linker's shape: the
    // sandbox is re-created, on its own base.
    eval_ok(&mut sb, "mine <- 1; library(splines)");
    sb.reset().unwrap();
    assert_eq!(state(&mut sb).trim(), "TRUE FALSE TRUE");
    assert_eq!(
        eval_ok(&mut sb, r#"cat("package:splines" %in% search())"#),
        "FALSE"
    );

    // A task that ends R is rebuilt from the same base.
    match sb.eval("mine <- 1; quit(status = 3)") {
        Err(SandboxError::Crashed { .. }) => {}
        other => panic!("expected a crash, got {other:?}"),
    }
    sb.reset().unwrap();
    assert!(sb.rebased());
    assert_eq!(state(&mut sb).trim(), "TRUE FALSE TRUE");

    // A second rebase keeps both, and forgetting the base goes back to R's
    // own start.
    eval_ok(&mut sb, "also <- 1");
    sb.rebase().unwrap();
    eval_ok(&mut sb, "mine <- 1");
    sb.reset().unwrap();
    assert_eq!(
        eval_ok(
            &mut sb,
            r#"cat(exists("also"), exists("kept"), exists("mine"))"#
        ),
        "TRUE TRUE FALSE"
    );
    sb.unbase();
    sb.reset().unwrap();
    assert!(!sb.rebased());
    assert_eq!(state(&mut sb).trim(), "FALSE FALSE FALSE");
}

/// A base holds no RNG state: tasks after it do not all draw the same
/// numbers (their own seed, or fresh entropy, decides).
#[test]
fn a_base_keeps_no_rng_state() {
    let _serial = serial();
    let mut sb = sandbox();
    eval_ok(&mut sb, "invisible(runif(1)); kept <- 1");
    sb.rebase().unwrap();
    let mut draws = Vec::new();
    for _ in 0..3 {
        draws.push(eval_ok(&mut sb, "cat(kept, runif(1))"));
        sb.reset().unwrap();
    }
    assert!(draws.iter().all(|d| d.starts_with("1 ")), "{draws:?}");
    assert!(draws[0] != draws[1] && draws[1] != draws[2], "{draws:?}");
}

#[test]
fn rebasing_again_frees_the_old_base() {
    let _serial = serial();
    let mut sb = sandbox();
    for i in 0..12 {
        eval_ok(&mut sb, &format!("x{i} <- {i}"));
        sb.rebase().unwrap();
    }
    // This sandbox's one base: its image, its read-only view and the
    // memory mapped from it.
    let (fds, maps) = base_images();
    assert_eq!(fds, 1, "rebased images still open");
    assert!(maps <= 3, "{maps} mappings of rebased images");
    assert_eq!(eval_ok(&mut sb, "cat(x0 + x11)"), "11");
    drop(sb);
}

/// This process's resident set, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// An idle daemon gives its sandbox's pages back after a reset
/// (`release_memory`): the memory reads as its base again, pristine or
/// rebased, and the resident set shrinks by the pages R had touched.
#[test]
fn released_memory_reads_as_the_base_again() {
    let _serial = serial();
    let mut sb = sandbox();
    // Small tasks bring the image's pages they read in, and their resets
    // copy back what they wrote: both stay resident until released.
    for _ in 0..50 {
        eval_ok(&mut sb, "x <- summary(c(1, 2, 3))");
        sb.reset().unwrap();
    }
    let before = rss_kib();
    sb.release_memory().unwrap();
    let after = rss_kib();
    assert!(
        after + 2 * 1024 < before,
        "RSS {before} KiB before release, {after} KiB after"
    );
    assert_eq!(eval_ok(&mut sb, "cat(exists('x'), 1 + 1)"), "FALSE 2");
    sb.reset().unwrap();

    eval_ok(&mut sb, "kept <- 42; library(stats4)");
    sb.rebase().unwrap();
    eval_ok(&mut sb, "mine <- 1; kept <- 0");
    sb.reset().unwrap();
    sb.release_memory().unwrap();
    assert_eq!(state(&mut sb).trim(), "TRUE FALSE TRUE");
    assert_eq!(eval_ok(&mut sb, "cat(kept)"), "42");
}
