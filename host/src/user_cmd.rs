//! `hako user`: the people of a host started with `--identity DIR`. Each
//! submitter and volunteer gets a token of their own (and a submitter a
//! share weight and an optional cap on tasks in flight); `add` prints the
//! line to send them. A running host follows the store within a second:
//! `revoke` closes that user's connections and refuses the token from then
//! on, `refuse-daemon` does the same to daemons by name or token
//! fingerprint, with no restart.

use crate::users::invite;
use crate::users::store::{self, check_fingerprint, check_name, Entry, Kind, Store};
use anyhow::bail;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
    /// The host's identity directory (as `hako host --identity DIR`).
    #[arg(long, value_name = "DIR", global = true)]
    identity: Option<PathBuf>,
}

/// Which daemons a refusal names.
#[derive(Args, Debug)]
pub struct DaemonRef {
    /// The daemon's name (its hello's, as the status page shows it).
    #[arg(
        required_unless_present = "fingerprint",
        conflicts_with = "fingerprint"
    )]
    name: Option<String>,
    /// Its token's fingerprint: 16 hex digits.
    #[arg(long, value_name = "FP")]
    fingerprint: Option<String>,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Add a submitter (or, with --volunteer, a volunteer) with a new token,
    /// and print the line to send them.
    Add {
        /// 1 to 32 letters, digits and - _ . @ (shown in logs and on the
        /// status page).
        name: String,
        /// A volunteer: lends machines (its daemons join with this token).
        #[arg(long, conflicts_with_all = ["weight", "max_in_flight"])]
        volunteer: bool,
        /// Share weight in fair queuing: twice the weight, twice the share
        /// when users compete.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        weight: u32,
        /// Most of this user's tasks queued or running at once (default:
        /// no limit); past it, new tasks are refused until some finish.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        max_in_flight: Option<u64>,
    },
    /// Print the line to send a user again.
    Show { name: String },
    /// The users, volunteers and refused daemons.
    List,
    /// Revoke a user's or volunteer's token: a running host closes their
    /// connections within a second and refuses the token from then on.
    Revoke { name: String },
    /// Refuse daemons by the name they give (`hako daemon --name`) or by
    /// their token's fingerprint (`hako user list`, the status page),
    /// closing those connected.
    RefuseDaemon(DaemonRef),
    /// Take daemons refused by `refuse-daemon` again.
    AllowDaemon(DaemonRef),
}

pub fn run(args: UserArgs) -> ExitCode {
    match user(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hako: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn user(args: UserArgs) -> anyhow::Result<()> {
    let Some(dir) = args.identity else {
        bail!("give the host's identity directory: --identity DIR (as `hako host --identity DIR`)");
    };
    let dir = dir.as_path();
    match args.command {
        UserCommand::Add {
            name,
            volunteer,
            weight,
            max_in_flight,
        } => {
            check_name(&name)?;
            let kind = if volunteer {
                Kind::Volunteer
            } else {
                Kind::Submitter
            };
            let token = crate::token::generate()?;
            let entry = store::update(dir, |s| {
                match s.get(&name) {
                    Some(e) if e.revoked => bail!(
                        "{name} was revoked; revoked names are kept (their token is refused as revoked): choose another name"
                    ),
                    Some(_) => bail!("{name} exists already (`hako user show {name}` prints its line again)"),
                    None => {}
                }
                let e = Entry {
                    name: name.clone(),
                    kind,
                    token,
                    weight,
                    max_in_flight,
                    revoked: false,
                };
                s.users.push(e.clone());
                Ok(e)
            })?;
            println!(
                "added {} {} (token fingerprint {})",
                kind_word(kind),
                entry.name,
                crate::users::fingerprint(&entry.token)
            );
            print!(
                "{}",
                invite::lines(invite::recall(dir)?.as_ref(), &entry, dir)
            );
        }
        UserCommand::Show { name } => {
            let s = store::load(dir)?;
            let Some(e) = s.get(&name) else {
                bail!("no user {name} in {}", store::path(dir).display());
            };
            if e.revoked {
                bail!("{name} was revoked");
            }
            print!("{}", invite::lines(invite::recall(dir)?.as_ref(), e, dir));
        }
        UserCommand::List => print!("{}", list(&store::load(dir)?)),
        UserCommand::Revoke { name } => {
            store::update(dir, |s| {
                match s.users.iter_mut().find(|e| e.name == name) {
                    None => bail!("no user {name}"),
                    Some(e) if e.revoked => bail!("{name} is revoked already"),
                    Some(e) => e.revoked = true,
                }
                Ok(())
            })?;
            println!("revoked {name}: a running host closes their connections within a second");
        }
        UserCommand::RefuseDaemon(d) => {
            let what = refusal(dir, d.name, d.fingerprint, true)?;
            println!("refused daemons {what}: a running host closes them within a second");
        }
        UserCommand::AllowDaemon(d) => {
            let what = refusal(dir, d.name, d.fingerprint, false)?;
            println!("no longer refused: daemons {what}");
        }
    }
    Ok(())
}

/// Add (or, with `refuse` false, remove) a daemon refusal.
fn refusal(
    dir: &Path,
    name: Option<String>,
    fingerprint: Option<String>,
    refuse: bool,
) -> anyhow::Result<String> {
    let (key, what) = match (name, fingerprint) {
        (Some(n), _) => {
            check_name(&n)?;
            (n.clone(), format!("named {n}"))
        }
        (None, Some(f)) => {
            let f = check_fingerprint(&f)?;
            (f.clone(), format!("with token fingerprint {f}"))
        }
        (None, None) => bail!("give a daemon name or --fingerprint FP"),
    };
    let by_name = what.starts_with("named");
    store::update(dir, |s| {
        let list = if by_name {
            &mut s.refused.names
        } else {
            &mut s.refused.fingerprints
        };
        let at = list.iter().position(|x| x.eq_ignore_ascii_case(&key));
        match (refuse, at) {
            (true, Some(_)) => bail!("daemons {what} are refused already"),
            (true, None) => list.push(key.clone()),
            (false, Some(i)) => {
                list.remove(i);
            }
            (false, None) => bail!("daemons {what} are not refused"),
        }
        Ok(())
    })?;
    Ok(what)
}

fn kind_word(k: Kind) -> &'static str {
    match k {
        Kind::Submitter => "submitter",
        Kind::Volunteer => "volunteer",
    }
}

/// The store as a table (tokens shown by fingerprint only).
fn list(s: &Store) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<10} {:>6} {:>13} {:<8} TOKEN FINGERPRINT",
        "NAME", "KIND", "WEIGHT", "MAX IN FLIGHT", "STATE"
    );
    for e in &s.users {
        let _ = writeln!(
            out,
            "{:<16} {:<10} {:>6} {:>13} {:<8} {}",
            e.name,
            kind_word(e.kind),
            e.weight,
            e.max_in_flight
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            if e.revoked { "revoked" } else { "active" },
            crate::users::fingerprint(&e.token)
        );
    }
    for n in &s.refused.names {
        let _ = writeln!(out, "refused daemon named {n}");
    }
    for f in &s.refused.fingerprints {
        let _ = writeln!(out, "refused daemons with token fingerprint {f}");
    }
    out
}
