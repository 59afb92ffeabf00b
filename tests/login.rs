//! The OpenID Connect login end to end over HTTP, with the real `oidc-provider` (auto-login
//! mode), real `redis-server` and the real binary: identity headers, cookies, logout, every
//! callback error, fixation, fail-closed behaviour, cache coherence across two gateways.

mod common;

use std::time::Duration;

use common::{
    auth_config, auth_gateway, auth_gateway_with, client, echo, eventually, free_port, http_login,
    set_cookies, tx_cookie, Gateway, Idp, Opts, Redis, Seen, ANY_PORT,
};

fn redis_session(redis: &Redis) -> String {
    common::redis_session(&redis.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_identity_headers_and_a_safe_cookie() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let gw = auth_gateway(&idp, port, "store = \"memory\"").await;

    let (cookie, resp) = http_login(&gw, "/app/page?x=1").await;
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "/app/page?x=1");
    let set = set_cookies(&resp);
    let session_cookie = set
        .iter()
        .find(|c| c.starts_with("authgate_session="))
        .unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(
            session_cookie.contains(attr),
            "{attr} missing: {session_cookie}"
        );
    }
    assert!(!session_cookie.contains("Domain"), "{session_cookie}");
    assert!(
        set.iter()
            .any(|c| c.contains("_tx_") && c.contains("Max-Age=0")),
        "transaction cookie not cleared: {set:?}"
    );

    // The upstream sees the identity, not the gateway's cookie, and never the client's forgeries.
    let r = client()
        .get(gw.url("/app/page"))
        .header("cookie", format!("{cookie}; theme=dark"))
        .header("x-forwarded-user", "mallory")
        .header("X_Forwarded_Email", "m@evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    assert_eq!(seen.all("x-forwarded-user"), vec!["alice"]);
    assert_eq!(seen.header("x-forwarded-email"), Some("alice@example.com"));
    assert_eq!(seen.header("x-forwarded-groups"), Some("admins,dev"));
    assert_eq!(seen.header("x-forwarded-preferred-username"), Some("alice"));
    assert!(seen.header("x_forwarded_email").is_none());
    assert_eq!(seen.header("cookie"), Some("theme=dark"));
    assert!(
        seen.header("x-forwarded-access-token").is_none(),
        "tokens are not forwarded unless a route opts in"
    );

    // userinfo: the identity, no tokens.
    let r = gw.get_as("/.authgate/userinfo", &cookie).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["sub"], "alice");
    assert_eq!(v["groups"], serde_json::json!(["admins", "dev"]));
    assert!(
        !v.to_string().contains("eyJ"),
        "a token leaked into userinfo: {v}"
    );

    let m = gw.metrics().await;
    assert!(
        m.contains("authgate_logins_total{stage=\"completed\"} 1"),
        "{m}"
    );
    // The access log names the user (not the credential).
    let audited =
        || async { gw.log().contains("user=\"alice\"") || gw.log().contains("user=alice") };
    assert!(
        eventually(std::time::Duration::from_secs(3), audited).await,
        "{}",
        gw.log()
    );
    assert!(
        !gw.log().contains(cookie.split('=').nth(1).unwrap()),
        "session cookie value in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_fixation_and_timeouts() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let gw = auth_gateway_with(
        &idp,
        port,
        "store = \"memory\"\nidle_timeout = \"3s\"\nabsolute_timeout = \"6s\"\ncache_max_age = \"1s\"",
        "\n[[routes]]\nid = \"token\"\npath = \"/token\"\nupstream = \"app\"\npass_access_token = true\n",
    )
    .await;

    // An attacker's valid session cookie planted in the victim's browser is not kept: the
    // victim's login issues a new ID.
    let (attacker, _) = http_login(&gw, "/").await;
    let (victim, _) = common::http_login_with_cookie(&gw, "/", &attacker).await;
    assert_ne!(attacker, victim);
    assert!(victim.starts_with("authgate_session=v1."));

    // pass_access_token: only on the route that opts in.
    let seen: Seen = gw.get_as("/token", &victim).await.json().await.unwrap();
    assert!(seen
        .header("x-forwarded-access-token")
        .is_some_and(|t| !t.is_empty()));
    let seen: Seen = gw.get_as("/app", &victim).await.json().await.unwrap();
    assert!(seen.header("x-forwarded-access-token").is_none());

    // Idle timeout: activity keeps the session, 3 s of silence ends it...
    for _ in 0..4 {
        assert_eq!(gw.get_as("/app", &victim).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    // ...but the absolute timeout (6 s) is never extended by activity. At least 6.3 s have
    // passed; polling (activity every 50 ms, so never idle) until it is refused gives the
    // clocks' granularity a deadline instead of a 300 ms margin.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    eventually(Duration::from_secs(3), || async {
        gw.get_as("/app", &victim).await.status() == 401
    })
    .await;
    assert_eq!(
        gw.get_as("/app", &victim).await.status(),
        401,
        "absolute timeout not enforced"
    );
    // The attacker's session was idle for > 3 s.
    assert_eq!(
        gw.get_as("/app", &attacker).await.status(),
        401,
        "idle timeout not enforced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_stale_cookies_are_not_sessions() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let gw = auth_gateway(&idp, port, "store = \"memory\"").await;
    let (cookie, _) = http_login(&gw, "/").await;
    let value = cookie.split_once('=').unwrap().1.to_string();
    // Flip one character of the ID: the MAC fails, so no store lookup happens.
    let mut forged = value.clone().into_bytes();
    forged[5] = if forged[5] == b'A' { b'B' } else { b'A' };
    let forged = format!("authgate_session={}", String::from_utf8(forged).unwrap());
    let before = gw.metrics().await;
    for c in [
        forged.as_str(),
        "authgate_session=v1.attacker-chosen.value",
        "authgate_session=",
    ] {
        let r = gw.get_as("/app", c).await;
        assert_eq!(r.status(), 401, "{c}");
    }
    let after = gw.metrics().await;
    let lookups = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("authgate_session_cache_lookups_total"))
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        lookups(&before),
        lookups(&after),
        "a forged cookie reached the session lookup"
    );
    // The real one still works.
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_and_signs_out_at_the_provider() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let gw = auth_gateway(&idp, port, "store = \"memory\"").await;
    let (cookie, _) = http_login(&gw, "/").await;
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 200);

    let r = client()
        .post(gw.url("/.authgate/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(set_cookies(&r)
        .iter()
        .any(|c| c.starts_with("authgate_session=;") || c.contains("Max-Age=0")));
    let page = r.text().await.unwrap();
    // RP-initiated logout by form POST: the ID token hint is in the body, not a URL.
    assert!(
        page.contains(&format!("action=\"{}/session/end\"", idp.issuer)),
        "{page}"
    );
    assert!(
        page.contains("name=\"id_token_hint\" value=\"eyJ"),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "name=\"post_logout_redirect_uri\" value=\"http://{}/\"",
            gw.addr
        )),
        "{page}"
    );
    // The provider accepts the form.
    let hint = page
        .split("name=\"id_token_hint\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let r = client()
        .post(format!("{}/session/end", idp.issuer))
        .form(&[
            ("id_token_hint", hint),
            ("post_logout_redirect_uri", &format!("http://{}/", gw.addr)),
            ("client_id", "authgate"),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_redirection() || r.status().is_success(),
        "{}",
        r.status()
    );

    // The old cookie is dead: browsers are sent to sign in again, APIs get 401.
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 401);
    let r = gw.browse_as("/app", &cookie).await;
    assert_eq!(r.status(), 302);
}

/// Two valid session cookies in one request (one planted beside the user's: a sibling
/// subdomain can set one when the cookie has no `__Host-` name): neither is believed, so the
/// sign-out must end both, never answer as if done while they live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_with_two_valid_session_cookies_ends_both() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let gw = auth_gateway(&idp, port, "store = \"memory\"").await;
    let logout = |cookies: Vec<String>| {
        let mut b = client().post(gw.url("/.authgate/logout"));
        for c in cookies {
            b = b.header("cookie", c);
        }
        b.send()
    };
    for shape in [
        "one line",
        "two lines",
        "two lines, reversed, with a forged third",
    ] {
        let (a, _) = http_login(&gw, "/").await;
        let (b, _) = http_login(&gw, "/").await;
        assert_ne!(a, b);
        assert_eq!(gw.get_as("/app", &a).await.status(), 200);
        assert_eq!(gw.get_as("/app", &b).await.status(), 200);
        let forged = format!("{}x", &b[..b.len() - 1]);
        let cookies = match shape {
            "one line" => vec![format!("theme=dark; {a}; {b}")],
            "two lines" => vec![a.clone(), b.clone()],
            _ => vec![forged, b.clone(), a.clone()],
        };
        let r = logout(cookies).await.unwrap();
        assert_eq!(r.status(), 200, "{shape}");
        assert!(
            set_cookies(&r).iter().any(|c| c.contains("Max-Age=0")),
            "{shape}"
        );
        let page = r.text().await.unwrap();
        // Whose session is whose is unknown: no hint, the provider ends the browser's own.
        assert!(
            page.contains(&format!("action=\"{}/session/end\"", idp.issuer)),
            "{shape}: {page}"
        );
        assert!(!page.contains("id_token_hint"), "{shape}: {page}");
        assert!(
            page.contains("name=\"client_id\" value=\"authgate\""),
            "{shape}: {page}"
        );
        // The provider takes the form without a hint.
        let r = client()
            .post(format!("{}/session/end", idp.issuer))
            .form(&[
                ("post_logout_redirect_uri", &format!("http://{}/", gw.addr)),
                ("client_id", &"authgate".to_string()),
            ])
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_redirection() || r.status().is_success(),
            "{shape}: the provider answered {}",
            r.status()
        );
        assert_eq!(gw.get_as("/app", &a).await.status(), 401, "{shape}: first");
        assert_eq!(gw.get_as("/app", &b).await.status(), 401, "{shape}: second");
    }
    // The same cookie twice is one session: its own ID token is the hint.
    let (a, _) = http_login(&gw, "/").await;
    let r = logout(vec![format!("{a}; {a}")]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("name=\"id_token_hint\" value=\"eyJ"));
    assert_eq!(gw.get_as("/app", &a).await.status(), 401);
}

/// GET `url` (with `cookie`) and check the refusal: status, JSON reason, no session cookie.
async fn expect(url: String, cookie: Option<&str>, status: u16, reason: &str) {
    let mut b = client().get(url).header("accept", "application/json");
    if let Some(c) = cookie {
        b = b.header("cookie", c.to_string());
    }
    let r = b.send().await.unwrap();
    assert_eq!(r.status(), status, "{reason}");
    assert!(
        !set_cookies(&r)
            .iter()
            .any(|c| c.starts_with("authgate_session=v1")),
        "{reason}: a session was created"
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_errors_are_clear_and_create_no_session() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let gw = auth_gateway(&idp, port, "store = \"memory\"").await;
    let c = client();

    // Start a real login to get a valid state and its transaction cookie.
    let r = c
        .get(gw.url("/.authgate/login?rd=%2F"))
        .send()
        .await
        .unwrap();
    let tx = tx_cookie(&r);
    let auth_url = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let state = auth_url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .to_string();
    assert!(auth_url
        .query_pairs()
        .any(|(k, v)| k == "code_challenge_method" && v == "S256"));
    assert!(auth_url.query_pairs().any(|(k, _)| k == "nonce"));

    let cb = |q: &str| gw.url(&format!("/.authgate/callback?{q}"));
    // The provider advertises RFC 9207: every answer names it.
    let iss: String = url::form_urlencoded::byte_serialize(idp.issuer.as_bytes()).collect();
    // In order: the bogus code consumes the transaction, so its replay is an unknown state.
    let cases = [
        ("code=x".to_string(), true, 400, "missing_parameter"),
        (
            format!("code=x&state={state}&state={state}"),
            true,
            400,
            "duplicate_parameter",
        ),
        (
            format!("code=x&code=y&state={state}"),
            true,
            400,
            "duplicate_parameter",
        ),
        // Not started in this browser: no transaction cookie.
        (format!("code=x&state={state}"), false, 400, "unbound_state"),
        (
            format!("code=x&state={state}&iss={iss}&iss={iss}"),
            true,
            400,
            "duplicate_parameter",
        ),
        (
            format!("code=bogus&state={state}&iss={iss}"),
            true,
            401,
            "code_rejected",
        ),
        (
            format!("code=bogus&state={state}&iss={iss}"),
            true,
            400,
            "unknown_state",
        ),
    ];
    for (query, with_cookie, status, reason) in cases {
        expect(
            cb(&query),
            with_cookie.then_some(tx.as_str()),
            status,
            reason,
        )
        .await;
    }

    // A fresh login each: its transaction cookie and state.
    let fresh = || async {
        let r = c.get(gw.url("/.authgate/login")).send().await.unwrap();
        let tx = tx_cookie(&r);
        let state = reqwest::Url::parse(r.headers()["location"].to_str().unwrap())
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .to_string();
        (tx, state)
    };

    // Mix-up defence (RFC 9207): an answer that does not name this login's provider, or
    // arrives at another provider's callback address, is not this login's.
    let evil: String = url::form_urlencoded::byte_serialize(b"https://evil.example").collect();
    let slash: String =
        url::form_urlencoded::byte_serialize(format!("{}/", idp.issuer).as_bytes()).collect();
    for q in [
        "code=x&state={state}".to_string(),
        format!("code=x&state={{state}}&iss={evil}"),
        format!("code=x&state={{state}}&iss={slash}"),
        "code=x&state={state}&iss=".to_string(),
        "error=access_denied&state={state}".to_string(),
    ] {
        let (tx, state) = fresh().await;
        let q = q.replace("{state}", &state);
        expect(cb(&q), Some(&tx), 401, "wrong_provider").await;
    }
    for path in ["/.authgate/callback/idp", "/.authgate/callback/other"] {
        let (tx, state) = fresh().await;
        let url = gw.url(&format!("{path}?code=x&state={state}&iss={iss}"));
        expect(url, Some(&tx), 401, "wrong_provider").await;
    }

    // error= from the provider (user refused consent).
    let (tx2, state2) = fresh().await;
    expect(
        cb(&format!("error=access_denied&state={state2}&iss={iss}")),
        Some(&tx2),
        401,
        "provider_error",
    )
    .await;

    // Browsers get a readable page.
    let r = c
        .get(cb("state=nope"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("<h1>Sign-in failed</h1>") && html.contains("Sign in again"),
        "{html}"
    );

    let m = gw.metrics().await;
    for reason in [
        "missing_parameter",
        "duplicate_parameter",
        "unbound_state",
        "code_rejected",
        "unknown_state",
        "provider_error",
        "wrong_provider",
    ] {
        assert!(
            m.contains(&format!(
                "authgate_login_failures_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirects_after_login_fall_back_to_root() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let gw = auth_gateway(&idp, port, "store = \"memory\"").await;
    for (rd, want) in [
        ("%2F%2Fevil.example%2F", "/"),
        ("https%3A%2F%2Fevil.example%2F", "/"),
        ("%2Fok%3Fa%3D1", "/ok?a=1"),
    ] {
        let r = client()
            .get(gw.url(&format!("/.authgate/login?rd={rd}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        // Finish this very login and check where the callback sends us.
        let tx = tx_cookie(&r);
        let idp_client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .unwrap();
        let mut url = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        let location = loop {
            let r = idp_client.get(url.clone()).send().await.unwrap();
            let next = url.join(r.headers()["location"].to_str().unwrap()).unwrap();
            if next.path() == "/.authgate/callback" {
                let r = client()
                    .get(gw.url(&format!("{}?{}", next.path(), next.query().unwrap())))
                    .header("cookie", &tx)
                    .send()
                    .await
                    .unwrap();
                break r.headers()["location"].to_str().unwrap().to_string();
            }
            url = next;
        };
        assert_eq!(location, want, "rd={rd}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_at_start_fails_closed_then_recovers() {
    let port = ANY_PORT;
    let idp_port = free_port();
    let dead = Idp::not_running(idp_port);
    let e = echo().await;
    let gw = Gateway::start_with(
        &auth_config(&dead, e, "store = \"memory\""),
        Opts {
            port: Some(port),
            ..Opts::default()
        },
    )
    .await;
    drop(dead);
    let c = client();
    let r = c.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["checks"]["provider:test"], false);
    // No redirect loop to a provider that is down: 503, for browsers too.
    let r = c
        .get(gw.url("/app"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        c.get(gw.url("/.authgate/login"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    // Public routes are unaffected.
    assert_eq!(
        c.get(gw.url("/public/x")).send().await.unwrap().status(),
        200
    );

    let _idp = Idp::start_on(idp_port, true, &[port]).await;
    gw.wait_ready().await;
    let (cookie, _) = http_login(&gw, "/").await;
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sessions_fail_closed_and_recover() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let mut redis = Redis::start().await;
    let gw = auth_gateway(
        &idp,
        port,
        &format!("{}cache_max_age = \"0s\"\n", redis_session(&redis)),
    )
    .await;
    let (cookie, _) = http_login(&gw, "/").await;
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 200);

    // Unreachable (frozen) Redis: 503, the cookie is kept, no redirect to sign in.
    redis.pause(true);
    let r = gw.browse_as("/app", &cookie).await;
    assert_eq!(r.status(), 503);
    assert!(
        set_cookies(&r).is_empty(),
        "the cookie must not be touched while Redis is down"
    );
    let r = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    redis.pause(false);
    let back = || async { gw.get_as("/app", &cookie).await.status() == 200 };
    assert!(
        eventually(Duration::from_secs(5), back).await,
        "did not recover after Redis came back:\n{}",
        gw.log()
    );

    // Killed and restarted (AOF on): 503 while down, then the same session works again.
    redis.kill();
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 503);
    redis.restart().await;
    assert!(
        eventually(Duration::from_secs(8), back).await,
        "did not recover after a Redis restart:\n{}",
        gw.log()
    );
    gw.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_auth() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let redis = Redis::start_with_password(Some("s3cret-pass")).await;
    let gw = auth_gateway(&idp, port, &redis_session(&redis)).await;
    let (cookie, _) = http_login(&gw, "/").await;
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 200);
    assert!(
        !gw.log().contains("s3cret-pass"),
        "the Redis password reached the log"
    );

    // A wrong password: not ready, and protected routes fail closed.
    let port2 = ANY_PORT;
    let e = echo().await;
    let wrong = redis_session(&redis).replace("s3cret-pass", "wrong");
    let gw2 = Gateway::start_with(
        &auth_config(&idp, e, &wrong),
        Opts {
            port: Some(port2),
            ..Opts::default()
        },
    )
    .await;
    // Noticed within a deadline rather than after a fixed 500 ms.
    let readyz = || async {
        client()
            .get(gw2.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
    };
    eventually(Duration::from_secs(10), || async { readyz().await == 503 }).await;
    assert_eq!(
        client()
            .get(gw2.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(gw2.get_as("/app", &cookie).await.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_decides_on_the_session_identity() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let routes = "\n[[routes]]\nid = \"admins\"\npath = \"/admins\"\nupstream = \"app\"\n[routes.policy]\ngroups = [\"admins\"]\nemail_domains = [\"example.com\"]\n\n[[routes]]\nid = \"bob-only\"\npath = \"/bob\"\nupstream = \"app\"\n[routes.policy]\nusers = [\"bob\"]\n\n[[routes]]\nid = \"read-only\"\npath = \"/ro\"\nupstream = \"app\"\n[routes.policy]\nmethods = [\"GET\", \"HEAD\"]\n";
    let gw = auth_gateway_with(&idp, port, "store = \"memory\"", routes).await;
    let (cookie, _) = http_login(&gw, "/").await;
    assert_eq!(gw.get_as("/admins/x", &cookie).await.status(), 200);
    let r = gw.get_as("/bob/x", &cookie).await;
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "forbidden");
    let r = gw.browse_as("/bob/x", &cookie).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("<h1>Access denied</h1>"));
    assert_eq!(gw.get_as("/ro/x", &cookie).await.status(), 200);
    let r = client()
        .delete(gw.url("/ro/x"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(gw.log().contains("denied by policy"));
    // A GET that claims to be a DELETE through a method-override header is refused.
    let r = client()
        .get(gw.url("/ro/x"))
        .header("cookie", &cookie)
        .header("X-HTTP-Method-Override", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_in_a_thousand_groups() {
    let port = ANY_PORT;
    let groups: Vec<String> = (0..1000).map(|i| format!("team-{i:04}")).collect();
    let users = serde_json::json!({"many": {"email": "many@example.com", "email_verified": true, "groups": groups}});
    let idp = Idp::start_with_env(
        0,
        true,
        &[port],
        &[
            ("IDP_USERS", &users.to_string()),
            ("IDP_AUTO_LOGIN_ACCOUNT", "many"),
        ],
    )
    .await;
    let gw = auth_gateway(&idp, port, "store = \"memory\"").await;
    let (cookie, _) = http_login(&gw, "/").await;
    let r = gw.get_as("/app", &cookie).await;
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    let header = seen.header("x-forwarded-groups").unwrap();
    assert!(header.len() <= 4096, "{} bytes", header.len());
    assert!(header
        .split(',')
        .all(|g| g.starts_with("team-") && g.len() == 9));
    assert!(gw.log().contains("groups header truncated"));

    // With a filter, only the matching groups go upstream, whole.
    let port2 = ANY_PORT;
    let idp2 = Idp::start_with_env(
        0,
        true,
        &[port2],
        &[
            ("IDP_USERS", &users.to_string()),
            ("IDP_AUTO_LOGIN_ACCOUNT", "many"),
        ],
    )
    .await;
    let gw2 = auth_gateway_with(
        &idp2,
        port2,
        "store = \"memory\"",
        "\n[headers]\ngroups_filter = \"^team-00[0-4]\"\n",
    )
    .await;
    let (cookie, _) = http_login(&gw2, "/").await;
    let seen: Seen = gw2.get_as("/app", &cookie).await.json().await.unwrap();
    assert_eq!(
        seen.header("x-forwarded-groups")
            .unwrap()
            .split(',')
            .count(),
        50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_identity_assertion_verifies_upstream() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let routes = "\n[[routes]]\nid = \"signed\"\npath = \"/signed\"\nupstream = \"app\"\nidentity_assertion = true\n";
    let gw = auth_gateway_with(&idp, port, "store = \"memory\"", routes).await;
    let (cookie, _) = http_login(&gw, "/").await;
    let seen: Seen = gw.get_as("/signed/x", &cookie).await.json().await.unwrap();
    let token = seen
        .header("x-authgate-assertion")
        .expect("assertion header")
        .to_string();
    // Not on routes that did not ask for it, and never from a client.
    let r = client()
        .get(gw.url("/app"))
        .header("cookie", &cookie)
        .header("x-authgate-assertion", "forged")
        .send()
        .await
        .unwrap();
    let other: Seen = r.json().await.unwrap();
    assert!(other.header("x-authgate-assertion").is_none());

    // The upstream's side: an independent library (jose, in Node) checks it against the
    // gateway's published keys, issuer and this route as audience.
    let node = common::require("node", "apt-get install nodejs");
    let out = std::process::Command::new(node)
        .arg("verify-assertion.mjs")
        .arg(gw.url("/.authgate/jwks.json"))
        .args(["authgate", "signed", &token])
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["header"]["alg"], "ES256");
    assert_eq!(v["claims"]["sub"], "alice");
    assert_eq!(v["claims"]["email"], "alice@example.com");
    assert_eq!(v["claims"]["groups"], serde_json::json!(["admins", "dev"]));
    // For another route (audience) the same token must not verify.
    let out = std::process::Command::new("node")
        .arg("verify-assertion.mjs")
        .arg(gw.url("/.authgate/jwks.json"))
        .args(["authgate", "app", &token])
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}
