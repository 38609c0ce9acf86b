//! `hako pkg list|remove` and the content-addressed store (being built).

use clap::Args;

#[derive(Args)]
pub struct ListArgs {}

#[derive(Args)]
pub struct RemoveArgs {}

pub fn list(_args: ListArgs) -> anyhow::Result<()> {
    anyhow::bail!("hako pkg list is not available yet")
}

pub fn remove(_args: RemoveArgs) -> anyhow::Result<()> {
    anyhow::bail!("hako pkg remove is not available yet")
}
