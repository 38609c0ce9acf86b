//! `hako pkg`: compiled R packages for the sandbox. Building source packages
//! into wasm binary packages (`toolchain`, `build`), installing them from
//! webR-style repositories into a content-addressed store (`install`,
//! `list`, `remove`), and the package sets a sandbox is given.

mod build;
mod exnref;
mod fetch;
mod imports;
mod index;
mod install;
pub mod store;
mod toolchain;
mod unpack;

pub use store::resolve_set;

use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Args)]
pub struct PkgArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Prepare (or check) the toolchain that builds packages into wasm.
    Toolchain(toolchain::ToolchainArgs),
    /// Build source packages into wasm binary packages in a repository.
    Build(build::BuildArgs),
    /// Install packages and their dependencies from repositories.
    Install(install::InstallArgs),
    /// List installed packages.
    List(store::ListArgs),
    /// Remove installed packages.
    Remove(store::RemoveArgs),
}

pub fn run(args: PkgArgs) -> ExitCode {
    let result = match args.action {
        Action::Toolchain(a) => toolchain::run(a),
        Action::Build(a) => build::run(a),
        Action::Install(a) => install::run(a),
        Action::List(a) => store::list(a),
        Action::Remove(a) => store::remove(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hako pkg: {e:#}");
            ExitCode::FAILURE
        }
    }
}
