//! The README's walkthrough "Run a shared cluster", played with real
//! processes on loopback and exactly the commands it shows: a host for
//! friends (`hako host --identity DIR --listen ...`), `hako user add` for
//! two users and three volunteers, the volunteers running the line they
//! were sent (one with `--jobs 2`; the third, mallory, a fake daemon that
//! speaks the real protocol with her token and answers every task with a
//! wrong but valid R value), both users submitting with `.replicas = 2`
//! through `hako client` (as an R session's `daemons(url = , token = )`
//! does). The lie never reaches a user, mallory's record on the status page
//! shows it, and `hako user revoke mallory` drops her while the host runs.
//! With `HAKO_STATUS_SCREENSHOT=PATH` it also takes the README's screenshot
//! of the status page (in headless Chromium) before mallory is revoked.

use crate::common::{code, hako, log_file, printed_command, spawn_logged, Liar, RemoteClient};
use crate::linkframe as lf;
use crate::status_page::{browse, chromium, get, http};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What mallory's daemon answers, whatever the task: no honest task here
/// returns it.
const LIE: f64 = -1.0;

/// `set.seed(1); runif(1)` in native R (printed as 0.26550866314209998,
/// the same double): honest replicas draw the same random numbers, and the
/// same as R does.
const RUNIF_SEED_1: f64 = 0.265_508_663_142_1;

/// `hako host` as its owner runs it in a terminal, and what it printed.
struct Owner {
    child: Child,
    log: PathBuf,
    url: String,
    fingerprint: String,
    status_url: String,
    port: u16,
    rt: tokio::runtime::Runtime,
}

impl Owner {
    fn start(dir: &Path) -> Owner {
        let (log, path) = log_file("shared-cluster-host");
        let mut child = hako()
            .args(["host", "--identity"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .env("HAKO_LOG", "hako=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting hako host");
        // Its announcement, line by line; the rest is drained.
        let (tx, rx) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut printed = String::new();
        let status_url = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    panic!(
                        "hako host printed only:\n{printed}\nits log:\n{}",
                        std::fs::read_to_string(&path).unwrap_or_default()
                    )
                });
            printed.push_str(&line);
            printed.push('\n');
            if let Some(u) = line.trim().strip_prefix("https://") {
                break format!("https://{u}");
            }
        };
        let word_after = |prefix: &str| {
            printed
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|rest| rest.split(' ').next_back())
                .unwrap_or_else(|| panic!("no `{prefix}` in:\n{printed}"))
                .to_string()
        };
        let url = word_after("hako host listening on ");
        let fingerprint = word_after("certificate ");
        let port = crate::dial::parse_url(&url).unwrap().port;
        assert!(url.starts_with("wss://127.0.0.1:"), "{printed}");
        assert!(
            status_url.starts_with(&format!("https://127.0.0.1:{port}/status?token=")),
            "{printed}"
        );
        Owner {
            child,
            log: path,
            url,
            fingerprint,
            status_url,
            port,
            rt: crate::common::runtime(),
        }
    }

    /// `hako user ARGS --identity DIR`, as the owner types it: what it printed.
    fn user(&self, dir: &Path, args: &[&str]) -> String {
        let out = hako()
            .arg("user")
            .args(args)
            .arg("--identity")
            .arg(dir)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "hako user {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// `/status.json` with `token`: the HTTP status and the body.
    fn status_with(&self, token: &str) -> (u16, String) {
        let auth = format!("Authorization: Bearer {token}\r\n");
        let r = self.rt.block_on(http(
            self.port,
            &self.fingerprint,
            &get("/status.json", &auth),
        ));
        (r.status, r.body)
    }

    /// `/status.json` as the status page's link shows it.
    fn status(&self) -> Value {
        let view = self.status_url.split_once("?token=").unwrap().1;
        let (code, body) = self.status_with(view);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Poll the status page until `ok` holds of it.
    fn wait_status(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.status();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s:#}\nhost log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A volunteer's `hako daemon`, stopped with the test (it would otherwise
/// retry for ever once the host is gone).
struct Volunteer(Child);

impl Drop for Volunteer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The daemon connections of `volunteer` on the status page.
fn of<'a>(s: &'a Value, volunteer: &str) -> Vec<&'a Value> {
    s["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["volunteer"] == volunteer)
        .collect()
}

/// The status page's row of `user`.
fn user_row<'a>(s: &'a Value, user: &str) -> &'a Value {
    s["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == user)
        .unwrap_or_else(|| panic!("no user {user}: {s:#}"))
}

fn sum(daemons: &[&Value], field: &str) -> u64 {
    daemons.iter().map(|d| d[field].as_u64().unwrap()).sum()
}

/// Progress on stderr (`--nocapture`): how long each step of the
/// walkthrough took, for the README; nothing is asserted on it.
fn step(start: &mut Instant, what: &str) {
    eprintln!("shared cluster: {what}: {:.2?}", start.elapsed());
    *start = Instant::now();
}

/// Tasks of alice's and of bob's in each wave.
const ALICE: u32 = 8;
const BOB: u32 = 4;

/// One wave of work: alice maps `i^2` over [`ALICE`] ids, bob draws a
/// seeded random number for [`BOB`], all with `.replicas = 2`; every result
/// is the honest one.
fn wave(alice: &mut RemoteClient, bob: &mut RemoteClient, first: u32) {
    let a: Vec<u32> = (first..first + ALICE).collect();
    let b: Vec<u32> = (first..first + BOB).collect();
    for &i in &a {
        alice.submit(i, 2, code(&format!("{i}^2")));
    }
    for &i in &b {
        bob.submit(i, 2, code(&format!("set.seed({i}); runif(1)")));
    }
    let results = |c: &RemoteClient, n: usize| -> HashMap<u32, f64> {
        (0..n)
            .map(|_| {
                let r = c.result();
                assert_eq!(r.status, lf::status::VALUE, "task {}: {}", r.id, r.text());
                (r.id, r.value())
            })
            .collect()
    };
    let got = results(alice, a.len());
    for &i in &a {
        assert_eq!(got[&i], f64::from(i * i), "alice's task {i}");
    }
    let got = results(bob, b.len());
    for &i in &b {
        let v = got[&i];
        assert!((0.0..1.0).contains(&v), "bob's task {i}: {v}");
        if i == 1 {
            assert_eq!(v, RUNIF_SEED_1);
        }
    }
}

#[test]
fn friends_share_a_host_and_a_lying_volunteer_is_caught_and_revoked() {
    let shot = std::env::var_os("HAKO_STATUS_SCREENSHOT").map(PathBuf::from);
    if shot.is_some() {
        chromium();
    }
    let mut t = Instant::now();
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("host");

    // The owner starts a host for friends, then invites them.
    let owner = Owner::start(&dir);
    step(&mut t, "hako host started");
    let sent: HashMap<&str, String> = [
        ("vol1", &["add", "vol1", "--volunteer"][..]),
        ("vol2", &["add", "vol2", "--volunteer"]),
        ("mallory", &["add", "mallory", "--volunteer"]),
        ("alice", &["add", "alice"]),
        ("bob", &["add", "bob"]),
    ]
    .into_iter()
    .map(|(who, args)| (who, owner.user(&dir, args)))
    .collect();
    step(&mut t, "five hako user add");
    // The line for alice is the R one her session runs.
    let (_, alice_token) = printed_command(&sent["alice"], "HAKO_CLIENT_TOKEN");
    let r_line = format!(
        "hako::daemons(url = \"{}\", token = \"{alice_token}\", fingerprint = \"{}\")",
        owner.url, owner.fingerprint
    );
    assert!(sent["alice"].contains(&r_line), "{}", sent["alice"]);
    // The host follows its store: once bob (added last) may look at the
    // status page, all five are let in (the store is read whole).
    let (_, bob_token) = printed_command(&sent["bob"], "HAKO_CLIENT_TOKEN");
    let deadline = Instant::now() + Duration::from_secs(30);
    while owner.status_with(&bob_token).0 != 200 {
        assert!(Instant::now() < deadline, "bob's token is never taken");
        std::thread::sleep(Duration::from_millis(100));
    }
    step(&mut t, "the host took the new users");

    // Two volunteers run what they were sent (vol1 lends two cores).
    let (mut vol1, _) = printed_command(&sent["vol1"], "HAKO_TOKEN");
    vol1.args(["--jobs", "2", "--name", "vol1-desktop"]);
    let (vol1, vol1_log) = spawn_logged(&mut vol1, "shared-cluster-vol1");
    let _vol1 = Volunteer(vol1);
    let (mut vol2, _) = printed_command(&sent["vol2"], "HAKO_TOKEN");
    vol2.args(["--name", "vol2-laptop"]);
    let _vol2 = Volunteer(spawn_logged(&mut vol2, "shared-cluster-vol2").0);
    // The third lies.
    let (_, mallory_token) = printed_command(&sent["mallory"], "HAKO_TOKEN");
    let mallory = Liar::join(
        &owner.url,
        &owner.fingerprint,
        &mallory_token,
        "mallory-box",
        LIE,
    );
    owner.wait_status("the volunteers' four sandboxes", |s| {
        of(s, "vol1").len() == 2 && of(s, "vol2").len() == 1 && of(s, "mallory").len() == 1
    });
    step(&mut t, "three volunteers joined (4 sandboxes)");

    // Two users submit from their R sessions, every task on two daemons.
    let (mut a, _) = printed_command(&sent["alice"], "HAKO_CLIENT_TOKEN");
    let mut alice = RemoteClient::start(&mut a, "shared-cluster-alice");
    let (mut b, _) = printed_command(&sent["bob"], "HAKO_CLIENT_TOKEN");
    let mut bob = RemoteClient::start(&mut b, "shared-cluster-bob");
    step(&mut t, "two users connected");
    // For the picture, waves over a few of the chart's 10-second intervals.
    let plan: &[u32] = if shot.is_some() { &[1, 3, 2, 1] } else { &[1] };
    let mut w = 0;
    for (i, &waves) in plan.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_secs(10));
        }
        for _ in 0..waves {
            wave(&mut alice, &mut bob, 1 + 100 * w);
            w += 1;
        }
    }
    // The liar is idle most of the time, so it takes part at once; should
    // it not have yet, more waves until it has.
    while mallory.answered() == 0 {
        assert!(w < 20, "mallory never got a task");
        wave(&mut alice, &mut bob, 1 + 100 * w);
        w += 1;
    }
    let tasks = u64::from(w * (ALICE + BOB));
    step(
        &mut t,
        &format!("{tasks} tasks with .replicas = 2, all honest ({w} waves)"),
    );

    // The status page: both users with their tasks done, the volunteers'
    // sandboxes, and every one of mallory's answers a disagreement.
    let lies = mallory.answered();
    let s = owner.wait_status("the votes counted", |s| {
        sum(&of(s, "mallory"), "disagreements") == lies
            && user_row(s, "alice")["done"] == w * ALICE
            && user_row(s, "bob")["done"] == w * BOB
    });
    for u in ["alice", "bob"] {
        let row = user_row(&s, u);
        assert_eq!(
            (&row["connected"], &row["queued"], &row["running"]),
            (&Value::Bool(true), &Value::from(0), &Value::from(0)),
            "{s:#}"
        );
    }
    let honest: Vec<&Value> = [of(&s, "vol1"), of(&s, "vol2")].concat();
    assert_eq!(sum(&honest, "disagreements"), 0, "{s:#}");
    assert_eq!(sum(&honest, "failures"), 0, "{s:#}");
    // Honest daemons ran each task twice: beside mallory, once and once
    // more to break the tie.
    assert_eq!(sum(&honest, "tasks_done"), 2 * tasks, "{s:#}");
    assert!(
        of(&s, "vol1").iter().all(|d| d["name"] == "vol1-desktop"),
        "{s:#}"
    );
    let fp = of(&s, "mallory")[0]["token_fingerprint"].clone();
    step(&mut t, &format!("status page read ({lies} lies outvoted)"));

    if let Some(path) = &shot {
        browse(
            &owner.status_url,
            &[
                "--window-size=1000,700",
                "--hide-scrollbars",
                &format!("--screenshot={}", path.display()),
            ],
        );
        assert!(std::fs::metadata(path).unwrap().len() > 1000);
        step(&mut t, "screenshot taken");
    }

    // Caught: the owner revokes her token; the host drops her at once.
    let listed = owner.user(&dir, &["list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("mallory") && l.contains(fp.as_str().unwrap())),
        "the status page's fingerprint names her in `hako user list`: {listed}"
    );
    owner.user(&dir, &["revoke", "mallory"]);
    let why = mallory.ended();
    assert!(why.contains("revoked"), "{why}");
    owner.wait_status("mallory gone", |s| of(s, "mallory").is_empty());
    step(&mut t, "mallory revoked and dropped");
    // The others carry on, and honest replicas still agree.
    wave(&mut alice, &mut bob, 10_000);
    let s = owner.status();
    assert_eq!(s["completed"], tasks + u64::from(ALICE + BOB), "{s:#}");
    assert_eq!(of(&s, "vol1").len() + of(&s, "vol2").len(), 3, "{s:#}");
    step(&mut t, "another wave without her");

    // Each volunteer's log has one line per task, naming the user.
    let text = std::fs::read_to_string(&vol1_log).unwrap();
    assert!(
        text.contains("(user alice)") && text.contains("(user bob)"),
        "{text}"
    );
}
