//! Provider outages with the real provider (tests/idp/idp.js) and the real binary: the
//! provider killed and restarted while the gateway runs, the provider down when the gateway
//! starts, one provider of two down, and the 503s of every outage class (`Retry-After`).
//! Figures (time to not-ready, to 503, back to ready) are printed: `--nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::{
    auth_config, client, echo, free_port, http_login, redis_session, set_cookies, Gateway, Idp,
    Opts, Redis, ANY_PORT,
};

/// Bound on noticing a provider that died, and on noticing it is back (default settings:
/// a probe every 5 s, then retries after 1 s and 2 s: at most ~8 s plus scheduling).
const DETECT: Duration = Duration::from_secs(10);

const API_ROUTE: &str = r#"
[[routes]]
id = "api"
path = "/api"
upstream = "app"
bearer = true
audiences = ["urn:authgate:api", "urn:authgate:api-es256"]
"#;

/// `token` with its header's `kid` replaced: a key the gateway has never seen (the signature
/// no longer matters: no key is found for it).
fn with_kid(token: &str, kid: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (header, rest) = token.split_once('.').unwrap();
    let mut h: serde_json::Value = serde_json::from_slice(&b64.decode(header).unwrap()).unwrap();
    h["kid"] = kid.into();
    format!("{}.{rest}", b64.encode(h.to_string()))
}

async fn bearer(gw: &Gateway, token: &str) -> reqwest::Response {
    client()
        .get(gw.url("/api/x"))
        .header("accept", "application/json")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// An anonymous top-level browser navigation.
async fn browse(gw: &Gateway, path: &str) -> reqwest::Response {
    client()
        .get(gw.url(path))
        .header("accept", "text/html")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap()
}

async fn readyz_status(gw: &Gateway, query: &str) -> u16 {
    client()
        .get(gw.admin_url(&format!("/readyz{query}")))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// A 503 the gateway answered itself: `Retry-After` present and a small number of seconds.
fn assert_retry_after(r: &reqwest::Response, what: &str) {
    assert_eq!(r.status(), 503, "{what}");
    let v = r
        .headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: 503 without Retry-After"));
    let secs: u64 = v.to_str().unwrap().parse().expect("Retry-After in seconds");
    assert!((1..=60).contains(&secs), "{what}: Retry-After {secs}");
}

/// Poll every 100 ms until `cond` holds; the time it took, or `None` past `limit`.
async fn time_until<F, Fut>(limit: Duration, mut cond: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The gateway with default provider settings (refresh every 10 minutes, so liveness comes
/// from the discovery probe, not from a short refresh interval), memory sessions, `/public`,
/// `/` and a bearer `/api`.
async fn gateway_for(idp: &Idp, port: u16, wait_ready: bool) -> Gateway {
    let e = echo().await;
    let config = auth_config(idp, e, "store = \"memory\"")
        .replace("refresh_interval = \"2s\"\n", "")
        + API_ROUTE;
    let gw = Gateway::start_with(
        &config,
        Opts {
            port: Some(port),
            ..Opts::default()
        },
    )
    .await;
    if wait_ready {
        gw.wait_ready().await;
    }
    gw
}

/// The provider dies while the gateway runs, three times: each time it is noticed within a
/// bound (readiness, then 503 for anonymous browsers, API clients and sign-in), sessions and
/// bearer tokens with a cached key keep working every moment, and after each restart
/// everything comes back by itself, sign-in included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_killed_and_restarted_is_noticed_served_around_and_recovered() {
    let port = ANY_PORT;
    let idp_port = free_port();
    let mut idp = Idp::start_on(idp_port, true, &[port]).await;
    let gw = gateway_for(&idp, port, true).await;
    let (cookie, _) = http_login(&gw, "/").await;
    assert!(!cookie.is_empty());

    let mut figures = Vec::new();
    for round in 1..=3 {
        // Two tokens: one presented now (its verification is cached), one first presented
        // during the outage (verified then, with the cached key).
        let warm = idp.client_token("urn:authgate:api").await;
        let cold = idp.client_token("urn:authgate:api-es256").await;
        assert_eq!(bearer(&gw, &warm).await.status(), 200);
        let bogus_kid = with_kid(&warm, &format!("rotated-{round}"));
        assert_eq!(
            bearer(&gw, &bogus_kid).await.status(),
            401,
            "provider up, fresh keys: an unknown kid is refused"
        );
        assert_eq!(browse(&gw, "/app").await.status(), 302);

        idp.stop();
        let down = Instant::now();
        // Sampled together every 100 ms until both flipped: the session must pass every time.
        let (mut not_ready, mut anon_503) = (None, None);
        let mut session_answers = Vec::new();
        let mut redirects_to_dead_provider = 0;
        while (not_ready.is_none() || anon_503.is_none()) && down.elapsed() < DETECT {
            if not_ready.is_none() && readyz_status(&gw, "").await == 503 {
                not_ready = Some(down.elapsed());
            }
            let r = browse(&gw, "/app").await;
            match r.status().as_u16() {
                503 if anon_503.is_none() => anon_503 = Some(down.elapsed()),
                302 | 503 => {}
                s => panic!("anonymous browser got {s} during the outage"),
            }
            // Before it is noticed, sign-in still sends the browser to the provider.
            if r.status() == 302 {
                let login = client()
                    .get(gw.url(r.headers()["location"].to_str().unwrap()))
                    .send()
                    .await
                    .unwrap();
                if login.status() == 302 {
                    redirects_to_dead_provider += 1;
                }
            }
            session_answers.push(gw.get_as("/app", &cookie).await.status().as_u16());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (Some(not_ready), Some(anon_503)) = (not_ready, anon_503) else {
            panic!(
                "round {round}: provider down not noticed within {DETECT:?} (readyz {not_ready:?}, anonymous 503 {anon_503:?}):\n{}",
                gw.log()
            );
        };
        assert!(
            session_answers.iter().all(|s| *s == 200),
            "round {round}: a session request failed while the provider was down: {session_answers:?}"
        );

        // Down and noticed: every anonymous class is a 503 with Retry-After, nobody is sent
        // to the dead provider; sessions and cached keys keep working.
        let r = browse(&gw, "/app").await;
        assert_retry_after(&r, "anonymous browser");
        assert!(r.headers().get("location").is_none());
        let page = r.text().await.unwrap();
        assert!(page.contains("identity provider is unavailable"), "{page}");
        let r = client()
            .get(gw.url("/.authgate/login?rd=/app"))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_retry_after(&r, "sign-in");
        assert!(r.text().await.unwrap().contains("Sign-in unavailable"));
        let r = client()
            .get(gw.url("/app"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_retry_after(&r, "anonymous API client");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"], "provider_unavailable");
        assert_eq!(gw.get_as("/app", &cookie).await.status(), 200);
        assert_eq!(
            bearer(&gw, &warm).await.status(),
            200,
            "cached verification"
        );
        assert_eq!(
            bearer(&gw, &cold).await.status(),
            200,
            "first seen during the outage: verified with the cached key"
        );
        let r = bearer(&gw, &bogus_kid).await;
        assert_retry_after(&r, "a key not cached while the provider is down");
        assert_eq!(
            client()
                .get(gw.url("/public/x"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let v = gw.readyz().await;
        assert_eq!(v["ready"], false, "{v}");
        assert_eq!(v["checks"]["provider:test"], false, "{v}");
        assert_eq!(v["checks"]["sign_in"], false, "{v}");
        // Three failures in a row, or (an outage soon after the last one: a flapping
        // provider) three among the last attempts.
        let p = &v["providers"]["test"];
        assert!(
            p["consecutive_failures"].as_u64().unwrap() >= 3
                || p["recent_failures"].as_u64().unwrap() >= 3,
            "{v}"
        );
        assert!(v["providers"]["test"]["last_error"].is_string(), "{v}");
        let r = client().get(gw.admin_url("/readyz")).send().await.unwrap();
        assert_retry_after(&r, "/readyz");
        assert_eq!(readyz_status(&gw, "?exclude=providers").await, 200);

        // Back: ready again and sign-in redirects again, by itself.
        idp = Idp::start_on(idp_port, true, &[port]).await;
        let up = Instant::now();
        let back = time_until(DETECT, || async { readyz_status(&gw, "").await == 200 }).await;
        let Some(back) = back else {
            panic!(
                "round {round}: not ready again within {DETECT:?}:\n{}",
                gw.log()
            );
        };
        assert_eq!(browse(&gw, "/app").await.status(), 302);
        let sign_in_back = up.elapsed();
        assert_eq!(gw.get_as("/app", &cookie).await.status(), 200);
        // The restarted provider has new keys: an unknown kid is a plain refusal again.
        assert_eq!(bearer(&gw, &bogus_kid).await.status(), 401);
        let fresh = idp.client_token("urn:authgate:api").await;
        assert_eq!(bearer(&gw, &fresh).await.status(), 200);
        let (new_cookie, _) = http_login(&gw, "/").await;
        assert!(!new_cookie.is_empty(), "sign-in works again");
        figures.push((
            round,
            not_ready,
            anon_503,
            redirects_to_dead_provider,
            session_answers.len(),
            back,
            sign_in_back,
        ));
    }
    println!("provider killed and restarted (default settings: probe every 5 s, 3 failures):");
    println!("round | not ready after | anonymous 503 after | sign-ins sent to the dead provider meanwhile | session requests during detection (all 200) | ready again after restart | sign-in redirects again");
    for (round, nr, a, dead, s, back, sb) in &figures {
        println!(
            "{round} | {:.1} s | {:.1} s | {dead} | {s} | {:.1} s | {:.1} s",
            nr.as_secs_f64(),
            a.as_secs_f64(),
            back.as_secs_f64(),
            sb.as_secs_f64()
        );
    }
    let log = gw.log();
    // Round 1: three failures in a row; rounds 2 and 3 come soon after an outage, so they
    // may count as a flapping provider ("N of its last 10 attempts failed") instead.
    for line in ["provider unavailable", "provider ready again"] {
        assert_eq!(log.matches(line).count(), 3, "{line}:\n{log}");
    }
    assert!(
        log.contains("provider unavailable after 3 failed refreshes"),
        "{log}"
    );
}

/// The provider is down when the gateway starts, and an API client brings a valid token it
/// got earlier: 503 with Retry-After (keep the token, retry), never 401. Once the provider is
/// back, a token signed by a key it no longer has is refused (401) and a fresh one passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_with_the_provider_down_answers_503_to_valid_bearer_tokens() {
    let port = ANY_PORT;
    let idp_port = free_port();
    let mut idp = Idp::start_on(idp_port, true, &[port]).await;
    let rs256 = idp.client_token("urn:authgate:api").await;
    let es256 = idp.client_token("urn:authgate:api-es256").await;
    idp.stop();

    let gw = gateway_for(&idp, port, false).await;
    for (name, token) in [("RS256", &rs256), ("ES256", &es256)] {
        for _ in 0..3 {
            let r = bearer(&gw, token).await;
            assert_retry_after(&r, name);
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"], "provider_unavailable", "{name}");
        }
    }
    assert_eq!(readyz_status(&gw, "").await, 503);
    assert_retry_after(&browse(&gw, "/app").await, "anonymous browser");
    let r = client()
        .get(gw.url("/.authgate/login"))
        .send()
        .await
        .unwrap();
    assert_retry_after(&r, "sign-in");
    // One throttled line for the six refusals (same cause, same route).
    let lines = gw
        .log()
        .matches("bearer token cannot be checked: provider keys unavailable")
        .count();
    assert_eq!(lines, 1, "{}", gw.log());

    let idp = Idp::start_on(idp_port, true, &[port]).await;
    let started = Instant::now();
    gw.wait_ready().await;
    println!(
        "cold start, provider down: 503 + Retry-After for RS256 and ES256 tokens; ready {:.1} s after the provider started",
        started.elapsed().as_secs_f64()
    );
    // The restarted provider has fresh keys: the old tokens' key is gone, a real mismatch.
    assert_eq!(bearer(&gw, &rs256).await.status(), 401);
    let fresh = idp.client_token("urn:authgate:api").await;
    assert_eq!(bearer(&gw, &fresh).await.status(), 200);
}

/// Two providers, one dies: the instance stays ready (the other can sign people in), the
/// JSON says which is down; a route that only accepts the dead one answers 503, the others
/// still redirect to sign in. Both down: not ready, unless providers are excluded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_provider_of_two_down() {
    let port = ANY_PORT;
    let (mut a, mut b) = (
        Idp::start(true, &[port]).await,
        Idp::start(true, &[port]).await,
    );
    let e = echo().await;
    let config = format!(
        "{}{}[session]\nstore = \"memory\"\n\n[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nid = \"only-b\"\npath = \"/only-b\"\nupstream = \"app\"\nproviders = [\"b\"]\n\n[[routes]]\nid = \"any\"\npath = \"/\"\nupstream = \"app\"\n",
        a.provider_toml_as("a"),
        b.provider_toml_as("b"),
    );
    let gw = Gateway::start_with(
        &config,
        Opts {
            port: Some(port),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    assert_eq!(browse(&gw, "/only-b/x").await.status(), 302);

    b.stop();
    let down = || async { gw.readyz().await["providers"]["b"]["ready"] == false };
    let t = time_until(DETECT, down)
        .await
        .unwrap_or_else(|| panic!("b's outage not noticed:\n{}", gw.log()));
    println!(
        "one provider of two down: noticed after {:.1} s; instance still ready",
        t.as_secs_f64()
    );
    let v = gw.readyz().await;
    assert_eq!(v["ready"], true, "{v}");
    assert_eq!(v["checks"]["provider:a"], true, "{v}");
    assert_eq!(v["checks"]["provider:b"], false, "{v}");
    assert_eq!(v["checks"]["sign_in"], true, "{v}");
    assert_retry_after(
        &browse(&gw, "/only-b/x").await,
        "route of the dead provider",
    );
    let r = browse(&gw, "/x").await;
    assert_eq!(r.status(), 302, "a can still sign people in");
    // The sign-in page offers a, and says b cannot be reached instead of linking to a 503.
    let page = client()
        .get(gw.url("/.authgate/login"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("login?provider=a"), "{page}");
    assert!(!page.contains("login?provider=b"), "{page}");
    assert!(page.contains("b cannot be reached right now"), "{page}");
    let r = client()
        .get(gw.url("/.authgate/login?provider=b"))
        .send()
        .await
        .unwrap();
    assert_retry_after(&r, "sign-in through b");
    let r = client()
        .get(gw.url("/.authgate/login?provider=a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);

    a.stop();
    let none = || async { readyz_status(&gw, "").await == 503 };
    assert!(time_until(DETECT, none).await.is_some(), "{}", gw.log());
    assert_eq!(gw.readyz().await["checks"]["sign_in"], false);
    assert_eq!(readyz_status(&gw, "?exclude=providers").await, 200);
    assert_retry_after(&browse(&gw, "/x").await, "no provider left");
}

/// Every 503 class the gateway answers itself carries Retry-After: session store down
/// (proxied request, browser and API; sign-in; the admin API; /readyz), and the store's
/// error line is written once for a burst of refusals, with a count after the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_503s_say_when_to_retry_and_log_once() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let mut redis = Redis::start().await;
    let e = echo().await;
    let session = format!("{}cache_max_age = \"0s\"\n", redis_session(&redis.url()));
    let gw = Gateway::start_with(
        &auth_config(&idp, e, &session),
        Opts {
            port: Some(port),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    let (cookie, _) = http_login(&gw, "/").await;
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 200);

    redis.kill();
    let burst: Vec<_> = (0..50)
        .map(|_| {
            let (url, cookie) = (gw.url("/app"), cookie.clone());
            tokio::spawn(async move {
                client()
                    .get(url)
                    .header("accept", "application/json")
                    .header("cookie", cookie)
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    for r in burst {
        let r = r.await.unwrap();
        assert_retry_after(&r, "session request, store down");
        assert!(set_cookies(&r).is_empty(), "the cookie is kept");
    }
    assert_retry_after(&gw.browse_as("/app", &cookie).await, "browser, store down");
    let r = client()
        .get(gw.url("/.authgate/login?rd=/app"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_retry_after(&r, "sign-in, store down");
    let r = gw
        .admin_api(reqwest::Method::GET, "/sessions?subject=alice")
        .await;
    assert_retry_after(&r, "admin API, store down");
    let r = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_retry_after(&r, "/readyz, store down");

    let store_lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("authgate::proxy: session store unavailable"))
            .count()
    };
    let log = gw.log();
    let lines = store_lines(&log);
    assert_eq!(
        lines, 1,
        "{lines} store lines for 51 proxied refusals in a few seconds:\n{log}"
    );
    // After the window, the next refusal's line carries the count of the swallowed ones.
    tokio::time::sleep(Duration::from_millis(10_200)).await;
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 503);
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("session store unavailable (") && l.contains("times in the last")),
        "{log}"
    );
    assert_eq!(store_lines(&log), 2, "{log}");
    println!(
        "store down: 52 refused proxied requests over ~11 s, {} 'session store unavailable' lines from the proxy",
        store_lines(&log)
    );
    redis.restart().await;
    let back = || async { gw.get_as("/app", &cookie).await.status() == 200 };
    assert!(common::eventually(Duration::from_secs(10), back).await);
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// A provider that hangs (SIGSTOP: connections accepted by the kernel, never answered) is
/// noticed too, through the refresh timeouts, and comes back when it thaws; sessions are
/// served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_provider_is_noticed_through_timeouts() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let gw = gateway_for(&idp, port, true).await;
    let (cookie, _) = http_login(&gw, "/").await;
    let pid = idp.pid();

    signal(pid, "-STOP");
    let frozen = Instant::now();
    let sessions = std::sync::Mutex::new(Vec::new());
    let noticed = time_until(Duration::from_secs(30), || async {
        let s = gw.get_as("/app", &cookie).await.status().as_u16();
        sessions.lock().unwrap().push(s);
        browse(&gw, "/app").await.status() == 503
    })
    .await;
    let Some(noticed) = noticed else {
        signal(pid, "-CONT");
        panic!("frozen provider not noticed within 30 s:\n{}", gw.log());
    };
    assert_eq!(readyz_status(&gw, "").await, 503);
    let sessions = sessions.into_inner().unwrap();
    assert!(
        sessions.iter().all(|s| *s == 200),
        "a session request failed while the provider hung: {sessions:?}"
    );
    signal(pid, "-CONT");
    let back = time_until(DETECT, || async { readyz_status(&gw, "").await == 200 })
        .await
        .unwrap_or_else(|| panic!("not ready after the provider thawed:\n{}", gw.log()));
    assert_eq!(browse(&gw, "/app").await.status(), 302);
    println!(
        "frozen provider (SIGSTOP): anonymous 503 after {:.1} s ({} session requests meanwhile, all 200); ready {:.1} s after SIGCONT (frozen {:.1} s in all)",
        noticed.as_secs_f64(),
        sessions.len(),
        back.as_secs_f64(),
        frozen.elapsed().as_secs_f64()
    );
}

/// Token introspection with the provider down: 503 with Retry-After for every request (the
/// client keeps its token), and one error line for the burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_outage_is_503_and_logged_once() {
    let port = ANY_PORT;
    let mut idp = Idp::start(true, &[port]).await;
    let e = echo().await;
    let config = common::with_provider_keys(
        &auth_config(&idp, e, "store = \"memory\""),
        "introspect_opaque_tokens = true\nintrospection_requires_audience = false\n",
    );
    let gw = Gateway::start_with(
        &format!("{config}{API_ROUTE}"),
        Opts {
            port: Some(port),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    let opaque = |idp: &Idp| {
        let url = format!("{}/token", idp.issuer);
        async move {
            let r = client()
                .post(url)
                .basic_auth("authgate", Some("authgate-secret"))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap();
            let v: serde_json::Value = r.json().await.unwrap();
            v["access_token"].as_str().unwrap().to_string()
        }
    };
    let token = opaque(&idp).await;
    assert_ne!(token.split('.').count(), 3, "an opaque token");
    let other = opaque(&idp).await;
    assert_eq!(bearer(&gw, &token).await.status(), 200);

    idp.stop();
    for _ in 0..20 {
        assert_retry_after(&bearer(&gw, &other).await, "introspection down");
    }
    let lines = gw
        .log()
        .lines()
        .filter(|l| l.contains("token introspection unavailable"))
        .count();
    assert_eq!(lines, 1, "{}", gw.log());
}

/// The JWKS endpoint dies while discovery keeps answering (SRE review of issue 13): the
/// liveness probe fetches the keys too, so the provider is reported unavailable within a
/// probe interval and its retries, not at the next full refresh (10 minutes by default),
/// and it is back by itself once the keys answer again.
#[tokio::test]
async fn jwks_dying_alone_is_noticed_by_the_probe_and_recovers() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let gw = gateway_for(&idp, port, true).await;
    let bound = DETECT + Duration::from_secs(3);

    idp.test_post("/__test/jwks?down=1").await;
    let down = time_until(bound, || async { readyz_status(&gw, "").await == 503 }).await;
    let st = gw.readyz().await;
    println!("JWKS down (discovery up): not ready after {down:?}; {st}");
    assert!(
        down.is_some(),
        "JWKS down not noticed within {bound:?}:\n{}",
        gw.log()
    );
    let p = &st["providers"]["test"];
    assert!(
        p["last_error"].as_str().is_some_and(|e| e.contains("jwks")),
        "{st}"
    );
    // Browsers without a session: 503, not a redirect to a provider whose keys are gone.
    assert_retry_after(&browse(&gw, "/app").await, "anonymous browser, JWKS down");

    idp.test_post("/__test/jwks?down=0").await;
    let up = time_until(bound, || async { readyz_status(&gw, "").await == 200 }).await;
    println!("JWKS back: ready after {up:?}");
    assert!(
        up.is_some(),
        "not ready again within {bound:?}:\n{}",
        gw.log()
    );
}
