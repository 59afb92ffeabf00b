//! Per-request state carried between the Pingora phases.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::routes::{Route, Runtime};
use crate::answer::Audience;
use crate::forwarded::{Origin, RequestId};
use crate::oidc::BearerIdentity;
use crate::path::CanonicalPath;
use crate::session::SessionRef;
use crate::trace::Trace;

pub(crate) struct RequestCtx {
    /// The config snapshot this request started with: a reload mid-request cannot change
    /// the route or headers halfway through.
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) start: Instant,
    pub(crate) in_flight: bool,
    pub(crate) peer_ip: Option<IpAddr>,
    pub(crate) origin: Origin,
    pub(crate) request_id: RequestId,
    /// The W3C trace this request belongs to (see `crate::trace`), once its head is read.
    pub(crate) trace: Option<Trace>,
    /// The request's host in canonical form (`host[:port]`): what the route was chosen on,
    /// and so what the upstream receives as `Host` and `X-Forwarded-Host`.
    pub(crate) host: http::HeaderValue,
    /// How the client wants answers, once decided (see `answer::audience`).
    pub(crate) audience: Option<Audience>,
    pub(crate) path: Option<CanonicalPath>,
    /// What the upstream receives instead of `path` (the route's `strip_prefix`/`rewrite`);
    /// `None`: `path` itself.
    pub(crate) upstream_path: Option<String>,
    pub(crate) route: Option<Arc<Route>>,
    /// The upstream server of the current attempt (valid when the pool is swapped).
    pub(crate) server: Option<Arc<crate::upstream::Server>>,
    /// Bit set of servers already tried by this request.
    pub(crate) tried: u64,
    /// When the current upstream attempt began (server chosen, before connecting).
    pub(crate) upstream_start: Option<Instant>,
    /// From the start of the last upstream attempt to its response head: connect, send,
    /// the upstream's own time. `None` when no upstream answered.
    pub(crate) upstream_latency: Option<Duration>,
    /// Code of the refusal, when the gateway answered itself.
    pub(crate) refusal: Option<&'static str>,
    /// The caller's session, on protected routes.
    pub(crate) session: Option<SessionRef>,
    /// Or the caller's verified bearer token, on routes that accept them.
    pub(crate) bearer: Option<Arc<BearerIdentity>>,
    /// The route's claim headers for the caller (`crate::claim_headers`), part of the
    /// decision; empty (no allocation) on routes without them.
    pub(crate) claim_headers: Vec<(crate::out_header::OutName, http::HeaderValue)>,
}

impl RequestCtx {
    pub(crate) fn new(runtime: Arc<Runtime>) -> Self {
        Self {
            runtime,
            start: Instant::now(),
            in_flight: false,
            peer_ip: None,
            origin: Origin {
                trusted: false,
                https: false,
                variant_from_trusted: false,
            },
            request_id: RequestId::default(),
            trace: None,
            host: http::HeaderValue::from_static(""),
            audience: None,
            path: None,
            upstream_path: None,
            route: None,
            server: None,
            tried: 0,
            upstream_start: None,
            upstream_latency: None,
            refusal: None,
            session: None,
            bearer: None,
            claim_headers: Vec::new(),
        }
    }
}
