//! Redis dropping the gateway's connections (issue 13 point 4): a restart, and Redis' own
//! `timeout` closing idle connections. The first request after either is answered as if
//! nothing happened (the store retries an idempotent command once on a fresh connection, and
//! redis-rs loads the scripts a restarted Redis lost), a logout still ends its session, and
//! `/readyz` does not flap. Real parts: `redis-server`, the `oidc-provider` test IdP, an
//! authgate process.

mod common;

use std::time::Duration;

use common::*;

/// `redis-cli` against the test Redis.
fn redis_cli(redis: &Redis, args: &[&str]) -> String {
    let cli = require("redis-cli", "apt-get install redis-tools");
    let out = std::process::Command::new(cli)
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Connections Redis accepted so far (`INFO stats`): it grows when the gateway reconnects.
fn connections_received(redis: &Redis) -> u64 {
    redis_cli(redis, &["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_connections_received")
}

/// `/readyz`'s status code.
async fn readyz_status(gw: &Gateway) -> u16 {
    client()
        .get(gw.admin_url("/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// One gateway on one Redis, with the session cache off: every request asks Redis.
async fn gateway_on_redis() -> (Idp, Redis, Gateway) {
    let port = free_port();
    let idp = Idp::start(true, &[port]).await;
    let redis = Redis::start().await;
    let session = format!("{}cache_max_age = \"0s\"\n", redis_session(&redis.url()));
    let gw = auth_gateway(&idp, port, &session).await;
    wait_coherent(&gw).await;
    (idp, redis, gw)
}

/// Redis restarts (AOF: the session survives) five times, and each time the very first
/// request is served 200 (its connection was dead and the session script gone from Redis'
/// script cache), 0.2 s to 5 s after Redis came back. Alternately the first thing asked is
/// `/readyz`, which must answer 200 as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_request_after_a_redis_restart_is_served() {
    let (_idp, mut redis, gw) = gateway_on_redis().await;
    let (cookie, _) = http_login(&gw, "/").await;
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 200);
    let mut failed = Vec::new();
    for (trial, pause_ms) in [200u64, 1000, 2000, 3000, 5000].into_iter().enumerate() {
        redis.restart().await;
        assert_eq!(
            redis_cli(&redis, &["SCRIPT", "EXISTS", "0"]),
            "0",
            "sanity: a fresh Redis"
        );
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        if trial % 2 == 1 {
            let ready = readyz_status(&gw).await;
            if ready != 200 {
                failed.push(format!(
                    "trial {trial}: /readyz {ready} first after the restart"
                ));
            }
        }
        let status = gw.get_as("/app", &cookie).await.status().as_u16();
        if status != 200 {
            failed.push(format!(
                "trial {trial} ({pause_ms} ms after the restart): first request {status}"
            ));
        }
        assert_eq!(readyz_status(&gw).await, 200, "trial {trial}: readiness");
    }
    eprintln!(
        "first request after a Redis restart: {}/5 answered 200",
        5 - failed
            .iter()
            .filter(|f| f.contains("first request"))
            .count()
    );
    assert!(failed.is_empty(), "{failed:?}\n{}", gw.log());
}

/// `CONFIG SET timeout 1`: Redis closes every connection idle for a second (the gateway's
/// command connections; pub/sub ones are exempt). Five times: idle 2.5 s, then a request
/// (200), `/readyz` (200) and, on the last round, a logout (the durable delete's own
/// connection was closed too) that ends the session. Each round Redis accepted new
/// connections: the requests did meet closed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_closing_idle_connections_fails_no_request() {
    let (_idp, redis, gw) = gateway_on_redis().await;
    let (cookie, _) = http_login(&gw, "/").await;
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 200);
    assert_eq!(redis_cli(&redis, &["CONFIG", "SET", "timeout", "1"]), "OK");
    let mut failed = Vec::new();
    for trial in 0..5 {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let before = connections_received(&redis);
        let status = gw.get_as("/app", &cookie).await.status().as_u16();
        if status != 200 {
            failed.push(format!("trial {trial}: first request after idle {status}"));
        }
        let reconnected = connections_received(&redis) - before;
        assert!(
            reconnected >= 1,
            "trial {trial}: the gateway's connection was not closed by Redis (no reconnect)"
        );
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let ready = readyz_status(&gw).await;
        if ready != 200 {
            failed.push(format!("trial {trial}: /readyz {ready} after idle"));
        }
    }
    // A logout after idle: both the shared connection and the durable writes' one are gone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = client()
        .post(gw.url("/.authgate/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        failed.push(format!("logout after idle: {}", r.status()));
    }
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 401, "logged out");
    eprintln!(
        "requests after Redis closed idle connections: {}/11 answered normally",
        11 - failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}\n{}", gw.log());
}

/// Readiness across a dropped connection: `/readyz` polled every 100 ms while Redis kills
/// the gateway's connections (`CLIENT KILL TYPE normal`) ten times never answers 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_does_not_flap_on_a_dropped_connection() {
    let (_idp, redis, gw) = gateway_on_redis().await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let killed = redis_cli(
            &redis,
            &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
        );
        assert!(
            killed.parse::<u32>().is_ok_and(|n| n >= 1),
            "nothing killed: {killed}"
        );
        for _ in 0..3 {
            statuses.push(readyz_status(&gw).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let not_ready = statuses.iter().filter(|s| **s != 200).count();
    eprintln!(
        "/readyz across 10 killed connections: {} of {} answers 200",
        statuses.len() - not_ready,
        statuses.len()
    );
    assert_eq!(not_ready, 0, "{statuses:?}\n{}", gw.log());
}
