//! Forward-auth mode: `{prefix}auth` answers "may this request pass?" for a proxy in front
//! (nginx `auth_request`, ingress-nginx `auth-url`, Traefik `forwardAuth`, Caddy
//! `forward_auth`, Envoy `ext_authz`).
//!
//! The front proxy describes the original request in headers, and passes most of the
//! client's own headers along with them. So the gateway reads the original method, host and
//! URI from exactly the headers the configured proxy sets ([`FrontProxy`]), in whatever
//! spelling they arrive: a second value (a client's copy the proxy passed through, or an
//! `_` variant), a disagreement between two of them, or a missing one is 400, never a guess.
//! They are believed only from a trusted proxy (403 otherwise). The decision itself is
//! `Gateway::decide`, the same function as in proxy mode.
//!
//! Answers: 200 with every identity header the gateway may set (empty when it has no value,
//! so the proxy's copy overwrites whatever the client sent) and the client's cookies without
//! the gateway's (`X-Authgate-Cookie`, and the same as `Cookie`, for the proxy to send to the
//! app instead of the client's `Cookie`);
//! 401 with `X-Authgate-Login` (or a 302 to it for `?redirect=1` navigations, for proxies
//! that pass answers through); 403; 400; 503.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::Result;

use super::decision::{Caller, Inbound};
use super::{Gateway, RequestCtx, Runtime};
use crate::answer::{self, Granted, Refusal};
use crate::config::front::{ForwardAuthSettings, FrontProxy};
use crate::host::Authority;
use crate::identity::canonical_name;
use crate::out_header::OutName;
use crate::path;

/// The client's cookies minus the gateway's, for the front proxy to send to the app.
pub(crate) const COOKIE_HEADER: &str = "x-authgate-cookie";

/// The original request as the front proxy describes it (not yet normalised).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Original {
    pub(crate) method: Method,
    pub(crate) authority: Authority,
    /// Raw path, as sent: normalised by the caller like any request path.
    pub(crate) path: String,
    pub(crate) query: Option<String>,
}

/// The one value of header `name`, matched in every spelling (case, `_`, `.`). `Err` when it
/// appears more than once or is not visible ASCII.
fn one<'a>(
    headers: &'a HeaderMap,
    name: &str,
    twice: &'static str,
) -> std::result::Result<Option<&'a str>, Refusal> {
    let want = canonical_name(name);
    let mut found = None;
    for (n, v) in headers {
        if n.as_str().len() != want.len() || canonical_name(n.as_str()) != want {
            continue;
        }
        if found.is_some() {
            return Err(Refusal::ForwardAuth(twice));
        }
        found = Some(
            v.to_str()
                .map_err(|_| Refusal::ForwardAuth("a request header is not visible ASCII"))?,
        );
    }
    Ok(found)
}

/// The header names a named proxy uses: (method, URI, host). `None` for the host: it comes
/// with an absolute URI.
fn contract(proxy: &FrontProxy) -> (&str, &str, Option<&str>) {
    match proxy {
        FrontProxy::Nginx => (
            "x-original-method",
            "x-original-uri",
            Some("x-forwarded-host"),
        ),
        FrontProxy::IngressNginx => ("x-original-method", "x-original-url", None),
        FrontProxy::Traefik | FrontProxy::Caddy => (
            "x-forwarded-method",
            "x-forwarded-uri",
            Some("x-forwarded-host"),
        ),
        FrontProxy::Custom { method, uri, host } => (
            method.as_str(),
            uri.as_str(),
            host.as_ref().map(HeaderName::as_str),
        ),
        // Not used: Envoy describes the request with the check request itself.
        FrontProxy::Envoy => ("", "", None),
    }
}

/// Read the original request from the check request `req` (`auth_path` is `{prefix}auth`).
pub(crate) fn original(
    proxy: &FrontProxy,
    req: &RequestHeader,
    auth_path: &str,
) -> std::result::Result<Original, Refusal> {
    if *proxy == FrontProxy::Envoy {
        return envoy(req, auth_path);
    }
    let (method_h, uri_h, host_h) = contract(proxy);
    let h = &req.headers;
    let method = one(h, method_h, "the original method was sent more than once")?.ok_or(
        Refusal::ForwardAuth("the front proxy did not send the original method"),
    )?;
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| Refusal::ForwardAuth("the original method is not a method"))?;
    let uri = one(h, uri_h, "the original URI was sent more than once")?.ok_or(
        Refusal::ForwardAuth("the front proxy did not send the original URI"),
    )?;
    let host = match host_h {
        Some(name) => one(h, name, "the original host was sent more than once")?,
        None => None,
    };
    // Any proxy may pass an absolute URI on (nginx's $request_uri of an absolute-form
    // request); its host must then agree with the host header, if there is one.
    let (authority, path_and_query) = match split_absolute(uri)? {
        Some((a, rest)) => {
            if let Some(host) = host {
                let other = Authority::parse(host.as_bytes()).map_err(Refusal::BadHost)?;
                if other != a {
                    return Err(Refusal::AmbiguousHost);
                }
            }
            // ingress-nginx also sets X-Forwarded-Host on some versions: it must agree.
            if host_h.is_none() {
                if let Some(fh) = one(
                    h,
                    "x-forwarded-host",
                    "the original host was sent more than once",
                )? {
                    if Authority::parse(fh.as_bytes()).map_err(Refusal::BadHost)? != a {
                        return Err(Refusal::AmbiguousHost);
                    }
                }
            }
            (a, rest)
        }
        None => {
            let host = host.ok_or(Refusal::ForwardAuth(
                "the front proxy did not send the original host",
            ))?;
            (
                Authority::parse(host.as_bytes()).map_err(Refusal::BadHost)?,
                uri,
            )
        }
    };
    let (path, query) = split_target(path_and_query)?;
    Ok(Original {
        method,
        authority,
        path,
        query,
    })
}

/// Envoy `ext_authz` (HTTP service, `path_prefix` = `{prefix}auth`): the check request has the
/// original method, the original `Host` (or `:authority`) and `{prefix}auth` + the original
/// path and query.
fn envoy(req: &RequestHeader, auth_path: &str) -> std::result::Result<Original, Refusal> {
    let (authority, _) = super::request_authority(req, false)?;
    let raw = req
        .uri
        .path_and_query()
        .map_or(req.uri.path(), |pq| pq.as_str());
    let rest = raw
        .strip_prefix(auth_path)
        .filter(|r| r.starts_with('/'))
        .ok_or(Refusal::ForwardAuth(
            "Envoy's path_prefix must be the gateway's auth endpoint",
        ))?;
    let (path, query) = split_target(rest)?;
    Ok(Original {
        method: req.method.clone(),
        authority,
        path,
        query,
    })
}

/// `scheme://authority/rest` → (authority, "/rest"); `None` for a relative URI.
fn split_absolute(uri: &str) -> std::result::Result<Option<(Authority, &str)>, Refusal> {
    if uri.starts_with('/') {
        return Ok(None);
    }
    let (scheme, rest) = uri.split_once("://").ok_or(Refusal::ForwardAuth(
        "the original URI is neither a path nor an http(s) URL",
    ))?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return Err(Refusal::ForwardAuth(
            "the original URI is not an http(s) URL",
        ));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = Authority::parse(&rest.as_bytes()[..end]).map_err(Refusal::BadHost)?;
    let path = &rest[end..];
    Ok(Some((authority, if path.is_empty() { "/" } else { path })))
}

/// "/p?q#f" → ("/p", Some("q")); the fragment is dropped. Must start with '/'.
fn split_target(target: &str) -> std::result::Result<(String, Option<String>), Refusal> {
    let target = target.split('#').next().unwrap_or("");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    if path.is_empty() {
        return Ok(("/".into(), query));
    }
    if !path.starts_with('/') {
        return Err(Refusal::ForwardAuth("the original URI is not a path"));
    }
    Ok((path.to_string(), query))
}

impl Gateway {
    pub(super) async fn forward_auth(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        fa: &ForwardAuthSettings,
    ) -> Result<bool> {
        if !ctx.origin.trusted {
            tracing::warn!(request_id = %ctx.request_id, peer = ?ctx.peer_ip, "forward-auth request from an untrusted peer");
            return self.refuse(session, ctx, Refusal::Forbidden).await;
        }
        if ctx.origin.variant_from_trusted {
            let r = Refusal::ForwardAuth(
                "a forwarding header came in a second spelling (X_Forwarded_Uri): a client's copy",
            );
            tracing::info!(request_id = %ctx.request_id, proxy = fa.proxy.name(), refusal = %r, "forward-auth request refused");
            return self.refuse(session, ctx, r).await;
        }
        let auth_path = format!("{}auth", rt.gateway_prefix);
        let req = session.req_header();
        let orig = match original(&fa.proxy, req, &auth_path) {
            Ok(o) => o,
            Err(r) => {
                tracing::info!(request_id = %ctx.request_id, proxy = fa.proxy.name(), refusal = %r, "forward-auth request refused");
                return self.refuse(session, ctx, r).await;
            }
        };
        let canonical = match path::normalize(&orig.path, rt.paths) {
            Ok(p) => p,
            Err(e) => return self.refuse(session, ctx, Refusal::BadPath(e)).await,
        };
        let wants_redirect = req
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "redirect=1"));
        let inbound = Inbound {
            method: &orig.method,
            authority: &orig.authority,
            path: &canonical,
            query: orig.query.as_deref(),
            headers: &req.headers,
            https: ctx.origin.https,
            // The front proxy's account of the client (its `X-Forwarded-For`), never the
            // front proxy's own address.
            client: crate::forwarded::ClientAddr::forward_auth(&rt.forwarding, &req.headers),
        };
        ctx.audience = Some(crate::answer::audience(&orig.method, &req.headers));
        let caller = match self.decide(rt, &inbound, ctx).await {
            Ok(caller) => caller,
            // Default deny; 403 rather than 404 because auth_request understands only
            // 2xx/401/403.
            Err(Refusal::NoRoute) => return self.refuse(session, ctx, Refusal::Forbidden).await,
            Err(Refusal::Unauthenticated { login, redirect }) => {
                let r = Refusal::Unauthenticated {
                    login,
                    redirect: redirect && wants_redirect,
                };
                return self.refuse(session, ctx, r).await;
            }
            Err(r) => return self.refuse(session, ctx, r).await,
        };
        let resp = self.forward_auth_answer(&req.headers, ctx, fa, caller.as_ref())?;
        match caller {
            Some(Caller::Session(s)) => ctx.session = Some(s),
            Some(Caller::Bearer(b)) => ctx.bearer = Some(b),
            None => {}
        }
        self.answer(session, resp, bytes::Bytes::new()).await
    }

    /// 200 with every identity header (empty where there is no value) and the cookies the
    /// app may see.
    fn forward_auth_answer(
        &self,
        headers: &HeaderMap,
        ctx: &RequestCtx,
        fa: &ForwardAuthSettings,
        caller: Option<&Caller>,
    ) -> Result<ResponseHeader> {
        let rt = &ctx.runtime;
        let names = &rt.identity_headers;
        let values: &[(OutName, HeaderValue)] = match caller {
            Some(Caller::Session(s)) => &s.headers,
            Some(Caller::Bearer(b)) => &b.headers,
            None => &[],
        };
        let value_of = |name: &OutName| {
            values
                .iter()
                .find(|(n, _)| n == name)
                .map_or(HeaderValue::from_static(""), |(_, v)| v.clone())
        };
        let route = ctx.route.as_ref();
        let access_token = match (caller, &ctx.runtime.auth) {
            (Some(Caller::Session(s)), Some(auth))
                if route.is_some_and(|r| r.pass_access_token) =>
            {
                auth.access_token(s)
            }
            _ => None,
        }
        .unwrap_or(HeaderValue::from_static(""));
        let assertion = match (caller, &ctx.runtime.auth, route) {
            (Some(c), Some(auth), Some(r)) if r.identity_assertion => {
                auth.assertion_for(&r.id, c.provider(), c.claims())
            }
            _ => None,
        }
        .unwrap_or(HeaderValue::from_static(""));

        let identity = [
            (&names.user, value_of(&names.user)),
            (&names.email, value_of(&names.email)),
            (&names.groups, value_of(&names.groups)),
            (
                &names.preferred_username,
                value_of(&names.preferred_username),
            ),
            (&names.access_token, access_token.clone()),
        ];
        let mut grant: Vec<(Granted, HeaderValue)> = Vec::with_capacity(16);
        grant.extend(identity.iter().map(|(n, v)| (Granted::Out(n), v.clone())));
        // `[headers] provider`, when configured: the front proxy copies it like the others
        // (empty without a caller, so a client's own value is overwritten, not kept).
        if let Some(name) = &names.provider {
            grant.push((Granted::Out(name), value_of(name)));
        }
        if fa.auth_request_headers {
            for (name, (_, v)) in AUTH_REQUEST_NAMES.iter().zip(&identity) {
                grant.push((Granted::Fixed(name), v.clone()));
            }
        }
        // The route's claim headers: every name it may set (empty without a value, so the
        // proxy's copy overwrites a client's), then the prefix-mode ones it has values for.
        if let Some(rc) = route.and_then(|r| r.claim_headers.as_ref()) {
            let claim_value = |name: &OutName| {
                ctx.claim_headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(HeaderValue::from_static(""), |(_, v)| v.clone())
            };
            for name in rc.exact_names() {
                let v = if name.name() == X_AUTH_REQUEST_ACCESS_TOKEN {
                    access_token.clone()
                } else {
                    claim_value(name)
                };
                grant.push((Granted::Out(name), v));
            }
            for (name, v) in &ctx.claim_headers {
                if !rc.exact_names().contains(name) {
                    grant.push((Granted::Out(name), v.clone()));
                }
            }
        }
        if let Some(auth) = &ctx.runtime.auth {
            grant.push((Granted::Out(auth.assertion_header()), assertion));
            let cookies = auth.foreign_cookies(headers);
            let v = HeaderValue::from_str(&cookies).unwrap_or(HeaderValue::from_static(""));
            grant.push((Granted::Fixed(COOKIE_HEADER), v.clone()));
            // The same under `Cookie`, for proxies that copy answer headers by name onto the
            // app's request (Traefik `authResponseHeaders`, ingress-nginx
            // `auth-response-headers`, Envoy `allowed_upstream_headers`).
            grant.push((Granted::Fixed("cookie"), v));
        }
        answer::admitted(&grant)
    }
}

const X_AUTH_REQUEST_ACCESS_TOKEN: &str = crate::config::defaults::X_AUTH_REQUEST_HEADERS[4];

/// oauth2-proxy's names, in the order of the identity array above.
const AUTH_REQUEST_NAMES: [&str; 5] = [
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "x-auth-request-access-token",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn read(
        proxy: &FrontProxy,
        headers: &[(&str, &str)],
    ) -> std::result::Result<Original, Refusal> {
        original(proxy, &req("/.authgate/auth", headers), "/.authgate/auth")
    }

    fn ok(
        proxy: &FrontProxy,
        headers: &[(&str, &str)],
    ) -> (String, String, String, Option<String>) {
        let o = read(proxy, headers).unwrap();
        (
            o.method.to_string(),
            o.authority.as_str().to_string(),
            o.path,
            o.query,
        )
    }

    #[test]
    fn each_proxy_is_read_from_its_own_headers() {
        let nginx = [
            ("x-original-method", "DELETE"),
            ("x-original-uri", "/a/b?c=1"),
            ("x-forwarded-host", "App.Example:8443"),
        ];
        assert_eq!(
            ok(&FrontProxy::Nginx, &nginx),
            (
                "DELETE".into(),
                "app.example:8443".into(),
                "/a/b".into(),
                Some("c=1".into())
            )
        );
        let traefik = [
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/x#frag"),
            ("x-forwarded-host", "app.example"),
        ];
        for p in [FrontProxy::Traefik, FrontProxy::Caddy] {
            assert_eq!(
                ok(&p, &traefik),
                ("POST".into(), "app.example".into(), "/x".into(), None)
            );
        }
        let ingress = [
            ("x-original-method", "GET"),
            ("x-original-url", "https://app.example/x/y?z"),
        ];
        assert_eq!(
            ok(&FrontProxy::IngressNginx, &ingress),
            (
                "GET".into(),
                "app.example".into(),
                "/x/y".into(),
                Some("z".into())
            )
        );
        let custom = FrontProxy::Custom {
            method: HeaderName::from_static("x-m"),
            uri: HeaderName::from_static("x-u"),
            host: Some(HeaderName::from_static("x-h")),
        };
        assert_eq!(
            ok(&custom, &[("x-m", "PUT"), ("x-u", "/"), ("x-h", "h")]),
            ("PUT".into(), "h".into(), "/".into(), None)
        );
        // Envoy: the check request is the original request below {prefix}auth.
        let mut r = RequestHeader::build("PATCH", b"/.authgate/auth/api/v1?x=2", None).unwrap();
        r.append_header("host", "App.example").unwrap();
        let o = original(&FrontProxy::Envoy, &r, "/.authgate/auth").unwrap();
        assert_eq!(
            (
                o.method,
                o.authority.as_str(),
                o.path.as_str(),
                o.query.as_deref()
            ),
            (Method::PATCH, "app.example", "/api/v1", Some("x=2"))
        );
        let r = RequestHeader::build("GET", b"/.authgate/authx/y", None).unwrap();
        assert!(original(&FrontProxy::Envoy, &r, "/.authgate/auth").is_err());
    }

    #[test]
    fn another_proxys_headers_are_ignored() {
        // Behind Traefik a client adds X-Original-URI: it is not Traefik's header.
        let o = read(
            &FrontProxy::Traefik,
            &[
                ("x-original-uri", "/public/x"),
                ("x-original-url", "http://other.example/public"),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/admin"),
                ("x-forwarded-host", "app.example"),
            ],
        )
        .unwrap();
        assert_eq!(o.path, "/admin");
        // And behind nginx, a client's X-Forwarded-Uri means nothing.
        let o = read(
            &FrontProxy::Nginx,
            &[
                ("x-forwarded-uri", "/public/x"),
                ("x-forwarded-method", "GET"),
                ("x-original-method", "POST"),
                ("x-original-uri", "/admin"),
                ("x-forwarded-host", "app.example"),
            ],
        )
        .unwrap();
        assert_eq!((o.method, o.path.as_str()), (Method::POST, "/admin"));
    }

    #[test]
    fn duplicates_contradictions_and_absences_are_400() {
        let base = [
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/admin"),
            ("x-forwarded-host", "app.example"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            v
        };
        for headers in [
            with(&[("x-forwarded-uri", "/public")]),
            with(&[("X_Forwarded_Uri", "/public")]),
            with(&[("x.forwarded.uri", "/public")]),
            with(&[("x-forwarded-method", "GET")]),
            with(&[("x_forwarded_method", "POST")]),
            with(&[("X_FORWARDED_HOST", "public.example")]),
            base[1..].to_vec(),
            vec![base[0], base[2]],
            vec![base[0], base[1]],
            vec![("x-forwarded-method", ""), base[1], base[2]],
            vec![("x-forwarded-method", "G ET"), base[1], base[2]],
            vec![base[0], ("x-forwarded-uri", "admin"), base[2]],
            vec![
                base[0],
                ("x-forwarded-uri", "ftp://app.example/admin"),
                base[2],
            ],
            vec![
                base[0],
                ("x-forwarded-uri", "http://other.example/admin"),
                base[2],
            ],
            vec![
                base[0],
                ("x-forwarded-uri", "http://app.example:1:2/admin"),
                base[2],
            ],
            vec![base[0], base[1], ("x-forwarded-host", "app.example:1:2")],
            vec![base[0], base[1], ("x-forwarded-host", "app.example..")],
            vec![base[0], base[1], ("x-forwarded-host", "app.example/x")],
            vec![
                base[0],
                base[1],
                ("x-forwarded-host", "a.example, b.example"),
            ],
        ] {
            assert!(read(&FrontProxy::Traefik, &headers).is_err(), "{headers:?}");
        }
        // An absolute X-Original-URL that disagrees with X-Forwarded-Host.
        assert_eq!(
            read(
                &FrontProxy::IngressNginx,
                &[
                    ("x-original-method", "GET"),
                    ("x-original-url", "https://public.example/x"),
                    ("x-forwarded-host", "admin.example"),
                ]
            ),
            Err(Refusal::AmbiguousHost)
        );
        // The same absolute URL that agrees is fine.
        assert!(read(
            &FrontProxy::Traefik,
            &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "http://APP.example/admin"),
                ("x-forwarded-host", "app.example"),
            ]
        )
        .is_ok());
    }

    proptest::proptest! {
        /// Whatever a front proxy (or a client through it) sends, the reader never panics,
        /// and what it accepts reads the same when sent again in canonical form.
        #[test]
        fn reader_is_total_and_canonical(
            method in "[ -~]{0,12}",
            uri in "(/|https?://|)[ -~]{0,40}",
            host in "[ -~]{0,30}",
            extra in proptest::option::of(("(x[-_.]forwarded[-_.](uri|method|host)|X-Original-URI)", "[ -~]{0,20}")),
        ) {
            let mut headers = vec![
                ("x-forwarded-method", method.as_str()),
                ("x-forwarded-uri", uri.as_str()),
                ("x-forwarded-host", host.as_str()),
            ];
            if let Some((k, v)) = &extra {
                headers.push((k.as_str(), v.as_str()));
            }
            let mut r = RequestHeader::build("GET", b"/.authgate/auth", None).unwrap();
            for (k, v) in &headers {
                if r.append_header(k.to_string(), *v).is_err() {
                    return Ok(());
                }
            }
            if let Ok(o) = original(&FrontProxy::Traefik, &r, "/.authgate/auth") {
                let target = match &o.query {
                    Some(q) => format!("{}?{q}", o.path),
                    None => o.path.clone(),
                };
                let again = read(
                    &FrontProxy::Traefik,
                    &[
                        ("x-forwarded-method", o.method.as_str()),
                        ("x-forwarded-uri", &target),
                        ("x-forwarded-host", o.authority.as_str()),
                    ],
                );
                proptest::prop_assert_eq!(again, Ok(o));
            }
        }
    }
}
