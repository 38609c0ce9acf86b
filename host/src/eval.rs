//! `hako eval`: one evaluation in a fresh sandbox, printed as R prints it.
//!
//! Exit status: 0 success, 1 R error, 2 usage error, 3 a limit was hit.

use crate::paths;
use crate::sandbox_args::SandboxArgs;
use anyhow::{bail, Context};
use clap::Args;
use hako_runtime::{Runtime, SandboxError, Stream};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

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
    #[command(flatten)]
    sandbox: SandboxArgs,
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
    let timeout = args
        .timeout
        .map(|t| crate::sandbox_args::seconds(t, "--timeout"))
        .transpose()?;
    let config = args.sandbox.config(timeout)?;
    let assets = paths::ensure_assets(&paths::assets_dir(args.sandbox.assets.as_deref()))?;
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
                    format!("memory limit reached ({} MiB)", args.sandbox.memory)
                }
                (hako_runtime::Limit::Output, _) => {
                    format!("output limit reached ({} MiB)", args.sandbox.max_output)
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
