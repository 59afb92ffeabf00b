//! The admin listener: `/healthz`, `/readyz`, `/metrics`, and the session API
//! ([`sessions`]).
//!
//! Served by a small hyper server on its own address (default 127.0.0.1:9090), never on a
//! public listener: metrics and readiness details are for the operator, not the internet.
//! `/readyz` turns 503 as soon as shutdown starts, so load balancers drain the instance while
//! in-flight requests finish.
//!
//! Providers in readiness: the instance is ready while at least one provider can take a
//! sign-in (with one provider, that one); a provider that is down is listed as such in the
//! JSON (`providers.<id>`: ready, consecutive failures, failures among the last attempts
//! (`oidc::provider::LIVENESS_WINDOW`), last error, how long unavailable)
//! without making the instance unready while another can serve. Sessions and cached keys
//! keep working through a provider outage, so a probe that must not pull every replica out
//! of service for an outage they all share can ask `/readyz?exclude=providers`.
//! Every 503 of the admin listener carries `Retry-After`.
//!
//! Bounded like a public listener, since it shares the process's file descriptors with the
//! proxy and the sidecar deployment binds it on all addresses: a request head, the first or
//! a later one on a keep-alive connection, must be complete within [`HEAD_TIMEOUT`] (so an
//! idle keep-alive connection is closed after it too); a connection that moves no byte for
//! [`IDLE_TIMEOUT`] otherwise (a client that does not read its answer) is closed; beyond
//! [`MAX_CONNECTIONS`] open connections new ones are closed at once (logged, rate-limited).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;

use crate::answer::{Admin, AuthReadiness, Readiness};
use crate::metrics::Metrics;

pub(crate) mod sessions;

use sessions::{ApiRequest, SessionsApi};

/// A request head (the first or a later one on a connection) must be complete this soon;
/// hyper's timer runs from the moment it waits for a head, so it also closes a keep-alive
/// connection idle between requests.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that neither reads nor writes for this long is closed (a client that
/// stopped reading its answer; idle keep-alive is bounded by [`HEAD_TIMEOUT`] already).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open admin connections at most; beyond, new ones are closed at once. Probes and scrapers
/// need a handful.
pub const MAX_CONNECTIONS: usize = 256;

static REFUSED_LOG: crate::ratelimit_log::Throttle =
    crate::ratelimit_log::Throttle::new(crate::ratelimit_log::WINDOW);

/// A stream that records when it last moved a byte (milliseconds since `epoch`).
struct Tracked<S> {
    inner: S,
    epoch: Instant,
    last: Arc<AtomicU64>,
}

impl<S> Tracked<S> {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Process health shared between the proxy, the admin server and the signal handlers.
#[derive(Default)]
pub(crate) struct Health {
    /// Set when shutdown begins.
    pub(crate) draining: AtomicBool,
    /// Set once the proxy service is running with a loaded config.
    pub(crate) started: AtomicBool,
    pub(crate) auth: crate::oidc::SharedAuth,
}

impl Health {
    pub(crate) fn new(auth: crate::oidc::SharedAuth) -> Self {
        Self {
            auth,
            ..Self::default()
        }
    }

    /// What the instance can serve; with `exclude_providers`, providers are listed but do
    /// not count.
    pub(crate) async fn readiness_with(&self, exclude_providers: bool) -> Readiness {
        let config = self.started.load(Ordering::Acquire);
        let draining = self.draining.load(Ordering::Acquire);
        let mut ready = config && !draining;
        let auth = match self.auth.load_full() {
            None => None,
            Some(auth) => {
                let session_store = auth.sessions().store.ping().await.is_ok();
                let providers: Vec<_> = (auth.providers().iter())
                    .map(|p| (p.id().to_string(), p.status()))
                    .collect();
                let sign_in = providers.iter().any(|(_, st)| st.ready);
                ready &= session_store && (sign_in || exclude_providers);
                Some(AuthReadiness {
                    session_store,
                    session_cache_coherent: auth.sessions().cache.is_coherent(),
                    sign_in,
                    providers,
                })
            }
        };
        Readiness {
            ready,
            config,
            draining,
            auth,
        }
    }
}

pub(crate) struct AdminService {
    listener: Mutex<Option<std::net::TcpListener>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    sessions: Arc<SessionsApi>,
}

impl AdminService {
    /// `listener` is bound by the caller before the server starts, so a taken port fails
    /// the start instead of leaving a gateway without health checks.
    pub(crate) fn new(
        listener: std::net::TcpListener,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        sessions: SessionsApi,
    ) -> Self {
        Self {
            listener: Mutex::new(Some(listener)),
            metrics,
            health,
            sessions: Arc::new(sessions),
        }
    }
}

/// Every answer of the admin listener, written by the one answer module.
async fn handle(
    req: Request<Incoming>,
    metrics: &Metrics,
    health: &Health,
    sessions: &SessionsApi,
) -> Response<Full<Bytes>> {
    crate::answer::admin(answer(req, metrics, health, sessions).await)
}

/// Whether `/readyz?exclude=providers` (also in a list: `exclude=a&exclude=providers`).
fn excludes_providers(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .any(|(k, v)| k == "exclude" && v.split(',').any(|c| c == "providers"))
    })
}

async fn answer(
    req: Request<Incoming>,
    metrics: &Metrics,
    health: &Health,
    sessions: &SessionsApi,
) -> Admin {
    if SessionsApi::owns(req.uri().path()) {
        return sessions
            .handle(ApiRequest {
                method: req.method(),
                path: req.uri().path(),
                query: req.uri().query(),
                authorization: req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
            })
            .await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Admin::MethodNotAllowed;
    }
    match req.uri().path() {
        "/healthz" => Admin::Alive,
        "/readyz" => {
            let exclude = excludes_providers(req.uri().query());
            Admin::Readiness(health.readiness_with(exclude).await)
        }
        "/metrics" => Admin::Metrics(metrics.render()),
        _ => Admin::NotFound,
    }
}

/// One admin connection, until it closes or idles out ([`IDLE_TIMEOUT`]).
async fn serve(
    stream: tokio::net::TcpStream,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    sessions: Arc<SessionsApi>,
) {
    let svc = service_fn(move |req| {
        let metrics = metrics.clone();
        let health = health.clone();
        let sessions = sessions.clone();
        async move { Ok::<_, Infallible>(handle(req, &metrics, &health, &sessions).await) }
    });
    let last = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let io = Tracked {
        inner: stream,
        epoch,
        last: last.clone(),
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = tick.tick() => {
                let idle = epoch.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if idle < IDLE_TIMEOUT {
                    continue;
                }
                if closing {
                    // Not even a graceful close went through: drop it.
                    break;
                }
                // Closes an idle connection now, lets a request finish.
                conn.as_mut().graceful_shutdown();
                closing = true;
                last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        }
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(std_listener) = self.listener.lock().ok().and_then(|mut l| l.take()) else {
            return;
        };
        let listener = match std_listener
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpListener::from_std(std_listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin listener unusable");
                return;
            }
        };
        let mut shutting_down = false;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut backoff = crate::backoff::Backoff::accept();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => {
                            backoff.succeeded();
                            a
                        }
                        Err(e) => {
                            // EMFILE and the like: do not spin on an error that persists.
                            let pause = backoff.failed();
                            if let Some(n) = REFUSED_LOG.hit("accept") {
                                tracing::warn!(error = %e, retry_in = ?pause, "admin listener: accept failed{n}");
                            }
                            tokio::time::sleep(pause).await;
                            continue;
                        }
                    };
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        if let Some(n) = REFUSED_LOG.hit("full") {
                            tracing::warn!(%peer, max = MAX_CONNECTIONS, "admin listener: connection refused, {MAX_CONNECTIONS} already open{n}");
                        }
                        drop(stream);
                        continue;
                    };
                    let (metrics, health) = (self.metrics.clone(), self.health.clone());
                    let sessions = self.sessions.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        serve(stream, metrics, health, sessions).await;
                    });
                }
                changed = shutdown.changed(), if !shutting_down => {
                    // Keep answering during the grace period; only readiness changes.
                    shutting_down = true;
                    if changed.is_ok() && *shutdown.borrow() {
                        self.health.draining.store(true, Ordering::Release);
                        tracing::info!("shutdown started: /readyz now reports not ready");
                    }
                }
            }
        }
    }
}
