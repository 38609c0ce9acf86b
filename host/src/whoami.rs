//! What this process says about itself: the build's capabilities (in every
//! hello, and for every in-process daemon) and the machine's name (what a
//! host advertises, a client's default name). Kept in one place so that the
//! host, its daemons and clients describe themselves alike, and so that no
//! subcommand reaches into another for them.

use crate::protocol::Capabilities;

/// What this build can do, as told to the other side of a connection.
pub fn capabilities() -> Capabilities {
    Capabilities {
        hako_version: env!("CARGO_PKG_VERSION").to_string(),
        webr_version: hako_assets::WEBR_VERSION.to_string(),
        features: vec!["everywhere".into(), "cancel".into()],
    }
}

/// This machine's name (gethostname), when it has one.
pub fn machine_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

/// `ROLE@HOSTNAME:PID`, the name a client shows in the host's `info()`
/// when it is given none.
pub fn default_name(role: &str) -> String {
    let host = machine_name().unwrap_or_else(|| "unknown".into());
    format!("{role}@{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_name_says_role_machine_and_process() {
        let n = default_name("client");
        assert!(n.starts_with("client@"), "{n}");
        assert!(n.ends_with(&format!(":{}", std::process::id())), "{n}");
        if let Some(m) = machine_name() {
            assert!(n.contains(&m), "{n}");
        }
    }

    #[test]
    fn capabilities_name_this_build() {
        let c = capabilities();
        assert_eq!(c.hako_version, env!("CARGO_PKG_VERSION"));
        assert!(c.features.iter().any(|f| f == "everywhere"));
    }
}
