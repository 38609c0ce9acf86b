//! How a named user or volunteer joins: the running host leaves the URL it
//! advertises and its certificate's fingerprint in `DIR/host.json`, and
//! `hako user add` (or `show`) turns them and the user's token into the one
//! line a friend pastes: R for a submitter, a shell command (and its R
//! equivalent) for a volunteer. Tokens go in the environment or the R
//! session, never in a command line `ps` shows.

use super::store::{Entry, Kind};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

const FILE: &str = "host.json";

/// Where the host was last seen listening.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// `wss://HOST:PORT`, as daemons and clients dial it.
    pub url: String,
    /// `SHA256:...` of a self-signed certificate, which joiners pin; `None`
    /// for a certificate checked against CA roots.
    pub fingerprint: Option<String>,
}

/// Remember where the host listens (written at each start, replaced whole).
pub fn remember(dir: &Path, info: &HostInfo) -> anyhow::Result<()> {
    let path = dir.join(FILE);
    let text = serde_json::to_string_pretty(info)? + "\n";
    crate::link::write_private(&path, &text).with_context(|| format!("writing {}", path.display()))
}

/// Where the host in `dir` last listened, if it ever did.
pub fn recall(dir: &Path) -> anyhow::Result<Option<HostInfo>> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => serde_json::from_str(&t)
            .map(Some)
            .with_context(|| format!("{} is not valid", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// What to send `e` so that they can join the host last seen at `host`.
pub fn lines(host: Option<&HostInfo>, e: &Entry, dir: &Path) -> String {
    let mut out = String::new();
    let Some(h) = host else {
        let _ = writeln!(
            out,
            "This host has not listened yet ({} has no {FILE}), so there is no address to send.\n\
             Start it with `hako host --identity {} --listen ADDR:PORT`, then run\n  \
             hako user show {} --identity {}\nfor the line to send {}.",
            dir.display(),
            sh(&dir.display().to_string()),
            e.name,
            sh(&dir.display().to_string()),
            e.name
        );
        return out;
    };
    let pin = h
        .fingerprint
        .as_ref()
        .map(|f| format!(" --fingerprint {f}"))
        .unwrap_or_default();
    let r_pin = h
        .fingerprint
        .as_ref()
        .map(|f| format!(", fingerprint = {}", r_str(f)))
        .unwrap_or_default();
    match e.kind {
        Kind::Submitter => {
            let _ = writeln!(
                out,
                "{} submits tasks to this host from R with:\n  \
                 hako::daemons(url = {}, token = {}{r_pin})\n\
                 or bridges an R session from a shell with:\n  \
                 HAKO_CLIENT_TOKEN={} hako client {}{pin}",
                e.name,
                r_str(&h.url),
                r_str(&e.token),
                sh(&e.token),
                h.url
            );
        }
        Kind::Volunteer => {
            let _ = writeln!(
                out,
                "{} lends a machine to this host by running there:\n  \
                 HAKO_TOKEN={} hako daemon {}{pin}\n\
                 or, from R:\n  \
                 hako::daemon({}, token = {}{r_pin})",
                e.name,
                sh(&e.token),
                h.url,
                r_str(&h.url),
                r_str(&e.token)
            );
        }
    }
    let _ = writeln!(
        out,
        "The token lets anyone in as {}: send it privately. `hako user revoke {} --identity {}` ends it.",
        e.name,
        e.name,
        sh(&dir.display().to_string())
    );
    out
}

/// An R string literal.
fn r_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Shell-quote a word if it needs it.
pub(crate) fn sh(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,%".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind) -> Entry {
        Entry {
            name: "ann".into(),
            kind,
            token: "t0k3n-0123456789abcdef".into(),
            weight: 1,
            max_in_flight: None,
            revoked: false,
        }
    }

    #[test]
    fn the_lines_to_send_carry_url_pin_and_token_outside_argv() {
        let d = tempfile::tempdir().unwrap();
        let host = HostInfo {
            url: "wss://h.example:7000".into(),
            fingerprint: Some("SHA256:ab12".into()),
        };
        remember(d.path(), &host).unwrap();
        let h = recall(d.path()).unwrap().unwrap();
        assert_eq!(h, host);
        let s = lines(Some(&h), &entry(Kind::Submitter), d.path());
        assert!(
            s.contains(r#"hako::daemons(url = "wss://h.example:7000", token = "t0k3n-0123456789abcdef", fingerprint = "SHA256:ab12")"#),
            "{s}"
        );
        let v = lines(Some(&h), &entry(Kind::Volunteer), d.path());
        assert!(
            v.contains("HAKO_TOKEN=t0k3n-0123456789abcdef hako daemon wss://h.example:7000 --fingerprint SHA256:ab12\n"),
            "{v}"
        );
        assert!(v.contains(r#"hako::daemon("wss://h.example:7000", token = "t0k3n-0123456789abcdef", fingerprint = "SHA256:ab12")"#), "{v}");
        assert!(!v.contains("--token"), "{v}");
        let none = lines(None, &entry(Kind::Volunteer), d.path());
        assert!(none.contains("has not listened yet"), "{none}");
        assert!(!none.contains("t0k3n"), "{none}");
    }
}
