//! W3C Trace Context through the real binary: a valid `traceparent` is continued (same trace
//! id, the gateway's span as the upstream's parent, `tracestate` passed on), an absent one is
//! started, an invalid or duplicated one is replaced (and its `tracestate` dropped); the
//! access log writes the trace id and the gateway's span id.

mod common;

use std::time::Duration;

use common::{client, echo, eventually, Gateway, Opts, Seen};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// The parts of a strict version-00 `traceparent`: trace id, parent id, flags.
fn parts(v: &str) -> (String, String, String) {
    let p: Vec<&str> = v.split('-').collect();
    assert_eq!(p.len(), 4, "{v}");
    assert_eq!(p[0], "00", "{v}");
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    };
    assert!(hex(p[1], 32) && hex(p[2], 16) && hex(p[3], 2), "{v}");
    assert!(
        p[1].bytes().any(|c| c != b'0') && p[2].bytes().any(|c| c != b'0'),
        "{v}"
    );
    (p[1].into(), p[2].into(), p[3].into())
}

/// The access log line (JSON) of the request with this request id.
async fn access_line(gw: &Gateway, request_id: &str) -> serde_json::Value {
    let found = eventually(Duration::from_secs(3), || async {
        gw.log().contains(request_id)
    })
    .await;
    assert!(found, "no access line for {request_id}:\n{}", gw.log());
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("authgate::access") && l.contains(request_id))
        .unwrap();
    serde_json::from_str(line).unwrap()
}

/// Send `traceparent` lines (and a `tracestate`) to `path`; the upstream's view (if it was
/// reached), the response's request id.
async fn send(gw: &Gateway, path: &str, traceparents: &[&str]) -> (Option<Seen>, String) {
    let mut req = client()
        .get(gw.url(path))
        .header("tracestate", "vendor=abc");
    for t in traceparents {
        req = req.header("traceparent", *t);
    }
    let r = req.send().await.unwrap();
    if r.status() == 200 {
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        (Some(r.json().await.unwrap()), id)
    } else {
        // The gateway's own answers name the request id in their body.
        let v: serde_json::Value = r.json().await.unwrap();
        let id = v["request_id"].as_str().unwrap_or_else(|| panic!("{v}"));
        (None, id.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_continued_started_or_replaced_and_logged() {
    let e = echo().await;
    let gw = Gateway::start_with(
        &format!("[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nid = \"app\"\npath = \"/app\"\nupstream = \"app\"\npublic = true\n"),
        Opts {
            log_extra: "format = \"json\"\n".into(),
            // Traces started here are sampled only while OTLP export is on.
            env: vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), None),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(), None),
            ],
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;

    // Valid: continued, with the gateway's span as the upstream's parent.
    let valid = format!("00-{TRACE}-{PARENT}-01");
    let (seen, id) = send(&gw, "/app/x", &[&valid]).await;
    let seen = seen.expect("proxied");
    assert_eq!(seen.all("traceparent").len(), 1);
    let (trace, parent, flags) = parts(seen.header("traceparent").unwrap());
    assert_eq!(trace, TRACE);
    assert_ne!(parent, PARENT, "the upstream's parent is the gateway's hop");
    assert_eq!(flags, "01");
    assert_eq!(seen.header("tracestate"), Some("vendor=abc"));
    let line = access_line(&gw, &id).await;
    assert_eq!(line["trace_id"], TRACE, "{line}");
    assert_eq!(line["span_id"], parent.as_str(), "{line}");

    // Absent: started here, not sampled, and the log has the same ids.
    let r = client().get(gw.url("/app/y")).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let seen: Seen = r.json().await.unwrap();
    let (trace, parent, flags) = parts(seen.header("traceparent").unwrap());
    assert_eq!(flags, "00");
    let line = access_line(&gw, &id).await;
    assert_eq!(line["trace_id"], trace.as_str(), "{line}");
    assert_eq!(line["span_id"], parent.as_str(), "{line}");

    // Invalid or duplicated: replaced by a new trace, the client's tracestate dropped.
    let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let upper = valid.to_uppercase();
    let zeros = format!("00-{}-{PARENT}-01", "0".repeat(32));
    let version = format!("01-{TRACE}-{PARENT}-01");
    let long = format!("{valid}-{}", "a".repeat(2000));
    for sent in [
        vec![upper.as_str()],
        vec![zeros.as_str()],
        vec![version.as_str()],
        vec![long.as_str()],
        vec![valid.as_str(), other],
        vec![valid.as_str(), valid.as_str()],
    ] {
        let (seen, id) = send(&gw, "/app/z", &sent).await;
        let seen = seen.expect("proxied");
        assert_eq!(seen.all("traceparent").len(), 1, "{sent:?}");
        let (trace, _, flags) = parts(seen.header("traceparent").unwrap());
        assert!(
            trace != TRACE && trace != "0af7651916cd43dd8448eb211c80319c",
            "{sent:?}"
        );
        assert_eq!(flags, "00", "{sent:?}");
        assert_eq!(seen.header("tracestate"), None, "{sent:?}");
        let line = access_line(&gw, &id).await;
        assert_eq!(line["trace_id"], trace.as_str(), "{line}");
    }

    // A request the gateway answers itself is logged with the client's trace too.
    let (seen, id) = send(&gw, "/nowhere", &[&valid]).await;
    assert!(seen.is_none());
    let line = access_line(&gw, &id).await;
    assert_eq!(line["status"], 404, "{line}");
    assert_eq!(line["trace_id"], TRACE, "{line}");
}
