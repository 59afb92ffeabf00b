//! `[forward_auth]` and `[csrf]`: how the gateway meets front proxies and browsers.
//!
//! Both sections describe a boundary where someone else's account of a request is read: the
//! front proxy's headers in forward-auth mode, the browser's `Origin` and `Sec-Fetch-Site` for
//! cross-site request forgery. Each is validated once here into the settings the request path
//! reads; defaults are named constants in [`super::defaults`].

use http::HeaderName;
use toml::Spanned;

use super::error::Reporter;
use super::file;
use crate::host::Authority;

/// Which front proxy asks `{prefix}auth`, and so which headers describe the original request.
/// The gateway reads exactly these: another proxy's header names are ignored, never guessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrontProxy {
    /// nginx `auth_request` with the README snippet: `X-Original-Method`, `X-Original-URI`,
    /// `X-Forwarded-Host`.
    Nginx,
    /// ingress-nginx `auth-url`: `X-Original-Method` and an absolute `X-Original-URL` that
    /// carries the host as well.
    IngressNginx,
    /// Traefik `forwardAuth`: `X-Forwarded-Method`, `X-Forwarded-Uri`, `X-Forwarded-Host`.
    Traefik,
    /// Caddy `forward_auth`: `X-Forwarded-Method`, `X-Forwarded-Uri`, `X-Forwarded-Host`.
    Caddy,
    /// Envoy `ext_authz` (HTTP service with `path_prefix = "{prefix}auth"`): the check request
    /// itself carries the original method, Host and path, no extra headers.
    Envoy,
    /// Header names given in the config.
    Custom {
        method: HeaderName,
        uri: HeaderName,
        /// `None`: the host comes from an absolute URI.
        host: Option<HeaderName>,
    },
}

impl FrontProxy {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            FrontProxy::Nginx => "nginx",
            FrontProxy::IngressNginx => "ingress-nginx",
            FrontProxy::Traefik => "traefik",
            FrontProxy::Caddy => "caddy",
            FrontProxy::Envoy => "envoy",
            FrontProxy::Custom { .. } => "custom",
        }
    }
}

/// `[forward_auth]`, present only when the section is: without it `{prefix}auth` is not served.
#[derive(Debug, Clone)]
pub(crate) struct ForwardAuthSettings {
    pub(crate) proxy: FrontProxy,
    /// Also answer with oauth2-proxy's `X-Auth-Request-User`, `-Email`, `-Groups`,
    /// `-Preferred-Username` (and `-Access-Token` where the route passes it).
    pub(crate) auth_request_headers: bool,
}

/// `[csrf]`: refuse cookie-authenticated unsafe requests that another site started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CsrfSettings {
    pub(crate) enabled: bool,
    /// Accept `Sec-Fetch-Site: same-site` (a sibling subdomain). Off by default: SameSite=Lax
    /// cookies travel between siblings, which is exactly the gap this guard closes.
    pub(crate) allow_same_site: bool,
    /// Other origins allowed to send unsafe requests, canonical `scheme://host[:port]`.
    pub(crate) allowed_origins: Vec<String>,
}

pub(crate) use super::defaults::{
    CSRF_ALLOW_SAME_SITE as DEFAULT_CSRF_ALLOW_SAME_SITE, CSRF_ENABLED as DEFAULT_CSRF_ENABLED,
};

impl Default for CsrfSettings {
    fn default() -> Self {
        Self {
            enabled: DEFAULT_CSRF_ENABLED,
            allow_same_site: DEFAULT_CSRF_ALLOW_SAME_SITE,
            allowed_origins: Vec::new(),
        }
    }
}

/// Canonical `scheme://host[:port]` of an origin, the default port left out; `None` for
/// anything that is not an http(s) origin (`null`, a path, userinfo, a bad host).
pub(crate) fn canonical_origin(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    let (scheme, rest) = s.split_once("://")?;
    let https = if scheme.eq_ignore_ascii_case("https") {
        true
    } else if scheme.eq_ignore_ascii_case("http") {
        false
    } else {
        return None;
    };
    let authority = Authority::parse(rest.as_bytes()).ok()?;
    Some(origin_string(https, &authority))
}

/// `scheme://host[:port]` for a request's own origin, the default port left out.
pub(crate) fn origin_string(https: bool, authority: &Authority) -> String {
    let (scheme, default_port) = if https { ("https", 443) } else { ("http", 80) };
    match authority.port() {
        Some(p) if p != default_port => format!("{scheme}://{}:{p}", authority.host()),
        _ => format!("{scheme}://{}", authority.host()),
    }
}

fn header(rep: &mut Reporter, key: &str, v: &Option<Spanned<String>>) -> Option<HeaderName> {
    let v = v.as_ref()?;
    match HeaderName::from_bytes(v.get_ref().as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            rep.error(
                key,
                Some(v.span()),
                format!("{:?} is not a valid header name", v.get_ref()),
            );
            None
        }
    }
}

/// `[forward_auth]`; `trusted` says whether `server.trusted_proxies` names anyone, since
/// only a trusted peer may ask.
pub(crate) fn forward_auth(
    rep: &mut Reporter,
    f: &Option<file::ForwardAuth>,
    trusted: bool,
) -> Option<ForwardAuthSettings> {
    let f = f.as_ref()?;
    if !trusted {
        rep.error(
            "forward_auth.proxy",
            Some(f.proxy.span()),
            "forward-auth answers only trusted proxies: list the front proxy's address in server.trusted_proxies",
        );
    }
    let custom_keys = [
        ("forward_auth.method_header", &f.method_header),
        ("forward_auth.uri_header", &f.uri_header),
        ("forward_auth.host_header", &f.host_header),
    ];
    let proxy = match f.proxy.get_ref().as_str() {
        "custom" => {
            let method = header(rep, "forward_auth.method_header", &f.method_header);
            let uri = header(rep, "forward_auth.uri_header", &f.uri_header);
            let host = header(rep, "forward_auth.host_header", &f.host_header);
            for (key, v) in &custom_keys[..2] {
                if v.is_none() {
                    rep.error(
                        *key,
                        Some(f.proxy.span()),
                        "proxy = \"custom\" needs method_header and uri_header (host_header unless the URI is absolute)",
                    );
                }
            }
            match (method, uri) {
                (Some(method), Some(uri)) => FrontProxy::Custom { method, uri, host },
                _ => return None,
            }
        }
        named => {
            let proxy = match named {
                "nginx" => FrontProxy::Nginx,
                "ingress-nginx" => FrontProxy::IngressNginx,
                "traefik" => FrontProxy::Traefik,
                "caddy" => FrontProxy::Caddy,
                "envoy" => FrontProxy::Envoy,
                other => {
                    rep.error(
                        "forward_auth.proxy",
                        Some(f.proxy.span()),
                        format!("{other:?}: expected \"nginx\", \"ingress-nginx\", \"traefik\", \"caddy\", \"envoy\" or \"custom\""),
                    );
                    return None;
                }
            };
            for (key, v) in custom_keys {
                if let Some(v) = v {
                    rep.error(
                        key,
                        Some(v.span()),
                        "header names are fixed by the named proxy; use proxy = \"custom\" to name them",
                    );
                }
            }
            proxy
        }
    };
    Some(ForwardAuthSettings {
        proxy,
        auth_request_headers: f
            .auth_request_headers
            .unwrap_or(super::defaults::FORWARD_AUTH_REQUEST_HEADERS),
    })
}

pub(crate) fn csrf(rep: &mut Reporter, f: &file::Csrf) -> CsrfSettings {
    let mut allowed_origins = Vec::new();
    for (i, o) in f.allowed_origins.iter().enumerate() {
        match canonical_origin(o.get_ref().as_bytes()) {
            Some(c) => allowed_origins.push(c),
            None => rep.error(
                format!("csrf.allowed_origins[{i}]"),
                Some(o.span()),
                format!(
                    "{:?} is not an origin; write scheme://host[:port], e.g. \"https://app.example.com\"",
                    o.get_ref()
                ),
            ),
        }
    }
    CsrfSettings {
        enabled: f.enabled.unwrap_or(DEFAULT_CSRF_ENABLED),
        allow_same_site: f.allow_same_site.unwrap_or(DEFAULT_CSRF_ALLOW_SAME_SITE),
        allowed_origins,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_canonical() {
        assert_eq!(
            canonical_origin(b"HTTPS://App.Example.com:443").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            canonical_origin(b"http://localhost:8080").as_deref(),
            Some("http://localhost:8080")
        );
        for bad in [
            &b"null"[..],
            b"https://a.example/",
            b"https://u@a.example",
            b"ftp://a.example",
            b"https://",
            b"https://a.example:0",
            b"//a.example",
        ] {
            assert_eq!(
                canonical_origin(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn errors(src: &str) -> Vec<crate::config::ConfigError> {
        crate::config::parse(std::path::Path::new("t.toml"), src)
            .err()
            .map(|e| e.0)
            .unwrap_or_default()
    }

    #[test]
    fn forward_auth_is_checked_at_load() {
        let e = errors("[forward_auth]\nproxy = \"nginx\"\n");
        assert!(
            e.iter().any(|e| e.key == "forward_auth.proxy"
                && e.line == 2
                && e.message.contains("trusted_proxies")),
            "{e:?}"
        );
        let trusted = "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n";
        assert!(errors(&format!("{trusted}[forward_auth]\nproxy = \"nginx\"\n")).is_empty());
        let e = errors(&format!("{trusted}[forward_auth]\nproxy = \"haproxy\"\n"));
        assert!(
            e.iter()
                .any(|e| e.key == "forward_auth.proxy" && e.line == 4),
            "{e:?}"
        );
        let e = errors(&format!(
            "{trusted}[forward_auth]\nproxy = \"traefik\"\nuri_header = \"x-u\"\n"
        ));
        assert!(
            e.iter()
                .any(|e| e.key == "forward_auth.uri_header" && e.line == 5),
            "{e:?}"
        );
        let e = errors(&format!(
            "{trusted}[forward_auth]\nproxy = \"custom\"\nuri_header = \"x-u\"\n"
        ));
        assert!(
            e.iter().any(|e| e.key == "forward_auth.method_header"),
            "{e:?}"
        );
        let e = errors("[csrf]\nallowed_origins = [\"https://a.example/path\"]\n");
        assert!(
            e.iter()
                .any(|e| e.key == "csrf.allowed_origins[0]" && e.line == 2),
            "{e:?}"
        );
        let e = errors("[upstreams.a]\nservers = [\"http://127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\nunauthenticated = \"sometimes\"\n");
        assert!(
            e.iter()
                .any(|e| e.key == "routes[0].unauthenticated" && e.line == 5),
            "{e:?}"
        );
    }
}
