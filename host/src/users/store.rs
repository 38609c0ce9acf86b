//! The user store, `DIR/users.json` in the host's `--identity` directory:
//! named submitters and volunteers with their tokens and limits, and the
//! daemons the host refuses. Private to its owner like the host's key (it
//! holds tokens), changed only under `DIR/users.lock` and replaced whole
//! (temporary file, then rename), so two `hako user` commands cannot lose
//! each other's writes and a running host never reads half a file.

use super::{Rules, Selector, User};
use crate::identity;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const FILE: &str = "users.json";
const LOCK: &str = "users.lock";
/// Names kept for the host's own connections: the R session's link and the
/// shared client token.
const RESERVED: [&str; 2] = ["local", "shared"];

/// What `users.json` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    #[serde(default)]
    pub users: Vec<Entry>,
    #[serde(default)]
    pub refused: Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Submits tasks from an R session.
    Submitter,
    /// Lends a machine: its daemons join with this token.
    Volunteer,
}

/// A named user or volunteer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    pub token: String,
    /// Share weight in fair queuing (submitters).
    #[serde(default = "one")]
    pub weight: u32,
    /// Most tasks queued or running at once (submitters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u64>,
    /// Kept, not deleted, so that the token is refused as revoked (not as
    /// merely wrong) and the name is not handed out again by mistake.
    #[serde(default)]
    pub revoked: bool,
}

fn one() -> u32 {
    1
}

/// Daemons refused whatever token they present.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refused {
    /// By the name in their hello (`hako daemon --name`).
    #[serde(default)]
    pub names: Vec<String>,
    /// By their token's fingerprint ([`super::fingerprint`]).
    #[serde(default)]
    pub fingerprints: Vec<String>,
}

/// A user, volunteer or daemon name: short and printable, so that it is
/// safe in logs, on the status page and in a shell command, and never a
/// path.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.@".contains(c);
    if name.is_empty() || name.len() > 32 {
        bail!(
            "a name has 1 to 32 characters, not {}",
            name.chars().count()
        );
    }
    if !name.chars().all(ok_char) {
        bail!(
            "{:?}: a name has only letters, digits and - _ . @",
            crate::dial::printable(name)
        );
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        bail!("{name:?}: a name starts with a letter or a digit");
    }
    if RESERVED.contains(&name) {
        bail!("{name:?} is reserved for the host's own connections: choose another name");
    }
    Ok(())
}

/// A token fingerprint as `hako user list` and the status page show it
/// (16 hex digits), normalised to lower case.
pub fn check_fingerprint(fp: &str) -> anyhow::Result<String> {
    let fp = fp.trim().to_ascii_lowercase();
    if fp.len() != 16 || !fp.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "{:?}: a token fingerprint is 16 hex digits (as `hako user list` and the status page show)",
            crate::dial::printable(&fp)
        );
    }
    Ok(fp)
}

impl Store {
    /// Every entry well formed, names and tokens unique: a hand-edited file
    /// that breaks this is refused as a whole.
    pub fn check(&self) -> anyhow::Result<()> {
        let mut names = std::collections::HashSet::new();
        let mut tokens = std::collections::HashSet::new();
        for e in &self.users {
            check_name(&e.name).with_context(|| format!("user {:?}", e.name))?;
            if !names.insert(e.name.as_str()) {
                bail!("user {:?} is listed twice", e.name);
            }
            if e.token.len() < 16 {
                bail!("user {:?}: a token must be at least 16 characters", e.name);
            }
            if !tokens.insert(e.token.as_str()) {
                bail!("user {:?} shares its token with another user", e.name);
            }
            if e.weight == 0 {
                bail!("user {:?}: weight must be at least 1", e.name);
            }
        }
        for n in &self.refused.names {
            check_name(n).with_context(|| format!("refused daemon {n:?}"))?;
        }
        for f in &self.refused.fingerprints {
            check_fingerprint(f)?;
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.users.iter().find(|e| e.name == name)
    }

    /// `base` (the shared tokens) with this store's users, volunteers and
    /// refusals.
    pub fn rules(&self, base: &Rules) -> Rules {
        let mut r = base.clone();
        for e in &self.users {
            if e.revoked {
                r.revoked.push(e.token.clone());
                continue;
            }
            match e.kind {
                Kind::Submitter => r.users.push((
                    e.token.clone(),
                    Arc::new(User {
                        name: e.name.clone(),
                        weight: e.weight.max(1),
                        max_in_flight: e.max_in_flight,
                    }),
                )),
                Kind::Volunteer => r.volunteers.push((e.token.clone(), e.name.clone())),
            }
        }
        r.refused.extend(
            self.refused
                .names
                .iter()
                .map(|n| Selector::DaemonName(n.clone())),
        );
        r.refused.extend(
            self.refused
                .fingerprints
                .iter()
                .map(|f| Selector::Fingerprint(f.to_ascii_lowercase())),
        );
        r
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The store in `dir` (empty if there is none yet), refused if others can
/// read it or it is not well formed.
pub fn load(dir: &Path) -> anyhow::Result<Store> {
    let p = path(dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Store::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    identity::check_private(&p)?;
    parse(&text).with_context(|| format!("{} is not a valid user store", p.display()))
}

pub fn parse(text: &str) -> anyhow::Result<Store> {
    let s: Store = serde_json::from_str(text)?;
    s.check()?;
    Ok(s)
}

/// Change the store in `dir` with `f`, under its lock; written only if `f`
/// succeeds. Returns what `f` returns.
pub fn update<T>(dir: &Path, f: impl FnOnce(&mut Store) -> anyhow::Result<T>) -> anyhow::Result<T> {
    identity::prepare(dir)?;
    let lock_path = dir.join(LOCK);
    let _lock = hako_assets::lock_file(&lock_path, || {
        eprintln!("hako: waiting for another `hako user` command to finish");
    })
    .with_context(|| format!("locking {}", lock_path.display()))?;
    let mut store = load(dir)?;
    let out = f(&mut store)?;
    store.check()?;
    save(dir, &store)?;
    Ok(out)
}

/// Replace `dir/users.json` whole: a reader sees the old file or the new.
fn save(dir: &Path, store: &Store) -> anyhow::Result<()> {
    let p = path(dir);
    let mut text = serde_json::to_string_pretty(store)?;
    text.push('\n');
    crate::link::write_private(&p, &text).with_context(|| format!("writing {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn names_are_short_printable_and_never_paths() {
        for ok in ["alice", "bob-2", "a.b_c@lab", "X"] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            "../etc",
            "a/b",
            ".hidden",
            "-rf",
            "a b",
            "tab\there",
            "esc\x1b[0m",
            "é",
            "local",
            "shared",
            &"x".repeat(33),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            check_fingerprint(" 0123456789ABCDEF ").unwrap(),
            "0123456789abcdef"
        );
        assert!(check_fingerprint("0123").is_err());
        assert!(check_fingerprint("0123456789abcdeg").is_err());
    }

    fn entry(name: &str, kind: Kind, revoked: bool) -> Entry {
        Entry {
            name: name.into(),
            kind,
            token: format!("{name}-token-0123456789"),
            weight: 2,
            max_in_flight: Some(5),
            revoked,
        }
    }

    #[test]
    fn round_trip_private_and_rules() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("id");
        assert_eq!(load(&dir).unwrap(), Store::default());
        update(&dir, |s| {
            s.users.push(entry("alice", Kind::Submitter, false));
            s.users.push(entry("vic", Kind::Volunteer, false));
            s.users.push(entry("eve", Kind::Submitter, true));
            s.refused.names.push("bad-box".into());
            Ok(())
        })
        .unwrap();
        let mode = std::fs::metadata(path(&dir)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let s = load(&dir).unwrap();
        assert_eq!(s.users.len(), 3);
        assert_eq!(
            s.get("alice"),
            Some(&entry("alice", Kind::Submitter, false))
        );
        let r = s.rules(&Rules::default());
        assert_eq!(r.users.len(), 1);
        assert_eq!(r.users[0].1.name, "alice");
        assert_eq!(r.users[0].1.weight, 2);
        assert_eq!(r.users[0].1.max_in_flight, Some(5));
        assert_eq!(
            r.volunteers,
            vec![(entry("vic", Kind::Volunteer, false).token, "vic".into())]
        );
        assert_eq!(r.revoked, vec![entry("eve", Kind::Submitter, true).token]);
        assert_eq!(r.refused, vec![Selector::DaemonName("bad-box".into())]);
        // A failed change writes nothing.
        let err = update(&dir, |s| {
            s.users.push(entry("alice", Kind::Volunteer, false));
            Ok(())
        });
        assert!(err.is_err());
        assert_eq!(load(&dir).unwrap(), s);
        // Others may not read it.
        std::fs::set_permissions(path(&dir), std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = format!("{:#}", load(&dir).unwrap_err());
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn concurrent_changes_are_all_kept() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("id");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    update(&dir, |s| {
                        // Widen the window a lost update would need.
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        s.users
                            .push(entry(&format!("u{i}"), Kind::Submitter, false));
                        Ok(())
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(load(&dir).unwrap().users.len(), 8);
    }

    #[test]
    fn malformed_stores_are_refused_whole() {
        assert!(parse("{").is_err());
        assert!(parse(
            r#"{"users": [{"name": "a", "kind": "boss", "token": "0123456789abcdef"}]}"#
        )
        .is_err());
        assert!(parse(
            r#"{"users": [{"name": "a/b", "kind": "submitter", "token": "0123456789abcdef"}]}"#
        )
        .is_err());
        assert!(
            parse(r#"{"users": [{"name": "a", "kind": "submitter", "token": "short"}]}"#).is_err()
        );
        assert!(parse(r#"{"userz": []}"#).is_err());
        let s = parse(
            r#"{"users": [{"name": "a", "kind": "submitter", "token": "0123456789abcdef"}]}"#,
        )
        .unwrap();
        assert_eq!(s.users[0].weight, 1);
        assert_eq!(s.users[0].max_in_flight, None);
        assert!(!s.users[0].revoked);
    }
}
