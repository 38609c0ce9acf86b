//! `--mount HOST_DIR:GUEST_DIR[:ro|:rw]`, shared by `hako eval`, `hako host`
//! (its local daemons) and `hako daemon`: the only way a host directory
//! becomes visible to the guest.

use anyhow::{bail, Context};
use hako_runtime::MountSpec;
use std::path::PathBuf;

/// Parse every `--mount` and check the set as a sandbox would (layout rules,
/// host directories that exist), so a bad one stops the command at once.
pub fn parse_all(specs: &[String]) -> anyhow::Result<Vec<MountSpec>> {
    let mounts = specs
        .iter()
        .map(|s| parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let check = hako_runtime::SandboxConfig {
        mounts: mounts.clone(),
        ..Default::default()
    };
    check.check_mounts().context("--mount")?;
    Ok(mounts)
}

/// `HOST_DIR:GUEST_DIR[:ro|:rw]`; read-only unless `:rw`.
fn parse(spec: &str) -> anyhow::Result<MountSpec> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, guest, writable) = match parts.as_slice() {
        [h, g] => (h, g, false),
        [h, g, "ro"] => (h, g, false),
        [h, g, "rw"] => (h, g, true),
        _ => bail!("--mount {spec}: expected HOST_DIR:GUEST_DIR[:ro|:rw]"),
    };
    if host.is_empty() {
        bail!("--mount {spec}: the host directory is empty");
    }
    if !guest.starts_with('/') {
        bail!("--mount {spec}: the guest path must be absolute");
    }
    Ok(MountSpec {
        host_dir: PathBuf::from(host),
        guest_path: guest.to_string(),
        writable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_refusals() {
        let d = tempfile::tempdir().unwrap();
        let h = d.path().display();
        let m = parse_all(&[format!("{h}:/data"), format!("{h}:/out:rw")]).unwrap();
        assert!(!m[0].writable && m[1].writable);
        assert_eq!(m[1].guest_path, "/out");
        for bad in [
            format!("{h}:data"),
            format!("{h}:/data:rx"),
            format!("{h}"),
            ":/data".to_string(),
            format!("{h}:/tmp/x"),
            format!("{h}:/usr/lib/R"),
            format!("{h}/missing:/data"),
        ] {
            assert!(
                parse_all(std::slice::from_ref(&bad)).is_err(),
                "{bad} accepted"
            );
        }
        let overlap = parse_all(&[format!("{h}:/data"), format!("{h}:/data/sub")]);
        assert!(overlap.is_err());
    }
}
