//! R inside the sandbox behaves like R.

use hako_runtime::Stream;
use hako_tests::{eval_err, eval_ok, sandbox, text};

#[test]
fn integer_overflow_is_na_with_a_warning() {
    let mut sb = sandbox();
    let r = sb.eval("x <- .Machine$integer.max + 1L; print(x)").unwrap();
    assert!(r.ok);
    assert_eq!(text(&r.output, Stream::Stdout), "[1] NA\n");
    let w = text(&r.output, Stream::Warning);
    assert!(
        w.contains("NAs produced by integer overflow"),
        "warning: {w:?}"
    );
}

#[test]
fn utf8_round_trips() {
    let mut sb = sandbox();
    let out = eval_ok(
        &mut sb,
        r#"s <- "箱 naïve €"; cat(s, nchar(s), nchar(s, type = "bytes"), utf8ToInt("箱"), sep = "|")"#,
    );
    assert_eq!(out, "箱 naïve €|9|14|31665");
}

#[test]
fn regex_tre_and_pcre() {
    let mut sb = sandbox();
    let out = eval_ok(
        &mut sb,
        r#"cat(gsub("[aeiou]+", "_", "education"), regmatches("a1b22c333", gregexpr("[0-9]+", "a1b22c333"))[[1]], grepl("(?<=a)b", "ab", perl = TRUE), sub("(\\w+) (\\w+)", "\\2 \\1", "hello world", perl = TRUE), sep = ",")"#,
    );
    assert_eq!(out, "_d_c_t_n,1,22,333,TRUE,world hello");
}

#[test]
fn formatting() {
    let mut sb = sandbox();
    let out = eval_ok(
        &mut sb,
        r#"cat(sprintf("%5.2f|%-4d|%e|%s", pi, 7L, 12345.678, "x"), format(1234567.891, big.mark = ","), formatC(3.14159, width = 10, format = "f", digits = 2), format(TRUE), sep = "\n")"#,
    );
    assert_eq!(
        out,
        " 3.14|7   |1.234568e+04|x\n1,234,568\n      3.14\nTRUE\n"
    );
}

#[test]
fn time_zones_across_dst() {
    let mut sb = sandbox();
    // 2024-03-31 00:30 UTC and 01:30 UTC straddle the EU change (01:00 UTC);
    // 2024-03-10 06:30/07:30 UTC straddle the US change (07:00 UTC).
    let out = eval_ok(
        &mut sb,
        r#"t <- as.POSIXct(c("2024-03-31 00:30:00", "2024-03-31 01:30:00", "2024-03-10 06:30:00", "2024-03-10 07:30:00"), tz = "UTC")
for (tz in c("Europe/London", "America/New_York", "Asia/Tokyo")) cat(tz, format(t, "%H:%M %Z", tz = tz), "\n")"#,
    );
    assert_eq!(
        out,
        "Europe/London 00:30 GMT 02:30 BST 06:30 GMT 07:30 GMT \n\
         America/New_York 20:30 EDT 21:30 EDT 01:30 EST 03:30 EDT \n\
         Asia/Tokyo 09:30 JST 10:30 JST 15:30 JST 16:30 JST \n"
    );
}

#[test]
fn linear_algebra_and_models() {
    let mut sb = sandbox();
    let out = eval_ok(
        &mut sb,
        r#"set.seed(42)
m <- matrix(c(4, 2, 2, 3), 2)
fit <- lm(mpg ~ wt, data = mtcars)
g <- glm(am ~ wt, data = mtcars, family = binomial)
o <- optim(c(-1.2, 1), function(x) 100 * (x[2] - x[1]^2)^2 + (1 - x[1])^2, method = "BFGS")
cat(round(coef(fit), 4), round(coef(g), 3), round(o$par, 3),
    solve(m, c(1, 2)), round(qr.R(qr(m))[1, 1], 4), round(svd(m)$d, 4),
    round(chol(m)[1, 2], 4), round(eigen(m)$values, 4), sep = " ")"#,
    );
    assert_eq!(
        out,
        "37.2851 -5.3445 12.04 -4.024 1 1 -0.125 0.75 -4.4721 5.5616 1.4384 1 5.5616 1.4384"
    );
}

#[test]
fn s4_closures_environments() {
    let mut sb = sandbox();
    let out = eval_ok(
        &mut sb,
        r#"setClass("P", representation(x = "numeric"))
invisible(setGeneric("area", function(s) standardGeneric("area")))
setMethod("area", "P", function(s) s@x^2)
counter <- function() { i <- 0; function() { i <<- i + 1; i } }
f <- counter(); invisible(f()); invisible(f())
e <- new.env(); assign("k", 5, envir = e)
cat(area(new("P", x = 3)), f(), get("k", envir = e), isVirtualClass("P"), sep = ",")"#,
    );
    assert_eq!(out, "9,3,5,FALSE");
}

#[test]
fn conditions_and_on_exit() {
    let mut sb = sandbox();
    let r = sb
        .eval(
            r#"log <- character()
f <- function() { on.exit(log <<- c(log, "exit")); warning("w1"); stop("boom") }
r <- tryCatch(withCallingHandlers(f(), warning = function(w) { log <<- c(log, conditionMessage(w)); invokeRestart("muffleWarning") }), error = function(e) conditionMessage(e))
message("to stderr")
warning("top-level warning")
cat(r, log, sep = ",")"#,
        )
        .unwrap();
    assert!(r.ok);
    assert_eq!(text(&r.output, Stream::Stdout), "boom,w1,exit");
    assert_eq!(text(&r.output, Stream::Message), "to stderr\n");
    assert!(text(&r.output, Stream::Warning).contains("top-level warning"));
}

#[test]
fn errors_print_like_r_and_the_next_evaluation_works() {
    let mut sb = sandbox();
    let err = eval_err(&mut sb, "f <- function(x) stop('bad input: ', x); f(3)");
    assert_eq!(err, "Error in f(3) : bad input: 3\n");
    assert_eq!(eval_ok(&mut sb, "1 + 1"), "[1] 2\n");
    let err = eval_err(&mut sb, "this is not R");
    assert!(err.starts_with("Error: "), "{err}");
}

#[test]
fn visible_values_print_and_invisible_do_not() {
    let mut sb = sandbox();
    assert_eq!(
        eval_ok(&mut sb, "x <- 5; invisible(7); x; c(a = 1, b = 2)"),
        "[1] 5\na b \n1 2 \n"
    );
}

#[test]
fn deep_recursion_is_an_r_error_and_the_next_evaluation_works() {
    let mut sb = sandbox();
    let err = eval_err(
        &mut sb,
        "f <- function(n) if (n == 0) 0 else 1 + f(n - 1); f(1e5)",
    );
    assert!(
        err.contains("C stack usage")
            || err.contains("nested too deeply")
            || err.contains("infinite recursion"),
        "{err}"
    );
    assert_eq!(eval_ok(&mut sb, "f(100)"), "[1] 100\n");
}

#[test]
fn reset_restores_the_pristine_state() {
    let mut sb = sandbox();
    eval_ok(
        &mut sb,
        "x <- 42; writeLines('hi', '/tmp/f.txt'); options(digits = 3)",
    );
    assert_eq!(eval_ok(&mut sb, "cat(x, readLines('/tmp/f.txt'))"), "42 hi");
    sb.reset().unwrap();
    assert_eq!(
        eval_ok(
            &mut sb,
            "cat(exists('x'), file.exists('/tmp/f.txt'), getOption('digits'))"
        ),
        "FALSE FALSE 7"
    );
    // A task that loads a package module changes the linked state; reset copes.
    eval_ok(&mut sb, "library(splines); invisible(bs(1:10, df = 4))");
    sb.reset().unwrap();
    assert_eq!(
        eval_ok(&mut sb, "cat('splines' %in% loadedNamespaces())"),
        "FALSE"
    );
}

#[test]
fn matrix_products_match_the_definition() {
    // %*%, crossprod and tcrossprod go through the native dgemm; check them
    // against sums of products, including transposes, odd shapes and
    // sub-matrices.
    let mut sb = sandbox();
    let out = eval_ok(
        &mut sb,
        r#"set.seed(7)
naive <- function(a, b) outer(seq_len(nrow(a)), seq_len(ncol(b)), Vectorize(function(i, j) sum(a[i, ] * b[, j])))
a <- matrix(rnorm(37 * 23), 37); b <- matrix(rnorm(23 * 11), 23); c <- matrix(rnorm(37 * 11), 37)
ok <- c(isTRUE(all.equal(a %*% b, naive(a, b))),
        isTRUE(all.equal(crossprod(a, c), naive(t(a), c))),
        isTRUE(all.equal(tcrossprod(b[, 1:5], a[1:11, 1:5]), naive(b[, 1:5], t(a[1:11, 1:5])))),
        isTRUE(all.equal(a[2:30, ] %*% b[, 3:9], naive(a[2:30, ], b[, 3:9]))),
        identical(dim(matrix(0, 0, 3) %*% matrix(0, 3, 4)), c(0L, 4L)),
        isTRUE(all.equal(solve(crossprod(a)) %*% crossprod(a), diag(23))))
cat(ok)"#,
    );
    assert_eq!(out, "TRUE TRUE TRUE TRUE TRUE TRUE");
}

/// `serialize(<make>)` evaluated by R in a sandbox, read back by the host.
fn r_bytes(make: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut sb = hako_tests::sandbox_with(hako_runtime::SandboxConfig {
        mounts: vec![hako_runtime::MountSpec {
            host_dir: dir.path().to_path_buf(),
            guest_path: "/out".into(),
            writable: true,
        }],
        ..hako_runtime::SandboxConfig::default()
    });
    eval_ok(
        &mut sb,
        &format!("writeBin(serialize({make}, NULL), '/out/bytes')"),
    );
    std::fs::read(dir.path().join("bytes")).unwrap()
}

fn task_value(sb: &mut hako_runtime::Sandbox, task: &[u8]) -> Vec<u8> {
    match sb.eval_task(task).unwrap().outcome {
        hako_runtime::TaskOutcome::Value(v) => v,
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_sandbox_and_unseeded_task_draws_its_own_random_numbers() {
    let draw = "cat(runif(2))";
    let a = eval_ok(&mut sandbox(), draw);
    let b = eval_ok(&mut sandbox(), draw);
    assert_ne!(a, b, "two fresh sandboxes drew the same numbers");
    // tempfile() names too (they matter in mounts sandboxes share).
    let name = "cat(basename(tempfile()))";
    assert_ne!(eval_ok(&mut sandbox(), name), eval_ok(&mut sandbox(), name));
    let mut sb = sandbox();
    let c = eval_ok(&mut sb, draw);
    sb.reset().unwrap();
    assert_ne!(
        c,
        eval_ok(&mut sb, draw),
        "a reset sandbox repeated its draw"
    );
    // State the session made itself stays: set.seed() then draws reproduce.
    eval_ok(&mut sb, "set.seed(7)");
    let d = eval_ok(&mut sb, draw);
    eval_ok(&mut sb, "set.seed(7)");
    assert_eq!(d, eval_ok(&mut sb, draw));

    // Tasks: without a seed each draws anew; with the R package's seed
    // (L'Ecuyer-CMRG .Random.seed in payload$seed) they reproduce.
    let unseeded = r_bytes("list(quote(runif(2)), list())");
    let seeded = r_bytes(
        "local({ RNGkind(\"L'Ecuyer-CMRG\"); set.seed(11); list(quote(runif(2)), list(), seed = .Random.seed) })",
    );
    let mut sb = sandbox();
    let t1 = task_value(&mut sb, &unseeded);
    sb.reset().unwrap();
    let t2 = task_value(&mut sb, &unseeded);
    assert_ne!(t1, t2, "two unseeded tasks drew the same numbers");
    let s1 = task_value(&mut sb, &seeded);
    sb.reset().unwrap();
    let s2 = task_value(&mut sandbox(), &seeded);
    assert_eq!(s1, s2, "a seeded task did not reproduce");
    assert_eq!(s1, task_value(&mut sb, &seeded));
}
