//! The request path's view of the config: routes bound to upstream pools and pre-built
//! metric handles, rebuilt on every (re)load and swapped in atomically.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::Histogram;

use crate::config::front::{CsrfSettings, ForwardAuthSettings};
use crate::config::model::Unauthenticated;
use crate::config::Config;
use crate::forwarded::Forwarding;
use crate::identity::{IdentityHeaders, IdentityNamespace};
use crate::limits::HeadLimits;
use crate::metrics::Metrics;
use crate::oidc::Auth;
use crate::path::PathOptions;
use crate::routing::RouteTable;
use crate::upstream::Upstream;

/// One configured route, ready to use.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) id: Arc<str>,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) public: bool,
    /// Methods that pass without sign-in (`public_methods`).
    pub(crate) public_methods: Vec<http::Method>,
    /// `auth = "optional"`: anonymous callers pass, signed-in ones are identified.
    pub(crate) optional: bool,
    /// Forward the session's access token to the upstream.
    pub(crate) pass_access_token: bool,
    pub(crate) policy: Option<crate::policy::Policy>,
    /// `[[routes.deny]]`, evaluated in order before the policy.
    pub(crate) deny: Vec<crate::policy::Policy>,
    /// Accept bearer JWTs issued for one of `audiences` by one of `providers` (empty: any).
    pub(crate) bearer: bool,
    pub(crate) audiences: Vec<String>,
    pub(crate) providers: Vec<String>,
    pub(crate) identity_assertion: bool,
    /// Refuse cross-site unsafe requests authenticated by the session cookie.
    pub(crate) csrf: bool,
    pub(crate) unauthenticated: Unauthenticated,
    /// Claims and tokens as headers; `None` (nothing to do per request) unless configured.
    pub(crate) claim_headers: Option<Arc<crate::claim_headers::RouteClaims>>,
    /// `strip_prefix`, `rewrite`, header edits (`super::shaping`); `None`: none of them, and
    /// nothing is computed for them per request.
    pub(crate) shaping: Option<Box<crate::config::model::RouteShaping>>,
    /// Pre-resolved label children: no label hashing per request.
    pub(crate) duration: Histogram,
    /// The upstream's response latency (`authgate_upstream_response_duration_seconds`):
    /// its label child resolved at the first answer (no series for an upstream that never
    /// answered), then reused without a lookup.
    pub(crate) upstream_duration: UpstreamDuration,
}

/// See [`Route::upstream_duration`].
#[derive(Debug, Clone)]
pub(crate) struct UpstreamDuration {
    family: prometheus::HistogramVec,
    child: std::sync::OnceLock<Histogram>,
}

impl UpstreamDuration {
    pub(crate) fn observe(&self, upstream: &str, seconds: f64) {
        self.child
            .get_or_init(|| self.family.with_label_values(&[upstream]))
            .observe(seconds);
    }
}

/// Everything the proxy glue reads per request. Immutable; a reload builds a new one.
pub(crate) struct Runtime {
    pub(crate) routes: RouteTable<Arc<Route>>,
    pub(crate) identity: IdentityNamespace,
    pub(crate) forwarding: Forwarding,
    pub(crate) paths: PathOptions,
    /// e.g. `/.authgate/`; requests below it are answered by the gateway.
    pub(crate) gateway_prefix: String,
    pub(crate) access_log: bool,
    /// `None`: forward-auth is not configured and `{prefix}auth` is not served.
    pub(crate) forward_auth: Option<ForwardAuthSettings>,
    pub(crate) csrf: CsrfSettings,
    /// The identity header names (forward-auth answers carry each, empty when unknown).
    pub(crate) identity_headers: IdentityHeaders,
    pub(crate) head_limits: HeadLimits,
    /// Sign-in, sessions and tokens for this config; `None` when no provider is configured.
    /// Here, so a request sees the routes and the providers of one config, never a mix.
    pub(crate) auth: Option<Arc<Auth>>,
    /// The pools of this config, whose names [`Runtime::resolve`] looks up.
    pub(crate) upstreams: Vec<Arc<Upstream>>,
}

impl Runtime {
    pub(crate) fn new(config: &Config, metrics: &Metrics, auth: Option<Arc<Auth>>) -> Self {
        let upstreams: HashMap<&str, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, u)| (name.as_str(), Arc::new(Upstream::new(u))))
            .collect();
        let mut routes = RouteTable::new(config.case_insensitive_routes);
        for r in &config.routes {
            // Validation guarantees the upstream exists and (host, path) is unique.
            let Some(upstream) = upstreams.get(r.upstream.as_str()) else {
                continue;
            };
            let route = Route {
                id: r.id.as_str().into(),
                upstream: upstream.clone(),
                public: r.public,
                public_methods: r.public_methods.clone(),
                optional: r.optional,
                pass_access_token: r.pass_access_token,
                policy: r.policy.clone(),
                deny: r.deny.clone(),
                bearer: r.bearer,
                audiences: r.audiences.clone(),
                providers: r.providers.clone(),
                identity_assertion: r.identity_assertion,
                csrf: r.csrf,
                unauthenticated: r.unauthenticated,
                claim_headers: r
                    .claim_headers
                    .as_ref()
                    .map(|s| Arc::new(crate::claim_headers::RouteClaims::new(s.clone(), config))),
                shaping: r.shaping.clone().map(Box::new),
                duration: metrics.request_duration.with_label_values(&[r.id.as_str()]),
                upstream_duration: UpstreamDuration {
                    family: metrics.upstream_duration.clone(),
                    child: std::sync::OnceLock::new(),
                },
            };
            let _ = routes.insert(&r.host, &r.path, Arc::new(route));
        }
        Self {
            routes,
            identity: IdentityNamespace::from_config(config),
            forwarding: Forwarding::new(
                config.server.trusted_proxies.clone(),
                config.server.request_id_header.clone(),
            ),
            paths: config.paths,
            gateway_prefix: config.gateway_prefix.clone(),
            access_log: config.log.access_log,
            forward_auth: config.forward_auth.clone(),
            identity_headers: config.identity_headers.clone(),
            head_limits: config.server.head_limits,
            auth,
            csrf: config.csrf.clone(),
            upstreams: upstreams.into_values().collect(),
        }
    }

    /// Look up the upstreams' server names once, before this config serves (at most
    /// `patience`: a slow resolver delays a start or reload, never a request; a name not
    /// resolved by then is looked up again by its follow task).
    pub(crate) async fn resolve(&self, patience: std::time::Duration) {
        let all = async {
            for u in self.upstreams.iter().filter(|u| u.has_names()) {
                u.resolve(true).await;
            }
        };
        if tokio::time::timeout(patience, all).await.is_err() {
            tracing::warn!("upstream name lookup still running after {patience:?}; serving without the names not resolved yet");
        }
    }

    /// Whether a canonical path is the gateway's own (`/.authgate` or below `/.authgate/`).
    pub(crate) fn is_gateway_path(&self, path: &str) -> bool {
        path.starts_with(&self.gateway_prefix) || path == self.gateway_prefix.trim_end_matches('/')
    }
}
