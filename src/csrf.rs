//! Cross-site request forgery guard (design decision 13).
//!
//! A session cookie rides along on any request the browser makes to this site, including a
//! form POST that another site's page submits. `SameSite=Lax` stops most of those but not a
//! sibling subdomain's (`same-site`), and not older browsers. So, for cookie-authenticated
//! unsafe methods, the request decision asks [`is_cross_site`]: the browser's own
//! `Sec-Fetch-Site` and `Origin` say where the request came from, and neither can be set by a
//! page's script. Bearer-token requests are never checked: a token is not sent by accident.
//! A client that sends neither header (curl, a server) is not a browser being tricked.

use http::{HeaderMap, Method};

use crate::config::front::{canonical_origin, origin_string, CsrfSettings};
use crate::host::Authority;

/// Methods that change state (RFC 9110 §9.2.1: everything but the safe ones).
pub(crate) fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Whether a request to `authority` (over HTTPS or not) came from another site than this
/// one or the allowed origins. Several values of either header, an unknown
/// `Sec-Fetch-Site`, and `Origin: null` (sandboxed frames, `data:` pages) count as
/// cross-site: fail closed.
pub(crate) fn is_cross_site(
    settings: &CsrfSettings,
    headers: &HeaderMap,
    https: bool,
    authority: &Authority,
) -> bool {
    let mut sites = headers.get_all("sec-fetch-site").iter();
    match (sites.next(), sites.next()) {
        (None, _) => {}
        (Some(v), None) => match v.as_bytes() {
            b"same-origin" | b"none" => {}
            b"same-site" if settings.allow_same_site => {}
            // A same-site request may still come from an allow-listed origin.
            b"same-site" | b"cross-site" if headers.contains_key(http::header::ORIGIN) => {}
            _ => return true,
        },
        (Some(_), Some(_)) => return true,
    }
    let mut origins = headers.get_all(http::header::ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (None, _) => false,
        (Some(v), None) => {
            let Some(origin) = canonical_origin(v.as_bytes()) else {
                return true;
            };
            if origin == origin_string(https, authority) {
                return cross_site_fetch(headers, settings);
            }
            !settings.allowed_origins.contains(&origin)
        }
        (Some(_), Some(_)) => true,
    }
}

/// `Sec-Fetch-Site` says another site while `Origin` says this one: a contradiction only a
/// non-browser or a proxy rewriting `Origin` produces. Believe the browser's fetch metadata.
fn cross_site_fetch(headers: &HeaderMap, settings: &CsrfSettings) -> bool {
    match headers.get("sec-fetch-site").map(|v| v.as_bytes()) {
        Some(b"cross-site") => true,
        Some(b"same-site") => !settings.allow_same_site,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(settings: &CsrfSettings, headers: &[(&str, &str)], https: bool, host: &str) -> bool {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        is_cross_site(
            settings,
            &h,
            https,
            &Authority::parse(host.as_bytes()).unwrap(),
        )
    }

    #[test]
    fn same_origin_and_non_browsers_pass() {
        let s = CsrfSettings::default();
        for h in [
            vec![],
            vec![("sec-fetch-site", "same-origin")],
            vec![("sec-fetch-site", "none")],
            vec![("origin", "https://app.example")],
            vec![
                ("origin", "https://APP.example:443"),
                ("sec-fetch-site", "same-origin"),
            ],
        ] {
            assert!(!check(&s, &h, true, "app.example"), "{h:?}");
        }
        assert!(!check(
            &s,
            &[("origin", "http://localhost:8080")],
            false,
            "localhost:8080"
        ));
    }

    #[test]
    fn other_sites_are_refused() {
        let s = CsrfSettings::default();
        for h in [
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
            vec![("sec-fetch-site", "Same-Origin")],
            vec![("sec-fetch-site", "bogus")],
            vec![
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-site", "same-origin"),
            ],
            vec![("origin", "https://evil.example")],
            vec![("origin", "https://sub.app.example")],
            vec![("origin", "http://app.example")],
            vec![("origin", "https://app.example:8443")],
            vec![("origin", "null")],
            vec![
                ("origin", "https://app.example"),
                ("origin", "https://app.example"),
            ],
            vec![
                ("origin", "https://app.example"),
                ("sec-fetch-site", "cross-site"),
            ],
            vec![("origin", "https://app.example.evil.com")],
            vec![("origin", "https://app.example@evil.com")],
        ] {
            assert!(check(&s, &h, true, "app.example"), "{h:?}");
        }
    }

    #[test]
    fn configured_exceptions() {
        let s = CsrfSettings {
            allow_same_site: true,
            allowed_origins: vec!["https://portal.example".into()],
            ..CsrfSettings::default()
        };
        assert!(!check(
            &s,
            &[("sec-fetch-site", "same-site")],
            true,
            "app.example"
        ));
        assert!(!check(
            &s,
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://portal.example")
            ],
            true,
            "app.example"
        ));
        assert!(check(
            &s,
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example")
            ],
            true,
            "app.example"
        ));
        assert!(check(
            &s,
            &[("sec-fetch-site", "cross-site")],
            true,
            "app.example"
        ));
    }

    #[test]
    fn unsafe_methods() {
        for m in ["POST", "PUT", "PATCH", "DELETE", "PROPFIND", "FOO"] {
            assert!(is_unsafe(&m.parse().unwrap()), "{m}");
        }
        for m in ["GET", "HEAD", "OPTIONS", "TRACE"] {
            assert!(!is_unsafe(&m.parse().unwrap()), "{m}");
        }
    }
}
