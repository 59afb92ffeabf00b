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
//!   from accept (after the TLS handshake) to close. At the limit, the connections that have
//!   no request in progress (idle keep-alive, or still sending a head) are closed oldest
//!   first, a few at a time ([`EVICT_BATCH`] at most), to make room (nginx does the same with its
//!   "reusable" connections); a new connection is refused (closed at once) only when every
//!   connection has a request in progress. A request in progress is never cut for room.
//! - **Timeouts**: the first request head must arrive whole within `request_header_timeout`
//!   of the connection's start; after a response the connection may wait
//!   `keepalive_timeout` for the next request's first byte, and that head must then arrive
//!   whole within `request_header_timeout` of its first byte. Each bound is a deadline for
//!   the whole head, not per read. A connection past one is closed without an answer.
//! - **Draining**: once [`Drain::begin`] is called (SIGTERM, SIGQUIT), every response carries
//!   `Connection: close` (set by the proxy glue), so keep-alive clients move to a new
//!   connection after their next answer instead of finding theirs reset. Pingora's own
//!   shutdown closes every idle keep-alive connection at once when the listeners close
//!   (`HttpProxy::http_cleanup`); the driver does not forward that cleanup, so an idle
//!   connection stays usable (and answers once, with `Connection: close`) until its
//!   keep-alive timeout or the end of the grace period.
//!
//! HTTP/2 connections (TLS ALPN or h2c) count towards the limit but are served by Pingora's
//! HTTP/2 loop (idle ones close after `keepalive_timeout`, `GOAWAY` at shutdown) and are
//! never closed to make room.
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
pub const EVICT_BATCH: usize = 32;

/// How long a new connection waits, at the limit, for the room that closing idle ones made.
const ROOM_WAIT: Duration = Duration::from_millis(500);

/// The HTTP/2 connection preface (RFC 9113 section 3.4), for h2c listeners.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Shutdown has begun: every response from now on closes its connection.
#[derive(Debug, Default)]
pub struct Drain(AtomicBool);

impl Drain {
    pub fn begin(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn active(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `server.max_connections`, `keepalive_timeout` and `request_header_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub keepalive_timeout: Duration,
    pub request_header_timeout: Duration,
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
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }
}

/// The connection table shared by every proxy service: the limit, and the connections that
/// may be closed for room, oldest wait first.
#[derive(Debug)]
pub struct Connections {
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
    pub fn new(limits: Limits) -> Arc<Self> {
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

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.limits.max_connections - self.permits.available_permits()
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

    /// Close up to `n` connections without a request in progress, oldest wait first.
    fn evict(&self, n: usize) -> usize {
        let mut waiting = self.lock();
        let mut closed = 0;
        while closed < n {
            let Some((_, conn)) = waiting.pop_first() else {
                break;
            };
            conn.key.store(0, Ordering::Release);
            if conn.phase.load(Ordering::Acquire) != BUSY {
                conn.evicted.store(true, Ordering::Release);
                conn.wake.notify_one();
                closed += 1;
            }
        }
        closed
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
/// read): the connection now has a request in progress.
pub fn request_started(ctx: Box<dyn Any + Send + Sync>) {
    if let Ok(signal) = ctx.downcast::<HeadSignal>() {
        let HeadSignal(conn, table) = *signal;
        conn.phase.store(BUSY, Ordering::Release);
        table.unlist(&conn);
        conn.wake.notify_one();
    }
}

/// Pingora's `ServerApp` for a proxy service: the connection limit and timeouts around
/// `app` (an `HttpProxy`).
pub struct Driver<A> {
    app: Arc<A>,
    table: Arc<Connections>,
    h2c: bool,
}

impl<A> Driver<A> {
    pub fn new(app: A, table: Arc<Connections>, h2c: bool) -> Self {
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
        });
        let mut settings = None;
        let mut first = true;
        loop {
            if !first {
                self.table.wait(conn);
            }
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
            return Some(request.await);
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
            self.table.unlist(&conn);
            conn.phase.store(BUSY, Ordering::Release);
            return ServerApp::process_new(&self.app, stream, shutdown).await;
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
}

impl Watched {
    /// Read what has arrived (at most 4 KiB) into the prefix. The buffer lives on the stack
    /// only while a read is ready, so a waiting connection holds no buffer.
    fn poll_prefix(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if !self.prefix.is_empty() {
            return Poll::Ready(Ok(self.prefix.len()));
        }
        let mut tmp = [0u8; 4096];
        let mut buf = ReadBuf::new(&mut tmp);
        match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
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
