//! The Pingora glue: the whole request path, top to bottom.
//!
//! 1. `request_filter`: strip client identity and untrusted forwarding headers, normalise the
//!    path, answer gateway endpoints (login, callback, logout, userinfo), route (404 if none),
//!    authenticate on protected routes: session cookie → cache → store, else 302/401 (503
//!    when the session store or every provider is down: fail closed).
//! 2. `upstream_peer`: pick a server of the route's upstream (round robin, passive health).
//! 3. `upstream_request_filter`: send the canonical path, set forwarding headers, the request
//!    ID, the W3C `traceparent` (`crate::trace`), the caller's identity headers (and the signed assertion where asked for); remove the
//!    gateway's cookies. Pingora has already removed hop-by-hop and `Connection:`-nominated
//!    headers here, so nothing a client nominates can remove what we add.
//! 4. `fail_to_connect` / `error_while_proxy` / `fail_to_proxy`: mark servers, retry, map
//!    errors to 502/504.
//! 5. `logging`: metrics and the access log (path without query: queries can hold secrets);
//!    `upstream_response_filter` has timed the upstream for both.
//!
//! Connections: `on_connection_reuse` tells the connection driver
//! (`crate::connections`) that a request head is complete (its head timeout and
//! "may be closed for room" end there); `early_request_filter` makes every response close
//! its connection once shutdown has begun.
//!
//! The pieces it calls are small and pure; this file only sequences them.

pub(crate) mod ctx;
pub(crate) mod decision;
mod forward_auth;
pub(crate) mod routes;
mod shaping;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{header, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

pub(crate) use ctx::RequestCtx;
pub(crate) use routes::{Route, Runtime};

use crate::answer::{self, Refusal};
use crate::config::front::FrontProxy;
use crate::host::{Authority, HostError};
use crate::metrics::{Metrics, NO_ROUTE};
use crate::oidc::{Reply, RequestInfo};
use crate::path;
use crate::ratelimit_log::{Throttle, WINDOW};
use crate::trace::{Trace, TRACEPARENT, TRACESTATE};
use decision::{Caller, Inbound};

/// oauth2-proxy's access token header, sent with `x_auth_request` on `pass_access_token` routes.
const X_AUTH_REQUEST_ACCESS_TOKEN: &str = crate::config::defaults::X_AUTH_REQUEST_HEADERS[4];
/// Set when a route's `strip_prefix` took a prefix off the path.
const X_FORWARDED_PREFIX: http::HeaderName = http::HeaderName::from_static("x-forwarded-prefix");

/// Outage lines of the request path: one per cause (and route) per window, with a count.
static REFRESH_DOWN: Throttle = Throttle::new(WINDOW);
static INTROSPECTION_DOWN: Throttle = Throttle::new(WINDOW);
static JWKS_DOWN: Throttle = Throttle::new(WINDOW);

/// The gateway's `ProxyHttp` implementation. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Gateway {
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Arc<Metrics>,
    /// Set when shutdown begins: every response closes its connection from then on.
    drain: Arc<crate::connections::Drain>,
    /// Where request spans go, when OTLP export is on.
    otlp: Option<crate::otlp::Exporter>,
}

impl Gateway {
    pub(crate) fn new(runtime: Arc<ArcSwap<Runtime>>, metrics: Arc<Metrics>) -> Self {
        Self {
            runtime,
            metrics,
            drain: Arc::default(),
            otlp: None,
        }
    }

    /// Export a span per sampled request (see `crate::otlp`).
    pub(crate) fn with_otlp(mut self, otlp: Option<crate::otlp::Exporter>) -> Self {
        self.otlp = otlp;
        self
    }

    /// Close each connection after its response once `drain` has begun.
    pub(crate) fn with_drain(mut self, drain: Arc<crate::connections::Drain>) -> Self {
        self.drain = drain;
        self
    }

    /// Write a response the gateway produced itself.
    async fn answer(
        &self,
        session: &mut Session,
        resp: ResponseHeader,
        body: bytes::Bytes,
    ) -> Result<bool> {
        // An unread request body would be parsed as the next request: close instead. Draining
        // (shutdown began after `early_request_filter`): `Connection: close` too.
        if !session.is_body_empty() || self.drain.active() {
            session.set_keepalive(None);
        }
        let head = session.req_header().method == http::Method::HEAD || body.is_empty();
        session.write_response_header(Box::new(resp), head).await?;
        if !head {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(true)
    }

    /// Write a reply from the login flow.
    async fn reply(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        reply: Reply,
    ) -> Result<bool> {
        if reply.status.is_client_error() || reply.status.is_server_error() {
            ctx.refusal = Some("gateway_endpoint_error");
        }
        let (resp, body) = reply.into_response();
        self.answer(session, resp, body).await
    }

    /// The request decision (see [`decision`]): the one place, for proxy mode and
    /// forward-auth alike, that says whether a request passes and as whom. The chosen route
    /// is kept in `ctx` either way, for metrics and the access log.
    async fn decide(
        &self,
        rt: &Runtime,
        req: &Inbound<'_>,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<Option<Caller>, Refusal> {
        let route = rt
            .routes
            .lookup(req.authority.host(), req.path.as_str())
            .cloned()
            .ok_or(Refusal::NoRoute)?;
        ctx.route = Some(route.clone());
        decision::admit(&route, req)?;
        if route.public || route.public_methods.contains(req.method) {
            // Nobody signs in for these, but the address rules and the deny rules hold.
            decision::screen(&route, req, ctx.request_id.as_str())?;
            return Ok(None);
        }
        if route.optional {
            // Identified if a credential is presented, anonymous without one; never sent to
            // sign in. Fail closed all the same: a bad bearer token is 401 and a store or
            // provider outage with a session cookie is 503 (`authenticate`), never an
            // anonymous pass that would hide a signed-in user's identity from the app only
            // while Redis is down. A cookie for a session that ended is no session.
            decision::screen(&route, req, ctx.request_id.as_str())?;
            let Some(caller) = self.authenticate(req, ctx, &route).await? else {
                return Ok(None);
            };
            return self.admit_caller(rt, &route, req, ctx, caller);
        }
        let Some(caller) = self.authenticate(req, ctx, &route).await? else {
            // With no provider of the route ready, a redirect to sign in could only loop: 503.
            // (No providers at all: the sign-in endpoint answers 503 itself.)
            let sign_in = rt
                .auth
                .as_ref()
                .is_none_or(|auth| decision::sign_in_possible(&route, auth.sign_in_states()));
            return Err(decision::unauthenticated(rt, &route, req, sign_in));
        };
        self.admit_caller(rt, &route, req, ctx, caller)
    }

    /// A caller who proved who they are, on a required or optional route: the route's
    /// policy, then the claim headers it sends (which may refuse: `remote_user`).
    fn admit_caller(
        &self,
        rt: &Runtime,
        route: &Route,
        req: &Inbound<'_>,
        ctx: &mut RequestCtx,
        caller: Caller,
    ) -> std::result::Result<Option<Caller>, Refusal> {
        decision::authorize(rt, route, req, &caller, ctx.request_id.as_str())?;
        if let Some(rc) = &route.claim_headers {
            ctx.claim_headers = claim_headers(rt, &route.id, rc, &caller)?;
        }
        Ok(Some(caller))
    }

    /// Who is calling, for a protected route: a bearer token where the route accepts them
    /// and the request carries one, else the session cookie. Store trouble is a refusal
    /// (503), never "anonymous"; a bad token is 401, never a fall-back to the cookie.
    async fn authenticate(
        &self,
        req: &Inbound<'_>,
        ctx: &RequestCtx,
        route: &Route,
    ) -> std::result::Result<Option<Caller>, Refusal> {
        let Some(auth) = &ctx.runtime.auth else {
            return Ok(None);
        };
        if route.bearer {
            let token = match crate::oidc::bearer::presented_token(req.headers, req.query) {
                Ok(t) => t,
                Err(crate::oidc::bearer::Presented::Ambiguous) => {
                    return Err(Refusal::AmbiguousCredentials)
                }
                Err(crate::oidc::bearer::Presented::NotBearer) => {
                    return Err(Refusal::InvalidToken)
                }
            };
            if let Some(token) = token {
                return match auth
                    .verify_bearer(token, &route.audiences, &route.providers)
                    .await
                {
                    Ok(id) => Ok(Some(Caller::Bearer(id))),
                    // The status is `answer`'s (401 refused, 503 outage: the client keeps its
                    // token and retries); outages are logged once per cause and window with
                    // a count, not once per request.
                    Err(e) => {
                        use crate::jwt::JwtError;
                        match &e {
                            JwtError::IntrospectionUnavailable(why) => {
                                if let Some(n) = INTROSPECTION_DOWN.hit(&route.id) {
                                    tracing::error!(request_id = %ctx.request_id, route = %route.id, error = %why, occurrences = n.count, "token introspection unavailable{n}");
                                }
                            }
                            JwtError::JwksUnavailable(why) => {
                                if let Some(n) = JWKS_DOWN.hit(&route.id) {
                                    tracing::error!(request_id = %ctx.request_id, route = %route.id, error = %why, occurrences = n.count, "bearer token cannot be checked: provider keys unavailable{n}");
                                }
                            }
                            _ => {
                                tracing::info!(request_id = %ctx.request_id, route = %route.id, error = %e, "bearer token refused");
                            }
                        }
                        Err(Refusal::from(&e))
                    }
                };
            }
        }
        let s = match auth.session(req.headers, req.https).await {
            Ok(Some(s))
                if route.providers.is_empty()
                    || route.providers.iter().any(|p| **p == *s.record.provider) =>
            {
                s
            }
            Ok(_) => return Ok(None),
            Err(e) => {
                if e.fault() == answer::Fault::Bug {
                    tracing::error!(request_id = %ctx.request_id, error = %e, "session data cannot be decoded (a bug)");
                } else if let Some(n) = crate::ratelimit_log::session_store_down(&e) {
                    tracing::error!(request_id = %ctx.request_id, error = %e, occurrences = n.count, "session store unavailable{n}");
                }
                return Err(Refusal::from(&e));
            }
        };
        // Near or past access-token expiry: refreshed once across replicas (usually no wait).
        match auth.fresh(s).await {
            Ok(s) => Ok(s.map(Caller::Session)),
            Err(()) => {
                if let Some(n) = REFRESH_DOWN.hit("") {
                    tracing::error!(request_id = %ctx.request_id, occurrences = n.count, "session token expired and cannot be refreshed now{n}");
                }
                Err(Refusal::ProviderUnavailable)
            }
        }
    }

    /// Answer the request ourselves. Returns `Ok(true)`: "response sent" for Pingora.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        refusal: Refusal,
    ) -> Result<bool> {
        let (resp, body) =
            answer::render(&refusal, audience(session, ctx), ctx.request_id.as_str());
        ctx.refusal = Some(refusal.code());
        self.answer(session, resp, body).await
    }

    /// Requests below the gateway prefix: login, callback, logout, userinfo, the assertion
    /// key set, back-channel logout and forward-auth. Never proxied.
    async fn gateway_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        authority: &Authority,
    ) -> Result<bool> {
        let path = ctx.path.as_ref().map_or("", |p| p.as_str());
        let endpoint = path[rt.gateway_prefix.len().min(path.len())..].to_string();
        let Some(auth) = &rt.auth else {
            // Sign-in is reported unavailable rather than pretending to work.
            let r = match endpoint.as_str() {
                "login" => Refusal::LoginUnavailable,
                _ => Refusal::NoEndpoint,
            };
            return self.refuse(session, ctx, r).await;
        };
        // Envoy's ext_authz appends the original path to `{prefix}auth`.
        let check = endpoint == "auth"
            || (endpoint.starts_with("auth/")
                && rt
                    .forward_auth
                    .as_ref()
                    .is_some_and(|f| f.proxy == FrontProxy::Envoy));
        if let (true, Some(fa)) = (check, &rt.forward_auth) {
            return self.forward_auth(session, ctx, rt, fa).await;
        }
        let reply = match endpoint.as_str() {
            "jwks.json" => Some(auth.jwks()),
            "backchannel-logout" => {
                if session.req_header().method != http::Method::POST {
                    return self.refuse(session, ctx, Refusal::MethodNotAllowed).await;
                }
                let Some(body) = read_body(session, crate::oidc::backchannel::MAX_BODY).await?
                else {
                    return self.refuse(session, ctx, Refusal::BodyTooLarge).await;
                };
                Some(auth.backchannel_logout(&body).await)
            }
            // `callback/<provider>`: each provider's own address when there are several.
            e if matches!(e, "login" | "callback" | "logout" | "userinfo")
                || e.starts_with("callback/") =>
            {
                let info = RequestInfo {
                    req: session.req_header(),
                    https: ctx.origin.https,
                    authority,
                    path,
                    request_id: ctx.request_id.as_str(),
                };
                Some(match e {
                    "login" => auth.login(&info).await,
                    "logout" => auth.logout(&info).await,
                    "userinfo" => auth.userinfo(&info).await,
                    _ => auth.callback(&info).await,
                })
            }
            _ => None,
        };
        match reply {
            Some(r) => self.reply(session, ctx, r).await,
            None => self.refuse(session, ctx, Refusal::NoEndpoint).await,
        }
    }
}

/// The route's claim headers for an identified caller (part of the decision: a `remote_user`
/// that cannot be derived is 403 in both modes).
fn claim_headers(
    rt: &Runtime,
    route_id: &str,
    rc: &crate::claim_headers::RouteClaims,
    caller: &Caller,
) -> std::result::Result<Vec<(crate::out_header::OutName, HeaderValue)>, Refusal> {
    let (identity, id_token): (&[_], _) = match caller {
        Caller::Session(s) => (
            &s.headers,
            match (&rc.settings.id_token, &rt.auth) {
                (Some(_), Some(auth)) => auth.id_token(s),
                _ => None,
            },
        ),
        Caller::Bearer(b) => (&b.headers, None),
    };
    let vouched = crate::claim_headers::Vouched {
        provider: caller.provider(),
        claims: caller.claims(),
        identity,
        id_token: id_token.as_deref(),
    };
    rc.headers(&rt.identity_headers, &vouched, route_id)
        .map_err(|_| Refusal::Forbidden)
}

/// The request's host, by the one strict parser (design decision 11): the `Host` header,
/// the HTTP/2 `:authority` or an absolute-form target's authority. Several `Host` headers,
/// or two of these that disagree, are refused: a front proxy or the upstream could pick the
/// other one. From a trusted proxy, `X-Forwarded-Host` (passed on to the upstream) must
/// parse too, and is returned beside the host, parsed once.
pub(super) fn request_authority(
    req: &RequestHeader,
    trusted: bool,
) -> std::result::Result<(Authority, Option<Authority>), Refusal> {
    let mut hosts = req.headers.get_all(header::HOST).iter();
    let (host, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err(Refusal::AmbiguousHost);
    }
    let from_header = host.map(|h| Authority::parse(h.as_bytes()));
    let from_target = match req.uri.authority() {
        // HTTP/2's `:authority`.
        Some(a) => Some(Authority::parse(a.as_str().as_bytes())),
        None => target_authority(req.raw_path())?.map(Authority::parse),
    };
    let authority = match (from_header, from_target) {
        (None, None) => return Err(Refusal::BadHost(HostError::Empty)),
        (Some(h), None) => h.map_err(Refusal::BadHost)?,
        (None, Some(t)) => t.map_err(Refusal::BadHost)?,
        (Some(h), Some(t)) => {
            let (h, t) = (h.map_err(Refusal::BadHost)?, t.map_err(Refusal::BadHost)?);
            if h != t {
                return Err(Refusal::AmbiguousHost);
            }
            t
        }
    };
    if !trusted {
        return Ok((authority, None));
    }
    let mut fwd = req.headers.get_all("x-forwarded-host").iter();
    let forwarded = match (fwd.next(), fwd.next()) {
        (None, _) => None,
        (Some(v), None) => Some(Authority::parse(v.as_bytes()).map_err(Refusal::BadHost)?),
        (Some(_), Some(_)) => return Err(Refusal::AmbiguousHost),
    };
    Ok((authority, forwarded))
}

/// Whether a trusted proxy's `X-Forwarded-Host` (as [`request_authority`] read it) names the
/// host a proxied request is routed on. It goes upstream as the host the client asked for,
/// and apps build URLs and pick tenants from it; a proxy that does not set it passes the
/// client's along. The port may differ (nginx's `$host` has none): routes are chosen by host
/// name. Not for the gateway's own endpoints: a forward-auth check comes to the gateway's
/// Host about the app's.
fn forwarded_host_agrees(forwarded: Option<&Authority>, authority: &Authority) -> bool {
    forwarded.is_none_or(|f| f.host() == authority.host())
}

/// The authority an absolute-form request target names (`GET http://host/x`), read from the
/// target as sent: Pingora keeps only the path in the URI (and the whole target for the wire),
/// so `uri.authority()` is empty even then. Its own classifier finds the authority, so the
/// boundary is the one Pingora checks against `Host` too. Origin form (`/x`) and `*` name none;
/// any other target (another scheme, `http:host`, `http:/\\host`) is refused.
pub(super) fn target_authority(raw: &[u8]) -> std::result::Result<Option<&[u8]>, Refusal> {
    use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
    if raw.first() == Some(&b'/') || raw == b"*" {
        return Ok(None);
    }
    match raw_target_authority(raw) {
        RawTargetAuthority::Absolute {
            scheme, authority, ..
        } if scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https") => {
            Ok(Some(authority))
        }
        _ => Err(Refusal::BadPath(path::PathError::NotAbsolute)),
    }
}

/// Whether the upstream request's target, as it will go on the wire, is `path` in origin form
/// (with any query). An absolute-form target keeps its scheme and authority there (the
/// client's choice), so it never is.
fn is_origin_target(raw: &[u8], path: &str) -> bool {
    raw.strip_prefix(path.as_bytes())
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'?')
}

/// Make the upstream request's target `path` in origin form, with the query's bytes as the
/// client sent them (not the URI's reading of them, which replaces bytes that are not UTF-8):
/// the first `?` of a target starts its query.
fn to_origin_form(upstream: &mut RequestHeader, path: &str) -> Result<()> {
    let raw = upstream.raw_path();
    let query = raw
        .iter()
        .position(|b| *b == b'?')
        .map_or(&[][..], |i| &raw[i..]);
    let mut target = Vec::with_capacity(path.len() + query.len());
    target.extend_from_slice(path.as_bytes());
    target.extend_from_slice(query);
    upstream.set_raw_path(&target)
}

/// The canonical authority as a header value, for the upstream's `Host` and
/// `X-Forwarded-Host`: the client's own value (no copy) when it is already canonical.
fn authority_value(req: &RequestHeader, authority: &Authority) -> HeaderValue {
    if let Some(h) = req.headers.get(header::HOST) {
        if h.as_bytes() == authority.as_str().as_bytes() {
            return h.clone();
        }
    }
    // The parser admits only visible ASCII.
    HeaderValue::from_str(authority.as_str()).unwrap_or(HeaderValue::from_static(""))
}

/// How the client wants answers: forward-auth sets it from the original method; otherwise it
/// is the request's own, worked out only when the gateway answers.
fn audience(session: &Session, ctx: &RequestCtx) -> answer::Audience {
    ctx.audience.unwrap_or_else(|| {
        let req = session.req_header();
        answer::audience(&req.method, &req.headers)
    })
}

/// The request body, up to `limit` bytes; `None` when it is larger.
async fn read_body(session: &mut Session, limit: usize) -> Result<Option<bytes::Bytes>> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        if buf.len() + chunk.len() > limit {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf.freeze()))
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.runtime.load_full())
    }

    fn on_connection_reuse(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
        prev_ctx: Box<dyn std::any::Any + Send + Sync>,
    ) {
        // The head is in: the request is in progress (see the module comment).
        crate::connections::request_started(prev_ctx, session);
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Draining: `Connection: close` on this response, whoever writes it, so the client's
        // next request goes to a new connection (another instance, or the new process of
        // an upgrade) instead of one that is about to close.
        if self.drain.active() {
            session.set_keepalive(None);
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.start = Instant::now();
        self.metrics.in_flight.inc();
        ctx.in_flight = true;
        let rt = ctx.runtime.clone();

        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());

        // The head as the client sent it is bounded first, before stripping could hide what
        // it carried.
        if let Err(e) = crate::limits::check(session.req_header(), rt.head_limits) {
            ctx.request_id = crate::forwarded::RequestId::random();
            return self.refuse(session, ctx, Refusal::HeadLimit(e)).await;
        }
        // Headers next, before anything looks at the request (decisions 5 and 6).
        let req = session.req_header_mut();
        let stripped = rt.identity.strip(req);
        ctx.origin = rt.forwarding.inspect(req, ctx.peer_ip, tls);
        ctx.request_id = rt.forwarding.request_id(req, &ctx.origin);
        ctx.trace = Some(Trace::of(&req.headers, self.otlp.is_some()));
        if stripped > 0 {
            tracing::info!(request_id = %ctx.request_id, count = stripped, "stripped client-sent identity headers");
        }

        let req = session.req_header();
        let (authority, forwarded_host) = match request_authority(req, ctx.origin.trusted) {
            Ok(a) => a,
            Err(r) => return self.refuse(session, ctx, r).await,
        };
        ctx.host = authority_value(req, &authority);
        let canonical = match path::normalize(req.uri.path(), rt.paths) {
            Ok(p) => p,
            Err(e) => return self.refuse(session, ctx, Refusal::BadPath(e)).await,
        };

        if rt.is_gateway_path(canonical.as_str()) {
            ctx.path = Some(canonical);
            return self.gateway_endpoint(session, ctx, &rt, &authority).await;
        }

        if let Some(f) = &forwarded_host {
            if !forwarded_host_agrees(Some(f), &authority) {
                return self.refuse(session, ctx, Refusal::AmbiguousHost).await;
            }
            // It goes upstream as the gateway read it: in its canonical spelling (with its
            // own port, the public one where Host may carry an internal one).
            let req = session.req_header_mut();
            if req.headers.get("x-forwarded-host").map(|v| v.as_bytes())
                != Some(f.as_str().as_bytes())
            {
                req.insert_header("x-forwarded-host", f.as_str())?;
            }
        }
        let req = session.req_header();
        let inbound = Inbound {
            method: &req.method,
            authority: &authority,
            path: &canonical,
            query: req.uri.query(),
            headers: &req.headers,
            https: ctx.origin.https,
            client: crate::forwarded::ClientAddr::proxied(
                &rt.forwarding,
                ctx.origin.trusted,
                &req.headers,
                ctx.peer_ip,
            ),
        };
        let decided = self.decide(&rt, &inbound, ctx).await;
        // Shaped only once the request is admitted: a caller who may not pass learns nothing
        // of the route's rewrite.
        let shaped = match (
            &decided,
            ctx.route.as_ref().and_then(|r| r.shaping.as_deref()),
        ) {
            (Ok(_), Some(s)) => Some(shaping::upstream_path(s, canonical.as_str(), rt.paths)),
            _ => None,
        };
        ctx.path = Some(canonical);
        match decided {
            Ok(Some(Caller::Session(s))) => ctx.session = Some(s),
            Ok(Some(Caller::Bearer(b))) => ctx.bearer = Some(b),
            Ok(None) => {}
            Err(refusal) => return self.refuse(session, ctx, refusal).await,
        }
        match shaped {
            Some(Ok(p)) => ctx.upstream_path = p,
            Some(Err(shaping::NotCanonical(out))) => {
                // Paths only, never the query: it may carry secrets.
                tracing::warn!(request_id = %ctx.request_id, route = ctx.route.as_ref().map(|r| &*r.id), path = ctx.path.as_ref().map(|p| p.as_str()), rewritten = %out, "the route's rewrite made a path that is not canonical; refused");
                return self.refuse(session, ctx, Refusal::PathNotRewritable).await;
            }
            None => {}
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no route selected");
        };
        let Some((i, server)) = route.upstream.select(ctx.tried) else {
            return Error::e_explain(ErrorType::ConnectNoRoute, "no upstream server left to try");
        };
        if i < 64 {
            ctx.tried |= 1 << i;
        }
        let peer = server.peer();
        ctx.server = Some(server);
        ctx.upstream_start = Some(Instant::now());
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(route), Some(path)) = (ctx.route.as_ref(), ctx.path.as_ref()) else {
            return Error::e_explain(ErrorType::InternalError, "request not routed");
        };
        // The upstream gets exactly the path the route decision was made on (or what the
        // route's shaping made of it), in origin form: an absolute-form target's scheme and
        // authority would be a second account of the request, the client's. The query goes as
        // the client sent it.
        let path = ctx.upstream_path.as_deref().unwrap_or(path.as_str());
        if !is_origin_target(upstream.raw_path(), path) {
            to_origin_form(upstream, path)?;
        }
        // Before the gateway's own headers below: a route's edits cannot replace them.
        if let Some(s) = &route.shaping {
            shaping::edit_request(&s.request, upstream)?;
        }
        if !route.upstream.pass_host_header {
            if let Some(server) = &ctx.server {
                upstream.insert_header(header::HOST, server.authority().clone())?;
            }
        } else if upstream.headers.get(header::HOST) != Some(&ctx.host) {
            // The host the route was chosen on, never a spelling the upstream reads otherwise.
            upstream.insert_header(header::HOST, ctx.host.clone())?;
        }
        ctx.runtime.forwarding.apply(
            upstream,
            ctx.peer_ip,
            &ctx.origin,
            &ctx.host,
            &ctx.request_id,
        )?;
        if let (Some(s), Some(canonical)) = (&route.shaping, &ctx.path) {
            // A trusted proxy's own prefix survived the strip of forwarding headers; an
            // untrusted client's did not.
            let previous = upstream.headers.get(X_FORWARDED_PREFIX);
            if let Some(v) = shaping::forwarded_prefix(s, canonical.as_str(), previous) {
                upstream.insert_header(X_FORWARDED_PREFIX, v)?;
            }
        }
        // The trace goes on with the gateway's hop as the upstream's parent; the client's
        // `tracestate` only with the client's own trace.
        if let Some(t) = &ctx.trace {
            upstream.insert_header(TRACEPARENT, t.traceparent())?;
            if !t.continued() {
                upstream.remove_header(&TRACESTATE);
            }
        }
        if let Some(auth) = &ctx.runtime.auth {
            // The upstream never sees the gateway's cookies, on any route.
            auth.strip_cookie(upstream)?;
            if route.identity_assertion {
                let vouched = ctx
                    .session
                    .as_ref()
                    .map(|s| (&*s.record.provider, &s.record.claims))
                    .or(ctx
                        .bearer
                        .as_ref()
                        .map(|b| (b.provider.as_str(), &b.claims)));
                if let Some(v) = vouched.and_then(|(p, c)| auth.assertion_for(&route.id, p, c)) {
                    auth.assertion_header().insert(upstream, v)?;
                }
            }
            if let Some(b) = &ctx.bearer {
                for (name, value) in &b.headers {
                    name.insert(upstream, value.clone())?;
                }
                // The client's own token goes upstream only where the route says so.
                if !route.pass_access_token {
                    upstream.remove_header(&header::AUTHORIZATION);
                }
            }
            if let Some(user) = &ctx.session {
                for (name, value) in &user.headers {
                    name.insert(upstream, value.clone())?;
                }
                if route.pass_access_token {
                    if let Some(v) = auth.access_token(user) {
                        if route
                            .claim_headers
                            .as_ref()
                            .is_some_and(|c| c.settings.x_auth_request)
                        {
                            upstream.insert_header(X_AUTH_REQUEST_ACCESS_TOKEN, v.clone())?;
                        }
                        auth.access_token_header().insert(upstream, v)?;
                    }
                }
            }
        }
        if let Some(claims) = &route.claim_headers {
            // The gateway writes Authorization here (Basic, or the ID token): a client's own
            // never passes, signed in or not (public methods, optional sign-in).
            if claims.settings.owns_authorization() {
                upstream.remove_header(&header::AUTHORIZATION);
            }
            for (name, value) in &ctx.claim_headers {
                name.insert(upstream, value.clone())?;
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The upstream's answer head is in: its latency, for the access log and metrics.
        let latency = ctx.upstream_start.map(|t| t.elapsed());
        if let (Some(route), Some(d)) = (&ctx.route, latency) {
            route
                .upstream_duration
                .observe(&route.upstream.name, d.as_secs_f64());
        }
        ctx.upstream_latency = latency;
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Shutdown began while this request was in flight: `Connection: close` on its answer.
        if self.drain.active() {
            session.set_keepalive(None);
        }
        // The route's edits first: the gateway's own response headers below win over them.
        if let Some(s) = ctx.route.as_ref().and_then(|r| r.shaping.as_deref()) {
            shaping::edit_response(&s.response, resp)?;
        }
        if let Some(auth) = &ctx.runtime.auth {
            if resp.headers.contains_key(header::SET_COOKIE) {
                let dropped = auth.drop_set_cookie(resp)?;
                if dropped > 0 {
                    tracing::warn!(request_id = %ctx.request_id, count = dropped, "dropped the upstream's Set-Cookie for a gateway cookie");
                }
            }
        }
        ctx.runtime
            .forwarding
            .request_id_header()
            .insert_response(resp, ctx.request_id.value().clone())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(route), Some(server)) = (ctx.route.as_ref(), ctx.server.as_ref()) {
            route.upstream.report_failure(server);
            self.metrics
                .upstream_errors
                .with_label_values(&[&route.upstream.name, "connect"])
                .inc();
            // Connecting failed, so nothing was sent: safe to try another server.
            let tried = ctx.tried.count_ones() as usize;
            if tried < route.upstream.len() {
                e.set_retry(true);
            }
            tracing::warn!(request_id = %ctx.request_id, upstream = %route.upstream.name, peer = %peer, error = e.etype().as_str(), "upstream connect failed");
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if let (Some(route), Some(server)) = (ctx.route.as_ref(), ctx.server.as_ref()) {
            if e.esource() == &ErrorSource::Upstream {
                route.upstream.report_failure(server);
                let kind = match e.etype() {
                    ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
                    _ => "other",
                };
                self.metrics
                    .upstream_errors
                    .with_label_values(&[&route.upstream.name, kind])
                    .inc();
            }
        }
        // Pingora's default retry policy: only idempotent requests, only on reused connections.
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let status: u16 = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() != &ErrorSource::Downstream =>
            {
                504
            }
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 502,
            },
        };
        if status > 0 && session.response_written().is_none() {
            let refusal = match status {
                504 => Refusal::UpstreamTimeout,
                400 => Refusal::BadRequest,
                _ => Refusal::UpstreamUnavailable,
            };
            let (resp, body) =
                answer::render(&refusal, audience(session, ctx), ctx.request_id.as_str());
            ctx.refusal = Some(refusal.code());
            let status = resp.status.as_u16();
            // The connection is not reused after this answer: say so.
            session.set_keepalive(None);
            let wrote = async {
                session.write_response_header(Box::new(resp), false).await?;
                session.write_response_body(Some(body), true).await
            }
            .await;
            if let Err(we) = wrote {
                tracing::debug!(request_id = %ctx.request_id, error = %we, "could not send error response");
            }
            return FailToProxy {
                error_code: status,
                can_reuse_downstream: false,
            };
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx.in_flight {
            self.metrics.in_flight.dec();
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.start.elapsed();
        let route_id: &str = ctx.route.as_ref().map_or(NO_ROUTE, |r| &r.id);
        let code = http::StatusCode::from_u16(status).ok();
        let status_label = code.as_ref().map_or("0", |c| c.as_str());
        self.metrics
            .requests
            .with_label_values(&[route_id, status_label])
            .inc();
        match &ctx.route {
            Some(r) => r.duration.observe(elapsed.as_secs_f64()),
            None => self
                .metrics
                .request_duration
                .with_label_values(&[NO_ROUTE])
                .observe(elapsed.as_secs_f64()),
        }
        if let (Some(route), Some(server), None) = (&ctx.route, &ctx.server, e) {
            route.upstream.report_success(server);
        }
        if ctx.runtime.access_log {
            access_log(session, e, ctx, route_id, status, elapsed);
        }
        if let (Some(otlp), Some(trace)) = (&self.otlp, ctx.trace) {
            if trace.sampled() {
                let end = std::time::SystemTime::now();
                otlp.export(crate::otlp::Span {
                    trace,
                    start: end.checked_sub(elapsed).unwrap_or(end),
                    end,
                    method: session.req_header().method.clone(),
                    path: ctx
                        .path
                        .as_ref()
                        .map_or_else(String::new, |p| p.as_str().to_string()),
                    route: ctx.route.as_ref().map(|r| r.id.clone()),
                    upstream: ctx
                        .route
                        .as_ref()
                        .filter(|_| ctx.server.is_some())
                        .map(|r| r.upstream.name.clone()),
                    status,
                });
            }
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // Our access log line carries the error kind; Pingora's own line would log the raw
        // request summary, query string included.
        true
    }
}

/// Longest user agent written in the access log; a longer one is cut at a character boundary.
const MAX_LOGGED_USER_AGENT: usize = 256;

/// One access log line (`authgate::access`). Fields whose value is unknown are absent (JSON)
/// rather than a placeholder. Never a secret: the canonical path without its query, the
/// verified subject rather than any credential, no cookie or header other than the user
/// agent. Every value borrows from the request or its context: no allocation here.
fn access_log(
    session: &Session,
    e: Option<&Error>,
    ctx: &RequestCtx,
    route_id: &str,
    status: u16,
    elapsed: std::time::Duration,
) {
    let req = session.req_header();
    let upstream = ctx.route.as_ref().filter(|_| ctx.server.is_some());
    let server = upstream
        .and(ctx.server.as_ref())
        .and_then(|s| s.authority().to_str().ok());
    let (user, provider) = match (&ctx.session, &ctx.bearer) {
        (Some(s), _) => (Some(s.record.claims.subject()), Some(&*s.record.provider)),
        (None, Some(b)) => (Some(b.claims.subject()), Some(b.provider.as_str())),
        (None, None) => (None, None),
    };
    // Visible ASCII only (`to_str`), bounded; the formatter escapes quotes and backslashes.
    let user_agent = req
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| truncate(s, MAX_LOGGED_USER_AGENT));
    tracing::info!(
        target: "authgate::access",
        request_id = %ctx.request_id,
        trace_id = ctx.trace.as_ref().map(|t| t.trace_id()),
        span_id = ctx.trace.as_ref().map(|t| t.span_id()),
        client = ctx.peer_ip.map(tracing::field::display),
        method = req.method.as_str(),
        host = ctx.host.to_str().ok().filter(|h| !h.is_empty()),
        // Canonical path only: the query string may carry secrets.
        path = ctx.path.as_ref().map(|p| p.as_str()),
        status,
        route = route_id,
        upstream = upstream.map(|r| &*r.upstream.name),
        upstream_server = server,
        upstream_ms = ctx.upstream_latency.map(|d| d.as_secs_f64() * 1000.0),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        bytes_in = session.body_bytes_read() as u64,
        bytes_out = session.body_bytes_sent() as u64,
        // Who, for audits: the verified subject, never a credential.
        user,
        provider,
        refusal = ctx.refusal,
        user_agent,
        error = e.map(|e| e.etype().as_str()),
        "request"
    );
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &[u8], hosts: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target, None).unwrap();
        for h in hosts {
            r.append_header("Host", *h).unwrap();
        }
        r
    }

    #[test]
    fn the_target_authority_is_read_from_the_target_as_sent() {
        for (target, want) in [
            (&b"/x"[..], None),
            (b"*", None),
            (b"http://a.example/x", Some(&b"a.example"[..])),
            (b"HTTPS://A.example:8443/x?q=1", Some(b"A.example:8443")),
            (b"http://a.example", Some(b"a.example")),
            (b"http://a.example?q", Some(b"a.example")),
            (b"http://u@a.example/x", Some(b"u@a.example")),
        ] {
            assert_eq!(target_authority(target).unwrap(), want, "{target:?}");
        }
        for target in [
            &b"ftp://a.example/x"[..],
            b"ws://a.example/x",
            b"http:a.example/x",
            b"http:/\\a.example/x",
            b"http://a.example\\b.example/x",
            b"://a.example/x",
            b"mailto:a@example",
            b"a.example:443",
            b"x",
        ] {
            assert!(
                matches!(
                    target_authority(target),
                    Err(Refusal::BadPath(path::PathError::NotAbsolute))
                ),
                "{target:?}"
            );
        }
    }

    #[test]
    fn an_absolute_target_must_name_the_host() {
        let ok = request_authority(&req(b"http://App.Example./x", &["app.example"]), false);
        assert_eq!(ok.unwrap().0.as_str(), "app.example");
        let ok = request_authority(&req(b"http://app.example/x", &[]), false);
        assert_eq!(ok.unwrap().0.as_str(), "app.example");
        for (target, hosts) in [
            (&b"http://evil.example/x"[..], &["app.example"][..]),
            (b"http://app.example:8443/x", &["app.example"]),
            (b"https://evil.example/x?q=1", &["app.example"]),
        ] {
            assert!(
                matches!(
                    request_authority(&req(target, hosts), false),
                    Err(Refusal::AmbiguousHost)
                ),
                "{target:?}"
            );
        }
        assert!(matches!(
            request_authority(&req(b"http://u@app.example/x", &["app.example"]), false),
            Err(Refusal::BadHost(_))
        ));
    }

    #[test]
    fn http2_authority_is_the_target_authority() {
        // HTTP/2's `:authority` is in the URI (no Host header needed), and the wire target
        // is the path.
        let mut r = req(b"/x", &[]);
        r.set_uri("https://App.Example/x?q".parse().unwrap());
        assert_eq!(
            request_authority(&r, false).unwrap().0.as_str(),
            "app.example"
        );
        assert!(is_origin_target(r.raw_path(), "/x"));
        r.append_header("Host", "other.example").unwrap();
        assert!(matches!(
            request_authority(&r, false),
            Err(Refusal::AmbiguousHost)
        ));
    }

    #[test]
    fn a_trusted_forwarded_host_must_name_the_routed_host() {
        let a = Authority::parse(b"app.example").unwrap();
        for (xfh, agrees) in [
            (None, true),
            (Some("app.example"), true),
            (Some("App.Example."), true),
            (Some("app.example:8443"), true),
            (Some("other.example"), false),
            (Some("app.example.evil"), false),
            (Some("sub.app.example"), false),
            (Some("app.example:1:2"), false),
            (Some(""), false),
        ] {
            let mut r = req(b"/x", &["app.example"]);
            if let Some(v) = xfh {
                r.append_header("X-Forwarded-Host", v).unwrap();
            }
            // An X-Forwarded-Host that does not parse is refused before it is compared.
            let got = request_authority(&r, true)
                .is_ok_and(|(host, f)| host == a && forwarded_host_agrees(f.as_ref(), &a));
            assert_eq!(got, agrees, "{xfh:?}");
        }
    }

    #[test]
    fn origin_form_keeps_the_querys_bytes() {
        for (target, path, want) in [
            (
                &b"http://h/a/./b?x=\xff&y"[..],
                "/a/b",
                &b"/a/b?x=\xff&y"[..],
            ),
            (b"HTTPS://h/a?x=%20", "/a", b"/a?x=%20"),
            (b"http://h?q", "/", b"/?q"),
            (b"http://h", "/", b"/"),
            (b"/a/%62?\xfe", "/a/b", b"/a/b?\xfe"),
            (b"/a//b", "/a/b", b"/a/b"),
        ] {
            let mut r = req(target, &["h"]);
            assert!(!is_origin_target(r.raw_path(), path), "{target:?}");
            to_origin_form(&mut r, path).unwrap();
            assert_eq!(r.raw_path(), want, "{target:?}");
            assert!(is_origin_target(r.raw_path(), path), "{target:?}");
            assert!(r.uri.authority().is_none(), "{target:?}");
        }
        // Already origin form with bytes that are not UTF-8 in the query: left as sent.
        let r = req(b"/x?a=\xff", &["h"]);
        assert!(is_origin_target(r.raw_path(), "/x"));
        assert_eq!(r.raw_path(), b"/x?a=\xff");
    }

    #[test]
    fn only_origin_form_of_the_decided_path_goes_as_is() {
        assert!(is_origin_target(b"/a/b", "/a/b"));
        assert!(is_origin_target(b"/a/b?x=1", "/a/b"));
        assert!(is_origin_target(b"/a/b?", "/a/b"));
        assert!(is_origin_target(b"/a/b?x=\xff", "/a/b"));
        assert!(!is_origin_target(b"/a/bc", "/a/b"));
        assert!(!is_origin_target(b"/a/%62", "/a/b"));
        assert!(!is_origin_target(b"/a", "/a/b"));
        assert!(!is_origin_target(b"http://h/a/b", "/a/b"));
        assert!(!is_origin_target(b"HTTPS://h/a/b?x=1", "/a/b"));
        // What Pingora makes of an absolute-form target: the URI has the path, the wire the
        // whole target.
        let r = req(b"https://h.example/a/b?x=1", &["h.example"]);
        assert_eq!(r.uri.path(), "/a/b");
        assert_eq!(r.uri.query(), Some("x=1"));
        assert!(!is_origin_target(r.raw_path(), "/a/b"));
    }
}
