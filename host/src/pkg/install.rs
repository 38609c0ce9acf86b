//! `hako pkg install` (being built).

use clap::Args;

#[derive(Args)]
pub struct InstallArgs {}

pub fn run(_args: InstallArgs) -> anyhow::Result<()> {
    anyhow::bail!("hako pkg install is not available yet")
}
