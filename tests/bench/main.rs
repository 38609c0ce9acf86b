//! hako's benchmark, run by hand: `cargo run --release -p hako-tests --bin hako-bench`.
//!
//! Measures, in one run, hako against webR 0.6.0 in Node.js (the same
//! R.wasm) and native R: cold compile, start from the cache to the first
//! result, reset to pristine, a `1+1` round trip, the compute set with R's
//! JIT off and on, and the RSS of one idle sandbox. Prints a Markdown table.

use hako_runtime::{Runtime, SandboxConfig, TaskOutcome};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const COMPUTE_R: &str = include_str!("compute.R");

/// Sandboxes run on a thread with the stack wasm needs, as daemon workers
/// do: on the main thread every evaluation would hop to a fresh thread and
/// the timings would include that.
fn main() {
    std::thread::Builder::new()
        .stack_size(hako_runtime::SANDBOX_THREAD_STACK)
        .spawn(bench)
        .expect("spawning the benchmark thread")
        .join()
        .unwrap();
}

fn bench() {
    let args: Vec<String> = std::env::args().collect();
    let cold = args.iter().any(|a| a == "--cold");
    let rounds: usize = std::env::var("HAKO_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let hako_bin = workspace().join("target/release/hako");
    let assets_dir = hako_assets::Assets::default_dir();
    let assets =
        hako_assets::Assets::fetch(&assets_dir, &mut |m| eprintln!("assets: {m}")).expect("assets");

    println!("| measure | hako | webR in Node | native R |");
    println!("|---|---|---|---|");

    if cold {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let rt = Runtime::new(&assets, dir.path()).expect("cold runtime");
        let mut sb = rt.sandbox(SandboxConfig::default()).unwrap();
        sb.eval("1+1").unwrap();
        println!(
            "| cold start: compile every module + boot R + snapshot | {:.1} s | | |",
            t.elapsed().as_secs_f64()
        );
    }

    // Start from the cache to the first result, as a user sees it.
    let warm: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let out = Command::new(&hako_bin)
                .args(["eval", "1+1"])
                .output()
                .expect("running hako");
            assert!(out.status.success());
            t.elapsed().as_secs_f64()
        })
        .collect();
    let node = node_anchor(false);
    let node_jit = node_anchor(true);
    let native_start = median(
        &(0..5)
            .map(|_| {
                let t = Instant::now();
                Command::new("Rscript").args(["-e", "1+1"]).output().ok();
                t.elapsed().as_secs_f64()
            })
            .collect::<Vec<_>>(),
    );
    println!(
        "| start from cache to first result (process, median of 7) | {:.3} s | {} | {:.3} s |",
        median(&warm),
        node.as_ref()
            .map(|n| format!("{:.3} s", n.start_s))
            .unwrap_or("n/a".into()),
        native_start
    );

    let rt = Runtime::new(&assets, &cache_dir()).expect("runtime");
    let mut sb = rt.sandbox(SandboxConfig::default()).unwrap();

    // Reset after a trivial task and after one that touches 8 MB.
    let mut small = Vec::new();
    let mut big = Vec::new();
    for i in 0..200 {
        sb.eval("x <- 1").unwrap();
        let t = Instant::now();
        sb.reset().unwrap();
        small.push(t.elapsed().as_secs_f64());
        if i % 4 == 0 {
            sb.eval("x <- numeric(1e6)").unwrap();
            let t = Instant::now();
            sb.reset().unwrap();
            big.push(t.elapsed().as_secs_f64());
        }
    }
    println!(
        "| reset to pristine (median; after `x <- 1` / after 8 MB touched) | {:.0} µs / {:.0} µs | restart: {} | |",
        median(&small) * 1e6,
        median(&big) * 1e6,
        node.as_ref().map(|n| format!("{:.1} s", n.start_s)).unwrap_or("n/a".into())
    );

    // `1+1` round trip through the public API.
    let mut rt_eval = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        sb.eval("1+1").unwrap();
        rt_eval.push(t.elapsed().as_secs_f64());
    }
    let task = serialized_one_plus_one();
    let mut rt_task = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let r = sb.eval_task(&task).unwrap();
        assert!(matches!(r.outcome, TaskOutcome::Value(_)));
        sb.reset().unwrap();
        rt_task.push(t.elapsed().as_secs_f64());
    }
    println!(
        "| `1+1` round trip, eval p50/p99 | {:.0} / {:.0} µs | {} | |",
        pct(&rt_eval, 0.5) * 1e6,
        pct(&rt_eval, 0.99) * 1e6,
        node.as_ref()
            .map(|n| format!("{:.2} / {:.2} ms", n.rt_p50_ms, n.rt_p99_ms))
            .unwrap_or("n/a".into())
    );
    println!(
        "| `1+1` as a serialized task + reset, p50/p99 | {:.0} / {:.0} µs | | |",
        pct(&rt_task, 0.5) * 1e6,
        pct(&rt_task, 0.99) * 1e6
    );

    // The compute set, JIT off then on.
    let names = ["fib", "loop", "matrix", "sort", "regex", "serialize"];
    for jit in [false, true] {
        let mut sb = rt.sandbox(SandboxConfig::default()).unwrap();
        let level = if jit { 3 } else { 0 };
        let setup = format!("invisible(compiler::enableJIT({level}))\n{COMPUTE_R}");
        assert!(sb.eval(&setup).unwrap().ok);
        let native = native_compute(level);
        let node = if jit { &node_jit } else { &node };
        let mut ratios_node = Vec::new();
        let mut ratios_native = Vec::new();
        for name in names {
            let ours = best_of(3, || {
                let r = sb
                    .eval(&format!(
                        "invisible(eval(hako_bench_compute[[\"{name}\"]]))"
                    ))
                    .unwrap();
                assert!(r.ok, "{name}: {:?}", r.output);
            });
            let n = node.as_ref().and_then(|n| n.compute_s.get(name).copied());
            let nat = native.as_ref().and_then(|m| m.get(name).copied());
            if let Some(n) = n {
                ratios_node.push(ours / n);
            }
            if let Some(v) = nat {
                ratios_native.push(ours / v);
            }
            println!(
                "| compute `{name}` (JIT {}) | {:.3} s | {} | {} |",
                if jit { "on" } else { "off" },
                ours,
                n.map(|v| format!("{v:.3} s")).unwrap_or("n/a".into()),
                nat.map(|v| format!("{v:.3} s")).unwrap_or("n/a".into())
            );
        }
        println!(
            "| compute geometric mean, hako ÷ anchor (JIT {}) | | {} | {} |",
            if jit { "on" } else { "off" },
            geo(&ratios_node)
                .map(|g| format!("{g:.2}x"))
                .unwrap_or("n/a".into()),
            geo(&ratios_native)
                .map(|g| format!("{g:.2}x"))
                .unwrap_or("n/a".into())
        );
    }

    // Peak RSS of a process holding one idle sandbox after `1+1`.
    let rss = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(&hako_bin)
        .args(["eval", "invisible(1+1)"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .lines()
                .last()?
                .parse::<f64>()
                .ok()
        });
    println!(
        "| peak RSS, one idle sandbox (whole process) | {} | {} | |",
        rss.map(|k| format!("{:.0} MB", k / 1024.0))
            .unwrap_or("n/a".into()),
        node.as_ref()
            .map(|n| format!("{:.0} MB", n.rss_mb))
            .unwrap_or("n/a".into())
    );
}

struct NodeAnchor {
    start_s: f64,
    rt_p50_ms: f64,
    rt_p99_ms: f64,
    rss_mb: f64,
    compute_s: std::collections::HashMap<String, f64>,
}

/// webR 0.6.0 in Node.js, when `npm install` was run in tests/bench.
fn node_anchor(jit: bool) -> Option<NodeAnchor> {
    let dir = workspace().join("tests/bench");
    if !dir.join("node_modules/webr").exists() {
        eprintln!("webR in Node not installed: run `npm install` in tests/bench");
        return None;
    }
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir).arg("webr-node.mjs");
    if jit {
        cmd.arg("--jit");
    }
    let out = cmd.output().ok()?;
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()?
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    Some(NodeAnchor {
        start_s: v["start_s"].as_f64()?,
        rt_p50_ms: v["rt_p50_ms"].as_f64()?,
        rt_p99_ms: v["rt_p99_ms"].as_f64()?,
        rss_mb: v["rss_mb"].as_f64()?,
        compute_s: v["compute_s"]
            .as_object()?
            .iter()
            .filter_map(|(k, x)| Some((k.clone(), x.as_f64()?)))
            .collect(),
    })
}

/// The compute set in native R (Debian's), best of 3 each.
fn native_compute(jit: u32) -> Option<std::collections::HashMap<String, f64>> {
    let script = format!(
        "invisible(compiler::enableJIT({jit}))\n{COMPUTE_R}\nfor (n in names(hako_bench_compute)) {{ b <- Inf; for (i in 1:3) b <- min(b, system.time(eval(hako_bench_compute[[n]]))[['elapsed']]); cat(n, b, '\\n') }}"
    );
    let out = Command::new("Rscript")
        .args(["--vanilla", "-e", &script])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((
                    it.next()?.to_string(),
                    it.next()?.parse::<f64>().ok()?.max(0.001),
                ))
            })
            .collect(),
    )
}

/// `serialize(list(quote(1+1), list()), NULL, version = 3)`, made by the
/// sandbox itself so the benchmark needs no native R.
fn serialized_one_plus_one() -> Vec<u8> {
    let rt = hako_tests::runtime();
    let mut sb = rt.sandbox(SandboxConfig::default()).unwrap();
    let out = sb
        .eval("cat(serialize(list(quote(1+1), list()), NULL, version = 3L), sep = ' ')")
        .unwrap();
    let text = hako_tests::text(&out.output, hako_runtime::Stream::Stdout);
    text.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

fn best_of(n: usize, mut f: impl FnMut()) -> f64 {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn median(v: &[f64]) -> f64 {
    pct(v, 0.5)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

fn geo(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cache_dir() -> PathBuf {
    hako_tests::cache_dir()
}
