//! OTLP trace export through the real binary: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, each
//! sampled request is one span at a small OTLP/HTTP (JSON) receiver here: the client's trace
//! and parent, the gateway's span id (the one the upstream was given as parent), method, path,
//! route, status; a client's unsampled trace is not exported; a trace started by the gateway
//! is sampled and exported.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{client, echo, eventually, Gateway, Opts, Seen};

/// Every JSON body POSTed to the receiver, with its path and content type.
type Received = Arc<Mutex<Vec<(String, String, serde_json::Value)>>>;

/// A minimal OTLP/HTTP receiver: answers 200 `{}` to every request (keep-alive), keeps
/// each body.
async fn receiver() -> (SocketAddr, Received) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let got: Received = Arc::default();
    let keep = got.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s, keep.clone()));
        }
    });
    (addr, got)
}

async fn serve(mut c: TcpStream, got: Received) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match c.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match c.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: serde_json::Value =
            serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or_default();
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        got.lock()
            .unwrap()
            .push((path, header("content-type").unwrap_or_default(), body));
        buf.drain(..head_end + len);
        let answer =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        if c.write_all(answer).await.is_err() {
            return;
        }
    }
}

/// Every span received so far.
fn spans(got: &Received) -> Vec<serde_json::Value> {
    got.lock()
        .unwrap()
        .iter()
        .flat_map(|(_, _, b)| {
            b["resourceSpans"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["scopeSpans"].as_array().into_iter().flatten())
                .flat_map(|s| s["spans"].as_array().into_iter().flatten())
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect()
}

fn attr<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

/// The upstream's `traceparent`, split: trace id, parent id, flags.
async fn upstream_trace(gw: &Gateway, path: &str, traceparent: Option<&str>) -> Vec<String> {
    let mut req = client().get(gw.url(path));
    if let Some(t) = traceparent {
        req = req.header("traceparent", t);
    }
    let seen: Seen = req.send().await.unwrap().json().await.unwrap();
    seen.header("traceparent")
        .unwrap()
        .split('-')
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_requests_are_exported_as_spans() {
    let (collector, got) = receiver().await;
    let e = echo().await;
    let gw = Gateway::start_with(
        &format!("[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nid = \"app\"\npath = \"/app\"\nupstream = \"app\"\npublic = true\n"),
        Opts {
            env: vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                    Some(format!("http://{collector}")),
                ),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(), None),
                ("OTEL_SERVICE_NAME".into(), Some("gateway-under-test".into())),
            ],
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;

    let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let a = upstream_trace(&gw, "/app/a?secret=querytoken", Some(sampled)).await;
    assert_eq!(a[0], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(a[2], "01");
    let b = upstream_trace(&gw, "/app/b", Some(unsampled)).await;
    assert_eq!(b[2], "00", "the client's decision not to sample is kept");
    let c = upstream_trace(&gw, "/app/c", None).await;
    assert_eq!(c[2], "01", "a trace started while exporting is sampled");
    assert_eq!(
        client()
            .get(gw.url("/nowhere"))
            .header("traceparent", sampled)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let all_in = eventually(Duration::from_secs(10), || async { spans(&got).len() >= 3 }).await;
    let spans = spans(&got);
    assert!(all_in, "{spans:?}\n{}", gw.log());
    {
        let got = got.lock().unwrap();
        for (path, content_type, body) in got.iter() {
            assert_eq!(path, "/v1/traces");
            assert_eq!(content_type, "application/json");
            let resource = &body["resourceSpans"][0]["resource"]["attributes"][0];
            assert_eq!(resource["key"], "service.name");
            assert_eq!(resource["value"]["stringValue"], "gateway-under-test");
        }
    }
    let find = |span_id: &str| {
        spans
            .iter()
            .find(|s| s["spanId"] == span_id)
            .unwrap_or_else(|| panic!("no span {span_id} in {spans:?}"))
    };
    // The client's trace: its span is the gateway span's parent; the gateway span is the
    // upstream's parent.
    let s = find(&a[1]);
    assert_eq!(s["traceId"], a[0]);
    assert_eq!(s["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(s["kind"], 2);
    assert_eq!(s["name"], "GET app");
    assert_eq!(
        attr(s, "http.request.method").unwrap()["stringValue"],
        "GET"
    );
    assert_eq!(attr(s, "url.path").unwrap()["stringValue"], "/app/a");
    assert_eq!(
        attr(s, "http.response.status_code").unwrap()["intValue"],
        "200"
    );
    assert_eq!(attr(s, "authgate.route").unwrap()["stringValue"], "app");
    assert_eq!(attr(s, "authgate.upstream").unwrap()["stringValue"], "app");
    let start: u128 = s["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let end: u128 = s["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(start > 0 && end >= start, "{s}");
    // Started here: no parent.
    let s = find(&c[1]);
    assert_eq!(s["traceId"], c[0]);
    assert!(s.get("parentSpanId").is_none(), "{s}");
    // Answered by the gateway itself: exported too, with its status.
    let refused = spans
        .iter()
        .find(|s| attr(s, "http.response.status_code").unwrap()["intValue"] == "404")
        .unwrap_or_else(|| panic!("no 404 span in {spans:?}"));
    assert_eq!(refused["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    // Not sampled by the client: not exported. No query string anywhere.
    assert!(spans.iter().all(|s| s["traceId"] != b[0]), "{spans:?}");
    assert!(!format!("{spans:?}").contains("querytoken"));

    let m = gw.metrics().await;
    assert!(
        m.contains("authgate_trace_spans_total{outcome=\"exported\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("authgate_trace_spans_total{outcome=\"failed\"} 0"),
        "{m}"
    );
}

/// Without the OTEL variables nothing is exported, no span counters appear, and a trace
/// started by the gateway is not sampled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_without_the_environment() {
    let e = echo().await;
    let gw = Gateway::start_with(
        &format!("[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nid = \"app\"\npath = \"/app\"\nupstream = \"app\"\npublic = true\n"),
        Opts {
            env: vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), None),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(), None),
            ],
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    let t = upstream_trace(&gw, "/app/x", None).await;
    assert_eq!(t[2], "00");
    assert!(!gw.metrics().await.contains("authgate_trace_spans_total"));
}

/// A collector that is down: requests are answered as ever, the spans are counted as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_no_request() {
    let closed = common::free_port();
    let e = echo().await;
    let gw = Gateway::start_with(
        &format!("[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nid = \"app\"\npath = \"/app\"\nupstream = \"app\"\npublic = true\n"),
        Opts {
            env: vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), None),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(),
                    Some(format!("http://127.0.0.1:{closed}/v1/traces")),
                ),
            ],
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    for _ in 0..5 {
        assert_eq!(
            client()
                .get(gw.url("/app/x"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let counted = eventually(Duration::from_secs(10), || async {
        gw.metrics()
            .await
            .contains("authgate_trace_spans_total{outcome=\"failed\"} 5")
    })
    .await;
    assert!(counted, "{}\n{}", gw.metrics().await, gw.log());
    assert!(gw.log().contains("OTLP export failed"), "{}", gw.log());
}
