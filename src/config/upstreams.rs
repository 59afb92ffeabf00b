//! `[upstreams.*]`: server pools. Server names are not resolved here: the gateway looks
//! them up in the background while it runs (see `crate::upstream`), so a name that does not
//! resolve yet is no config error, and `check` needs no DNS, online or `--offline`.

use std::collections::BTreeMap;

use toml::Spanned;
use url::Url;

use super::defaults as d;
use super::error::Reporter;
use super::fields::{duration, duration_within, load_ca, span};
use super::file;
use super::model::{HealthCheck, ServerAddr, UpstreamSettings};

pub(super) fn upstreams(
    rep: &mut Reporter,
    f: &BTreeMap<String, file::Upstream>,
) -> BTreeMap<String, UpstreamSettings> {
    f.iter()
        .map(|(name, u)| (name.clone(), upstream(rep, name, u)))
        .collect()
}

fn upstream(rep: &mut Reporter, name: &str, u: &file::Upstream) -> UpstreamSettings {
    let key = |k: &str| format!("upstreams.{name}.{k}");
    let (servers, scheme) = servers(rep, name, &u.servers);
    let tls = scheme.as_deref() == Some("https");
    let ca_der = u
        .tls_ca_file
        .as_ref()
        .and_then(|f| load_ca(rep, &key("tls_ca_file"), f));
    let max_fails = match &u.max_fails {
        None => d::UPSTREAM_MAX_FAILS,
        Some(v) if d::UPSTREAM_MAX_FAILS_RANGE.contains(v.get_ref()) => *v.get_ref() as u32,
        Some(v) => {
            rep.error(
                key("max_fails"),
                span(v),
                format!(
                    "must be between {} (never mark down) and {}",
                    d::UPSTREAM_MAX_FAILS_RANGE.start(),
                    d::UPSTREAM_MAX_FAILS_RANGE.end()
                ),
            );
            d::UPSTREAM_MAX_FAILS
        }
    };
    let health = health(rep, name, u);
    let mut timeout =
        |k: &str, v: &Option<Spanned<String>>, default| duration(rep, &key(k), v, default);
    UpstreamSettings {
        name: name.to_string(),
        servers,
        tls,
        ca_der,
        verify_tls: u.tls_verify.unwrap_or(d::UPSTREAM_TLS_VERIFY),
        server_name: u.tls_server_name.as_ref().map(|s| s.get_ref().clone()),
        http2: u.http2.unwrap_or(d::UPSTREAM_HTTP2),
        connect_timeout: timeout(
            "connect_timeout",
            &u.connect_timeout,
            d::UPSTREAM_CONNECT_TIMEOUT,
        ),
        read_timeout: timeout("read_timeout", &u.read_timeout, d::UPSTREAM_READ_TIMEOUT),
        write_timeout: timeout("write_timeout", &u.write_timeout, d::UPSTREAM_WRITE_TIMEOUT),
        idle_timeout: timeout("idle_timeout", &u.idle_timeout, d::UPSTREAM_IDLE_TIMEOUT),
        max_fails,
        fail_timeout: timeout("fail_timeout", &u.fail_timeout, d::UPSTREAM_FAIL_TIMEOUT),
        pass_host_header: u.pass_host_header.unwrap_or(d::UPSTREAM_PASS_HOST_HEADER),
        resolve_interval: duration_within(
            rep,
            &key("resolve_interval"),
            &u.resolve_interval,
            d::UPSTREAM_RESOLVE_INTERVAL_RANGE,
            d::UPSTREAM_RESOLVE_INTERVAL,
        ),
        health,
    }
}

/// The active health check, when `health_path` is set.
fn health(rep: &mut Reporter, name: &str, u: &file::Upstream) -> Option<HealthCheck> {
    let key = |k: &str| format!("upstreams.{name}.{k}");
    let interval = duration_within(
        rep,
        &key("health_interval"),
        &u.health_interval,
        d::UPSTREAM_HEALTH_INTERVAL_RANGE,
        d::UPSTREAM_HEALTH_INTERVAL,
    );
    let timeout = duration_within(
        rep,
        &key("health_timeout"),
        &u.health_timeout,
        d::UPSTREAM_HEALTH_TIMEOUT_RANGE,
        d::UPSTREAM_HEALTH_TIMEOUT,
    );
    let Some(path) = &u.health_path else {
        for (k, v) in [
            ("health_interval", &u.health_interval),
            ("health_timeout", &u.health_timeout),
        ] {
            if let Some(v) = v {
                rep.error(key(k), span(v), "needs health_path (the path to check)");
            }
        }
        return None;
    };
    let p = path.get_ref();
    // An origin-form path (query allowed): it is written into the request line as is.
    let valid = p.starts_with('/')
        && http::uri::PathAndQuery::try_from(p.as_str()).is_ok_and(|pq| pq.as_str() == p);
    if !valid {
        rep.error(
            key("health_path"),
            span(path),
            "must be a path starting with / (a query is allowed), e.g. \"/healthz\"",
        );
        return None;
    }
    // Equal is fine (1s and the default 1s): a check never overlaps the next one.
    if timeout > interval {
        rep.error(
            key("health_timeout"),
            u.health_timeout.as_ref().map_or_else(|| span(path), span),
            "must not be longer than health_interval",
        );
    }
    Some(HealthCheck {
        path: p.clone(),
        interval,
        timeout,
    })
}

/// The servers of one upstream, as written, and their common scheme.
fn servers(
    rep: &mut Reporter,
    name: &str,
    list: &Spanned<Vec<Spanned<String>>>,
) -> (Vec<ServerAddr>, Option<String>) {
    let mut servers = Vec::new();
    let mut scheme: Option<String> = None;
    if list.get_ref().is_empty() {
        rep.error(
            format!("upstreams.{name}.servers"),
            span(list),
            "an upstream needs at least one server",
        );
    }
    for (i, s) in list.get_ref().iter().enumerate() {
        let k = format!("upstreams.{name}.servers[{i}]");
        let url = match Url::parse(s.get_ref()) {
            Ok(url) => url,
            Err(e) => {
                rep.error(k, span(s), format!("invalid URL {:?}: {e}", s.get_ref()));
                continue;
            }
        };
        if !matches!(url.scheme(), "http" | "https") {
            rep.error(k, span(s), "scheme must be http or https");
            continue;
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            rep.error(
                k,
                span(s),
                "a server URL has no path, query or fragment: the route decides the path (to send \"/app/x\" as \"/x\", set the route's strip_prefix = \"/app\"; to map paths, its rewrite = { pattern, replace })",
            );
            continue;
        }
        if !url.username().is_empty() || url.password().is_some() {
            rep.error(k, span(s), "credentials in upstream URLs are not supported");
            continue;
        }
        if let Some(prev) = &scheme {
            if prev != url.scheme() {
                rep.error(k, span(s), "all servers of an upstream use the same scheme");
                continue;
            }
        }
        scheme = Some(url.scheme().to_string());
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ip = match url.host() {
            Some(url::Host::Ipv4(a)) => Some(a.into()),
            Some(url::Host::Ipv6(a)) => Some(a.into()),
            _ => None,
        };
        servers.push(ServerAddr {
            ip,
            port,
            authority: match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.clone(),
            },
            host: bare.to_string(),
        });
    }
    (servers, scheme)
}

impl super::Config {
    /// `check` online: the upstream server names that do not resolve from here, as
    /// warnings (the gateway starts anyway and serves them once they do).
    pub fn unresolved_upstream_names(&self) -> Vec<String> {
        use std::net::ToSocketAddrs;
        let mut out = Vec::new();
        for (name, u) in &self.upstreams {
            for (i, s) in u.servers.iter().enumerate() {
                let found = s.ip.is_some()
                    || (s.host.as_str(), s.port)
                        .to_socket_addrs()
                        .is_ok_and(|mut a| a.next().is_some());
                if !found {
                    out.push(format!(
                        "upstreams.{name}.servers[{i}]: host {:?} does not resolve from here; the gateway starts anyway and serves it once it does",
                        s.host
                    ));
                }
            }
        }
        out
    }
}
