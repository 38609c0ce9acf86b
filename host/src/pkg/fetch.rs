//! Downloads for `hako pkg install`: `file://` URLs (and plain paths) read
//! from disk, `https://` URLs over rustls with the certificate chain checked
//! against the web PKI roots plus an optional CA file. Never plain HTTP and
//! never an unchecked certificate: the index's checksums are only as good as
//! the channel that delivered the index.
//!
//! A small HTTP/1.1 GET (one request per connection, redirects followed,
//! `Content-Length`, chunked or read-to-close bodies) is all a repository
//! needs, so it is written here rather than pulling in an HTTP stack.

use anyhow::{bail, Context};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::io::{IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const MAX_REDIRECTS: usize = 5;
const MAX_HEADER: usize = 64 << 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Fetches URLs with one TLS configuration.
pub struct Fetcher {
    tls: Arc<ClientConfig>,
}

/// What a fetch found.
pub enum Got {
    Body(Vec<u8>),
    /// 404 / 410, or no such file: the caller may try another name.
    NotFound,
}

impl Fetcher {
    /// Trust the web PKI roots, plus the CAs in `ca_file` when given.
    pub fn new(ca_file: Option<PathBuf>) -> anyhow::Result<Fetcher> {
        let (tls, _) = crate::tls::client_config(&crate::tls::Trust::Roots { ca_file })?;
        Ok(Fetcher { tls })
    }

    /// GETs `url`, refusing bodies larger than `limit` bytes. `what` names
    /// the download in progress lines (shown on a terminal only).
    pub fn get(&self, url: &str, limit: u64, what: &str) -> anyhow::Result<Got> {
        let mut progress = Progress::new(what);
        let got = if let Some(path) = file_path(url)? {
            read_file(&path, limit)
        } else {
            self.https(url, limit, &mut progress)
        };
        progress.done();
        got.with_context(|| format!("fetching {url}"))
    }

    fn https(&self, url: &str, limit: u64, progress: &mut Progress) -> anyhow::Result<Got> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let u = Url::parse(&url)?;
            match self.request(&u, limit, progress)? {
                Response::Body(b) => return Ok(Got::Body(b)),
                Response::NotFound => return Ok(Got::NotFound),
                Response::Redirect(loc) => url = u.join(&loc)?,
            }
        }
        bail!("more than {MAX_REDIRECTS} redirects")
    }

    fn request(&self, u: &Url, limit: u64, progress: &mut Progress) -> anyhow::Result<Response> {
        let addrs: Vec<_> = (u.host.as_str(), u.port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", u.host))?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = match (tcp, last) {
            (Some(t), _) => t,
            (None, Some(e)) => return Err(e).with_context(|| format!("connecting to {}", u.host)),
            (None, None) => bail!("{} has no address", u.host),
        };
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let name = ServerName::try_from(u.host.trim_start_matches('[').trim_end_matches(']'))
            .with_context(|| format!("{:?} is not a server name", u.host))?
            .to_owned();
        let conn = rustls::ClientConnection::new(self.tls.clone(), name)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let host_header = if u.port == 443 {
            u.host.clone()
        } else {
            format!("{}:{}", u.host, u.port)
        };
        write!(
            tls,
            "GET {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: hako/{}\r\n\
             Accept-Encoding: identity\r\nConnection: close\r\n\r\n",
            u.path,
            env!("CARGO_PKG_VERSION")
        )?;
        tls.flush()?;
        read_response(&mut tls, limit, progress)
    }
}

enum Response {
    Body(Vec<u8>),
    NotFound,
    Redirect(String),
}

/// Reads the status line and headers, then the body as the headers say.
fn read_response(
    r: &mut impl Read,
    limit: u64,
    progress: &mut Progress,
) -> anyhow::Result<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (status, location, length, chunked, body_start) = loop {
        let n = read_some(r, &mut chunk)?;
        if n == 0 {
            bail!("the server closed the connection before its response headers");
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf).context("a malformed HTTP response")? {
            httparse::Status::Partial if buf.len() > MAX_HEADER => {
                bail!("response headers longer than {MAX_HEADER} bytes")
            }
            httparse::Status::Partial => continue,
            httparse::Status::Complete(at) => {
                let header = |k: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(k))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                };
                let length = match header("content-length") {
                    Some(v) => Some(v.parse::<u64>().context("a bad Content-Length")?),
                    None => None,
                };
                let chunked = header("transfer-encoding")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
                break (
                    resp.code.unwrap_or(0),
                    header("location"),
                    length,
                    chunked,
                    at,
                );
            }
        }
    };
    match status {
        200 => {}
        404 | 410 => return Ok(Response::NotFound),
        301 | 302 | 303 | 307 | 308 => {
            let loc = location.context("a redirect without Location")?;
            return Ok(Response::Redirect(loc));
        }
        s => bail!("the server answered HTTP {s}"),
    }
    if length.is_some_and(|l| l > limit) {
        bail!(
            "{} bytes is more than the limit of {limit}",
            length.unwrap_or(0)
        );
    }
    progress.total = length;
    let mut raw = buf.split_off(body_start);
    let mut body = Vec::new();
    if chunked {
        // Read everything, then decode: the limit bounds the encoded size.
        loop {
            progress.at(raw.len() as u64);
            let n = read_some(r, &mut chunk)?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
            if raw.len() as u64 > limit + limit / 8 + 4096 {
                bail!("the body is more than the limit of {limit} bytes");
            }
            // Servers close after the response (we asked), but one that
            // keeps the connection open ends the body with an empty chunk.
            if raw.ends_with(b"0\r\n\r\n") && dechunk(&raw, &mut Vec::new(), limit)? {
                break;
            }
        }
        if !dechunk(&raw, &mut body, limit)? {
            bail!("the connection closed inside a chunked body");
        }
    } else {
        body = raw;
        loop {
            if length.is_none() && body.len() as u64 > limit {
                bail!("the body is more than the limit of {limit} bytes");
            }
            if let Some(l) = length {
                if body.len() as u64 >= l {
                    body.truncate(l as usize);
                    break;
                }
            }
            progress.at(body.len() as u64);
            let n = read_some(r, &mut chunk)?;
            if n == 0 {
                if let Some(l) = length {
                    bail!("the connection closed after {} of {l} bytes", body.len());
                }
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(Response::Body(body))
}

/// A read where a TLS peer closing without close_notify counts as EOF: the
/// body's length (or its checksum, for read-to-close bodies) is checked
/// anyway.
fn read_some(r: &mut impl Read, buf: &mut [u8]) -> anyhow::Result<usize> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e).context("reading the response"),
        }
    }
}

/// Decodes a chunked body into `out`; `Ok(false)` if `raw` ends early.
fn dechunk(raw: &[u8], out: &mut Vec<u8>, limit: u64) -> anyhow::Result<bool> {
    let mut at = 0;
    loop {
        let Some(eol) = raw[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(false);
        };
        let line = std::str::from_utf8(&raw[at..at + eol]).context("a bad chunk header")?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).context("a bad chunk size")?;
        at += eol + 2;
        if size == 0 {
            return Ok(true);
        }
        if (out.len() + size) as u64 > limit {
            bail!("the body is more than the limit of {limit} bytes");
        }
        if raw.len() < at + size + 2 {
            return Ok(false);
        }
        out.extend_from_slice(&raw[at..at + size]);
        at += size + 2;
    }
}

/// Refuses a URL hako would not fetch from, before anything else happens.
pub fn check_url(url: &str) -> anyhow::Result<()> {
    if file_path(url)?.is_none() {
        Url::parse(url)?;
    }
    Ok(())
}

/// `file:///dir/x`, `file://localhost/dir/x` or an absolute path: the local
/// path. `None` for `https://`; other schemes are an error.
fn file_path(url: &str) -> anyhow::Result<Option<PathBuf>> {
    if let Some(rest) = url.strip_prefix("file://") {
        let rest = rest.strip_prefix("localhost").unwrap_or(rest);
        if !rest.starts_with('/') {
            bail!("{url}: a file:// URL needs an absolute path (file:///dir)");
        }
        return Ok(Some(PathBuf::from(percent_decode(rest)?)));
    }
    if url.starts_with('/') {
        return Ok(Some(PathBuf::from(url)));
    }
    if url.starts_with("https://") {
        return Ok(None);
    }
    if url.starts_with("http://") {
        bail!("{url}: plain http is refused; use https:// or file://");
    }
    bail!("{url}: only https:// and file:// repositories are supported")
}

fn percent_decode(s: &str) -> anyhow::Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).context("a bad %-escape")?;
            out.push(u8::from_str_radix(hex, 16).context("a bad %-escape")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("a path that is not UTF-8")
}

fn read_file(path: &std::path::Path, limit: u64) -> anyhow::Result<Got> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Got::NotFound),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut body = Vec::new();
    f.take(limit + 1).read_to_end(&mut body)?;
    if body.len() as u64 > limit {
        bail!("{} is more than the limit of {limit} bytes", path.display());
    }
    Ok(Got::Body(body))
}

/// An `https://` URL, split for one request.
struct Url {
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    path: String,
}

impl Url {
    fn parse(url: &str) -> anyhow::Result<Url> {
        let rest = url
            .strip_prefix("https://")
            .with_context(|| format!("{url}: only https:// is followed"))?;
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = path.split('#').next().unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        if authority.contains('@') {
            bail!("{url}: credentials in URLs are not supported");
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (
                h.to_string(),
                p.parse().with_context(|| format!("{url}: a bad port"))?,
            ),
            _ => (authority.to_string(), 443),
        };
        if host.is_empty() || path.bytes().any(|c| c <= b' ' || c == 0x7f) {
            bail!("{url} is not a URL hako can fetch");
        }
        Ok(Url { host, port, path })
    }

    /// Resolves a `Location` against this URL.
    fn join(&self, loc: &str) -> anyhow::Result<String> {
        if loc.starts_with("https://") {
            return Ok(loc.to_string());
        }
        if loc.contains("://") {
            bail!("a redirect to {loc} (only https:// redirects are followed)");
        }
        let origin = format!("https://{}:{}", self.host, self.port);
        if let Some(abs) = loc.strip_prefix("//") {
            return Ok(format!("https://{abs}"));
        }
        if loc.starts_with('/') {
            return Ok(format!("{origin}{loc}"));
        }
        let base = self.path.split('?').next().unwrap_or("/");
        let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
        Ok(format!("{origin}{dir}{loc}"))
    }
}

/// Byte counts on a terminal while a download runs; nothing otherwise.
struct Progress {
    what: String,
    total: Option<u64>,
    shown: bool,
    tty: bool,
    last: u64,
}

impl Progress {
    fn new(what: &str) -> Progress {
        Progress {
            what: what.to_string(),
            total: None,
            shown: false,
            tty: std::io::stderr().is_terminal(),
            last: 0,
        }
    }

    fn at(&mut self, n: u64) {
        if !self.tty || n < self.last + (256 << 10) {
            return;
        }
        self.last = n;
        self.shown = true;
        let total = self
            .total
            .map(|t| format!(" of {}", human(t)))
            .unwrap_or_default();
        eprint!(
            "\r\x1b[Khako pkg: downloading {} {}{total}",
            self.what,
            human(n)
        );
    }

    fn done(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
        }
    }
}

/// Sizes as people read them: `512 B`, `3.2 kB`, `14.0 MB`.
pub fn human(n: u64) -> String {
    match n {
        n if n < 1000 => format!("{n} B"),
        n if n < 1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        n if n < 1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n => format!("{:.1} GB", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_redirects_resolve() {
        let u = Url::parse("https://repo.r-wasm.org/bin/PACKAGES?x=1#f").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("repo.r-wasm.org", 443, "/bin/PACKAGES?x=1")
        );
        let u = Url::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8443, "/")
        );
        let u = Url::parse("https://h/a/b/c").unwrap();
        assert_eq!(u.join("d").unwrap(), "https://h:443/a/b/d");
        assert_eq!(u.join("/d").unwrap(), "https://h:443/d");
        assert!(u.join("http://evil/").is_err());
        assert!(Url::parse("https://u:p@h/").is_err());
        assert!(file_path("http://h/x").is_err());
        assert!(file_path("ftp://h/x").is_err());
        assert_eq!(
            file_path("file:///a%20b").unwrap(),
            Some(PathBuf::from("/a b"))
        );
    }

    #[test]
    fn responses_parse_with_length_chunks_and_limits() {
        let mut p = Progress::new("t");
        let ok = |raw: &[u8], limit| read_response(&mut &raw[..], limit, &mut Progress::new("t"));
        let r = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", 10).unwrap();
        assert!(matches!(r, Response::Body(b) if b == b"abc"));
        let r = ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n", 10).unwrap();
        assert!(matches!(r, Response::Body(b) if b == b"abcde"));
        assert!(ok(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\nabc", 10).is_err());
        assert!(ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", 10).is_err());
        assert!(ok(b"HTTP/1.1 200 OK\r\n\r\n0123456789abc", 10).is_err());
        assert!(matches!(
            ok(b"HTTP/1.1 404 No\r\n\r\n", 10).unwrap(),
            Response::NotFound
        ));
        assert!(
            matches!(ok(b"HTTP/1.1 302 M\r\nLocation: /x\r\n\r\n", 10).unwrap(), Response::Redirect(l) if l == "/x")
        );
        assert!(ok(b"HTTP/1.1 500 E\r\n\r\n", 10).is_err());
        assert!(read_response(&mut &b"garbage\r\n\r\n"[..], 10, &mut p).is_err());
    }
}
