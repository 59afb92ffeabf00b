//! A route's request shaping: `strip_prefix`, `rewrite`, `request_headers`,
//! `response_headers`. Checked here so the request path only applies what is known to be
//! safe: a configured edit can never forge or remove a header the gateway owns (identity,
//! forwarding, request ID, trace, framing), and a stripped or rewritten path is canonical.

use http::{HeaderName, HeaderValue};
use toml::Spanned;

use super::error::Reporter;
use super::fields::span;
use super::file;
use super::model::{HeaderEdits, IdentityHeaders, NamespaceSettings, PathRewrite, RouteShaping};
use crate::identity::canonical_name as folded;
use crate::path::PathOptions;

/// What the edits are checked against: the names the gateway sets or strips itself.
pub(super) struct Owned<'a> {
    pub(super) namespace: &'a NamespaceSettings,
    pub(super) identity_headers: &'a IdentityHeaders,
    pub(super) assertion_header: &'a HeaderName,
    pub(super) request_id_header: &'a HeaderName,
    /// Every route's claim headers: what they send is the gateway's too (and stripped on
    /// every route).
    pub(super) claim_headers: &'a [&'a super::model::ClaimHeaders],
    /// This route's own: whether they write `Authorization`.
    pub(super) own_claims: Option<&'a super::model::ClaimHeaders>,
}

/// Framing and hop-by-hop headers: what they say is the connection's, never a route's.
const FRAMING: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
];

impl Owned<'_> {
    /// Why the gateway owns `name` on requests, if it does.
    fn on_request(&self, name: &str) -> Option<&'static str> {
        let f = folded(name);
        let is = |n: &str| folded(n) == f;
        if FRAMING.iter().any(|n| is(n)) || f.starts_with("proxy-") {
            return Some("a framing or hop-by-hop header");
        }
        let ns = self.namespace;
        if ns.names.iter().any(|n| is(n))
            || ns.prefixes.iter().any(|p| f.starts_with(&folded(p)))
            || self.identity_headers.names().iter().any(|n| is(n.as_str()))
            || is(self.assertion_header.as_str())
        {
            return Some("in the identity namespace: only the gateway sets it");
        }
        for c in self.claim_headers {
            if c.names().iter().any(|n| is(n))
                || c.prefix.as_ref().is_some_and(|p| f.starts_with(&folded(p)))
            {
                return Some("a claim header (of this route or another): only the gateway sets it");
            }
        }
        if self.own_claims.is_some_and(|c| c.owns_authorization()) && is("authorization") {
            return Some("the Authorization header this route's claim headers set");
        }
        // The upstream would run another method than the one the route's rules judged.
        if crate::policy::METHOD_OVERRIDE_HEADERS.iter().any(|n| is(n)) {
            return Some(
                "a method override: the upstream would run another method than the one judged",
            );
        }
        if crate::forwarded::FORWARDING_HEADERS.iter().any(|n| is(n))
            || f.starts_with("x-forwarded-")
            || is(self.request_id_header.as_str())
            || is(crate::trace::TRACEPARENT.as_str())
            || is(crate::trace::TRACESTATE.as_str())
        {
            return Some("a forwarding header the gateway sets");
        }
        None
    }

    /// Why the gateway owns `name` on responses, if it does.
    fn on_response(&self, name: &str) -> Option<&'static str> {
        let f = folded(name);
        let is = |n: &str| folded(n) == f;
        if FRAMING.iter().any(|n| is(n)) || f.starts_with("proxy-") {
            return Some("a framing or hop-by-hop header");
        }
        if is(self.request_id_header.as_str()) {
            return Some("the request ID header the gateway sets");
        }
        None
    }
}

pub(super) fn shaping(
    rep: &mut Reporter,
    i: usize,
    r: &file::Route,
    route_path: Option<&str>,
    paths: PathOptions,
    case_insensitive: bool,
    owned: &Owned,
) -> Option<RouteShaping> {
    if r.strip_prefix.is_none()
        && r.rewrite.is_none()
        && r.request_headers.is_none()
        && r.response_headers.is_none()
    {
        return None;
    }
    let key = |k: &str| format!("routes[{i}].{k}");
    let strip_prefix = r.strip_prefix.as_ref().and_then(|p| {
        strip(
            rep,
            &key("strip_prefix"),
            p,
            route_path,
            paths,
            case_insensitive,
        )
    });
    let rewrite = r
        .rewrite
        .as_ref()
        .and_then(|rw| rewrite(rep, &key("rewrite"), rw, case_insensitive));
    let request = r
        .request_headers
        .as_ref()
        .map_or_else(HeaderEdits::default, |e| {
            edits(rep, &key("request_headers"), e, |n, _| owned.on_request(n))
        });
    let response = r
        .response_headers
        .as_ref()
        .map_or_else(HeaderEdits::default, |e| {
            edits(rep, &key("response_headers"), e, |n, setting| {
                owned.on_response(n).or_else(|| {
                    // Removing an upstream's cookie is legitimate; planting one is not a route's.
                    (setting && folded(n) == "set-cookie")
                        .then_some("a cookie: set it in the application, or remove it here")
                })
            })
        });
    Some(RouteShaping {
        strip_prefix,
        strip_case_insensitive: case_insensitive,
        rewrite,
        request,
        response,
    })
}

/// `strip_prefix`: a canonical path without a trailing `/`, and a segment-boundary prefix of
/// the route's path, so that every request of the route has it.
fn strip(
    rep: &mut Reporter,
    key: &str,
    p: &Spanned<String>,
    route_path: Option<&str>,
    paths: PathOptions,
    case_insensitive: bool,
) -> Option<String> {
    let v = p.get_ref();
    match crate::path::normalize(v, paths) {
        Ok(c) if c.as_str() == v && v != "/" && !v.ends_with('/') => {}
        Ok(c) => {
            let want = c.as_str().trim_end_matches('/');
            let hint = if want.is_empty() {
                "\"/\" strips nothing: remove strip_prefix".to_string()
            } else {
                format!("write {want:?} (a canonical path without a trailing '/')")
            };
            rep.error(key, span(p), hint);
            return None;
        }
        Err(e) => {
            rep.error(key, span(p), format!("invalid path {v:?}: {e}"));
            return None;
        }
    }
    if let Some(route) = route_path {
        if crate::path::strip_segment_prefix(route, v, case_insensitive).is_none() {
            rep.error(
                key,
                span(p),
                format!("{v:?} is not a prefix of the route's path {route:?} at a '/': requests of this route would not start with it"),
            );
            return None;
        }
    }
    Some(v.clone())
}

/// `case_insensitive` (`paths.case_insensitive`): the upstream reads `/DOCS/x` as `/docs/x`,
/// so the pattern must match it too, or `/DOCS/x` would go upstream unrewritten.
fn rewrite(
    rep: &mut Reporter,
    key: &str,
    rw: &Spanned<file::Rewrite>,
    case_insensitive: bool,
) -> Option<PathRewrite> {
    let f = rw.get_ref();
    let pattern = match regex::RegexBuilder::new(f.pattern.get_ref())
        .case_insensitive(case_insensitive)
        .build()
    {
        Ok(re) => Some(re),
        Err(e) => {
            rep.error(
                format!("{key}.pattern"),
                span(&f.pattern),
                format!(
                    "invalid regular expression: {}",
                    super::fields::regex_why(&e)
                ),
            );
            None
        }
    };
    let replace = f.replace.get_ref();
    // Captures come from the canonical path (ASCII, escaped); the literal text must not add
    // what a path cannot hold: the result is checked again per request, this catches the
    // mistakes that would fail every time.
    if !replace.starts_with('/') && !replace.starts_with('$') {
        rep.error(
            format!("{key}.replace"),
            span(&f.replace),
            "the replacement is a path: start it with '/' (or a capture that does)",
        );
        return None;
    }
    if let Some(b) = replace
        .bytes()
        .find(|b| matches!(b, b'?' | b'#' | b'\\' | b';') || !b.is_ascii_graphic())
    {
        rep.error(
            format!("{key}.replace"),
            span(&f.replace),
            format!(
                "{:?} cannot be in a path (the query string is kept as the client sent it); percent-encode it",
                b as char
            ),
        );
        return None;
    }
    Some(PathRewrite {
        pattern: pattern?,
        replace: replace.clone(),
    })
}

/// `set` and `remove`: valid names and values, none `owns` refuses (given whether it is set),
/// no name twice (compared in the folded spelling).
fn edits(
    rep: &mut Reporter,
    key: &str,
    e: &Spanned<file::HeaderEdits>,
    owns: impl Fn(&str, bool) -> Option<&'static str>,
) -> HeaderEdits {
    let f = e.get_ref();
    let mut out = HeaderEdits::default();
    let mut seen: Vec<String> = Vec::new();
    let mut name_ok = |rep: &mut Reporter, k: &str, n: &str, at, setting: bool| -> bool {
        if HeaderName::from_bytes(n.as_bytes()).is_err() {
            rep.error(k, at, format!("{n:?} is not a valid header name"));
            return false;
        }
        if let Some(why) = owns(n, setting) {
            rep.error(
                k,
                at,
                format!("{n:?} is {why}; a route cannot set or remove it"),
            );
            return false;
        }
        let fo = folded(n);
        if seen.contains(&fo) {
            rep.error(
                k,
                at,
                format!(
                    "{n:?} is named twice (names are compared without regard to case, '-' or '_')"
                ),
            );
            return false;
        }
        seen.push(fo);
        true
    };
    for (n, v) in &f.set {
        let k = format!("{key}.set.{n}");
        if !name_ok(rep, &k, n, span(v).or_else(|| span(e)), true) {
            continue;
        }
        let Ok(name) = HeaderName::from_bytes(n.as_bytes()) else {
            continue;
        };
        match HeaderValue::from_str(v.get_ref()) {
            Ok(value) => out.set.push((name, value)),
            Err(_) => rep.error(
                k,
                span(v),
                "not a header value (visible ASCII, spaces and tabs only)",
            ),
        }
    }
    for (j, n) in f.remove.iter().enumerate() {
        let k = format!("{key}.remove[{j}]");
        if !name_ok(rep, &k, n.get_ref(), span(n), false) {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(n.get_ref().as_bytes()) {
            out.remove.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{parse, ConfigError};

    const UP: &str = "[upstreams.app]\nservers = [\"http://127.0.0.1:3000\"]\n";

    fn route(extra: &str) -> String {
        format!("{UP}[[routes]]\npath = \"/app/\"\nupstream = \"app\"\npublic = true\n{extra}\n")
    }

    fn errs(src: &str) -> Vec<ConfigError> {
        parse(Path::new("t.toml"), src).unwrap_err().0
    }

    fn err(extra: &str) -> ConfigError {
        let e = errs(&route(extra));
        assert_eq!(e.len(), 1, "{e:?}");
        e.into_iter().next().unwrap()
    }

    #[test]
    fn shaping_is_read() {
        let c = parse(
            Path::new("t.toml"),
            &route(
                "strip_prefix = \"/app\"\n\
                 rewrite = { pattern = \"^/old/(.*)$\", replace = \"/new/$1\" }\n\
                 request_headers = { set = { \"X-Env\" = \"prod\" }, remove = [\"X-Debug\"] }\n\
                 response_headers = { set = { \"Cache-Control\" = \"no-store\" }, remove = [\"Server\", \"Set-Cookie\"] }",
            ),
        )
        .unwrap();
        let s = c.routes[0].shaping.as_ref().unwrap();
        assert_eq!(s.strip_prefix.as_deref(), Some("/app"));
        assert_eq!(s.rewrite.as_ref().unwrap().replace, "/new/$1");
        assert_eq!(s.request.set[0].0, "x-env");
        assert_eq!(s.request.set[0].1, "prod");
        assert_eq!(s.request.remove[0], "x-debug");
        assert_eq!(s.response.remove.len(), 2);
        let c = parse(Path::new("t.toml"), &route("")).unwrap();
        assert!(c.routes[0].shaping.is_none());
    }

    #[test]
    fn strip_prefix_must_cover_the_route_at_a_segment_boundary() {
        let e = err("strip_prefix = \"/ap\"");
        assert_eq!(e.key, "routes[0].strip_prefix");
        assert!(
            e.message.contains("not a prefix of the route's path"),
            "{e:?}"
        );
        assert_eq!(e.line, 7);
        assert!(err("strip_prefix = \"/app/\"")
            .message
            .contains("write \"/app\""));
        assert!(err("strip_prefix = \"/\"")
            .message
            .contains("strips nothing"));
        assert!(err("strip_prefix = \"/x/../app\"")
            .message
            .contains("write \"/app\""));
        assert!(err("strip_prefix = \"app\"")
            .message
            .contains("invalid path"));
        assert!(err("strip_prefix = \"/other\"")
            .message
            .contains("not a prefix"));
        // Case-insensitive routes strip without regard to case.
        let src = format!(
            "[paths]\ncase_insensitive = true\n{}",
            route("strip_prefix = \"/APP\"")
        );
        assert!(parse(Path::new("t.toml"), &src).is_ok());
    }

    #[test]
    fn rewrite_is_checked() {
        let e = err("rewrite = { pattern = \"^/(\", replace = \"/x\" }");
        assert_eq!(e.key, "routes[0].rewrite.pattern");
        assert!(e.message.contains("invalid regular expression"));
        assert!(!e.message.contains('\n'), "{e:?}");
        for bad in ["/x?y=1", "/x#f", "/a b", "/caf\u{e9}", "/a;b", "x/$1"] {
            let e = err(&format!(
                "rewrite = {{ pattern = \"^/(.*)$\", replace = \"{bad}\" }}"
            ));
            assert_eq!(e.key, "routes[0].rewrite.replace", "{bad}: {e:?}");
        }
        let e = errs(&route("rewrite = { pattern = \"x\" }"));
        assert!(e[0].message.contains("replace"), "{e:?}");
    }

    #[test]
    fn owned_headers_cannot_be_edited_in_any_spelling() {
        for name in [
            "X-Forwarded-User",
            "x_forwarded_email",
            "X-Auth-Request-User",
            "x-authgate-anything",
            "X-Forwarded-For",
            "X-Forwarded-Whatever",
            "Forwarded",
            "X-Real-IP",
            "X-Request-Id",
            "traceparent",
            "Host",
            "Content-Length",
            "Transfer_Encoding",
            "Connection",
            "Upgrade",
            "TE",
            "Trailer",
            "Keep-Alive",
            "Proxy-Authorization",
            "X-Original-URL",
            "X-HTTP-Method-Override",
            "x_http_method",
        ] {
            for edit in [
                format!("request_headers = {{ set = {{ \"{name}\" = \"v\" }} }}"),
                format!("request_headers = {{ remove = [\"{name}\"] }}"),
            ] {
                let e = err(&edit);
                assert!(
                    e.key.starts_with("routes[0].request_headers"),
                    "{edit}: {e:?}"
                );
                assert!(
                    e.message.contains("a route cannot set or remove it"),
                    "{e:?}"
                );
            }
        }
        // A renamed identity header and a configured namespace name are owned too.
        let src = format!(
            "[headers]\nuser = \"Remote-User\"\nidentity_headers = [\"X-Legacy-Id\"]\n{}",
            route("request_headers = { remove = [\"remote_user\", \"x-legacy-id\"] }")
        );
        assert_eq!(errs(&src).len(), 2);
        // Other headers are fine, Authorization and Cookie included.
        let ok = route("request_headers = { set = { \"X-Env\" = \"prod\", Authorization = \"Basic dTpw\" }, remove = [\"Cookie\", \"X-Debug\"] }");
        assert!(parse(Path::new("t.toml"), &ok).is_ok());
        // Claim headers of any route (names, the prefix) and Authorization where this route's
        // claim headers write it: in any spelling.
        let other = "[[routes]]\npath = \"/legacy/\"\nupstream = \"app\"\n[routes.headers]\nclaims = { \"X-Claim-Email\" = \"email\" }\nclaim_prefix = \"OIDC_CLAIM_\"\n";
        for name in [
            "X-Claim-Email",
            "x_claim_email",
            "OIDC_CLAIM_email",
            "oidc-claim-anything",
        ] {
            let src = format!(
                "{}{other}",
                route(&format!(
                    "request_headers = {{ set = {{ \"{name}\" = \"v\" }} }}"
                ))
            );
            let e = errs(&src);
            assert_eq!(e.len(), 1, "{name}: {e:?}");
            assert!(e[0].message.contains("claim header"), "{e:?}");
        }
        let src = format!(
            "{UP}[[routes]]\npath = \"/app/\"\nupstream = \"app\"\nrequest_headers = {{ set = {{ authorization = \"Basic dTpw\" }} }}\n[routes.headers]\nbasic_auth = {{}}\n"
        );
        let e = errs(&src);
        assert!(
            e.iter().any(|e| e.message.contains("Authorization")),
            "{e:?}"
        );
    }

    #[test]
    fn response_edits_are_checked() {
        for name in [
            "Content-Length",
            "Transfer-Encoding",
            "Connection",
            "X-Request-ID",
        ] {
            let e = err(&format!("response_headers = {{ remove = [\"{name}\"] }}"));
            assert!(
                e.message.contains("a route cannot set or remove it"),
                "{e:?}"
            );
        }
        let e = err("response_headers = { set = { \"Set-Cookie\" = \"a=b\" } }");
        assert!(e.message.contains("a cookie"), "{e:?}");
        assert!(parse(
            Path::new("t.toml"),
            &route("response_headers = { remove = [\"Set-Cookie\"] }")
        )
        .is_ok());
        let e = err("response_headers = { set = { \"X-A\" = \"bad\\u0001\" } }");
        assert!(e.message.contains("not a header value"), "{e:?}");
        assert_eq!(e.line, 7);
        let e = err("response_headers = { set = { \"X A\" = \"v\" } }");
        assert!(e.message.contains("not a valid header name"), "{e:?}");
        let e = err("response_headers = { set = { \"X-A\" = \"1\" }, remove = [\"x_a\"] }");
        assert!(e.message.contains("named twice"), "{e:?}");
        let e = errs(&route("response_headers = { add = { \"X-A\" = \"1\" } }"));
        assert!(e[0].message.contains("unknown field"), "{e:?}");
    }

    #[test]
    fn a_server_url_with_a_path_points_to_strip_prefix_and_rewrite() {
        let e = errs("[upstreams.app]\nservers = [\"http://127.0.0.1:3000/app\"]\n");
        assert!(e[0].message.contains("strip_prefix"), "{e:?}");
        assert!(e[0].message.contains("rewrite"), "{e:?}");
    }
}
