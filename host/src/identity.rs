//! `hako host --identity DIR`: the host's self-signed certificate and the
//! tokens it was not given, kept in a directory of its own and reused, so a
//! restarted host has the same fingerprint and tokens and the daemons pinned
//! to it reconnect by themselves.

use crate::link::write_private;
use crate::tls::Identity;
use anyhow::{bail, Context};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The certificate kept in `dir` (made for `names` on first use).
pub fn certificate(dir: &Path, names: Vec<String>) -> anyhow::Result<Identity> {
    prepare(dir)?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        check_private(&key)?;
        let mut id = Identity::from_pem(&cert, &key)?;
        // Still self-signed: daemons must pin it.
        id.self_signed = true;
        return Ok(id);
    }
    let (id, cert_pem, key_pem) = Identity::self_signed_pem(names)?;
    write_private(&key, &key_pem).with_context(|| format!("writing {}", key.display()))?;
    write_private(&cert, &cert_pem).with_context(|| format!("writing {}", cert.display()))?;
    Ok(id)
}

/// The token kept in `dir/name` (generated on first use).
pub fn token(dir: &Path, name: &str) -> anyhow::Result<String> {
    prepare(dir)?;
    let path = dir.join(name);
    if path.exists() {
        check_private(&path)?;
        let t = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let t = t.trim().to_string();
        if t.len() < 16 {
            bail!("{}: a token must be at least 16 characters", path.display());
        }
        return Ok(t);
    }
    let t = crate::token::generate()?;
    write_private(&path, &t).with_context(|| format!("writing {}", path.display()))?;
    Ok(t)
}

pub(crate) fn prepare(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))
}

/// Secrets others can read are not secrets: refuse them.
pub(crate) fn check_private(path: &Path) -> anyhow::Result<()> {
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} can be read by others (mode {:o}): chmod 600 it, or start afresh",
            path.display(),
            mode & 0o777
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_and_reused_and_private() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("id");
        let a = certificate(&dir, vec!["127.0.0.1".into()]).unwrap();
        let b = certificate(&dir, vec!["other".into()]).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert!(b.self_signed);
        let t = token(&dir, "token").unwrap();
        assert_eq!(token(&dir, "token").unwrap(), t);
        assert_ne!(token(&dir, "client_token").unwrap(), t);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("key.pem")), 0o600);
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let err = certificate(&dir, vec![]).err().unwrap().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
