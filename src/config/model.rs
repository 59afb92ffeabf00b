//! The validated config: every string parsed into the type the request path needs, every
//! cross-reference resolved. [`validate`] turns a [`super::file::File`] into a [`Config`] or
//! reports every problem with its line; nothing after it parses config strings again.

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use http::HeaderName;

use crate::out_header::OutName;
use ipnet::IpNet;
use toml::Spanned;
use url::Url;

use super::error::Reporter;
use super::file;
pub use super::provider::{ClaimNames, LogoutMethod, ProviderSettings};
use super::secret::{self, Secret};
use crate::identity::{self, IdentityHeaders, IdentityNamespace};
use crate::limits::{self, HeadLimits};
use crate::path::PathOptions;
use crate::routing::HostPattern;

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub listeners: Vec<ListenerSettings>,
    pub admin_address: SocketAddr,
    /// Bearer secret for the admin API (`/sessions`); without it the API is off.
    pub admin_token: Option<Secret>,
    pub paths: PathOptions,
    pub case_insensitive_routes: bool,
    pub identity: IdentityNamespace,
    pub identity_headers: IdentityHeaders,
    /// Hosts allowed as absolute post-login/logout redirect targets (`.suffix` for subdomains).
    pub allowed_redirect_hosts: Vec<String>,
    /// Bound of the verified-bearer-token cache; 0 disables it (every request verifies).
    pub bearer_cache_entries: usize,
    /// Reserved path prefix answered by the gateway itself, e.g. `/.authgate/`.
    pub gateway_prefix: String,
    /// `None`: `{prefix}auth` is not served.
    pub forward_auth: Option<super::front::ForwardAuthSettings>,
    pub csrf: super::front::CsrfSettings,
    pub session: SessionSettings,
    pub providers: Vec<ProviderSettings>,
    pub assertion: AssertionSettings,
    pub upstreams: BTreeMap<String, UpstreamSettings>,
    pub routes: Vec<RouteSettings>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub threads: usize,
    /// How long in-flight requests may run after SIGTERM/SIGINT before the runtime stops.
    pub grace_period: Duration,
    /// Extra time given to the runtime to wind down after the grace period.
    pub shutdown_timeout: Duration,
    pub pid_file: String,
    pub upgrade_socket: String,
    pub trusted_proxies: Vec<IpNet>,
    pub request_id_header: HeaderName,
    /// `max_request_header_bytes` and `max_request_headers`: bounds of a request head.
    pub head_limits: HeadLimits,
    /// Downstream connections held at once, all listeners together. At the limit the
    /// connections without a request in progress are closed oldest first to make room; a
    /// new connection is refused only when none can be.
    pub max_connections: usize,
    /// How long a connection may wait for the next request after a response (HTTP/1.1
    /// keep-alive; idle HTTP/2 connections too).
    pub keepalive_timeout: Duration,
    /// How long a request head may take to arrive whole: from the connection's start for
    /// the first request, from its first byte for every later one.
    pub request_header_timeout: Duration,
    /// After SIGTERM/SIGINT: how long the listeners keep accepting (with `/readyz` already
    /// 503 and `Connection: close` on every response) before they close and the grace
    /// period starts. The time a load balancer needs to stop sending new connections.
    pub shutdown_delay: Duration,
}

/// Bounds of `server.max_connections`.
pub const MAX_CONNECTIONS: std::ops::RangeInclusive<usize> = 1..=1_000_000;
/// Default `server.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// `tracing_subscriber::EnvFilter` directive; `RUST_LOG` overrides it.
    pub level: String,
    pub access_log: bool,
}

#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub address: SocketAddr,
    pub h2c: bool,
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStore {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSitePolicy {
    Lax,
    Strict,
}

/// How to reach Redis. URLs are secrets: they may carry passwords.
#[derive(Debug, Clone)]
pub enum RedisTopology {
    Standalone(Secret),
    /// Sentinel addresses and the monitored primary's name: failover is followed.
    Sentinel {
        sentinels: Vec<Secret>,
        master: String,
    },
    /// Seed nodes of a Redis Cluster.
    Cluster {
        nodes: Vec<Secret>,
    },
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub store: SessionStore,
    /// Where the Redis store is (`None` with the memory store).
    pub redis: Option<RedisTopology>,
    /// Credentials for data nodes found through Sentinel or Cluster discovery.
    pub redis_username: Option<String>,
    pub redis_password: Option<Secret>,
    /// PEM CA bundle trusted for `rediss://` instead of the built-in web roots.
    pub redis_ca: Option<Vec<u8>>,
    pub redis_prefix: String,
    pub redis_timeout: Duration,
    /// Replicas that must acknowledge a session's end (`WAIT`) before it is reported done;
    /// `None`: the deployment's default (0 for one server or a Cluster; with Sentinel 1 while
    /// the sentinels know a replica that is up, 0 when they know none).
    pub redis_min_replicas_ack: Option<u32>,
    /// Key material for cookie MACs and token encryption; generated per process when absent
    /// (memory store only: replicas sharing Redis must share it).
    pub secret: Option<Secret>,
    pub cookie_name: String,
    pub cookie_secure: bool,
    pub cookie_same_site: SameSitePolicy,
    pub cookie_domain: Option<String>,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub login_timeout: Duration,
    pub cache_max_age: Duration,
    pub cache_max_entries: usize,
    /// Restart a session's idle TTL in the store at most this often.
    pub touch_interval: Duration,
    /// Refresh the access token this long before it expires.
    pub refresh_lead: Duration,
    /// How long a request whose access token has expired waits for another request's (or
    /// replica's) refresh before it answers 503.
    pub refresh_wait: Duration,
    /// Logins started and not yet finished, kept at most: the oldest is dropped past this.
    pub max_pending_logins: usize,
    /// A return URL longer than this is replaced by `/` (it is stored with the login).
    pub max_return_url_bytes: usize,
}

/// Enough for every browser tab of a busy site's sign-in wave; ~1 KB each in the store.
pub const DEFAULT_MAX_PENDING_LOGINS: usize = 10_000;
pub const DEFAULT_MAX_RETURN_URL_BYTES: usize = 2048;

/// The signed identity assertion (`crate::assertion`).
#[derive(Debug, Clone)]
pub struct AssertionSettings {
    pub header: HeaderName,
    /// PKCS#8 PEM P-256 key; generated (and written here) when missing.
    pub key_file: Option<String>,
    pub issuer: String,
    pub ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub name: String,
    pub servers: Vec<ServerAddr>,
    pub tls: bool,
    /// DER certificates of a custom CA; `None` uses the system roots.
    pub ca_der: Option<Vec<Vec<u8>>>,
    pub verify_tls: bool,
    pub server_name: Option<String>,
    pub http2: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub pass_host_header: bool,
}

/// One upstream server, resolved at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    pub addr: SocketAddr,
    /// Host as written, for SNI and (unless the Host header is passed) the `Host` header.
    pub host: String,
    pub authority: String,
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub id: String,
    pub host: HostPattern,
    pub path: String,
    pub upstream: String,
    pub public: bool,
    pub pass_access_token: bool,
    /// `None`: every authenticated caller.
    pub policy: Option<crate::policy::Policy>,
    /// Accept `Authorization: Bearer <JWT>` with one of `audiences`.
    pub bearer: bool,
    pub audiences: Vec<String>,
    /// Provider ids whose sessions and tokens this route accepts; empty: all.
    pub providers: Vec<String>,
    /// Send the signed identity assertion to this route's upstream.
    pub identity_assertion: bool,
    /// Refuse cross-site unsafe requests authenticated by the session cookie.
    pub csrf: bool,
    pub unauthenticated: Unauthenticated,
}

/// What a caller without a session gets on a protected route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unauthenticated {
    /// A redirect to sign in for top-level browser navigations, 401 with JSON otherwise.
    #[default]
    Auto,
    /// Always the redirect (an app whose every request is a page).
    Redirect,
    /// Always 401 (an API).
    Status401,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_ADMIN: &str = "127.0.0.1:9090";

pub(super) fn span<T>(s: &Spanned<T>) -> Option<std::ops::Range<usize>> {
    Some(s.span())
}

pub(super) fn duration(
    rep: &mut Reporter,
    key: &str,
    v: &Option<Spanned<String>>,
    default: Duration,
) -> Duration {
    match v {
        None => default,
        Some(s) => match humantime::parse_duration(s.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                rep.error(
                    key,
                    span(s),
                    format!(
                        "invalid duration {:?} ({e}); write e.g. \"5s\" or \"250ms\"",
                        s.get_ref()
                    ),
                );
                default
            }
        },
    }
}

/// A duration within `range`, or `default` when unset; out of range is reported with its
/// line.
fn duration_within(
    rep: &mut Reporter,
    key: &str,
    v: &Option<Spanned<String>>,
    range: std::ops::RangeInclusive<Duration>,
    default: Duration,
) -> Duration {
    let d = duration(rep, key, v, default);
    match v {
        Some(s) if !range.contains(&d) => {
            rep.error(
                key,
                span(s),
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(*range.start()),
                    humantime::format_duration(*range.end())
                ),
            );
            default
        }
        _ => d,
    }
}

/// An integer within `range`, or `default` when unset; out of range is reported with its line.
pub(super) fn bounded(
    rep: &mut Reporter,
    key: &str,
    v: &Option<Spanned<i64>>,
    range: std::ops::RangeInclusive<usize>,
    default: usize,
) -> usize {
    match v {
        None => default,
        Some(n) => match usize::try_from(*n.get_ref()) {
            Ok(x) if range.contains(&x) => x,
            _ => {
                rep.error(
                    key,
                    span(n),
                    format!("must be between {} and {}", range.start(), range.end()),
                );
                default
            }
        },
    }
}

fn socket_addr(rep: &mut Reporter, key: &str, v: &Spanned<String>) -> Option<SocketAddr> {
    match v.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            rep.error(
                key,
                span(v),
                format!("invalid address {:?}; write IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"", v.get_ref()),
            );
            None
        }
    }
}

fn readable_file(rep: &mut Reporter, key: &str, v: &Spanned<String>) -> Option<String> {
    match std::fs::metadata(v.get_ref()) {
        Ok(m) if m.is_file() => Some(v.get_ref().clone()),
        Ok(_) => {
            rep.error(key, span(v), format!("{} is not a file", v.get_ref()));
            None
        }
        Err(e) => {
            rep.error(key, span(v), format!("cannot read {}: {e}", v.get_ref()));
            None
        }
    }
}

/// A secret from `key` (with `${ENV}` expansion) or from the file named by `key_file`.
pub(super) fn secret_value(
    rep: &mut Reporter,
    key: &str,
    inline: &Option<Spanned<String>>,
    file_key: &str,
    file: &Option<Spanned<String>>,
) -> Option<Secret> {
    match (inline, file) {
        (Some(_), Some(f)) => {
            rep.error(
                file_key,
                span(f),
                format!("set either {key} or {file_key}, not both"),
            );
            None
        }
        (Some(v), None) => match secret::expand_env(v.get_ref(), |k| std::env::var(k).ok()) {
            Ok(s) => Some(Secret::new(s)),
            Err(e) => {
                rep.error(key, span(v), e);
                None
            }
        },
        (None, Some(f)) => match secret::read_file(f.get_ref()) {
            Ok(s) => Some(Secret::new(s)),
            Err(e) => {
                rep.error(file_key, span(f), e);
                None
            }
        },
        (None, None) => None,
    }
}

pub(super) fn header_name(
    rep: &mut Reporter,
    key: &str,
    v: &Spanned<String>,
) -> Option<HeaderName> {
    match HeaderName::from_bytes(v.get_ref().as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            rep.error(
                key,
                span(v),
                format!("{:?} is not a valid header name", v.get_ref()),
            );
            None
        }
    }
}

/// Parse PEM certificates and check each is well-formed DER X.509, so nothing can fail on
/// the request path later.
pub(super) fn load_ca(rep: &mut Reporter, key: &str, v: &Spanned<String>) -> Option<Vec<Vec<u8>>> {
    let pem = match std::fs::read(v.get_ref()) {
        Ok(p) => p,
        Err(e) => {
            rep.error(key, span(v), format!("cannot read {}: {e}", v.get_ref()));
            return None;
        }
    };
    let mut certs = Vec::new();
    for item in rustls_pemfile::certs(&mut pem.as_slice()) {
        match item {
            Ok(der) if x509_parser::parse_x509_certificate(&der).is_ok() => {
                certs.push(der.to_vec())
            }
            _ => {
                rep.error(
                    key,
                    span(v),
                    format!("{} holds an invalid certificate", v.get_ref()),
                );
                return None;
            }
        }
    }
    if certs.is_empty() {
        rep.error(
            key,
            span(v),
            format!("{} holds no PEM certificate", v.get_ref()),
        );
        return None;
    }
    Some(certs)
}

/// Validate `[routes.policy]` into a ready-to-evaluate policy.
fn policy(
    rep: &mut Reporter,
    i: usize,
    public: bool,
    p: &Spanned<file::Policy>,
    provider_ids: &[&str],
) -> Option<crate::policy::Policy> {
    use crate::policy::{ClaimRule, Policy};
    let key = |k: &str| format!("routes[{i}].policy.{k}");
    let f = p.get_ref();
    let mut providers = HashSet::new();
    for (j, id) in f.providers.iter().enumerate() {
        if !provider_ids.contains(&id.get_ref().as_str()) {
            rep.error(
                format!("{}[{j}]", key("providers")),
                span(id),
                format!("unknown provider {:?}", id.get_ref()),
            );
        }
        providers.insert(id.get_ref().clone());
    }
    if public {
        rep.error(
            format!("routes[{i}].policy"),
            span(p),
            "a public route admits everyone: remove the policy or public = true",
        );
    }
    let mut out = Policy {
        providers,
        users: f.users.iter().cloned().collect(),
        groups: f.groups.iter().cloned().collect(),
        ..Policy::default()
    };
    for (j, e) in f.emails.iter().enumerate() {
        let v = e.get_ref();
        if v.matches('@').count() != 1 || v.starts_with('@') || v.ends_with('@') {
            rep.error(
                format!("{}[{j}]", key("emails")),
                span(e),
                format!("{v:?} is not an email address"),
            );
        }
        out.emails.insert(v.to_ascii_lowercase());
    }
    for (j, d) in f.email_domains.iter().enumerate() {
        let v = d.get_ref();
        if v.contains('@')
            || v.starts_with('.')
            || HostPattern::parse(v).is_none()
            || v.contains('*')
        {
            rep.error(format!("{}[{j}]", key("email_domains")), span(d), format!("{v:?}: write the domain only, e.g. \"example.com\" (matched exactly, no subdomains)"));
        }
        out.email_domains.insert(v.to_ascii_lowercase());
    }
    for (j, m) in f.methods.iter().enumerate() {
        match m.get_ref().to_ascii_uppercase().parse::<http::Method>() {
            Ok(method) => out.methods.push(method),
            Err(_) => rep.error(
                format!("{}[{j}]", key("methods")),
                span(m),
                format!("{:?} is not an HTTP method", m.get_ref()),
            ),
        }
    }
    for (claim, value) in &f.claims {
        out.claims.push(ClaimRule {
            claim: claim.clone(),
            value: value.clone(),
        });
    }
    if out.is_empty() {
        rep.error(format!("routes[{i}].policy"), span(p), "empty policy: list providers, users, emails, email_domains, groups, methods or claims (or remove the table to admit every signed-in user)");
    }
    Some(out)
}

fn upstream(rep: &mut Reporter, name: &str, u: &file::Upstream) -> UpstreamSettings {
    let key = |k: &str| format!("upstreams.{name}.{k}");
    let mut servers = Vec::new();
    let mut scheme: Option<String> = None;
    if u.servers.get_ref().is_empty() {
        rep.error(
            key("servers"),
            span(&u.servers),
            "an upstream needs at least one server",
        );
    }
    for (i, s) in u.servers.get_ref().iter().enumerate() {
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
                "a server URL has no path, query or fragment: the route decides the path",
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
        // Names are resolved once, here: a DNS lookup has no place on the request path.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match (bare, port).to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => servers.push(ServerAddr {
                addr,
                authority: match url.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host.clone(),
                },
                host: bare.to_string(),
            }),
            Ok(None) | Err(_) => {
                rep.error(k, span(s), format!("cannot resolve host {host:?}"));
            }
        }
    }
    let tls = scheme.as_deref() == Some("https");
    let ca_der = u
        .tls_ca_file
        .as_ref()
        .and_then(|f| load_ca(rep, &key("tls_ca_file"), f));
    let max_fails = match &u.max_fails {
        None => 1,
        Some(v) if (0..=1000).contains(v.get_ref()) => *v.get_ref() as u32,
        Some(v) => {
            rep.error(
                key("max_fails"),
                span(v),
                "must be between 0 (never mark down) and 1000",
            );
            1
        }
    };
    UpstreamSettings {
        name: name.to_string(),
        servers,
        tls,
        ca_der,
        verify_tls: u.tls_verify.unwrap_or(true),
        server_name: u.tls_server_name.as_ref().map(|s| s.get_ref().clone()),
        http2: u.http2.unwrap_or(false),
        connect_timeout: duration(
            rep,
            &key("connect_timeout"),
            &u.connect_timeout,
            Duration::from_secs(5),
        ),
        read_timeout: duration(
            rep,
            &key("read_timeout"),
            &u.read_timeout,
            Duration::from_secs(60),
        ),
        write_timeout: duration(
            rep,
            &key("write_timeout"),
            &u.write_timeout,
            Duration::from_secs(60),
        ),
        idle_timeout: duration(
            rep,
            &key("idle_timeout"),
            &u.idle_timeout,
            Duration::from_secs(60),
        ),
        max_fails,
        fail_timeout: duration(
            rep,
            &key("fail_timeout"),
            &u.fail_timeout,
            Duration::from_secs(10),
        ),
        pass_host_header: u.pass_host_header.unwrap_or(true),
    }
}

/// Check everything, collecting every error. `None` when at least one was reported.
pub fn validate(f: &file::File, rep: &mut Reporter) -> Option<Config> {
    // [server]
    let threads = match &f.server.threads {
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(t) if (1..=1024).contains(t.get_ref()) => *t.get_ref() as usize,
        Some(t) => {
            rep.error("server.threads", span(t), "must be between 1 and 1024");
            1
        }
    };
    let mut trusted_proxies = Vec::new();
    for (i, p) in f.server.trusted_proxies.iter().enumerate() {
        let s = p.get_ref();
        let net = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from));
        match net {
            Ok(n) => trusted_proxies.push(n),
            Err(_) => rep.error(
                format!("server.trusted_proxies[{i}]"),
                span(p),
                format!("{s:?} is not an IP address or CIDR block"),
            ),
        }
    }
    let request_id_header = match &f.server.request_id_header {
        None => HeaderName::from_static("x-request-id"),
        Some(h) => header_name(rep, "server.request_id_header", h)
            .unwrap_or(HeaderName::from_static("x-request-id")),
    };
    let head_limits = HeadLimits {
        max_bytes: bounded(
            rep,
            "server.max_request_header_bytes",
            &f.server.max_request_header_bytes,
            limits::MIN_MAX_BYTES..=limits::MAX_MAX_BYTES,
            limits::DEFAULT_MAX_BYTES,
        ),
        max_headers: bounded(
            rep,
            "server.max_request_headers",
            &f.server.max_request_headers,
            limits::MIN_MAX_HEADERS..=limits::MAX_MAX_HEADERS,
            limits::DEFAULT_MAX_HEADERS,
        ),
    };
    let server = ServerSettings {
        threads,
        grace_period: duration(
            rep,
            "server.grace_period",
            &f.server.grace_period,
            Duration::from_secs(10),
        ),
        shutdown_timeout: duration(
            rep,
            "server.shutdown_timeout",
            &f.server.shutdown_timeout,
            Duration::from_secs(5),
        ),
        pid_file: f
            .server
            .pid_file
            .clone()
            .unwrap_or_else(|| "/tmp/authgate.pid".into()),
        upgrade_socket: f
            .server
            .upgrade_socket
            .clone()
            .unwrap_or_else(|| "/tmp/authgate_upgrade.sock".into()),
        trusted_proxies,
        request_id_header,
        head_limits,
        max_connections: bounded(
            rep,
            "server.max_connections",
            &f.server.max_connections,
            MAX_CONNECTIONS,
            DEFAULT_MAX_CONNECTIONS,
        ),
        keepalive_timeout: duration_within(
            rep,
            "server.keepalive_timeout",
            &f.server.keepalive_timeout,
            Duration::from_secs(1)..=Duration::from_secs(3600),
            Duration::from_secs(60),
        ),
        request_header_timeout: duration_within(
            rep,
            "server.request_header_timeout",
            &f.server.request_header_timeout,
            Duration::from_secs(1)..=Duration::from_secs(300),
            Duration::from_secs(10),
        ),
        shutdown_delay: duration_within(
            rep,
            "server.shutdown_delay",
            &f.server.shutdown_delay,
            Duration::ZERO..=Duration::from_secs(300),
            Duration::ZERO,
        ),
    };

    // [log]
    let format = match f.log.format.as_ref().map(|s| (s.get_ref().as_str(), s)) {
        None | Some(("text", _)) => LogFormat::Text,
        Some(("json", _)) => LogFormat::Json,
        Some((other, s)) => {
            rep.error(
                "log.format",
                span(s),
                format!("{other:?}: expected \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    let level = match &f.log.level {
        None => "info".to_string(),
        Some(l) => {
            if tracing_subscriber::EnvFilter::builder()
                .parse(l.get_ref())
                .is_err()
            {
                rep.error(
                    "log.level",
                    span(l),
                    format!("invalid log filter {:?}", l.get_ref()),
                );
            }
            l.get_ref().clone()
        }
    };
    let log = LogSettings {
        format,
        level,
        access_log: f.log.access_log.unwrap_or(true),
    };

    // [[listeners]] and [admin]
    let mut listeners = Vec::new();
    let mut seen_addrs = HashSet::new();
    for (i, l) in f.listeners.iter().enumerate() {
        let key = |k: &str| format!("listeners[{i}].{k}");
        let Some(address) = socket_addr(rep, &key("address"), &l.address) else {
            continue;
        };
        // Port 0: a free port each, picked at start, so no clash.
        if address.port() != 0 && !seen_addrs.insert(address) {
            rep.error(
                key("address"),
                span(&l.address),
                "address used by another listener",
            );
        }
        let tls = match (&l.tls_cert_file, &l.tls_key_file) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                match (
                    readable_file(rep, &key("tls_cert_file"), c),
                    readable_file(rep, &key("tls_key_file"), k),
                ) {
                    (Some(cert_file), Some(key_file)) => Some(TlsFiles {
                        cert_file,
                        key_file,
                    }),
                    _ => None,
                }
            }
            (Some(c), None) => {
                rep.error(
                    key("tls_key_file"),
                    span(c),
                    "tls_cert_file needs tls_key_file",
                );
                None
            }
            (None, Some(k)) => {
                rep.error(
                    key("tls_cert_file"),
                    span(k),
                    "tls_key_file needs tls_cert_file",
                );
                None
            }
        };
        if tls.is_some() && l.h2c {
            rep.error(
                key("h2c"),
                span(&l.address),
                "h2c is for plain listeners; TLS listeners negotiate HTTP/2 by ALPN",
            );
        }
        listeners.push(ListenerSettings {
            address,
            h2c: l.h2c,
            tls,
        });
    }
    if f.listeners.is_empty() {
        listeners.push(ListenerSettings {
            address: DEFAULT_LISTEN.parse().expect("valid default"),
            h2c: false,
            tls: None,
        });
    }
    let admin_address = match &f.admin.address {
        None => DEFAULT_ADMIN.parse().expect("valid default"),
        Some(a) => {
            let addr = socket_addr(rep, "admin.address", a)
                .unwrap_or(DEFAULT_ADMIN.parse().expect("valid default"));
            if seen_addrs.contains(&addr) {
                rep.error(
                    "admin.address",
                    span(a),
                    "the admin listener must not share a public listener's address",
                );
            }
            addr
        }
    };

    let admin_token = secret_value(
        rep,
        "admin.token",
        &f.admin.token,
        "admin.token_file",
        &f.admin.token_file,
    );
    if admin_token.as_ref().is_some_and(|t| t.expose().len() < 16) {
        rep.error(
            "admin.token",
            f.admin
                .token
                .as_ref()
                .or(f.admin.token_file.as_ref())
                .and_then(span),
            "must be at least 16 bytes",
        );
    }

    // [headers]: identity namespace
    let names: Vec<String> = match &f.headers.identity_headers {
        None => identity::DEFAULT_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        Some(v) => v
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                header_name(rep, &format!("headers.identity_headers[{i}]"), h)
                    .map(|h| h.to_string())
            })
            .collect(),
    };
    let mut prefixes: Vec<String> = match &f.headers.identity_prefixes {
        None => identity::DEFAULT_PREFIXES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        Some(v) => v.iter().map(|s| s.get_ref().to_ascii_lowercase()).collect(),
    };
    if let Some(v) = &f.headers.identity_prefixes {
        for (i, p) in v.iter().enumerate() {
            if p.get_ref().len() < 3 {
                rep.error(
                    format!("headers.identity_prefixes[{i}]"),
                    span(p),
                    "prefix too short: it would strip ordinary headers",
                );
            }
        }
    }
    let defaults = IdentityHeaders::default();
    let mut out_header = |k: &str, v: &Option<Spanned<String>>, d: &OutName| -> OutName {
        v.as_ref()
            .and_then(|h| header_name(rep, &format!("headers.{k}"), h))
            .map(OutName::new)
            .unwrap_or_else(|| d.clone())
    };
    let identity_headers = IdentityHeaders {
        user: out_header("user", &f.headers.user, &defaults.user),
        email: out_header("email", &f.headers.email, &defaults.email),
        groups: out_header("groups", &f.headers.groups, &defaults.groups),
        preferred_username: out_header(
            "preferred_username",
            &f.headers.preferred_username,
            &defaults.preferred_username,
        ),
        access_token: out_header(
            "access_token",
            &f.headers.access_token,
            &defaults.access_token,
        ),
        provider: f
            .headers
            .provider
            .as_ref()
            .and_then(|h| header_name(rep, "headers.provider", h))
            .map(OutName::new),
        groups_filter: match &f.headers.groups_filter {
            None => None,
            Some(r) => match regex::Regex::new(r.get_ref()) {
                Ok(re) => Some(re),
                Err(e) => {
                    rep.error(
                        "headers.groups_filter",
                        span(r),
                        format!("invalid regular expression: {e}"),
                    );
                    None
                }
            },
        },
        max_groups_bytes: match &f.headers.max_groups_bytes {
            None => crate::identity::DEFAULT_MAX_GROUPS_BYTES,
            Some(v) if (64..=65536).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                rep.error(
                    "headers.max_groups_bytes",
                    span(v),
                    "must be between 64 and 65536",
                );
                crate::identity::DEFAULT_MAX_GROUPS_BYTES
            }
        },
    };
    // Our own namespace is never optional.
    if !prefixes.iter().any(|p| p == "x-authgate-") {
        prefixes.push("x-authgate-".into());
    }
    let mut identity = IdentityNamespace::new(
        names.iter().map(String::as_str),
        prefixes.iter().map(String::as_str),
    );
    // The headers we set are always stripped from clients, whatever the namespace says.
    for h in identity_headers.names() {
        identity.insert(h.as_str());
    }
    let mut allowed_redirect_hosts = Vec::new();
    for (i, h) in f.gateway.allowed_redirect_hosts.iter().enumerate() {
        let v = h.get_ref().to_ascii_lowercase();
        let bare = v.strip_prefix('.').unwrap_or(&v);
        if HostPattern::parse(bare).is_none() || bare.contains('*') {
            rep.error(
                format!("gateway.allowed_redirect_hosts[{i}]"),
                span(h),
                "a host name, or .suffix for any name below it",
            );
        }
        allowed_redirect_hosts.push(v);
    }

    // [paths]
    let paths = PathOptions {
        allow_semicolon: f.paths.allow_semicolon,
        allow_encoded_slash: f.paths.allow_encoded_slash,
    };

    // [gateway]
    let gateway_prefix = match &f.gateway.prefix {
        None => "/.authgate/".to_string(),
        Some(p) => {
            let v = p.get_ref();
            let ok = v.len() > 2
                && v.starts_with('/')
                && v.ends_with('/')
                && crate::path::normalize(v, paths)
                    .map(|c| c.as_str() == v)
                    .unwrap_or(false);
            if !ok {
                rep.error(
                    "gateway.prefix",
                    span(p),
                    "must be a canonical path that starts and ends with '/', e.g. \"/.authgate/\"",
                );
            }
            v.clone()
        }
    };

    // [session] and [[providers]]: read by the login flow.
    let store = match f.session.store.as_ref().map(|s| (s.get_ref().as_str(), s)) {
        None | Some(("memory", _)) => SessionStore::Memory,
        Some(("redis", _)) => SessionStore::Redis,
        Some((other, s)) => {
            rep.error(
                "session.store",
                span(s),
                format!("{other:?}: expected \"memory\" or \"redis\""),
            );
            SessionStore::Memory
        }
    };
    let redis_url = secret_value(
        rep,
        "session.redis_url",
        &f.session.redis_url,
        "session.redis_url_file",
        &f.session.redis_url_file,
    );
    let redis_scheme_ok = |url: &str| {
        Url::parse(url)
            .map(|u| matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix"))
            .unwrap_or(false)
    };
    if let Some(url) = &redis_url {
        if !redis_scheme_ok(url.expose()) {
            // Do not echo the value: it may carry a password.
            let s = f
                .session
                .redis_url
                .as_ref()
                .or(f.session.redis_url_file.as_ref());
            rep.error(
                "session.redis_url",
                s.and_then(span),
                "not a redis:// or rediss:// URL",
            );
        }
    }
    let url_list = |rep: &mut Reporter, key: &str, v: &Spanned<Vec<String>>| -> Vec<Secret> {
        let mut out = Vec::new();
        for u in v.get_ref() {
            match secret::expand_env(u, |k| std::env::var(k).ok()) {
                Ok(u) if redis_scheme_ok(&u) && !u.starts_with("redis+unix") => {
                    out.push(Secret::new(u))
                }
                Ok(_) => rep.error(
                    key,
                    span(v),
                    "every entry must be a redis:// or rediss:// URL",
                ),
                Err(e) => rep.error(key, span(v), e),
            }
        }
        if out.is_empty() && v.get_ref().is_empty() {
            rep.error(key, span(v), "list at least one address");
        }
        out
    };
    let sentinels = f
        .session
        .redis_sentinels
        .as_ref()
        .map(|v| url_list(rep, "session.redis_sentinels", v));
    let cluster = f
        .session
        .redis_cluster_nodes
        .as_ref()
        .map(|v| url_list(rep, "session.redis_cluster_nodes", v));
    let chosen = [redis_url.is_some(), sentinels.is_some(), cluster.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if chosen > 1 {
        let at = f.session.redis_sentinels.as_ref().and_then(span).or(f
            .session
            .redis_cluster_nodes
            .as_ref()
            .and_then(span));
        rep.error(
            "session.redis_url",
            at,
            "set one of redis_url, redis_sentinels or redis_cluster_nodes",
        );
    }
    let redis = match (redis_url, sentinels, cluster) {
        (Some(url), _, _) => Some(RedisTopology::Standalone(url)),
        (None, Some(sentinels), _) => {
            let master = match &f.session.redis_sentinel_master {
                Some(m) if !m.get_ref().is_empty() => m.get_ref().clone(),
                _ => {
                    rep.error(
                        "session.redis_sentinel_master",
                        f.session.redis_sentinels.as_ref().and_then(span),
                        "redis_sentinels needs redis_sentinel_master (the monitored primary's name)",
                    );
                    String::new()
                }
            };
            Some(RedisTopology::Sentinel { sentinels, master })
        }
        (None, None, Some(nodes)) => Some(RedisTopology::Cluster { nodes }),
        (None, None, None) => None,
    };
    if store == SessionStore::Redis && redis.is_none() {
        rep.error(
            "session.redis_url",
            f.session.store.as_ref().and_then(span),
            "store = \"redis\" needs redis_url (or redis_url_file), redis_sentinels or redis_cluster_nodes",
        );
    }
    let redis_password = secret_value(
        rep,
        "session.redis_password",
        &f.session.redis_password,
        "session.redis_password_file",
        &f.session.redis_password_file,
    );
    let redis_ca = f.session.redis_ca_file.as_ref().and_then(|p| {
        if matches!(redis, Some(RedisTopology::Sentinel { .. })) {
            rep.error(
                "session.redis_ca_file",
                span(p),
                "not supported with redis_sentinels yet (system roots are used there)",
            );
        }
        match std::fs::read(p.get_ref()) {
            Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Some(pem),
            Ok(_) => {
                rep.error(
                    "session.redis_ca_file",
                    span(p),
                    "no PEM certificate in the file",
                );
                None
            }
            Err(e) => {
                rep.error(
                    "session.redis_ca_file",
                    span(p),
                    format!("cannot read: {e}"),
                );
                None
            }
        }
    });
    let cookie_name = match &f.session.cookie_name {
        None => "authgate_session".to_string(),
        Some(c) => {
            let v = c.get_ref();
            if v.is_empty()
                || v.starts_with("__")
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                rep.error(
                    "session.cookie_name",
                    span(c),
                    "use letters, digits, '_' and '-' (the __Host- prefix is added over HTTPS)",
                );
            }
            v.clone()
        }
    };
    let secret = secret_value(
        rep,
        "session.secret",
        &f.session.secret,
        "session.secret_file",
        &f.session.secret_file,
    );
    if let Some(s) = &secret {
        if s.expose().len() < 32 {
            let at = f
                .session
                .secret
                .as_ref()
                .or(f.session.secret_file.as_ref())
                .and_then(span);
            rep.error(
                "session.secret",
                at,
                "must be at least 32 bytes (e.g. `openssl rand -base64 48`)",
            );
        }
    } else if store == SessionStore::Redis {
        rep.error(
            "session.secret",
            f.session.store.as_ref().and_then(span),
            "store = \"redis\" needs secret or secret_file, shared by every replica",
        );
    }
    let cookie_same_site = match f
        .session
        .cookie_same_site
        .as_ref()
        .map(|s| (s.get_ref().to_ascii_lowercase(), s))
    {
        None => SameSitePolicy::Lax,
        Some((v, _)) if v == "lax" => SameSitePolicy::Lax,
        Some((v, _)) if v == "strict" => SameSitePolicy::Strict,
        Some((_, s)) => {
            rep.error("session.cookie_same_site", span(s), "expected \"lax\" or \"strict\" (\"none\" would send the cookie on cross-site requests)");
            SameSitePolicy::Lax
        }
    };
    let cache_max_entries = match &f.session.cache_max_entries {
        None => 1_000_000,
        Some(v) if *v.get_ref() >= 0 => *v.get_ref() as usize,
        Some(v) => {
            rep.error("session.cache_max_entries", span(v), "must not be negative");
            0
        }
    };
    let idle_timeout = duration(
        rep,
        "session.idle_timeout",
        &f.session.idle_timeout,
        Duration::from_secs(3600),
    );
    let absolute_timeout = duration(
        rep,
        "session.absolute_timeout",
        &f.session.absolute_timeout,
        Duration::from_secs(12 * 3600),
    );
    if idle_timeout.is_zero() || absolute_timeout.is_zero() {
        rep.error(
            "session.idle_timeout",
            f.session
                .idle_timeout
                .as_ref()
                .or(f.session.absolute_timeout.as_ref())
                .and_then(span),
            "session timeouts must be positive",
        );
    }
    let cache_max_age = duration(
        rep,
        "session.cache_max_age",
        &f.session.cache_max_age,
        Duration::from_secs(10),
    );
    // An active user's idle timer is refreshed when a cache entry expires and the session is
    // re-read from the store: the cache must expire well before the idle timeout.
    if cache_max_age * 2 > idle_timeout {
        rep.error(
            "session.cache_max_age",
            f.session
                .cache_max_age
                .as_ref()
                .or(f.session.idle_timeout.as_ref())
                .and_then(span),
            "cache_max_age must be at most half of idle_timeout",
        );
    }
    // Writing the idle TTL on every request would make every read a Redis write (and an AOF
    // line): restart it at most once per interval, well inside the idle timeout.
    let touch_interval = duration(
        rep,
        "session.touch_interval",
        &f.session.touch_interval,
        Duration::from_secs(60).min(idle_timeout / 4),
    );
    if touch_interval * 2 > idle_timeout {
        rep.error(
            "session.touch_interval",
            f.session.touch_interval.as_ref().and_then(span),
            "touch_interval must be at most half of idle_timeout",
        );
    }
    let session = SessionSettings {
        store,
        redis,
        redis_username: f
            .session
            .redis_username
            .as_ref()
            .map(|u| u.get_ref().clone()),
        redis_password,
        redis_ca,
        redis_prefix: f
            .session
            .redis_prefix
            .clone()
            .unwrap_or_else(|| "authgate:".into()),
        redis_timeout: duration(
            rep,
            "session.redis_timeout",
            &f.session.redis_timeout,
            Duration::from_millis(1000),
        ),
        redis_min_replicas_ack: f.session.redis_min_replicas_ack.as_ref().map(|_| {
            bounded(
                rep,
                "session.redis_min_replicas_ack",
                &f.session.redis_min_replicas_ack,
                0..=64,
                0,
            ) as u32
        }),
        secret,
        cookie_name,
        cookie_secure: f.session.cookie_secure.unwrap_or(true),
        cookie_same_site,
        cookie_domain: f
            .session
            .cookie_domain
            .as_ref()
            .map(|d| d.get_ref().clone()),
        idle_timeout,
        absolute_timeout,
        login_timeout: duration(
            rep,
            "session.login_timeout",
            &f.session.login_timeout,
            Duration::from_secs(600),
        ),
        cache_max_age,
        cache_max_entries,
        touch_interval,
        refresh_lead: duration(
            rep,
            "session.refresh_lead",
            &f.session.refresh_lead,
            Duration::from_secs(60),
        ),
        refresh_wait: duration(
            rep,
            "session.refresh_wait",
            &f.session.refresh_wait,
            Duration::from_secs(5),
        ),
        max_pending_logins: bounded(
            rep,
            "session.max_pending_logins",
            &f.session.max_pending_logins,
            1..=10_000_000,
            DEFAULT_MAX_PENDING_LOGINS,
        ),
        max_return_url_bytes: bounded(
            rep,
            "session.max_return_url_bytes",
            &f.session.max_return_url_bytes,
            64..=65_536,
            DEFAULT_MAX_RETURN_URL_BYTES,
        ),
    };

    let providers = super::provider::providers(rep, &f.providers, &gateway_prefix);

    // [assertion]
    let assertion = AssertionSettings {
        header: match &f.assertion.header {
            None => HeaderName::from_static("x-authgate-assertion"),
            Some(h) => header_name(rep, "assertion.header", h)
                .unwrap_or(HeaderName::from_static("x-authgate-assertion")),
        },
        key_file: f.assertion.key_file.clone(),
        issuer: f
            .assertion
            .issuer
            .clone()
            .unwrap_or_else(|| "authgate".into()),
        ttl: duration(
            rep,
            "assertion.ttl",
            &f.assertion.ttl,
            Duration::from_secs(60),
        ),
    };
    // The assertion header is ours: clients never send it.
    identity.insert(assertion.header.as_str());

    // [upstreams.*]
    let mut upstreams = BTreeMap::new();
    for (name, u) in &f.upstreams {
        upstreams.insert(name.clone(), upstream(rep, name, u));
    }

    // [[routes]]
    let mut routes = Vec::new();
    let mut seen_routes = HashSet::new();
    let mut seen_ids = HashSet::new();
    for (i, r) in f.routes.iter().enumerate() {
        let key = |k: &str| format!("routes[{i}].{k}");
        let host = match &r.host {
            None => Some(HostPattern::Any),
            Some(h) => {
                let p = HostPattern::parse(h.get_ref());
                if p.is_none() {
                    rep.error(
                        key("host"),
                        span(h),
                        format!("{:?} is not a host name or *.wildcard", h.get_ref()),
                    );
                }
                p
            }
        };
        let path = match &r.path {
            None => Some("/".to_string()),
            Some(p) => match crate::path::normalize(p.get_ref(), paths) {
                Ok(c) if c.as_str() == p.get_ref() => Some(c.as_str().to_string()),
                Ok(c) => {
                    rep.error(
                        key("path"),
                        span(p),
                        format!("path is not canonical; write {:?}", c.as_str()),
                    );
                    None
                }
                Err(e) => {
                    rep.error(
                        key("path"),
                        span(p),
                        format!("invalid path {:?}: {e}", p.get_ref()),
                    );
                    None
                }
            },
        };
        if let Some(p) = &path {
            if p.starts_with(gateway_prefix.trim_end_matches('/')) && gateway_prefix.len() > 1 {
                rep.error(
                    key("path"),
                    r.path.as_ref().and_then(span),
                    format!("{p} is inside the gateway's reserved prefix {gateway_prefix}"),
                );
            }
        }
        if !f.upstreams.contains_key(r.upstream.get_ref()) {
            rep.error(
                key("upstream"),
                span(&r.upstream),
                format!(
                    "unknown upstream {:?}; define it under [upstreams.{}]",
                    r.upstream.get_ref(),
                    r.upstream.get_ref()
                ),
            );
        }
        if r.bearer && r.audiences.is_empty() {
            rep.error(
                key("audiences"),
                span(&r.upstream),
                "bearer = true needs the audiences its access tokens are issued for",
            );
        }
        if r.bearer && r.public {
            rep.error(
                key("bearer"),
                span(&r.upstream),
                "a public route does not check tokens",
            );
        }
        if r.bearer && f.providers.is_empty() {
            rep.error(
                key("bearer"),
                span(&r.upstream),
                "bearer = true needs at least one [[providers]] to verify tokens",
            );
        }
        // An opaque token goes to one provider only: with several introspecting providers on
        // a bearer route, each needs a prefix that tells its tokens from the others'.
        let introspecting: Vec<&file::Provider> = f
            .providers
            .iter()
            .filter(|p| p.introspect_opaque_tokens.unwrap_or(false))
            .filter(|p| {
                r.providers.is_empty() || r.providers.iter().any(|n| n.get_ref() == p.id.get_ref())
            })
            .collect();
        if r.bearer && introspecting.len() > 1 {
            let prefixes: Vec<Option<&str>> = introspecting
                .iter()
                .map(|p| p.opaque_token_prefix.as_ref().map(|v| v.get_ref().as_str()))
                .collect();
            let distinct = prefixes.iter().enumerate().all(|(a, pa)| {
                prefixes.iter().enumerate().all(|(b, pb)| match (pa, pb) {
                    (Some(pa), Some(pb)) => a == b || !pb.starts_with(pa),
                    _ => false,
                })
            });
            if !distinct {
                let ids: Vec<&str> = introspecting
                    .iter()
                    .map(|p| p.id.get_ref().as_str())
                    .collect();
                rep.error(
                    key("providers"),
                    r.providers.first().map_or(span(&r.upstream), span),
                    format!(
                        "this bearer route would send opaque tokens to several introspecting providers ({}) and cannot tell whose a token is: name one of them in the route's providers = [...], or give each an opaque_token_prefix (distinct, none the start of another)",
                        ids.join(", ")
                    ),
                );
            }
        }
        for (j, p) in r.providers.iter().enumerate() {
            if !f.providers.iter().any(|fp| fp.id.get_ref() == p.get_ref()) {
                rep.error(
                    format!("routes[{i}].providers[{j}]"),
                    span(p),
                    format!("unknown provider {:?}", p.get_ref()),
                );
            }
        }
        let (Some(host), Some(path)) = (host, path) else {
            continue;
        };
        let match_key = if f.paths.case_insensitive {
            path.to_ascii_lowercase()
        } else {
            path.clone()
        };
        if !seen_routes.insert((host.clone(), match_key)) {
            let at = r
                .path
                .as_ref()
                .or(r.host.as_ref())
                .map_or(span(&r.upstream), span);
            rep.error(
                key("path"),
                at,
                "duplicate route: another route has the same host and path",
            );
        }
        let id = match &r.id {
            Some(id) => {
                let ok = !id.get_ref().is_empty()
                    && id
                        .get_ref()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !ok {
                    rep.error(
                        key("id"),
                        span(id),
                        "route ids use letters, digits, '-', '_' and '.'",
                    );
                }
                id.get_ref().clone()
            }
            None => format!("route{i}"),
        };
        if !seen_ids.insert(id.clone()) {
            rep.error(
                key("id"),
                r.id.as_ref().map_or(span(&r.upstream), span),
                format!("duplicate route id {id:?}"),
            );
        }
        routes.push(RouteSettings {
            id,
            host,
            path,
            upstream: r.upstream.get_ref().clone(),
            public: r.public,
            pass_access_token: r.pass_access_token,
            policy: r.policy.as_ref().and_then(|p| {
                let ids: Vec<&str> = f
                    .providers
                    .iter()
                    .map(|p| p.id.get_ref().as_str())
                    .collect();
                policy(rep, i, r.public, p, &ids)
            }),
            bearer: r.bearer,
            audiences: r.audiences.clone(),
            providers: r.providers.iter().map(|p| p.get_ref().clone()).collect(),
            identity_assertion: r.identity_assertion,
            csrf: r.csrf.unwrap_or(true),
            unauthenticated: match r
                .unauthenticated
                .as_ref()
                .map(|u| (u.get_ref().as_str(), u))
            {
                None | Some(("auto", _)) => Unauthenticated::Auto,
                Some(("redirect", _)) => Unauthenticated::Redirect,
                Some(("401", _)) => Unauthenticated::Status401,
                Some((other, u)) => {
                    rep.error(
                        key("unauthenticated"),
                        span(u),
                        format!("{other:?}: expected \"auto\", \"redirect\" or \"401\""),
                    );
                    Unauthenticated::Auto
                }
            },
        });
    }
    let forward_auth =
        super::front::forward_auth(rep, &f.forward_auth, !server.trusted_proxies.is_empty());
    let csrf = super::front::csrf(rep, &f.csrf);

    if !rep.errors.is_empty() {
        return None;
    }
    Some(Config {
        server,
        log,
        listeners,
        admin_address,
        admin_token,
        paths,
        case_insensitive_routes: f.paths.case_insensitive,
        identity,
        identity_headers,
        allowed_redirect_hosts,
        gateway_prefix,
        forward_auth,
        csrf,
        bearer_cache_entries: match &f.gateway.bearer_cache_entries {
            None => 100_000,
            Some(v) if *v.get_ref() >= 0 => *v.get_ref() as usize,
            Some(v) => {
                rep.error(
                    "gateway.bearer_cache_entries",
                    span(v),
                    "must not be negative",
                );
                0
            }
        },
        session,
        providers,
        assertion,
        upstreams,
        routes,
    })
}
