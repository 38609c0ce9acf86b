//! The live status page on the host's TLS port: `GET /status` (HTML) and
//! `GET /status.json` (the [`Snapshot`]), for the view token or any user's
//! token. The server reads each request head first; WebSocket upgrades go on
//! to the protocol, everything else is answered here and closed. Until its
//! token is checked a request is an unauthenticated peer like any other
//! (same admission, byte budget and deadline).

mod http;
mod render;

use crate::dispatcher::{Event, Handle};
use crate::snapshot::Snapshot;
use crate::users::Access;
use http::{percent_encode, Response};
pub use http::{read_head, Request};
use std::path::Path;
use std::sync::OnceLock;
use tokio::io::AsyncWrite;

/// The cookie that carries the token after a `?token=` visit.
const COOKIE: &str = "hako_status";

/// What a request is after.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// The protocol: hand the connection to the WebSocket upgrade.
    WebSocket,
    Page(Page),
    /// Answered with this response and closed.
    Reject(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Html,
    Json,
}

pub fn route(req: &Request) -> Route {
    if req.websocket {
        return Route::WebSocket;
    }
    let page = match req.path.as_str() {
        "/status" => Page::Html,
        "/status.json" => Page::Json,
        _ => return Route::Reject(404),
    };
    if req.method != "GET" {
        return Route::Reject(405);
    }
    Route::Page(page)
}

/// What the token a request presents allows.
#[derive(Debug, PartialEq, Eq)]
enum Auth {
    Ok,
    /// A good `?token=`: keep it in a cookie and send the browser to the
    /// same page without it, so it leaves the address bar and history.
    SetCookie(String),
    Denied,
}

fn authorize(req: &Request, access: &Access) -> Auth {
    if let Some(t) = req.param("token") {
        return if access.may_view(&t) {
            Auth::SetCookie(t)
        } else {
            Auth::Denied
        };
    }
    let cookie = req.cookie(COOKIE).map(http::percent_decode);
    match req.bearer().or(cookie.as_deref()) {
        Some(t) if access.may_view(t) => Auth::Ok,
        _ => Auth::Denied,
    }
}

/// Answer a request that is not a WebSocket upgrade, then close.
pub async fn answer<S: AsyncWrite + Unpin>(
    s: &mut S,
    req: &Request,
    access: &Access,
    handle: &Handle,
) -> std::io::Result<()> {
    respond(req, access, handle).await.send(s, csp()).await
}

async fn respond(req: &Request, access: &Access, handle: &Handle) -> Response {
    let page = match route(req) {
        Route::Page(p) => p,
        Route::Reject(405) => {
            return Response::text(405, "the status page is read with GET").header("Allow", "GET")
        }
        Route::Reject(_) | Route::WebSocket => {
            return Response::text(
                404,
                "not found: this is a hako host; daemons and clients connect with wss://, \
                 people read /status",
            )
        }
    };
    match authorize(req, access) {
        Auth::Ok => {}
        Auth::Denied => {
            return Response::text(
                401,
                "this page needs the status URL the host printed (…/status?token=…), \
                 or a user's token as Authorization: Bearer",
            )
            .header("WWW-Authenticate", "Bearer realm=\"hako status\"")
        }
        Auth::SetCookie(t) => {
            return Response::text(303, "see the page without the token in its address")
                .header("Location", req.path.clone())
                .header(
                    "Set-Cookie",
                    format!(
                        "{COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict",
                        percent_encode(&t)
                    ),
                )
        }
    }
    let Some(snapshot) = snapshot(handle).await else {
        return Response::text(503, "the host is shutting down");
    };
    match page {
        Page::Html => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: render::page(&snapshot).into_bytes(),
            headers: Vec::new(),
        },
        Page::Json => Response {
            status: 200,
            content_type: "application/json",
            body: serde_json::to_vec(&snapshot).unwrap_or_default(),
            headers: Vec::new(),
        },
    }
}

async fn snapshot(handle: &Handle) -> Option<Snapshot> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    if !handle.send(Event::Snapshot { reply }) {
        return None;
    }
    rx.await.ok()
}

/// Nothing loads from anywhere; only our own inline script and style run
/// (by hash), and the script may fetch only from this host.
fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
             img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            sha256_source(render::SCRIPT),
            sha256_source(render::STYLE)
        )
    })
}

/// A CSP hash source: `sha256-` and the base64 of the text's SHA-256.
fn sha256_source(text: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256-{}", base64(&Sha256::digest(text.as_bytes())))
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The view token: kept in `--identity DIR` (`view_token`), else fresh.
pub fn view_token(identity: Option<&Path>) -> anyhow::Result<String> {
    match identity {
        Some(dir) => crate::identity::token(dir, "view_token"),
        None => crate::token::generate(),
    }
}

/// The address people open: `https://HOST:PORT/status?token=T`.
pub fn url(advertise: &str, port: u16, token: &str) -> String {
    let host = if advertise.contains(':') {
        format!("[{advertise}]")
    } else {
        advertise.to_string()
    };
    format!(
        "https://{host}:{port}/status?token={}",
        percent_encode(token)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::{Rules, User};
    use std::time::Duration;

    const VIEW: &str = "view-token-0123456789";
    const USER: &str = "user-token-0123456789";

    fn access() -> std::sync::Arc<Access> {
        Access::new(Rules {
            daemon_token: "daemon-token-0123456789".into(),
            client_token: None,
            users: vec![(USER.into(), User::shared("ann"))],
            view_token: Some(VIEW.into()),
            ..Rules::default()
        })
    }

    fn req(head: &str) -> Request {
        Request::parse(format!("{head}\r\nHost: h\r\n\r\n").as_bytes()).unwrap()
    }

    fn dispatcher() -> Handle {
        let (handle, _task) = crate::dispatcher::start(crate::dispatcher::Options {
            retries: 0,
            slack: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
            max_payload: 1 << 20,
            max_everywhere: 1 << 20,
            max_unread: 1 << 20,
            max_queued: 1 << 20,
            ..Default::default()
        });
        handle
    }

    #[test]
    fn routes_by_upgrade_then_path_then_method() {
        assert_eq!(route(&req("GET /status HTTP/1.1")), Route::Page(Page::Html));
        assert_eq!(
            route(&req("GET /status.json?token=x HTTP/1.1")),
            Route::Page(Page::Json)
        );
        assert_eq!(route(&req("POST /status HTTP/1.1")), Route::Reject(405));
        assert_eq!(route(&req("GET / HTTP/1.1")), Route::Reject(404));
        assert_eq!(route(&req("GET /status/ HTTP/1.1")), Route::Reject(404));
        let ws = req("GET /status HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade");
        assert_eq!(route(&ws), Route::WebSocket);
    }

    #[test]
    fn the_view_token_or_a_users_token_lets_one_look() {
        let a = access();
        let bearer = |t: &str| {
            req(&format!(
                "GET /status HTTP/1.1\r\nAuthorization: Bearer {t}"
            ))
        };
        assert_eq!(authorize(&bearer(VIEW), &a), Auth::Ok);
        assert_eq!(authorize(&bearer(USER), &a), Auth::Ok);
        // A daemon's join token is not a view token.
        assert_eq!(
            authorize(&bearer("daemon-token-0123456789"), &a),
            Auth::Denied
        );
        assert_eq!(authorize(&bearer("wrong"), &a), Auth::Denied);
        assert_eq!(authorize(&req("GET /status HTTP/1.1"), &a), Auth::Denied);
        let cookie = |t: &str| {
            req(&format!(
                "GET /status HTTP/1.1\r\nCookie: x=1; {COOKIE}={t}"
            ))
        };
        assert_eq!(authorize(&cookie(VIEW), &a), Auth::Ok);
        assert_eq!(authorize(&cookie("nope"), &a), Auth::Denied);
        let query = |t: &str| req(&format!("GET /status?token={t} HTTP/1.1"));
        assert_eq!(authorize(&query(VIEW), &a), Auth::SetCookie(VIEW.into()));
        // A wrong token in the address is refused even with a good cookie.
        let both = req(&format!(
            "GET /status?token=bad HTTP/1.1\r\nCookie: {COOKIE}={VIEW}"
        ));
        assert_eq!(authorize(&both, &a), Auth::Denied);
    }

    #[tokio::test]
    async fn responses_by_route_and_token() {
        let (a, h) = (access(), dispatcher());
        let wire = |head: String| {
            let (a, h) = (a.clone(), h.clone());
            async move {
                let r = respond(&req(&head), &a, &h).await;
                String::from_utf8(r.encode(csp())).unwrap()
            }
        };
        let ok = wire(format!(
            "GET /status HTTP/1.1\r\nAuthorization: Bearer {VIEW}"
        ))
        .await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("text/html") && ok.contains("no daemons connected"));
        let json = wire(format!(
            "GET /status.json HTTP/1.1\r\nAuthorization: Bearer {USER}"
        ))
        .await;
        let body = json.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["daemons"], serde_json::json!([]));
        let denied = wire("GET /status.json HTTP/1.1".into()).await;
        assert!(denied.starts_with("HTTP/1.1 401 "), "{denied}");
        assert!(!denied.contains("\"daemons\""));
        let redirect = wire(format!("GET /status?token={VIEW} HTTP/1.1")).await;
        assert!(redirect.starts_with("HTTP/1.1 303 "), "{redirect}");
        assert!(redirect.contains("\r\nLocation: /status\r\n"), "{redirect}");
        assert!(
            redirect.contains(&format!(
                "\r\nSet-Cookie: {COOKIE}={VIEW}; Path=/; Secure; HttpOnly; SameSite=Strict\r\n"
            )),
            "{redirect}"
        );
        let post = wire(format!(
            "POST /status HTTP/1.1\r\nAuthorization: Bearer {VIEW}"
        ))
        .await;
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("\r\nAllow: GET\r\n"));
        let other = wire("GET /favicon.ico HTTP/1.1".into()).await;
        assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
    }

    #[test]
    fn the_policy_allows_only_our_own_script_and_style() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        let p = csp();
        assert!(
            p.starts_with("default-src 'none'; script-src 'sha256-"),
            "{p}"
        );
        assert!(!p.contains("unsafe") && !p.contains("http"), "{p}");
    }

    #[test]
    fn the_url_carries_the_token_once_and_brackets_ipv6() {
        assert_eq!(
            url("::1", 7000, "ab cd"),
            "https://[::1]:7000/status?token=ab%20cd"
        );
        assert_eq!(
            url("h.example", 1, "t"),
            "https://h.example:1/status?token=t"
        );
    }
}
