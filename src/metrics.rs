//! Prometheus metrics, named `authgate_<subsystem>_<what>_<unit>`.
//!
//! One registry per process, served by the admin listener. Labels come from route ids,
//! upstream names, provider ids and enums, never from raw request data, so cardinality is
//! bounded by config. Also there: the prometheus crate's `process_*` metrics (CPU, memory,
//! open file descriptors, start time; Linux) and `authgate_build_info{version}`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub(crate) requests: IntCounterVec,
    pub(crate) request_duration: HistogramVec,
    pub(crate) upstream_errors: IntCounterVec,
    pub(crate) in_flight: IntGauge,
    pub(crate) config_reloads: IntCounterVec,
    pub(crate) logins: IntCounterVec,
    pub(crate) login_failures: IntCounterVec,
    pub(crate) session_cache: IntCounterVec,
    pub(crate) redis_duration: Histogram,
    pub(crate) redis_errors: IntCounter,
    pub(crate) refreshes: IntCounterVec,
    pub(crate) revocations: IntCounterVec,
    /// Logins started and not yet finished, expired or evicted (see [`Metrics::pending`]).
    pub(crate) pending_logins: IntGauge,
    pub(crate) pending_logins_evicted: IntCounter,
    /// From choosing an upstream server to its response head, by upstream.
    pub(crate) upstream_duration: HistogramVec,
    /// Discovery and JWKS fetches, by provider, document and outcome (see [`Metrics::fetches`]).
    provider_fetches: IntCounterVec,
    /// Request spans for OTLP export, by outcome (see [`Metrics::span_counts`]).
    trace_spans: IntCounterVec,
}

/// Label for requests that matched no route.
pub(crate) const NO_ROUTE: &str = "none";

/// Latency buckets of request and upstream durations (seconds).
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Latency buckets of Redis round trips (seconds).
const REDIS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0,
];

/// Registers what it makes: names and help texts are constants here, so a failure is a bug
/// caught by every test that starts a gateway.
struct Register(Registry);

impl Register {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, m: M) -> M {
        self.0
            .register(Box::new(m.clone()))
            .expect("unique metric names");
        m
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(Histogram::with_opts(opts).expect("valid metric"))
    }

    fn histograms(&self, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("valid metric"))
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Register(Registry::new());
        let build_info = r.add(
            IntGauge::with_opts(
                Opts::new(
                    "authgate_build_info",
                    "The running build: always 1, its version as a label",
                )
                .const_label("version", env!("CARGO_PKG_VERSION")),
            )
            .expect("valid metric"),
        );
        build_info.set(1);
        #[cfg(target_os = "linux")]
        r.0.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric names");
        Self {
            requests: r.counters(
                "authgate_http_requests_total",
                "Requests answered, by route and status",
                &["route", "status"],
            ),
            request_duration: r.histograms(
                "authgate_http_request_duration_seconds",
                "Time from request to end of response, by route",
                REQUEST_BUCKETS,
                &["route"],
            ),
            upstream_errors: r.counters(
                "authgate_upstream_errors_total",
                "Failed upstream attempts, by upstream and kind (connect, timeout, other)",
                &["upstream", "kind"],
            ),
            in_flight: r.gauge(
                "authgate_http_requests_in_flight",
                "Requests being processed now",
            ),
            config_reloads: r.counters(
                "authgate_config_reloads_total",
                "Config reloads, by result (ok, error, restart_required)",
                &["result"],
            ),
            logins: r.counters(
                "authgate_logins_total",
                "Browser logins, by stage (started, completed)",
                &["stage"],
            ),
            login_failures: r.counters(
                "authgate_login_failures_total",
                "Failed login callbacks, by reason",
                &["reason"],
            ),
            session_cache: r.counters(
                "authgate_session_cache_lookups_total",
                "Session cache lookups, by result (hit, miss)",
                &["result"],
            ),
            redis_duration: r.histogram(
                "authgate_redis_request_duration_seconds",
                "Session store round trips to Redis",
                REDIS_BUCKETS,
            ),
            redis_errors: r.counter(
                "authgate_redis_errors_total",
                "Failed or timed-out Redis session store calls",
            ),
            refreshes: r.counters(
                "authgate_session_refreshes_total",
                "Access token refreshes, by result (refreshed, ended, failed, skipped)",
                &["result"],
            ),
            revocations: r.counters(
                "authgate_session_revocations_total",
                "Sessions ended by the admin API or back-channel logout, by source",
                &["source"],
            ),
            pending_logins: r.gauge(
                "authgate_pending_logins",
                "Logins started and not yet finished or expired (memory store: exact; Redis: the count this process last saw)",
            ),
            pending_logins_evicted: r.counter(
                "authgate_pending_logins_evicted_total",
                "Pending logins dropped, oldest first, because session.max_pending_logins was reached",
            ),
            upstream_duration: r.histograms(
                "authgate_upstream_response_duration_seconds",
                "From choosing an upstream server (connect included) to its response head, by upstream",
                REQUEST_BUCKETS,
                &["upstream"],
            ),
            provider_fetches: r.counters(
                "authgate_provider_fetches_total",
                "Discovery and JWKS fetches from a provider, by provider, document (discovery, jwks) and outcome (ok, error)",
                &["provider", "document", "outcome"],
            ),
            trace_spans: r.counters(
                "authgate_trace_spans_total",
                "Request spans for OTLP export, by outcome (exported, dropped: queue full, failed: the collector did not take them)",
                &["outcome"],
            ),
            registry: r.0,
        }
    }

    /// The counters of OTLP span export (each series created at 0: export is on).
    pub(crate) fn span_counts(&self) -> SpanCounts {
        let c = |outcome| self.trace_spans.with_label_values(&[outcome]);
        SpanCounts {
            exported: c("exported"),
            dropped: c("dropped"),
            failed: c("failed"),
        }
    }

    /// The fetch counters of one provider, resolved once (no label lookup per fetch).
    pub(crate) fn fetches(&self, provider: &str) -> FetchMetrics {
        let c = |document, outcome| {
            self.provider_fetches
                .with_label_values(&[provider, document, outcome])
        };
        FetchMetrics {
            discovery_ok: c("discovery", "ok"),
            discovery_error: c("discovery", "error"),
            jwks_ok: c("jwks", "ok"),
            jwks_error: c("jwks", "error"),
        }
    }

    /// The handles the session store reports pending logins to.
    pub(crate) fn pending(&self) -> PendingMetrics {
        PendingMetrics {
            pending: self.pending_logins.clone(),
            evicted: self.pending_logins_evicted.clone(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the store reports pending logins: `authgate_pending_logins` (memory: exact; Redis:
/// the count the last put or take of this process saw) and
/// `authgate_pending_logins_evicted_total`.
#[derive(Clone, Debug)]
pub(crate) struct PendingMetrics {
    pub(crate) pending: prometheus::IntGauge,
    pub(crate) evicted: prometheus::IntCounter,
}

impl PendingMetrics {
    pub(crate) fn report(&self, pending: u64, evicted: u64) {
        self.pending.set(pending as i64);
        self.evicted.inc_by(evicted);
    }
}

/// Where one provider counts its fetches: `authgate_provider_fetches_total{provider,
/// document, outcome}`.
#[derive(Clone, Debug)]
pub(crate) struct FetchMetrics {
    discovery_ok: IntCounter,
    discovery_error: IntCounter,
    jwks_ok: IntCounter,
    jwks_error: IntCounter,
}

impl FetchMetrics {
    pub(crate) fn discovery(&self, ok: bool) {
        if ok {
            &self.discovery_ok
        } else {
            &self.discovery_error
        }
        .inc();
    }

    pub(crate) fn jwks(&self, ok: bool) {
        if ok { &self.jwks_ok } else { &self.jwks_error }.inc();
    }
}

/// Counters of `authgate_trace_spans_total{outcome}`, for the OTLP exporter.
#[derive(Clone, Debug)]
pub(crate) struct SpanCounts {
    pub(crate) exported: IntCounter,
    pub(crate) dropped: IntCounter,
    pub(crate) failed: IntCounter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_process_and_fetch_counters_are_exported() {
        let m = Metrics::new();
        let f = m.fetches("corp");
        f.discovery(true);
        f.jwks(false);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains(&format!(
                "authgate_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        if cfg!(target_os = "linux") {
            assert!(text.contains("process_resident_memory_bytes "), "{text}");
            assert!(text.contains("process_open_fds "), "{text}");
        }
        assert!(
            text.contains(
                "authgate_provider_fetches_total{document=\"discovery\",outcome=\"ok\",provider=\"corp\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "authgate_provider_fetches_total{document=\"jwks\",outcome=\"error\",provider=\"corp\"} 1"
            ),
            "{text}"
        );
    }
}
