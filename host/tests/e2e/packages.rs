//! `hako pkg install|list|remove` against repositories built here in
//! webR's layout (`bin/emscripten/contrib/4.6/PACKAGES` + `.tgz` binaries),
//! served from disk (`file://`) and over loopback HTTPS with a self-signed
//! certificate: the real binary, a private package store per test.

use crate::common::hako;
use crate::tls;
use flate2::{write::GzEncoder, Compression};
use hako::pkg::store::{resolve_set_in, Store};
use md5::Md5;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use tar::EntryType;

const CONTRIB: &str = "bin/emscripten/contrib/4.6";

/// An archive entry: path, kind, and data (or a link's target).
type Raw = (String, EntryType, Vec<u8>);

/// A repository being written: binaries and their `PACKAGES` records.
struct Repo {
    dir: tempfile::TempDir,
    records: String,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(CONTRIB)).unwrap();
        Repo {
            dir,
            records: String::new(),
        }
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    fn contrib(&self) -> PathBuf {
        self.dir.path().join(CONTRIB)
    }

    /// Adds `name` with a DESCRIPTION importing `imports`, an R file and
    /// `extra` (path below the package, bytes).
    fn add(&mut self, name: &str, version: &str, imports: &str, extra: &[(&str, &[u8])]) {
        let desc = format!(
            "Package: {name}\nVersion: {version}\nImports: {imports}\n\
             Built: R 4.6.0; wasm32-unknown-emscripten; 2026-11-30 00:00:00 UTC; unix\n"
        );
        let mut entries: Vec<Raw> = vec![
            (
                format!("{name}/DESCRIPTION"),
                EntryType::Regular,
                desc.into_bytes(),
            ),
            (
                format!("{name}/NAMESPACE"),
                EntryType::Regular,
                b"exportPattern(\".\")\n".to_vec(),
            ),
            (
                format!("{name}/R/{name}"),
                EntryType::Regular,
                b"# code\n".to_vec(),
            ),
        ];
        for (p, d) in extra {
            entries.push((format!("{name}/{p}"), EntryType::Regular, d.to_vec()));
        }
        self.add_raw(name, version, imports, &entries);
    }

    /// Adds a binary made of exactly `entries` (path, kind, data or link
    /// target), written raw so hostile names go in as they are.
    fn add_raw(&mut self, name: &str, version: &str, imports: &str, entries: &[Raw]) {
        let tgz = tgz(entries);
        std::fs::write(self.contrib().join(format!("{name}_{version}.tgz")), &tgz).unwrap();
        self.records.push_str(&format!(
            "Package: {name}\nVersion: {version}\nImports: {imports}\nMD5sum: {}\nSHA256sum: {}\n\n",
            hex::encode(Md5::digest(&tgz)),
            hex::encode(Sha256::digest(&tgz)),
        ));
        std::fs::write(self.contrib().join("PACKAGES"), &self.records).unwrap();
    }
}

/// A binary package archive as rwasm writes them: the tar, then webR's
/// filesystem-image metadata (JSON, `webR`, reserved, block, length) after
/// the end-of-archive blocks, all gzipped.
fn tgz(entries: &[Raw]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        if matches!(kind, EntryType::Symlink | EntryType::Link) {
            h.set_link_name_literal(std::str::from_utf8(data).unwrap())
                .unwrap();
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        } else {
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        }
    }
    let mut tar = b.into_inner().unwrap();
    let blocks = (tar.len() / 512) as u32;
    let json = b"{\"files\":[],\"gzip\":true,\"remote_package_size\":0}";
    tar.extend_from_slice(json);
    tar.resize(tar.len().next_multiple_of(4), 0);
    tar.extend_from_slice(b"webR\0\0\0\0");
    tar.extend_from_slice(&blocks.to_be_bytes());
    tar.extend_from_slice(&(json.len() as u32).to_be_bytes());
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// `hako pkg ARGS` with the store at `store`.
fn pkg(store: &Path, args: &[&str]) -> Output {
    hako()
        .arg("pkg")
        .args(args)
        .env("HAKO_PACKAGES", store)
        .env_remove("HAKO_REPO_CA")
        .output()
        .expect("running hako pkg")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "expected success, got {}", text(&o));
    o
}

fn refused(o: Output, says: &[&str]) {
    assert!(!o.status.success(), "expected a refusal, got {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for s in says {
        assert!(
            err.contains(s),
            "the error does not say {s:?}: {}",
            text(&o)
        );
    }
}

/// (name, version) rows of `hako pkg list`.
fn listed(store: &Path) -> Vec<(String, String)> {
    let o = ok(pkg(store, &["list"]));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .skip(1)
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap().to_string(), w.next().unwrap().to_string())
        })
        .collect()
}

/// Nothing installed and no tree left in the store.
fn store_is_empty(store: &Path) {
    assert!(listed(store).is_empty());
    let trees = std::fs::read_dir(store.join("store"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(trees, 0, "trees left in {}", store.display());
}

/// a imports b, b imports c (>= 1.0) and utils (base R: skipped).
fn abc_repo() -> Repo {
    let mut r = Repo::new();
    r.add("pkgA", "0.1", "pkgB", &[]);
    r.add("pkgB", "2.0.1", "pkgC (>= 1.0), utils", &[]);
    r.add("pkgC", "1.10", "", &[]);
    r
}

#[test]
fn install_with_dependencies_is_idempotent_offline_and_removable() {
    let repo = abc_repo();
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    let o = ok(pkg(s, &["install", "pkgA", "--repo", &repo.url()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("installed pkgC 1.10"), "{}", text(&o));
    let names = |v: Vec<(String, String)>| {
        v.into_iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(listed(s)), ["pkgA 0.1", "pkgB 2.0.1", "pkgC 1.10"]);

    // The set for pkgA: dependencies first, trees that verify.
    let set = resolve_set_in(&Store::at(s.to_path_buf()), &["pkgA".into()]).unwrap();
    let order: Vec<&str> = set
        .packages
        .iter()
        .map(|p| p.manifest.name.as_str())
        .collect();
    assert_eq!(order, ["pkgC", "pkgB", "pkgA"]);
    set.verify().unwrap();
    assert!(set.packages[2].dir.join("R/pkgA").is_file());

    // Again, with the repository gone: nothing to fetch, nothing changes.
    let before = std::fs::read(s.join("installed.json")).unwrap();
    drop(repo);
    let o = ok(pkg(
        s,
        &["install", "pkgA", "--repo", "file:///nonexistent/repo"],
    ));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already installed"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(s.join("installed.json")).unwrap(), before);

    // Plain http is refused even when nothing would be fetched.
    refused(
        pkg(s, &["install", "pkgA", "--repo", "http://127.0.0.1:9/"]),
        &["plain http is refused"],
    );

    // A package others need stays until they go too.
    refused(pkg(s, &["remove", "pkgB"]), &["pkgB (needed by pkgA)"]);
    refused(pkg(s, &["remove", "nope"]), &["not installed: nope"]);
    ok(pkg(s, &["remove", "pkgA"]));
    assert_eq!(names(listed(s)), ["pkgB 2.0.1", "pkgC 1.10"]);
    let err = resolve_set_in(&Store::at(s.to_path_buf()), &["pkgA".into()]).unwrap_err();
    assert!(err.to_string().contains("hako pkg install pkgA"), "{err}");
    ok(pkg(s, &["remove", "pkgB", "pkgC"]));
    store_is_empty(s);

    // A dependency's tree deleted by hand is fetched again when what needs
    // it is installed again, not reported installed.
    let repo = abc_repo();
    ok(pkg(s, &["install", "pkgA", "--repo", &repo.url()]));
    let set = resolve_set_in(&Store::at(s.to_path_buf()), &["pkgC".into()]).unwrap();
    std::fs::remove_dir_all(set.packages[0].dir.parent().unwrap()).unwrap();
    let o = ok(pkg(s, &["install", "pkgA", "--repo", &repo.url()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("installed pkgA"), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("installed pkgC 1.10"),
        "{}",
        text(&o)
    );
    resolve_set_in(&Store::at(s.to_path_buf()), &["pkgA".into()])
        .unwrap()
        .verify()
        .unwrap();
}

#[test]
fn a_corrupt_binary_is_refused_and_nothing_is_stored() {
    let mut repo = abc_repo();
    // pkgA's bytes change after the index was written: one flipped byte.
    // It is installed last, after pkgC and pkgB passed their checks.
    let f = repo.contrib().join("pkgA_0.1.tgz");
    let mut b = std::fs::read(&f).unwrap();
    let last = b.len() - 5;
    b[last] ^= 0x20;
    std::fs::write(&f, b).unwrap();
    let store = tempfile::tempdir().unwrap();
    refused(
        pkg(store.path(), &["install", "pkgA", "--repo", &repo.url()]),
        &["pkgA", "does not match the index's SHA256sum"],
    );
    store_is_empty(store.path());

    // What a killed install leaves (staging, an unreferenced tree) goes at
    // the next change to the store.
    let s = store.path();
    std::fs::create_dir_all(s.join("tmp/1-0/pkgC")).unwrap();
    std::fs::create_dir_all(s.join("store/feedface/pkgC")).unwrap();
    refused(pkg(s, &["remove", "pkgC"]), &["not installed: pkgC"]);
    assert!(!s.join("tmp").exists() && !s.join("store/feedface").exists());

    // An index without checksums is not trusted either.
    repo.records = repo
        .records
        .replace("MD5sum", "X-MD5")
        .replace("SHA256sum", "X-SHA");
    std::fs::write(repo.contrib().join("PACKAGES"), &repo.records).unwrap();
    refused(
        pkg(store.path(), &["install", "pkgB", "--repo", &repo.url()]),
        &["no checksum"],
    );
    store_is_empty(store.path());
}

#[test]
fn archives_that_escape_the_package_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    let rel = format!("pkgE/../../../../../../../../..{}", victim.display());
    let desc = b"Package: pkgE\nVersion: 1.0\nBuilt: R 4.6.0; wasm32\n".to_vec();
    let cases: Vec<(&str, Vec<Raw>)> = vec![
        (
            "dotdot",
            vec![
                ("pkgE/DESCRIPTION".into(), EntryType::Regular, desc.clone()),
                (rel, EntryType::Regular, b"owned".to_vec()),
            ],
        ),
        (
            "absolute",
            vec![
                ("pkgE/DESCRIPTION".into(), EntryType::Regular, desc.clone()),
                (
                    victim.display().to_string(),
                    EntryType::Regular,
                    b"owned".to_vec(),
                ),
            ],
        ),
        (
            "symlink",
            vec![
                ("pkgE/DESCRIPTION".into(), EntryType::Regular, desc.clone()),
                (
                    "pkgE/R/passwd".into(),
                    EntryType::Symlink,
                    b"/etc/passwd".to_vec(),
                ),
            ],
        ),
        (
            "climbing symlink",
            vec![
                ("pkgE/DESCRIPTION".into(), EntryType::Regular, desc.clone()),
                (
                    "pkgE/R/up".into(),
                    EntryType::Symlink,
                    b"../../../etc/passwd".to_vec(),
                ),
            ],
        ),
    ];
    for (what, entries) in cases {
        let mut repo = Repo::new();
        repo.add_raw("pkgE", "1.0", "", &entries);
        let store = tempfile::tempdir().unwrap();
        let o = pkg(store.path(), &["install", "pkgE", "--repo", &repo.url()]);
        refused(o, &["pkgE", "outside the package"]);
        assert!(
            !victim.exists(),
            "{what}: a file was written outside the store"
        );
        store_is_empty(store.path());
    }
}

/// A side module as emcc makes one: `dylink.0`, the linker's imports, the
/// function imports `funcs` and one exported function.
fn side_module(funcs: &[&str], got: &[&str]) -> Vec<u8> {
    use wasm_encoder::*;
    let mut m = Module::new();
    // mem-info: no data, no table.
    m.section(&CustomSection {
        name: "dylink.0".into(),
        data: std::borrow::Cow::Borrowed(&[1, 4, 0, 0, 0, 0]),
    });
    let mut t = TypeSection::new();
    t.ty().function([], []);
    m.section(&t);
    let mut i = ImportSection::new();
    i.import(
        "env",
        "memory",
        MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        },
    );
    let g = |mutable| GlobalType {
        val_type: ValType::I32,
        mutable,
        shared: false,
    };
    i.import("env", "__memory_base", g(false));
    i.import("env", "__table_base", g(false));
    for f in funcs {
        i.import("env", f, EntityType::Function(0));
    }
    for s in got {
        i.import("GOT.mem", s, g(true));
    }
    m.section(&i);
    let mut f = FunctionSection::new();
    f.function(0);
    m.section(&f);
    let mut e = ExportSection::new();
    e.export("R_init_pkgS", ExportKind::Func, funcs.len() as u32);
    m.section(&e);
    let mut c = CodeSection::new();
    let mut body = Function::new([]);
    body.instruction(&Instruction::End);
    c.function(&body);
    m.section(&c);
    m.finish()
}

#[test]
fn a_module_importing_what_r_wasm_lacks_is_refused_naming_it() {
    let mut repo = Repo::new();
    let bad = side_module(
        &["Rf_eval", "TRUELENGTH"],
        &["R_nchar_missing_sym", "R_NilValue"],
    );
    repo.add("pkgS", "1.0", "", &[("libs/pkgS.so", &bad)]);
    let store = tempfile::tempdir().unwrap();
    refused(
        pkg(store.path(), &["install", "pkgS", "--repo", &repo.url()]),
        &["libs/pkgS.so imports symbols R.wasm does not define: R_nchar_missing_sym, TRUELENGTH"],
    );
    store_is_empty(store.path());

    // The same module without them installs.
    let mut repo = Repo::new();
    let good = side_module(&["Rf_eval"], &["R_NilValue"]);
    repo.add("pkgS", "1.0", "", &[("libs/pkgS.so", &good)]);
    ok(pkg(
        store.path(),
        &["install", "pkgS", "--repo", &repo.url()],
    ));
    assert_eq!(listed(store.path()).len(), 1);

    // A native (non-wasm) library is not a package for the sandbox.
    let mut repo = Repo::new();
    repo.add(
        "pkgN",
        "1.0",
        "",
        &[("libs/pkgN.so", b"\x7fELF\x02\x01\x01")],
    );
    refused(
        pkg(store.path(), &["install", "pkgN", "--repo", &repo.url()]),
        &["libs/pkgN.so is not a WebAssembly module"],
    );
}

/// A static HTTPS server for `root` on loopback: GET only, 404 for what is
/// not there. Serves until the test process ends.
fn https_server(root: PathBuf) -> (u16, String) {
    let (id, cert_pem, _) = tls::Identity::self_signed_pem(vec!["localhost".into()]).unwrap();
    let config = id.server_config().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(tcp) = conn else { continue };
            let config: Arc<rustls::ServerConfig> = config.clone();
            let root = root.clone();
            std::thread::spawn(move || {
                let Ok(c) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut s = rustls::StreamOwned::new(c, tcp);
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.ends_with(b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let path = line
                    .split(' ')
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/')
                    .to_string();
                let file = root.join(&path);
                // /moved/X answers with a redirect to /X, as mirrors do.
                if let Some(rest) = path.strip_prefix("moved/") {
                    let r = format!("HTTP/1.1 302 Found\r\nLocation: /{rest}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    let _ = s.write_all(r.as_bytes());
                    let _ = s.flush();
                    return;
                }
                let resp = match (path.contains(".."), std::fs::read(&file)) {
                    (false, Ok(body)) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body);
                        r
                    }
                    _ => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = s.write_all(&resp);
                let _ = s.flush();
                s.conn.send_close_notify();
                let _ = s.flush();
            });
        }
    });
    (port, cert_pem)
}

#[test]
fn https_repositories_need_a_trusted_certificate() {
    let repo = abc_repo();
    // Only the compressed index, as some repositories publish it.
    let index = repo.contrib().join("PACKAGES");
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&std::fs::read(&index).unwrap()).unwrap();
    std::fs::write(repo.contrib().join("PACKAGES.gz"), gz.finish().unwrap()).unwrap();
    std::fs::remove_file(index).unwrap();
    let (port, cert) = https_server(repo.dir.path().to_path_buf());
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), cert).unwrap();
    // Through a redirect, as mirrors answer.
    let url = format!("https://localhost:{port}/moved");
    let store = tempfile::tempdir().unwrap();
    // Self-signed and not given as a CA: refused, never used unverified.
    refused(
        pkg(store.path(), &["install", "pkgA", "--repo", &url]),
        &["certificate"],
    );
    store_is_empty(store.path());
    let ca_path = ca.path().to_str().unwrap();
    ok(pkg(
        store.path(),
        &["install", "pkgA", "--repo", &url, "--repo-ca", ca_path],
    ));
    assert_eq!(listed(store.path()).len(), 3);
    // A package the repository lacks is named with who needs it.
    refused(
        pkg(
            store.path(),
            &["install", "pkgZ", "--repo", &url, "--repo-ca", ca_path],
        ),
        &["package pkgZ (needed by the command line) is in none of the repositories"],
    );
}

#[test]
fn concurrent_installs_take_turns() {
    let repo = abc_repo();
    let store = tempfile::tempdir().unwrap();
    let spawn = |name: &str| {
        hako()
            .args(["pkg", "install", name, "--repo", &repo.url()])
            .env("HAKO_PACKAGES", store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let kids: Vec<_> = ["pkgA", "pkgB", "pkgC", "pkgA"]
        .into_iter()
        .map(spawn)
        .collect();
    for k in kids {
        let o = k.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(listed(store.path()).len(), 3);
    let trees = std::fs::read_dir(store.path().join("store"))
        .unwrap()
        .count();
    assert_eq!(trees, 3);
}

/// A side module whose one function uses the legacy exception encoding
/// (`try` … `catch_all`), as emcc 3.1.x builds C++ code.
fn legacy_eh_module() -> Vec<u8> {
    use wasm_encoder::*;
    let mut m = Module::new();
    m.section(&CustomSection {
        name: "dylink.0".into(),
        data: std::borrow::Cow::Borrowed(&[1, 4, 0, 0, 0, 0]),
    });
    let mut t = TypeSection::new();
    t.ty().function([], []);
    m.section(&t);
    let mut i = ImportSection::new();
    i.import("env", "Rf_eval", EntityType::Function(0));
    m.section(&i);
    let mut f = FunctionSection::new();
    f.function(0);
    m.section(&f);
    let mut e = ExportSection::new();
    e.export("R_init_pkgL", ExportKind::Func, 1);
    m.section(&e);
    let mut c = CodeSection::new();
    let mut body = Function::new([]);
    body.instruction(&Instruction::Try(BlockType::Empty))
        .instruction(&Instruction::Call(0))
        .instruction(&Instruction::CatchAll)
        .instruction(&Instruction::End)
        .instruction(&Instruction::End);
    c.function(&body);
    m.section(&c);
    m.finish()
}

#[test]
fn a_legacy_exception_module_is_translated_once_at_install() {
    let legacy = legacy_eh_module();
    assert!(hako_assets::wasm::has_legacy_eh("fixture", &legacy).unwrap());
    let mut repo = Repo::new();
    repo.add("pkgL", "1.0", "", &[("libs/pkgL.so", &legacy)]);
    let store = tempfile::tempdir().unwrap();
    ok(pkg(
        store.path(),
        &["install", "pkgL", "--repo", &repo.url()],
    ));
    let set = resolve_set_in(&Store::at(store.path().to_path_buf()), &["pkgL".into()]).unwrap();
    set.verify().unwrap();
    let stored = std::fs::read(set.packages[0].dir.join("libs/pkgL.so")).unwrap();
    assert!(!hako_assets::wasm::has_legacy_eh("stored", &stored).unwrap());
    hako_assets::wasm::validate_exnref(&stored).unwrap();
}

/// The test repository `tests/wasm-repo.sh` builds from CRAN sources with
/// `hako pkg build`: `$HAKO_TEST_WASM_REPO` (tests/run.sh sets it), else the
/// script is run here (cached under a key, so only the first run builds).
pub(crate) fn test_repository() -> PathBuf {
    if let Some(d) = std::env::var_os("HAKO_TEST_WASM_REPO") {
        return PathBuf::from(d);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/wasm-repo.sh");
    let o = std::process::Command::new("bash")
        .arg(&script)
        .env("HAKO", env!("CARGO_BIN_EXE_hako"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("running tests/wasm-repo.sh");
    assert!(
        o.status.success(),
        "tests/wasm-repo.sh failed: {}",
        text(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    PathBuf::from(
        out.lines()
            .last()
            .expect("the repository's directory")
            .trim(),
    )
}

#[test]
fn purrr_installed_from_a_built_repository_runs_in_the_sandbox() {
    let repo = test_repository();
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.display());
    let o = ok(pkg(store.path(), &["install", "purrr", "--repo", &url]));
    let err = String::from_utf8_lossy(&o.stderr);
    for dep in ["rlang", "vctrs", "cli", "lifecycle", "magrittr"] {
        assert!(
            err.contains(&format!("installed {dep} ")),
            "{dep}: {}",
            text(&o)
        );
    }
    let o = hako()
        .args([
            "eval",
            "--packages",
            "purrr",
            "purrr::map_dbl(1:3, function(x) x^2)",
        ])
        .env("HAKO_PACKAGES", store.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "[1] 1 4 9\n",
        "{}",
        text(&o)
    );
}
