//! `hako pkg toolchain`: the private, versioned toolchain that builds R
//! packages into side modules R.wasm loads (see `toolchain/prepare.sh` for
//! what goes in: bookworm's clang-19, trixie's emcc 3.1.69 unpacked from its
//! .deb through a private apt configuration, libc++ 21 headers, binaryen from
//! npm, R 4.6 headers made for wasm32, webR's Makeconf). It lives in
//! `<cache>/toolchain-<key>`, where the key hashes the preparation script, so
//! a change of pinned versions prepares a new one beside the old.

use anyhow::{bail, Context};
use clap::Args;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The preparation script; its hash is the toolchain's key.
const PREPARE: &str = include_str!("toolchain/prepare.sh");

#[derive(Args)]
pub struct ToolchainArgs {
    /// Print only the toolchain's directory on standard output (preparing
    /// it first if needed), for scripts.
    #[arg(long)]
    print_dir: bool,
    /// Asset directory (default: $HAKO_ASSETS or the per-user cache): webR's
    /// etc/Makeconf comes from there.
    #[arg(long, value_name = "DIR")]
    assets: Option<PathBuf>,
}

pub fn run(args: ToolchainArgs) -> anyhow::Result<()> {
    let tc = Toolchain::ensure(args.assets.as_deref())?;
    if args.print_dir {
        println!("{}", tc.dir.display());
    } else {
        eprintln!(
            "hako pkg: toolchain {} ready in {}",
            key(),
            tc.dir.display()
        );
    }
    Ok(())
}

/// A prepared toolchain.
pub struct Toolchain {
    pub dir: PathBuf,
}

/// First 16 hex digits of the preparation script's sha256.
pub fn key() -> String {
    hex::encode(Sha256::digest(PREPARE.as_bytes()))[..16].to_string()
}

impl Toolchain {
    /// The toolchain, prepared on first use. Concurrent callers wait on one
    /// lock; a failed preparation leaves its directory without `ready`, and
    /// the next call resumes it (every step of the script is stamped).
    pub fn ensure(assets: Option<&Path>) -> anyhow::Result<Toolchain> {
        let cache = crate::paths::cache_dir();
        let dir = cache.join(format!("toolchain-{}", key()));
        if ready(&dir) {
            return Ok(Toolchain { dir });
        }
        fs::create_dir_all(&cache).with_context(|| format!("create {}", cache.display()))?;
        let lock_path = cache.join(format!("toolchain-{}.lock", key()));
        let lock = fs::File::create(&lock_path)
            .with_context(|| format!("create {}", lock_path.display()))?;
        if ready(&dir) {
            return Ok(Toolchain { dir });
        }
        eprintln!(
            "hako pkg: waiting for the toolchain lock {}",
            lock_path.display()
        );
        hako_assets::lock_exclusive(&lock).context("lock the toolchain")?;
        if ready(&dir) {
            return Ok(Toolchain { dir });
        }
        let assets = crate::paths::ensure_assets(&crate::paths::assets_dir(assets))?;
        // The script writes absolute paths, so it prepares the final
        // directory in place; `ready` marks it complete.
        eprintln!(
            "hako pkg: preparing the wasm toolchain in {} (once, ~300 MB download)",
            dir.display()
        );
        let status = Command::new("bash")
            .arg("-c")
            .arg(PREPARE)
            .arg("hako-toolchain")
            .env("TC", &dir)
            .env("WEBR_ROOTFS", assets.rootfs())
            .env("WEBR_LIB", assets.lib_dir())
            .status()
            .context("run bash (the toolchain's preparation script)")?;
        if !status.success() {
            bail!(
                "preparing the toolchain failed ({status}); {} is kept and the next run resumes it",
                dir.display()
            );
        }
        fs::write(dir.join("ready"), key())?;
        drop(lock);
        Ok(Toolchain { dir })
    }

    pub fn bin(&self, tool: &str) -> PathBuf {
        self.dir.join("bin").join(tool)
    }
}

fn ready(dir: &Path) -> bool {
    dir.join("ready").is_file()
}
