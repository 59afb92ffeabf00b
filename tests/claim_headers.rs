//! Claims and tokens as headers (issue 16 points 1 and 2), through the real binary, the real
//! provider (`tests/idp`, a user with nested, array, number and boolean claims) and the echo
//! upstream: a route with a claims map, prefix mode, `remote_user`, the ID token, Basic auth
//! and `X-Auth-Request-*` gives the app exactly those headers; a client's copies of any of
//! them, in any spelling, never reach it; a `remote_user` that cannot be derived is 403; and
//! forward-auth answers the same headers for the same route (one decision, both modes).

mod common;

use base64::Engine;
use common::{auth_config, client, echo, http_login, Gateway, Idp, Opts, Seen, ANY_PORT};

const ROUTE: &str = r#"
[forward_auth]
proxy = "nginx"

[headers]
x_auth_request = true

[[routes]]
id = "legacy"
path = "/legacy"
upstream = "app"
public_methods = ["OPTIONS"]
[routes.headers]
claims = { "X-Department" = "department", "X-Roles" = "realm_access.roles", "X-Employee" = "employee_number", "X-Active" = "active" }
claim_prefix = "OIDC_CLAIM_"
claim_prefix_allow = ["email", "name", "groups", "department", "nicknames", "realm_access"]
id_token = "OIDC_id_token"
remote_user = { claim = "email", pattern = "^(.+)@corp\\.example$" }
basic_auth = { password = "legacy-pw" }

[[routes]]
id = "news"
path = "/news"
upstream = "app"
auth = "optional"
[routes.headers]
claims = { "X-Department" = "department" }
claim_prefix = "OIDC_CLAIM_"
claim_prefix_allow = ["email"]
remote_user = { claim = "email", pattern = "^(.+)@corp\\.example$" }

[[routes]]
id = "api"
path = "/api"
upstream = "app"
bearer = true
audiences = ["urn:authgate:api"]
[routes.headers]
claims = { "X-Sub" = "sub" }
remote_user = {}
basic_auth = {}
"#;

/// Headers a client forges, in several spellings of every name the route sets.
const FORGED: &[(&str, &str)] = &[
    ("OIDC_CLAIM_email", "mallory@corp.example"),
    ("oidc-claim-email", "mallory@corp.example"),
    ("Oidc.Claim.Email", "mallory@corp.example"),
    ("OIDC_CLAIM_admin", "true"),
    ("REMOTE_USER", "mallory"),
    ("Remote.User", "mallory"),
    ("x_auth_request_user", "mallory"),
    ("X-Auth-Request-Email", "mallory@corp.example"),
    ("X_Department", "forged"),
    ("x.roles", "forged"),
    ("OIDC-Id-Token", "forged"),
    ("oidc_id_token", "forged"),
    ("Authorization", "Basic bWFsbG9yeTpmb3JnZWQ="),
];

fn forged(rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    FORGED.iter().fold(rb, |rb, (k, v)| rb.header(*k, *v))
}

/// What the app must see for alice, name → value (lower case names).
fn expected(id_token: &str) -> Vec<(String, String)> {
    let basic = base64::engine::general_purpose::STANDARD.encode("alice:legacy-pw");
    [
        ("x-department", "eng"),
        ("x-roles", "r1,r2"),
        ("x-employee", "4711"),
        ("x-active", "true"),
        ("oidc_claim_email", "alice@corp.example"),
        ("oidc_claim_name", "Alice Corp"),
        ("oidc_claim_groups", "admins,dev"),
        ("oidc_claim_department", "eng"),
        ("oidc_claim_nicknames", "al,ally"),
        ("oidc_claim_realm_access", r#"{"roles":["r1","r2"]}"#),
        ("oidc_id_token", id_token),
        ("remote-user", "alice"),
        ("authorization", &format!("Basic {basic}")),
        ("x-auth-request-user", "alice"),
        ("x-auth-request-email", "alice@corp.example"),
        ("x-auth-request-groups", "admins,dev"),
        ("x-auth-request-preferred-username", "alice"),
        ("x-forwarded-user", "alice"),
        ("x-forwarded-email", "alice@corp.example"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Every header the app saw of the names the route sets or a client forged (any spelling).
fn identity_like(seen: &Seen) -> Vec<(String, String)> {
    let canon = |s: &str| s.to_ascii_lowercase().replace(['_', '.'], "-");
    let watched: Vec<String> = FORGED
        .iter()
        .map(|(k, _)| canon(k))
        .chain(expected("").into_iter().map(|(k, _)| canon(&k)))
        .collect();
    let mut out: Vec<(String, String)> = seen
        .headers
        .iter()
        .filter(|(k, _)| {
            let c = canon(k);
            watched.contains(&c) || c.starts_with("oidc-claim-")
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    out.sort();
    out
}

fn jwt_sub(jwt: &str) -> serde_json::Value {
    let p = jwt.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap();
    claims["sub"].clone()
}

/// Ask the forward-auth endpoint about `method path` as nginx would (the test runs on the
/// trusted loopback address), with the client's cookie and forged headers.
async fn check(gw: &Gateway, method: &str, path: &str, cookie: &str) -> reqwest::Response {
    let mut rb = forged(client().get(gw.url("/.authgate/auth")))
        .header("x-original-method", method)
        .header("x-original-uri", path)
        .header("x-forwarded-host", "app.example");
    if !cookie.is_empty() {
        rb = rb.header("cookie", cookie);
    }
    rb.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_headers_reach_the_app_and_only_the_gateway_sets_them() {
    let users = serde_json::json!({"alice": {
        "email": "alice@corp.example", "email_verified": true, "name": "Alice Corp",
        "preferred_username": "alice", "groups": ["admins", "dev"],
        "department": "eng", "employee_number": 4711, "active": true,
        "realm_access": {"roles": ["r1", "r2"]}, "nicknames": ["al", "ally"]
    }});
    let idp = Idp::start_with_env(0, true, &[ANY_PORT], &[("IDP_USERS", &users.to_string())]).await;
    let app = echo().await;
    let gw = Gateway::start_with(
        &format!("{}{ROUTE}", auth_config(&idp, app, "store = \"memory\"")),
        Opts {
            server_extra: "trusted_proxies = [\"127.0.0.1\"]".into(),
            // Every line the gateway can write, so a secret at any level would show.
            env: vec![("RUST_LOG".into(), Some("trace".into()))],
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    let c = client();

    let (cookie, r) = http_login(&gw, "/legacy/x").await;
    assert!(!cookie.is_empty(), "login failed: {}", r.status());

    // Proxy mode: exactly the expected headers, one value each, nothing forged.
    let r = forged(c.get(gw.url("/legacy/x")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    let id_token = seen.header("oidc_id_token").expect("ID token").to_string();
    assert_eq!(jwt_sub(&id_token), "alice", "the session's own ID token");
    let mut want = expected(&id_token);
    want.sort();
    assert_eq!(identity_like(&seen), want);

    // An anonymous public method: the app sees none of it, not even the client's Basic
    // credentials (the route builds Authorization itself).
    let r = forged(c.request(reqwest::Method::OPTIONS, gw.url("/legacy/x")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    assert_eq!(identity_like(&seen), Vec::<(String, String)>::new());

    // Forward-auth: the same decision answers the same headers for the front proxy to copy.
    let r = check(&gw, "GET", "/legacy/x", &cookie).await;
    assert_eq!(r.status(), 200);
    for (name, value) in expected(&id_token) {
        let got = r
            .headers()
            .get_all(name.as_str())
            .iter()
            .collect::<Vec<_>>();
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert_eq!(got[0].to_str().unwrap(), value, "{name}");
    }
    // Anonymous: every exact name answered empty, so the proxy overwrites a client's copy.
    let r = check(&gw, "OPTIONS", "/legacy/x", "").await;
    assert_eq!(r.status(), 200);
    for name in [
        "x-department",
        "oidc_id_token",
        "remote-user",
        "authorization",
        "x-auth-request-user",
    ] {
        assert_eq!(r.headers()[name], "", "{name}");
    }

    // An optional route: a signed-in reader gets its claim headers, in both modes; an
    // anonymous one none of them, and never a client's copies.
    let news = [
        ("x-department", "eng"),
        ("oidc_claim_email", "alice@corp.example"),
        ("remote-user", "alice"),
        ("x-auth-request-user", "alice"),
    ];
    let r = forged(c.get(gw.url("/news/today")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    for (name, value) in news {
        assert_eq!(seen.all(name), [value], "optional route, signed in: {name}");
    }
    assert!(
        seen.all("oidc_claim_name").is_empty(),
        "not in the allow-list"
    );
    let r = check(&gw, "GET", "/news/today", &cookie).await;
    assert_eq!(r.status(), 200);
    for (name, value) in news {
        assert_eq!(
            r.headers()[name],
            value,
            "forward-auth, optional route: {name}"
        );
    }
    let r = forged(c.get(gw.url("/news/today"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    // This route writes no Authorization: the client's own passes, as anywhere else.
    let forged_seen: Vec<_> = identity_like(&seen)
        .into_iter()
        .filter(|(k, _)| k != "authorization")
        .collect();
    assert_eq!(forged_seen, Vec::<(String, String)>::new());
    let r = check(&gw, "GET", "/news/today", "").await;
    assert_eq!(r.status(), 200);
    // Exact names answered empty (the proxy overwrites a client's copy); the prefix names
    // have no fixed name to answer (see the README on forward-auth and claim_prefix).
    for (name, _) in news {
        let v = r.headers().get(name).map(|v| v.to_str().unwrap());
        if name.starts_with("oidc_claim_") {
            assert_eq!(v, None, "{name}");
        } else {
            assert_eq!(v, Some(""), "forward-auth, anonymous reader: {name}");
        }
    }

    // Secrets never reach the log, at any level: the ID token, the Basic credentials.
    let log = gw.log();
    let basic = base64::engine::general_purpose::STANDARD.encode("alice:legacy-pw");
    assert!(!log.contains(&basic), "Basic credentials in the log");
    assert!(
        !log.contains(&id_token[id_token.len() - 20..]),
        "ID token in the log"
    );
    assert!(!log.contains("legacy-pw"));

    // A bearer caller: the token's claims, its own Authorization replaced by Basic.
    let token = idp.client_token("urn:authgate:api").await;
    let r = forged(c.get(gw.url("/api/x")))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    // Two Authorization headers (the forged one and the token) are refused outright.
    assert_eq!(r.status(), 400);
    let r = c
        .get(gw.url("/api/x"))
        .header("authorization", format!("Bearer {token}"))
        .header("OIDC_CLAIM_email", "mallory@corp.example")
        .header("X_Sub", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode("authgate:");
    assert_eq!(seen.all("authorization"), [format!("Basic {basic}")]);
    assert_eq!(seen.all("x-sub"), ["authgate"]);
    assert!(seen.all("x_sub").is_empty(), "a client's X_Sub");
    assert_eq!(seen.all("remote-user"), ["authgate"]);
    assert_eq!(
        seen.all("x-auth-request-user"),
        ["authgate"],
        "[headers] x_auth_request"
    );
    assert!(
        seen.all("oidc_claim_email").is_empty(),
        "the prefix is stripped on every route"
    );

    // remote_user cannot be derived (the email is outside corp.example): 403 in both modes.
    idp.test_post(&format!(
        "/__test/users?account=alice&claims={}",
        url::form_urlencoded::byte_serialize(br#"{"email":"alice@other.example"}"#)
            .collect::<String>()
    ))
    .await;
    let (other, _) = http_login(&gw, "/legacy/x").await;
    assert!(!other.is_empty());
    let r = c
        .get(gw.url("/legacy/x"))
        .header("cookie", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(check(&gw, "GET", "/legacy/x", &other).await.status(), 403);
    // On an optional route too: a signed-in caller the app cannot be told about is refused,
    // never passed on as anonymous.
    let r = c
        .get(gw.url("/news/today"))
        .header("cookie", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(check(&gw, "GET", "/news/today", &other).await.status(), 403);
    // Routes without a remote_user still admit her.
    let r = c
        .get(gw.url("/x"))
        .header("cookie", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(gw.log().contains("remote_user cannot be derived"));
}

/// Claims a header would change (a control character, whitespace at an end, a comma inside
/// a group) are never cleaned into another name: a user that cannot be sent is no sign-in,
/// the optional parts and such groups are left out, and a `remote_user` read from one is 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_a_header_would_change_are_never_cleaned_into_another_name() {
    let idp = Idp::start(true, &[ANY_PORT]).await;
    let e = echo().await;
    let legacy = "\n[[routes]]\nid = \"legacy\"\npath = \"/legacy\"\nupstream = \"app\"\n\
                  [routes.headers]\nremote_user = { claim = \"preferred_username\" }\n\
                  basic_auth = { password = \"pw\" }\nclaim_prefix = \"OIDC_CLAIM_\"\n";
    let base = auth_config(&idp, e, "store = \"memory\"");
    let gw = Gateway::start_with(&format!("{base}{legacy}"), Opts::default()).await;
    gw.wait_ready().await;
    let by_username = base.replacen(
        "refresh_interval = \"2s\"\n",
        "refresh_interval = \"2s\"\nuser_claim = \"preferred_username\"\n",
        1,
    );
    let gw_u = Gateway::start_with(&by_username, Opts::default()).await;
    gw_u.wait_ready().await;
    let c = client();

    for (username, name) in [
        ("alice\u{7}", "Alice\u{a0}"),
        ("alice\u{a0}", " Alice"),
        ("\u{2003}alice", "Alice\t"),
    ] {
        let claims = serde_json::json!({
            "preferred_username": username,
            "name": name,
            "groups": [" admins", "admins\t", "ad,mins", "dev", "ops team"],
        });
        idp.test_post(&format!(
            "/__test/users?account=alice&claims={}",
            url::form_urlencoded::byte_serialize(claims.to_string().as_bytes()).collect::<String>()
        ))
        .await;
        let (cookie, _) = http_login(&gw, "/x").await;
        assert!(!cookie.is_empty(), "{username:?}: the user (sub) is fine");
        let r = c
            .get(gw.url("/x"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let seen: Seen = r.json().await.unwrap();
        assert_eq!(seen.all("x-forwarded-user"), ["alice"]);
        assert_eq!(
            seen.all("x-forwarded-groups"),
            ["dev,ops team"],
            "{username:?}"
        );
        assert!(
            seen.all("x-forwarded-preferred-username").is_empty(),
            "{username:?}: {:?}",
            seen.all("x-forwarded-preferred-username")
        );
        for (k, v) in &seen.headers {
            assert!(
                !v.contains("admins") && !v.contains("ad,mins"),
                "{k}: {v:?}"
            );
        }
        // A remote_user (and its Basic credentials) from that claim: refused, never "alice".
        let r = c
            .get(gw.url("/legacy/x"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{username:?}");
        // With that claim as the user, there is no sign-in at all.
        let (cookie, callback) = http_login(&gw_u, "/x").await;
        assert!(cookie.is_empty(), "{username:?}: signed in");
        assert_eq!(callback.status(), 401, "{username:?}");
    }
    // Written as it can be sent, the same claims go through as written.
    idp.test_post(&format!(
        "/__test/users?account=alice&claims={}",
        url::form_urlencoded::byte_serialize(
            br#"{"preferred_username":"alice","groups":["admins","dev"]}"#
        )
        .collect::<String>()
    ))
    .await;
    let (cookie, _) = http_login(&gw_u, "/x").await;
    let r = c
        .get(gw_u.url("/x"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let seen: Seen = r.json().await.unwrap();
    assert_eq!(seen.all("x-forwarded-user"), ["alice"]);
    assert_eq!(seen.all("x-forwarded-groups"), ["admins,dev"]);
    assert!(gw_u.log().contains("whitespace at an end"));
}
