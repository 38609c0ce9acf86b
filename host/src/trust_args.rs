//! How `hako daemon` and `hako client` decide to trust a host
//! (`--fingerprint`, `--ca`): one set of options, so both commands read and
//! check them alike. The token stays with each command: daemons and clients
//! present different tokens, from different environment variables.

use crate::tls::{self, Trust};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct TrustArgs {
    /// Pin the host's certificate (as printed by `hako host`).
    #[arg(long, value_name = "SHA256:HEX")]
    fingerprint: Option<String>,
    /// Without --fingerprint: also trust this CA (PEM), besides the web PKI.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
}

impl TrustArgs {
    /// The pinned fingerprint when given, else CA roots (the web PKI and
    /// `--ca`).
    pub fn trust(&self) -> anyhow::Result<Trust> {
        Ok(match &self.fingerprint {
            Some(f) => Trust::Pinned(tls::parse_fingerprint(f)?),
            None => Trust::Roots {
                ca_file: self.ca.clone(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_pins_and_its_absence_trusts_roots() {
        let hex = "ab".repeat(32);
        let pinned = TrustArgs {
            fingerprint: Some(format!("SHA256:{hex}")),
            ca: Some("ignored.pem".into()),
        };
        assert!(matches!(pinned.trust().unwrap(), Trust::Pinned(p) if p == [0xab; 32]));
        let roots = TrustArgs {
            fingerprint: None,
            ca: Some("ca.pem".into()),
        };
        assert!(matches!(
            roots.trust().unwrap(),
            Trust::Roots { ca_file: Some(f) } if f == std::path::Path::new("ca.pem")
        ));
        let bad = TrustArgs {
            fingerprint: Some("SHA256:zz".into()),
            ca: None,
        };
        assert!(bad.trust().is_err());
    }
}
