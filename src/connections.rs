//! Downstream connections: how many, how long they may wait, and how they end.
//!
//! Pingora 0.9 serves an HTTP/1.1 connection in a loop of its own (`ServerApp` for every
//! `HttpServerApp`) that has no connection limit, keeps an idle keep-alive connection
//! forever (the client's `Connection: keep-alive` turns Pingora's 60 s keep-alive into
//! "infinite"), and times a request head only per `read()` (a slow-loris sending a byte
//! every 59 s holds a connection for ever). [`Driver`] is that loop, written again around
//! Pingora's own `process_new_http` (one request: read the head, proxy, answer):
//!
//! - **Limit** (`server.max_connections`, all listeners together): a permit per connection,
//!   from accept (after the TLS handshake: Pingora's listener does it, with its own fixed 60 s
//!   bound, before any `ServerApp` sees the connection) to close. At the limit, a few
//!   connections at a time ([`EVICT_BATCH`] at most) are closed to make room (nginx does the
//!   same with its "reusable" connections): first the idle ones (no byte of a next request
//!   yet; HTTP/2 with no stream open), oldest first; then those still sending the head of
//!   their first request that sent nothing for [`STALLED`]. A keep-alive client sending a
//!   later head, and a request in progress, are never cut for room; a new connection is
//!   refused (closed at once) only when nothing can be closed.
//! - **Timeouts**: the first request head must arrive whole within `request_header_timeout`
//!   of the connection's start; after a response the connection may wait
//!   `keepalive_timeout` for the next request's first byte, and that head must then arrive
//!   whole within `request_header_timeout` of its first byte. Each bound is a deadline for
//!   the whole head, not per read. A request body must keep a minimum pace ([`BODY_TIMEOUT`],
//!   [`MIN_BODY_RATE`]: timed in [`Watched`], enforced in `guard`), and each response write
//!   may wait [`BODY_TIMEOUT`] for the client (Pingora's write timeout). A connection past
//!   one is closed without an answer.
//! - **Draining**: once [`Drain::begin`] is called (SIGTERM, SIGQUIT), every response carries
//!   `Connection: close` (set by the proxy glue), so keep-alive clients move to a new
//!   connection after their next answer instead of finding theirs reset. Pingora's own
//!   shutdown closes every idle keep-alive connection at once when the listeners close
//!   (`HttpProxy::http_cleanup`); the driver does not forward that cleanup, so an idle
//!   connection stays usable (and answers once, with `Connection: close`) until its
//!   keep-alive timeout or the end of the grace period.
//!
//! HTTP/2 connections (TLS ALPN or h2c) are served by an accept loop of the driver's own
//! (`serve_h2`, Pingora's `accept_downstream_sessions` written again) that counts open
//! streams: with none the connection is idle (closable for room, with a `GOAWAY`), and its
//! first stream must open within `request_header_timeout`, later ones within
//! `keepalive_timeout` of the last stream's end. HTTP/2 bodies have no read timeout
//! (Pingora's is HTTP/1.x only).
//!
//! Pipelining: Pingora (pipelining off, its default) answers the first of two requests sent
//! together and then closes the connection; the client retries the second elsewhere. When
//! the extra bytes came with a bodiless request's head, that answer says `Connection: close`.
//!
//! Memory: until a request's first bytes arrive, a connection holds only its stream and a
//! small task; the driver reads those bytes itself ([`Watched`] keeps them for Pingora) and
//! only then starts Pingora's request future, which is several KiB. The proxy glue reports
//! when a head is complete ([`request_started`], through Pingora's per-connection user
//! context).

use std::any::Any;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// At the limit, at most this many connections without a request in progress are closed
/// for each new one (nginx's `ngx_drain_connections` closes 32); the rest of the room
/// serves the connections that follow. A small table closes fewer: 1 per 128 connections of
/// `max_connections`, at least 1.
pub(crate) const EVICT_BATCH: usize = 32;

/// How long a new connection waits, at the limit, for the room that closing idle ones made.
const ROOM_WAIT: Duration = Duration::from_millis(500);

/// A request body may keep the client waiting on it this long (between reads, and in all
/// beyond what [`MIN_BODY_RATE`] earns), and a response write (one chunk) may wait this long
/// for the client to read: a slow body or a slow reader cannot hold a connection for ever.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Each byte of a request body received earns the client `1 / MIN_BODY_RATE` s more of
/// waiting beyond [`BODY_TIMEOUT`] (Apache's `mod_reqtimeout` `body=30,MinRate=1024`): an
/// upload at 1 KiB/s or faster is never cut, one byte every 5 s is cut after about 30 s.
pub(crate) const MIN_BODY_RATE: u64 = 1024;

/// Pingora's default per-read timeout, kept for upgraded (WebSocket) connections.
const UPGRADE_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// At the limit, a connection still sending its first request head may be closed for room
/// (a slow-loris) once it has sent nothing for this long; a keep-alive client sending the
/// head of a later request is never closed for room.
const STALLED: Duration = Duration::from_secs(1);

/// How long an HTTP/2 connection closed for room or shut down has to take its `GOAWAY`.
const GOAWAY_FLUSH: Duration = Duration::from_millis(200);

/// The HTTP/2 connection preface (RFC 9113 section 3.4), for h2c listeners.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Shutdown has begun: every response from now on closes its connection.
#[derive(Debug, Default)]
pub(crate) struct Drain(AtomicBool);

impl Drain {
    pub(crate) fn begin(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub(crate) fn active(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `server.max_connections`, `keepalive_timeout` and `request_header_timeout`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) request_header_timeout: Duration,
}

/// Where a connection is in its request cycle.
const WAITING: u8 = 0;
/// Some bytes of a head have arrived.
const HEAD: u8 = 1;
/// A head is complete: a request is in progress.
const BUSY: u8 = 2;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_nanos() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

fn at(nanos: u64) -> Instant {
    *EPOCH + Duration::from_nanos(nanos)
}

/// One connection's state, shared by its driver, its stream and the registry.
#[derive(Debug)]
struct Conn {
    phase: AtomicU8,
    /// When the current wait began (nanos since [`EPOCH`]).
    since: AtomicU64,
    /// When the current head's first byte arrived.
    first_byte: AtomicU64,
    /// Key in the registry while the connection may be closed for room.
    key: AtomicU64,
    /// Still on its first request (HTTP/1.x).
    first: AtomicBool,
    /// When bytes last arrived from the client.
    progress: AtomicU64,
    /// HTTP/2 streams in progress.
    streams: AtomicUsize,
    /// The current request body: bytes received, nanos spent waiting on the client, and when
    /// the pending read began (0: none pending).
    body_bytes: AtomicU64,
    body_waited: AtomicU64,
    body_pending: AtomicU64,
    /// The request in progress is an upgrade (WebSocket): no body pace.
    upgrade: AtomicBool,
    /// Bytes received from the client since the current request's wait began.
    req_bytes: AtomicU64,
    evicted: AtomicBool,
    /// Wakes the driver on a phase change or an eviction.
    wake: Notify,
}

impl Conn {
    fn new() -> Self {
        Conn {
            phase: AtomicU8::new(WAITING),
            since: AtomicU64::new(now_nanos()),
            first_byte: AtomicU64::new(0),
            key: AtomicU64::new(0),
            first: AtomicBool::new(true),
            progress: AtomicU64::new(now_nanos()),
            streams: AtomicUsize::new(0),
            body_bytes: AtomicU64::new(0),
            body_waited: AtomicU64::new(0),
            body_pending: AtomicU64::new(0),
            upgrade: AtomicBool::new(false),
            req_bytes: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// Whether the current request body has kept the client's reader waiting longer than it
    /// earned ([`BODY_TIMEOUT`] plus its bytes at [`MIN_BODY_RATE`]).
    fn body_too_slow(&self) -> bool {
        if self.upgrade.load(Ordering::Acquire) {
            return false;
        }
        let pending = self.body_pending.load(Ordering::Acquire);
        let mut waited = self.body_waited.load(Ordering::Acquire);
        if pending != 0 {
            waited += now_nanos().saturating_sub(pending);
        }
        let bytes = self.body_bytes.load(Ordering::Acquire);
        let earned =
            BODY_TIMEOUT.as_nanos() as u64 + bytes.saturating_mul(1_000_000_000 / MIN_BODY_RATE);
        waited > earned
    }

    fn reset_body(&self) {
        self.upgrade.store(false, Ordering::Release);
        self.req_bytes.store(0, Ordering::Release);
        self.body_bytes.store(0, Ordering::Release);
        self.body_waited.store(0, Ordering::Release);
        self.body_pending.store(0, Ordering::Release);
    }
}

/// The connection table shared by every proxy service: the limit, and the connections that
/// may be closed for room, oldest wait first.
#[derive(Debug)]
pub(crate) struct Connections {
    limits: Limits,
    permits: Arc<Semaphore>,
    waiting: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_key: AtomicU64,
    /// Connections closed for room whose permits no new connection has claimed yet: a
    /// crowd of new connections at the limit closes one idle connection each, not a batch
    /// each.
    room: AtomicUsize,
    refused: Tally,
    evicted: Tally,
}

impl Connections {
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Connections {
            limits,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            waiting: Mutex::new(BTreeMap::new()),
            next_key: AtomicU64::new(1),
            room: AtomicUsize::new(0),
            refused: Tally::default(),
            evicted: Tally::default(),
        })
    }

    /// A permit for a new connection: free room, else room made by closing the oldest
    /// connections without a request in progress; `None`: refuse it.
    async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let deadline = tokio::time::Instant::now() + ROOM_WAIT;
        loop {
            if let Ok(p) = self.permits.clone().try_acquire_owned() {
                return Some(p);
            }
            // Room already being made (a connection closed for an earlier arrival), else
            // close a few idle connections now and keep the rest of that room for the next
            // arrivals.
            let claimed = self
                .room
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1))
                .is_ok();
            if !claimed {
                let closed = self.evict((self.limits.max_connections / 128).clamp(1, EVICT_BATCH));
                if closed == 0 {
                    break;
                }
                self.room.fetch_add(closed - 1, Ordering::AcqRel);
                if let Some(n) = self.evicted.add(closed as u64) {
                    tracing::info!(
                        closed = n,
                        max_connections = self.limits.max_connections,
                        "connection limit reached: closed idle connections to make room (count over the last minute)"
                    );
                }
            }
            // The permit a closed connection frees may go to another arrival (or the
            // connection may have started a request after all): try again, within the bound.
            let step = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
            match tokio::time::timeout_at(step, self.permits.clone().acquire_owned()).await {
                Ok(Ok(p)) => return Some(p),
                Ok(Err(_)) => break,
                Err(_) if tokio::time::Instant::now() >= deadline => break,
                Err(_) => {}
            }
        }
        if let Some(n) = self.refused.add(1) {
            tracing::warn!(
                refused = n,
                max_connections = self.limits.max_connections,
                "connection limit reached with every connection busy: new connections refused (count over the last minute)"
            );
        }
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Close up to `n` connections without a request in progress: first those idle (no byte
    /// of a next request yet; HTTP/2 without a stream), oldest wait first; then those still
    /// sending their first request's head that sent nothing for [`STALLED`]. A keep-alive
    /// client sending a later head, or any head that progresses, is not closed.
    fn evict(&self, n: usize) -> usize {
        let mut waiting = self.lock();
        let stalled = now_nanos().saturating_sub(STALLED.as_nanos() as u64);
        let mut chosen = Vec::new();
        for pass in [WAITING, HEAD] {
            for (key, conn) in waiting.iter() {
                if chosen.len() >= n {
                    break;
                }
                let phase = conn.phase.load(Ordering::Acquire);
                let pick = phase == pass
                    && (pass == WAITING
                        || (conn.first.load(Ordering::Acquire)
                            && conn.progress.load(Ordering::Acquire) <= stalled));
                if pick {
                    chosen.push(*key);
                }
            }
        }
        for key in &chosen {
            if let Some(conn) = waiting.remove(key) {
                conn.key.store(0, Ordering::Release);
                conn.evicted.store(true, Ordering::Release);
                conn.wake.notify_one();
            }
        }
        chosen.len()
    }

    /// `conn` waits for a request head from now on (and may be closed for room).
    fn wait(&self, conn: &Arc<Conn>) {
        conn.since.store(now_nanos(), Ordering::Release);
        conn.phase.store(WAITING, Ordering::Release);
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let mut waiting = self.lock();
        let old = conn.key.swap(key, Ordering::AcqRel);
        if old != 0 {
            waiting.remove(&old);
        }
        waiting.insert(key, conn.clone());
    }

    /// `conn` has a request in progress, or is gone: it is not closed for room.
    fn unlist(&self, conn: &Conn) {
        let key = conn.key.swap(0, Ordering::AcqRel);
        if key != 0 {
            self.lock().remove(&key);
        }
    }
}

/// A count reported at most once a minute: `add` returns the total to report, if it is time.
#[derive(Debug, Default)]
struct Tally {
    count: AtomicU64,
    /// When it was last reported (seconds since [`EPOCH`], plus one; 0: never).
    last: AtomicU64,
}

impl Tally {
    fn add(&self, n: u64) -> Option<u64> {
        self.count.fetch_add(n, Ordering::Relaxed);
        let now = EPOCH.elapsed().as_secs() + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now < last + 60 {
            return None;
        }
        self.last
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        Some(self.count.swap(0, Ordering::Relaxed))
    }
}

/// The per-connection user context the driver hands Pingora with each request; the proxy
/// glue passes it back to [`request_started`] once the head is complete.
struct HeadSignal(Arc<Conn>, Arc<Connections>);

/// Called by the proxy glue (`ProxyHttp::on_connection_reuse`, which Pingora calls for
/// every HTTP/1.x request of a driven connection, the first included, once its head is
/// read): the connection now has a request in progress. An upgrade (WebSocket) is a
/// conversation, not a body: no body pace, and Pingora's own 60 s per read as before.
pub(crate) fn request_started(ctx: Box<dyn Any + Send + Sync>, session: &mut ServerSession) {
    if let Ok(signal) = ctx.downcast::<HeadSignal>() {
        let HeadSignal(conn, table) = *signal;
        if session.is_upgrade_req() {
            conn.upgrade.store(true, Ordering::Release);
            session.set_read_timeout(Some(UPGRADE_READ_TIMEOUT));
        }
        // Pipelining: more bytes than this bodiless request's head arrived with it. Pingora
        // (pipelining off) will close the connection after this answer: say so in it.
        let head = session
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes().len() as u64);
        if let Some(head) = head {
            if conn.req_bytes.load(Ordering::Acquire) > head && session.is_body_empty() {
                session.set_keepalive(None);
            }
        }
        conn.phase.store(BUSY, Ordering::Release);
        table.unlist(&conn);
        conn.wake.notify_one();
    }
}

/// Pingora's `ServerApp` for a proxy service: the connection limit and timeouts around
/// `app` (an `HttpProxy`).
pub(crate) struct Driver<A> {
    app: Arc<A>,
    table: Arc<Connections>,
    h2c: bool,
}

impl<A> Driver<A> {
    pub(crate) fn new(app: A, table: Arc<Connections>, h2c: bool) -> Self {
        Driver {
            app: Arc::new(app),
            table,
            h2c,
        }
    }
}

/// Removes the connection from the table when its task ends, however it ends.
struct Listed<'a>(&'a Connections, Arc<Conn>);

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.0.unlist(&self.1);
    }
}

impl<A> Driver<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Whether `stream` speaks HTTP/2: ALPN on TLS, the preface on an h2c listener. `None`:
    /// the connection closed or stayed silent past the head timeout.
    async fn is_h2(&self, stream: &mut Stream) -> Option<bool> {
        if stream.get_ssl_digest().is_some() {
            return Some(matches!(stream.selected_alpn_proto(), Some(ALPN::H2)));
        }
        if !self.h2c {
            return Some(false);
        }
        let mut buf = [0u8; H2_PREFACE.len()];
        match tokio::time::timeout(
            self.table.limits.request_header_timeout,
            stream.try_peek(&mut buf),
        )
        .await
        {
            Ok(Ok(true)) => Some(buf == H2_PREFACE),
            Ok(Ok(false)) => Some(false),
            _ => None,
        }
    }

    /// Serve HTTP/1.x requests on `conn` until it closes, times out or is closed for room.
    async fn serve_h1(&self, stream: Stream, conn: &Arc<Conn>, shutdown: &ShutdownWatch) {
        let limits = self.table.limits;
        // Pingora's own keep-alive timeout bounds each read of a head after the first
        // request; the deadlines here bound the whole wait. Whole seconds, at least 1 (0
        // would mean "for ever").
        let keepalive_secs = limits.keepalive_timeout.as_secs_f64().ceil().max(1.0) as u64;
        let mut stream = Box::new(Watched {
            inner: stream,
            prefix: Vec::new(),
            conn: conn.clone(),
        });
        let mut settings = None;
        let mut first = true;
        loop {
            if !first {
                conn.first.store(false, Ordering::Release);
                self.table.wait(conn);
            }
            conn.reset_body();
            // Until a request's first byte arrives the connection holds only its stream:
            // Pingora's request future (several KiB) starts with the bytes.
            let wait = if first {
                limits.request_header_timeout
            } else {
                limits.keepalive_timeout
            };
            if !first_byte(&mut stream, conn, wait).await {
                return;
            }
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings.take() {
                HttpPersistentSettings::apply_to_session(settings, &mut session);
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            } else {
                // Pingora's HTTP/1.1 parser turns a client's keep-alive into "for ever";
                // ours is set again for every request.
                session.set_keepalive(Some(keepalive_secs));
            }
            // A slow body or a slow reader of the response: Pingora's per-read and per-write
            // bounds (its default: 60 s per body read, no write bound), and the rate in
            // `guard`.
            session.set_read_timeout(Some(BODY_TIMEOUT));
            session.set_write_timeout(Some(BODY_TIMEOUT));
            session.set_connection_user_context(Some(Box::new(HeadSignal(
                conn.clone(),
                self.table.clone(),
            ))));
            let deadline = if first {
                at(conn.since.load(Ordering::Acquire))
            } else {
                at(conn.first_byte.load(Ordering::Acquire))
            } + limits.request_header_timeout;
            let request = self.app.process_new_http(session, shutdown);
            let Some(reused) = guard(request, conn, deadline).await else {
                tracing::debug!(
                    "connection closed: request head incomplete in time, or closed for room"
                );
                return;
            };
            let Some((next, next_settings)) = reused.map(|r| r.consume()) else {
                return;
            };
            // The stream given to Pingora comes back as it went.
            let Ok(next) = next.into_any().downcast::<Watched>() else {
                return;
            };
            stream = next;
            settings = next_settings;
            first = false;
        }
    }
}

/// Ends an HTTP/2 stream's count when its task ends, however it ends.
struct StreamGuard(Arc<Conn>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.wake.notify_one();
        }
    }
}

impl<A> Driver<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Serve an HTTP/2 connection: Pingora's accept loop (`accept_downstream_sessions`,
    /// private to Pingora) written again so the table sees its streams. With no stream in
    /// progress the connection is idle: listed (closable for room, with a `GOAWAY`), and it
    /// must open a stream within `request_header_timeout` of its start, then within
    /// `keepalive_timeout` of its last stream's end.
    async fn serve_h2(&self, stream: Stream, conn: &Arc<Conn>, shutdown: &ShutdownWatch) {
        use pingora::protocols::http::v2::server::{handshake, H2Accept, HttpSession};
        let limits = self.table.limits;
        let digest = Arc::new(pingora::protocols::Digest {
            ssl_digest: stream.get_ssl_digest(),
            timing_digest: stream.get_timing_digest(),
            proxy_digest: stream.get_proxy_digest(),
            socket_digest: stream.get_socket_digest(),
        });
        let start = at(conn.since.load(Ordering::Acquire));
        let handshake = handshake(stream, self.app.h2_options());
        let mut h2 = match tokio::time::timeout_at(
            (start + limits.request_header_timeout).into(),
            handshake,
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "HTTP/2 handshake failed");
                return;
            }
            Err(_) => return,
        };
        let mut shutdown = shutdown.clone();
        let mut closing = false;
        let mut first = true;
        let mut listed = true;
        loop {
            let idle = conn.streams.load(Ordering::Acquire) == 0;
            if idle && !listed {
                self.table.wait(conn);
                listed = true;
            } else if !idle && listed {
                conn.phase.store(BUSY, Ordering::Release);
                self.table.unlist(conn);
                listed = false;
            }
            if conn.evicted.load(Ordering::Acquire) && !closing {
                // Closed for room: no stream was in progress when it was chosen.
                h2.graceful_shutdown();
                closing = true;
            }
            if closing && idle {
                // Let the GOAWAY out, briefly; a client that does not read is not waited for.
                let _ = tokio::time::timeout(
                    GOAWAY_FLUSH,
                    HttpSession::from_h2_conn(&mut h2, digest.clone()),
                )
                .await;
                return;
            }
            let wait = if first {
                limits.request_header_timeout
            } else {
                limits.keepalive_timeout
            };
            let deadline = at(conn.since.load(Ordering::Acquire)) + wait;
            tokio::select! {
                biased;
                _ = shutdown.changed(), if !closing => {
                    h2.graceful_shutdown();
                    closing = true;
                }
                _ = conn.wake.notified() => {}
                _ = tokio::time::sleep_until(deadline.into()), if idle && !closing => {
                    h2.graceful_shutdown();
                    closing = true;
                }
                accepted = HttpSession::from_h2_conn(&mut h2, digest.clone()) => match accepted {
                    Err(e) => {
                        tracing::debug!(error = %e, "HTTP/2 connection ended");
                        return;
                    }
                    Ok(None) => return,
                    Ok(Some(H2Accept::Rejected)) => {}
                    Ok(Some(H2Accept::Session(session))) => {
                        first = false;
                        conn.streams.fetch_add(1, Ordering::AcqRel);
                        let guard = StreamGuard(conn.clone());
                        let app = self.app.clone();
                        let shutdown = shutdown.clone();
                        tokio::spawn(async move {
                            let _guard = guard;
                            app.process_new_http(ServerSession::new_http2(session), &shutdown)
                                .await;
                        });
                    }
                },
            }
        }
    }
}

/// Wait for the first bytes of a request on `stream` (kept in its prefix) for at most
/// `wait` from the start of the wait. `false`: the client closed, the wait ran out, or the
/// connection was closed for room.
async fn first_byte(stream: &mut Watched, conn: &Conn, wait: Duration) -> bool {
    let deadline = at(conn.since.load(Ordering::Acquire)) + wait;
    loop {
        if conn.evicted.load(Ordering::Acquire) {
            return false;
        }
        tokio::select! {
            biased;
            read = std::future::poll_fn(|cx| stream.poll_prefix(cx)) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return false;
                }
                conn.first_byte.store(now_nanos(), Ordering::Release);
                conn.phase.store(HEAD, Ordering::Release);
                return true;
            }
            _ = conn.wake.notified() => {}
            _ = tokio::time::sleep_until(deadline.into()) => return false,
        }
    }
}

/// Run one request of `conn`, closing the connection (`None`) when its head is not complete
/// by `deadline` or it is closed for room before then.
async fn guard<F: std::future::Future>(
    request: F,
    conn: &Conn,
    deadline: Instant,
) -> Option<F::Output> {
    let mut request = std::pin::pin!(request);
    loop {
        if conn.phase.load(Ordering::Acquire) == BUSY {
            // The request runs; its body must keep a minimum pace.
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    biased;
                    done = &mut request => return Some(done),
                    _ = tick.tick() => {
                        if conn.body_too_slow() {
                            tracing::debug!(
                                received = conn.body_bytes.load(Ordering::Acquire),
                                "connection closed: request body too slow"
                            );
                            return None;
                        }
                    }
                }
            }
        }
        if conn.evicted.load(Ordering::Acquire) {
            return None;
        }
        tokio::select! {
            biased;
            done = &mut request => return Some(done),
            _ = conn.wake.notified() => {}
            _ = tokio::time::sleep_until(deadline.into()) => {
                if conn.phase.load(Ordering::Acquire) != BUSY {
                    return None;
                }
            }
        }
    }
}

#[async_trait]
impl<A> ServerApp for Driver<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Refused: dropping the stream closes it.
        let _permit = self.table.admit().await?;
        let conn = Arc::new(Conn::new());
        let _listed = Listed(&self.table, conn.clone());
        self.table.wait(&conn);
        let h2 = self.is_h2(&mut stream).await?;
        if h2 {
            // Boxed: its state (the HTTP/2 connection, several KiB) would otherwise size
            // every connection's task, HTTP/1.x ones included.
            Box::pin(self.serve_h2(stream, &conn, shutdown)).await;
            return None;
        }
        self.serve_h1(stream, &conn, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        // Not forwarded: `HttpProxy::http_cleanup` would close every idle keep-alive
        // connection the moment the listeners close. They get `Connection: close` on their
        // next answer instead, or end with their keep-alive timeout or the grace period.
    }
}

/// A downstream stream and the first bytes of the next request, read by the driver before
/// Pingora reads the rest.
#[derive(Debug)]
struct Watched {
    inner: Stream,
    prefix: Vec<u8>,
    /// Its connection: when bytes arrive, and the request body's pace.
    conn: Arc<Conn>,
}

impl Watched {
    /// Read what has arrived (at most 4 KiB) into the prefix. The buffer lives on the stack
    /// only while a read is ready, so a waiting connection holds no buffer.
    fn poll_prefix(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if !self.prefix.is_empty() {
            return Poll::Ready(Ok(self.prefix.len()));
        }
        // Uninitialised: zeroing 4 KiB on every poll was 6 % of a request's instructions.
        let mut tmp = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut buf = ReadBuf::uninit(&mut tmp);
        match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                if !buf.filled().is_empty() {
                    self.conn.progress.store(now_nanos(), Ordering::Release);
                    self.conn
                        .req_bytes
                        .fetch_add(buf.filled().len() as u64, Ordering::AcqRel);
                }
                self.prefix.extend_from_slice(buf.filled());
                Poll::Ready(Ok(self.prefix.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.drain(..n);
            if self.prefix.is_empty() {
                // Give the memory back: the connection may wait long for its next request.
                self.prefix = Vec::new();
            }
            return Poll::Ready(Ok(()));
        }
        // Once the head is in, a read of more than Pingora's one-byte idle probe reads the
        // request body: time how long it waits on the client.
        let body = self.conn.phase.load(Ordering::Acquire) == BUSY && buf.remaining() > 1;
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        let conn = &self.conn;
        let now = now_nanos();
        match &read {
            Poll::Pending if body => {
                let _ =
                    conn.body_pending
                        .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
            }
            Poll::Pending => {}
            Poll::Ready(_) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    conn.progress.store(now, Ordering::Release);
                    conn.req_bytes.fetch_add(n as u64, Ordering::AcqRel);
                }
                let pending = conn.body_pending.swap(0, Ordering::AcqRel);
                if pending != 0 {
                    conn.body_waited
                        .fetch_add(now.saturating_sub(pending), Ordering::AcqRel);
                }
                if body {
                    conn.body_bytes.fetch_add(n as u64, Ordering::AcqRel);
                }
            }
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Watched {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for Watched {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Watched {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Watched {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Watched {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Watched {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Watched {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        if !self.prefix.is_empty() {
            // Not needed after the protocol is known; the prefix would be missed.
            return Ok(false);
        }
        self.inner.try_peek(buf).await
    }
}
