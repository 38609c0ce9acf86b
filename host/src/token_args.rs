//! Where a join token comes from: a file or the environment, so that it is
//! never in a command line other users of the machine can read with `ps`.
//! `--token` itself is still accepted, for scripts that already pass it.

use anyhow::{bail, Context};
use std::path::Path;

/// A token file is one line; anything longer is not a token.
const MAX_TOKEN_FILE: u64 = 4096;

/// The token from `--token-file` (first), else `--token` / the environment
/// variable clap already read into `given`.
pub fn resolve(given: Option<&str>, file: Option<&Path>, env: &str) -> anyhow::Result<String> {
    let token = match file {
        Some(path) => {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("--token-file {}", path.display()))?;
            if meta.len() > MAX_TOKEN_FILE {
                bail!("--token-file {}: larger than a token ({} bytes)", path.display(), meta.len());
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--token-file {}", path.display()))?;
            text.trim().to_string()
        }
        None => match given {
            Some(t) => t.trim().to_string(),
            None => bail!("no token: give --token-file FILE or set {env} (a --token on the command line is visible to other users in ps)"),
        },
    };
    if token.is_empty() {
        bail!("the token is empty");
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_wins_and_is_trimmed_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "abc123\n").unwrap();
        assert_eq!(resolve(Some("other"), Some(&f), "X").unwrap(), "abc123");
        assert_eq!(resolve(Some(" t "), None, "X").unwrap(), "t");
        assert!(resolve(None, None, "HAKO_TOKEN")
            .unwrap_err()
            .to_string()
            .contains("HAKO_TOKEN"));
        std::fs::write(&f, "\n").unwrap();
        assert!(resolve(None, Some(&f), "X").is_err());
        std::fs::write(&f, vec![b'a'; 5000]).unwrap();
        assert!(resolve(None, Some(&f), "X")
            .unwrap_err()
            .to_string()
            .contains("larger"));
        assert!(resolve(None, Some(&dir.path().join("none")), "X").is_err());
    }
}
