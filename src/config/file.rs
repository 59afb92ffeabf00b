//! The serde mirror of `config.toml`: field for field what the file may say, nothing checked
//! beyond types. Unknown keys are errors (`deny_unknown_fields`), so a typo is reported with
//! its line instead of being silently ignored. Values that need checking later keep their
//! position (`Spanned`) so [`super::model`] can name the line of a bad value.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    #[serde(default)]
    pub(crate) server: Server,
    #[serde(default)]
    pub(crate) log: Log,
    #[serde(default)]
    pub(crate) listeners: Vec<Listener>,
    #[serde(default)]
    pub(crate) admin: Admin,
    #[serde(default)]
    pub(crate) paths: Paths,
    #[serde(default)]
    pub(crate) headers: Headers,
    #[serde(default)]
    pub(crate) gateway: Gateway,
    pub(crate) forward_auth: Option<ForwardAuth>,
    #[serde(default)]
    pub(crate) csrf: Csrf,
    #[serde(default)]
    pub(crate) session: Session,
    #[serde(default)]
    pub(crate) providers: Vec<Provider>,
    #[serde(default)]
    pub(crate) assertion: Assertion,
    #[serde(default)]
    pub(crate) upstreams: BTreeMap<String, Upstream>,
    #[serde(default)]
    pub(crate) routes: Vec<Route>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Server {
    pub(crate) threads: Option<Spanned<i64>>,
    pub(crate) grace_period: Option<Spanned<String>>,
    pub(crate) shutdown_timeout: Option<Spanned<String>>,
    pub(crate) pid_file: Option<String>,
    pub(crate) upgrade_socket: Option<String>,
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<Spanned<String>>,
    pub(crate) request_id_header: Option<Spanned<String>>,
    pub(crate) max_request_header_bytes: Option<Spanned<i64>>,
    pub(crate) max_request_headers: Option<Spanned<i64>>,
    pub(crate) max_connections: Option<Spanned<i64>>,
    pub(crate) keepalive_timeout: Option<Spanned<String>>,
    pub(crate) request_header_timeout: Option<Spanned<String>>,
    pub(crate) shutdown_delay: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Log {
    pub(crate) format: Option<Spanned<String>>,
    pub(crate) level: Option<Spanned<String>>,
    pub(crate) access_log: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listener {
    pub(crate) address: Spanned<String>,
    #[serde(default)]
    pub(crate) h2c: bool,
    pub(crate) tls_cert_file: Option<Spanned<String>>,
    pub(crate) tls_key_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    pub(crate) address: Option<Spanned<String>>,
    pub(crate) token: Option<Spanned<String>>,
    pub(crate) token_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Paths {
    #[serde(default)]
    pub(crate) case_insensitive: bool,
    #[serde(default)]
    pub(crate) allow_semicolon: bool,
    #[serde(default)]
    pub(crate) allow_encoded_slash: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Headers {
    pub(crate) identity_headers: Option<Vec<Spanned<String>>>,
    pub(crate) identity_prefixes: Option<Vec<Spanned<String>>>,
    pub(crate) user: Option<Spanned<String>>,
    pub(crate) email: Option<Spanned<String>>,
    pub(crate) groups: Option<Spanned<String>>,
    pub(crate) preferred_username: Option<Spanned<String>>,
    pub(crate) access_token: Option<Spanned<String>>,
    pub(crate) provider: Option<Spanned<String>>,
    pub(crate) groups_filter: Option<Spanned<String>>,
    pub(crate) max_groups_bytes: Option<Spanned<i64>>,
    // The claim header keys, for every route (a route's `[routes.headers]` overrides each).
    pub(crate) claims: Option<BTreeMap<String, Spanned<String>>>,
    pub(crate) claim_separator: Option<Spanned<String>>,
    pub(crate) claim_prefix: Option<Spanned<String>>,
    pub(crate) claim_prefix_allow: Option<Vec<Spanned<String>>>,
    pub(crate) max_claim_bytes: Option<Spanned<i64>>,
    pub(crate) id_token: Option<Spanned<String>>,
    pub(crate) remote_user: Option<Spanned<RemoteUser>>,
    pub(crate) basic_auth: Option<Spanned<BasicAuth>>,
    pub(crate) x_auth_request: Option<Spanned<bool>>,
}

impl Headers {
    /// The claim header keys of `[headers]`, in the shape of a route's `[routes.headers]`.
    pub(crate) fn claim_keys(&self) -> ClaimKeys {
        ClaimKeys {
            claims: self.claims.clone(),
            claim_separator: self.claim_separator.clone(),
            claim_prefix: self.claim_prefix.clone(),
            claim_prefix_allow: self.claim_prefix_allow.clone(),
            max_claim_bytes: self.max_claim_bytes.clone(),
            id_token: self.id_token.clone(),
            remote_user: self.remote_user.clone(),
            basic_auth: self.basic_auth.clone(),
            x_auth_request: self.x_auth_request.clone(),
        }
    }
}

/// `[routes.headers]`: the claim header keys of `[headers]`, for one route.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimKeys {
    /// Header name = claim path.
    pub(crate) claims: Option<BTreeMap<String, Spanned<String>>>,
    pub(crate) claim_separator: Option<Spanned<String>>,
    pub(crate) claim_prefix: Option<Spanned<String>>,
    pub(crate) claim_prefix_allow: Option<Vec<Spanned<String>>>,
    pub(crate) max_claim_bytes: Option<Spanned<i64>>,
    pub(crate) id_token: Option<Spanned<String>>,
    pub(crate) remote_user: Option<Spanned<RemoteUser>>,
    pub(crate) basic_auth: Option<Spanned<BasicAuth>>,
    pub(crate) x_auth_request: Option<Spanned<bool>>,
}

/// `remote_user = { claim, pattern, replace, header }`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct RemoteUser {
    pub(crate) claim: Option<Spanned<String>>,
    pub(crate) pattern: Option<Spanned<String>>,
    pub(crate) replace: Option<Spanned<String>>,
    pub(crate) header: Option<Spanned<String>>,
}

/// `basic_auth = { password }` or `{ password_file }`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct BasicAuth {
    pub(crate) password: Option<Spanned<String>>,
    pub(crate) password_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Gateway {
    pub(crate) prefix: Option<Spanned<String>>,
    pub(crate) bearer_cache_entries: Option<Spanned<i64>>,
    pub(crate) templates_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) allowed_redirect_hosts: Vec<Spanned<String>>,
}

/// `[forward_auth]`: see `super::front`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForwardAuth {
    pub(crate) proxy: Spanned<String>,
    pub(crate) method_header: Option<Spanned<String>>,
    pub(crate) uri_header: Option<Spanned<String>>,
    pub(crate) host_header: Option<Spanned<String>>,
    pub(crate) auth_request_headers: Option<bool>,
}

/// `[csrf]`: see `super::front`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Csrf {
    pub(crate) enabled: Option<bool>,
    pub(crate) allow_same_site: Option<bool>,
    #[serde(default)]
    pub(crate) allowed_origins: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Session {
    pub(crate) store: Option<Spanned<String>>,
    pub(crate) redis_url: Option<Spanned<String>>,
    pub(crate) redis_url_file: Option<Spanned<String>>,
    pub(crate) redis_sentinels: Option<Spanned<Vec<String>>>,
    pub(crate) redis_sentinel_master: Option<Spanned<String>>,
    pub(crate) redis_cluster_nodes: Option<Spanned<Vec<String>>>,
    pub(crate) redis_username: Option<Spanned<String>>,
    pub(crate) redis_password: Option<Spanned<String>>,
    pub(crate) redis_password_file: Option<Spanned<String>>,
    pub(crate) redis_ca_file: Option<Spanned<String>>,
    pub(crate) redis_prefix: Option<String>,
    pub(crate) redis_timeout: Option<Spanned<String>>,
    pub(crate) redis_min_replicas_ack: Option<Spanned<i64>>,
    pub(crate) secret: Option<Spanned<String>>,
    pub(crate) secret_file: Option<Spanned<String>>,
    pub(crate) cookie_name: Option<Spanned<String>>,
    pub(crate) cookie_secure: Option<bool>,
    pub(crate) cookie_same_site: Option<Spanned<String>>,
    pub(crate) cookie_domain: Option<Spanned<String>>,
    pub(crate) cookie_persistent: Option<bool>,
    pub(crate) cookie_path: Option<Spanned<String>>,
    pub(crate) idle_timeout: Option<Spanned<String>>,
    pub(crate) absolute_timeout: Option<Spanned<String>>,
    pub(crate) login_timeout: Option<Spanned<String>>,
    pub(crate) cache_max_age: Option<Spanned<String>>,
    pub(crate) cache_max_entries: Option<Spanned<i64>>,
    pub(crate) touch_interval: Option<Spanned<String>>,
    pub(crate) refresh_lead: Option<Spanned<String>>,
    pub(crate) refresh_wait: Option<Spanned<String>>,
    pub(crate) max_pending_logins: Option<Spanned<i64>>,
    pub(crate) max_return_url_bytes: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Provider {
    pub(crate) id: Spanned<String>,
    pub(crate) issuer: Spanned<String>,
    pub(crate) client_id: Spanned<String>,
    pub(crate) client_secret: Option<Spanned<String>>,
    pub(crate) client_secret_file: Option<Spanned<String>>,
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) display_name: Option<String>,
    pub(crate) redirect_url: Option<Spanned<String>>,
    pub(crate) logout_method: Option<Spanned<String>>,
    pub(crate) require_at_jwt: Option<bool>,
    pub(crate) introspect_opaque_tokens: Option<bool>,
    pub(crate) introspection_cache_ttl: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) extra_auth_params: BTreeMap<String, String>,
    pub(crate) algorithms: Option<Vec<Spanned<String>>>,
    pub(crate) clock_skew: Option<Spanned<String>>,
    pub(crate) refresh_interval: Option<Spanned<String>>,
    pub(crate) user_claim: Option<String>,
    pub(crate) email_claim: Option<String>,
    pub(crate) name_claim: Option<String>,
    pub(crate) groups_claim: Option<String>,
    pub(crate) preferred_username_claim: Option<String>,
    pub(crate) trust_email: Option<bool>,
    pub(crate) trusted_audiences: Option<Vec<Spanned<String>>>,
    pub(crate) userinfo: Option<Spanned<String>>,
    pub(crate) ca_file: Option<Spanned<String>>,
    pub(crate) system_trust_store: Option<bool>,
    pub(crate) opaque_token_prefix: Option<Spanned<String>>,
    pub(crate) introspection_inactive_ttl: Option<Spanned<String>>,
    pub(crate) introspection_requires_audience: Option<bool>,
    pub(crate) max_refresh_failures: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Upstream {
    pub(crate) servers: Spanned<Vec<Spanned<String>>>,
    pub(crate) tls_ca_file: Option<Spanned<String>>,
    pub(crate) tls_verify: Option<bool>,
    pub(crate) tls_server_name: Option<Spanned<String>>,
    pub(crate) http2: Option<bool>,
    pub(crate) connect_timeout: Option<Spanned<String>>,
    pub(crate) read_timeout: Option<Spanned<String>>,
    pub(crate) write_timeout: Option<Spanned<String>>,
    pub(crate) idle_timeout: Option<Spanned<String>>,
    pub(crate) max_fails: Option<Spanned<i64>>,
    pub(crate) fail_timeout: Option<Spanned<String>>,
    pub(crate) pass_host_header: Option<bool>,
    pub(crate) resolve_interval: Option<Spanned<String>>,
    pub(crate) health_path: Option<Spanned<String>>,
    pub(crate) health_interval: Option<Spanned<String>>,
    pub(crate) health_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    pub(crate) id: Option<Spanned<String>>,
    pub(crate) host: Option<Spanned<String>>,
    pub(crate) path: Option<Spanned<String>>,
    pub(crate) upstream: Spanned<String>,
    #[serde(default)]
    pub(crate) public: bool,
    /// `"required"` (default), `"optional"` or `"public"` (`public = true` is its alias).
    pub(crate) auth: Option<Spanned<String>>,
    /// Methods that need no sign-in on an otherwise protected route (e.g. `["OPTIONS"]`).
    #[serde(default)]
    pub(crate) public_methods: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) pass_access_token: bool,
    #[serde(default)]
    pub(crate) identity_assertion: bool,
    #[serde(default)]
    pub(crate) bearer: bool,
    #[serde(default)]
    pub(crate) audiences: Vec<String>,
    #[serde(default)]
    pub(crate) providers: Vec<Spanned<String>>,
    pub(crate) policy: Option<Spanned<Policy>>,
    /// `[[routes.deny]]`: rules with the policy's keys, evaluated before it.
    #[serde(default)]
    pub(crate) deny: Vec<Spanned<Policy>>,
    /// `false` turns the CSRF guard off for this route.
    pub(crate) csrf: Option<bool>,
    /// `"auto"`, `"redirect"` or `"401"`.
    pub(crate) unauthenticated: Option<Spanned<String>>,
    /// `[routes.headers]`: this route's claim header keys.
    pub(crate) headers: Option<Spanned<ClaimKeys>>,
    /// Request shaping (see `super::shaping`): what the upstream receives instead of the
    /// canonical path and the client's headers, and what the client receives of its answer.
    pub(crate) strip_prefix: Option<Spanned<String>>,
    pub(crate) rewrite: Option<Spanned<Rewrite>>,
    pub(crate) request_headers: Option<Spanned<HeaderEdits>>,
    pub(crate) response_headers: Option<Spanned<HeaderEdits>>,
}

/// `rewrite = { pattern, replace }` of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rewrite {
    pub(crate) pattern: Spanned<String>,
    pub(crate) replace: Spanned<String>,
}

/// `request_headers` / `response_headers = { set, remove }` of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderEdits {
    #[serde(default)]
    pub(crate) set: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(crate) remove: Vec<Spanned<String>>,
}

/// `[routes.policy]`: see `crate::policy` for the semantics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Policy {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub emails: Vec<Spanned<String>>,
    #[serde(default)]
    pub email_domains: Vec<Spanned<String>>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    #[serde(default)]
    pub providers: Vec<Spanned<String>>,
    #[serde(default)]
    pub email_patterns: Vec<Spanned<String>>,
    /// Claim name → a regex or a list of them.
    #[serde(default)]
    pub claim_patterns: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    pub source_ips: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Assertion {
    pub(crate) header: Option<Spanned<String>>,
    pub(crate) key_file: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) ttl: Option<Spanned<String>>,
}
