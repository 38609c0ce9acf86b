//! `hako pkg build` (being built).

use clap::Args;

#[derive(Args)]
pub struct BuildArgs {}

pub fn run(_args: BuildArgs) -> anyhow::Result<()> {
    anyhow::bail!("hako pkg build is not available yet")
}
