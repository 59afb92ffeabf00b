//! Metrics through the real binary's `/metrics`: the `process_*` metrics, build info, the
//! upstream latency histogram and the provider fetch counters (discovery and JWKS, by
//! outcome); and `deploy/grafana/`: every metric the dashboard and the alert rules name is
//! one a running gateway exports after ordinary traffic.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    auth_config, client, echo, eventually, free_port, http_login, Gateway, Idp, Opts,
    SESSION_SECRET,
};

/// The value of the sample whose line starts with `series` (name and labels), if exported.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Every sample name in a Prometheus text exposition (`name{...} v` or `name v`).
fn sample_names(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// The metric names a PromQL expression refers to: identifiers of the gateway's namespaces
/// (`authgate_`, `process_`), whatever the function or aggregation around them.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        let word = &tail[..end];
        // Inside quotes (label values, `$__rate_interval` in brackets) nothing is a name,
        // but no label value of ours starts with these prefixes either.
        if word.starts_with("authgate_") || word.starts_with("process_") {
            out.push(word.to_string());
        }
        rest = &tail[end..];
    }
    out
}

const APP_ROUTES: &str = r#"
[upstreams.dead]
servers = ["http://127.0.0.1:9"]

[[routes]]
id = "dead"
path = "/dead"
upstream = "dead"
public = true
"#;

/// A gateway with a real provider after ordinary traffic: a login, proxied requests, a
/// background token refresh, a failed callback, a 404, an upstream that refuses
/// connections, an admin revocation and a reload.
async fn gateway_after_traffic() -> (Gateway, Idp) {
    let port = free_port();
    // Access tokens live 30 s and refresh_lead is 60 s: the first request after the login
    // starts a background refresh.
    let idp = Idp::start_with_env(
        free_port(),
        true,
        &[port],
        &[("IDP_ACCESS_TOKEN_TTL", "30")],
    )
    .await;
    let e = echo().await;
    let session =
        format!("store = \"memory\"\nsecret = \"{SESSION_SECRET}\"\nrefresh_lead = \"60s\"");
    let gw = Gateway::start_with(
        &format!("{}{APP_ROUTES}", auth_config(&idp, e, &session)),
        Opts {
            port: Some(port),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;

    let (cookie, resp) = http_login(&gw, "/app/page").await;
    assert_eq!(resp.status(), 302);
    assert_eq!(gw.get_as("/app/page", &cookie).await.status(), 200);
    assert_eq!(
        client()
            .get(gw.url("/public/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = client()
        .get(gw.url("/.authgate/callback?code=forged&state=forged"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        client()
            .get(gw.url("/dead/x"))
            .send()
            .await
            .unwrap()
            .status(),
        502
    );
    let r = gw
        .admin_api(reqwest::Method::DELETE, "/sessions?subject=nobody")
        .await;
    assert_eq!(r.status(), 200);
    gw.signal("HUP");
    let settled = eventually(Duration::from_secs(10), || async {
        let m = gw.metrics().await;
        sample(&m, "authgate_session_refreshes_total{result=\"refreshed\"}").unwrap_or(0.0) >= 1.0
            && sample(&m, "authgate_config_reloads_total{result=\"ok\"}").unwrap_or(0.0) >= 1.0
            && sample(&m, "authgate_http_requests_in_flight") == Some(0.0)
    })
    .await;
    assert!(settled, "{}\n{}", gw.metrics().await, gw.log());
    (gw, idp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_deploy_files_name_what_the_gateway_exports() {
    let (gw, _idp) = gateway_after_traffic().await;
    let m = gw.metrics().await;

    // The process collector (Linux), and the build.
    // (CPU time is counted in whole seconds: 0 this early.)
    assert!(sample(&m, "process_cpu_seconds_total").is_some(), "{m}");
    for name in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(sample(&m, name).is_some_and(|v| v > 0.0), "{name}:\n{m}");
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(&m, &format!("authgate_build_info{{version=\"{version}\"}}")),
        Some(1.0),
        "{m}"
    );

    // Upstream latency: two answers from the echo upstream (the refused connections never
    // got a response head).
    assert_eq!(
        sample(
            &m,
            "authgate_upstream_response_duration_seconds_count{upstream=\"app\"}"
        ),
        Some(2.0),
        "{m}"
    );
    assert!(
        sample(
            &m,
            "authgate_upstream_response_duration_seconds_sum{upstream=\"app\"}"
        )
        .is_some_and(|v| v > 0.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "authgate_upstream_response_duration_seconds_count{upstream=\"dead\"}"
        ),
        None,
        "{m}"
    );

    // Provider fetches: the start and the refreshes since, all successful.
    let fetches = |document: &str, outcome: &str| {
        sample(
            &m,
            &format!("authgate_provider_fetches_total{{document=\"{document}\",outcome=\"{outcome}\",provider=\"test\"}}"),
        )
    };
    assert!(fetches("discovery", "ok").is_some_and(|v| v >= 1.0), "{m}");
    assert!(fetches("jwks", "ok").is_some_and(|v| v >= 1.0), "{m}");
    assert_eq!(fetches("discovery", "error"), Some(0.0), "{m}");
    assert_eq!(fetches("jwks", "error"), Some(0.0), "{m}");

    // The dashboard and the alert rules name only metrics exported here.
    let exported = sample_names(&m);
    let mut exprs = Vec::new();
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/grafana/authgate-dashboard.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel without a query: {p}");
        for t in targets {
            exprs.push((
                format!("dashboard panel {:?}", p["title"]),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    let rules =
        std::fs::read_to_string(format!("{root}/deploy/grafana/authgate-alerts.yml")).unwrap();
    let mut alerts = Vec::new();
    let mut alert = String::new();
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            alert = name.to_string();
            alerts.push(alert.clone());
        } else if let Some(expr) = line.strip_prefix("expr: ") {
            assert!(
                !expr.starts_with('|') && !expr.starts_with('>'),
                "one-line expressions only: {line}"
            );
            exprs.push((format!("alert {alert}"), expr.to_string()));
        }
    }
    for wanted in [
        "AuthgateRedisErrors",
        "AuthgateJwksFetchFailures",
        "AuthgateHigh5xxRate",
        "AuthgateLoginFailures",
    ] {
        assert!(
            alerts.iter().any(|a| a == wanted),
            "no {wanted} in {alerts:?}"
        );
    }
    assert_eq!(
        exprs
            .iter()
            .filter(|(w, _)| w.starts_with("alert "))
            .count(),
        alerts.len(),
        "every alert has one expression"
    );
    for (what, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{what} names no metric: {expr}");
        for n in names {
            assert!(
                exported.contains(&n),
                "{what} names {n}, which the gateway does not export: {expr}\nexported: {exported:?}"
            );
        }
    }
}

/// A provider that cannot be reached: its discovery fetches are counted as errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_discovery_is_counted() {
    let closed = free_port();
    let e = echo().await;
    let gw = Gateway::start(&format!(
        "[[providers]]\nid = \"down\"\nissuer = \"http://127.0.0.1:{closed}\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\n[session]\nstore = \"memory\"\nsecret = \"{SESSION_SECRET}\"\n\n[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nid = \"app\"\npath = \"/\"\nupstream = \"app\"\n"
    ))
    .await;
    let series = "authgate_provider_fetches_total{document=\"discovery\",outcome=\"error\",provider=\"down\"}";
    let counted = eventually(Duration::from_secs(10), || async {
        sample(&gw.metrics().await, series).unwrap_or(0.0) >= 2.0
    })
    .await;
    let m = gw.metrics().await;
    assert!(counted, "{m}\n{}", gw.log());
    assert_eq!(
        sample(&m, "authgate_provider_fetches_total{document=\"discovery\",outcome=\"ok\",provider=\"down\"}"),
        Some(0.0),
        "{m}"
    );
    // Never reached discovery, so no JWKS was fetched either way.
    assert_eq!(
        sample(&m, "authgate_provider_fetches_total{document=\"jwks\",outcome=\"error\",provider=\"down\"}"),
        Some(0.0),
        "{m}"
    );
}

#[test]
fn metric_names_of_expressions() {
    assert_eq!(
        metric_names("sum by (le) (rate(authgate_x_bucket{instance=~\"$instance\"}[$__rate_interval])) / process_open_fds"),
        ["authgate_x_bucket", "process_open_fds"]
    );
    assert!(metric_names("sum(rate(up[5m]))").is_empty());
}
