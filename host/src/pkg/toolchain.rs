//! `hako pkg toolchain` (being built).

use clap::Args;

#[derive(Args)]
pub struct ToolchainArgs {}

pub fn run(_args: ToolchainArgs) -> anyhow::Result<()> {
    anyhow::bail!("hako pkg toolchain is not available yet")
}
