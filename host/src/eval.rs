//! `hako eval`: one evaluation in a fresh sandbox, printed as R prints it.
//!
//! Exit status: 0 success, 1 R error, 2 usage error, 3 a limit was hit.

use crate::{mount, paths};
use anyhow::{bail, Context};
use clap::Args;
use hako_runtime::{Runtime, SandboxConfig, SandboxError, Stream};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct EvalArgs {
    /// R code to evaluate; `-` reads it from standard input.
    #[arg(conflicts_with = "file", required_unless_present = "file")]
    expr: Option<String>,
    /// Evaluate the R code in FILE.
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// Stop the evaluation after SECONDS.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Cap on the sandbox's memory, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    memory: usize,
    /// Cap on captured output, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    max_output: usize,
    /// Make HOST_DIR visible at GUEST_DIR (read-only unless `:rw`). Repeatable.
    #[arg(long, value_name = "HOST_DIR:GUEST_DIR[:ro|:rw]")]
    mount: Vec<String>,
    /// Asset directory (default: $HAKO_ASSETS or the per-user cache).
    #[arg(long)]
    assets: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hako: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_inner(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let code = match (&args.expr, &args.file) {
        (Some(e), None) if e == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading standard input")?;
            s
        }
        (Some(e), None) => e.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        _ => bail!("give R code, `-f FILE` or `-`"),
    };
    let timeout = match args.timeout {
        Some(t) if !(t > 0.0 && t.is_finite()) => {
            bail!("--timeout must be a positive number of seconds")
        }
        Some(t) => Some(Duration::from_secs_f64(t)),
        None => None,
    };
    if args.memory < 128 {
        bail!("--memory must be at least 128 MiB (R itself needs about 60 MiB)");
    }
    let mounts = mount::parse_all(&args.mount)?;
    let config = SandboxConfig {
        memory_bytes: args.memory << 20,
        timeout,
        output_bytes: args.max_output << 20,
        mounts,
        ..SandboxConfig::default()
    };
    let assets = paths::ensure_assets(&paths::assets_dir(args.assets.as_deref()))?;
    let runtime = Runtime::new(&assets, &paths::cache_dir())?;
    let mut sandbox = runtime.sandbox(config)?;
    let result = sandbox.eval(&code);
    let (status, output, note) = match result {
        Ok(r) => (if r.ok { 0 } else { 1 }, r.output, None),
        Err(SandboxError::Limit { limit, output }) => {
            let what = match (limit, timeout) {
                (hako_runtime::Limit::Time, Some(t)) => {
                    format!("time limit reached ({} s)", t.as_secs_f64())
                }
                (hako_runtime::Limit::Memory, _) => {
                    format!("memory limit reached ({} MiB)", args.memory)
                }
                (hako_runtime::Limit::Output, _) => {
                    format!("output limit reached ({} MiB)", args.max_output)
                }
                (l, _) => l.to_string(),
            };
            (3, output, Some(what))
        }
        Err(SandboxError::Crashed { message, output }) => (1, output, Some(message)),
        Err(SandboxError::Host(e)) => return Err(e),
    };
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for chunk in output {
        let _ = match chunk.stream {
            Stream::Stdout => out.write_all(&chunk.bytes),
            _ => {
                let _ = out.flush();
                err.write_all(&chunk.bytes)
            }
        };
    }
    let _ = out.flush();
    if let Some(note) = note {
        let _ = writeln!(err, "hako: {note}");
    }
    Ok(ExitCode::from(status))
}
