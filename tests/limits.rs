//! Limits stop an evaluation with a typed error; the next evaluation works.

use hako_runtime::{Limit, SandboxConfig, Stream};
use hako_tests::{eval_limit, eval_ok, sandbox_with, text};
use std::time::{Duration, Instant};

#[test]
fn infinite_loop_stops_at_the_deadline() {
    let mut sb = sandbox_with(SandboxConfig {
        timeout: Some(Duration::from_millis(1500)),
        ..SandboxConfig::default()
    });
    let t = Instant::now();
    let (limit, _) = eval_limit(&mut sb, "while (TRUE) {}");
    let took = t.elapsed();
    println!("infinite loop stopped after {took:?} (deadline 1.5 s)");
    assert_eq!(limit, Limit::Time);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(eval_ok(&mut sb, "cat(1 + 1)"), "2");
}

#[test]
fn interrupt_from_another_thread() {
    let mut sb = sandbox_with(SandboxConfig::default());
    let h = sb.interrupt_handle();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        h.interrupt();
    });
    let (limit, _) = eval_limit(&mut sb, "repeat x <- sqrt(2)");
    t.join().unwrap();
    assert_eq!(limit, Limit::Interrupted);
    assert_eq!(eval_ok(&mut sb, "cat(3)"), "3");
}

#[test]
fn big_allocation_hits_the_memory_cap() {
    let mut sb = sandbox_with(SandboxConfig {
        memory_bytes: 512 << 20,
        ..SandboxConfig::default()
    });
    let (limit, out) = eval_limit(&mut sb, "x <- numeric(3e8)");
    assert_eq!(limit, Limit::Memory);
    assert!(
        text(&out, Stream::Stderr).contains("cannot allocate"),
        "{out:?}"
    );
    assert_eq!(eval_ok(&mut sb, "cat(sum(1:10))"), "55");
    let (limit, _) = eval_limit(
        &mut sb,
        "l <- list(); i <- 0; repeat { i <- i + 1; l[[i]] <- numeric(1e6) }",
    );
    assert_eq!(limit, Limit::Memory);
    assert_eq!(eval_ok(&mut sb, "cat(exists('l'))"), "TRUE");
    sb.reset().unwrap();
    assert_eq!(eval_ok(&mut sb, "cat(exists('l'))"), "FALSE");
}

#[test]
fn output_flood_is_capped() {
    let mut sb = sandbox_with(SandboxConfig {
        output_bytes: 64 << 10,
        ..SandboxConfig::default()
    });
    let (limit, out) = eval_limit(&mut sb, "repeat cat(strrep('x', 1000), '\\n')");
    assert_eq!(limit, Limit::Output);
    let total: usize = out.iter().map(|c| c.bytes.len()).sum();
    assert!(total <= 64 << 10, "{total}");
    assert_eq!(eval_ok(&mut sb, "cat('ok')"), "ok");
}

#[test]
fn short_output_overflow_is_reported() {
    let mut sb = sandbox_with(SandboxConfig {
        output_bytes: 1000,
        ..SandboxConfig::default()
    });
    // Finishes before R's event hook could stop it: still reported.
    let (limit, out) = eval_limit(&mut sb, "cat(strrep('y', 5000))");
    assert_eq!(limit, Limit::Output);
    assert_eq!(text(&out, Stream::Stdout).len(), 1000);
    assert_eq!(eval_ok(&mut sb, "cat('ok')"), "ok");
}

#[test]
fn a_long_native_matrix_product_still_meets_the_deadline() {
    let mut sb = sandbox_with(SandboxConfig {
        timeout: Some(Duration::from_millis(500)),
        ..SandboxConfig::default()
    });
    let t = Instant::now();
    let (limit, _) = eval_limit(
        &mut sb,
        "x <- matrix(runif(9e6), 3000); repeat x <- x %*% x",
    );
    let took = t.elapsed();
    println!("matrix product loop stopped after {took:?} (deadline 0.5 s)");
    assert_eq!(limit, Limit::Time);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(eval_ok(&mut sb, "cat(2 * 21)"), "42");
}
