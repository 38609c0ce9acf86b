//! Guest path normalisation. Every path is made absolute and normalised
//! lexically in the guest's namespace *before* it is routed anywhere, so `..`
//! can never climb out of a mount or scratch root through host semantics: at
//! `/` it simply stays at `/`.

use crate::errno::{Errno, EINVAL, ENAMETOOLONG, ENOENT};

/// Longest path (bytes, without the NUL) accepted from the guest: Linux's
/// `PATH_MAX` of 4096 counts the NUL.
pub const PATH_MAX: usize = 4095;
/// Longest single component.
pub const NAME_MAX: usize = 255;

/// WASI's `EILSEQ`: a path that is not UTF-8. The namespace is UTF-8 throughout
/// (R runs in `C.UTF-8`), which keeps routing and scratch names simple.
pub const EILSEQ: Errno = Errno(25);

/// A lexically normalised absolute guest path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestPath {
    /// Starts with `/`, no `.`/`..`/empty components, no trailing `/` (except `/`).
    pub abs: String,
    /// The guest wrote a trailing `/`, `/.` or `/..`: the target must be a directory.
    pub must_be_dir: bool,
}

/// Resolve `path` (raw guest bytes) against the absolute, normalised `base`.
pub fn resolve(base: &str, path: &[u8]) -> Result<GuestPath, Errno> {
    if path.is_empty() {
        return Err(ENOENT);
    }
    if path.len() > PATH_MAX {
        return Err(ENAMETOOLONG);
    }
    let path = std::str::from_utf8(path).map_err(|_| EILSEQ)?;
    let mut parts: Vec<&str> = Vec::new();
    if !path.starts_with('/') {
        parts.extend(components(base));
    }
    let mut must_be_dir = false;
    for c in path.split('/') {
        must_be_dir = match c {
            "" | "." => true,
            ".." => {
                parts.pop();
                true
            }
            name => {
                if name.len() > NAME_MAX {
                    return Err(ENAMETOOLONG);
                }
                parts.push(name);
                false
            }
        };
    }
    let abs = join(&parts);
    if abs.len() > PATH_MAX {
        return Err(ENAMETOOLONG);
    }
    Ok(GuestPath { abs, must_be_dir })
}

/// Normalise a host-configured absolute path (mount points, home): it must be
/// absolute and is cleaned the same way guest paths are.
pub fn normalize_config(path: &str) -> Result<String, Errno> {
    if !path.starts_with('/') {
        return Err(EINVAL);
    }
    Ok(resolve("/", path.as_bytes())?.abs)
}

/// The non-empty components of an absolute path.
pub fn components(abs: &str) -> impl Iterator<Item = &str> {
    abs.split('/').filter(|c| !c.is_empty())
}

fn join(parts: &[&str]) -> String {
    if parts.is_empty() {
        return "/".to_string();
    }
    let mut s = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for p in parts {
        s.push('/');
        s.push_str(p);
    }
    s
}

/// `(parent, last component)` of a normalised path; `None` for `/`.
pub fn split_last(abs: &str) -> Option<(&str, &str)> {
    if abs == "/" {
        return None;
    }
    let i = abs.rfind('/')?;
    let parent = if i == 0 { "/" } else { &abs[..i] };
    Some((parent, &abs[i + 1..]))
}

/// The part of `abs` below `prefix` (`""` when equal), if `abs` is `prefix`
/// or lies inside it, component-wise.
pub fn strip_prefix<'a>(abs: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix == "/" {
        return Some(abs.trim_start_matches('/'));
    }
    let rest = abs.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

/// `a` is `b` or inside it, or `b` inside `a`.
pub fn overlaps(a: &str, b: &str) -> bool {
    strip_prefix(a, b).is_some() || strip_prefix(b, a).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(base: &str, p: &str) -> Result<(String, bool), Errno> {
        resolve(base, p.as_bytes()).map(|g| (g.abs, g.must_be_dir))
    }

    #[test]
    fn normalisation_table() {
        let ok = |base: &str, p: &str, want: &str, dir: bool| {
            assert_eq!(r(base, p), Ok((want.to_string(), dir)), "{base} + {p}");
        };
        ok("/", "/", "/", true);
        ok("/", "//", "/", true);
        ok("/", "/usr/lib/R", "/usr/lib/R", false);
        ok("/", "/usr//lib///R/", "/usr/lib/R", true);
        ok("/", "/usr/./lib/./R", "/usr/lib/R", false);
        ok("/", "/usr/lib/..", "/usr", true);
        ok("/", "/..", "/", true);
        ok("/", "/../../../etc/passwd", "/etc/passwd", false);
        ok("/home/web_user", "a/b", "/home/web_user/a/b", false);
        ok("/home/web_user", "./a", "/home/web_user/a", false);
        ok("/home/web_user", "..", "/home", true);
        ok("/home/web_user", "../../../..", "/", true);
        ok("/home/web_user", "../../tmp/x", "/tmp/x", false);
        ok("/home/web_user", ".", "/home/web_user", true);
        ok(
            "/mnt/data",
            "../../mnt/data/../data/f",
            "/mnt/data/f",
            false,
        );
        ok("/", "a/b/.", "/a/b", true);
        ok("/", "a/b/c/../../d", "/a/d", false);
    }

    #[test]
    fn bad_paths() {
        assert_eq!(r("/", ""), Err(ENOENT));
        let long = "a/".repeat(2100);
        assert_eq!(r("/", &long), Err(ENAMETOOLONG));
        let name = "x".repeat(256);
        assert_eq!(r("/", &name), Err(ENAMETOOLONG));
        assert_eq!(resolve("/", b"/tmp/\xff"), Err(EILSEQ));
        // The base counts towards the result's length.
        let base = format!("/{}", "b/".repeat(1500));
        let base = base.trim_end_matches('/');
        assert_eq!(r(base, &"c/".repeat(1100)), Err(ENAMETOOLONG));
    }

    #[test]
    fn helpers() {
        assert_eq!(split_last("/a/b"), Some(("/a", "b")));
        assert_eq!(split_last("/a"), Some(("/", "a")));
        assert_eq!(split_last("/"), None);
        assert_eq!(strip_prefix("/tmp/x/y", "/tmp"), Some("x/y"));
        assert_eq!(strip_prefix("/tmp", "/tmp"), Some(""));
        assert_eq!(strip_prefix("/tmpx", "/tmp"), None);
        assert_eq!(strip_prefix("/a", "/"), Some("a"));
        assert!(overlaps("/a", "/a/b"));
        assert!(!overlaps("/a/c", "/a/b"));
        assert_eq!(normalize_config("rel"), Err(EINVAL));
        assert_eq!(normalize_config("/mnt//d/").unwrap(), "/mnt/d");
    }
}
