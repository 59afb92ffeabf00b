//! API clients with bearer JWT access tokens issued by the real provider (oidc-provider with
//! resource indicators: RFC 9068 `at+jwt` tokens), through the real binary.

mod common;

use common::{auth_gateway_with, client, Gateway, Idp, Seen, ANY_PORT};

const API_ROUTES: &str = r#"
[[routes]]
id = "api"
path = "/api"
upstream = "app"
bearer = true
audiences = ["urn:authgate:api", "urn:authgate:api-es256"]

[[routes]]
id = "api-other"
path = "/other-api"
upstream = "app"
bearer = true
audiences = ["urn:authgate:other"]

[[routes]]
id = "api-admins"
path = "/admin-api"
upstream = "app"
bearer = true
audiences = ["urn:authgate:api"]
[routes.policy]
groups = ["admins"]
"#;

async fn start() -> (Idp, Gateway) {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let gw = auth_gateway_with(&idp, port, "store = \"memory\"", API_ROUTES).await;
    (idp, gw)
}

async fn call(gw: &Gateway, path: &str, authz: &[&str]) -> reqwest::Response {
    let mut b = client()
        .get(gw.url(path))
        .header("accept", "application/json");
    for a in authz {
        b = b.header("authorization", *a);
    }
    b.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_from_the_provider() {
    let (idp, gw) = start().await;
    for resource in ["urn:authgate:api", "urn:authgate:api-es256"] {
        let token = idp.client_token(resource).await;
        let r = call(&gw, "/api/things", &[&format!("Bearer {token}")]).await;
        assert_eq!(r.status(), 200, "{resource}");
        let seen: Seen = r.json().await.unwrap();
        // The client id is the subject of a client-credentials token.
        assert_eq!(
            seen.header("x-forwarded-user"),
            Some("authgate"),
            "{resource}"
        );
        assert!(
            seen.header("authorization").is_none(),
            "the token went upstream"
        );
        // Cached: the same token again.
        assert_eq!(
            call(&gw, "/api/things", &[&format!("bearer {token}")])
                .await
                .status(),
            200
        );
    }
    let token = idp.client_token("urn:authgate:api").await;
    // Issued for another audience: refused on this route.
    let r = call(&gw, "/other-api/x", &[&format!("Bearer {token}")]).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    // A client token has no groups: the policy denies it.
    assert_eq!(
        call(&gw, "/admin-api/x", &[&format!("Bearer {token}")])
            .await
            .status(),
        403
    );
    // Tampered, truncated, or not a JWT at all.
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    for bad in [tampered.as_str(), "abc.def.ghi", "opaque-token", ""] {
        let r = call(&gw, "/api/x", &[&format!("Bearer {bad}")]).await;
        assert_eq!(r.status(), 401, "{bad}");
    }
    // Two Authorization headers, or a token in the URL: refused outright.
    let two = call(
        &gw,
        "/api/x",
        &[&format!("Bearer {token}"), &format!("Bearer {token}")],
    )
    .await;
    assert_eq!(two.status(), 400);
    let r = client()
        .get(gw.url(&format!("/api/x?access_token={token}")))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Basic credentials are not a bearer token.
    assert_eq!(call(&gw, "/api/x", &["Basic YTpi"]).await.status(), 401);
    // No credentials at all: 401 (an API is not redirected to a login page).
    assert_eq!(call(&gw, "/api/x", &[]).await.status(), 401);
    assert!(!gw.log().contains(&token), "a token reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_tokens_are_not_access_tokens() {
    let (_idp, gw) = start().await;
    // Log in to get a real ID token from the provider, then present it as a bearer token.
    let (cookie, _) = common::http_login(&gw, "/").await;
    let page = client()
        .post(gw.url("/.authgate/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let id_token = page
        .split("name=\"id_token_hint\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let r = call(&gw, "/api/x", &[&format!("Bearer {id_token}")]).await;
    assert_eq!(r.status(), 401);
}

/// A client-credentials token without a resource indicator: opaque, so only introspection
/// can tell what it is.
async fn opaque_token(idp: &Idp) -> String {
    let r = client()
        .post(format!("{}/token", idp.issuer))
        .basic_auth("authgate", Some("authgate-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let t = v["access_token"].as_str().unwrap().to_string();
    assert_ne!(t.split('.').count(), 3, "expected an opaque token");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_are_introspected() {
    let port = ANY_PORT;
    let mut idp = Idp::start(true, &[port]).await;
    let e = common::echo().await;
    let routes = "\n[[routes]]\nid = \"api\"\npath = \"/api\"\nupstream = \"app\"\nbearer = true\naudiences = [\"urn:authgate:api\"]\n";
    let config = common::with_provider_keys(
        &common::auth_config(&idp, e, "store = \"memory\""),
        // The provider's opaque tokens introspect without `aud`.
        "introspect_opaque_tokens = true\nintrospection_cache_ttl = \"4s\"\nintrospection_requires_audience = false\n",
    );
    let gw = Gateway::start_with(
        &format!("{config}{routes}"),
        common::Opts {
            port: Some(port),
            ..common::Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;

    let token = opaque_token(&idp).await;
    let r = call(&gw, "/api/x", &[&format!("Bearer {token}")]).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let seen: Seen = r.json().await.unwrap();
    assert_eq!(seen.header("x-forwarded-user"), Some("authgate"));
    let before = idp.stats().await["introspections"].as_u64().unwrap();
    assert_eq!(
        call(&gw, "/api/x", &[&format!("Bearer {token}")])
            .await
            .status(),
        200
    );
    assert_eq!(
        idp.stats().await["introspections"].as_u64().unwrap(),
        before,
        "the answer was not cached"
    );

    // Revoked at the provider: refused once the cached answer (4 s: a cache hit above must
    // not depend on a loaded machine answering within 1 s) runs out.
    let r = client()
        .post(format!("{}/token/revocation", idp.issuer))
        .basic_auth("authgate", Some("authgate-secret"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // The cache lifetime is slept out whole; its end is then waited for with a deadline
    // rather than a 200 ms margin on a loaded machine's timers.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let revoked = || async {
        call(&gw, "/api/x", &[&format!("Bearer {token}")])
            .await
            .status()
            == 401
    };
    common::eventually(std::time::Duration::from_secs(2), revoked).await;
    assert_eq!(
        call(&gw, "/api/x", &[&format!("Bearer {token}")])
            .await
            .status(),
        401
    );
    assert_eq!(
        call(&gw, "/api/x", &["Bearer never-issued"]).await.status(),
        401
    );

    // Introspection endpoint down: 503, never "allow".
    let fresh = opaque_token(&idp).await;
    idp.stop();
    assert_eq!(
        call(&gw, "/api/x", &[&format!("Bearer {fresh}")])
            .await
            .status(),
        503
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_providers_at_once() {
    let port = ANY_PORT;
    let (a, b) = (
        Idp::start(true, &[port]).await,
        Idp::start(true, &[port]).await,
    );
    let e = common::echo().await;
    let config = format!(
        r#"{}
{}
[session]
store = "memory"

[upstreams.app]
servers = ["http://{e}"]

[[routes]]
id = "only-b"
path = "/only-b"
upstream = "app"
providers = ["b"]
bearer = true
audiences = ["urn:authgate:api"]

[[routes]]
id = "both"
path = "/both"
upstream = "app"
providers = ["a", "b"]
bearer = true
audiences = ["urn:authgate:api"]
"#,
        a.provider_toml_as("a"),
        b.provider_toml_as("b"),
    );
    let gw = Gateway::start_with(
        &config,
        common::Opts {
            port: Some(port),
            ..common::Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    let nav = |path: &str| {
        client()
            .get(gw.url(path))
            .header("accept", "text/html")
            .send()
    };

    // A route with one provider sends the browser straight to it...
    let r = nav("/only-b/x").await.unwrap();
    let login = r.headers()["location"].to_str().unwrap().to_string();
    assert!(login.ends_with("&provider=b"), "{login}");
    let r = nav(&login).await.unwrap();
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with(&format!("{}/auth?", b.issuer)));
    // ...a route with several shows a sign-in page listing them.
    let r = nav("/both/x").await.unwrap();
    let login = r.headers()["location"].to_str().unwrap().to_string();
    assert!(login.ends_with("&providers=a%2Cb"), "{login}");
    let page = nav(&login).await.unwrap().text().await.unwrap();
    assert!(
        page.contains("Sign in with a") && page.contains("Sign in with b"),
        "{page}"
    );

    // Bearer tokens are dispatched by issuer: both providers' tokens work on /both.
    for idp in [&a, &b] {
        let token = idp.client_token("urn:authgate:api").await;
        assert_eq!(
            call(&gw, "/both/x", &[&format!("Bearer {token}")])
                .await
                .status(),
            200
        );
    }
    // A token from a provider the route does not accept is refused; b's token is fine.
    let token = a.client_token("urn:authgate:api").await;
    assert_eq!(
        call(&gw, "/only-b/x", &[&format!("Bearer {token}")])
            .await
            .status(),
        401
    );
    let token = b.client_token("urn:authgate:api").await;
    assert_eq!(
        call(&gw, "/only-b/x", &[&format!("Bearer {token}")])
            .await
            .status(),
        200
    );
}

/// Base64url without padding.
fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_are_refused_and_cannot_flood_the_jwks() {
    let (idp, gw) = start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": idp.issuer, "sub": "mallory", "aud": "urn:authgate:api",
        "exp": now + 300, "iat": now, "client_id": "authgate",
    });
    let payload = b64(claims.to_string().as_bytes());
    let jwks = client()
        .get(format!("{}/jwks", idp.issuer))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // alg none.
    let none = format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"at+jwt"}"#));
    // HS256 "signed" with the provider's public key material as the HMAC secret.
    let hs = {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("test-rsa-1".into());
        h.typ = Some("at+jwt".into());
        encode(&h, &claims, &EncodingKey::from_secret(jwks.as_bytes())).unwrap()
    };
    // An attacker's own key, offered through jwk / jku / x5u headers: never consulted.
    let attacker = rcgen::KeyPair::generate().unwrap();
    let attacker_key =
        jsonwebtoken::EncodingKey::from_ec_pem(attacker.serialize_pem().as_bytes()).unwrap();
    let attacker_jwk =
        jsonwebtoken::jwk::Jwk::from_encoding_key(&attacker_key, jsonwebtoken::Algorithm::ES256)
            .unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.typ = Some("at+jwt".into());
    h.kid = Some("attacker".into());
    h.jwk = Some(attacker_jwk);
    h.jku = Some("http://127.0.0.1:1/jwks".into());
    h.x5u = Some("http://127.0.0.1:1/cert".into());
    let embedded = jsonwebtoken::encode(&h, &claims, &attacker_key).unwrap();
    h.kid = Some("test-ec-1".into());
    let wrong_key_right_kid = jsonwebtoken::encode(&h, &claims, &attacker_key).unwrap();
    for (name, t) in [
        ("none", &none),
        ("hs256", &hs),
        ("embedded jwk", &embedded),
        ("right kid", &wrong_key_right_kid),
    ] {
        let r = call(&gw, "/api/x", &[&format!("Bearer {t}")]).await;
        assert_eq!(r.status(), 401, "{name}");
    }

    // A flood of unknown kids costs at most one JWKS fetch per cooldown (30 s). The
    // background refresh (every 2 s here: discovery, then the JWKS) is not the flood's doing.
    let fetches = || async {
        let s = idp.stats().await;
        let n = |route: &str| s["requests"][route].as_u64().unwrap_or(0);
        (n("jwks"), n("discovery"))
    };
    let (before, discovery_before) = fetches().await;
    assert!(
        before >= 1,
        "the gateway should have fetched the JWKS at start"
    );
    for i in 0..50 {
        h.kid = Some(format!("bogus-{i}"));
        h.jwk = None;
        let t = jsonwebtoken::encode(&h, &claims, &attacker_key).unwrap();
        assert_eq!(
            call(&gw, "/api/x", &[&format!("Bearer {t}")])
                .await
                .status(),
            401
        );
    }
    let (after, discovery_after) = fetches().await;
    let refreshes = discovery_after - discovery_before;
    assert!(
        after - before <= 1 + refreshes,
        "{} JWKS fetches for 50 unknown kids ({refreshes} background refreshes)",
        after - before
    );
}

/// A value no provider issued, different on every call.
fn random_value(prefix: &str) -> String {
    format!("{prefix}{}", b64(&rand::random::<[u8; 24]>()))
}

async fn introspections(idp: &Idp) -> u64 {
    idp.stats().await["introspections"].as_u64().unwrap_or(0)
}

/// An opaque-token gateway with the provider's default introspection settings.
async fn introspecting_gateway(idp: &Idp, port: u16) -> Gateway {
    let e = common::echo().await;
    let routes = "\n[[routes]]\nid = \"api\"\npath = \"/api\"\nupstream = \"app\"\nbearer = true\naudiences = [\"urn:authgate:api\"]\n";
    let config = common::with_provider_keys(
        &common::auth_config(idp, e, "store = \"memory\""),
        "introspect_opaque_tokens = true\n",
    );
    let gw = Gateway::start_with(
        &format!("{config}{routes}"),
        common::Opts {
            port: Some(port),
            ..common::Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_opaque_values_cost_one_introspection_each() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let gw = introspecting_gateway(&idp, port).await;

    // One random value, 50 times (in a row, then 25 at once): one call (its inactive answer
    // is remembered for introspection_inactive_ttl, 10 s by default; two if the run straddles it).
    let before = introspections(&idp).await;
    let bogus = random_value("");
    for _ in 0..25 {
        assert_eq!(
            call(&gw, "/api/x", &[&format!("Bearer {bogus}")])
                .await
                .status(),
            401
        );
    }
    let authz = format!("Bearer {bogus}");
    let authz = [authz.as_str()];
    let at_once: Vec<_> = (0..25).map(|_| call(&gw, "/api/x", &authz)).collect();
    for r in futures_util::future::join_all(at_once).await {
        assert_eq!(r.status(), 401);
    }
    let calls = introspections(&idp).await - before;
    assert!(
        (1..=2).contains(&calls),
        "{calls} introspections for one value"
    );

    // 50 distinct values: each refused, each asked about once (no retry, no other provider).
    let before = introspections(&idp).await;
    let values: Vec<String> = (0..50).map(|_| random_value("")).collect();
    for v in &values {
        assert_eq!(
            call(&gw, "/api/x", &[&format!("Bearer {v}")])
                .await
                .status(),
            401
        );
    }
    for v in &values[..10] {
        assert_eq!(
            call(&gw, "/api/x", &[&format!("Bearer {v}")])
                .await
                .status(),
            401
        );
    }
    let calls = introspections(&idp).await - before;
    assert!(calls <= 50, "{calls} introspections for 50 values");

    // A real, active token whose answer has no `aud`: refused on a route with audiences
    // (introspection_requires_audience defaults to true); opaque_tokens_are_introspected
    // shows the same token accepted with introspection_requires_audience = false.
    let token = opaque_token(&idp).await;
    let r = call(&gw, "/api/x", &[&format!("Bearer {token}")]).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    assert!(gw.log().contains("wrong audience"), "{}", gw.log());
    assert!(!gw.log().contains(&token), "a token reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_token_goes_only_to_its_prefix_provider() {
    let port = ANY_PORT;
    let (a, b) = (
        Idp::start(true, &[port]).await,
        Idp::start(true, &[port]).await,
    );
    let e = common::echo().await;
    let config = format!(
        r#"{}introspect_opaque_tokens = true
opaque_token_prefix = "a_"
{}introspect_opaque_tokens = true
opaque_token_prefix = "b_"
[session]
store = "memory"

[upstreams.app]
servers = ["http://{e}"]

[[routes]]
id = "both"
path = "/both"
upstream = "app"
bearer = true
audiences = ["urn:authgate:api"]

[[routes]]
id = "only-b"
path = "/only-b"
upstream = "app"
providers = ["b"]
bearer = true
audiences = ["urn:authgate:api"]
"#,
        a.provider_toml_as("a"),
        b.provider_toml_as("b"),
    );
    let gw = Gateway::start_with(
        &config,
        common::Opts {
            port: Some(port),
            ..common::Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    let counts = || async { (introspections(&a).await, introspections(&b).await) };
    let (a0, b0) = counts().await;

    let for_a = random_value("a_");
    for _ in 0..3 {
        assert_eq!(
            call(&gw, "/both/x", &[&format!("Bearer {for_a}")])
                .await
                .status(),
            401
        );
    }
    assert_eq!(counts().await, (a0 + 1, b0), "a's value went elsewhere");
    let for_b = random_value("b_");
    assert_eq!(
        call(&gw, "/both/x", &[&format!("Bearer {for_b}")])
            .await
            .status(),
        401
    );
    assert_eq!(counts().await, (a0 + 1, b0 + 1), "b's value went elsewhere");
    // No provider's prefix, a real token of a (whose tokens carry no prefix), a's value on
    // a route that accepts b only: refused without asking anyone.
    let real = opaque_token(&a).await;
    for (path, value) in [
        ("/both/x", random_value("c_")),
        ("/both/x", real.clone()),
        ("/only-b/x", random_value("a_")),
    ] {
        assert_eq!(
            call(&gw, path, &[&format!("Bearer {value}")])
                .await
                .status(),
            401,
            "{path}"
        );
    }
    assert_eq!(counts().await, (a0 + 1, b0 + 1), "a value was sent out");
    // A b value on b's own route: asked, at b.
    assert_eq!(
        call(
            &gw,
            "/only-b/x",
            &[&format!("Bearer {}", random_value("b_"))]
        )
        .await
        .status(),
        401
    );
    assert_eq!(counts().await, (a0 + 1, b0 + 2));
}
