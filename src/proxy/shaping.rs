//! A route's request shaping, applied (config: `crate::config::model::RouteShaping`).
//!
//! The route decision and the policy are made on the canonical path and the headers the
//! client sent; only then is what goes upstream shaped: the path from the canonical path
//! (never the raw one), the query string as the client sent it. Request header edits come
//! before the gateway adds its own headers and response edits before it adds its own, so a
//! route can neither forge nor remove what the gateway sets (config refuses those names too).
//! Routes without shaping never reach this module.

use pingora::http::{RequestHeader, ResponseHeader};

use crate::config::model::{HeaderEdits, RouteShaping};
use crate::path::PathOptions;

/// The rewritten path is not a canonical path: refused, never forwarded (see
/// `Refusal::PathNotRewritable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotCanonical(pub(crate) String);

/// The path the upstream receives for `canonical`: `None` when it is `canonical` itself
/// (nothing stripped, no rewrite matched).
pub(crate) fn upstream_path(
    s: &RouteShaping,
    canonical: &str,
    opts: PathOptions,
) -> Result<Option<String>, NotCanonical> {
    let stripped = match &s.strip_prefix {
        // Config checked the prefix covers the route's path, so every request has it.
        Some(p) => {
            match crate::path::strip_segment_prefix(canonical, p, s.strip_case_insensitive) {
                Some("") => "/",
                Some(rest) => rest,
                None => canonical,
            }
        }
        None => canonical,
    };
    let Some(rw) = &s.rewrite else {
        return Ok((stripped.len() != canonical.len()).then(|| stripped.to_string()));
    };
    let out = rw.pattern.replace(stripped, rw.replace.as_str());
    if let std::borrow::Cow::Borrowed(_) = out {
        // No match: the (stripped) canonical path as it is.
        return Ok((stripped.len() != canonical.len()).then(|| stripped.to_string()));
    }
    let out = out.into_owned();
    // A capture can hold anything a canonical segment holds: `/x/$1/` with an empty `$1`
    // gives `//`, `/$1` with `$1 = "./x"` a dot segment. Whatever the upstream would read
    // differently from us is refused, as the client's own ambiguous paths are.
    let canonical_again = out.starts_with('/')
        && !out.contains(['?', '#'])
        && crate::path::normalize(&out, opts).is_ok_and(|c| c.as_str() == out);
    if canonical_again {
        Ok(Some(out))
    } else {
        Err(NotCanonical(out))
    }
}

/// `X-Forwarded-Prefix` for a request whose `strip_prefix` was stripped: the prefix as the
/// client spelled it (canonical), after a trusted proxy's own prefix (`previous`), so an app
/// can still build its public URLs. `None` when nothing was stripped.
pub(crate) fn forwarded_prefix(
    s: &RouteShaping,
    canonical: &str,
    previous: Option<&http::HeaderValue>,
) -> Option<http::HeaderValue> {
    let p = s.strip_prefix.as_deref()?;
    crate::path::strip_segment_prefix(canonical, p, s.strip_case_insensitive)?;
    let ours = &canonical[..p.len()];
    // A trusted proxy's prefix is kept only when it is a canonical path of its own: it may
    // carry a client's value (`//evil.example` would make the app's URLs point elsewhere).
    let prev = previous
        .and_then(|v| v.to_str().ok())
        .filter(|p| crate::forwarded::is_canonical_prefix(p));
    let v = match prev {
        Some(prev) => format!("{}{ours}", prev.trim_end_matches('/')),
        None => ours.to_string(),
    };
    // A canonical path is visible ASCII; a trusted proxy's value was a valid header value.
    http::HeaderValue::from_str(&v).ok()
}

/// Both names equal once folded as the identity namespace folds them (ASCII case, and any
/// non-alphanumeric byte as `-`): CGI/WSGI stacks read `X_Env` as `X-Env`.
fn same_folded(a: &str, b: &str) -> bool {
    use crate::forwarded::canonical_byte as fold;
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// `request_headers`: removed and set names go in every spelling the client sent, so the
/// upstream sees the configured value only (or none), whatever its stack folds together.
pub(crate) fn edit_request(e: &HeaderEdits, req: &mut RequestHeader) -> pingora::Result<()> {
    let doomed: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| {
            e.remove
                .iter()
                .chain(e.set.iter().map(|(n, _)| n))
                .any(|n| same_folded(k.as_str(), n.as_str()))
        })
        .cloned()
        .collect();
    for name in &doomed {
        req.remove_header(name);
    }
    for (name, value) in &e.set {
        req.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// `response_headers`, on the upstream's answer (every value of each name).
pub(crate) fn edit_response(e: &HeaderEdits, resp: &mut ResponseHeader) -> pingora::Result<()> {
    for name in &e.remove {
        resp.remove_header(name);
    }
    for (name, value) in &e.set {
        resp.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::PathRewrite;

    fn shaping(strip: Option<&str>, rewrite: Option<(&str, &str)>) -> RouteShaping {
        RouteShaping {
            strip_prefix: strip.map(str::to_string),
            rewrite: rewrite.map(|(p, r)| PathRewrite {
                pattern: regex::Regex::new(p).unwrap(),
                replace: r.to_string(),
            }),
            ..RouteShaping::default()
        }
    }

    fn up(s: &RouteShaping, p: &str) -> Result<Option<String>, NotCanonical> {
        upstream_path(s, p, PathOptions::default())
    }

    #[test]
    fn strip_prefix_at_segment_boundaries_only() {
        let s = shaping(Some("/app"), None);
        assert_eq!(up(&s, "/app/x").unwrap().as_deref(), Some("/x"));
        assert_eq!(up(&s, "/app/x/").unwrap().as_deref(), Some("/x/"));
        assert_eq!(up(&s, "/app").unwrap().as_deref(), Some("/"));
        assert_eq!(up(&s, "/app/").unwrap().as_deref(), Some("/"));
        assert_eq!(up(&s, "/apple").unwrap(), None, "not at a '/'");
        assert_eq!(up(&s, "/APP/x").unwrap(), None, "case-sensitive routes");
        let ci = RouteShaping {
            strip_case_insensitive: true,
            ..shaping(Some("/app"), None)
        };
        assert_eq!(up(&ci, "/APP/x").unwrap().as_deref(), Some("/x"));
        assert_eq!(
            crate::path::strip_segment_prefix("/a/b", "/a/b", false),
            Some("")
        );
        assert_eq!(crate::path::strip_segment_prefix("/a", "/a/b", false), None);
    }

    /// On case-insensitive routes the upstream reads `/DOCS/x` as `/docs/x`: the rewrite,
    /// compiled at load, matches it in every case too, or it would go upstream unrewritten.
    #[test]
    fn rewrite_follows_case_insensitive_paths() {
        let cfg = |ci: bool| {
            crate::config::parse(
                std::path::Path::new("t.toml"),
                &format!("[paths]\ncase_insensitive = {ci}\n[upstreams.app]\nservers = [\"http://127.0.0.1:1\"]\n[[routes]]\npath = \"/docs/\"\nupstream = \"app\"\npublic = true\nrewrite = {{ pattern = \"^/docs/(.*)$\", replace = \"/public-docs/$1\" }}\n"),
            )
            .unwrap()
        };
        let c = cfg(true);
        let s = c.routes[0].shaping.as_ref().unwrap();
        for p in ["/docs/a.pdf", "/DOCS/a.pdf", "/Docs/a.pdf"] {
            assert_eq!(
                up(s, p).unwrap().as_deref(),
                Some("/public-docs/a.pdf"),
                "{p}"
            );
        }
        let c = cfg(false);
        let s = c.routes[0].shaping.as_ref().unwrap();
        assert_eq!(
            up(s, "/docs/a.pdf").unwrap().as_deref(),
            Some("/public-docs/a.pdf")
        );
    }

    #[test]
    fn a_trusted_proxys_prefix_is_kept_only_when_canonical() {
        let s = shaping(Some("/app"), None);
        let fp = |prev: Option<&str>| {
            let prev = prev.map(|p| http::HeaderValue::from_str(p).unwrap());
            forwarded_prefix(&s, "/app/x", prev.as_ref()).map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(fp(None).as_deref(), Some("/app"));
        assert_eq!(fp(Some("/base")).as_deref(), Some("/base/app"));
        assert_eq!(fp(Some("/base/")).as_deref(), Some("/base/app"));
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/a/../b",
            "/a//b",
            "evil",
            "/%2F/x",
            "/a\\b",
        ] {
            assert_eq!(fp(Some(bad)).as_deref(), Some("/app"), "{bad}");
        }
    }

    #[test]
    fn rewrite_with_captures_after_strip() {
        let s = shaping(Some("/app"), Some(("^/old/(.*)$", "/new/$1")));
        assert_eq!(up(&s, "/app/old/a/b").unwrap().as_deref(), Some("/new/a/b"));
        assert_eq!(up(&s, "/app/other").unwrap().as_deref(), Some("/other"));
        let s = shaping(None, Some(("^/old/(?P<rest>.*)$", "/v2/${rest}")));
        assert_eq!(up(&s, "/old/x").unwrap().as_deref(), Some("/v2/x"));
        assert_eq!(up(&s, "/unmatched").unwrap(), None);
        // Adding a prefix (what a server URL with a path would have meant).
        let s = shaping(None, Some(("^/", "/legacy/")));
        assert_eq!(up(&s, "/x").unwrap().as_deref(), Some("/legacy/x"));
    }

    #[test]
    fn escapes_and_unicode_pass_through_captures_as_canonical_escapes() {
        let s = shaping(None, Some(("^/old/(.*)$", "/new/$1")));
        // The canonical path keeps non-unreserved bytes escaped (upper-case hex): é is %C3%A9.
        let c = crate::path::normalize("/old/caf%c3%a9/a%20b", PathOptions::default()).unwrap();
        assert_eq!(
            up(&s, c.as_str()).unwrap().as_deref(),
            Some("/new/caf%C3%A9/a%20b")
        );
        // A pattern written with a raw non-ASCII character never matches a canonical path.
        let s = shaping(None, Some(("é", "/x")));
        assert_eq!(up(&s, c.as_str()).unwrap(), None);
    }

    #[test]
    fn rewrite_to_a_non_canonical_path_is_refused() {
        // An empty capture doubles a slash.
        let s = shaping(None, Some(("^/a/(.*)$", "/b/$1/c")));
        assert_eq!(up(&s, "/a/").unwrap_err(), NotCanonical("/b//c".into()));
        // A capture that starts with a dot makes a dot segment.
        let s = shaping(None, Some(("^/v(.*)$", "/$1")));
        assert!(up(&s, "/v./x").is_err());
        assert!(up(&s, "/v../etc").is_err());
        // A replacement that does not start with '/'.
        let s = shaping(None, Some(("^/(.*)$", "$1")));
        assert!(up(&s, "/x").is_err());
        // Captures never yield '?' or '#': canonical paths hold them escaped.
        let s = shaping(None, Some(("^/q/(.*)$", "/$1")));
        assert_eq!(up(&s, "/q/a%3Fb").unwrap().as_deref(), Some("/a%3Fb"));
    }

    #[test]
    fn forwarded_prefix_is_what_was_stripped() {
        let s = shaping(Some("/app"), None);
        let v = |c: &str, prev: Option<&str>| {
            let prev = prev.map(|p| http::HeaderValue::from_str(p).unwrap());
            forwarded_prefix(&s, c, prev.as_ref()).map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(v("/app/x", None).as_deref(), Some("/app"));
        assert_eq!(v("/app", None).as_deref(), Some("/app"));
        assert_eq!(v("/app/x", Some("/edge/")).as_deref(), Some("/edge/app"));
        assert_eq!(v("/apple", None), None);
        assert_eq!(forwarded_prefix(&shaping(None, None), "/app/x", None), None);
        let ci = RouteShaping {
            strip_case_insensitive: true,
            ..shaping(Some("/app"), None)
        };
        assert_eq!(
            forwarded_prefix(&ci, "/APP/x", None).unwrap(),
            "/APP",
            "the client's spelling"
        );
    }

    #[test]
    fn folded_names() {
        assert!(same_folded("X_Debug", "x-debug"));
        assert!(same_folded("x.debug", "X-DEBUG"));
        assert!(!same_folded("x-debugs", "x-debug"));
    }

    #[test]
    fn request_edits_replace_every_spelling() {
        let e = HeaderEdits {
            set: vec![(
                http::HeaderName::from_static("x-env"),
                http::HeaderValue::from_static("prod"),
            )],
            remove: vec![http::HeaderName::from_static("x-debug")],
        };
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (n, v) in [
            ("X-Env", "dev"),
            ("x_env", "dev2"),
            ("X_Debug", "1"),
            ("x-debug", "1"),
            ("x-keep", "k"),
        ] {
            req.append_header(n.to_string(), v).unwrap();
        }
        edit_request(&e, &mut req).unwrap();
        let names: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        assert!(!names.contains(&"x_env") && !names.contains(&"x_debug"));
        assert!(!names.contains(&"x-debug"));
        let env: Vec<_> = req.headers.get_all("x-env").iter().collect();
        assert_eq!(env, ["prod"]);
        assert_eq!(req.headers["x-keep"], "k");
    }

    #[test]
    fn response_edits() {
        let e = HeaderEdits {
            set: vec![(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            )],
            remove: vec![http::header::SERVER],
        };
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("Server", "legacy/1.0").unwrap();
        resp.append_header("Cache-Control", "public").unwrap();
        resp.append_header("Cache-Control", "max-age=60").unwrap();
        edit_response(&e, &mut resp).unwrap();
        assert!(resp.headers.get("server").is_none());
        let cc: Vec<_> = resp.headers.get_all("cache-control").iter().collect();
        assert_eq!(cc, ["no-store"]);
    }
}
