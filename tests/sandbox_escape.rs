//! Escape attempts: each must fail inside R, and the sandbox must still work.

use hako_runtime::{MountSpec, SandboxConfig};
use hako_tests::{eval_err, eval_ok, sandbox, sandbox_with};
use std::os::unix::fs::symlink;

/// Evaluate `code`, which must print exactly `expected`, then check that the
/// sandbox still evaluates correctly.
fn holds(sb: &mut hako_runtime::Sandbox, code: &str, expected: &str) {
    assert_eq!(eval_ok(sb, code), expected, "for {code}");
    assert_eq!(eval_ok(sb, "cat(6 * 7)"), "42");
}

#[test]
fn host_files_do_not_exist() {
    let mut sb = sandbox();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    holds(
        &mut sb,
        &format!(
            r#"cat(file.exists("/etc/passwd"), file.exists("/proc/self/environ"), file.exists("{home}"),
                  inherits(try(readLines("/etc/passwd"), silent = TRUE), "try-error"),
                  file.exists("/root/.cargo"), sep = ",")"#
        ),
        "FALSE,FALSE,FALSE,TRUE,FALSE",
    );
}

#[test]
fn root_lists_only_the_sandbox() {
    let mut sb = sandbox();
    holds(
        &mut sb,
        r#"cat(sort(list.files("/")), sep = ",")"#,
        "dev,home,tmp,usr",
    );
}

#[test]
fn writes_outside_tmp_and_home_fail() {
    let mut sb = sandbox();
    holds(
        &mut sb,
        r#"w <- function(p) !inherits(try(suppressWarnings(writeLines("x", p)), silent = TRUE), "try-error")
cat(w("/usr/lib/R/evil"), w("/etc/evil"), w("/evil"), w("/tmp/ok"), w("~/ok"), sep = ",")"#,
        "FALSE,FALSE,FALSE,TRUE,TRUE",
    );
}

#[test]
fn environment_has_no_host_variables() {
    std::env::set_var("HAKO_TEST_SECRET", "s3cr3t");
    let mut sb = sandbox();
    holds(
        &mut sb,
        r#"e <- Sys.getenv(); cat(any(grepl("s3cr3t|HAKO_TEST_SECRET|CARGO", c(names(e), e))), Sys.getenv("HOME"), sep = ",")"#,
        "FALSE,/home/web_user",
    );
}

#[test]
fn no_network() {
    let mut sb = sandbox();
    for code in [
        r#"socketConnection("127.0.0.1", 22, timeout = 1)"#,
        r#"readLines(url("http://127.0.0.1:9/"))"#,
        r#"download.file("http://127.0.0.1:9/x", "/tmp/x", quiet = TRUE)"#,
    ] {
        let err = eval_err(&mut sb, code);
        assert!(err.starts_with("Error"), "{code}: {err}");
        assert_eq!(eval_ok(&mut sb, "cat(1)"), "1");
    }
}

#[test]
fn no_processes() {
    let mut sb = sandbox();
    for code in [
        r#"system("id")"#,
        r#"system2("id")"#,
        r#"system("id", intern = TRUE)"#,
    ] {
        let err = eval_err(&mut sb, code);
        assert!(
            err.contains("not available in the hako sandbox"),
            "{code}: {err}"
        );
    }
    let err = eval_err(&mut sb, r#"readLines(pipe("id"))"#);
    assert!(err.starts_with("Error"), "{err}");
    assert_eq!(eval_ok(&mut sb, "cat(1)"), "1");
}

/// A host tree: `data/` to mount, `secret.txt` beside it, and links that try
/// to lead out of `data/`.
fn host_tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("hello.txt"), "inside\n").unwrap();
    std::fs::write(t.path().join("secret.txt"), "SECRET\n").unwrap();
    symlink(t.path().join("secret.txt"), data.join("abs_link")).unwrap();
    symlink("../secret.txt", data.join("rel_link")).unwrap();
    symlink("../rel_link", data.join("sub").join("chain")).unwrap();
    symlink("hello.txt", data.join("ok_link")).unwrap();
    t
}

fn mount(t: &tempfile::TempDir, writable: bool) -> SandboxConfig {
    SandboxConfig {
        mounts: vec![MountSpec {
            host_dir: t.path().join("data"),
            guest_path: "/data".into(),
            writable,
        }],
        ..SandboxConfig::default()
    }
}

const READS: &str =
    r#"r <- function(p) tryCatch(suppressWarnings(readLines(p)), error = function(e) "DENIED")"#;

#[test]
fn mount_escapes_are_refused() {
    let t = host_tree();
    let mut sb = sandbox_with(mount(&t, false));
    holds(
        &mut sb,
        &format!(
            "{READS}\ncat(r('/data/hello.txt'), r('/data/../secret.txt'), r('/data/sub/../../secret.txt'), r('/data/abs_link'), r('/data/rel_link'), r('/data/sub/chain'), r('/data/ok_link'), sep = ',')"
        ),
        "inside,DENIED,DENIED,DENIED,DENIED,DENIED,inside",
    );
}

#[test]
fn read_only_mount_refuses_writes() {
    let t = host_tree();
    let mut sb = sandbox_with(mount(&t, false));
    holds(
        &mut sb,
        r#"w <- function(f) !inherits(try(suppressWarnings(f), silent = TRUE), "try-error") && !isFALSE(f)
cat(w(writeLines("x", "/data/new.txt")), suppressWarnings(file.remove("/data/hello.txt")), suppressWarnings(dir.create("/data/d")), sep = ",")"#,
        "FALSE,FALSE,FALSE",
    );
    assert_eq!(
        std::fs::read_to_string(t.path().join("data/hello.txt")).unwrap(),
        "inside\n"
    );
    assert!(!t.path().join("data/new.txt").exists());
}

#[test]
fn read_write_mount_keeps_symlinks_and_renames_inside() {
    let t = host_tree();
    let mut sb = sandbox_with(mount(&t, true));
    holds(
        &mut sb,
        &format!(
            r#"{READS}
writeLines("made inside", "/data/made.txt")
a <- suppressWarnings(file.symlink("{secret}", "/data/evil_abs"))
b <- suppressWarnings(file.symlink("../secret.txt", "/data/evil_rel"))
c <- suppressWarnings(file.symlink("made.txt", "/data/good_rel"))
d <- suppressWarnings(file.rename("/data/made.txt", "/tmp/moved.txt"))
cat(a, b, c, d, r("/data/evil_abs"), r("/data/evil_rel"), r("/data/good_rel"), sep = ",")"#,
            secret = t.path().join("secret.txt").display()
        ),
        "FALSE,FALSE,TRUE,FALSE,DENIED,DENIED,made inside",
    );
    assert_eq!(
        std::fs::read_to_string(t.path().join("data/made.txt")).unwrap(),
        "made inside\n"
    );
    assert!(
        !t.path().join("data/evil_abs").exists()
            && std::fs::symlink_metadata(t.path().join("data/evil_abs")).is_err()
    );
    assert!(std::fs::symlink_metadata(t.path().join("data/evil_rel")).is_err());
}

#[test]
fn only_permission_bits_reach_host_files() {
    use std::os::unix::fs::PermissionsExt;
    let t = host_tree();
    let mut sb = sandbox_with(mount(&t, true));
    holds(
        &mut sb,
        r##"writeLines("#!/bin/sh", "/data/s1"); writeLines("x", "/data/s2")
dir.create("/data/gdir", mode = "2777")
a <- Sys.chmod("/data/s1", "4755", use_umask = FALSE)
b <- Sys.chmod("/data/s2", "6777", use_umask = FALSE)
c <- Sys.chmod("/data/gdir", "2775", use_umask = FALSE)
d <- Sys.chmod("/data/sub", "1777", use_umask = FALSE)
cat(a, b, c, d, sep = ",")"##,
        "TRUE,TRUE,TRUE,TRUE",
    );
    let mode = |p: &str| {
        std::fs::metadata(t.path().join("data").join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("s1"), 0o755);
    assert_eq!(mode("s2"), 0o777);
    assert_eq!(mode("gdir"), 0o775);
    assert_eq!(mode("sub"), 0o777);
}

#[test]
fn readlink_shows_only_targets_inside_the_mount() {
    let t = host_tree();
    symlink("sub/../hello.txt", t.path().join("data/inner")).unwrap();
    for writable in [false, true] {
        let mut sb = sandbox_with(mount(&t, writable));
        holds(
            &mut sb,
            r#"cat(Sys.readlink(c("/data/rel_link", "/data/sub/chain", "/data/abs_link", "/data/ok_link", "/data/inner", "/data/hello.txt")), sep = ",")"#,
            // sub/chain's target names a link inside the mount: shown
            // (following it is refused, see mount_escapes_are_refused).
            ",../rel_link,,hello.txt,sub/../hello.txt,",
        );
    }
}
