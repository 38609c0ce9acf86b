//! The verifier against real R's serializations (generated with native
//! Rscript at test time) and against every refused form crafted as bytes.

use super::*;
use std::path::PathBuf;
use std::process::Command;

/// Values people return, serialized by native R (version 3 and 2).
const ALLOWED_R: &str = r#"
setClass("Pt", representation(x = "numeric", y = "numeric"))
make_counter <- function() { n <- 0; function() { n <<- n + 1; n } }
e <- new.env(); assign("a", 1:3, e); lockBinding("a", e)
f <- function(n) { force(n); function(x, y = 2, ...) x + y + n }
vals <- list(
  null = NULL, lgl = c(TRUE, NA), int = c(1L, NA), real = c(1.5, NA, Inf), cplx = 1i,
  str = c("a", NA, "\u00e9"), raw = as.raw(1:3), seq = 1:10, rseq = as.numeric(1:10) + 0,
  revseq = 10:1, dstr = as.character(1:3), dstr2 = as.character(c(1.5, 2)),
  sorted = sort(c(3L, 1L, 2L)), sortedr = sort(c(3, 1, 2)), sorteds = sort(c("b", "a")),
  list = list(a = 1, b = list(c = "x", d = NULL)), matrix = matrix(1:6, 2, dimnames = list(c("a", "b"), NULL)),
  array = array(1:24, 2:4), seqdim = { m <- 1:6; dim(m) <- 2:3; m },
  df = data.frame(f = factor(c("a", "b", NA)), d = as.Date("2024-01-01") + 0:2,
                  t = as.POSIXct("2024-01-01 10:00:00", tz = "UTC") + 0:2, s = c("x", "y", "z"),
                  stringsAsFactors = FALSE),
  dfrn = data.frame(x = 1:2, row.names = c("r1", "r2")),
  lm = lm(mpg ~ wt, data = mtcars), glm = glm(am ~ wt, data = mtcars, family = binomial),
  s4 = new("Pt", x = 1, y = 2), closure = f(1), counter = make_counter(), formula = y ~ x + log(z),
  call = quote(x[, 1]), alist = alist(a = , b = 1), env = e, hashless = local({ a <- 1; environment() }),
  ts = ts(1:10, start = 2000), mts = ts(matrix(1:24, 12), frequency = 12, start = c(2000, 3)),
  qts = ts(rnorm(7), frequency = 4, start = c(1990, 2)), prim = sum, special = `if`, expr = expression(a + 1, b),
  ns = environment(lm), baseenv = baseenv(), globalfun = asNamespace("stats")$sd,
  table = table(c("a", "b", "a")), pkgenv = as.environment("package:stats"),
  empty = list(), nlist = setNames(list(), character()), factor0 = factor(character())
)
dir <- commandArgs(TRUE)[1]
for (n in names(vals)) {
  writeBin(serialize(vals[[n]], NULL, version = 3), file.path(dir, paste0(n, ".v3")))
  writeBin(serialize(vals[[n]], NULL, version = 2), file.path(dir, paste0(n, ".v2")))
}
"#;

fn r_fixtures() -> Vec<(String, Vec<u8>)> {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("hako-verify-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("gen.R");
    std::fs::write(&script, ALLOWED_R).unwrap();
    let out = Command::new("Rscript")
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("native Rscript is needed to generate the fixtures");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let p: PathBuf = e.ok()?.path();
            let name = p.file_name()?.to_string_lossy().into_owned();
            (name.ends_with(".v3") || name.ends_with(".v2"))
                .then(|| (name, std::fs::read(&p).unwrap()))
        })
        .collect();
    v.sort();
    std::fs::remove_dir_all(&dir).ok();
    v
}

#[test]
fn verify_admits_what_native_r_writes() {
    let fx = r_fixtures();
    assert!(fx.len() > 80, "only {} fixtures", fx.len());
    // native R byte-compiles base packages: their functions and the closures
    // they make (a glm's family) carry byte code, refused; the sandbox's R
    // has none (see the e2e and R package tests)
    let bytecode = ["glm", "globalfun"];
    let mut wrong = Vec::new();
    for (name, b) in &fx {
        let stem = name.split('.').next().unwrap_or("");
        match verify(b) {
            Ok(()) if !bytecode.contains(&stem) => {}
            Err(Refusal::ByteCode) if bytecode.contains(&stem) => {}
            r => wrong.push(format!("{name}: {r:?}")),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn verify_refuses_every_prefix_and_trailing_bytes() {
    for (name, b) in r_fixtures()
        .iter()
        .filter(|(n, _)| n.starts_with("lm") || n.starts_with("df") || n.starts_with("closure"))
    {
        for cut in 0..b.len() {
            assert!(verify(&b[..cut]).is_err(), "{name} cut at {cut} admitted");
        }
        let mut t = b.clone();
        t.push(0);
        assert_eq!(verify(&t), Err(Refusal::Trailing));
    }
}

/// A fixed-seed xorshift generator: the mutation tests are reproducible
/// without a dependency.
fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// One byte mutant: a flipped bit or a value that often sits on a boundary
/// (length, type, flag); the fuzz and native-R tests draw the same kinds.
fn mutate_byte(b: &mut u8, rnd: &mut impl FnMut() -> u64) {
    if rnd().is_multiple_of(2) {
        *b ^= 1 << (rnd() % 8)
    } else {
        *b = [0x00, 0xff, 0x7f, 0x80, 0x01, 0x02][(rnd() % 6) as usize]
    }
}

/// Mutants of real serializations (bit flips, truncations, splices), with
/// a fixed seed, on a thread with a small native stack: the verifier never
/// panics and never recurses natively.
#[test]
fn verify_fuzz_never_panics() {
    let fx = r_fixtures();
    let t = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || {
            let mut rnd = xorshift(0x9e37_79b9_7f4a_7c15);
            let mut admitted = 0;
            for _ in 0..40_000 {
                let (_, a) = &fx[(rnd() % fx.len() as u64) as usize];
                let mut m = a.clone();
                match rnd() % 4 {
                    0 => {
                        for _ in 0..1 + rnd() % 4 {
                            let i = (rnd() % m.len() as u64) as usize;
                            mutate_byte(&mut m[i], &mut rnd);
                        }
                    }
                    1 => {
                        let i = (rnd() % m.len() as u64) as usize;
                        m[i] = [0x00, 0xff, 0x7f, 0x80, 0xfe][(rnd() % 5) as usize];
                    }
                    2 => m.truncate((rnd() % m.len() as u64) as usize),
                    _ => {
                        let (_, b) = &fx[(rnd() % fx.len() as u64) as usize];
                        let i = (rnd() % m.len() as u64) as usize;
                        let j = (rnd() % b.len() as u64) as usize;
                        m.truncate(i);
                        m.extend_from_slice(&b[j..]);
                    }
                }
                if verify(&m).is_ok() {
                    admitted += 1;
                }
            }
            admitted
        })
        .unwrap();
    let admitted = t.join().expect("the verifier panicked");
    assert!(admitted > 0 && admitted < 40_000);
}

// Crafted bytes.

fn header() -> Vec<u8> {
    let mut b = b"X\n".to_vec();
    for v in [3i32, 0x040202, 0x030500, 5] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(b"UTF-8");
    b
}

struct B(Vec<u8>);

impl B {
    fn new() -> B {
        B(header())
    }
    fn int(mut self, v: i32) -> B {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn flags(self, ty: u8, levs: u32, attr: bool, tag: bool) -> B {
        self.int((ty as u32 | levs << 12 | (attr as u32) << 9 | (tag as u32) << 10) as i32)
    }
    fn ty(self, ty: u8) -> B {
        self.flags(ty, 0, false, false)
    }
    fn chars(mut self, s: &str) -> B {
        self = self.flags(CHARSXP, 64, false, false).int(s.len() as i32);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn sym(self, s: &str) -> B {
        self.ty(SYMSXP).chars(s)
    }
    fn nil(self) -> B {
        self.ty(NILVALUE_SXP)
    }
    fn ints(mut self, v: &[i32]) -> B {
        self = self.int(v.len() as i32);
        for x in v {
            self = self.int(*x);
        }
        self
    }
    fn reals(mut self, v: &[f64]) -> B {
        self = self.int(v.len() as i32);
        for x in v {
            self.0.extend_from_slice(&x.to_be_bytes());
        }
        self
    }
    fn strs(mut self, v: &[&str]) -> B {
        self = self.ty(STRSXP).int(v.len() as i32);
        for s in v {
            self = self.chars(s);
        }
        self
    }
    /// Starts an attribute cell `name = ...`.
    fn attr(self, name: &str) -> B {
        self.flags(LISTSXP, 0, false, true).sym(name)
    }
    /// An environment whose frame starts next: locked 0, enclos global.
    fn env(self) -> B {
        self.ty(ENVSXP).int(0).ty(GLOBALENV_SXP)
    }
    /// Ends an environment after its frame: no hash table, no attributes.
    fn env_end(self) -> B {
        self.nil().nil()
    }
    fn altrep(self, class: &str, pkg: &str, ty: u8) -> B {
        self.ty(ALTREP_SXP)
            .ty(LISTSXP)
            .sym(class)
            .ty(LISTSXP)
            .sym(pkg)
            .ty(LISTSXP)
            .ty(INTSXP)
            .ints(&[ty as i32])
            .nil()
    }
    fn done(self) -> Vec<u8> {
        self.0
    }
}

fn refused(b: Vec<u8>) -> Refusal {
    verify(&b).expect_err("admitted")
}

fn attr_refused(b: Vec<u8>, name: &str) {
    match refused(b) {
        Refusal::Attribute { name: n, .. } if n == name => {}
        other => panic!("expected a refused '{name}', got {other:?}"),
    }
}

#[test]
fn verify_crafted_baseline_is_admitted() {
    // the builders themselves produce admitted values
    verify(&B::new().ty(INTSXP).ints(&[1, 2]).done()).unwrap();
    verify(
        &B::new()
            .flags(INTSXP, 0, true, false)
            .ints(&[1, 2])
            .attr("names")
            .strs(&["a", "b"])
            .nil()
            .done(),
    )
    .unwrap();
    verify(
        &B::new()
            .env()
            .attr("x")
            .ty(REALSXP)
            .reals(&[1.0])
            .nil()
            .env_end()
            .done(),
    )
    .unwrap();
    verify(
        &B::new()
            .altrep("compact_intseq", "base", INTSXP)
            .ty(REALSXP)
            .reals(&[3.0, 1.0, 1.0])
            .nil()
            .done(),
    )
    .unwrap();
}

#[test]
fn verify_refuses_promises() {
    assert_eq!(refused(B::new().ty(PROMSXP).done()), Refusal::Promise);
    // a delayedAssign() in a returned environment: a promise with its
    // environment and code, not yet forced
    let b = B::new()
        .env()
        .attr("x")
        .flags(PROMSXP, 0, false, true)
        .ty(GLOBALENV_SXP)
        .ty(UNBOUNDVALUE_SXP)
        .ty(LANGSXP)
        .sym("system")
        .nil()
        .nil()
        .env_end()
        .done();
    assert_eq!(refused(b), Refusal::Promise);
    // forced (no environment) but without a value
    let b = B::new()
        .env()
        .attr("x")
        .ty(PROMSXP)
        .ty(UNBOUNDVALUE_SXP)
        .nil()
        .nil()
        .env_end()
        .done();
    assert!(refused(b) != Refusal::Trailing);
    // a forced promise, as a factory's argument in a closure's environment
    let b = B::new()
        .env()
        .attr("x")
        .ty(PROMSXP)
        .ty(REALSXP)
        .reals(&[1.0])
        .sym("n")
        .nil()
        .env_end()
        .done();
    verify(&b).unwrap();
    // a promise as a list element
    assert_eq!(
        refused(B::new().ty(VECSXP).int(1).ty(PROMSXP).nil().nil().done()),
        Refusal::Promise
    );
}

#[test]
fn verify_refuses_active_bindings() {
    let b = B::new()
        .env()
        .flags(LISTSXP, 1 << 15, false, true)
        .sym("y")
        .ty(REALSXP)
        .reals(&[1.0])
        .nil()
        .env_end()
        .done();
    assert_eq!(refused(b), Refusal::ActiveBinding);
}

#[test]
fn verify_refuses_code_and_handles() {
    let clo = B::new()
        .flags(CLOSXP, 0, false, true)
        .ty(GLOBALENV_SXP)
        .nil()
        .ty(BCODESXP)
        .done();
    assert_eq!(refused(clo), Refusal::ByteCode);
    for ty in [ATTRLANGSXP, ATTRLISTSXP, BCREPDEF, BCREPREF] {
        assert_eq!(refused(B::new().ty(ty).done()), Refusal::ByteCode);
    }
    assert_eq!(
        refused(B::new().ty(EXTPTRSXP).done()),
        Refusal::ExternalPointer
    );
    assert_eq!(
        refused(B::new().ty(WEAKREFSXP).done()),
        Refusal::WeakReference
    );
    assert_eq!(refused(B::new().ty(PERSISTSXP).done()), Refusal::Persistent);
    assert_eq!(refused(B::new().ty(DOTSXP).done()), Refusal::Dots);
    for ty in [0u8, 11, 12, 18, 99, 237, CLASSREFSXP, GENERICREFSXP] {
        assert_eq!(
            refused(B::new().ty(ty).done()),
            Refusal::UnknownType(ty as u32)
        );
    }
}

#[test]
fn verify_refuses_environments_of_the_wrong_shape() {
    // frame is an integer vector
    assert!(matches!(
        refused(B::new().env().ty(INTSXP).ints(&[1]).env_end().done()),
        Refusal::Malformed(_)
    ));
    // hash table that is an integer vector, or an empty list
    let b = B::new().env().nil().ty(INTSXP).ints(&[1]).nil().done();
    assert!(matches!(refused(b), Refusal::Malformed(_)));
    let b = B::new().env().nil().ty(VECSXP).int(0).nil().done();
    assert!(matches!(refused(b), Refusal::Malformed(_)));
    // hash table bucket that is not a pairlist
    let b = B::new()
        .env()
        .nil()
        .ty(VECSXP)
        .int(1)
        .ty(INTSXP)
        .ints(&[1])
        .nil()
        .done();
    assert!(matches!(refused(b), Refusal::Malformed(_)));
    // enclosure that is not an environment
    let b = B::new()
        .ty(ENVSXP)
        .int(0)
        .ty(INTSXP)
        .ints(&[1])
        .nil()
        .nil()
        .nil()
        .done();
    assert!(matches!(refused(b), Refusal::Malformed(_)));
    // binding without a name
    let b = B::new().env().ty(LISTSXP).nil().nil().env_end().done();
    assert!(matches!(refused(b), Refusal::Malformed(_)));
}

#[test]
fn verify_refuses_lying_attributes() {
    let v = || B::new().flags(INTSXP, 0, true, false).ints(&[1, 2, 3, 4]);
    attr_refused(
        v().attr("names")
            .ty(INTSXP)
            .ints(&[1, 2, 3, 4])
            .nil()
            .done(),
        "names",
    );
    attr_refused(v().attr("names").strs(&["a"]).nil().done(), "names");
    attr_refused(v().attr("dim").ty(INTSXP).ints(&[3, 2]).nil().done(), "dim");
    attr_refused(
        v().attr("dim").ty(INTSXP).ints(&[i32::MIN, 2]).nil().done(),
        "dim",
    );
    attr_refused(
        v().attr("dim").ty(REALSXP).reals(&[2.0, 2.0]).nil().done(),
        "dim",
    );
    // dimnames before dim, with the wrong length
    let b = v()
        .attr("dimnames")
        .ty(VECSXP)
        .int(2)
        .strs(&["a"])
        .nil()
        .attr("dim")
        .ty(INTSXP)
        .ints(&[2, 2])
        .nil();
    attr_refused(b.done(), "dimnames");
    let b = v()
        .attr("dimnames")
        .ty(VECSXP)
        .int(1)
        .nil()
        .attr("dim")
        .ty(INTSXP)
        .ints(&[2, 2])
        .nil();
    attr_refused(b.done(), "dimnames");
    attr_refused(
        v().attr("dimnames")
            .ty(VECSXP)
            .int(2)
            .nil()
            .nil()
            .nil()
            .done(),
        "dimnames",
    );
    attr_refused(v().attr("class").strs(&[]).nil().done(), "class");
    attr_refused(
        v().attr("class").ty(INTSXP).ints(&[1]).nil().done(),
        "class",
    );
    attr_refused(
        v().attr("tsp").ty(REALSXP).reals(&[1.0]).nil().done(),
        "tsp",
    );
    let tsp = |t: &[f64]| v().attr("tsp").ty(REALSXP).reals(t).nil().done();
    attr_refused(tsp(&[1.0, 9.0, 1.0]), "tsp");
    attr_refused(tsp(&[1.0, 4.0, 0.0]), "tsp");
    attr_refused(tsp(&[f64::NAN, 4.0, 1.0]), "tsp");
    verify(&tsp(&[1.0, 4.0, 1.0])).unwrap();
    verify(&tsp(&[2000.0, 2000.75, 4.0])).unwrap();
    attr_refused(
        v().attr("row.names").ty(REALSXP).reals(&[1.0]).nil().done(),
        "row.names",
    );
    attr_refused(
        v().attr("levels").ty(INTSXP).ints(&[1]).nil().done(),
        "levels",
    );
    // factor codes out of range (attributes in either order)
    let f = || B::new().flags(INTSXP, 0, true, false).ints(&[1, 3]);
    attr_refused(
        f().attr("levels")
            .strs(&["a", "b"])
            .attr("class")
            .strs(&["factor"])
            .nil()
            .done(),
        "levels",
    );
    attr_refused(
        f().attr("class")
            .strs(&["factor"])
            .attr("levels")
            .strs(&["a", "b"])
            .nil()
            .done(),
        "levels",
    );
    // a valid matrix passes, attributes in any order
    let ok = v()
        .attr("dimnames")
        .ty(VECSXP)
        .int(2)
        .strs(&["a", "b"])
        .nil()
        .attr("dim")
        .ty(INTSXP)
        .ints(&[2, 2])
        .nil();
    verify(&ok.done()).unwrap();
    // attributes that are not a tagged pairlist
    let b = B::new()
        .flags(INTSXP, 0, true, false)
        .ints(&[1])
        .ty(INTSXP)
        .ints(&[1])
        .done();
    assert!(matches!(refused(b), Refusal::Malformed(_)));
}

#[test]
fn verify_refuses_bare_charsxp_and_bad_symbols() {
    assert!(matches!(
        refused(B::new().chars("x").done()),
        Refusal::Malformed(_)
    ));
    let b = B::new().ty(VECSXP).int(1).chars("x").done();
    assert!(matches!(refused(b), Refusal::Malformed(_)));
    // a symbol named NA, a tag that is not a symbol
    let b = B::new()
        .ty(SYMSXP)
        .flags(CHARSXP, 0, false, false)
        .int(-1)
        .done();
    assert!(matches!(refused(b), Refusal::Malformed(_)));
    let b = B::new()
        .flags(LISTSXP, 0, false, true)
        .ty(INTSXP)
        .ints(&[1])
        .nil()
        .nil()
        .done();
    assert!(matches!(refused(b), Refusal::Malformed(_)));
    // a reference to nothing
    assert!(matches!(
        refused(B::new().int(0x1ff).done()),
        Refusal::Malformed(_)
    ));
    // a primitive that is not one
    let b = B::new().ty(BUILTINSXP).int(7).0;
    let mut b = b;
    b.extend_from_slice(b"inspect");
    assert!(matches!(refused(b), Refusal::Primitive(_)));
}

fn nested_lists(depth: usize) -> Vec<u8> {
    let mut b = B::new();
    for _ in 0..depth {
        b = b.ty(VECSXP).int(1);
    }
    b.nil().done()
}

fn pairlist_chain(cells: usize) -> Vec<u8> {
    let mut b = B::new();
    for _ in 0..cells {
        b = b.ty(LISTSXP).ty(LGLSXP).ints(&[1]);
    }
    b.nil().done()
}

#[test]
fn verify_bounds_nesting() {
    verify(&nested_lists(MAX_DEPTH - 1)).unwrap();
    assert_eq!(refused(nested_lists(MAX_DEPTH)), Refusal::TooDeep);
    assert_eq!(refused(nested_lists(100_000)), Refusal::TooDeep);
    verify(&pairlist_chain(MAX_DEPTH - 1)).unwrap();
    assert_eq!(refused(pairlist_chain(MAX_DEPTH)), Refusal::TooDeep);
}

/// Native R on an 8 MiB stack reads the deepest admitted value, and the
/// refused depth of the issue (100,000) crashes it: the bound protects R.
#[test]
fn verify_bound_matches_native_r() {
    let dir = std::env::temp_dir().join(format!("hako-verify-depth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |name: &str, b: Vec<u8>| {
        let f = dir.join(name);
        std::fs::write(&f, b).unwrap();
        Command::new("sh")
            .arg("-c")
            .arg("ulimit -s 8192; Rscript -e 'invisible(unserialize(readBin(commandArgs(TRUE)[1], \"raw\", 1e8))); cat(\"ok\")' \"$0\"")
            .arg(&f)
            .output()
            .unwrap()
    };
    for (name, b) in [
        ("lists", nested_lists(MAX_DEPTH - 1)),
        ("cells", pairlist_chain(MAX_DEPTH - 1)),
    ] {
        let out = run(name, b);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ok",
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run("deep", nested_lists(100_000));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ok"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn verify_refuses_lengths_past_the_payload() {
    assert_eq!(
        refused(B::new().ty(REALSXP).int(1000).int(0).int(0).done()),
        Refusal::Truncated
    );
    assert_eq!(
        refused(B::new().ty(VECSXP).int(i32::MAX).done()),
        Refusal::Truncated
    );
    assert_eq!(
        refused(
            B::new()
                .ty(STRSXP)
                .int(1)
                .flags(CHARSXP, 0, false, false)
                .int(99)
                .done()
        ),
        Refusal::Truncated
    );
    // long vector: -1 then two ints
    assert_eq!(
        refused(B::new().ty(RAWSXP).int(-1).int(1).int(0).done()),
        Refusal::Truncated
    );
    assert!(
        refused(B::new().ty(RAWSXP).int(-1).int(0x7fff_ffff).int(0).done()) != Refusal::Promise
    );
    assert!(matches!(
        refused(B::new().ty(RAWSXP).int(-5).done()),
        Refusal::Malformed(_)
    ));
    assert!(matches!(refused(b"X\n".to_vec()), Refusal::Truncated));
    assert!(matches!(
        refused(b"A\n\0\0\0\x03".to_vec()),
        Refusal::Header(_)
    ));
}

#[test]
fn verify_refuses_namespaces_beyond_base_r() {
    let ns = |name: &str| {
        B::new()
            .ty(NAMESPACESXP)
            .int(0)
            .int(2)
            .chars(name)
            .chars("1.0")
            .done()
    };
    verify(&ns("stats")).unwrap();
    assert_eq!(refused(ns("evilpkg")), Refusal::Namespace("evilpkg".into()));
    let pkg = |name: &str| B::new().ty(PACKAGESXP).int(0).int(1).chars(name).done();
    verify(&pkg("package:stats")).unwrap();
    assert!(matches!(
        refused(pkg("package:evilpkg")),
        Refusal::Namespace(_)
    ));
    assert!(matches!(refused(pkg("stats")), Refusal::Namespace(_)));
}

#[test]
fn verify_refuses_foreign_or_malformed_altrep() {
    let seq = |state: &[f64]| {
        B::new()
            .altrep("compact_intseq", "base", INTSXP)
            .ty(REALSXP)
            .reals(state)
            .nil()
            .done()
    };
    verify(&seq(&[5.0, 1.0, 1.0])).unwrap();
    for bad in [
        &[5.0, 1.0][..],
        &[5.0, 1.0, 2.0],
        &[-1.0, 1.0, 1.0],
        &[5.0, 2147483647.0, 1.0],
        &[f64::NAN, 1.0, 1.0],
    ] {
        assert!(matches!(refused(seq(bad)), Refusal::Altrep(_)), "{bad:?}");
    }
    let mmap = B::new()
        .altrep("mmap_integer", "base", INTSXP)
        .nil()
        .nil()
        .done();
    assert!(matches!(refused(mmap), Refusal::Altrep(m) if m.contains("maps a file")));
    let foreign = B::new()
        .altrep("vroom_dbl", "vroom", REALSXP)
        .nil()
        .nil()
        .done();
    assert!(matches!(refused(foreign), Refusal::Altrep(_)));
    // a wrapper around a vector of another type, or with short metadata
    let wrap = |inner: B| inner.ty(INTSXP).ints(&[0, 0]).nil().done();
    let w = B::new()
        .altrep("wrap_integer", "base", INTSXP)
        .ty(LISTSXP)
        .ty(REALSXP)
        .reals(&[1.0]);
    assert!(matches!(refused(wrap(w)), Refusal::Altrep(_)));
    let w = B::new()
        .altrep("wrap_integer", "base", INTSXP)
        .ty(LISTSXP)
        .ty(INTSXP)
        .ints(&[1])
        .ty(INTSXP)
        .ints(&[0]);
    assert!(matches!(refused(w.nil().done()), Refusal::Altrep(_)));
    let w = B::new()
        .altrep("wrap_integer", "base", INTSXP)
        .ty(LISTSXP)
        .ty(INTSXP)
        .ints(&[1]);
    verify(&wrap(w)).unwrap();
    // metadata claiming a sortedness R does not define
    let w = B::new()
        .altrep("wrap_integer", "base", INTSXP)
        .ty(LISTSXP)
        .ty(INTSXP)
        .ints(&[1])
        .ty(INTSXP)
        .ints(&[7, 0]);
    assert!(matches!(refused(w.nil().done()), Refusal::Altrep(_)));
    // class and type disagree
    let b = B::new()
        .altrep("compact_intseq", "base", STRSXP)
        .ty(REALSXP)
        .reals(&[5.0, 1.0, 1.0])
        .nil()
        .done();
    assert!(matches!(refused(b), Refusal::Altrep(_)));
}

/// Admitted mutants are fed to native R: it reads them (and prints them)
/// without crashing, in a subprocess per batch.
#[test]
fn verify_admitted_mutants_do_not_crash_native_r() {
    let fx: Vec<_> = r_fixtures()
        .into_iter()
        .filter(|(n, b)| !n.starts_with("glm") && !n.starts_with("globalfun") && b.len() > 40)
        .collect();
    let dir = std::env::temp_dir().join(format!("hako-verify-mutants-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rnd = xorshift(0x2545_f491_4f6c_dd1d);
    let mut n = 0;
    let mut tries = 0;
    while n < 500 && tries < 400_000 {
        tries += 1;
        let (_, a) = &fx[(rnd() % fx.len() as u64) as usize];
        let mut m = a.clone();
        for _ in 0..1 + rnd() % 3 {
            let i = 14 + (rnd() % (m.len() as u64 - 14)) as usize;
            mutate_byte(&mut m[i], &mut rnd);
        }
        if &m != a && verify(&m).is_ok() {
            std::fs::write(dir.join(format!("m{n:04}")), &m).unwrap();
            n += 1;
        }
    }
    assert!(n >= 100, "only {n} admitted mutants");
    let script = r#"
for (f in sort(list.files(commandArgs(TRUE)[1], pattern = "^m", full.names = TRUE))) {
  cat(basename(f), "\n", file = stderr())
  x <- tryCatch(unserialize(readBin(f, "raw", 1e7)), error = function(e) NULL)
  invisible(tryCatch(capture.output(print(x), str(x)), error = function(e) NULL, warning = function(w) NULL))
}
cat("survived")
"#;
    let out = Command::new("Rscript")
        .args(["-e", script])
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let last: Vec<&str> = err.lines().rev().take(3).collect();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "survived",
        "R died after {last:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn verify_refuses_enclosure_cycles() {
    let refer = |b: B, i: i32| b.int((i << 8) | REFSXP as i32);
    // an environment enclosed by itself
    let b = refer(B::new().ty(ENVSXP).int(0), 1)
        .nil()
        .nil()
        .nil()
        .done();
    assert!(matches!(refused(b), Refusal::Malformed(m) if m.contains("encloses itself")));
    // A enclosed by B, B enclosed by A
    let b = refer(B::new().ty(ENVSXP).int(0).ty(ENVSXP).int(0), 1)
        .nil()
        .nil()
        .nil()
        .nil()
        .nil()
        .nil()
        .done();
    assert!(matches!(refused(b), Refusal::Malformed(m) if m.contains("encloses itself")));
    // a child enclosed by its parent, bound in the parent; a closure of the
    // parent in its own frame: both ordinary
    let b = B::new().env().attr("child").ty(ENVSXP).int(0);
    let b = refer(b, 1).nil().nil().nil();
    let b = b.attr("f").flags(CLOSXP, 0, false, true);
    let b = refer(b, 1).nil().nil().nil().env_end().done();
    verify(&b).unwrap();
}

#[test]
fn verify_admits_primitives_of_r_4_6() {
    for name in ["crossprod", "Tailcall", "sum", "if"] {
        let mut b = B::new().ty(BUILTINSXP).int(name.len() as i32).0;
        b.extend_from_slice(name.as_bytes());
        verify(&b).unwrap();
    }
}
