//! Every default and bound of `config.toml`, once, named and documented.
//!
//! Validation reads these and nothing else when a key is unset or out of range; the root
//! `config.toml` documents the same values, and a test (below) fails when the two drift
//! apart. Constants are grouped by section, in the order of `config.toml`.

use std::ops::RangeInclusive;
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// [server]

/// `server.threads` when unset: the machine's available parallelism (this value when even
/// that is unknown, and after an out-of-range value was reported).
pub const THREADS_FALLBACK: usize = 1;
pub const THREADS: RangeInclusive<i64> = 1..=1024;
/// How long in-flight requests may run after SIGTERM/SIGINT.
pub const GRACE_PERIOD: Duration = Duration::from_secs(10);
/// Extra time for the runtime to wind down after the grace period.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
pub const PID_FILE: &str = "/tmp/authgate.pid";
pub const UPGRADE_SOCKET: &str = "/tmp/authgate_upgrade.sock";
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Bounds of the request head: defined beside the check in `crate::limits`.
pub use crate::limits::{
    DEFAULT_MAX_BYTES as MAX_REQUEST_HEADER_BYTES, DEFAULT_MAX_HEADERS as MAX_REQUEST_HEADERS,
    MAX_MAX_BYTES, MAX_MAX_HEADERS, MIN_MAX_BYTES, MIN_MAX_HEADERS,
};
/// Downstream connections held at once, all listeners together.
pub const MAX_CONNECTIONS: usize = 10_000;
pub const MAX_CONNECTIONS_RANGE: RangeInclusive<usize> = 1..=1_000_000;
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
pub const KEEPALIVE_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);
pub const REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const REQUEST_HEADER_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(300);
/// Off by default: without a load balancer to drain, closing at once is right.
pub const SHUTDOWN_DELAY: Duration = Duration::ZERO;
pub const SHUTDOWN_DELAY_RANGE: RangeInclusive<Duration> =
    Duration::ZERO..=Duration::from_secs(300);

// ---------------------------------------------------------------------------------------
// [log]

/// `tracing_subscriber::EnvFilter` directive; `RUST_LOG` overrides it.
pub const LOG_LEVEL: &str = "info";
pub const ACCESS_LOG: bool = true;

// ---------------------------------------------------------------------------------------
// [[listeners]] and [admin]

/// The one listener of a config without `[[listeners]]`.
pub const LISTEN: &str = "127.0.0.1:8080";
/// Loopback: `/metrics` and `/sessions` are not for the world.
pub const ADMIN_ADDRESS: &str = "127.0.0.1:9090";
/// Shortest accepted `admin.token`.
pub const ADMIN_TOKEN_MIN_BYTES: usize = 16;

// ---------------------------------------------------------------------------------------
// [paths]: every switch is off (`false`) by default, the strict reading.

// ---------------------------------------------------------------------------------------
// [headers]

/// Names stripped from every client request: oauth2-proxy's plus common `REMOTE_USER` forms.
pub const IDENTITY_HEADERS: &[&str] = &[
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
pub const IDENTITY_PREFIXES: &[&str] = &["x-auth-request-", "x-authgate-"];
/// Our own namespace: stripped whatever `identity_prefixes` says.
pub const OWN_PREFIX: &str = "x-authgate-";
/// A shorter prefix would strip ordinary headers.
pub const MIN_IDENTITY_PREFIX_LEN: usize = 3;
pub const USER_HEADER: &str = "x-forwarded-user";
pub const EMAIL_HEADER: &str = "x-forwarded-email";
pub const GROUPS_HEADER: &str = "x-forwarded-groups";
pub const PREFERRED_USERNAME_HEADER: &str = "x-forwarded-preferred-username";
pub const ACCESS_TOKEN_HEADER: &str = "x-forwarded-access-token";
/// Bound of the groups header: well inside common 8 KiB header limits.
pub const MAX_GROUPS_BYTES: usize = 4096;
pub const MAX_GROUPS_BYTES_RANGE: RangeInclusive<i64> = 64..=65536;

// ---------------------------------------------------------------------------------------
// [gateway]

/// Reserved path prefix answered by the gateway itself.
pub const GATEWAY_PREFIX: &str = "/.authgate/";
/// Verified bearer tokens kept; 0 verifies every request.
pub const BEARER_CACHE_ENTRIES: usize = 100_000;

// ---------------------------------------------------------------------------------------
// [csrf]

/// On by default: an authentication gateway in front of apps with no CSRF defence of their own
/// is where forged cross-site POSTs do harm.
pub const CSRF_ENABLED: bool = true;
pub const CSRF_ALLOW_SAME_SITE: bool = false;

// ---------------------------------------------------------------------------------------
// [forward_auth]

/// oauth2-proxy's `X-Auth-Request-*` answer headers are off unless asked for.
pub const FORWARD_AUTH_REQUEST_HEADERS: bool = false;

// ---------------------------------------------------------------------------------------
// [session]

pub const REDIS_PREFIX: &str = "authgate:";
/// Deadline of each Redis call.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);
pub const REDIS_MIN_REPLICAS_ACK_RANGE: RangeInclusive<usize> = 0..=64;
pub const COOKIE_NAME: &str = "authgate_session";
pub const COOKIE_SECURE: bool = true;
/// Shortest accepted `session.secret`.
pub const SESSION_SECRET_MIN_BYTES: usize = 32;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// How long a started login may take (the pending login's TTL).
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(600);
pub const CACHE_MAX_AGE: Duration = Duration::from_secs(10);
pub const CACHE_MAX_ENTRIES: usize = 1_000_000;
/// `session.touch_interval` is this or a quarter of the idle timeout, whichever is less.
pub const TOUCH_INTERVAL_MAX: Duration = Duration::from_secs(60);
pub const REFRESH_LEAD: Duration = Duration::from_secs(60);
pub const REFRESH_WAIT: Duration = Duration::from_secs(5);
/// Enough for every browser tab of a busy site's sign-in wave; ~1 KB each in the store.
pub const MAX_PENDING_LOGINS: usize = 10_000;
pub const MAX_PENDING_LOGINS_RANGE: RangeInclusive<usize> = 1..=10_000_000;
pub const MAX_RETURN_URL_BYTES: usize = 2048;
pub const MAX_RETURN_URL_BYTES_RANGE: RangeInclusive<usize> = 64..=65_536;

/// `session.touch_interval` when unset.
pub fn touch_interval(idle_timeout: Duration) -> Duration {
    TOUCH_INTERVAL_MAX.min(idle_timeout / 4)
}

// ---------------------------------------------------------------------------------------
// [[providers]]

pub const SCOPES: &[&str] = &["openid", "email", "profile"];
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(600);
pub const JWKS_REFETCH_COOLDOWN: Duration = Duration::from_secs(30);
/// Failed background refreshes in a row before a provider is unavailable (not ready, sign-in
/// 503): one failure is a blip, three (about 3 s apart at most, see
/// `oidc::provider::RETRY_MAX`) an outage.
pub const MAX_REFRESH_FAILURES: u32 = 3;
pub const MAX_MAX_REFRESH_FAILURES: i64 = 100;
pub const INTROSPECTION_CACHE_TTL: Duration = Duration::from_secs(30);
/// Short: a token that becomes active later (rare) waits at most this long, while a flood
/// of one bogus value costs one call per interval.
pub const INTROSPECTION_INACTIVE_TTL: Duration = Duration::from_secs(10);
pub const MAX_INTROSPECTION_INACTIVE_TTL: Duration = Duration::from_secs(300);
/// Only an `email_verified: true` claim makes an email identity.
pub const TRUST_EMAIL: bool = false;
pub const REQUIRE_AT_JWT: bool = true;
/// RFC 7662 makes `aud` optional; an answer without one cannot show the token is for this API.
pub const INTROSPECTION_REQUIRES_AUDIENCE: bool = true;
pub const SYSTEM_TRUST_STORE: bool = false;
pub const INTROSPECT_OPAQUE_TOKENS: bool = false;
/// ID token and bearer JWT algorithms a provider may be limited to: asymmetric only (an
/// HMAC "verified" with a public key as secret is the classic key-confusion forgery). The
/// same list as `jwt::ASYMMETRIC` (a test compares them).
pub const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

// ---------------------------------------------------------------------------------------
// [assertion]

pub const ASSERTION_HEADER: &str = "x-authgate-assertion";
pub const ASSERTION_ISSUER: &str = "authgate";
pub const ASSERTION_TTL: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// [upstreams.*]

pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);
pub const UPSTREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Consecutive failures that mark a server down; 0 never does.
pub const UPSTREAM_MAX_FAILS: u32 = 1;
pub const UPSTREAM_MAX_FAILS_RANGE: RangeInclusive<i64> = 0..=1000;
pub const UPSTREAM_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
pub const UPSTREAM_PASS_HOST_HEADER: bool = true;
pub const UPSTREAM_TLS_VERIFY: bool = true;
pub const UPSTREAM_HTTP2: bool = false;

// ---------------------------------------------------------------------------------------
// [[routes]]

pub const ROUTE_PATH: &str = "/";
pub const ROUTE_CSRF: bool = true;

/// A route's id when unset: `route<N>`, N its index.
pub fn route_id(index: usize) -> String {
    format!("route{index}")
}
