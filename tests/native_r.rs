//! Agreement with native R (Debian's R), where it is installed.

use hako_runtime::{SandboxConfig, TaskOutcome};
use hako_tests::{eval_ok, rscript, sandbox, sandbox_with};
use std::process::Command;

fn native(code: &str) -> String {
    let out = Command::new("Rscript")
        .args(["--vanilla", "-e", code])
        .output()
        .expect("running Rscript");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn runif_matches_native_r() {
    let code = "set.seed(1); cat(sprintf('%.15f', runif(3)))";
    let mut sb = sandbox();
    let ours = eval_ok(&mut sb, code);
    assert_eq!(
        ours,
        "0.265508663142100 0.372123899636790 0.572853363351896"
    );
    if rscript().is_some() {
        assert_eq!(ours, native(code));
    }
}

#[test]
fn serialize_round_trips_with_native_r() {
    let Some(_) = rscript() else {
        eprintln!("Rscript not installed: native interop not checked");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let value = r#"list(a = 1:3, b = "箱", c = data.frame(x = c(1.5, NA)), d = factor(c("u", "v")), f = quote(x + 1))"#;
    // Native R writes, the sandbox reads (through a mount).
    native(&format!(
        "saveRDS({value}, '{}/from_native.rds', version = 3)",
        dir.path().display()
    ));
    let mut sb = sandbox_with(SandboxConfig {
        mounts: vec![hako_runtime::MountSpec {
            host_dir: dir.path().to_path_buf(),
            guest_path: "/x".into(),
            writable: true,
        }],
        ..SandboxConfig::default()
    });
    assert_eq!(
        eval_ok(
            &mut sb,
            &format!("cat(identical(readRDS('/x/from_native.rds'), {value}))")
        ),
        "TRUE"
    );
    // The sandbox writes, native R reads.
    eval_ok(
        &mut sb,
        &format!("saveRDS({value}, '/x/from_wasm.rds', version = 3)"),
    );
    let r = native(&format!(
        "cat(identical(readRDS('{}/from_wasm.rds'), {value}))",
        dir.path().display()
    ));
    assert_eq!(r, "TRUE");
}

#[test]
fn task_bytes_are_native_serialize() {
    let Some(_) = rscript() else { return };
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("task.bin");
    native(&format!(
        "writeBin(serialize(list(quote(sum(x) * k), list(x = 1:10, k = 2)), NULL, version = 3), '{}')",
        task.display()
    ));
    let bytes = std::fs::read(&task).unwrap();
    let mut sb = sandbox();
    let r = sb.eval_task(&bytes).unwrap();
    let TaskOutcome::Value(v) = r.outcome else {
        panic!("expected a value")
    };
    std::fs::write(dir.path().join("value.bin"), &v).unwrap();
    let out = native(&format!(
        "cat(unserialize(readBin('{0}', 'raw', 1e6)))",
        dir.path().join("value.bin").display()
    ));
    assert_eq!(out, "110");
    // An error comes back as a hakoError value with the call and a trace.
    let err_task = dir.path().join("err.bin");
    native(&format!(
        "writeBin(serialize(list(quote({{f <- function(x) stop('nope'); g <- function() f(1); g()}}), list()), NULL, version = 3), '{}')",
        err_task.display()
    ));
    let r = sb.eval_task(&std::fs::read(&err_task).unwrap()).unwrap();
    let TaskOutcome::Error(e) = r.outcome else {
        panic!("expected an error value")
    };
    std::fs::write(dir.path().join("e.bin"), &e).unwrap();
    let out = native(&format!(
        "e <- unserialize(readBin('{0}', 'raw', 1e6)); cat(class(e), attr(e, 'message'), deparse(attr(e, 'call')), attr(e, 'condition.class'), vapply(attr(e, 'stack.trace'), deparse, ''), sep = '|')",
        dir.path().join("e.bin").display()
    ));
    assert_eq!(out, "hakoError|errorValue|try-error|nope|f(1)|simpleError|error|condition|stop(\"nope\")|f(1)|g()");
}
