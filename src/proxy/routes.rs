//! The request path's view of the config: routes bound to upstream pools and pre-built
//! metric handles, rebuilt on every (re)load and swapped in atomically.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::Histogram;

use crate::config::Config;
use crate::forwarded::Forwarding;
use crate::identity::IdentityNamespace;
use crate::metrics::Metrics;
use crate::path::PathOptions;
use crate::routing::RouteTable;
use crate::upstream::Upstream;

/// One configured route, ready to use.
#[derive(Debug)]
pub struct Route {
    pub id: Arc<str>,
    pub upstream: Arc<Upstream>,
    pub public: bool,
    /// Forward the session's access token to the upstream.
    pub pass_access_token: bool,
    pub policy: Option<crate::policy::Policy>,
    /// Accept bearer JWTs issued for one of `audiences` by one of `providers` (empty: any).
    pub bearer: bool,
    pub audiences: Vec<String>,
    pub providers: Vec<String>,
    pub identity_assertion: bool,
    /// Pre-resolved label child: no label hashing per request.
    pub duration: Histogram,
}

/// Everything the proxy glue reads per request. Immutable; a reload builds a new one.
pub struct Runtime {
    pub routes: RouteTable<Arc<Route>>,
    pub identity: IdentityNamespace,
    pub forwarding: Forwarding,
    pub paths: PathOptions,
    /// e.g. `/.authgate/`; requests below it are answered by the gateway.
    pub gateway_prefix: String,
    pub access_log: bool,
}

impl Runtime {
    pub fn new(config: &Config, metrics: &Metrics) -> Self {
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
                pass_access_token: r.pass_access_token,
                policy: r.policy.clone(),
                bearer: r.bearer,
                audiences: r.audiences.clone(),
                providers: r.providers.clone(),
                identity_assertion: r.identity_assertion,
                duration: metrics.request_duration.with_label_values(&[r.id.as_str()]),
            };
            let _ = routes.insert(&r.host, &r.path, Arc::new(route));
        }
        Self {
            routes,
            identity: config.identity.clone(),
            forwarding: Forwarding::new(
                config.server.trusted_proxies.clone(),
                config.server.request_id_header.clone(),
            ),
            paths: config.paths,
            gateway_prefix: config.gateway_prefix.clone(),
            access_log: config.log.access_log,
        }
    }

    /// Whether a canonical path is the gateway's own (`/.authgate` or below `/.authgate/`).
    pub fn is_gateway_path(&self, path: &str) -> bool {
        path.starts_with(&self.gateway_prefix) || path == self.gateway_prefix.trim_end_matches('/')
    }
}
