//! Which layer a normalised guest path belongs to. Routing is by longest
//! prefix over a fixed set of anchors (mounts, the scratch roots, `/dev`);
//! everything else is the read-only base layer: the image plus the synthetic
//! directories needed to reach the anchors (`/`, `/home`, a mount's parents).
//! A path that is none of these does not exist: the guest sees no other host
//! name.

use super::error::VfsError;
use super::mount::Mount;
use super::path::{components, normalize_config, overlaps, strip_prefix};
use std::path::PathBuf;

/// R's own tree: the image owns it, no mount may shadow or enter it.
pub(crate) const R_HOME: &str = "/usr/lib/R";
pub(crate) const DEV: &str = "/dev";
pub(crate) const TMP: &str = "/tmp";
/// `st_dev` of the first mount; mount `i` is `MOUNT_DEV_BASE + i`.
const MOUNT_DEV_BASE: u32 = 16;

/// Where a path lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Loc {
    /// Image or synthetic directory, read-only.
    Base,
    /// Below `/dev`: `""` is `/dev` itself, otherwise the rest of the path.
    Dev(String),
    /// The in-memory tree (`/tmp`, home).
    Scratch,
    /// Mount index and the path below its root (`""` = the root).
    Mount(usize, String),
}

#[derive(Debug)]
pub(crate) struct Namespace {
    pub mounts: Vec<Mount>,
    /// `/tmp` and the home directory.
    pub scratch_roots: Vec<String>,
}

/// A requested mount, validated.
pub(crate) struct MountPlan {
    pub host_dir: PathBuf,
    pub guest: String,
    pub writable: bool,
}

impl Namespace {
    /// Validate the layout and open the mounts.
    pub fn new(home: &str, plans: Vec<MountPlan>) -> Result<Namespace, VfsError> {
        let mut mounts = Vec::with_capacity(plans.len());
        for (i, m) in plans.into_iter().enumerate() {
            let dev = MOUNT_DEV_BASE.saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
            let mount =
                Mount::open(&m.host_dir, m.guest.clone(), m.writable, dev).map_err(|e| {
                    VfsError::Mount {
                        guest: m.guest.clone(),
                        reason: format!("cannot open host directory {}: {e}", m.host_dir.display()),
                    }
                })?;
            mounts.push(mount);
        }
        let mut roots = vec![TMP.to_string()];
        if home != TMP {
            roots.push(home.to_string());
        }
        Ok(Namespace {
            mounts,
            scratch_roots: roots,
        })
    }

    /// The layer of a normalised absolute path.
    pub fn route(&self, abs: &str) -> Loc {
        for (i, m) in self.mounts.iter().enumerate() {
            if let Some(rest) = strip_prefix(abs, &m.guest) {
                return Loc::Mount(i, rest.to_string());
            }
        }
        if self
            .scratch_roots
            .iter()
            .any(|r| strip_prefix(abs, r).is_some())
        {
            return Loc::Scratch;
        }
        if let Some(rest) = strip_prefix(abs, DEV) {
            return Loc::Dev(rest.to_string());
        }
        Loc::Base
    }

    fn anchors(&self) -> impl Iterator<Item = &str> {
        self.mounts
            .iter()
            .map(|m| m.guest.as_str())
            .chain(self.scratch_roots.iter().map(String::as_str))
            .chain(std::iter::once(DEV))
    }

    /// Names directly below the base directory `abs` that lead to an anchor.
    pub fn synthetic_children(&self, abs: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .anchors()
            .filter_map(|a| strip_prefix(a, abs))
            .filter_map(|rest| components(rest).next())
            .map(str::to_string)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// `abs` is `/` or a strict ancestor of an anchor.
    pub fn is_synthetic_dir(&self, abs: &str) -> bool {
        abs == "/"
            || self
                .anchors()
                .any(|a| strip_prefix(a, abs).is_some_and(|rest| !rest.is_empty()))
    }

    /// `abs` is exactly the root of a mount or of a scratch tree: it cannot be
    /// removed or renamed.
    pub fn is_anchor(&self, abs: &str) -> bool {
        self.anchors().any(|a| a == abs)
    }
}

/// Check and normalise the home directory.
pub(crate) fn validate_home(home: &str) -> Result<String, VfsError> {
    let bad = |reason: &str| VfsError::Home {
        home: home.to_string(),
        reason: reason.to_string(),
    };
    let h = normalize_config(home).map_err(|_| bad("must be an absolute UTF-8 path"))?;
    if h == "/" {
        return Err(bad("cannot be /"));
    }
    if overlaps(&h, DEV) || overlaps(&h, R_HOME) {
        return Err(bad("overlaps /dev or /usr/lib/R"));
    }
    Ok(h)
}

/// Check and normalise mount points: absolute, not `/`, and overlapping
/// neither each other nor `/dev`, `/tmp`, home or `/usr/lib/R`.
pub(crate) fn validate_mount(
    guest: &str,
    home: &str,
    earlier: &[MountPlan],
) -> Result<String, VfsError> {
    let bad = |reason: String| VfsError::Mount {
        guest: guest.to_string(),
        reason,
    };
    let g = normalize_config(guest).map_err(|_| bad("guest path must be absolute UTF-8".into()))?;
    if g == "/" {
        return Err(bad("cannot mount over /".into()));
    }
    for reserved in [DEV, TMP, R_HOME, home] {
        if overlaps(&g, reserved) {
            return Err(bad(format!("overlaps {reserved}")));
        }
    }
    if let Some(o) = earlier.iter().find(|m| overlaps(&g, &m.guest)) {
        return Err(bad(format!("overlaps mount {}", o.guest)));
    }
    Ok(g)
}
