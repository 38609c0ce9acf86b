//! The host's network side: bind the listener, choose the name daemons
//! dial and the certificate they pin, tell how to join (READY lines for the
//! R session, a banner for people), and serve daemons and remote clients.

use super::{HostArgs, Settings, Tokens};
use crate::dispatcher::Handle;
use crate::link_setup::Ready;
use crate::server::{self, ServerConfig};
use crate::shutdown::Enlist;
use crate::tls::Identity;
use crate::users::invite::sh;
use crate::{identity, whoami};
use anyhow::Context;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Listen at `addr` until `stop` turns true, each authenticated connection
/// enlisted for shutdown to wait for. Adds the joining lines to `ready` and
/// returns the banner.
pub(super) async fn start(
    addr: &str,
    args: &HostArgs,
    settings: &Settings,
    (handle, stop, enlist): (Handle, watch::Receiver<bool>, Enlist),
    ready: &mut Ready,
) -> anyhow::Result<String> {
    let tokens = &settings.tokens;
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("--listen {addr}: expected ADDR:PORT"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    let advertise = advertise(args.advertise.clone(), bound);
    let identity = certificate(args, &advertise, bound)?;
    let mut banner = announce(bound, &advertise, &identity, tokens, ready);
    let view_token = crate::status_page::view_token(args.identity.as_deref())?;
    let status_url = crate::status_page::url(&advertise, bound.port(), &view_token);
    ready.add("status_url", &status_url);
    let _ = writeln!(banner, "the status page (read-only):\n  {status_url}");
    let rules = crate::users::Rules {
        daemon_token: tokens.daemon.clone(),
        client_token: tokens.client.clone(),
        view_token: Some(view_token),
        ..Default::default()
    };
    if let Some(dir) = &args.identity {
        // Where `hako user add` tells people to connect.
        let host = crate::users::invite::HostInfo {
            url: url(bound, &advertise),
            fingerprint: identity.self_signed.then(|| identity.fingerprint.clone()),
        };
        crate::users::invite::remember(dir, &host)?;
    }
    let access = crate::users::watch::access(args.identity.as_deref(), rules, handle.clone())?;
    let cfg = Arc::new(ServerConfig {
        tls: identity.server_config()?,
        access,
        limits: settings.limits,
        handshake_timeout: settings.handshake_timeout,
        heartbeat: settings.heartbeat,
        packages: settings.sandbox.packages.clone(),
    });
    tokio::spawn(server::serve(listener, cfg, handle, stop, enlist));
    Ok(banner)
}

/// The name daemons dial: `--advertise`, else the bound address when it is
/// specific, else this machine's name.
fn advertise(given: Option<String>, bound: SocketAddr) -> String {
    given.unwrap_or_else(|| {
        if bound.ip().is_unspecified() {
            whoami::machine_name().unwrap_or_else(|| "127.0.0.1".into())
        } else {
            bound.ip().to_string()
        }
    })
}

/// `--cert`/`--key`, else a self-signed certificate (kept in `--identity`,
/// or fresh) for every name daemons may dial.
fn certificate(args: &HostArgs, advertise: &str, bound: SocketAddr) -> anyhow::Result<Identity> {
    if let (Some(c), Some(k)) = (&args.cert, &args.key) {
        return Identity::from_pem(c, k);
    }
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        advertise.to_string(),
    ];
    if !bound.ip().is_unspecified() {
        names.push(bound.ip().to_string());
    }
    names.sort();
    names.dedup();
    match &args.identity {
        Some(dir) => identity::certificate(dir, names),
        None => Identity::self_signed(names),
    }
}

/// The URL, fingerprint, tokens and ready-to-paste commands: as READY lines
/// (added to `ready`) and as the banner (returned).
fn announce(
    bound: SocketAddr,
    advertise: &str,
    identity: &Identity,
    tokens: &Tokens,
    ready: &mut Ready,
) -> String {
    let url = url(bound, advertise);
    let pin = if identity.self_signed {
        format!(" --fingerprint {}", identity.fingerprint)
    } else {
        String::new()
    };
    // The token travels in the environment, not in the daemon's argv where
    // every user of the volunteer's machine could read it with ps.
    let daemon_cmd = format!("HAKO_TOKEN={} hako daemon {url}{pin}", sh(&tokens.daemon));
    ready.add("url", &url);
    ready.add("fingerprint", &identity.fingerprint);
    ready.add("token", &tokens.daemon);
    ready.add("daemon_command", &daemon_cmd);
    let mut banner = String::new();
    let _ = writeln!(banner, "hako host listening on {bound} as {url}");
    let _ = writeln!(banner, "certificate {}", identity.fingerprint);
    let _ = writeln!(
        banner,
        "to lend a machine's cores to this host, run there:\n  {daemon_cmd}"
    );
    if let Some(ct) = &tokens.client {
        let client_cmd = format!("HAKO_CLIENT_TOKEN={} hako client {url}{pin}", sh(ct));
        ready.add("client_token", ct);
        ready.add("client_command", &client_cmd);
        let _ = writeln!(
            banner,
            "R sessions elsewhere can submit tasks through:\n  {client_cmd}"
        );
    }
    banner
}

/// The URL daemons and clients dial.
fn url(bound: SocketAddr, advertise: &str) -> String {
    let host_part = if advertise.contains(':') {
        format!("[{advertise}]")
    } else {
        advertise.to_string()
    };
    format!("wss://{host_part}:{}", bound.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell_only_when_needed() {
        assert_eq!(sh("abc-1.2:3"), "abc-1.2:3");
        assert_eq!(sh(""), "''");
        assert_eq!(sh("a b"), "'a b'");
        assert_eq!(sh("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_announcement_names_url_pin_and_commands() {
        let identity = Identity::self_signed(vec!["localhost".into()]).unwrap();
        let tokens = Tokens {
            daemon: "d".repeat(16),
            client: Some("c c".into()),
        };
        let bound: SocketAddr = "[::1]:7000".parse().unwrap();
        let mut ready = Ready::new("1", 1);
        let banner = announce(bound, "::1", &identity, &tokens, &mut ready);
        let fp = &identity.fingerprint;
        // Tokens in the environment, never in argv (ps shows argv).
        let daemon = format!(
            "HAKO_TOKEN={} hako daemon wss://[::1]:7000 --fingerprint {fp}",
            "d".repeat(16)
        );
        let client =
            format!("HAKO_CLIENT_TOKEN='c c' hako client wss://[::1]:7000 --fingerprint {fp}");
        for line in [
            "url\twss://[::1]:7000".to_string(),
            format!("fingerprint\t{fp}"),
            format!("token\t{}", "d".repeat(16)),
            format!("daemon_command\t{daemon}"),
            "client_token\tc c".to_string(),
            format!("client_command\t{client}"),
        ] {
            assert!(
                ready.text().lines().any(|l| l == line),
                "{line} in {}",
                ready.text()
            );
        }
        assert!(
            banner.contains(&daemon) && banner.contains(&client),
            "{banner}"
        );
        assert!(banner.starts_with("hako host listening on [::1]:7000 as wss://[::1]:7000\n"));
    }

    #[test]
    fn daemons_dial_the_given_name_else_a_specific_address() {
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(advertise(Some("h.example".into()), lo), "h.example");
        assert_eq!(advertise(None, lo), "127.0.0.1");
        assert!(!advertise(None, any).is_empty());
    }
}
