//! Every default and bound of `config.toml`, once, named and documented.
//!
//! Validation reads these and nothing else when a key is unset or out of range; the root
//! `config.toml` documents the same values, and a test (below) fails when the two drift
//! apart. Constants are grouped by section, in the order of `config.toml`.

use std::ops::RangeInclusive;
use std::time::Duration;

/// The longest duration any key takes. Longer is a typo, and deadlines, unix times and
/// multiples computed from it (`Instant + d`, `now + d`, `cache_max_age * 2`) could overflow.
/// `"100y"` exactly (humantime's years are 365.25 days).
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

// ---------------------------------------------------------------------------------------
// [server]

/// `server.threads` when unset: the machine's available parallelism (this value when even
/// that is unknown, and after an out-of-range value was reported).
pub(crate) const THREADS_FALLBACK: usize = 1;
pub(crate) const THREADS: RangeInclusive<i64> = 1..=1024;
/// How long in-flight requests may run after SIGTERM/SIGINT.
pub(crate) const GRACE_PERIOD: Duration = Duration::from_secs(10);
/// Extra time for the runtime to wind down after the grace period.
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const PID_FILE: &str = "/tmp/authgate.pid";
pub(crate) const UPGRADE_SOCKET: &str = "/tmp/authgate_upgrade.sock";
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";
/// Bounds of the request head: defined beside the check in `crate::limits`.
pub(crate) use crate::limits::{
    DEFAULT_MAX_BYTES as MAX_REQUEST_HEADER_BYTES, DEFAULT_MAX_HEADERS as MAX_REQUEST_HEADERS,
    MAX_MAX_BYTES, MAX_MAX_HEADERS, MIN_MAX_BYTES, MIN_MAX_HEADERS,
};
/// Downstream connections held at once, all listeners together.
pub(crate) const MAX_CONNECTIONS: usize = 10_000;
pub(crate) const MAX_CONNECTIONS_RANGE: RangeInclusive<usize> = 1..=1_000_000;
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const KEEPALIVE_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);
pub(crate) const REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const REQUEST_HEADER_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(300);
/// Off by default: without a load balancer to drain, closing at once is right.
pub(crate) const SHUTDOWN_DELAY: Duration = Duration::ZERO;
pub(crate) const SHUTDOWN_DELAY_RANGE: RangeInclusive<Duration> =
    Duration::ZERO..=Duration::from_secs(300);

// ---------------------------------------------------------------------------------------
// [log]

/// `tracing_subscriber::EnvFilter` directive; `RUST_LOG` overrides it.
pub(crate) const LOG_LEVEL: &str = "info";
pub(crate) const ACCESS_LOG: bool = true;

// ---------------------------------------------------------------------------------------
// [[listeners]] and [admin]

/// The one listener of a config without `[[listeners]]`.
pub(crate) const LISTEN: &str = "127.0.0.1:8080";
/// Loopback: `/metrics` and `/sessions` are not for the world.
pub(crate) const ADMIN_ADDRESS: &str = "127.0.0.1:9090";
/// Shortest accepted `admin.token`.
pub(crate) const ADMIN_TOKEN_MIN_BYTES: usize = 16;

// ---------------------------------------------------------------------------------------
// [paths]: every switch is off (`false`) by default, the strict reading.

// ---------------------------------------------------------------------------------------
// [headers]

/// Names stripped from every client request: oauth2-proxy's plus common `REMOTE_USER` forms.
pub(crate) const IDENTITY_HEADERS: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "remote-user",
    "x-remote-user",
    "x-user",
    "x-email",
];
pub(crate) const IDENTITY_PREFIXES: &[&str] = &["x-auth-request-", "x-authgate-"];
/// Our own namespace: stripped whatever `identity_prefixes` says.
pub(crate) const OWN_PREFIX: &str = "x-authgate-";
/// A shorter prefix would strip ordinary headers.
pub(crate) const MIN_IDENTITY_PREFIX_LEN: usize = 3;
pub(crate) const USER_HEADER: &str = "x-forwarded-user";
pub(crate) const EMAIL_HEADER: &str = "x-forwarded-email";
pub(crate) const GROUPS_HEADER: &str = "x-forwarded-groups";
pub(crate) const PREFERRED_USERNAME_HEADER: &str = "x-forwarded-preferred-username";
pub(crate) const ACCESS_TOKEN_HEADER: &str = "x-forwarded-access-token";
/// Bound of the groups header: well inside common 8 KiB header limits.
pub(crate) const MAX_GROUPS_BYTES: usize = 4096;
pub(crate) const MAX_GROUPS_BYTES_RANGE: RangeInclusive<i64> = 64..=65536;
/// Joins the values of array claims sent as headers.
pub(crate) const CLAIM_SEPARATOR: &str = ",";
/// Bound of all claim headers (names and values) of one request: well inside common 16 KiB
/// request head limits, beside the identity headers and cookies.
pub(crate) const MAX_CLAIM_BYTES: usize = 8192;
pub(crate) const MAX_CLAIM_BYTES_RANGE: RangeInclusive<usize> = 64..=65536;
/// `x_auth_request`: oauth2-proxy's names are not sent unless asked for.
pub(crate) const X_AUTH_REQUEST: bool = false;
/// `remote_user.header` when not set.
pub(crate) const REMOTE_USER_HEADER: &str = "Remote-User";
/// oauth2-proxy's `--set-xauthrequest` names: user, email, groups, preferred username, access
/// token (the last only with `pass_access_token`).
pub(crate) const X_AUTH_REQUEST_HEADERS: [&str; 5] = [
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "x-auth-request-access-token",
];
/// Headers no claim may ever become (canonical spelling): framing, hop-by-hop, the client's
/// address and forwarding chain, cookies, tracing. Names starting with `proxy-` too.
pub(crate) const PROTECTED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "cookie",
    "set-cookie",
    "authorization",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "traceparent",
    "tracestate",
    "via",
];

// ---------------------------------------------------------------------------------------
// [gateway]

/// Reserved path prefix answered by the gateway itself.
pub(crate) const GATEWAY_PREFIX: &str = "/.authgate/";
/// Verified bearer tokens kept; 0 verifies every request.
pub(crate) const BEARER_CACHE_ENTRIES: usize = 100_000;

// ---------------------------------------------------------------------------------------
// [csrf]

/// On by default: an authentication gateway in front of apps with no CSRF defence of their own
/// is where forged cross-site POSTs do harm.
pub(crate) const CSRF_ENABLED: bool = true;
pub(crate) const CSRF_ALLOW_SAME_SITE: bool = false;

// ---------------------------------------------------------------------------------------
// [forward_auth]

/// oauth2-proxy's `X-Auth-Request-*` answer headers are off unless asked for.
pub(crate) const FORWARD_AUTH_REQUEST_HEADERS: bool = false;

// ---------------------------------------------------------------------------------------
// [session]

pub(crate) const REDIS_PREFIX: &str = "authgate:";
/// Deadline of each Redis call.
pub(crate) const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);
pub(crate) const REDIS_MIN_REPLICAS_ACK_RANGE: RangeInclusive<usize> = 0..=64;
pub(crate) const COOKIE_NAME: &str = "authgate_session";
pub(crate) const COOKIE_SECURE: bool = true;
/// A cookie that outlives the browser (`Max-Age` = the absolute timeout); `false` makes it a
/// browser-session cookie, as mod_auth_openidc's default.
pub(crate) const COOKIE_PERSISTENT: bool = true;
pub(crate) const COOKIE_PATH: &str = "/";
/// Shortest accepted `session.secret`.
pub(crate) const SESSION_SECRET_MIN_BYTES: usize = 32;
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub(crate) const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// How long a started login may take (the pending login's TTL).
pub(crate) const LOGIN_TIMEOUT: Duration = Duration::from_secs(600);
pub(crate) const CACHE_MAX_AGE: Duration = Duration::from_secs(10);
pub(crate) const CACHE_MAX_ENTRIES: usize = 1_000_000;
/// `session.touch_interval` is this or a quarter of the idle timeout, whichever is less.
pub(crate) const TOUCH_INTERVAL_MAX: Duration = Duration::from_secs(60);
pub(crate) const REFRESH_LEAD: Duration = Duration::from_secs(60);
pub(crate) const REFRESH_WAIT: Duration = Duration::from_secs(5);
/// Enough for every browser tab of a busy site's sign-in wave; ~1 KB each in the store.
pub(crate) const MAX_PENDING_LOGINS: usize = 10_000;
pub(crate) const MAX_PENDING_LOGINS_RANGE: RangeInclusive<usize> = 1..=10_000_000;
pub(crate) const MAX_RETURN_URL_BYTES: usize = 2048;
pub(crate) const MAX_RETURN_URL_BYTES_RANGE: RangeInclusive<usize> = 64..=65_536;

/// `session.touch_interval` when unset.
pub(crate) fn touch_interval(idle_timeout: Duration) -> Duration {
    TOUCH_INTERVAL_MAX.min(idle_timeout / 4)
}

// ---------------------------------------------------------------------------------------
// [[providers]]

pub(crate) const SCOPES: &[&str] = &["openid", "email", "profile"];
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(60);
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(600);
pub(crate) const JWKS_REFETCH_COOLDOWN: Duration = Duration::from_secs(30);
/// Failed background refreshes in a row before a provider is unavailable (not ready, sign-in
/// 503): one failure is a blip, three (about 3 s apart at most, see
/// `oidc::provider::RETRY_MAX`) an outage.
pub(crate) const MAX_REFRESH_FAILURES: u32 = 3;
pub(crate) const MAX_MAX_REFRESH_FAILURES: i64 = 100;
pub(crate) const INTROSPECTION_CACHE_TTL: Duration = Duration::from_secs(30);
/// Short: a token that becomes active later (rare) waits at most this long, while a flood
/// of one bogus value costs one call per interval.
pub(crate) const INTROSPECTION_INACTIVE_TTL: Duration = Duration::from_secs(10);
pub(crate) const MAX_INTROSPECTION_INACTIVE_TTL: Duration = Duration::from_secs(300);
/// Only an `email_verified: true` claim makes an email identity.
pub(crate) const TRUST_EMAIL: bool = false;
pub(crate) const REQUIRE_AT_JWT: bool = true;
/// RFC 7662 makes `aud` optional; an answer without one cannot show the token is for this API.
pub(crate) const INTROSPECTION_REQUIRES_AUDIENCE: bool = true;
pub(crate) const SYSTEM_TRUST_STORE: bool = false;
pub(crate) const INTROSPECT_OPAQUE_TOKENS: bool = false;
/// Claims that fill the identity (`user_claim`, `email_claim`, ...): the OIDC standard ones.
pub(crate) const USER_CLAIM: &str = "sub";
pub(crate) const EMAIL_CLAIM: &str = "email";
pub(crate) const NAME_CLAIM: &str = "name";
pub(crate) const GROUPS_CLAIM: &str = "groups";
pub(crate) const PREFERRED_USERNAME_CLAIM: &str = "preferred_username";
/// ID token and bearer JWT algorithms a provider may be limited to: asymmetric only (an
/// HMAC "verified" with a public key as secret is the classic key-confusion forgery). The
/// same list as `jwt::ASYMMETRIC` (a test compares them).
pub(crate) const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

// ---------------------------------------------------------------------------------------
// [assertion]

pub(crate) const ASSERTION_HEADER: &str = "x-authgate-assertion";
pub(crate) const ASSERTION_ISSUER: &str = "authgate";
pub(crate) const ASSERTION_TTL: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// [upstreams.*]

pub(crate) const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const UPSTREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Consecutive failures that mark a server down; 0 never does.
pub(crate) const UPSTREAM_MAX_FAILS: u32 = 1;
pub(crate) const UPSTREAM_MAX_FAILS_RANGE: RangeInclusive<i64> = 0..=1000;
pub(crate) const UPSTREAM_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const UPSTREAM_PASS_HOST_HEADER: bool = true;
pub(crate) const UPSTREAM_RESOLVE_INTERVAL: Duration = Duration::from_secs(10);
/// Below a second DNS would be asked in a loop; above a day a moved Service is never seen.
pub(crate) const UPSTREAM_RESOLVE_INTERVAL_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(86_400);
pub(crate) const UPSTREAM_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
pub(crate) const UPSTREAM_HEALTH_INTERVAL_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);
pub(crate) const UPSTREAM_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub(crate) const UPSTREAM_HEALTH_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(60);
pub(crate) const UPSTREAM_TLS_VERIFY: bool = true;
pub(crate) const UPSTREAM_HTTP2: bool = false;

// ---------------------------------------------------------------------------------------
// [[routes]]

pub(crate) const ROUTE_PATH: &str = "/";
pub(crate) const ROUTE_CSRF: bool = true;
/// `auth`: the caller must sign in.
pub(crate) const ROUTE_AUTH: &str = "required";

/// A route's id when unset: `route<N>`, N its index.
pub(crate) fn route_id(index: usize) -> String {
    format!("route{index}")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::model::{LogFormat, SameSitePolicy, SessionStore, Unauthenticated};
    use crate::config::{parse, Config};

    fn config(src: &str) -> Config {
        parse(Path::new("t.toml"), src).unwrap_or_else(|e| panic!("{e}\n---\n{src}"))
    }

    const ROUTE: &str = "[upstreams.app]\nservers = [\"http://127.0.0.1:3000\"]\n\n[[routes]]\nupstream = \"app\"\n\n[[providers]]\nid = \"p\"\nissuer = \"https://idp.example\"\nclient_id = \"c\"\n";

    #[test]
    fn an_empty_config_yields_the_defaults() {
        let c = config("");
        let s = &c.server;
        assert_eq!(
            s.threads,
            std::thread::available_parallelism().map_or(THREADS_FALLBACK, |n| n.get())
        );
        assert_eq!(s.grace_period, GRACE_PERIOD);
        assert_eq!(s.shutdown_timeout, SHUTDOWN_TIMEOUT);
        assert_eq!(s.pid_file, PID_FILE);
        assert_eq!(s.upgrade_socket, UPGRADE_SOCKET);
        assert!(s.trusted_proxies.is_empty());
        assert_eq!(s.request_id_header.as_str(), REQUEST_ID_HEADER);
        assert_eq!(s.head_limits.max_bytes, MAX_REQUEST_HEADER_BYTES);
        assert_eq!(s.head_limits.max_headers, MAX_REQUEST_HEADERS);
        assert_eq!(s.max_connections, MAX_CONNECTIONS);
        assert_eq!(s.keepalive_timeout, KEEPALIVE_TIMEOUT);
        assert_eq!(s.request_header_timeout, REQUEST_HEADER_TIMEOUT);
        assert_eq!(s.shutdown_delay, SHUTDOWN_DELAY);

        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.log.level, LOG_LEVEL);
        assert_eq!(c.log.access_log, ACCESS_LOG);

        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].address.to_string(), LISTEN);
        assert!(!c.listeners[0].h2c && c.listeners[0].tls.is_none());
        assert_eq!(c.admin_address.to_string(), ADMIN_ADDRESS);
        assert!(c.admin_token.is_none());

        assert_eq!(c.paths, crate::path::PathOptions::default());
        assert!(!c.case_insensitive_routes);

        assert_eq!(c.identity_namespace.names, IDENTITY_HEADERS);
        assert_eq!(c.identity_namespace.prefixes, IDENTITY_PREFIXES);
        let h = &c.identity_headers;
        assert_eq!(h.user.as_str(), USER_HEADER);
        assert_eq!(h.email.as_str(), EMAIL_HEADER);
        assert_eq!(h.groups.as_str(), GROUPS_HEADER);
        assert_eq!(h.preferred_username.as_str(), PREFERRED_USERNAME_HEADER);
        assert_eq!(h.access_token.as_str(), ACCESS_TOKEN_HEADER);
        assert!(h.provider.is_none() && h.groups_filter.is_none());
        assert_eq!(h.max_groups_bytes, MAX_GROUPS_BYTES);

        assert_eq!(c.gateway_prefix, GATEWAY_PREFIX);
        assert_eq!(c.bearer_cache_entries, BEARER_CACHE_ENTRIES);
        assert!(c.allowed_redirect_hosts.is_empty());
        assert!(c.forward_auth.is_none());
        assert_eq!(c.csrf.enabled, CSRF_ENABLED);
        assert_eq!(c.csrf.allow_same_site, CSRF_ALLOW_SAME_SITE);
        assert!(c.csrf.allowed_origins.is_empty());

        let s = &c.session;
        assert_eq!(s.store, SessionStore::Memory);
        assert!(s.redis.is_none() && s.redis_username.is_none() && s.redis_password.is_none());
        assert!(s.redis_ca.is_none() && s.redis_min_replicas_ack.is_none());
        assert_eq!(s.redis_prefix, REDIS_PREFIX);
        assert_eq!(s.redis_timeout, REDIS_TIMEOUT);
        assert!(s.secret.is_none());
        assert_eq!(s.cookie_name, COOKIE_NAME);
        assert_eq!(s.cookie_secure, COOKIE_SECURE);
        assert_eq!(s.cookie_same_site, SameSitePolicy::Lax);
        assert!(s.cookie_domain.is_none());
        assert_eq!(s.cookie_persistent, COOKIE_PERSISTENT);
        assert_eq!(s.cookie_path, COOKIE_PATH);
        assert_eq!(s.idle_timeout, IDLE_TIMEOUT);
        assert_eq!(s.absolute_timeout, ABSOLUTE_TIMEOUT);
        assert_eq!(s.login_timeout, LOGIN_TIMEOUT);
        assert_eq!(s.cache_max_age, CACHE_MAX_AGE);
        assert_eq!(s.cache_max_entries, CACHE_MAX_ENTRIES);
        assert_eq!(s.touch_interval, touch_interval(IDLE_TIMEOUT));
        assert_eq!(s.refresh_lead, REFRESH_LEAD);
        assert_eq!(s.refresh_wait, REFRESH_WAIT);
        assert_eq!(s.max_pending_logins, MAX_PENDING_LOGINS);
        assert_eq!(s.max_return_url_bytes, MAX_RETURN_URL_BYTES);

        assert!(c.providers.is_empty());
        assert_eq!(c.assertion.header.as_str(), ASSERTION_HEADER);
        assert_eq!(c.assertion.issuer, ASSERTION_ISSUER);
        assert_eq!(c.assertion.ttl, ASSERTION_TTL);
        assert!(c.assertion.key_file.is_none());
        assert!(c.upstreams.is_empty() && c.routes.is_empty());
    }

    #[test]
    fn minimal_upstream_route_and_provider_take_the_defaults() {
        let c = config(ROUTE);
        let u = &c.upstreams["app"];
        assert_eq!(u.connect_timeout, UPSTREAM_CONNECT_TIMEOUT);
        assert_eq!(u.read_timeout, UPSTREAM_READ_TIMEOUT);
        assert_eq!(u.write_timeout, UPSTREAM_WRITE_TIMEOUT);
        assert_eq!(u.idle_timeout, UPSTREAM_IDLE_TIMEOUT);
        assert_eq!(u.max_fails, UPSTREAM_MAX_FAILS);
        assert_eq!(u.fail_timeout, UPSTREAM_FAIL_TIMEOUT);
        assert_eq!(u.pass_host_header, UPSTREAM_PASS_HOST_HEADER);
        assert_eq!(u.resolve_interval, UPSTREAM_RESOLVE_INTERVAL);
        assert!(
            u.health.is_none(),
            "active health checks are off by default"
        );
        assert_eq!(u.verify_tls, UPSTREAM_TLS_VERIFY);
        assert_eq!(u.http2, UPSTREAM_HTTP2);
        assert!(u.ca_der.is_none() && u.server_name.is_none() && !u.tls);

        let r = &c.routes[0];
        assert_eq!(r.id, route_id(0));
        assert_eq!(r.path, ROUTE_PATH);
        assert_eq!(r.host, crate::routing::HostPattern::Any);
        assert_eq!(r.csrf, ROUTE_CSRF);
        assert_eq!(r.unauthenticated, Unauthenticated::Auto);
        assert!(!r.public && !r.bearer && !r.pass_access_token && !r.identity_assertion);
        assert!(r.policy.is_none() && r.providers.is_empty() && r.audiences.is_empty());
        assert!(r.shaping.is_none(), "no request shaping by default");

        let p = &c.providers[0];
        assert_eq!(p.scopes, SCOPES);
        assert_eq!(p.clock_skew, CLOCK_SKEW);
        assert_eq!(p.refresh_interval, REFRESH_INTERVAL);
        assert_eq!(p.max_refresh_failures, MAX_REFRESH_FAILURES);
        assert_eq!(p.jwks_refetch_cooldown, JWKS_REFETCH_COOLDOWN);
        assert_eq!(p.introspection_cache_ttl, INTROSPECTION_CACHE_TTL);
        assert_eq!(p.introspection_inactive_ttl, INTROSPECTION_INACTIVE_TTL);
        assert_eq!(p.claims.trust_email, TRUST_EMAIL);
        assert_eq!(p.require_at_jwt, REQUIRE_AT_JWT);
        assert_eq!(
            p.introspection_requires_audience,
            INTROSPECTION_REQUIRES_AUDIENCE
        );
        assert_eq!(p.introspect_opaque_tokens, INTROSPECT_OPAQUE_TOKENS);
        assert_eq!(p.tls.system_trust_store, SYSTEM_TRUST_STORE);
        assert_eq!(p.claims.user, USER_CLAIM);
        assert_eq!(p.claims.email, EMAIL_CLAIM);
        assert_eq!(p.claims.name, NAME_CLAIM);
        assert_eq!(p.claims.groups, GROUPS_CLAIM);
        assert_eq!(p.claims.preferred_username, PREFERRED_USERNAME_CLAIM);
        assert_eq!(p.logout_method, crate::config::model::LogoutMethod::Post);
        assert_eq!(p.userinfo, crate::config::provider::Userinfo::Off);
    }

    #[test]
    fn algorithms_are_the_verifiers() {
        let names: Vec<String> = crate::jwt::ASYMMETRIC
            .iter()
            .map(|a| format!("{a:?}"))
            .collect();
        assert_eq!(names, ALGORITHMS);
        for a in ALGORITHMS {
            assert_eq!(crate::jwt::allowed_algorithms([*a]).len(), 1, "{a}");
        }
        for a in ["HS256", "none", "rs256"] {
            assert!(crate::jwt::allowed_algorithms([a]).is_empty(), "{a}");
        }
    }

    /// Keys `config.toml` sets to show an example value rather than the default.
    const EXAMPLES: &[&str] = &["server.threads"];
    /// Keys without a default: written in both configs compared below.
    const REQUIRED: &[&str] = &[
        "upstreams.app.servers",
        "providers.id",
        "providers.issuer",
        "providers.client_id",
        "routes.id",
        "routes.path",
        "routes.upstream",
        "routes.public",
    ];
    /// The commented `# key = value` lines of `[[providers]]` document defaults, except
    /// these examples (and `client_secret`, replaced by a literal).
    const PROVIDER_EXAMPLES: &[&str] = &[
        "display_name",
        "client_secret",
        "redirect_url",
        "extra_auth_params",
        "algorithms",
        "opaque_token_prefix",
        "ca_file",
    ];

    /// `key = value  # comment` → (key, value): the longest prefix of the rest that is a
    /// TOML value is the value.
    fn key_value(line: &str) -> Option<(String, String)> {
        let (k, rest) = line.split_once(" = ")?;
        let k = k.trim();
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
        {
            return None;
        }
        let cuts = rest.match_indices('#').map(|(i, _)| i).chain([rest.len()]);
        for cut in cuts {
            let v = rest[..cut].trim();
            if toml::from_str::<toml::Table>(&format!("x = {v}")).is_ok() {
                return Some((k.to_string(), v.to_string()));
            }
        }
        None
    }

    /// Rebuild `config.toml` twice: once with every documented default (plus the required
    /// keys), once with the required keys only. Both must validate to the same config, so a
    /// default changed in code or in `config.toml` alone fails here.
    fn documented_and_bare() -> (String, String) {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let src = std::fs::read_to_string(p).unwrap();
        let (mut doc, mut bare) = (String::new(), String::new());
        // (header as written, whether it is commented out)
        let mut section: Option<(String, bool)> = None;
        for line in src.lines() {
            let commented = line.starts_with('#');
            let body = line.trim_start_matches('#').trim_start();
            if body.starts_with('[') {
                let header = body.split('#').next().unwrap().trim().to_string();
                section = Some((header.clone(), commented));
                let name = header.trim_matches(|c| c == '[' || c == ']');
                // Documented sections: the uncommented ones, and the providers' defaults.
                if !commented || name == "providers" {
                    doc.push_str(&format!("\n{header}\n"));
                    // Sections left out of the bare config take their defaults (a
                    // `[[listeners]]` without its address would not even parse).
                    if REQUIRED.iter().any(|r| r.starts_with(&format!("{name}."))) {
                        bare.push_str(&format!("\n{header}\n"));
                    }
                    if name == "providers" {
                        let secret = "client_secret = \"s\"\n";
                        doc.push_str(secret);
                        bare.push_str(secret);
                    }
                }
                continue;
            }
            let Some((header, section_commented)) = &section else {
                continue;
            };
            let name = header.trim_matches(|c| c == '[' || c == ']');
            let Some((k, v)) = key_value(body) else {
                continue;
            };
            let full = format!("{name}.{k}");
            // The provider's commented keys document defaults; its live ones are the required
            // keys (the example provider of config.toml, which `check` wants).
            let documented = if name == "providers" {
                !PROVIDER_EXAMPLES.contains(&k.as_str())
                    && (commented || REQUIRED.contains(&full.as_str()))
            } else {
                !*section_commented && !commented
            };
            if !documented || EXAMPLES.contains(&full.as_str()) {
                continue;
            }
            let kv = format!("{k} = {v}\n");
            if REQUIRED.contains(&full.as_str()) {
                bare.push_str(&kv);
            }
            doc.push_str(&kv);
        }
        (doc, bare)
    }

    #[test]
    fn config_toml_documents_the_defaults() {
        let (doc, bare) = documented_and_bare();
        // The rebuilt text really carries the documented values.
        for k in [
            "grace_period",
            "cache_max_entries",
            "max_fails",
            "clock_skew",
        ] {
            assert!(doc.contains(&format!("\n{k} = ")), "{k} missing:\n{doc}");
        }
        let (documented, defaults) = (
            format!("{:#?}", config(&doc)),
            format!("{:#?}", config(&bare)),
        );
        let drift: Vec<String> = documented
            .lines()
            .zip(defaults.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("config.toml: {} / code: {}", a.trim(), b.trim()))
            .collect();
        assert!(
            drift.is_empty() && documented.lines().count() == defaults.lines().count(),
            "config.toml documents values that are not the defaults:\n{}",
            drift.join("\n")
        );
        // [forward_auth] is off by default; its commented switch documents its default.
        assert!(!doc.contains("auth_request_headers"));
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let src = std::fs::read_to_string(p).unwrap();
        let line = src
            .lines()
            .find(|l| l.starts_with("# auth_request_headers = "))
            .expect("documented");
        let (_, v) = key_value(line.trim_start_matches("# ")).unwrap();
        assert_eq!(v, FORWARD_AUTH_REQUEST_HEADERS.to_string());
    }
}
