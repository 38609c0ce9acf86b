//! The sandbox options `hako eval`, `hako host` (for its local daemons) and
//! `hako daemon` share, and the one place they become a [`SandboxConfig`].

use crate::mount;
use anyhow::bail;
use clap::Args;
use hako_runtime::SandboxConfig;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Clone, Debug)]
pub struct SandboxArgs {
    /// Memory cap of each sandbox, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub memory: usize,
    /// Cap on an evaluation's captured output, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub max_output: usize,
    /// Make HOST_DIR visible to the sandbox at GUEST_DIR (read-only unless
    /// `:rw`). Repeatable.
    #[arg(long, value_name = "HOST_DIR:GUEST_DIR[:ro|:rw]")]
    pub mount: Vec<String>,
    /// Asset directory (default: $HAKO_ASSETS or the per-user cache).
    #[arg(long)]
    pub assets: Option<PathBuf>,
}

impl SandboxArgs {
    /// The sandbox these options describe, with `timeout` per evaluation;
    /// a memory cap R cannot start in, or a bad mount, is refused here.
    pub fn config(&self, timeout: Option<Duration>) -> anyhow::Result<SandboxConfig> {
        if self.memory < 128 {
            bail!("--memory must be at least 128 MiB (R itself needs about 60 MiB)");
        }
        Ok(SandboxConfig {
            memory_bytes: self.memory << 20,
            timeout,
            output_bytes: self.max_output << 20,
            mounts: mount::parse_all(&self.mount)?,
            ..SandboxConfig::default()
        })
    }
}
