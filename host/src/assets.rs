//! `hako assets fetch|verify`.

use crate::paths;
use clap::{Args, Subcommand};
use hako_assets::Assets;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct AssetsArgs {
    #[command(subcommand)]
    action: Action,
    /// Asset directory (default: $HAKO_ASSETS or the per-user cache).
    #[arg(long, global = true)]
    assets: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Action {
    /// Fetch webR and binaryen from npm, check their integrity, translate and
    /// build the guest's files; reuse a verified cache.
    Fetch,
    /// Check every asset file against the manifest's sha256.
    Verify,
}

pub fn run(args: AssetsArgs) -> ExitCode {
    let dir = paths::assets_dir(args.assets.as_deref());
    let started = std::time::Instant::now();
    let result = match args.action {
        Action::Fetch => Assets::fetch(&dir, &mut |m| eprintln!("hako: {m}")),
        Action::Verify => Assets::verify(&dir),
    };
    match result {
        Ok(a) => {
            println!(
                "assets ok: {} (webR {}, {} files, {:.1} s)",
                a.dir().display(),
                hako_assets::WEBR_VERSION,
                a.manifest().files.len(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hako: {e}");
            ExitCode::FAILURE
        }
    }
}
