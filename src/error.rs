//! Every answer the gateway gives itself, instead of the upstream, in one place.
//!
//! Each [`Refusal`] maps to exactly one status. Bodies are JSON for API clients and a small
//! self-contained HTML page for browsers; neither ever carries internals (addresses, error
//! chains) — those go to the log line next to the request ID that both carry.

use bytes::Bytes;
use http::{header, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::path::PathError;

/// Why the gateway answered a request itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no route for this host and path")]
    NoRoute,
    #[error("unknown gateway endpoint")]
    NoEndpoint,
    #[error("bad request path: {0}")]
    BadPath(#[from] PathError),
    #[error("missing or invalid Host header")]
    BadHost,
    #[error("authentication required")]
    Unauthenticated {
        /// Where a browser should go to sign in (relative URL).
        login: String,
    },
    #[error("sign-in is not configured on this gateway")]
    LoginUnavailable,
    #[error("malformed request")]
    BadRequest,
    #[error("method not allowed here")]
    MethodNotAllowed,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("the upstream service is unavailable")]
    UpstreamUnavailable,
    #[error("the upstream service did not answer in time")]
    UpstreamTimeout,
    #[error("you are not allowed to access this resource")]
    Forbidden,
    #[error("invalid access token")]
    InvalidToken,
    #[error("send exactly one Authorization header, and no access token in the URL")]
    AmbiguousCredentials,
    #[error("sessions are temporarily unavailable")]
    SessionStoreUnavailable,
    #[error("the identity provider is unavailable")]
    ProviderUnavailable,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::NoRoute | Refusal::NoEndpoint => StatusCode::NOT_FOUND,
            Refusal::BadPath(_) | Refusal::BadHost => StatusCode::BAD_REQUEST,
            Refusal::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Refusal::LoginUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::BadRequest => StatusCode::BAD_REQUEST,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Forbidden => StatusCode::FORBIDDEN,
            Refusal::InvalidToken => StatusCode::UNAUTHORIZED,
            Refusal::AmbiguousCredentials => StatusCode::BAD_REQUEST,
            Refusal::SessionStoreUnavailable | Refusal::ProviderUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Stable machine-readable code for JSON bodies and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NoRoute => "no_route",
            Refusal::NoEndpoint => "no_endpoint",
            Refusal::BadPath(_) => "bad_path",
            Refusal::BadHost => "bad_host",
            Refusal::Unauthenticated { .. } => "unauthenticated",
            Refusal::LoginUnavailable => "login_unavailable",
            Refusal::BadRequest => "bad_request",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::UpstreamUnavailable => "upstream_unavailable",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::Forbidden => "forbidden",
            Refusal::InvalidToken => "invalid_token",
            Refusal::AmbiguousCredentials => "ambiguous_credentials",
            Refusal::SessionStoreUnavailable => "store_unavailable",
            Refusal::ProviderUnavailable => "provider_unavailable",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Refusal::NoRoute | Refusal::NoEndpoint => "Not found",
            Refusal::BadPath(_)
            | Refusal::BadHost
            | Refusal::BadRequest
            | Refusal::MethodNotAllowed
            | Refusal::BodyTooLarge => "Bad request",
            Refusal::Unauthenticated { .. } => "Sign-in required",
            Refusal::LoginUnavailable => "Sign-in unavailable",
            Refusal::UpstreamUnavailable => "Service unavailable",
            Refusal::UpstreamTimeout => "Service timed out",
            Refusal::Forbidden => "Access denied",
            Refusal::InvalidToken => "Sign-in required",
            Refusal::AmbiguousCredentials => "Bad request",
            Refusal::SessionStoreUnavailable | Refusal::ProviderUnavailable => {
                "Temporarily unavailable"
            }
        }
    }
}

/// A top-level browser navigation (product decision 10): these get redirects and HTML;
/// everything else gets 401 and JSON, because a redirect to an HTML login page means nothing
/// to `fetch()` or `curl`.
pub fn is_navigation(req: &RequestHeader) -> bool {
    let method_ok = matches!(req.method, http::Method::GET | http::Method::HEAD);
    let accepts_html = req
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| contains_ignore_case(v.as_bytes(), b"text/html"));
    let xhr = req
        .headers
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"xmlhttprequest"));
    method_ok && accepts_html && !xhr
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn wants_html(req: &RequestHeader) -> bool {
    req.headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| contains_ignore_case(v.as_bytes(), b"text/html"))
}

/// Capitalise the first letter: messages are lower-case for logs and JSON.
fn sentence(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Escape text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The one HTML frame for gateway pages: no external assets, readable on any screen.
pub fn html_page(title: &str, body_html: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title>
<style>
body{{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f5f7;color:#1f2328;display:flex;min-height:100vh;align-items:center;justify-content:center}}
main{{background:#fff;border:1px solid #d0d7de;border-radius:12px;padding:2rem 2.5rem;max-width:28rem;box-shadow:0 1px 3px rgba(0,0,0,.06)}}
h1{{font-size:1.35rem;margin:0 0 .75rem}} p{{margin:.5rem 0;color:#57606a}} code{{font-size:.85em;color:#8c959f}}
a.button{{display:inline-block;margin-top:1rem;padding:.55rem 1.2rem;border-radius:8px;background:#0969da;color:#fff;text-decoration:none}}
</style></head>
<body><main>{body_html}</main></body></html>
"#,
        title = html_escape(title),
    )
}

/// Status, headers and body for a refusal, shaped for the client that asked.
pub fn render(refusal: &Refusal, req: &RequestHeader, request_id: &str) -> (ResponseHeader, Bytes) {
    let status = refusal.status();
    let navigation = is_navigation(req);
    let mut resp = ResponseHeader::build(status, Some(4)).expect("static status");

    if let Refusal::Unauthenticated { login } = refusal {
        if navigation {
            let mut r = ResponseHeader::build(StatusCode::FOUND, Some(4)).expect("static status");
            // `login` is built by us from a canonical path; insert cannot fail on it.
            let _ = r.insert_header(header::LOCATION, login.as_str());
            let _ = r.insert_header(header::CACHE_CONTROL, "no-store");
            let _ = r.insert_header(header::CONTENT_LENGTH, "0");
            return (r, Bytes::new());
        }
        let _ = resp.insert_header(header::WWW_AUTHENTICATE, r#"Bearer realm="authgate""#);
    }
    if let Refusal::InvalidToken = refusal {
        let _ = resp.insert_header(
            header::WWW_AUTHENTICATE,
            r#"Bearer realm="authgate", error="invalid_token""#,
        );
    }

    let body = if wants_html(req) {
        let _ = resp.insert_header(header::CONTENT_TYPE, "text/html; charset=utf-8");
        html_page(
            refusal.title(),
            &format!(
                "<h1>{}</h1><p>{}.</p><p><code>request id {}</code></p>",
                html_escape(refusal.title()),
                html_escape(&sentence(&refusal.to_string())),
                html_escape(request_id)
            ),
        )
    } else {
        let _ = resp.insert_header(header::CONTENT_TYPE, "application/json");
        serde_json::json!({
            "error": refusal.code(),
            "message": refusal.to_string(),
            "request_id": request_id,
        })
        .to_string()
    };
    let _ = resp.insert_header(header::CACHE_CONTROL, "no-store");
    let _ = resp.insert_header(header::CONTENT_LENGTH, body.len().to_string());
    let _ = resp.insert_header("x-content-type-options", "nosniff");
    (resp, Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, accept: Option<&str>, xhr: bool) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/", None).unwrap();
        if let Some(a) = accept {
            r.insert_header("accept", a).unwrap();
        }
        if xhr {
            r.insert_header("x-requested-with", "XMLHttpRequest")
                .unwrap();
        }
        r
    }

    #[test]
    fn navigation_detection() {
        assert!(is_navigation(&req(
            "GET",
            Some("text/html,application/xhtml+xml"),
            false
        )));
        assert!(is_navigation(&req("HEAD", Some("TEXT/HTML"), false)));
        assert!(!is_navigation(&req("POST", Some("text/html"), false)));
        assert!(!is_navigation(&req("GET", Some("application/json"), false)));
        assert!(!is_navigation(&req("GET", None, false)));
        assert!(!is_navigation(&req("GET", Some("text/html"), true)));
    }

    #[test]
    fn unauthenticated_redirects_browsers_and_401s_apis() {
        let r = Refusal::Unauthenticated {
            login: "/.authgate/login?rd=%2Fx".into(),
        };
        let (h, _) = render(&r, &req("GET", Some("text/html"), false), "id");
        assert_eq!(h.status, 302);
        assert_eq!(h.headers["location"], "/.authgate/login?rd=%2Fx");
        let (h, body) = render(&r, &req("GET", Some("application/json"), false), "id");
        assert_eq!(h.status, 401);
        assert!(h.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "unauthenticated");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
