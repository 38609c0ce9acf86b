//! Unpacking a binary package (`<name>_<version>.tgz`) safely: every entry
//! must lie below `<name>/` with plain path components (no absolute paths,
//! no `..`); only regular files and directories are written; a symlink or
//! hard link is replaced by a copy of its target, which must be a file of
//! the same package; devices and FIFOs are refused; file count and bytes
//! are bounded, so a decompression bomb stops early.

use anyhow::{bail, Context};
use flate2::read::GzDecoder;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Component, Path};
use tar::EntryType;

/// Bounds on one package's unpacked tree.
pub const MAX_FILES: usize = 50_000;
pub const MAX_BYTES: u64 = 2 << 30;

/// Unpacks `tgz` into `dest/<name>/` (`dest` empty). Returns the bytes written.
pub fn unpack(name: &str, tgz: &[u8], dest: &Path) -> anyhow::Result<u64> {
    let mut ar = tar::Archive::new(GzDecoder::new(tgz));
    let mut files: BTreeMap<String, ()> = BTreeMap::new();
    // (link path, target path), both relative to `dest`, resolved at the end.
    let mut links: Vec<(String, String)> = Vec::new();
    let mut total = 0u64;
    let mut count = 0usize;
    for entry in ar.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        let raw = entry.path().context("an entry name")?.into_owned();
        let shown = raw.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        let Some(path) = clean(&raw) else {
            bail!("the archive entry {shown:?} points outside the package; refusing the archive");
        };
        if path.is_empty() {
            continue;
        }
        if path != name && !path.starts_with(&format!("{name}/")) {
            bail!("the archive entry {shown:?} is not below {name}/; refusing the archive");
        }
        count += 1;
        if count > MAX_FILES {
            bail!("more than {MAX_FILES} entries; refusing the archive");
        }
        let target = dest.join(&path);
        match kind {
            EntryType::Directory => {
                fs::create_dir_all(&target)
                    .with_context(|| format!("creating {}", target.display()))?;
            }
            EntryType::Regular | EntryType::Continuous => {
                if files.contains_key(&path) {
                    bail!("{shown:?} appears twice in the archive");
                }
                let size = entry.size();
                if total.saturating_add(size) > MAX_BYTES {
                    bail!(
                        "more than {} unpacked; refusing the archive",
                        super::fetch::human(MAX_BYTES)
                    );
                }
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .with_context(|| format!("creating {}", target.display()))?;
                // `take`: the header's size is a claim; never write past it.
                let n = std::io::copy(&mut (&mut entry).take(size), &mut out)
                    .with_context(|| format!("unpacking {shown}"))?;
                if n != size {
                    bail!("{shown}: the archive ends inside the file");
                }
                total += n;
                files.insert(path, ());
            }
            EntryType::Symlink => {
                let to = entry
                    .link_name()
                    .context("a symlink's target")?
                    .context("a symlink without a target")?;
                let parent = Path::new(&path).parent().unwrap_or(Path::new(""));
                let joined = parent.join(&*to);
                let resolved = if to.is_absolute() {
                    None
                } else {
                    normalise(&joined)
                };
                match resolved {
                    Some(t) if t.starts_with(&format!("{name}/")) => links.push((path, t)),
                    _ => bail!(
                        "the symlink {shown:?} points at {:?}, outside the package; refusing the archive",
                        to.to_string_lossy()
                    ),
                }
            }
            EntryType::Link => {
                let to = entry
                    .link_name()
                    .context("a hard link's target")?
                    .context("a hard link without a target")?;
                match clean(&to) {
                    Some(t) if t.starts_with(&format!("{name}/")) => links.push((path, t)),
                    _ => bail!(
                        "the hard link {shown:?} points at {:?}, outside the package; refusing the archive",
                        to.to_string_lossy()
                    ),
                }
            }
            other => {
                bail!("{shown:?} is a {other:?} entry; a package holds only files and directories")
            }
        }
    }
    // Links become copies, so the stored tree is plain files (as the runtime
    // requires). A link to a link resolves once its target has.
    let mut pending = links;
    while !pending.is_empty() {
        let before = pending.len();
        let mut still = Vec::new();
        for (link, to) in pending {
            if files.contains_key(&to) {
                let size = fs::metadata(dest.join(&to))?.len();
                if total.saturating_add(size) > MAX_BYTES {
                    bail!(
                        "more than {} unpacked; refusing the archive",
                        super::fetch::human(MAX_BYTES)
                    );
                }
                let target = dest.join(&link);
                if files.contains_key(&link) {
                    bail!("{link:?} appears twice in the archive");
                }
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::copy(dest.join(&to), &target)
                    .with_context(|| format!("copying {to} to {link}"))?;
                total += size;
                files.insert(link, ());
            } else {
                still.push((link, to));
            }
        }
        if still.len() == before {
            let (link, to) = &still[0];
            bail!("the link {link:?} points at {to:?}, which is not a file of the package");
        }
        pending = still;
    }
    if !dest.join(name).join("DESCRIPTION").is_file() {
        bail!("the archive has no {name}/DESCRIPTION; it is not a binary package of {name}");
    }
    Ok(total)
}

/// An archive path as `/`-separated normal components; `None` if it is
/// absolute or climbs with `..`.
fn clean(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// Like [`clean`], but `..` steps back within the path; `None` if it would
/// climb above the top.
fn normalise(path: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};

    fn header(kind: EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h
    }

    /// A tgz of (path, kind, data or link target), written raw so that
    /// hostile names get in as they are.
    fn tgz(entries: &[(&str, EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for (path, kind, data) in entries {
            let mut h = header(*kind, 0);
            match kind {
                EntryType::Symlink | EntryType::Link => {
                    h.set_link_name_literal(std::str::from_utf8(data).unwrap())
                        .unwrap();
                    set_path(&mut h, path);
                    h.set_cksum();
                    b.append(&h, &[][..]).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    set_path(&mut h, path);
                    h.set_cksum();
                    b.append(&h, *data).unwrap();
                }
            }
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn set_path(h: &mut tar::Header, path: &str) {
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
    }

    const D: &[u8] = b"Package: p1\nVersion: 1.0\n";

    #[test]
    fn a_plain_package_unpacks_and_links_become_copies() {
        let dir = tempfile::tempdir().unwrap();
        let t = tgz(&[
            ("p1/", EntryType::Directory, b""),
            ("p1/DESCRIPTION", EntryType::Regular, D),
            ("p1/R/p1", EntryType::Regular, b"code"),
            ("p1/R/alias", EntryType::Symlink, b"p1"),
            ("p1/hard", EntryType::Link, b"p1/R/alias"),
        ]);
        unpack("p1", &t, dir.path()).unwrap();
        assert_eq!(fs::read(dir.path().join("p1/hard")).unwrap(), b"code");
        assert!(!fs::symlink_metadata(dir.path().join("p1/R/alias"))
            .unwrap()
            .is_symlink());
    }

    #[test]
    fn escapes_and_odd_entries_are_refused() {
        let cases: &[&[(&str, EntryType, &[u8])]] = &[
            &[
                ("p1/DESCRIPTION", EntryType::Regular, D),
                ("p1/../../evil", EntryType::Regular, b"x"),
            ],
            &[
                ("p1/DESCRIPTION", EntryType::Regular, D),
                ("/tmp/evil", EntryType::Regular, b"x"),
            ],
            &[
                ("p1/DESCRIPTION", EntryType::Regular, D),
                ("p2/x", EntryType::Regular, b"x"),
            ],
            &[
                ("p1/DESCRIPTION", EntryType::Regular, D),
                ("p1/l", EntryType::Symlink, b"../../etc/passwd"),
            ],
            &[
                ("p1/DESCRIPTION", EntryType::Regular, D),
                ("p1/l", EntryType::Symlink, b"/etc/passwd"),
            ],
            &[
                ("p1/DESCRIPTION", EntryType::Regular, D),
                ("p1/l", EntryType::Link, b"etc/passwd"),
            ],
            &[
                ("p1/DESCRIPTION", EntryType::Regular, D),
                ("p1/f", EntryType::Fifo, b""),
            ],
            &[
                ("p1/DESCRIPTION", EntryType::Regular, D),
                ("p1/DESCRIPTION", EntryType::Regular, D),
            ],
            &[("p1/R/x", EntryType::Regular, b"no DESCRIPTION")],
        ];
        for (i, entries) in cases.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let r = unpack("p1", &tgz(entries), dir.path());
            assert!(r.is_err(), "case {i} was accepted");
            assert!(!dir.path().parent().unwrap().join("evil").exists());
        }
    }
}
