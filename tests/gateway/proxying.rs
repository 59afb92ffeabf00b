//! Proxying: WebSocket upgrades, HTTP/2 from clients, TLS to upstreams with a test CA,
//! failures (502/504), streaming bodies, round robin with passive failure marking, pooling.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{handshake::server, Message};

use crate::common::{client, echo, test_pki, tls_echo, write, Gateway, Opts, Seen};

fn public_app(servers: &str, extra: &str) -> String {
    format!("[upstreams.app]\nservers = [{servers}]\n{extra}\n\n[[routes]]\nupstream = \"app\"\npublic = true\n")
}

/// A WebSocket echo server that records the request headers of each handshake.
async fn ws_echo() -> (std::net::SocketAddr, Arc<Mutex<Vec<(String, String)>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let seen = seen2.clone();
            tokio::spawn(async move {
                // The callback's signature is tungstenite's.
                #[allow(clippy::result_large_err)]
                let cb = |req: &server::Request, resp: server::Response| {
                    *seen.lock().unwrap() = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(s, cb).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through_with_clean_headers() {
    let (ws, seen) = ws_echo().await;
    let gw = Gateway::start(&public_app(&format!("\"http://{ws}\""), "")).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/socket", gw.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert("x-forwarded-user", "mallory".parse().unwrap());
    req.headers_mut()
        .insert("x-auth-request-email", "m@evil".parse().unwrap());
    let (mut conn, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("handshake in time")
    .expect("websocket handshake through the gateway");
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        conn.send(Message::text(format!("hello {i}")))
            .await
            .unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), conn.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    let headers = seen.lock().unwrap().clone();
    assert!(!headers.is_empty());
    for (k, _) in &headers {
        assert!(
            !k.eq_ignore_ascii_case("x-forwarded-user")
                && !k.eq_ignore_ascii_case("x-auth-request-email"),
            "{k} reached the websocket upstream"
        );
    }
    assert!(headers
        .iter()
        .any(|(k, v)| k == "x-forwarded-for" && v == "127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_over_tls_and_h2c() {
    let e = echo().await;
    let pki = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "cert.pem", &pki.cert_pem);
    let key = write(dir.path(), "key.pem", &pki.key_pem);
    let body = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n\n{}",
        cert.display(),
        key.display(),
        public_app(&format!("\"http://{e}\""), "")
    );
    let gw = Gateway::start_with(
        &body,
        Opts {
            listener_extra: "h2c = true".into(),
            ..Opts::default()
        },
    )
    .await;
    let tls_port = gw.listener(1).port();

    // TLS listener: HTTP/2 negotiated by ALPN; the upstream sees X-Forwarded-Proto https.
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
    let tls_client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = tls_client
        .get(format!("https://localhost:{tls_port}/h2?q=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let seen: Seen = resp.json().await.unwrap();
    assert_eq!(seen.target, "/h2?q=1");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));

    // Plain listener with h2c: prior-knowledge HTTP/2.
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let resp = h2c
        .get(gw.url("/plain"))
        .header("x-forwarded-user", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let seen: Seen = resp.json().await.unwrap();
    assert_eq!(seen.target, "/plain");
    assert!(seen.header("x-forwarded-user").is_none());
    // HTTP/1.1 still works on the h2c listener.
    assert_eq!(
        client().get(gw.url("/h1")).send().await.unwrap().version(),
        reqwest::Version::HTTP_11
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verified_with_custom_ca() {
    let pki = test_pki();
    let up = tls_echo(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let good = Gateway::start(&public_app(
        &format!("\"https://localhost:{}\"", up.port()),
        &format!("tls_ca_file = \"{}\"\nhttp2 = true", ca.display()),
    ))
    .await;
    let resp = client().get(good.url("/secure")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Seen = resp.json().await.unwrap();
    assert_eq!(seen.target, "/secure");

    // Same upstream without the CA: certificate verification fails closed.
    let bad = Gateway::start(&public_app(
        &format!("\"https://localhost:{}\"", up.port()),
        "",
    ))
    .await;
    let resp = client().get(bad.url("/secure")).send().await.unwrap();
    assert_eq!(resp.status(), 502);

    // Wrong name: the CA is right but the certificate is not for this SNI.
    let wrong = Gateway::start(&public_app(
        &format!("\"https://127.0.0.1:{}\"", up.port()),
        &format!(
            "tls_ca_file = \"{}\"\ntls_server_name = \"other.example\"",
            ca.display()
        ),
    ))
    .await;
    assert_eq!(
        client()
            .get(wrong.url("/secure"))
            .send()
            .await
            .unwrap()
            .status(),
        502
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_and_slow_is_504() {
    let dead = crate::common::dead_port();
    let gw = Gateway::start(&public_app(
        &format!("\"http://127.0.0.1:{}\"", dead.port),
        "connect_timeout = \"1s\"",
    ))
    .await;
    let resp = client()
        .get(gw.url("/x"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "upstream_unavailable");
    assert!(
        !v.to_string().contains(&dead.port.to_string()),
        "internals leaked: {v}"
    );

    let e = echo().await;
    let slow = Gateway::start(&public_app(
        &format!("\"http://{e}\""),
        "read_timeout = \"300ms\"",
    ))
    .await;
    let started = std::time::Instant::now();
    let resp = client()
        .get(slow.url("/x?echo_sleep_ms=3000"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "timeout not honoured"
    );
    assert_eq!(
        client()
            .get(slow.url("/x?echo_sleep_ms=10"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways() {
    let e = echo().await;
    let gw = Gateway::start(&public_app(&format!("\"http://{e}\""), "")).await;
    let n = 32 * 1024 * 1024;
    let resp = client()
        .get(gw.url(&format!("/big?echo_bytes={n}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut total = 0;
    let mut chunks = 0;
    while let Some(c) = stream.next().await {
        total += c.unwrap().len();
        chunks += 1;
    }
    assert_eq!(total, n);
    assert!(chunks > 1, "response was not streamed");

    // A streamed upload of unknown length (chunked) arrives whole.
    let up = 8 * 1024 * 1024;
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        (0..up / 65536).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 65536])),
    ));
    let resp = client()
        .post(gw.url("/upload"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Seen = resp.json().await.unwrap();
    assert_eq!(seen.body_bytes, up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_skips_failed_servers_and_pools_connections() {
    let (a, b) = (echo().await, echo().await);
    let dead = crate::common::dead_port();
    let gw = Gateway::start(&public_app(
        &format!(
            "\"http://{a}\", \"http://127.0.0.1:{}\", \"http://{b}\"",
            dead.port
        ),
        "max_fails = 1\nfail_timeout = \"60s\"\nconnect_timeout = \"1s\"",
    ))
    .await;
    let c = client();
    let mut servers = Vec::new();
    let mut peers = std::collections::HashSet::new();
    for _ in 0..12 {
        let resp = c.get(gw.url("/rr")).send().await.unwrap();
        assert_eq!(
            resp.status(),
            200,
            "a dead server must be retried on another one"
        );
        let seen: Seen = resp.json().await.unwrap();
        peers.insert(seen.peer.clone());
        servers.push(seen.server);
    }
    let a_count = servers.iter().filter(|s| **s == a.to_string()).count();
    let b_count = servers.iter().filter(|s| **s == b.to_string()).count();
    assert_eq!(a_count + b_count, 12);
    assert!(
        a_count >= 4 && b_count >= 4,
        "not round robin: a={a_count} b={b_count}"
    );
    // 12 sequential requests over at most a handful of upstream connections: pooled.
    assert!(
        peers.len() <= 4,
        "upstream connections not reused: {peers:?}"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("authgate_upstream_errors_total{kind=\"connect\",upstream=\"app\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_on_keepalive_connection_after_refusal() {
    // A refused request with a body must not leave that body to be read as the next request.
    let e = echo().await;
    let gw = Gateway::start(&format!(
        "[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\npath = \"/p\"\nupstream = \"app\"\npublic = true\n"
    ))
    .await;
    use std::io::{Read, Write};
    let smuggled = "GET /p/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let req = format!(
        "POST /nope HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{smuggled}",
        gw.addr,
        smuggled.len()
    );
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    // Read until the gateway closes or goes quiet; a second response would be the smuggled one.
    loop {
        match s.read(&mut buf) {
            // A signal (a child exiting) interrupts a blocking read: retry it.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "body was parsed as a request: {text}"
    );
}
