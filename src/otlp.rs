//! Optional OTLP trace export: one span per request (the gateway's hop), OTLP/HTTP with the
//! JSON encoding.
//!
//! Configured the OpenTelemetry way, from the environment, so collectors' usual settings
//! apply: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) or `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (`/v1/traces` appended), `OTEL_SERVICE_NAME` (default `authgate`). Off when neither
//! endpoint is set. Only sampled traces are exported: a continued trace follows the client's
//! `sampled` flag, a trace started here is sampled while export is on (see `crate::trace`).
//!
//! The request path never waits for it: a finished span goes into a bounded queue
//! ([`QUEUE`]; dropped and counted when full), and a background task sends batches of up to
//! [`BATCH`] spans at least every [`FLUSH`], each POST bounded by [`TIMEOUT`]; a batch that
//! fails is dropped and counted (`authgate_trace_spans_total{outcome}`), never retried into
//! a pile-up. A span carries no secret: method, canonical path (no query), route, status,
//! upstream; no header value.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::metrics::SpanCounts;
use crate::trace::Trace;

/// Spans waiting to be sent at most; more are dropped.
pub(crate) const QUEUE: usize = 8192;
/// Spans per request to the collector at most.
pub(crate) const BATCH: usize = 512;
/// A batch is sent at least this often while spans wait.
pub(crate) const FLUSH: Duration = Duration::from_secs(1);
/// Each POST to the collector fails after this.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// One finished request, as exported.
#[derive(Debug)]
pub(crate) struct Span {
    pub(crate) trace: Trace,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) route: Option<std::sync::Arc<str>>,
    pub(crate) upstream: Option<std::sync::Arc<str>>,
    pub(crate) status: u16,
}

/// The request path's handle: where finished spans go. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Exporter {
    tx: mpsc::Sender<Span>,
    counts: SpanCounts,
}

impl Exporter {
    /// Queue a finished span (sampled traces only); never waits.
    pub(crate) fn export(&self, span: Span) {
        if !span.trace.sampled() {
            return;
        }
        if self.tx.try_send(span).is_err() {
            self.counts.dropped.inc();
        }
    }
}

/// The collector's URL from the environment (see the module doc), if export is on.
pub(crate) fn endpoint_from_env(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |k: &str| get(k).filter(|v| !v.trim().is_empty());
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
        set("OTEL_EXPORTER_OTLP_ENDPOINT")
            .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
    })
}

/// The exporter and its sending task, when the environment turns export on. A URL that is
/// not http(s) is an error at start.
pub(crate) fn from_env(
    metrics: &crate::metrics::Metrics,
) -> anyhow::Result<Option<(Exporter, impl std::future::Future<Output = ()>)>> {
    let Some(endpoint) = endpoint_from_env(|k| std::env::var(k).ok()) else {
        return Ok(None);
    };
    let url = url::Url::parse(&endpoint)
        .map_err(|e| anyhow::anyhow!("OTLP endpoint {endpoint:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!("OTLP endpoint {endpoint:?}: only http:// and https:// (OTLP/HTTP)");
    }
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "authgate".into());
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| anyhow::anyhow!("OTLP client: {e}"))?;
    let counts = metrics.span_counts();
    let (tx, rx) = mpsc::channel(QUEUE);
    tracing::info!(endpoint = %url, service = %service, "exporting request spans over OTLP/HTTP");
    let task = send_loop(rx, http, url, service, counts.clone());
    Ok(Some((Exporter { tx, counts }, task)))
}

/// Batches from the queue to the collector until the queue closes.
async fn send_loop(
    mut rx: mpsc::Receiver<Span>,
    http: reqwest::Client,
    url: url::Url,
    service: String,
    counts: SpanCounts,
) {
    let failures = crate::ratelimit_log::Throttle::new(crate::ratelimit_log::WINDOW);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // Wait for a first span, then gather what else arrives within FLUSH.
        let Some(first) = rx.recv().await else { return };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let body = encode(&service, &batch);
        batch.clear();
        let sent = http
            .post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => counts.exported.inc_by(n),
            outcome => {
                counts.failed.inc_by(n);
                let why = match outcome {
                    Ok(r) => format!("HTTP {}", r.status()),
                    Err(e) => e.without_url().to_string(),
                };
                if let Some(r) = failures.hit("export") {
                    tracing::warn!(error = %why, spans = n, occurrences = r.count, "OTLP export failed; spans dropped{r}");
                }
            }
        }
    }
}

fn unix_nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

/// An `ExportTraceServiceRequest` in OTLP's JSON encoding (ids as hex, 64-bit integers as
/// strings).
pub(crate) fn encode(service: &str, spans: &[Span]) -> Vec<u8> {
    use serde_json::json;
    let attr = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let spans: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            let mut attributes = vec![
                attr("http.request.method", s.method.as_str()),
                attr("url.path", &s.path),
                json!({"key": "http.response.status_code", "value": {"intValue": s.status.to_string()}}),
            ];
            if let Some(r) = &s.route {
                attributes.push(attr("authgate.route", r));
            }
            if let Some(u) = &s.upstream {
                attributes.push(attr("authgate.upstream", u));
            }
            let name = match &s.route {
                Some(r) => format!("{} {r}", s.method),
                None => s.method.to_string(),
            };
            let mut span = json!({
                "traceId": s.trace.trace_id(),
                "spanId": s.trace.span_id(),
                "name": name,
                // SPAN_KIND_SERVER
                "kind": 2,
                "startTimeUnixNano": unix_nanos(s.start),
                "endTimeUnixNano": unix_nanos(s.end),
                "attributes": attributes,
                // STATUS_CODE_ERROR for a 5xx (the server's fault), else unset.
                "status": if s.status >= 500 || s.status == 0 { json!({"code": 2}) } else { json!({}) },
            });
            if let Some(p) = s.trace.parent_id() {
                span["parentSpanId"] = json!(p);
            }
            span
        })
        .collect();
    let doc = json!({
        "resourceSpans": [{
            "resource": {"attributes": [attr("service.name", service)]},
            "scopeSpans": [{
                "scope": {"name": "authgate", "version": env!("CARGO_PKG_VERSION")},
                "spans": spans,
            }],
        }],
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_from_the_otel_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(endpoint_from_env(env(&[])), None);
        assert_eq!(
            endpoint_from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])),
            Some("http://c:4318/v1/traces".into())
        );
        assert_eq!(
            endpoint_from_env(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/x"),
            ])),
            Some("http://t:4318/x".into())
        );
        assert_eq!(
            endpoint_from_env(env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", " ")])),
            None
        );
    }

    #[test]
    fn encodes_ids_as_hex_and_times_as_strings() {
        let mut h = http::HeaderMap::new();
        h.insert(
            crate::trace::TRACEPARENT,
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        let trace = Trace::of(&h, false);
        let start = UNIX_EPOCH + Duration::from_secs(1);
        let body = encode(
            "svc",
            &[Span {
                trace,
                start,
                end: start + Duration::from_millis(3),
                method: http::Method::GET,
                path: "/app".into(),
                route: Some("app".into()),
                upstream: None,
                status: 502,
            }],
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(span["spanId"], trace.span_id());
        assert_eq!(span["startTimeUnixNano"], "1000000000");
        assert_eq!(span["endTimeUnixNano"], "1003000000");
        assert_eq!(span["name"], "GET app");
        assert_eq!(span["status"]["code"], 2);
        assert_eq!(
            v["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "svc"
        );
    }
}
