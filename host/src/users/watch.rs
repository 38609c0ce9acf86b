//! A running host follows its user store: `hako user` commands change
//! `DIR/users.json`, the host notices within a second (it polls the file's
//! identity, size and time: no new dependency, no inotify limits), swaps its
//! access rules, and closes the connections a revocation, removal or
//! refusal ends. A store that does not load leaves the previous rules.

use super::store::{self, Kind, Store};
use super::{Access, Rules, Selector};
use crate::dispatcher::{Event, Handle};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often the store is looked at.
const POLL: Duration = Duration::from_secs(1);

pub const REVOKED: &str = "this token was revoked by the host";
/// Said as a revocation too, so the daemon of a removed volunteer stops.
const REMOVED: &str = "this token was revoked by the host (its user was removed)";
pub const REFUSED: &str = "this daemon is refused by the host";

/// The host's access rules: `base` (the shared tokens) and, with
/// `--identity DIR`, the users in DIR's store, followed while the host runs.
pub fn access(dir: Option<&Path>, base: Rules, handle: Handle) -> anyhow::Result<Arc<Access>> {
    let Some(dir) = dir else {
        return Ok(Access::new(base));
    };
    let current = store::load(dir)?;
    let access = Access::new(current.rules(&base));
    if !current.users.is_empty() {
        tracing::info!(
            "{} user(s) and volunteer(s) in {}",
            current.users.iter().filter(|e| !e.revoked).count(),
            store::path(dir).display()
        );
    }
    tokio::spawn(follow(
        dir.to_path_buf(),
        base,
        current,
        access.clone(),
        handle,
    ));
    Ok(access)
}

/// What changes when the store is rewritten (a rename makes a new inode).
type Stamp = Option<(u64, u64, i64, i64)>;

fn stamp(p: &Path) -> Stamp {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

async fn follow(
    dir: PathBuf,
    base: Rules,
    mut current: Store,
    access: Arc<Access>,
    handle: Handle,
) {
    let path = store::path(&dir);
    let mut seen = stamp(&path);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        let next = match store::load(&dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e:#}: keeping the previous users and refusals");
                continue;
            }
        };
        // New connections see the new rules before old ones are closed, so
        // a closed daemon's reconnection is refused.
        access.replace(next.rules(&base));
        tracing::info!("{} changed: rules replaced", path.display());
        for (selector, reason) in ended(&current, &next) {
            if !handle.send(Event::Disconnect {
                selector,
                reason: reason.to_string(),
            }) {
                return;
            }
        }
        current = next;
    }
}

/// The connections a change from `old` to `new` ends, and why: users and
/// volunteers revoked, removed or given a new token, daemons newly refused.
fn ended(old: &Store, new: &Store) -> Vec<(Selector, &'static str)> {
    let mut out = Vec::new();
    for e in old.users.iter().filter(|e| !e.revoked) {
        let reason = match new.get(&e.name) {
            Some(n) if n.revoked => REVOKED,
            Some(n) if n.token == e.token && n.kind == e.kind => continue,
            Some(_) => REVOKED,
            None => REMOVED,
        };
        let selector = match e.kind {
            Kind::Submitter => Selector::User(e.name.clone()),
            Kind::Volunteer => Selector::Volunteer(e.name.clone()),
        };
        out.push((selector, reason));
    }
    for n in &new.refused.names {
        if !old.refused.names.contains(n) {
            out.push((Selector::DaemonName(n.clone()), REFUSED));
        }
    }
    for f in &new.refused.fingerprints {
        if !old.refused.fingerprints.contains(f) {
            out.push((Selector::Fingerprint(f.to_ascii_lowercase()), REFUSED));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::store::Entry;

    fn e(name: &str, kind: Kind, token: &str, revoked: bool) -> Entry {
        Entry {
            name: name.into(),
            kind,
            token: token.into(),
            weight: 1,
            max_in_flight: None,
            revoked,
        }
    }

    #[test]
    fn revocations_removals_and_refusals_end_connections() {
        let old = Store {
            users: vec![
                e("a", Kind::Submitter, "ta", false),
                e("b", Kind::Submitter, "tb", false),
                e("v", Kind::Volunteer, "tv", false),
                e("w", Kind::Volunteer, "tw", false),
                e("gone", Kind::Submitter, "tg", true),
            ],
            refused: store::Refused {
                names: vec!["old".into()],
                fingerprints: vec![],
            },
        };
        let mut new = old.clone();
        new.users[0].revoked = true;
        new.users.remove(3);
        new.users.push(e("c", Kind::Submitter, "tc", false));
        new.refused.names.push("box".into());
        new.refused.fingerprints.push("00112233445566AA".into());
        assert_eq!(
            ended(&old, &new),
            vec![
                (Selector::User("a".into()), REVOKED),
                (Selector::Volunteer("w".into()), REMOVED),
                (Selector::DaemonName("box".into()), REFUSED),
                (Selector::Fingerprint("00112233445566aa".into()), REFUSED),
            ]
        );
        assert!(ended(&new, &new).is_empty());
    }
}
