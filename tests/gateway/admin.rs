//! Admin endpoints, graceful shutdown and reload.

use std::time::Duration;

use crate::common::{client, echo, eventually, Gateway, Opts};

fn routes(e: std::net::SocketAddr, extra_routes: &str) -> String {
    format!("[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nid = \"app\"\npath = \"/app\"\nupstream = \"app\"\npublic = true\n{extra_routes}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_on_admin_only() {
    let e = echo().await;
    let gw = Gateway::start(&routes(e, "")).await;
    let c = client();
    let r = c.get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["ready"], true);

    assert_eq!(c.get(gw.url("/app/x")).send().await.unwrap().status(), 200);
    assert_eq!(
        c.get(gw.url("/nowhere")).send().await.unwrap().status(),
        404
    );
    // The logging phase runs just after the response is sent: poll briefly.
    let settled = || async {
        let m = gw.metrics().await;
        m.contains("authgate_http_requests_in_flight 0") && m.contains("status=\"404\"")
    };
    eventually(Duration::from_secs(3), settled).await;
    let m = gw.metrics().await;
    assert!(
        m.contains("authgate_http_requests_total{route=\"app\",status=\"200\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("authgate_http_requests_total{route=\"none\",status=\"404\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("authgate_http_request_duration_seconds_bucket{route=\"app\""),
        "{m}"
    );
    assert!(m.contains("authgate_http_requests_in_flight 0"), "{m}");

    // The public listener never serves admin endpoints.
    for p in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(c.get(gw.url(p)).send().await.unwrap().status(), 404, "{p}");
    }
    // JSON access log lines are available.
    assert!(gw.log().contains("request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_catch_all_does_not_expose_metrics() {
    let e = echo().await;
    let gw = Gateway::start(&format!("[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nupstream = \"app\"\npublic = true\n")).await;
    let body = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!body.contains("authgate_http_requests_total"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    drains_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_also_drains() {
    drains_on("INT").await;
}

/// On `signal`: not ready any more, the request in flight completes, the process exits 0 and
/// stops accepting.
async fn drains_on(signal: &str) {
    let e = echo().await;
    // Slow enough (and a grace period long enough) to be seen in flight on a loaded machine.
    let mut gw = Gateway::start_with(
        &routes(e, ""),
        Opts {
            grace_period: "3s",
            ..Opts::default()
        },
    )
    .await;
    let c = client();
    let url = gw.url("/app/slow?echo_sleep_ms=1500");
    let inflight = tokio::spawn({
        let c = c.clone();
        async move { c.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    gw.wait_in_flight(1).await;
    gw.signal(signal);
    // Draining: not ready any more, so load balancers stop sending (as soon as the signal is
    // handled: waited for, bounded).
    let readyz = || async {
        c.get(gw.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
    };
    eventually(Duration::from_secs(5), || async { readyz().await == 503 }).await;
    assert_eq!(readyz().await, 503);
    assert_eq!(
        inflight
            .await
            .unwrap()
            .expect("in-flight request completed"),
        200
    );
    assert!(
        gw.wait_exit(Duration::from_secs(15)).await,
        "non-zero exit:\n{}",
        gw.log()
    );
    assert!(
        std::net::TcpStream::connect(gw.addr).is_err(),
        "still accepting after exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_routes_and_keeps_config_on_error() {
    let e = echo().await;
    let gw = Gateway::start(&routes(e, "")).await;
    let c = client();
    assert_eq!(c.get(gw.url("/new/x")).send().await.unwrap().status(), 404);

    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let added = format!(
        "{text}\n[[routes]]\nid = \"new\"\npath = \"/new\"\nupstream = \"app\"\npublic = true\n"
    );
    std::fs::write(&gw.config_path, &added).unwrap();
    gw.signal("HUP");
    let reloaded = || async { c.get(gw.url("/new/x")).send().await.unwrap().status() == 200 };
    assert!(
        eventually(Duration::from_secs(5), reloaded).await,
        "route not reloaded:\n{}",
        gw.log()
    );

    // A broken file is rejected and the running routes stay.
    std::fs::write(
        &gw.config_path,
        format!("{added}\n[[routes]]\nupstream = \"missing\"\n"),
    )
    .unwrap();
    gw.signal("HUP");
    // Wait for the reload's verdict (no fixed pause before the checks).
    let judged = || async {
        gw.metrics()
            .await
            .contains("authgate_config_reloads_total{result=\"error\"}")
    };
    eventually(Duration::from_secs(5), judged).await;
    assert_eq!(c.get(gw.url("/new/x")).send().await.unwrap().status(), 200);
    let m = gw.metrics().await;
    assert!(
        m.contains("authgate_config_reloads_total{result=\"error\"} 1"),
        "{m}"
    );
    assert!(gw.log().contains("unknown upstream"));
}

/// `gateway.templates_dir`: an operator's page replaces the built-in one for browsers (API
/// clients still get JSON), values are escaped, a SIGHUP picks up a changed page, and a
/// broken one is refused with the running pages kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_pages_from_templates_dir_apply_and_reload() {
    let e = echo().await;
    let dir = tempfile::tempdir().unwrap();
    let page = |text: &str| {
        std::fs::write(
            dir.path().join("refusal.html"),
            format!("<!doctype html><title>{{{{ title }}}}</title><p>{text} {{{{ status }}}} {{{{ request_id }}}}</p>"),
        )
        .unwrap()
    };
    page("ACME");
    let config = format!(
        "[gateway]\ntemplates_dir = {:?}\n\n{}",
        dir.path().display().to_string(),
        routes(e, "")
    );
    let gw = Gateway::start(&config).await;
    let c = client();
    let browser = || async {
        let r = c
            .get(gw.url("/nowhere"))
            .header("accept", "text/html,application/xhtml+xml")
            .header("x-request-id", "<b>id</b>")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let (status, body) = browser().await;
    assert_eq!(status, 404);
    assert!(body.contains("<p>ACME 404 "), "{body}");
    assert!(!body.contains("<b>id</b>"), "a value is escaped: {body}");
    // API clients: JSON, whatever the pages say.
    let r = c
        .get(gw.url("/nowhere"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v.get("error").is_some(), "{v}");

    // A changed page is picked up on reload.
    page("BRANDED");
    gw.signal("HUP");
    let branded = || async { browser().await.1.contains("<p>BRANDED 404 ") };
    assert!(
        eventually(Duration::from_secs(5), branded).await,
        "page not reloaded:\n{}",
        gw.log()
    );
    // A broken page is refused as a whole: the running pages stay.
    std::fs::write(dir.path().join("refusal.html"), "{% if %}").unwrap();
    gw.signal("HUP");
    let refused = || async { gw.log().contains("templates_dir") };
    assert!(
        eventually(Duration::from_secs(5), refused).await,
        "the broken page was not reported:\n{}",
        gw.log()
    );
    assert!(browser().await.1.contains("<p>BRANDED 404 "));
}
