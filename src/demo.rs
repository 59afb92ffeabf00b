//! The demo upstream: an HTTP server that reports what it received.
//!
//! It answers every request with the method, path, headers and body size it saw — as JSON,
//! or as a readable page for browsers — which is what the demo shows, what the load script
//! measures against, and what the integration tests assert on. Query parameters steer it:
//! `echo_sleep_ms=N` delays the answer, `echo_bytes=N` streams an N-byte body, `echo_quiet`
//! answers a bare `ok` (for load tests, so the upstream's own work stays small).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// The two ends of the connection a request came in on, reported so tests can tell servers
/// apart and see connection reuse.
#[derive(Clone, Copy)]
struct Conn {
    local: std::net::SocketAddr,
    peer: std::net::SocketAddr,
}

async fn echo(req: Request<Incoming>, conn: Conn) -> Result<Response<Body>, Infallible> {
    let query = req.uri().query().unwrap_or("").to_string();
    if let Some(ms) = query_param(&query, "echo_sleep_ms").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    if query_param(&query, "echo_quiet").is_some() {
        return Ok(full(StatusCode::OK, "text/plain", "ok\n"));
    }
    if let Some(n) = query_param(&query, "echo_bytes").and_then(|v| v.parse::<usize>().ok()) {
        // Streamed in 64 KiB chunks without Content-Length: exercises unbuffered pass-through.
        const CHUNK: usize = 64 * 1024;
        let chunks = n.div_ceil(CHUNK);
        let body = StreamBody::new(stream::iter((0..chunks).map(move |i| {
            let len = CHUNK.min(n - i * CHUNK);
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; len])))
        })));
        let mut r = Response::new(BodyExt::boxed(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(r);
    }

    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |pq| pq.as_str().to_string());
    let version = format!("{:?}", req.version());
    // The gateway's own notion of "a browser page" (one function for both).
    let wants_html = crate::answer::audience(req.method(), req.headers()).page;
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body_bytes = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => 0,
    };

    if wants_html {
        // Identity headers first and highlighted: they are what the demo is about.
        let is_identity = |k: &str| {
            k.starts_with("x-forwarded-user")
                || k.starts_with("x-forwarded-email")
                || k.starts_with("x-forwarded-groups")
                || k.starts_with("x-forwarded-preferred")
        };
        #[derive(serde::Serialize)]
        struct Row<'a> {
            name: &'a str,
            value: &'a str,
            identity: bool,
        }
        let rows = |identity: bool| {
            headers
                .iter()
                .filter(move |(k, _)| is_identity(k) == identity)
                .map(move |(k, v)| Row {
                    name: k,
                    value: v,
                    identity,
                })
        };
        let rows: Vec<Row> = rows(true).chain(rows(false)).collect();
        let user = headers
            .iter()
            .find(|(k, _)| k == "x-forwarded-user")
            .map(|(_, u)| u.as_str());
        let page = demo_page(minijinja::context! {
            user => user,
            method => method,
            target => target,
            headers => rows,
        });
        return Ok(full(StatusCode::OK, "text/html; charset=utf-8", page));
    }
    let json = serde_json::json!({
        "method": method,
        "target": target,
        "version": version,
        "headers": headers,
        "body_bytes": body_bytes,
        "server": conn.local.to_string(),
        "peer": conn.peer.to_string(),
    });
    Ok(full(StatusCode::OK, "application/json", json.to_string()))
}

/// The demo's page: the gateway's default layout (auto-escaped), not overridable.
fn demo_page(ctx: minijinja::Value) -> String {
    let mut env = crate::pages::environment();
    let base = crate::pages::TEMPLATES[0];
    let rendered = env
        .add_template(base.0, base.1)
        .and_then(|()| env.add_template("demo.html", include_str!("demo.html")))
        .and_then(|()| env.get_template("demo.html")?.render(ctx));
    rendered.unwrap_or_else(|e| format!("demo page: {e}"))
}

/// Serve the echo app on `listener` (HTTP/1.1 and h2c) until the task is dropped.
pub async fn serve_echo(listener: TcpListener) {
    serve_echo_with(listener, |s| async move { Ok::<_, std::io::Error>(s) }).await
}

/// Like [`serve_echo`], with each accepted stream first passed through `wrap` (e.g. a TLS
/// handshake in tests).
pub async fn serve_echo_with<W, F, S>(listener: TcpListener, wrap: W)
where
    W: Fn(tokio::net::TcpStream) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = std::io::Result<S>> + Send + 'static,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut backoff = crate::backoff::Backoff::accept();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => {
                backoff.succeeded();
                a
            }
            Err(e) => {
                // EMFILE and the like: pause instead of spinning on an error that persists.
                static ACCEPT_LOG: crate::ratelimit_log::Throttle =
                    crate::ratelimit_log::Throttle::new(crate::ratelimit_log::WINDOW);
                let pause = backoff.failed();
                if let Some(n) = ACCEPT_LOG.hit("accept") {
                    tracing::warn!(error = %e, retry_in = ?pause, "demo upstream: accept failed{n}");
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let conn = Conn { local, peer };
        let wrapped = wrap(stream);
        tokio::spawn(async move {
            let Ok(stream) = wrapped.await else {
                return;
            };
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    service_fn(move |req| echo(req, conn)),
                )
                .await;
        });
    }
}

/// Run the echo app on its own thread and runtime; returns once it is listening.
pub fn spawn_echo_thread(addr: std::net::SocketAddr) -> std::io::Result<std::net::SocketAddr> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    std::thread::Builder::new()
        .name("demo-upstream".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                match TcpListener::from_std(std_listener) {
                    Ok(l) => serve_echo(l).await,
                    Err(e) => tracing::error!(error = %e, "demo upstream cannot listen"),
                }
            });
        })?;
    Ok(local)
}

/// The demo's config: a public and a protected route in front of the echo app.
pub const DEMO_CONFIG: &str = include_str!("demo.toml");
