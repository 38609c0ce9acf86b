//! Limits stop an evaluation with a typed error; the next evaluation works.

use hako_runtime::{Limit, SandboxConfig, SandboxError, Stream, TaskOutcome};
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

/// Builds a call and a list nested 2e5 deep: C code without a stack check
/// (deparse, unlist, ...) recurses through them.
const DEEP: &str = "x <- quote(1); for (i in 1:2e5) x <- call('f', x)
l <- NULL; for (i in 1:2e5) l <- list(i, l)";

#[test]
fn deep_objects_end_as_errors_not_crashes() {
    // The test harness's threads have a 2 MiB stack: the runtime must not
    // run wasm on them (it would overflow the native stack and abort).
    let mut sb = sandbox_with(SandboxConfig::default());
    for code in [
        "deparse(x)",
        "all.names(x)",
        "unlist(l)",
        "rapply(l, function(v) v, how = 'list')",
        "format(l)",
        "f <- function(n) f(n + 1); f(1)",
    ] {
        match sb.eval(&format!("{DEEP}\n{code}")) {
            Ok(r) => {
                assert!(!r.ok, "{code} succeeded?");
                let err = text(&r.output, Stream::Stderr);
                println!("{code}: R error {err}");
                assert!(
                    err.contains("nested too deeply") || err.contains("C stack"),
                    "{code}: {err}"
                );
            }
            Err(SandboxError::Crashed { message, .. }) => {
                println!("{code}: {message}");
                assert!(message.contains("ran out of stack"), "{code}: {message}");
            }
            Err(e) => panic!("{code}: {e}"),
        }
        assert_eq!(eval_ok(&mut sb, "cat(1 + 1)"), "2", "after {code}");
    }
}

/// R's serialization (XDR, version 3) of just what the tests below need.
mod rser {
    fn int(out: &mut Vec<u8>, v: i32) {
        out.extend_from_slice(&v.to_be_bytes());
    }
    fn chars(out: &mut Vec<u8>, s: &str) {
        int(out, 9 | (64 << 12)); // CHARSXP, ASCII
        int(out, s.len() as i32);
        out.extend_from_slice(s.as_bytes());
    }
    fn sym(out: &mut Vec<u8>, s: &str) {
        int(out, 1);
        chars(out, s);
    }
    const NIL: i32 = 254;

    /// Serialization format 3 as R 4.4 writes it, UTF-8 native encoding:
    /// every payload here starts the same way.
    fn header() -> Vec<u8> {
        let mut o = b"X\n".to_vec();
        int(&mut o, 3);
        int(&mut o, 0x040400);
        int(&mut o, 0x030500);
        int(&mut o, 5);
        o.extend_from_slice(b"UTF-8");
        o
    }

    /// `list(quote(length(l)), list(l = <list nested depth deep>))`.
    pub fn length_of_deep_list(depth: usize) -> Vec<u8> {
        let mut o = header();
        int(&mut o, 19); // VECSXP of 2
        int(&mut o, 2);
        int(&mut o, 6); // LANGSXP length(l)
        sym(&mut o, "length");
        int(&mut o, 2); // LISTSXP
        sym(&mut o, "l");
        int(&mut o, NIL);
        int(&mut o, 19 | (1 << 9)); // list(l = ...), with attributes
        int(&mut o, 1);
        for i in 0..depth {
            int(&mut o, 19); // list(i, <rest>)
            int(&mut o, 2);
            int(&mut o, 13); // INTSXP of 1
            int(&mut o, 1);
            int(&mut o, i as i32);
        }
        int(&mut o, NIL);
        int(&mut o, 2 | (1 << 10)); // names attribute
        sym(&mut o, "names");
        int(&mut o, 16); // STRSXP "l"
        int(&mut o, 1);
        chars(&mut o, "l");
        int(&mut o, NIL);
        o
    }

    /// `list(<expr parsed from code>, list())`, via `str2lang` in the task.
    pub fn code(code: &str) -> Vec<u8> {
        let mut o = header();
        int(&mut o, 19);
        int(&mut o, 2);
        // eval(str2lang("<code>"))
        int(&mut o, 6);
        sym(&mut o, "eval");
        int(&mut o, 2);
        int(&mut o, 6);
        sym(&mut o, "str2lang");
        int(&mut o, 2);
        int(&mut o, 16);
        int(&mut o, 1);
        chars(&mut o, code);
        int(&mut o, NIL);
        int(&mut o, NIL);
        int(&mut o, 19);
        int(&mut o, 0);
        o
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Runaway recursion in a task ends as R's own stack error (either of its
/// messages), never as an abort of the sandbox.
fn assert_r_stack_error(sb: &mut hako_runtime::Sandbox, code: &str) {
    let r = sb.eval_task(&rser::code(code)).unwrap();
    let TaskOutcome::Error(e) = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert!(
        contains(e, "nested too deeply") || contains(e, "C stack"),
        "{}",
        String::from_utf8_lossy(e)
    );
    assert!(!contains(e, "abort"), "{}", String::from_utf8_lossy(e));
}

#[test]
fn deep_task_arguments_and_runaway_recursion_in_tasks() {
    let mut sb = sandbox_with(SandboxConfig::default());
    // Lists nested deep as an argument: unserialize() recurses in C without
    // R's stack check. 1e4 levels fit (R runs on a shadow stack as large as
    // the native allowance); 2e5 exhaust wasmtime's native allowance: a
    // typed failure, and the sandbox goes on.
    for depth in [2_000, 10_000] {
        let r = sb.eval_task(&rser::length_of_deep_list(depth)).unwrap();
        assert!(
            matches!(r.outcome, TaskOutcome::Value(_)),
            "{depth}: {:?}",
            r.outcome
        );
    }
    match sb.eval_task(&rser::length_of_deep_list(200_000)) {
        Err(SandboxError::Crashed { message, .. }) => {
            assert!(message.contains("ran out of stack"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let small = sb.eval_task(&rser::length_of_deep_list(3)).unwrap();
    assert!(
        matches!(small.outcome, TaskOutcome::Value(_)),
        "{:?}",
        small.outcome
    );
    assert_r_stack_error(&mut sb, "{ f <- function(n) f(n + 1); f(1) }");
    // Out of R's C stack in method dispatch: R's message again.
    assert_r_stack_error(
        &mut sb,
        "{ p <- function(n) print(structure(list(n), class = 'zz')); print.zz <- function(x, ...) p(x[[1]] + 1); p(1) }",
    );
    let r = sb.eval_task(&rser::length_of_deep_list(2_000)).unwrap();
    assert!(matches!(r.outcome, TaskOutcome::Value(_)));
}
