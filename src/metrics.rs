//! Prometheus metrics, named `authgate_<subsystem>_<what>_<unit>`.
//!
//! One registry per process, served by the admin listener. Labels come from route ids,
//! upstream names and enums, never from raw request data, so cardinality is bounded by config.

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
}

/// Label for requests that matched no route.
pub(crate) const NO_ROUTE: &str = "none";

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "authgate_http_requests_total",
                "Requests answered, by route and status",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "authgate_http_request_duration_seconds",
                "Time from request to end of response, by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "authgate_upstream_errors_total",
                "Failed upstream attempts, by upstream and kind (connect, timeout, other)",
            ),
            &["upstream", "kind"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new(
            "authgate_http_requests_in_flight",
            "Requests being processed now",
        )
        .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new("authgate_config_reloads_total", "Config reloads, by result"),
            &["result"],
        )
        .expect("valid metric");
        let logins = IntCounterVec::new(
            Opts::new(
                "authgate_logins_total",
                "Browser logins, by stage (started, completed)",
            ),
            &["stage"],
        )
        .expect("valid metric");
        let login_failures = IntCounterVec::new(
            Opts::new(
                "authgate_login_failures_total",
                "Failed login callbacks, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let session_cache = IntCounterVec::new(
            Opts::new(
                "authgate_session_cache_lookups_total",
                "Session cache lookups, by result (hit, miss)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let redis_duration = Histogram::with_opts(
            HistogramOpts::new(
                "authgate_redis_request_duration_seconds",
                "Session store round trips to Redis",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0,
            ]),
        )
        .expect("valid metric");
        let redis_errors = IntCounter::new(
            "authgate_redis_errors_total",
            "Failed or timed-out Redis session store calls",
        )
        .expect("valid metric");
        let refreshes = IntCounterVec::new(
            Opts::new(
                "authgate_session_refreshes_total",
                "Access token refreshes, by result (refreshed, ended, failed, skipped)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let revocations = IntCounterVec::new(
            Opts::new(
                "authgate_session_revocations_total",
                "Sessions ended by the admin API or back-channel logout, by source",
            ),
            &["source"],
        )
        .expect("valid metric");
        let pending_logins = IntGauge::new(
            "authgate_pending_logins",
            "Logins started and not yet finished or expired (memory store: exact; Redis: the count this process last saw)",
        )
        .expect("valid metric");
        let pending_logins_evicted = IntCounter::new(
            "authgate_pending_logins_evicted_total",
            "Pending logins dropped, oldest first, because session.max_pending_logins was reached",
        )
        .expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(in_flight.clone()),
            Box::new(config_reloads.clone()),
            Box::new(logins.clone()),
            Box::new(login_failures.clone()),
            Box::new(session_cache.clone()),
            Box::new(redis_duration.clone()),
            Box::new(redis_errors.clone()),
            Box::new(refreshes.clone()),
            Box::new(revocations.clone()),
            Box::new(pending_logins.clone()),
            Box::new(pending_logins_evicted.clone()),
        ] {
            registry.register(m).expect("unique metric names");
        }
        Self {
            registry,
            requests,
            request_duration,
            upstream_errors,
            in_flight,
            config_reloads,
            logins,
            login_failures,
            session_cache,
            redis_duration,
            redis_errors,
            refreshes,
            revocations,
            pending_logins,
            pending_logins_evicted,
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
