//! Who a connection is: the host's access rules. A client authenticates as a
//! named user (its own token, share weight and limits) and a daemon as a
//! volunteer (its own join token, or the shared one). The server asks
//! [`Access`] at every hello; what it answers is fixed for the connection's
//! life, and a revocation closes live connections through the dispatcher
//! ([`crate::dispatcher::Event::Disconnect`]).
//!
//! With `hako host --identity DIR`, the named ones live in `DIR/users.json`
//! ([`store`], changed by `hako user`), which the host follows while it runs
//! ([`watch`]); [`invite`] prints the lines that let people join.

use crate::protocol::Role;
use crate::token;
use std::sync::{Arc, RwLock};

pub mod invite;
pub mod store;
pub mod watch;

/// A submitter, as the dispatcher schedules it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// Share weight in weighted fair queuing (at least 1).
    pub weight: u32,
    /// Most tasks queued or running at once; past it new tasks are refused.
    pub max_in_flight: Option<u64>,
}

impl User {
    /// The user of the shared client token and of the R session's own link.
    pub fn shared(name: &str) -> Arc<User> {
        Arc::new(User {
            name: name.to_string(),
            weight: 1,
            max_in_flight: None,
        })
    }
}

/// Who a daemon authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volunteer {
    /// The volunteer's name, `None` for the shared join token.
    pub name: Option<String>,
    /// First 16 hex digits of the token's SHA-256: names the token in logs,
    /// the status page and `hako user refuse`, never reveals it.
    pub fingerprint: String,
}

/// What a hello's token proved.
#[derive(Clone, Debug)]
pub enum Principal {
    Client(Arc<User>),
    Daemon(Volunteer),
}

/// Connections a revocation or refusal closes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Clients of this user.
    User(String),
    /// Daemons of this volunteer.
    Volunteer(String),
    /// Daemons that call themselves this (their hello's name).
    DaemonName(String),
    /// Daemons (and clients) whose token has this fingerprint.
    Fingerprint(String),
}

/// The tokens a host accepts. Shared state, so that a change (a user added
/// or revoked while the host runs) applies to the next hello.
pub struct Access {
    rules: RwLock<Rules>,
}

/// The current rules; `users.rs`'s store replaces them on a change.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub daemon_token: String,
    /// `None`: remote clients are refused (unless named users exist).
    pub client_token: Option<String>,
    /// Token -> user.
    pub users: Vec<(String, Arc<User>)>,
    /// Token -> volunteer name.
    pub volunteers: Vec<(String, String)>,
    /// Daemons refused by hello name or token fingerprint.
    pub refused: Vec<Selector>,
    /// Tokens of revoked users and volunteers: refused as revoked, so their
    /// owners learn why (a token never seen is just wrong).
    pub revoked: Vec<String>,
    /// A token that may only look at the status page.
    pub view_token: Option<String>,
}

impl Access {
    pub fn new(rules: Rules) -> Arc<Access> {
        Arc::new(Access {
            rules: RwLock::new(rules),
        })
    }

    pub fn replace(&self, rules: Rules) {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = rules;
    }

    /// Who `token` (and, for daemons, `name`) is, or why not.
    pub fn authenticate(&self, role: Role, token: &str, name: &str) -> Result<Principal, String> {
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        let fingerprint = fingerprint(token);
        match role {
            Role::Client => {
                // Every entry is compared, so timing says nothing of which matched.
                let mut found = None;
                for (t, u) in &rules.users {
                    if token::matches(t, token) {
                        found = Some(u.clone());
                    }
                }
                if let Some(u) = found {
                    return Ok(Principal::Client(u));
                }
                match &rules.client_token {
                    Some(t) if token::matches(t, token) => {
                        Ok(Principal::Client(User::shared("shared")))
                    }
                    _ if revoked(&rules, token) => Err(watch::REVOKED.into()),
                    Some(_) => Err("wrong token".into()),
                    None if rules.users.is_empty() => {
                        Err("this host takes no remote clients".into())
                    }
                    None => Err("wrong token".into()),
                }
            }
            Role::Daemon => {
                let mut found = None;
                for (t, v) in &rules.volunteers {
                    if token::matches(t, token) {
                        found = Some(Some(v.clone()));
                    }
                }
                if found.is_none() && token::matches(&rules.daemon_token, token) {
                    found = Some(None);
                }
                let Some(name_of_token) = found else {
                    if revoked(&rules, token) {
                        return Err(watch::REVOKED.into());
                    }
                    return Err("wrong token".into());
                };
                for r in &rules.refused {
                    let hit = match r {
                        Selector::DaemonName(n) => n == name,
                        Selector::Fingerprint(f) => *f == fingerprint,
                        Selector::Volunteer(v) => name_of_token.as_deref() == Some(v.as_str()),
                        Selector::User(_) => false,
                    };
                    if hit {
                        return Err(watch::REFUSED.into());
                    }
                }
                Ok(Principal::Daemon(Volunteer {
                    name: name_of_token,
                    fingerprint,
                }))
            }
        }
    }
}

impl Access {
    /// Whether `token` may see the status page: the view token, or any
    /// token a client may submit with.
    pub fn may_view(&self, token: &str) -> bool {
        let ok = {
            let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
            rules
                .view_token
                .as_deref()
                .is_some_and(|t| token::matches(t, token))
        };
        ok || matches!(
            self.authenticate(Role::Client, token, ""),
            Ok(Principal::Client(_))
        )
    }
}

/// Whether `token` is a revoked one (every entry compared, as above).
fn revoked(rules: &Rules, token: &str) -> bool {
    rules
        .revoked
        .iter()
        .fold(false, |hit, t| token::matches(t, token) | hit)
}

/// A token's public name: the first 16 hex digits of its SHA-256.
pub fn fingerprint(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(token.as_bytes())[..8])
}
