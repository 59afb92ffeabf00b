//! The validated config: every string parsed into the type the request path needs, every
//! cross-reference resolved. Plain data only: [`super::validate`] builds it (one function per
//! section), and the runtime objects (identity namespace, route table, stores) are built from
//! it outside `config`, which depends on no runtime module. Nothing after validation parses
//! config strings again.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;

use super::defaults;
pub(crate) use super::provider::{ClaimNames, LogoutMethod, ProviderSettings};
use super::secret::Secret;
use crate::limits::HeadLimits;
use crate::out_header::OutName;
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
    pub(crate) case_insensitive_routes: bool,
    /// Header names and prefixes stripped from every client request (`[headers]`); the
    /// runtime `identity::IdentityNamespace` adds the headers the gateway sets itself.
    pub(crate) identity_namespace: NamespaceSettings,
    pub(crate) identity_headers: IdentityHeaders,
    /// Hosts allowed as absolute post-login/logout redirect targets (`.suffix` for subdomains).
    pub(crate) allowed_redirect_hosts: Vec<String>,
    /// Bound of the verified-bearer-token cache; 0 disables it (every request verifies).
    pub(crate) bearer_cache_entries: usize,
    /// Reserved path prefix answered by the gateway itself, e.g. `/.authgate/`.
    pub(crate) gateway_prefix: String,
    /// `gateway.templates_dir`: (template name, source) of each page override, checked.
    pub(crate) templates: Vec<(String, String)>,
    /// `None`: `{prefix}auth` is not served.
    pub(crate) forward_auth: Option<super::front::ForwardAuthSettings>,
    pub(crate) csrf: super::front::CsrfSettings,
    pub(crate) session: SessionSettings,
    pub providers: Vec<ProviderSettings>,
    pub assertion: AssertionSettings,
    pub upstreams: BTreeMap<String, UpstreamSettings>,
    pub routes: Vec<RouteSettings>,
}

impl Config {
    /// The other claims (`Claims::extra`) the request path can read under this config: all a
    /// cached session needs to keep (see [`crate::claimmap::ClaimsRead`]). Every reader of
    /// those claims is here: policy and deny rules (`crate::policy`), and claim headers
    /// (`crate::claim_headers`: paths, `remote_user`, prefix mode).
    pub(crate) fn claims_read(&self) -> crate::claimmap::ClaimsRead {
        let mut names: Vec<&str> = Vec::new();
        for r in &self.routes {
            for p in r.policy.iter().chain(&r.deny) {
                names.extend(p.claims.iter().map(|c| c.claim.as_str()));
                names.extend(p.claim_patterns.iter().map(|c| c.claim.as_str()));
            }
            let Some(h) = &r.claim_headers else { continue };
            if h.prefix.is_some() {
                match &h.prefix_allow {
                    None => return crate::claimmap::ClaimsRead::All,
                    Some(allow) => names.extend(allow.iter().map(String::as_str)),
                }
            }
            let paths = h.claims.iter().map(|(_, p)| p.as_str());
            let remote = h.remote_user.iter().filter_map(|r| r.claim.as_deref());
            for path in paths.chain(remote) {
                // Read whole as one claim's name first, else its first segment is the claim.
                names.push(path);
                names.extend(path.split('.').next());
            }
        }
        crate::claimmap::ClaimsRead::named(names)
    }

    /// Some route sends a session's tokens upstream on every request (`pass_access_token`,
    /// `id_token`): only then do cached sessions hold their sealed tokens (half of a cached
    /// session's memory); everywhere else they are read from the store when needed.
    pub(crate) fn routes_send_tokens(&self) -> bool {
        self.routes.iter().any(|r| {
            r.pass_access_token
                || r.claim_headers
                    .as_ref()
                    .is_some_and(|c| c.id_token.is_some())
        })
    }
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub(crate) threads: usize,
    /// How long in-flight requests may run after SIGTERM/SIGINT before the runtime stops.
    pub(crate) grace_period: Duration,
    /// Extra time given to the runtime to wind down after the grace period.
    pub(crate) shutdown_timeout: Duration,
    pub(crate) pid_file: String,
    pub(crate) upgrade_socket: String,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) request_id_header: HeaderName,
    /// `max_request_header_bytes` and `max_request_headers`: bounds of a request head.
    pub(crate) head_limits: HeadLimits,
    /// Downstream connections held at once, all listeners together. At the limit the
    /// connections without a request in progress are closed oldest first to make room; a
    /// new connection is refused only when none can be.
    pub(crate) max_connections: usize,
    /// How long a connection may wait for the next request after a response (HTTP/1.1
    /// keep-alive; idle HTTP/2 connections too).
    pub(crate) keepalive_timeout: Duration,
    /// How long a request head may take to arrive whole: from the connection's start for
    /// the first request, from its first byte for every later one.
    pub(crate) request_header_timeout: Duration,
    /// After SIGTERM/SIGINT: how long the listeners keep accepting (with `/readyz` already
    /// 503 and `Connection: close` on every response) before they close and the grace
    /// period starts. The time a load balancer needs to stop sending new connections.
    pub(crate) shutdown_delay: Duration,
}

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
    pub(crate) access_log: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSettings {
    pub address: SocketAddr,
    pub(crate) h2c: bool,
    pub(crate) tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TlsFiles {
    pub(crate) cert_file: String,
    pub(crate) key_file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionStore {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SameSitePolicy {
    Lax,
    Strict,
    /// Sent on cross-site requests too (an app embedded in another site's frame, a cross-site
    /// API called with credentials); browsers require `Secure` with it.
    None,
}

/// How to reach Redis. URLs are secrets: they may carry passwords.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RedisTopology {
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
pub(crate) struct SessionSettings {
    pub(crate) store: SessionStore,
    /// Where the Redis store is (`None` with the memory store).
    pub(crate) redis: Option<RedisTopology>,
    /// Credentials for data nodes found through Sentinel or Cluster discovery.
    pub(crate) redis_username: Option<String>,
    pub(crate) redis_password: Option<Secret>,
    /// PEM CA bundle trusted for `rediss://` instead of the built-in web roots.
    pub(crate) redis_ca: Option<Vec<u8>>,
    pub(crate) redis_prefix: String,
    pub(crate) redis_timeout: Duration,
    /// Replicas that must acknowledge a session's end (`WAIT`) before it is reported done;
    /// `None`: the deployment's default (0 for one server or a Cluster; with Sentinel 1 while
    /// the sentinels know a replica that is up, 0 when they know none).
    pub(crate) redis_min_replicas_ack: Option<u32>,
    /// Key material for cookie MACs and token encryption; generated per process when absent
    /// (memory store only: replicas sharing Redis must share it).
    pub(crate) secret: Option<Secret>,
    pub(crate) cookie_name: String,
    pub(crate) cookie_secure: bool,
    pub(crate) cookie_same_site: SameSitePolicy,
    pub(crate) cookie_domain: Option<String>,
    /// `false`: a browser-session cookie (no `Max-Age`), gone when the browser closes; the
    /// session still ends at `absolute_timeout` in the store.
    pub(crate) cookie_persistent: bool,
    /// The cookie's `Path`; covers the gateway prefix and every protected route.
    pub(crate) cookie_path: String,
    pub(crate) idle_timeout: Duration,
    pub(crate) absolute_timeout: Duration,
    pub(crate) login_timeout: Duration,
    pub(crate) cache_max_age: Duration,
    pub(crate) cache_max_entries: usize,
    /// Restart a session's idle TTL in the store at most this often.
    pub(crate) touch_interval: Duration,
    /// Refresh the access token this long before it expires.
    pub(crate) refresh_lead: Duration,
    /// How long a request whose access token has expired waits for another request's (or
    /// replica's) refresh before it answers 503.
    pub(crate) refresh_wait: Duration,
    /// Logins started and not yet finished, kept at most: the oldest is dropped past this.
    pub(crate) max_pending_logins: usize,
    /// A return URL longer than this is replaced by `/` (it is stored with the login).
    pub(crate) max_return_url_bytes: usize,
}

/// The signed identity assertion (`crate::assertion`).
#[derive(Debug, Clone, PartialEq)]
pub struct AssertionSettings {
    pub(crate) header: HeaderName,
    /// PKCS#8 PEM P-256 key; generated (and written here) when missing.
    pub(crate) key_file: Option<String>,
    pub(crate) issuer: String,
    pub(crate) ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub(crate) name: String,
    pub(crate) servers: Vec<ServerAddr>,
    pub(crate) tls: bool,
    /// DER certificates of a custom CA; `None` uses the system roots.
    pub(crate) ca_der: Option<Vec<Vec<u8>>>,
    pub(crate) verify_tls: bool,
    pub(crate) server_name: Option<String>,
    pub(crate) http2: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_fails: u32,
    pub(crate) fail_timeout: Duration,
    pub(crate) pass_host_header: bool,
    /// How often server names are looked up again (IP literals never are).
    pub(crate) resolve_interval: Duration,
    /// Active health checks; `None`: passive health only.
    pub(crate) health: Option<HealthCheck>,
}

/// `health_path`, `health_interval`, `health_timeout` of an upstream: every server is asked
/// `GET path` this often; a 2xx or 3xx in time marks it up, anything else down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthCheck {
    pub(crate) path: String,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

/// One upstream server as written: an IP literal, or a name resolved at run time (every
/// address it has becomes a server of the pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerAddr {
    /// `Some` for an IP literal: never resolved.
    pub(crate) ip: Option<std::net::IpAddr>,
    pub(crate) port: u16,
    /// Host as written, for SNI and (unless the Host header is passed) the `Host` header.
    pub(crate) host: String,
    pub(crate) authority: String,
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub(crate) id: String,
    pub(crate) host: HostPattern,
    pub(crate) path: String,
    pub(crate) upstream: String,
    pub(crate) public: bool,
    /// Methods anyone may use on this otherwise protected route (CORS preflight, read-only
    /// pages): those requests pass anonymously, the others must sign in.
    pub(crate) public_methods: Vec<Method>,
    /// `auth = "optional"`: a caller with a session (or bearer token) passes with identity
    /// headers, one without passes anonymously; never a redirect or a 401 for a missing one.
    pub(crate) optional: bool,
    pub(crate) pass_access_token: bool,
    /// `None`: every authenticated caller. On public and optional routes only `source_ips`
    /// (validation), evaluated for every request, anonymous or not.
    pub(crate) policy: Option<Policy>,
    /// `[[routes.deny]]`: evaluated before the policy, in order; a rule that matches is 403.
    pub(crate) deny: Vec<Policy>,
    /// Accept `Authorization: Bearer <JWT>` with one of `audiences`.
    pub(crate) bearer: bool,
    pub(crate) audiences: Vec<String>,
    /// Provider ids whose sessions and tokens this route accepts; empty: all.
    pub(crate) providers: Vec<String>,
    /// Send the signed identity assertion to this route's upstream.
    pub(crate) identity_assertion: bool,
    /// Refuse cross-site unsafe requests authenticated by the session cookie.
    pub(crate) csrf: bool,
    pub(crate) unauthenticated: Unauthenticated,
    /// Claims and tokens as headers (`[headers]` merged with `[routes.headers]`); `None`
    /// when the route sends none of them, so the request path does nothing extra.
    pub(crate) claim_headers: Option<std::sync::Arc<ClaimHeaders>>,
    /// `strip_prefix`, `rewrite`, `request_headers`, `response_headers`; `None` when the
    /// route sets none of them (nothing is computed per request then).
    pub(crate) shaping: Option<RouteShaping>,
}

/// Where the ID token goes (`id_token`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum IdTokenTo {
    /// `Authorization: Bearer <id token>` (oauth2-proxy `--pass-authorization-header`).
    Authorization,
    Header(OutName),
}

/// `remote_user`: one claim, optionally transformed by a regex, as one header.
#[derive(Debug, Clone)]
pub(crate) struct RemoteUser {
    /// `None`: the provider's user claim (the user header's value).
    pub(crate) claim: Option<String>,
    /// Applied to the claim's value: the first match, expanded with `replace`. No match:
    /// the request is refused (403), as mod_auth_openidc refuses.
    pub(crate) pattern: Option<regex::Regex>,
    /// `$1` when the pattern has a group, else `$0`.
    pub(crate) replace: String,
    pub(crate) header: OutName,
}

/// The claim headers of one route: `[headers]` merged with its `[routes.headers]`, defaults
/// applied. Built only when at least one header would be sent.
#[derive(Debug, Clone)]
pub(crate) struct ClaimHeaders {
    /// Header = claim path, in config order.
    pub(crate) claims: Vec<(OutName, String)>,
    /// Joins array claims.
    pub(crate) separator: String,
    /// Prefix mode: every claim as `<prefix><claim name>`.
    pub(crate) prefix: Option<String>,
    /// Prefix mode sends only these claims (`None`: every claim).
    pub(crate) prefix_allow: Option<Vec<String>>,
    /// Total bytes (names and values) of the claim headers (map and prefix) per request.
    pub(crate) max_claim_bytes: usize,
    pub(crate) id_token: Option<IdTokenTo>,
    pub(crate) remote_user: Option<RemoteUser>,
    /// `Authorization: Basic base64(user:password)`; the password (may be empty).
    pub(crate) basic_auth: Option<Secret>,
    /// oauth2-proxy's `X-Auth-Request-*` copies of the identity headers.
    pub(crate) x_auth_request: bool,
}

impl ClaimHeaders {
    /// The gateway writes `Authorization` on this route: a client's copy never passes.
    pub(crate) fn owns_authorization(&self) -> bool {
        self.basic_auth.is_some() || self.id_token == Some(IdTokenTo::Authorization)
    }

    /// Every exact header name this route may set (the prefix aside), for the namespace.
    pub(crate) fn names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.claims.iter().map(|(n, _)| n.name().as_str()).collect();
        if let Some(IdTokenTo::Header(h)) = &self.id_token {
            out.push(h.name().as_str());
        }
        if let Some(r) = &self.remote_user {
            out.push(r.header.name().as_str());
        }
        if self.x_auth_request {
            out.extend(defaults::X_AUTH_REQUEST_HEADERS);
        }
        out
    }
}

/// How a route shapes what its upstream receives and what the client gets back. The route
/// decision and the policy never see any of it: they use the canonical path and the headers
/// as the client sent them (`crate::proxy::shaping` applies it afterwards).
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteShaping {
    /// Canonical, no trailing `/`, not `/`; covers the route's path at a segment boundary.
    pub(crate) strip_prefix: Option<String>,
    /// Compare `strip_prefix` without regard to ASCII case (`paths.case_insensitive`).
    pub(crate) strip_case_insensitive: bool,
    pub(crate) rewrite: Option<PathRewrite>,
    /// Header edits on the upstream request, before the gateway adds its own headers.
    pub(crate) request: HeaderEdits,
    /// Header edits on the upstream's response, before the gateway adds its own headers.
    pub(crate) response: HeaderEdits,
}

/// `rewrite = { pattern, replace }`: the first match in the (stripped) canonical path is
/// replaced, `$1`/`${name}` naming captures (`regex::Regex::replace`).
#[derive(Debug, Clone)]
pub(crate) struct PathRewrite {
    pub(crate) pattern: regex::Regex,
    pub(crate) replace: String,
}

/// `{ set = { name = value }, remove = [name] }`, checked: valid names and values, none the
/// gateway owns, no name both set and removed.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeaderEdits {
    pub(crate) set: Vec<(HeaderName, http::HeaderValue)>,
    pub(crate) remove: Vec<HeaderName>,
}

/// What a caller without a session gets on a protected route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Unauthenticated {
    /// A redirect to sign in for top-level browser navigations, 401 with JSON otherwise.
    #[default]
    Auto,
    /// Always the redirect (an app whose every request is a page).
    Redirect,
    /// Always 401 (an API).
    Status401,
}

/// `[headers]`: what is stripped from clients besides the headers the gateway sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamespaceSettings {
    /// Exact names (as configured, valid header names).
    pub(crate) names: Vec<String>,
    /// Name prefixes, lower case, at least [`defaults::MIN_IDENTITY_PREFIX_LEN`] bytes.
    pub(crate) prefixes: Vec<String>,
}

impl Default for NamespaceSettings {
    fn default() -> Self {
        Self {
            names: defaults::IDENTITY_HEADERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            prefixes: defaults::IDENTITY_PREFIXES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// The headers the gateway sets for an authenticated caller (oauth2-proxy compatible names by
/// default). `crate::identity` builds their values; this is the configured data only.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub(crate) user: OutName,
    pub(crate) email: OutName,
    pub(crate) groups: OutName,
    pub(crate) preferred_username: OutName,
    pub(crate) access_token: OutName,
    /// Names the provider that vouched (its configured id); off unless configured.
    pub(crate) provider: Option<OutName>,
    /// Only groups matching this are forwarded (users in hundreds of groups).
    pub(crate) groups_filter: Option<regex::Regex>,
    /// Upper bound of the groups header; whole groups are dropped past it, with a log line.
    pub(crate) max_groups_bytes: usize,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            user: OutName::from_static(defaults::USER_HEADER),
            email: OutName::from_static(defaults::EMAIL_HEADER),
            groups: OutName::from_static(defaults::GROUPS_HEADER),
            preferred_username: OutName::from_static(defaults::PREFERRED_USERNAME_HEADER),
            access_token: OutName::from_static(defaults::ACCESS_TOKEN_HEADER),
            provider: None,
            groups_filter: None,
            max_groups_bytes: defaults::MAX_GROUPS_BYTES,
        }
    }
}

/// A claim rule: the claim equals the value, or (array claims) contains it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRule {
    pub(crate) claim: String,
    pub(crate) value: String,
}

/// A regex compiled at load, matched against a whole value (anchored by validation).
/// Compared by its source, so configs stay comparable.
#[derive(Debug, Clone)]
pub struct Pattern(pub(crate) regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// A `claim_patterns` entry: the claim (or, array claims, one of its elements) matches one
/// of the patterns.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimPattern {
    pub(crate) claim: String,
    pub(crate) patterns: Vec<Pattern>,
    /// The patterns as written (for `check`'s summary).
    pub(crate) written: Vec<String>,
}

/// `[routes.policy]` (and each `[[routes.deny]]`) as data: who may pass a route.
/// `crate::policy` evaluates it (see there for the semantics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Provider ids: only users these vouched for.
    pub providers: HashSet<String>,
    pub users: HashSet<String>,
    /// Lower case.
    pub emails: HashSet<String>,
    /// Lower case, without `@`.
    pub email_domains: HashSet<String>,
    pub groups: HashSet<String>,
    pub methods: Vec<Method>,
    /// Every rule must hold.
    pub claims: Vec<ClaimRule>,
    /// Whole-value, case-insensitive regexes on the verified email; any of them.
    pub email_patterns: Vec<Pattern>,
    /// Every entry must hold.
    pub claim_patterns: Vec<ClaimPattern>,
    /// The client address (see `crate::forwarded::ClientAddr`) is in one of these networks
    /// (IPv4-mapped IPv6 networks stored as IPv4).
    pub source_ips: Vec<IpNet>,
}

impl Policy {
    /// A policy without a rule (ambiguous: refused by validation).
    pub(crate) fn is_empty(&self) -> bool {
        self.providers.is_empty()
            && self.users.is_empty()
            && self.emails.is_empty()
            && self.email_domains.is_empty()
            && self.groups.is_empty()
            && self.methods.is_empty()
            && self.claims.is_empty()
            && self.email_patterns.is_empty()
            && self.claim_patterns.is_empty()
            && self.source_ips.is_empty()
    }

    /// Whether only `source_ips` is set: a rule that needs no identity, so it can hold on
    /// public and optional routes, for anonymous callers too.
    pub(crate) fn network_only(&self) -> bool {
        !self.source_ips.is_empty()
            && self.providers.is_empty()
            && self.users.is_empty()
            && self.emails.is_empty()
            && self.email_domains.is_empty()
            && self.groups.is_empty()
            && self.methods.is_empty()
            && self.claims.is_empty()
            && self.email_patterns.is_empty()
            && self.claim_patterns.is_empty()
    }
}
