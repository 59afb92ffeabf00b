//! Several gateway replicas sharing one session store (issue 5): logins, refreshes,
//! logouts and revocations behave as one gateway. Real parts: `redis-server`, the
//! `oidc-provider` test IdP, authgate processes.

mod common;

use std::time::{Duration, Instant};

use common::*;

use reqwest::Method;

/// Percentiles of a set of durations, for the propagation reports.
fn summary(mut d: Vec<Duration>) -> String {
    d.sort();
    let at = |q: f64| d[((d.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "n={} p50={:?} p99={:?} max={:?}",
        d.len(),
        at(0.5),
        at(0.99),
        d[d.len() - 1]
    )
}

async fn reset_stats(idp: &Idp) {
    idp.test_post("/__test/stats/reset").await;
}

fn refreshes(stats: &serde_json::Value) -> u64 {
    stats["token"]["refresh_token"].as_u64().unwrap_or(0)
}

/// 100 concurrent requests at access-token expiry, spread over three replicas: exactly one
/// refresh reaches the provider (which rotates refresh tokens and revokes the grant on
/// reuse, so a second refresh with the spent token would log the user out), and every
/// request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_at_expiry_refresh_exactly_once() {
    let ports = [ANY_PORT; 3];
    // Tokens live 6 s with a 1 s lead: the burst below has 5 s after the refresh before a
    // request may rightly start the next one (a loaded CI machine needed more than 2).
    let idp = Idp::start_with_env(0, true, &ports, &[("IDP_ACCESS_TOKEN_TTL", "6")]).await;
    let redis = Redis::start().await;
    let session = format!("{}refresh_lead = \"1s\"\n", redis_session(&redis.url()));
    let gws = replicas(&idp, &ports, &session, "").await;
    let (cookie, _) = http_login(&gws[0], "/").await;
    for gw in &gws {
        assert_eq!(gw.get_as("/app", &cookie).await.status(), 200);
    }

    for round in 1..=2u64 {
        if round == 2 {
            // The provider changes the user's groups: the refresh carries them to every replica.
            let r = client()
                .post(format!(
                    "{}/__test/users?account=alice&claims={}",
                    idp.issuer, r#"{"groups":["admins","ops"]}"#
                ))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
        reset_stats(&idp).await;
        // Past expiry with no request in the lead window: every request needs the refresh.
        tokio::time::sleep(Duration::from_millis(6500)).await;
        let mut tasks = Vec::new();
        for i in 0..100 {
            let url = gws[i % gws.len()].url("/app");
            let cookie = cookie.clone();
            tasks.push(tokio::spawn(async move {
                client()
                    .get(url)
                    .header("cookie", cookie)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        let ok = statuses.iter().filter(|s| **s == 200).count();
        let stats = idp.stats().await;
        assert_eq!(
            ok,
            100,
            "round {round}: statuses {statuses:?}\nA: {}",
            gws[0].log()
        );
        assert_eq!(
            refreshes(&stats),
            1,
            "round {round}: exactly one refresh at the provider: {stats}"
        );
        assert!(
            stats["token_errors"]
                .as_object()
                .is_none_or(|e| e.is_empty()),
            "round {round}: no failed grant: {stats}"
        );
    }
    for gw in &gws {
        let seen: Seen = gw.get_as("/app", &cookie).await.json().await.unwrap();
        assert_eq!(seen.header("x-forwarded-groups"), Some("admins,ops"));
    }
    let m = gws.iter().map(|g| g.metrics());
    let mut refreshed = 0;
    for m in m {
        let text = m.await;
        refreshed += text
            .lines()
            .find(|l| l.starts_with("authgate_session_refreshes_total{result=\"refreshed\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    assert_eq!(refreshed, 2, "one refresh per round, across all replicas");
}

/// A near-expiry token is refreshed in the background while requests go on; with the
/// provider down the session keeps working until the token expires, then 503 (never a
/// sign-in loop, never the cookie cleared); back up, it refreshes and serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_at_refresh_serves_until_expiry_then_503() {
    let port = ANY_PORT;
    let idp_port = free_port();
    let mut idp =
        Idp::start_with_env(idp_port, true, &[port], &[("IDP_ACCESS_TOKEN_TTL", "4")]).await;
    let redis = Redis::start().await;
    let session = format!("{}refresh_lead = \"3s\"\n", redis_session(&redis.url()));
    let gw = auth_gateway(&idp, port, &session).await;
    wait_coherent(&gw).await;
    let (cookie, _) = http_login(&gw, "/").await;

    // Inside the lead time: served at once, refreshed behind the request.
    reset_stats(&idp).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 200);
    let refreshed = || async { refreshes(&idp.stats().await) == 1 };
    assert!(
        eventually(Duration::from_secs(5), refreshed).await,
        "background refresh never happened"
    );

    idp.stop();
    // The new token has ~4s: still inside its life, the session works without the provider.
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let r = gw.browse_as("/app", &cookie).await;
    assert_eq!(r.status(), 503, "expired token, provider down: fail closed");
    assert!(set_cookies(&r).is_empty(), "the cookie is kept");

    let idp = Idp::start_with_env(idp_port, true, &[port], &[("IDP_ACCESS_TOKEN_TTL", "4")]).await;
    // The restarted provider lost its grants (memory adapter): the refresh is refused and the
    // session ends cleanly: APIs get 401, not 503.
    let ended = || async { gw.get_as("/app", &cookie).await.status() == 401 };
    assert!(
        eventually(Duration::from_secs(10), ended).await,
        "a refused refresh must end the session\n{}",
        gw.log()
    );
    drop(idp);
}

/// Logout on one replica and admin revocation on another: the third refuses the session
/// within a bound, measured over repeated logins (the distribution is printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_and_revocation_propagate_to_every_replica() {
    // A long cache max age: only the invalidation can make a replica forget a session.
    let (_idp, _redis, gws) = replicas_on_one_redis(3, "cache_max_age = \"5m\"\n").await;
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);

    let mut logout = Vec::new();
    let mut revoke = Vec::new();
    for i in 0..20 {
        let (cookie, _) = http_login(a, "/").await;
        // Cached on every replica.
        for gw in &gws {
            assert_eq!(gw.get_as("/app", &cookie).await.status(), 200);
            assert_eq!(gw.get_as("/app", &cookie).await.status(), 200);
        }
        let started = Instant::now();
        if i % 2 == 0 {
            let r = client()
                .post(a.url("/.authgate/logout"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        } else {
            let listed: serde_json::Value = b
                .admin_api(Method::GET, "/sessions?subject=alice")
                .await
                .json()
                .await
                .unwrap();
            let ids: Vec<&str> = listed["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap())
                .collect();
            assert_eq!(ids.len(), 1, "{listed}");
            assert!(
                !listed.to_string().contains("eyJ"),
                "no tokens in the listing: {listed}"
            );
            let r = b
                .admin_api(Method::DELETE, &format!("/sessions/{}", ids[0]))
                .await;
            assert_eq!(r.status(), 204);
        }
        let mut refused = false;
        while started.elapsed() < Duration::from_secs(2) {
            if c.get_as("/app", &cookie).await.status() == 401 {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let took = started.elapsed();
        assert!(
            refused,
            "replica C still accepted the session 2s after it ended"
        );
        for gw in &gws {
            assert_eq!(gw.get_as("/app", &cookie).await.status(), 401);
        }
        if i % 2 == 0 {
            logout.push(took);
        } else {
            revoke.push(took);
        }
    }
    eprintln!("logout propagation A→C:   {}", summary(logout));
    eprintln!("revocation propagation B→C: {}", summary(revoke));
}

/// `authgate sessions ARGS -c <gw's config>`: its stdout, after checking it succeeded.
fn sessions_cli(args: &[&str], gw: &Gateway) -> String {
    let out = std::process::Command::new(BIN)
        .arg("sessions")
        .args(args)
        .arg("-c")
        .arg(&gw.config_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Revoke all of a subject's sessions (several logins, several replicas), through the API
/// and through the `authgate sessions` CLI; a wrong token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_all_sessions_of_a_subject() {
    let (_idp, _redis, gws) = replicas_on_one_redis(2, "cache_max_age = \"5m\"\n").await;
    let (a, b) = (&gws[0], &gws[1]);

    let r = client()
        .get(a.admin_url("/sessions?subject=alice"))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .get(a.admin_url("/sessions?subject=alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let mut cookies = Vec::new();
    for gw in [a, b, a] {
        cookies.push(http_login(gw, "/").await.0);
    }
    for c in &cookies {
        assert_eq!(b.get_as("/app", c).await.status(), 200);
    }
    let listed: serde_json::Value = a
        .admin_api(Method::GET, "/sessions?subject=alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 3, "{listed}");

    // The CLI, configured from the replica's own config file.
    assert_eq!(
        sessions_cli(&["revoke", "--subject", "alice"], a),
        r#"{"revoked":3}"#
    );
    for c in &cookies {
        for gw in [a, b] {
            assert_eq!(gw.get_as("/app", c).await.status(), 401);
        }
    }
    assert_eq!(
        sessions_cli(&["list", "--subject", "alice"], b),
        r#"{"sessions":[]}"#
    );
}

/// Redis restarts (AOF persistence): no session is lost, replicas reconnect by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_with_aof_loses_no_session() {
    let (_idp, mut redis, gws) = replicas_on_one_redis(2, "cache_max_age = \"0s\"\n").await;
    let mut cookies = Vec::new();
    for gw in &gws {
        cookies.push(http_login(gw, "/").await.0);
    }
    redis.restart().await;
    for gw in &gws {
        for c in &cookies {
            let back = || async { gw.get_as("/app", c).await.status() == 200 };
            assert!(
                eventually(Duration::from_secs(10), back).await,
                "session lost across a Redis restart\n{}",
                gw.log()
            );
        }
        wait_coherent(gw).await;
    }
}

/// The real provider ends the user's sessions there and posts logout tokens to replica A:
/// every gateway session from those provider sessions ends on every replica. Then tokens
/// signed by the provider but wrong for us (replayed, with a nonce, with neither sid nor sub)
/// are refused with 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backchannel_logout_from_the_provider_ends_sessions_everywhere() {
    let ports = [ANY_PORT; 2];
    let idp = Idp::start_full(
        0,
        true,
        &ports,
        &[],
        serde_json::json!({"backchannel_logout_uri": BACKCHANNEL_PLACEHOLDER}),
    )
    .await;
    let redis = Redis::start().await;
    let session = format!("{}cache_max_age = \"5m\"\n", redis_session(&redis.url()));
    let gws = replicas(&idp, &ports, &session, "").await;
    let (a, b) = (&gws[0], &gws[1]);
    // The provider posts logout tokens to replica A.
    idp.set_backchannel_logout_uri(&a.url("/.authgate/backchannel-logout"))
        .await;

    // Two provider sessions (each login has its own provider cookie jar).
    let c1 = http_login(a, "/").await.0;
    let c2 = http_login(b, "/").await.0;
    for c in [&c1, &c2] {
        for gw in [a, b] {
            assert_eq!(gw.get_as("/app", c).await.status(), 200);
        }
    }
    let r = idp.test_post("/__test/logout?account=alice").await;
    assert_eq!(r["sessions"], 2, "{r}");
    for n in r["notified"].as_array().unwrap() {
        assert_eq!(
            n["status"], 200,
            "the gateway accepted the logout token: {r}"
        );
        assert!(n["sid"].is_string(), "sid-based logout: {r}");
    }
    for c in [&c1, &c2] {
        for gw in [a, b] {
            let ended = || async { gw.get_as("/app", c).await.status() == 401 };
            assert!(
                eventually(Duration::from_secs(2), ended).await,
                "session still accepted after back-channel logout\n{}",
                a.log()
            );
        }
    }

    // A sub-only token ends all of the subject's sessions from this provider.
    let c3 = http_login(b, "/").await.0;
    assert_eq!(a.get_as("/app", &c3).await.status(), 200);
    let r = idp
        .test_post("/__test/backchannel?client_id=authgate&sub=alice")
        .await;
    assert_eq!(r["status"], 200, "{r}");
    let ended = || async { b.get_as("/app", &c3).await.status() == 401 };
    assert!(eventually(Duration::from_secs(2), ended).await);

    // The same token again: a replay, refused.
    let post = |token: String| async move {
        client()
            .post(a.url("/.authgate/backchannel-logout"))
            .form(&[("logout_token", token)])
            .send()
            .await
            .unwrap()
    };
    let replay = post(r["logout_token"].as_str().unwrap().to_string()).await;
    assert_eq!(replay.status(), 400);
    let body: serde_json::Value = replay.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");

    for query in ["sub=alice&nonce=n1", ""] {
        let r = idp
            .test_post(&format!("/__test/backchannel?client_id=authgate&{query}"))
            .await;
        assert_eq!(r["status"], 400, "{query}: {r}");
    }
    assert_eq!(post("not-a-jwt".into()).await.status(), 400);
    let get = client()
        .get(a.url("/.authgate/backchannel-logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
}

/// `n` replicas on one fresh Redis; `session` is appended to the Redis session settings.
async fn replicas_on_one_redis(n: usize, session: &str) -> (Idp, Redis, Vec<Gateway>) {
    let ports = vec![ANY_PORT; n];
    let idp = Idp::start(true, &ports).await;
    let redis = Redis::start().await;
    let session = format!("{}{session}", redis_session(&redis.url()));
    let gws = replicas(&idp, &ports, &session, "").await;
    (idp, redis, gws)
}

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

/// Idle timeout slides, but the store's TTL is rewritten at most once per touch interval;
/// the absolute timeout holds however active the user is. Both live in Redis (TTL and a
/// deadline set from Redis' own clock), so every replica sees the same expiry.
///
/// The one wall-clock smoke test of those TTLs: every step keeps at least a second from the
/// moment it is about (a loaded machine delays a request by hundreds of milliseconds), and
/// the expiry at the end is waited for with a deadline rather than slept into.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_touch_is_lazy_and_absolute_timeout_holds() {
    const IDLE_MS: i64 = 8000;
    let session = "cache_max_age = \"0s\"\nidle_timeout = \"8s\"\n\
                   touch_interval = \"4s\"\nabsolute_timeout = \"14s\"\n";
    let (_idp, redis, gws) = replicas_on_one_redis(2, session).await;
    let (cookie, _) = http_login(&gws[0], "/").await;
    // The session was written before this instant: its TTL and deadlines run from earlier.
    let login = Instant::now();
    let keys = redis_cli(&redis, &["--scan", "--pattern", "authgate:s:*"]);
    let key = keys.lines().next().expect("a session key").to_string();
    let pttl = || redis_cli(&redis, &["PTTL", &key]).parse::<i64>().unwrap();
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(gws[1].get_as("/app", &cookie).await.status(), 200);
    // Not rewritten: at most the idle timeout less the time since login, give or take the
    // clocks' granularity (a rewrite by that read would have left ~1.5 s more).
    let since = login.elapsed();
    let t = pttl();
    assert!(
        t <= IDLE_MS - ms(since) + 200,
        "read within the touch interval must not rewrite the TTL: {t} ms left {since:?} after login"
    );
    tokio::time::sleep(Duration::from_millis(5500).saturating_sub(login.elapsed())).await;
    assert_eq!(gws[0].get_as("/app", &cookie).await.status(), 200);
    let t = pttl();
    // Not restarted it would be under 8 s - 5.5 s; restarted, near 8 s.
    assert!(
        t > IDLE_MS - 2000,
        "past the touch interval the TTL restarts: {t}"
    );

    // Active every 1.5 s: alive past the idle timeout, never past the absolute one (14 s).
    while login.elapsed() < Duration::from_millis(11_000) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if login.elapsed() < Duration::from_millis(12_000) {
            assert_eq!(gws[1].get_as("/app", &cookie).await.status(), 200);
        }
    }
    tokio::time::sleep(Duration::from_millis(15_000).saturating_sub(login.elapsed())).await;
    for gw in &gws {
        assert_eq!(
            gw.get_as("/app", &cookie).await.status(),
            401,
            "absolute timeout"
        );
    }
    // Refused, so gone from Redis (at once, or as its TTL runs out: waited for, bounded).
    let gone = common::eventually(Duration::from_secs(10), || async {
        redis_cli(&redis, &["EXISTS", &key]) == "0"
    })
    .await;
    assert!(gone, "the session key is removed");
}

/// With the cache off every request asks Redis, and a copy held in memory is reused only
/// while Redis says the record is still at that copy's revision: a change written by anyone
/// (here straight into Redis, revision bumped as every writer does) shows on the very next
/// request on every replica, and a deleted record is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_off_revalidated_copies_never_hide_a_change() {
    let (_idp, redis, gws) = replicas_on_one_redis(2, "cache_max_age = \"0s\"\n").await;
    let (cookie, _) = http_login(&gws[0], "/").await;
    async fn email_seen(gw: &Gateway, cookie: &str) -> Option<String> {
        let seen: Seen = gw.get_as("/app", cookie).await.json().await.unwrap();
        seen.header("x-forwarded-email").map(str::to_string)
    }
    let email = |gw| email_seen(gw, &cookie);
    let before = email(&gws[0]).await.expect("an email header");
    for gw in &gws {
        // Twice: the second request is answered from the revalidated copy.
        for _ in 0..2 {
            assert_eq!(email(gw).await.as_deref(), Some(before.as_str()));
        }
    }
    let keys = redis_cli(&redis, &["--scan", "--pattern", "authgate:s:*"]);
    let key = keys
        .lines()
        .find(|k| k.matches(':').count() == 2)
        .expect("a session key")
        .to_string();
    let rewrite = "local r = redis.call('HGET', KEYS[1], 'r') \
        local n = string.gsub(r, ARGV[1], 'changed@example.test') \
        redis.call('HSET', KEYS[1], 'r', n, 'rev', redis.call('HGET', KEYS[1], 'rev') + 1) \
        return redis.call('HGET', KEYS[1], 'rev')";
    let pattern = before.replace('.', "%.").replace('-', "%-");
    assert_eq!(
        redis_cli(&redis, &["EVAL", rewrite, "1", &key, &pattern]),
        "2",
        "record rewritten once"
    );
    for gw in &gws {
        assert_eq!(
            email(gw).await.as_deref(),
            Some("changed@example.test"),
            "{}",
            gw.log()
        );
    }
    redis_cli(&redis, &["DEL", &key]);
    for gw in &gws {
        assert_eq!(gw.get_as("/app", &cookie).await.status(), 401);
    }
}

/// Login on A works on B; logout on A is refused on B; the subject's sessions can be listed
/// and revoked. The same checks for every Redis deployment.
async fn shared_sessions_behave_as_one(gws: &[Gateway]) {
    let (a, b) = (&gws[0], &gws[1]);
    let mut cookies = Vec::new();
    for i in 0..4 {
        // Several sessions: on a Cluster their keys land in different slots.
        cookies.push(http_login(&gws[i % 2], "/").await.0);
    }
    for (i, c) in cookies.iter().enumerate() {
        for (j, gw) in gws.iter().enumerate() {
            let status = gw.get_as("/app", c).await.status();
            assert_eq!(
                status,
                200,
                "session {i} (made on replica {}) on replica {j}\nA: {}\nB: {}",
                i % 2,
                a.log(),
                b.log()
            );
        }
    }
    let r = client()
        .post(a.url("/.authgate/logout"))
        .header("cookie", &cookies[0])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let refused = || async { b.get_as("/app", &cookies[0]).await.status() == 401 };
    assert!(
        eventually(Duration::from_secs(2), refused).await,
        "logout on A not seen by B\n{}",
        b.log()
    );
    let listed: serde_json::Value = b
        .admin_api(Method::GET, "/sessions?subject=alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 3, "{listed}");
    let r: serde_json::Value = a
        .admin_api(Method::DELETE, "/sessions?subject=alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["revoked"], 3);
    for c in &cookies {
        for gw in gws {
            let refused = || async { gw.get_as("/app", c).await.status() == 401 };
            assert!(eventually(Duration::from_secs(2), refused).await);
        }
    }
}

/// A TOML array of strings.
fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|u| format!("\"{u}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Two gateways on a Sentinel-managed Redis (1 primary, 1 replica, 3 sentinels): sessions are
/// shared; a failover under load gives at most a brief run of 503s, never a logout; after it,
/// logins, logouts and their propagation work against the new primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_failover_under_load_logs_nobody_out() {
    let ports = [ANY_PORT; 2];
    let idp = Idp::start(true, &ports).await;
    let set = redis_sets::SentinelSet::start().await;
    let session = format!(
        "store = \"redis\"\nredis_sentinels = {}\nredis_sentinel_master = \"{}\"\nsecret = \"{SESSION_SECRET}\"\nredis_timeout = \"500ms\"\ncache_max_age = \"2s\"\n",
        toml_list(&set.sentinel_urls()),
        set.master_name()
    );
    let gws = replicas(&idp, &ports, &session, "").await;
    shared_sessions_behave_as_one(&gws).await;

    let (cookie, _) = http_login(&gws[0], "/").await;
    // Load on both replicas through the failover: every status, in order.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for gw in &gws {
        let (url, cookie, stop) = (gw.url("/app"), cookie.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let s = client()
                    .get(&url)
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                seen.push((Instant::now(), s));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = set.failover().await;
    eprintln!("sentinel failover took {took:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for (i, task) in load.into_iter().enumerate() {
        let seen = task.await.unwrap();
        let unauthorized = seen.iter().filter(|(_, s)| *s == 401).count();
        assert_eq!(
            unauthorized, 0,
            "replica {i}: a failover must not log anybody out"
        );
        assert!(
            seen.iter().all(|(_, s)| *s == 200 || *s == 503),
            "replica {i}: only 200 or 503: {:?}",
            seen.iter().map(|x| x.1).collect::<Vec<_>>()
        );
        // The longest run of 503s, in time.
        let mut worst = Duration::ZERO;
        let mut start = None;
        for (t, s) in &seen {
            match (s, start) {
                (503, None) => start = Some(*t),
                (503, Some(_)) => {}
                (_, Some(s0)) => {
                    worst = worst.max(*t - s0);
                    start = None;
                }
                _ => {}
            }
        }
        let tail_ok = seen.iter().rev().take(20).all(|(_, s)| *s == 200);
        eprintln!(
            "replica {i}: {} requests, {} × 503, longest 503 run {worst:?}",
            seen.len(),
            seen.iter().filter(|(_, s)| *s == 503).count()
        );
        assert!(tail_ok, "replica {i} did not recover after the failover");
        assert!(
            worst < Duration::from_secs(5),
            "replica {i}: 503s for {worst:?}"
        );
    }
    // The new primary serves everything, including invalidations.
    let r = gws[1]
        .admin_api(Method::DELETE, "/sessions?subject=alice")
        .await;
    assert!(
        r.status().is_success(),
        "revocation after the failover: {}\n{}",
        r.status(),
        gws[1].log()
    );
    shared_sessions_behave_as_one(&gws).await;
}

/// Two gateways on a 3-primary Redis Cluster: sessions (keys in many slots), logout
/// propagation over cluster-wide pub/sub, subject listing and revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_sessions_are_shared() {
    let ports = [ANY_PORT; 2];
    let idp = Idp::start(true, &ports).await;
    let cluster = redis_sets::RedisCluster::start().await;
    let session = format!(
        "store = \"redis\"\nredis_cluster_nodes = {}\nsecret = \"{SESSION_SECRET}\"\nredis_timeout = \"500ms\"\ncache_max_age = \"5m\"\n",
        toml_list(&cluster.node_urls())
    );
    let gws = replicas(&idp, &ports, &session, "").await;
    shared_sessions_behave_as_one(&gws).await;
}

/// Redis over TLS (a private CA given in `redis_ca_file`) with an ACL user: sessions shared
/// as usual; a wrong password fails closed (503), it never lets anyone in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tls_with_acl_user() {
    let ports = [ANY_PORT; 3];
    let idp = Idp::start(true, &ports).await;
    let pki = test_pki();
    let redis = Redis::start_secure(&pki, "acl-password-1").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "redis-ca.pem", &pki.ca_pem);
    let session = format!(
        "{}redis_ca_file = \"{}\"\ncache_max_age = \"5m\"\n",
        redis_session(&redis.url()),
        ca.display()
    );
    let gws = replicas(&idp, &ports[..2], &session, "").await;
    shared_sessions_behave_as_one(&gws).await;

    let (cookie, _) = http_login(&gws[0], "/").await;
    let wrong = session.replace("acl-password-1", "wrong-password");
    let bad = Gateway::start_with(
        &auth_config(&idp, echo().await, &wrong),
        Opts {
            port: Some(ports[2]),
            ..Opts::default()
        },
    )
    .await;
    let provider_ready = || async {
        let v = bad.readyz().await;
        v["checks"]["provider:test"] == true && v["checks"]["session_store"] == false
    };
    assert!(eventually(Duration::from_secs(10), provider_ready).await);
    let r = bad.browse_as("/app", &cookie).await;
    assert_eq!(
        r.status(),
        503,
        "store unreachable with bad credentials: fail closed"
    );
}
