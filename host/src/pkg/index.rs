//! Repository indexes: the `PACKAGES` file of a CRAN-like repository (DCF:
//! `Field: value` records separated by blank lines), R's version ordering,
//! and the dependency resolution `hako pkg install` plans with.

use anyhow::{bail, Context};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

/// Where a webR-style repository keeps wasm binaries for R.wasm's R (4.6),
/// below its base URL (webR's repository and r-universe alike).
pub const CONTRIB: &str = "bin/emscripten/contrib/4.6";

/// Packages that come with R itself: never downloaded, never in a set.
pub const BASE_PACKAGES: &[&str] = &[
    "R",
    "base",
    "compiler",
    "datasets",
    "grDevices",
    "graphics",
    "grid",
    "methods",
    "parallel",
    "splines",
    "stats",
    "stats4",
    "tcltk",
    "tools",
    "utils",
];

/// One DCF record, fields in file order (a later duplicate wins).
pub type Record = BTreeMap<String, String>;

/// Parses DCF text. Continuation lines (leading whitespace) join the previous
/// field with a space; lines that are neither are an error naming the line.
pub fn parse_dcf(text: &str) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut cur = Record::new();
    let mut last: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !cur.is_empty() {
                records.push(std::mem::take(&mut cur));
            }
            last = None;
        } else if line.starts_with([' ', '\t']) {
            let Some(field) = &last else {
                bail!(
                    "line {}: a continuation line with no field before it",
                    n + 1
                );
            };
            let v = cur.get_mut(field).expect("the field just inserted");
            v.push(' ');
            v.push_str(line.trim());
        } else if let Some((k, v)) = line.split_once(':') {
            let k = k.trim();
            if k.is_empty() || k.contains(char::is_whitespace) {
                bail!("line {}: {k:?} is not a field name", n + 1);
            }
            cur.insert(k.to_string(), v.trim().to_string());
            last = Some(k.to_string());
        } else {
            bail!("line {}: expected `Field: value`, found {line:?}", n + 1);
        }
    }
    if !cur.is_empty() {
        records.push(cur);
    }
    Ok(records)
}

/// R's package version order: numbers separated by `.` or `-`, compared
/// numerically component by component (`1.10` > `1.9`, `1.0` < `1.0.1`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> Vec<u64> {
        s.split(['.', '-'])
            .map(|p| p.trim().parse::<u64>().unwrap_or(0))
            .collect()
    };
    parts(a).cmp(&parts(b))
}

/// A dependency as written in `Depends`/`Imports`/`LinkingTo`:
/// `name` or `name (>= 1.2)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    /// The operator (`>=`, `>`, `==`, `<=`, `<`, `!=`) and the version.
    pub constraint: Option<(String, String)>,
}

impl Dep {
    /// Whether `version` meets the constraint (no constraint: any version).
    pub fn accepts(&self, version: &str) -> bool {
        let Some((op, want)) = &self.constraint else {
            return true;
        };
        let o = compare_versions(version, want);
        match op.as_str() {
            ">=" => o != Ordering::Less,
            ">" => o == Ordering::Greater,
            "==" => o == Ordering::Equal,
            "<=" => o != Ordering::Greater,
            "<" => o == Ordering::Less,
            "!=" => o != Ordering::Equal,
            _ => false,
        }
    }

    pub fn describe(&self) -> String {
        match &self.constraint {
            Some((op, v)) => format!("{} ({op} {v})", self.name),
            None => self.name.clone(),
        }
    }
}

/// Parses a comma-separated dependency field.
pub fn parse_deps(field: &str) -> anyhow::Result<Vec<Dep>> {
    let mut deps = Vec::new();
    for item in field.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (name, rest) = match item.find('(') {
            Some(i) => (item[..i].trim(), Some(&item[i..])),
            None => (item, None),
        };
        if !is_package_name(name) && name != "R" {
            bail!("{item:?} is not a package dependency");
        }
        let constraint = match rest {
            None => None,
            Some(r) => {
                let inner = r
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .with_context(|| format!("{item:?}: unbalanced parentheses"))?
                    .trim();
                let split = inner
                    .find(|c: char| !matches!(c, '<' | '>' | '=' | '!'))
                    .unwrap_or(inner.len());
                let (op, v) = (inner[..split].trim(), inner[split..].trim());
                if !matches!(op, ">=" | ">" | "==" | "<=" | "<" | "!=") || v.is_empty() {
                    bail!("{item:?}: {inner:?} is not a version constraint");
                }
                Some((op.to_string(), v.to_string()))
            }
        };
        deps.push(Dep {
            name: name.to_string(),
            constraint,
        });
    }
    Ok(deps)
}

/// R's rule for package names: ASCII letters, digits and `.`, starting with
/// a letter, not ending in `.`, at least two characters. Names end up in
/// file names and URLs, so nothing else is accepted.
pub fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.len() <= 100
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && !s.ends_with('.')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
}

/// A version string safe in a file name: digits separated by `.` or `-`.
fn is_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
}

/// One package as a repository's index describes it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub version: String,
    /// Needed at run time: `Depends` and `Imports` (base packages dropped).
    pub runtime_deps: Vec<Dep>,
    /// Needed to build against (`LinkingTo`), installed but not put in sets.
    pub linking_to: Vec<Dep>,
    pub md5: Option<String>,
    pub sha256: Option<String>,
    /// The binary's URL: the repository's contrib URL, `Path` if given, and
    /// `File` or `<name>_<version>.tgz`.
    pub url: String,
    /// The repository's base URL, as the user gave it.
    pub repo: String,
}

/// A repository's index, by package name.
pub struct Index {
    pub entries: BTreeMap<String, Entry>,
}

impl Index {
    /// Reads a `PACKAGES` file fetched from `repo`, whose contrib directory is
    /// at `contrib_url`. Records that do not parse as binary-package entries
    /// are an error naming the package: a broken index is not half-used.
    pub fn parse(repo: &str, contrib_url: &str, text: &str) -> anyhow::Result<Index> {
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        for rec in parse_dcf(text).with_context(|| format!("reading the PACKAGES of {repo}"))? {
            let entry = entry(repo, contrib_url, &rec).with_context(|| {
                format!(
                    "the PACKAGES of {repo}, package {:?}",
                    rec.get("Package").map(String::as_str).unwrap_or("?")
                )
            })?;
            // Several versions of a package: keep the highest.
            match entries.get(&entry.name) {
                Some(old) if compare_versions(&old.version, &entry.version) != Ordering::Less => {}
                _ => {
                    entries.insert(entry.name.clone(), entry);
                }
            }
        }
        Ok(Index { entries })
    }
}

fn entry(repo: &str, contrib_url: &str, rec: &Record) -> anyhow::Result<Entry> {
    let field = |k: &str| rec.get(k).map(String::as_str);
    let name = field("Package").context("no Package field")?;
    if !is_package_name(name) {
        bail!("{name:?} is not a valid package name");
    }
    let version = field("Version").context("no Version field")?;
    if !is_version(version) {
        bail!("{version:?} is not a valid version");
    }
    let deps_of = |k: &str| -> anyhow::Result<Vec<Dep>> {
        let deps = parse_deps(field(k).unwrap_or(""))?;
        Ok(deps
            .into_iter()
            .filter(|d| !BASE_PACKAGES.contains(&d.name.as_str()))
            .collect())
    };
    let mut runtime_deps = deps_of("Depends")?;
    runtime_deps.extend(deps_of("Imports")?);
    let linking_to = deps_of("LinkingTo")?;
    let hexsum = |k: &str, len: usize| -> anyhow::Result<Option<String>> {
        match field(k) {
            None => Ok(None),
            Some(v) if v.len() == len && v.chars().all(|c| c.is_ascii_hexdigit()) => {
                Ok(Some(v.to_ascii_lowercase()))
            }
            Some(v) => bail!("{k} {v:?} is not {len} hex digits"),
        }
    };
    let md5 = hexsum("MD5sum", 32)?;
    let sha256 = hexsum("SHA256sum", 64)?;
    let file = match field("File") {
        Some(f) => {
            if f.contains('/') || f.contains('\\') || f.starts_with('.') || f.is_empty() {
                bail!("File {f:?} is not a plain file name");
            }
            f.to_string()
        }
        None => format!("{name}_{version}.tgz"),
    };
    let mut url = contrib_url.trim_end_matches('/').to_string();
    if let Some(p) = field("Path") {
        let ok = !p.is_empty()
            && !p.starts_with('/')
            && p.split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\\'));
        if !ok {
            bail!("Path {p:?} is not a relative directory below the repository");
        }
        url = format!("{url}/{p}");
    }
    Ok(Entry {
        name: name.to_string(),
        version: version.to_string(),
        runtime_deps,
        linking_to,
        md5,
        sha256,
        url: format!("{url}/{file}"),
        repo: repo.to_string(),
    })
}

/// What the resolver knows about a package already in the store.
pub trait Installed {
    /// The installed version of `name`, if any.
    fn version(&self, name: &str) -> Option<String>;
    /// What installed `name` needs (run time and LinkingTo).
    fn needs(&self, name: &str) -> Vec<String>;
}

/// Plans the installation of `wanted` and what they need, dependencies first.
///
/// A package in the store that meets every constraint on it is kept (so a
/// second install downloads nothing); `skip` names packages R.wasm ships.
/// Among repositories the highest version wins, the first repository on a tie.
pub fn resolve(
    wanted: &[String],
    indexes: &[Index],
    installed: &dyn Installed,
    skip: &HashSet<String>,
) -> anyhow::Result<Vec<Entry>> {
    let mut plan: Vec<Entry> = Vec::new();
    let mut state: BTreeMap<String, bool> = BTreeMap::new(); // name -> done
    for name in wanted {
        let dep = Dep {
            name: name.clone(),
            constraint: None,
        };
        visit(
            &dep,
            "the command line",
            indexes,
            installed,
            skip,
            &mut state,
            &mut plan,
        )?;
    }
    Ok(plan)
}

fn visit(
    dep: &Dep,
    needed_by: &str,
    indexes: &[Index],
    installed: &dyn Installed,
    skip: &HashSet<String>,
    state: &mut BTreeMap<String, bool>,
    plan: &mut Vec<Entry>,
) -> anyhow::Result<()> {
    let name = dep.name.as_str();
    if BASE_PACKAGES.contains(&name) || skip.contains(name) {
        return Ok(());
    }
    if let Some(&done) = state.get(name) {
        // Planned already (or being planned: a dependency cycle, which R
        // allows between Imports; the package is installed once).
        if done {
            if let Some(p) = plan.iter().find(|e| e.name == name) {
                if !dep.accepts(&p.version) {
                    bail!(
                        "{needed_by} needs {}, but {name} {} is what the repositories offer",
                        dep.describe(),
                        p.version
                    );
                }
            }
        }
        return Ok(());
    }
    if let Some(v) = installed.version(name) {
        if dep.accepts(&v) {
            // Kept; what it needs may still be missing (removed by hand).
            state.insert(name.to_string(), true);
            let by = format!("{name} {v}");
            for d in installed.needs(name) {
                let d = Dep {
                    name: d,
                    constraint: None,
                };
                visit(&d, &by, indexes, installed, skip, state, plan)?;
            }
            return Ok(());
        }
    }
    let best =
        indexes
            .iter()
            .filter_map(|ix| ix.entries.get(name))
            .fold(None::<&Entry>, |best, e| match best {
                Some(b) if compare_versions(&b.version, &e.version) != Ordering::Less => Some(b),
                _ => Some(e),
            });
    let Some(entry) = best else {
        let repos: Vec<&str> = indexes
            .iter()
            .filter_map(|ix| ix.entries.values().next().map(|e| e.repo.as_str()))
            .collect();
        bail!(
            "package {name} (needed by {needed_by}) is in none of the repositories{}",
            if repos.is_empty() {
                String::new()
            } else {
                format!(" ({})", repos.join(", "))
            }
        );
    };
    if !dep.accepts(&entry.version) {
        bail!(
            "{needed_by} needs {}, but the repositories offer {name} {}",
            dep.describe(),
            entry.version
        );
    }
    state.insert(name.to_string(), false);
    let by = format!("{name} {}", entry.version);
    for d in entry.runtime_deps.iter().chain(&entry.linking_to) {
        visit(d, &by, indexes, installed, skip, state, plan)?;
    }
    state.insert(name.to_string(), true);
    plan.push(entry.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct None_;
    impl Installed for None_ {
        fn version(&self, _: &str) -> Option<String> {
            None
        }
        fn needs(&self, _: &str) -> Vec<String> {
            Vec::new()
        }
    }

    const PACKAGES: &str = "Package: purrr\nVersion: 1.0.4\nDepends: R (>= 4.0)\nImports: cli (>=\n  3.6.1), lifecycle,\n magrittr (>= 1.5.0), rlang (>= 1.1.1), vctrs (>= 0.6.3), utils\nLinkingTo: cli\nMD5sum: 0123456789abcdef0123456789ABCDEF\n\nPackage: cli\nVersion: 3.6.5\nImports: utils\nMD5sum: 00000000000000000000000000000000\n\nPackage: cli\nVersion: 3.6.10\nMD5sum: 00000000000000000000000000000001\n\nPackage: rlang\nVersion: 1.1.6\n\nPackage: lifecycle\nVersion: 1.0.4\nImports: cli, rlang\n\nPackage: magrittr\nVersion: 2.0.3\n\nPackage: vctrs\nVersion: 0.6.5\nImports: cli, rlang (>= 1.1.7)\n";

    #[test]
    fn dcf_fields_continue_and_records_split() {
        let recs = parse_dcf(PACKAGES).unwrap();
        assert_eq!(recs.len(), 7);
        assert_eq!(recs[0]["Imports"].matches("cli (>= 3.6.1)").count(), 1);
        assert!(parse_dcf(" leading\n").is_err());
        assert!(parse_dcf("Package purrr\n").is_err());
    }

    #[test]
    fn versions_order_as_in_r() {
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_versions("1.0", "1.0.1"), Ordering::Less);
        assert_eq!(compare_versions("0.6-5", "0.6.5"), Ordering::Equal);
        let d = &parse_deps("xy (>= 1.2-3)").unwrap()[0];
        assert!(d.accepts("1.2.3") && d.accepts("1.10") && !d.accepts("1.2"));
        assert!(parse_deps("xy (~ 1)").is_err());
        assert!(parse_deps("../x").is_err());
    }

    #[test]
    fn resolution_orders_dependencies_first_and_checks_constraints() {
        let ix = Index::parse("file:///r", "file:///r/c", PACKAGES).unwrap();
        assert_eq!(ix.entries["cli"].version, "3.6.10");
        assert_eq!(
            ix.entries["purrr"].md5.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(ix.entries["purrr"].url, "file:///r/c/purrr_1.0.4.tgz");
        // vctrs wants rlang >= 1.1.7, the index has 1.1.6.
        let err = resolve(&["purrr".into()], &[ix], &None_, &HashSet::new()).unwrap_err();
        assert!(err.to_string().contains("rlang (>= 1.1.7)"), "{err}");

        let fixed = PACKAGES.replace("rlang (>= 1.1.7)", "rlang");
        let ix = Index::parse("file:///r", "file:///r/c", &fixed).unwrap();
        let plan = resolve(&["purrr".into()], &[ix], &None_, &HashSet::new()).unwrap();
        let names: Vec<&str> = plan.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["cli", "rlang", "lifecycle", "magrittr", "vctrs", "purrr"]
        );

        let ix = Index::parse("file:///r", "file:///r/c", &fixed).unwrap();
        let err = resolve(&["nope".into()], &[ix], &None_, &HashSet::new()).unwrap_err();
        assert!(err.to_string().contains("package nope"), "{err}");
    }

    #[test]
    fn unsafe_file_and_path_fields_are_refused() {
        for bad in [
            "File: ../x.tgz",
            "Path: ../up",
            "Path: /abs",
            "Version: 1.0/../x",
        ] {
            let text = format!("Package: ok\nVersion: 1.0\n{bad}\n");
            assert!(Index::parse("r", "r/c", &text).is_err(), "{bad}");
        }
    }
}
