//! The little HTTP the status page needs: a bounded request head read off
//! the TLS stream, the few things in it that matter, and one response with
//! the security headers, then close (no keep-alive).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head read: a browser's is well under 2 KiB, and
/// WebSocket upgrades are smaller still.
pub const MAX_HEAD: usize = 8 << 10;

/// Read until the end of the request head (a blank line), at most
/// [`MAX_HEAD`] bytes. Returns everything read, which may run past the
/// head: a WebSocket peer's bytes go back to tungstenite untouched.
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the request: {e}"))?;
        if n == 0 {
            return Err("closed before a complete request".into());
        }
        // Only the new bytes (and three before) can complete the blank line.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if buf[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(buf);
        }
        if buf.len() >= MAX_HEAD {
            return Err(format!("request head over {MAX_HEAD} bytes"));
        }
    }
}

/// What the server routes and authenticates by.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// `Upgrade: websocket` was asked for.
    pub websocket: bool,
    pub authorization: Option<String>,
    pub cookie: Option<String>,
}

impl Request {
    pub fn parse(head: &[u8]) -> Result<Request, String> {
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err("incomplete HTTP request".into()),
            Err(e) => return Err(format!("malformed HTTP request: {e}")),
        }
        let target = req.path.unwrap_or("/");
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (target, None),
        };
        let mut out = Request {
            method: req.method.unwrap_or_default().to_string(),
            path: path.to_string(),
            query,
            ..Request::default()
        };
        for h in req.headers.iter() {
            let value = || String::from_utf8_lossy(h.value).trim().to_string();
            if h.name.eq_ignore_ascii_case("upgrade") {
                out.websocket |= value().eq_ignore_ascii_case("websocket");
            } else if h.name.eq_ignore_ascii_case("authorization") {
                out.authorization = Some(value());
            } else if h.name.eq_ignore_ascii_case("cookie") {
                // Several Cookie headers are one list.
                out.cookie = Some(match out.cookie.take() {
                    Some(c) => format!("{c}; {}", value()),
                    None => value(),
                });
            }
        }
        Ok(out)
    }

    /// The token of `Authorization: Bearer T`.
    pub fn bearer(&self) -> Option<&str> {
        let a = self.authorization.as_deref()?;
        let (scheme, token) = a.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }

    /// The value of cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookie
            .as_deref()?
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The percent-decoded value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query
            .as_deref()?
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
    }
}

/// `%XX` and `+` decoded; a malformed escape is kept as it is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(b[i + 1]) << 4 | hex(b[i + 2]));
                i += 3;
                continue;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encode everything but unreserved characters (for a token in a
/// URL).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One response, then the connection is closed.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra headers (`Location`, `Set-Cookie`, `Allow`, ...).
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n").into_bytes(),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The bytes on the wire. `csp` is the Content-Security-Policy.
    pub fn encode(&self, csp: &str) -> Vec<u8> {
        let mut h = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nContent-Security-Policy: {csp}\r\n\
             X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\
             X-Frame-Options: DENY\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (k, v) in &self.headers {
            // Values are ours, but never let one split the head.
            let v: String = v.chars().filter(|c| !c.is_control()).collect();
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        let mut out = h.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// Write it and close our side.
    pub async fn send<S: AsyncWrite + Unpin>(&self, s: &mut S, csp: &str) -> std::io::Result<()> {
        s.write_all(&self.encode(csp)).await?;
        s.flush().await?;
        s.shutdown().await
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_yields_route_and_credentials() {
        let head = b"GET /status.json?x=1&token=ab%2Bc+d HTTP/1.1\r\nHost: h\r\n\
            authorization: Bearer  t0k \r\nCookie: a=1; hako_status=v1\r\nCookie: b=2\r\n\r\n";
        let r = Request::parse(head).unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/status.json");
        assert!(!r.websocket);
        assert_eq!(r.bearer(), Some("t0k"));
        assert_eq!(r.cookie("hako_status"), Some("v1"));
        assert_eq!(r.cookie("b"), Some("2"));
        assert_eq!(r.cookie("c"), None);
        assert_eq!(r.param("token").as_deref(), Some("ab+c d"));
        assert_eq!(r.param("y"), None);
        let ws = Request::parse(
            b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .unwrap();
        assert!(ws.websocket && ws.bearer().is_none() && ws.query.is_none());
    }

    #[test]
    fn junk_is_refused() {
        assert!(Request::parse(b"\x16\x03\x01junk\r\n\r\n").is_err());
        assert!(Request::parse(b"GET /status HTTP/1.1\r\n").is_err());
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(Request::parse(head.as_bytes()).is_err());
    }

    #[test]
    fn percent_coding_round_trips_and_tolerates_junk() {
        let t = "a b/c?d=e&f%g+é";
        assert_eq!(percent_decode(&percent_encode(t)), t);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%e9"), "\u{fffd}");
    }

    #[tokio::test]
    async fn the_head_is_read_up_to_a_bound() {
        let mut ok: &[u8] = b"GET / HTTP/1.1\r\n\r\nextra";
        assert_eq!(
            read_head(&mut ok).await.unwrap(),
            b"GET / HTTP/1.1\r\n\r\nextra"
        );
        let big = vec![b'a'; MAX_HEAD + 10];
        let mut big: &[u8] = &big;
        let err = read_head(&mut big).await.unwrap_err();
        assert!(err.contains("over"), "{err}");
        let mut cut: &[u8] = b"GET / HTTP/1.1\r\n";
        assert!(read_head(&mut cut).await.is_err());
    }

    #[test]
    fn responses_carry_the_security_headers() {
        let r = Response::text(404, "no").header("X-A", "b\r\nInjected: 1");
        let wire = String::from_utf8(r.encode("default-src 'none'")).unwrap();
        assert!(wire.starts_with("HTTP/1.1 404 Not Found\r\n"), "{wire}");
        for h in [
            "Cache-Control: no-store\r\n",
            "Content-Security-Policy: default-src 'none'\r\n",
            "X-Content-Type-Options: nosniff\r\n",
            "Referrer-Policy: no-referrer\r\n",
            "Connection: close\r\n",
            "Content-Length: 3\r\n",
            "X-A: bInjected: 1\r\n",
        ] {
            assert!(wire.contains(h), "{h} in {wire}");
        }
        assert!(wire.ends_with("\r\n\r\nno\n"));
    }
}
