//! The sandbox options `hako eval`, `hako host` (for its local daemons) and
//! `hako daemon` share, and the one place they become a [`SandboxConfig`].

use crate::mount;
use anyhow::{bail, Context};
use clap::Args;
use hako_runtime::packages::{InstalledPackage, PackageSet};
use hako_runtime::SandboxConfig;
use std::path::{Path, PathBuf};
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

/// Longest span any seconds option accepts (a year): far beyond any real
/// timeout, and small enough that adding it to a clock or turning it into
/// milliseconds cannot overflow.
pub const MAX_SECONDS: f64 = 366.0 * 24.0 * 3600.0;

/// The one parser of a user's seconds value (`--timeout`, `--task-timeout`,
/// `--idle-time`, ...): positive, finite, at most [`MAX_SECONDS`]; anything
/// else is a usage error, never a panic.
pub fn seconds(s: f64, what: &str) -> anyhow::Result<Duration> {
    if !(s > 0.0 && s <= MAX_SECONDS) {
        bail!("{what} must be a number of seconds greater than 0 and at most {MAX_SECONDS} (a year), not {s:?}");
    }
    Ok(Duration::from_secs_f64(s))
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

/// The package set `--packages` names. An item with a `/` is a directory
/// holding an installed package tree, taken as it is now (its manifest is
/// made here, so the runtime's check before mounting guards against changes
/// from then on); any other item is the name of a package installed with
/// `hako pkg install`, which brings what it needs.
pub fn package_set(items: &[String]) -> anyhow::Result<PackageSet> {
    let mut set = PackageSet::default();
    let mut names = Vec::new();
    for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if item.contains('/') {
            let p = InstalledPackage::from_dir(Path::new(item))
                .with_context(|| format!("--packages {item}"))?;
            set.packages.push(p);
        } else {
            names.push(item.to_string());
        }
    }
    if !names.is_empty() {
        let dirs: Vec<String> = set
            .packages
            .iter()
            .map(|p| p.manifest.name.clone())
            .collect();
        for p in crate::pkg::resolve_set(&names)?.packages {
            // A directory given for a package the store also has wins.
            if !dirs.contains(&p.manifest.name) {
                set.packages.push(p);
            }
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_refuses_what_cannot_be_a_duration() {
        for bad in [
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e19,
            1e300,
        ] {
            assert!(seconds(bad, "--timeout").is_err(), "{bad}");
        }
        assert_eq!(seconds(1.5, "--t").unwrap(), Duration::from_millis(1500));
        assert!(seconds(MAX_SECONDS, "--t").is_ok());
    }

    #[test]
    fn packages_are_directories_checked_now() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("pkg");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("DESCRIPTION"), "Package: pkg\nVersion: 1\n").unwrap();
        let arg = dir.display().to_string();
        let set = package_set(&[arg.clone(), " ".into()]).unwrap();
        assert_eq!(set.packages.len(), 1);
        assert_eq!(set.packages[0].manifest.name, "pkg");
        set.verify().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("x")).unwrap();
        let e = format!("{:#}", package_set(&[arg]).unwrap_err());
        assert!(e.contains("symlink") && e.contains('x'), "{e}");
        assert!(package_set(&["./surely-not-a-dir".into()]).is_err());
    }
}
