//! # authgate
//!
//! An authentication gateway: a reverse proxy (on Pingora) that decides who is calling and
//! forwards to the upstream with identity headers only it can set.
//!
//! Comments cite "design decision N": the numbered product decisions in `docs/design.md`.
//!
//! ## Layout
//! - [`config`]: `config.toml` → validated [`config::Config`] (serde mirror, one validator per
//!   section, every default in `config::defaults`, plain-data model, errors, secrets).
//! - [`host`]: the one strict parser for `Host`, `:authority`, `X-Forwarded-Host` and URL hosts.
//! - [`path`]: the one canonical form of a request path.
//! - [`routing`]: host + longest-prefix route table.
//! - [`upstream`]: upstream server pools, round robin, passive failure marking, peer options.
//! - [`identity`]: the identity header namespace (stripped from every client request) and the
//!   identity headers the gateway sets.
//! - `claim_headers`: claims and tokens as headers per route (claims map, `OIDC_CLAIM_`-style
//!   prefix, ID token, `REMOTE_USER`, Basic auth, `X-Auth-Request-*`).
//! - [`session`]: server-side sessions: cookie MAC, memory/Redis store, coherent cache.
//! - [`strlist`], [`claimmap`]: the compact, exactly sized forms a cached session keeps its
//!   groups and its other claims in.
//! - [`oidc`]: providers (discovery, JWKS refresh), the login/callback/logout flow, redirects.
//! - [`jwt`]: JWT verification against a cached JWKS.
//! - [`fetch`]: bounded reads of a provider's answers (discovery, JWKS, token, userinfo).
//! - `fault`: what kind of failure an error is (rejected, unavailable, bug), a leaf.
//! - `cache`: the one bounded, expiring cache (sessions, bearer tokens, introspection answers,
//!   assertions) and its monotonic clock.
//! - `certs`: the TLS listeners' certificates, renewed by a reload without a restart.
//! - `flight`: single-flight: one computation per key at a time, shared by its callers.
//! - [`forwarded`]: trusted proxies, `X-Forwarded-*`, request IDs.
//! - `trace`: W3C `traceparent`, continued when valid or started, passed upstream (a leaf).
//! - [`limits`]: bounds of the request head (bytes, header lines), answered with 431.
//! - [`crypto`]: randomness, digests, base64url, constant-time equality, unix time (a leaf).
//! - [`csrf`]: the cross-site request guard for cookie-authenticated unsafe requests.
//! - [`out_header`]: header names the gateway writes, spelled once.
//! - [`policy`]: per-route authorization on the verified identity.
//! - [`proxy`]: the Pingora `ProxyHttp` glue; the request path reads top to bottom there.
//!   `proxy::decision` is the one request decision, for proxy mode and forward-auth alike.
//! - [`answer`]: everything the gateway answers itself (refusals, sign-in and sign-out pages,
//!   its endpoints' JSON, the admin listener's answers) → one status, headers and body, in
//!   one place.
//! - `pages`: the HTML page templates (built in, overridable from `gateway.templates_dir`);
//!   a leaf that config checks overrides with at load.
//! - [`assertion`]: the signed identity assertion (ES256 JWT) for upstreams.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics` on the admin listener.
//! - [`metrics`]: Prometheus metrics.
//! - [`reload`]: what a reload changes (all or nothing), what needs a restart, and what lives
//!   across configs (session store and cache, running providers); `--watch`.
//! - `otlp`: optional export of one span per request over OTLP/HTTP (from `OTEL_*` variables).
//! - [`server`]: assembles the Pingora server from a config; signals, reload, shutdown,
//!   upgrade.
//! - [`connections`]: drives every downstream connection (limits, timeouts, HTTP/1 and
//!   HTTP/2, draining); a leaf the proxy and the server both use.
//! - `notify`: service manager notifications (`READY=1`, `RELOADING=1`, `STOPPING=1`).
//! - [`logging`]: log setup; other crates capped at `info` and rate-limited.
//! - [`ratelimit_log`]: error lines rate-limited per cause, with counts.
//! - [`backoff`]: the retry pause of loops (accept errors): doubling to a cap, reset on success.
//! - [`tasks`]: background tasks that stop on shutdown (one cancellation token for all).
//! - [`demo`]: the echo upstream used by the demo, the load script and tests.
//!
//! ## Request flow
//! `proxy::Gateway::request_filter`: strip identity + untrusted forwarding headers → head
//! limits (431) → one strict Host (400) → normalise the path → gateway endpoint? (forward-auth
//! builds the same request description from the front proxy's headers) → the decision: route
//! (or 404) → method override → authenticate → 401/302, CSRF, policy →
//! `upstream_peer`: round-robin server → `upstream_request_filter`: canonical path, forwarding
//! headers, request ID, `traceparent` → `logging`: metrics and access log.

pub mod admin;
pub(crate) mod answer;
pub(crate) mod assertion;
pub(crate) mod backoff;
pub(crate) mod cache;
pub(crate) mod certs;
pub(crate) mod claim_headers;
pub mod claimmap;
pub mod config;
pub(crate) mod connections;
pub(crate) mod crypto;
pub(crate) mod csrf;
pub mod demo;
pub(crate) mod fault;
pub(crate) mod fetch;
pub(crate) mod flight;
pub mod forwarded;
pub mod host;
pub mod identity;
pub mod jwt;
pub mod limits;
pub mod logging;
pub mod metrics;
pub(crate) mod notify;
pub(crate) mod oidc;
pub(crate) mod otlp;
pub(crate) mod out_header;
pub(crate) mod pages;
pub mod path;
pub mod policy;
pub(crate) mod proxy;
pub(crate) mod ratelimit_log;
pub mod reload;
pub mod routing;
pub mod server;
pub mod session;
pub mod strlist;
pub mod tasks;
pub(crate) mod trace;
pub(crate) mod upstream;
