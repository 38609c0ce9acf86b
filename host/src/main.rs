//! `hako`: sandboxed R workers on webR + wasmtime.

mod assets;
mod eval;
mod paths;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hako",
    version,
    about = "Run R you do not fully trust: webR under wasmtime, in a capability sandbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch, translate and verify webR's assets.
    Assets(assets::AssetsArgs),
    /// Evaluate R code in a fresh sandbox and print what R prints.
    Eval(eval::EvalArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Assets(a) => assets::run(a),
        Command::Eval(a) => eval::run(a),
    }
}
