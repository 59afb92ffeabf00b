//! Every answer the gateway gives itself, instead of the upstream, in one place.
//!
//! Each [`Refusal`] maps to exactly one status. Bodies are JSON for API clients and a small
//! self-contained HTML page for browsers; neither ever carries internals (addresses, error
//! chains) — those go to the log line next to the request ID that both carry.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, Method, StatusCode};
use pingora::http::ResponseHeader;

use crate::host::HostError;
use crate::limits::LimitExceeded;
use crate::path::PathError;

/// Where a browser should go to sign in, on every 401 and 302 (forward-auth proxies read it).
pub const LOGIN_HEADER: HeaderName = HeaderName::from_static("x-authgate-login");

/// `Retry-After` (seconds) on every 503 the gateway answers itself: the longest wait between
/// two attempts to reach a provider that is down (`oidc::provider::RETRY_MAX`), a fair time
/// for a store or provider blip to pass. Sign-in pages, the admin API and `/readyz` use it too.
pub const RETRY_AFTER: &str = "5";

/// Add `Retry-After` to a 503 (and to nothing else).
pub fn retry_after(status: StatusCode, headers: &mut HeaderMap) {
    if status == StatusCode::SERVICE_UNAVAILABLE && !headers.contains_key(header::RETRY_AFTER) {
        headers.insert(
            header::RETRY_AFTER,
            http::HeaderValue::from_static(RETRY_AFTER),
        );
    }
}

/// Why the gateway answered a request itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no route for this host and path")]
    NoRoute,
    #[error("unknown gateway endpoint")]
    NoEndpoint,
    #[error("bad request path: {0}")]
    BadPath(#[from] PathError),
    #[error("missing or invalid Host: {0}")]
    BadHost(HostError),
    #[error("several different hosts in one request (Host, the request target, X-Forwarded-Host)")]
    AmbiguousHost,
    #[error("{0}")]
    HeadLimit(#[from] LimitExceeded),
    #[error("authentication required")]
    Unauthenticated {
        /// Where a browser should go to sign in (relative URL).
        login: String,
        /// Answer with a redirect to `login` (a browser navigation, or a route that says so).
        redirect: bool,
    },
    #[error("this route does not accept a method override (X-HTTP-Method-Override, _method)")]
    MethodOverride,
    #[error("cross-site request refused: send it from this site's own pages")]
    CrossSite,
    #[error("forward-auth: {0}")]
    ForwardAuth(&'static str),
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
            Refusal::BadPath(_) | Refusal::BadHost(_) | Refusal::AmbiguousHost => {
                StatusCode::BAD_REQUEST
            }
            Refusal::HeadLimit(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::MethodOverride | Refusal::ForwardAuth(_) => StatusCode::BAD_REQUEST,
            Refusal::CrossSite => StatusCode::FORBIDDEN,
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
            Refusal::BadHost(_) => "bad_host",
            Refusal::AmbiguousHost => "ambiguous_host",
            Refusal::HeadLimit(LimitExceeded::HeadTooLarge) => "head_too_large",
            Refusal::HeadLimit(LimitExceeded::TooManyHeaders) => "too_many_headers",
            Refusal::MethodOverride => "method_override",
            Refusal::CrossSite => "cross_site",
            Refusal::ForwardAuth(_) => "bad_forward_auth_request",
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
            | Refusal::BadHost(_)
            | Refusal::AmbiguousHost
            | Refusal::HeadLimit(_)
            | Refusal::MethodOverride
            | Refusal::ForwardAuth(_)
            | Refusal::BadRequest
            | Refusal::MethodNotAllowed
            | Refusal::BodyTooLarge => "Bad request",
            Refusal::Unauthenticated { .. } => "Sign-in required",
            Refusal::LoginUnavailable => "Sign-in unavailable",
            Refusal::UpstreamUnavailable => "Service unavailable",
            Refusal::UpstreamTimeout => "Service timed out",
            Refusal::Forbidden | Refusal::CrossSite => "Access denied",
            Refusal::InvalidToken => "Sign-in required",
            Refusal::AmbiguousCredentials => "Bad request",
            Refusal::SessionStoreUnavailable | Refusal::ProviderUnavailable => {
                "Temporarily unavailable"
            }
        }
    }
}

/// Who is asking, for the shape of an answer (design decision 10): decided once per request,
/// by this one function, for proxy mode and forward-auth alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Audience {
    /// The client wants a page (a browser loading a document): HTML bodies.
    pub page: bool,
    /// A top-level GET/HEAD navigation: may be answered with a redirect to sign in.
    pub navigation: bool,
}

/// Where the browser sends them, `Sec-Fetch-Mode` and `Sec-Fetch-Dest` decide; otherwise the
/// method, `X-Requested-With` and `Accept` (q-values honoured: `text/html` must be preferred
/// over `application/json` and not only reached through `*/*`). Everything else is an API
/// client and gets JSON, because a redirect to an HTML login page means nothing to `fetch()`.
pub fn audience(method: &Method, headers: &HeaderMap) -> Audience {
    let get = matches!(*method, Method::GET | Method::HEAD);
    if let Some(mode) = single(headers, "sec-fetch-mode") {
        let page = mode.eq_ignore_ascii_case(b"navigate");
        let document = match single(headers, "sec-fetch-dest") {
            None => true,
            Some(d) => [&b"document"[..], b"iframe", b"frame"]
                .iter()
                .any(|x| d.eq_ignore_ascii_case(x)),
        };
        return Audience {
            page,
            navigation: page && get && document,
        };
    }
    if headers.contains_key("x-requested-with") {
        return Audience::default();
    }
    let page = prefers_html(headers);
    Audience {
        page,
        navigation: page && get,
    }
}

/// The header's value when it is present exactly once.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => Some(v.as_bytes()),
        _ => None,
    }
}

/// `Accept` ranks `text/html` above `application/json`, by an explicit `text/html` or
/// `text/*` range with q > 0.
fn prefers_html(headers: &HeaderMap) -> bool {
    // (specificity, q) of the best range for each type: 2 exact, 1 type/*, 0 */*.
    let mut html: Option<(u8, u16)> = None;
    let mut json: Option<(u8, u16)> = None;
    let better = |cur: Option<(u8, u16)>, spec: u8, q: u16| match cur {
        Some((s, _)) if s >= spec => cur,
        _ => Some((spec, q)),
    };
    for v in headers.get_all(header::ACCEPT) {
        let Ok(v) = v.to_str() else { continue };
        for range in v.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let Some(q) = parts
                .map(str::trim)
                .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                .map_or(Some(1000), parse_q)
            else {
                continue;
            };
            let Some((t, st)) = media.split_once('/') else {
                continue;
            };
            let (t, st) = (t.trim(), st.trim());
            if t == "*" && st == "*" {
                html = better(html, 0, q);
                json = better(json, 0, q);
            } else if t.eq_ignore_ascii_case("text") {
                if st == "*" {
                    html = better(html, 1, q);
                } else if st.eq_ignore_ascii_case("html") {
                    html = better(html, 2, q);
                }
            } else if t.eq_ignore_ascii_case("application") {
                if st == "*" {
                    json = better(json, 1, q);
                } else if st.eq_ignore_ascii_case("json") {
                    json = better(json, 2, q);
                }
            }
        }
    }
    match html {
        Some((spec, q)) if spec > 0 && q > 0 => q > json.map_or(0, |(_, q)| q),
        _ => false,
    }
}

/// A q-value in thousandths: `0`, `0.5`, `1`, `1.000`; `None` for anything else.
fn parse_q(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let f = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(f),
        "1" if f == 0 => Some(1000),
        _ => None,
    }
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
pub fn render(refusal: &Refusal, audience: Audience, request_id: &str) -> (ResponseHeader, Bytes) {
    let status = refusal.status();
    let mut resp = ResponseHeader::build(status, Some(6)).expect("static status");

    if let Refusal::Unauthenticated { login, redirect } = refusal {
        // `login` is built by us from a canonical path; insert cannot fail on it.
        if *redirect {
            let mut r = ResponseHeader::build(StatusCode::FOUND, Some(4)).expect("static status");
            let _ = r.insert_header(header::LOCATION, login.as_str());
            let _ = r.insert_header(LOGIN_HEADER, login.as_str());
            let _ = r.insert_header(header::CACHE_CONTROL, "no-store");
            let _ = r.insert_header(header::CONTENT_LENGTH, "0");
            return (r, Bytes::new());
        }
        let _ = resp.insert_header(header::WWW_AUTHENTICATE, r#"Bearer realm="authgate""#);
        let _ = resp.insert_header(LOGIN_HEADER, login.as_str());
    }
    if let Refusal::InvalidToken = refusal {
        let _ = resp.insert_header(
            header::WWW_AUTHENTICATE,
            r#"Bearer realm="authgate", error="invalid_token""#,
        );
    }

    // A 401 is JSON for everything but a navigation (a route that forces 401 on pages).
    let page = match refusal {
        Refusal::Unauthenticated { .. } => audience.navigation,
        _ => audience.page,
    };
    let body = if page {
        let _ = resp.insert_header(header::CONTENT_TYPE, "text/html; charset=utf-8");
        html_page(
            refusal.title(),
            &format!(
                "<h1>{}</h1><p>{}.</p>{}<p><code>request id {}</code></p>",
                html_escape(refusal.title()),
                html_escape(&sentence(&refusal.to_string())),
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    "<p>This is temporary: please try again in a moment.</p>"
                } else {
                    ""
                },
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
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let _ = resp.insert_header(header::RETRY_AFTER, RETRY_AFTER);
    }
    let _ = resp.insert_header(header::CONTENT_LENGTH, body.len().to_string());
    let _ = resp.insert_header("x-content-type-options", "nosniff");
    (resp, Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aud(method: &str, headers: &[(&str, &str)]) -> Audience {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        audience(&method.parse().unwrap(), &h)
    }

    const BROWSER: &str =
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

    #[test]
    fn navigations_by_fetch_metadata() {
        let nav = |m, h: &[(&str, &str)]| aud(m, h).navigation;
        let fetch_nav = [
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
        ];
        assert!(nav("GET", &fetch_nav));
        assert!(nav("HEAD", &[("sec-fetch-mode", "navigate")]));
        assert!(nav(
            "GET",
            &[("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "iframe")]
        ));
        // Fetch metadata wins over Accept in both directions.
        assert!(!nav(
            "GET",
            &[("sec-fetch-mode", "cors"), ("accept", BROWSER)]
        ));
        assert!(!nav(
            "GET",
            &[("sec-fetch-mode", "no-cors"), ("accept", "text/html")]
        ));
        assert!(nav(
            "GET",
            &[("sec-fetch-mode", "navigate"), ("accept", "*/*")]
        ));
        assert!(!nav(
            "GET",
            &[("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "image")]
        ));
        // A form POST is a page load but never redirected to sign in.
        let post = aud("POST", &fetch_nav);
        assert!(post.page && !post.navigation);
        // Duplicated metadata is not believed: fall back to nothing.
        assert!(!nav(
            "GET",
            &[
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-mode", "navigate")
            ]
        ));
    }

    #[test]
    fn navigations_by_accept() {
        let nav = |m, h: &[(&str, &str)]| aud(m, h).navigation;
        assert!(nav("GET", &[("accept", BROWSER)]));
        assert!(nav("HEAD", &[("accept", "TEXT/HTML")]));
        assert!(nav("GET", &[("accept", "text/*")]));
        assert!(nav(
            "GET",
            &[("accept", "application/json;q=0.5, text/html")]
        ));
        for (m, h) in [
            ("POST", vec![("accept", "text/html")]),
            ("GET", vec![("accept", "application/json")]),
            ("GET", vec![]),
            ("GET", vec![("accept", "*/*")]),
            ("GET", vec![("accept", "application/json, text/html;q=0")]),
            ("GET", vec![("accept", "text/html;q=0.0")]),
            ("GET", vec![("accept", "application/json, text/html")]),
            ("GET", vec![("accept", "text/html;q=0.5, application/*")]),
            ("GET", vec![("accept", "text/html;q=2")]),
            ("GET", vec![("accept", "text/html;q=abc")]),
            (
                "GET",
                vec![
                    ("accept", "text/html"),
                    ("x-requested-with", "XMLHttpRequest"),
                ],
            ),
            (
                "GET",
                vec![("accept", "text/html"), ("x-requested-with", "fetch")],
            ),
        ] {
            assert!(!nav(m, &h), "{m} {h:?}");
        }
        assert_eq!(parse_q("0.001"), Some(1));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.0001"), None);
    }

    #[test]
    fn unauthenticated_redirects_when_decided_and_401s_with_json_otherwise() {
        let login = "/.authgate/login?rd=%2Fx".to_string();
        let r = Refusal::Unauthenticated {
            login: login.clone(),
            redirect: true,
        };
        let (h, _) = render(&r, aud("GET", &[("accept", BROWSER)]), "id");
        assert_eq!(h.status, 302);
        assert_eq!(h.headers["location"], "/.authgate/login?rd=%2Fx");
        let r = Refusal::Unauthenticated {
            login,
            redirect: false,
        };
        // An XHR or form POST that also accepts HTML still gets JSON.
        for a in [
            aud("POST", &[("accept", "text/html")]),
            aud(
                "GET",
                &[
                    ("accept", "text/html"),
                    ("x-requested-with", "XMLHttpRequest"),
                ],
            ),
            aud("GET", &[("accept", "application/json")]),
        ] {
            let (h, body) = render(&r, a, "id");
            assert_eq!(h.status, 401);
            assert_eq!(h.headers["content-type"], "application/json");
            assert!(h.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"));
            assert_eq!(h.headers["x-authgate-login"], "/.authgate/login?rd=%2Fx");
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"], "unauthenticated");
        }
        // Other refusals: a page for a form POST, JSON for fetch.
        let (h, _) = render(
            &Refusal::CrossSite,
            aud("POST", &[("sec-fetch-mode", "navigate")]),
            "id",
        );
        assert_eq!(
            (h.status.as_u16(), &h.headers["content-type"]),
            (
                403,
                &"text/html; charset=utf-8"
                    .parse::<http::HeaderValue>()
                    .unwrap()
            )
        );
        let (h, _) = render(
            &Refusal::CrossSite,
            aud("POST", &[("sec-fetch-mode", "cors")]),
            "id",
        );
        assert_eq!(h.headers["content-type"], "application/json");
    }

    #[test]
    fn every_503_says_when_to_retry() {
        assert_eq!(
            RETRY_AFTER,
            crate::oidc::provider::RETRY_MAX.as_secs().to_string()
        );
        let unavailable = [
            Refusal::SessionStoreUnavailable,
            Refusal::ProviderUnavailable,
            Refusal::LoginUnavailable,
        ];
        for r in &unavailable {
            for a in [
                aud("GET", &[("accept", BROWSER)]),
                aud("GET", &[("accept", "application/json")]),
            ] {
                let (h, _) = render(r, a, "id");
                assert_eq!(h.status, 503, "{r:?}");
                assert_eq!(h.headers["retry-after"], RETRY_AFTER, "{r:?}");
            }
        }
        for r in [
            Refusal::InvalidToken,
            Refusal::UpstreamUnavailable,
            Refusal::Forbidden,
        ] {
            let (h, _) = render(&r, Audience::default(), "id");
            assert!(!h.headers.contains_key("retry-after"), "{r:?}");
        }
        let mut headers = HeaderMap::new();
        retry_after(StatusCode::OK, &mut headers);
        assert!(headers.is_empty());
        retry_after(StatusCode::SERVICE_UNAVAILABLE, &mut headers);
        assert_eq!(headers["retry-after"], RETRY_AFTER);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
