//! The serde mirror of `config.toml`: field for field what the file may say, nothing checked
//! beyond types. Unknown keys are errors (`deny_unknown_fields`), so a typo is reported with
//! its line instead of being silently ignored. Values that need checking later keep their
//! position (`Spanned`) so [`super::model`] can name the line of a bad value.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub paths: Paths,
    #[serde(default)]
    pub headers: Headers,
    #[serde(default)]
    pub gateway: Gateway,
    pub forward_auth: Option<ForwardAuth>,
    #[serde(default)]
    pub csrf: Csrf,
    #[serde(default)]
    pub session: Session,
    #[serde(default)]
    pub providers: Vec<Provider>,
    #[serde(default)]
    pub assertion: Assertion,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub threads: Option<Spanned<i64>>,
    pub grace_period: Option<Spanned<String>>,
    pub shutdown_timeout: Option<Spanned<String>>,
    pub pid_file: Option<String>,
    pub upgrade_socket: Option<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    pub request_id_header: Option<Spanned<String>>,
    pub max_request_header_bytes: Option<Spanned<i64>>,
    pub max_request_headers: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub keepalive_timeout: Option<Spanned<String>>,
    pub request_header_timeout: Option<Spanned<String>>,
    pub shutdown_delay: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub format: Option<Spanned<String>>,
    pub level: Option<Spanned<String>>,
    pub access_log: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub address: Spanned<String>,
    #[serde(default)]
    pub h2c: bool,
    pub tls_cert_file: Option<Spanned<String>>,
    pub tls_key_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub address: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    #[serde(default)]
    pub case_insensitive: bool,
    #[serde(default)]
    pub allow_semicolon: bool,
    #[serde(default)]
    pub allow_encoded_slash: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Headers {
    pub identity_headers: Option<Vec<Spanned<String>>>,
    pub identity_prefixes: Option<Vec<Spanned<String>>>,
    pub user: Option<Spanned<String>>,
    pub email: Option<Spanned<String>>,
    pub groups: Option<Spanned<String>>,
    pub preferred_username: Option<Spanned<String>>,
    pub access_token: Option<Spanned<String>>,
    pub provider: Option<Spanned<String>>,
    pub groups_filter: Option<Spanned<String>>,
    pub max_groups_bytes: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub prefix: Option<Spanned<String>>,
    pub bearer_cache_entries: Option<Spanned<i64>>,
    pub templates_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub allowed_redirect_hosts: Vec<Spanned<String>>,
}

/// `[forward_auth]`: see `super::front`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuth {
    pub proxy: Spanned<String>,
    pub method_header: Option<Spanned<String>>,
    pub uri_header: Option<Spanned<String>>,
    pub host_header: Option<Spanned<String>>,
    pub auth_request_headers: Option<bool>,
}

/// `[csrf]`: see `super::front`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Csrf {
    pub enabled: Option<bool>,
    pub allow_same_site: Option<bool>,
    #[serde(default)]
    pub allowed_origins: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub store: Option<Spanned<String>>,
    pub redis_url: Option<Spanned<String>>,
    pub redis_url_file: Option<Spanned<String>>,
    pub redis_sentinels: Option<Spanned<Vec<String>>>,
    pub redis_sentinel_master: Option<Spanned<String>>,
    pub redis_cluster_nodes: Option<Spanned<Vec<String>>>,
    pub redis_username: Option<Spanned<String>>,
    pub redis_password: Option<Spanned<String>>,
    pub redis_password_file: Option<Spanned<String>>,
    pub redis_ca_file: Option<Spanned<String>>,
    pub redis_prefix: Option<String>,
    pub redis_timeout: Option<Spanned<String>>,
    pub redis_min_replicas_ack: Option<Spanned<i64>>,
    pub secret: Option<Spanned<String>>,
    pub secret_file: Option<Spanned<String>>,
    pub cookie_name: Option<Spanned<String>>,
    pub cookie_secure: Option<bool>,
    pub cookie_same_site: Option<Spanned<String>>,
    pub cookie_domain: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub absolute_timeout: Option<Spanned<String>>,
    pub login_timeout: Option<Spanned<String>>,
    pub cache_max_age: Option<Spanned<String>>,
    pub cache_max_entries: Option<Spanned<i64>>,
    pub touch_interval: Option<Spanned<String>>,
    pub refresh_lead: Option<Spanned<String>>,
    pub refresh_wait: Option<Spanned<String>>,
    pub max_pending_logins: Option<Spanned<i64>>,
    pub max_return_url_bytes: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub id: Spanned<String>,
    pub issuer: Spanned<String>,
    pub client_id: Spanned<String>,
    pub client_secret: Option<Spanned<String>>,
    pub client_secret_file: Option<Spanned<String>>,
    pub scopes: Option<Vec<String>>,
    pub display_name: Option<String>,
    pub redirect_url: Option<Spanned<String>>,
    pub logout_method: Option<Spanned<String>>,
    pub require_at_jwt: Option<bool>,
    pub introspect_opaque_tokens: Option<bool>,
    pub introspection_cache_ttl: Option<Spanned<String>>,
    #[serde(default)]
    pub extra_auth_params: BTreeMap<String, String>,
    pub algorithms: Option<Vec<Spanned<String>>>,
    pub clock_skew: Option<Spanned<String>>,
    pub refresh_interval: Option<Spanned<String>>,
    pub user_claim: Option<String>,
    pub email_claim: Option<String>,
    pub name_claim: Option<String>,
    pub groups_claim: Option<String>,
    pub preferred_username_claim: Option<String>,
    pub trust_email: Option<bool>,
    pub trusted_audiences: Option<Vec<Spanned<String>>>,
    pub userinfo: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub system_trust_store: Option<bool>,
    pub opaque_token_prefix: Option<Spanned<String>>,
    pub introspection_inactive_ttl: Option<Spanned<String>>,
    pub introspection_requires_audience: Option<bool>,
    pub max_refresh_failures: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub servers: Spanned<Vec<Spanned<String>>>,
    pub tls_ca_file: Option<Spanned<String>>,
    pub tls_verify: Option<bool>,
    pub tls_server_name: Option<Spanned<String>>,
    pub http2: Option<bool>,
    pub connect_timeout: Option<Spanned<String>>,
    pub read_timeout: Option<Spanned<String>>,
    pub write_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub max_fails: Option<Spanned<i64>>,
    pub fail_timeout: Option<Spanned<String>>,
    pub pass_host_header: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub id: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub upstream: Spanned<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub pass_access_token: bool,
    #[serde(default)]
    pub identity_assertion: bool,
    #[serde(default)]
    pub bearer: bool,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub providers: Vec<Spanned<String>>,
    pub policy: Option<Spanned<Policy>>,
    /// `false` turns the CSRF guard off for this route.
    pub csrf: Option<bool>,
    /// `"auto"`, `"redirect"` or `"401"`.
    pub unauthenticated: Option<Spanned<String>>,
}

/// `[routes.policy]`: see `crate::policy` for the semantics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
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
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Assertion {
    pub header: Option<Spanned<String>>,
    pub key_file: Option<String>,
    pub issuer: Option<String>,
    pub ttl: Option<Spanned<String>>,
}
