//! Package sets reaching daemons (`hako host --packages`): local daemons
//! sandbox with the set; a remote `hako daemon` with an empty package cache
//! gets the trees from the host over its wss link, keeps them in its cache
//! for the next start, and resets to a state that has them; `--no-packages`
//! refuses a set. A fake host speaking the real protocol sends files that do
//! not match, paths that leave the tree, huge manifests and more bytes than
//! announced; a fake daemon asks the real host for files outside the set.

use crate::common::{code, hako, peer_hello, spawn_logged, wait_exit, Host};
use crate::hostile_host::FakeHost;
use crate::protocol::{FrameLimits, Message, PackageData, PackageFetch, PackageOffer, Role};
use crate::tls::{self, Trust};
use crate::{dial, ws};
use bytes::Bytes;
use hako::pkg::store::Store;
use hako_runtime::packages::{FileEntry, PackageManifest};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// A private package store with purrr (and what it needs) installed, once
/// for all tests here.
pub fn store() -> &'static str {
    static STORE: OnceLock<(tempfile::TempDir, String)> = OnceLock::new();
    &STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let repo = format!("file://{}", crate::packages::test_repository().display());
            let o = hako()
                .args(["pkg", "install", "purrr", "--repo", &repo])
                .env("HAKO_PACKAGES", dir.path())
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let s = dir.path().display().to_string();
            (dir, s)
        })
        .1
}

/// How many packages `purrr` brings, dependencies included.
pub fn set_size() -> usize {
    let store = Store::at(PathBuf::from(store()));
    hako::pkg::store::resolve_set_in(&store, &["purrr".into()])
        .unwrap()
        .packages
        .len()
}

const SQUARES: &str = "sum(purrr::map_dbl(1:3, function(x) x^2))";
/// A task that leaves a global and loads purrr; the next one must find no
/// global (-1 if it does) and purrr loadable again.
const LEAVES: &str = "library(purrr); left_behind <- 42; 1";
const AFTER: &str = "if (exists('left_behind')) -1 else sum(purrr::map_dbl(1:3, function(x) x^2))";

fn run(host: &mut Host, id: u32, src: &str) -> f64 {
    host.submit(id, code(src), 120_000);
    let r = host.result(Duration::from_secs(180));
    assert_eq!(r.id, id);
    r.value()
}

fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn local_daemons_sandbox_with_the_set_and_reset_to_it() {
    let mut host = Host::start_env(
        "pkgset-local",
        &["--local", "1", "--packages", "purrr"],
        &[("HAKO_PACKAGES", store())],
    );
    assert_eq!(run(&mut host, 1, SQUARES), 14.0);
    assert_eq!(run(&mut host, 2, LEAVES), 1.0);
    assert_eq!(run(&mut host, 3, AFTER), 14.0);
}

#[test]
fn a_remote_daemon_gets_the_set_from_the_host_then_from_its_cache() {
    let mut host = Host::start_env(
        "pkgset-remote",
        &["--listen", "127.0.0.1:0", "--packages", "purrr"],
        &[("HAKO_PACKAGES", store())],
    );
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().display().to_string();
    let n = set_size();

    let (mut first, first_log) = spawn_logged(
        &mut host.daemon_cmd(&["--package-cache", &cache_arg]),
        "pkgset-remote-d1",
    );
    host.wait_connections(1);
    assert_eq!(run(&mut host, 1, SQUARES), 14.0);
    // Pristine reset after a task that loaded packages.
    assert_eq!(run(&mut host, 2, LEAVES), 1.0);
    assert_eq!(run(&mut host, 3, AFTER), 14.0);
    let l = log(&first_log);
    assert!(
        l.contains(&format!(
            "{n} package(s), 0 from the cache, {n} fetched from the host"
        )),
        "{l}"
    );
    let _ = first.kill();
    let _ = first.wait();
    host.wait_connections(0);

    // A second start finds every tree in its cache: nothing is sent.
    let (mut second, second_log) = spawn_logged(
        &mut host.daemon_cmd(&["--package-cache", &cache_arg]),
        "pkgset-remote-d2",
    );
    host.wait_connections(1);
    assert_eq!(run(&mut host, 4, SQUARES), 14.0);
    let l = log(&second_log);
    assert!(
        l.contains(&format!(
            "{n} package(s), {n} from the cache, 0 fetched from the host (0 bytes)"
        )),
        "{l}"
    );
    let _ = second.kill();
    let _ = second.wait();
    host.wait_connections(0);

    // A damaged tree in the cache is not used: fetched again, alone.
    let description = std::fs::read_dir(cache.path().join("store"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("glue/DESCRIPTION"))
        .find(|p| p.is_file())
        .expect("glue in the cache");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&description)
        .unwrap();
    std::io::Write::write_all(&mut f, b"Imports: evil\n").unwrap();
    drop(f);
    let (mut third, third_log) = spawn_logged(
        &mut host.daemon_cmd(&["--package-cache", &cache_arg]),
        "pkgset-remote-d3",
    );
    host.wait_connections(1);
    assert_eq!(run(&mut host, 5, SQUARES), 14.0);
    let l = log(&third_log);
    assert!(
        l.contains("glue 1.8.0 was damaged")
            && l.contains(&format!(
                "{n} package(s), {} from the cache, 1 fetched",
                n - 1
            )),
        "{l}"
    );
    let _ = third.kill();
    let _ = third.wait();
}

#[test]
fn a_no_packages_daemon_refuses_the_set_and_is_given_no_task() {
    let mut host = Host::start_env(
        "pkgset-refuse",
        &["--listen", "127.0.0.1:0", "--packages", "purrr"],
        &[("HAKO_PACKAGES", store())],
    );
    let (mut d, path) = spawn_logged(&mut host.daemon_cmd(&["--no-packages"]), "pkgset-refuse-d");
    let status = wait_exit(&mut d, Duration::from_secs(120));
    assert_eq!(status.code(), Some(1), "{}", log(&path));
    let l = log(&path);
    assert!(l.contains("--no-packages") && l.contains("purrr"), "{l}");
    let (c, _) = host.info();
    assert_eq!(c["connections"], 0);
    let hl = log(&host.log);
    assert!(
        hl.contains("daemon not taken") && hl.contains("--no-packages"),
        "{hl}"
    );
}

/// A one-package offer whose single file is `path` holding `bytes`.
fn offer(path: &str, bytes: &[u8]) -> PackageOffer {
    PackageOffer {
        packages: vec![PackageManifest {
            name: "pkg".into(),
            version: "1.0".into(),
            files: [(
                path.to_string(),
                FileEntry {
                    sha256: hex::encode(Sha256::digest(bytes)),
                    size: bytes.len() as u64,
                },
            )]
            .into(),
        }],
    }
}

/// A fake host offers `offer`; `serve` answers the daemon's first request
/// (if it makes one). The daemon must say it refuses, naming `why`, exit
/// with status 1, and leave nothing in its cache.
fn refused(name: &str, offer: PackageOffer, extra: &[&str], serve: Option<Message>, why: &str) {
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().display().to_string();
    let mut args = vec!["--package-cache", cache_arg.as_str(), "--autoexit"];
    args.extend_from_slice(extra);
    let mut h = FakeHost::new();
    h.start_daemon(name, &args);
    h.accept_welcomed(256 << 20);
    h.send(Message::PackageSet(offer));
    let said = loop {
        match h.next(Duration::from_secs(60)) {
            Some(Message::PackageFetch(f)) => {
                let m = serve
                    .clone()
                    .unwrap_or_else(|| panic!("{name}: asked for {f:?}"));
                h.send(m);
            }
            Some(Message::PackagesReady { refused }) => break refused,
            Some(other) => panic!("{name}: unexpected {other:?}"),
            None => panic!("{name}: hung up; log:\n{}", h.daemon_log()),
        }
    };
    let said = said.unwrap_or_else(|| panic!("{name}: took the set"));
    assert!(said.contains(why), "{name}: {said}");
    let status = wait_exit(h.daemon.as_mut().unwrap(), Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{name}: {}", h.daemon_log());
    let l = h.daemon_log();
    assert!(l.contains(why), "{name}: {l}");
    let stored: Vec<_> = std::fs::read_dir(cache.path().join("store"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(stored.is_empty(), "{name}: {stored:?}");
}

fn data(path: &str, offset: u64, bytes: &[u8], last: bool) -> Message {
    Message::PackageData(PackageData {
        package: 0,
        path: path.into(),
        offset,
        bytes: Bytes::copy_from_slice(bytes),
        last,
    })
}

#[test]
fn a_file_that_does_not_match_its_manifest_is_refused() {
    refused(
        "pkgset-mismatch",
        offer("DESCRIPTION", b"Package: pkg\n"),
        &[],
        Some(data("DESCRIPTION", 0, b"Package: evil", true)),
        "does not match its manifest",
    );
}

#[test]
fn more_bytes_than_announced_are_refused() {
    refused(
        "pkgset-more",
        offer("DESCRIPTION", b"abc"),
        &[],
        Some(data("DESCRIPTION", 0, b"abcdef", false)),
        "more of DESCRIPTION than the 3 bytes",
    );
}

#[test]
fn paths_that_leave_the_tree_are_refused_before_any_fetch() {
    for (i, (path, why)) in [
        ("../escaped", "leaves its package"),
        ("libs/../../escaped", "leaves its package"),
        ("/tmp/escaped", "absolute path"),
        ("a\0b", "NUL"),
    ]
    .into_iter()
    .enumerate()
    {
        refused(
            &format!("pkgset-path{i}"),
            offer(path, b"x"),
            &[],
            None,
            why,
        );
    }
}

#[test]
fn huge_manifests_are_refused() {
    // More files than a daemon takes.
    let mut many = offer("DESCRIPTION", b"x");
    let e = many.packages[0].files["DESCRIPTION"].clone();
    for i in 0..100_001 {
        many.packages[0].files.insert(format!("f{i}"), e.clone());
    }
    refused("pkgset-many", many, &[], None, "more than the 100000");
    // More bytes than the volunteer's --max-package-cache.
    let mut big = offer("DESCRIPTION", b"x");
    big.packages[0].files.get_mut("DESCRIPTION").unwrap().size = 3 << 20;
    refused(
        "pkgset-big",
        big,
        &["--max-package-cache", "2"],
        None,
        "--max-package-cache of 2 MiB",
    );
}

#[test]
fn the_host_serves_only_files_of_its_set() {
    let mut host = Host::start_env(
        "pkgset-greedy",
        &["--listen", "127.0.0.1:0", "--packages", "glue"],
        &[("HAKO_PACKAGES", store())],
    );
    let target = dial::parse_url(&host.get("url")).unwrap();
    let trust = Trust::Pinned(tls::parse_fingerprint(&host.get("fingerprint")).unwrap());
    let limits = FrameLimits {
        control: 1 << 20,
        bulk: 64 << 20,
    };
    let rt = crate::common::runtime();
    for ask in [
        PackageFetch {
            package: 0,
            path: "../../installed.json".into(),
        },
        PackageFetch {
            package: 0,
            path: "/etc/passwd".into(),
        },
        PackageFetch {
            package: 7,
            path: "DESCRIPTION".into(),
        },
    ] {
        let hello = peer_hello(Role::Daemon, host.get("token"), "greedy", None);
        let got = rt.block_on(async {
            let (mut conn, _) = dial::dial(&target, &trust, limits, hello).await.unwrap();
            let offer = match ws::recv(&mut conn, &limits).await.unwrap() {
                Message::PackageSet(o) => o,
                other => panic!("expected the set, got {other:?}"),
            };
            assert_eq!(offer.packages[0].name, "glue");
            // A file of the set is served...
            ws::send(
                &mut conn,
                &Message::PackageFetch(PackageFetch {
                    package: 0,
                    path: "DESCRIPTION".into(),
                }),
            )
            .await
            .unwrap();
            let d = match ws::recv(&mut conn, &limits).await.unwrap() {
                Message::PackageData(d) => d,
                other => panic!("expected data, got {other:?}"),
            };
            assert!(d.last && d.bytes.starts_with(b"Package: glue"));
            // ...anything else ends the connection.
            ws::send(&mut conn, &Message::PackageFetch(ask.clone()))
                .await
                .unwrap();
            ws::recv(&mut conn, &limits).await
        });
        assert!(got.is_err(), "{ask:?} was answered: {got:?}");
    }
    let (c, _) = host.info();
    assert_eq!(c["connections"], 0);
    let hl = log(&host.log);
    assert!(hl.contains("which the set does not list"), "{hl}");
}
