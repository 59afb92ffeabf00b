//! Forward-auth mode behind a real Caddy (`forward_auth`, Debian's 2.6.2) running
//! docs/forward-auth/Caddyfile as it is, only its addresses replaced: the app behind Caddy
//! never sees a client's identity headers or the gateway's cookies, and nothing the gateway
//! refuses reaches it (the app's every received byte is recorded).

mod common;

use std::net::SocketAddr;

use common::caddy::{tapped_echo, Caddy, Tap};
use common::forwarding::{assert_proxy_account, forged_lines, EVIL_IP};
use common::{client, free_port, http_login_via, raw_get, Idp, RawResponse, Seen};

/// docs/forward-auth/Caddyfile with its addresses (site `:8000`, gateway `127.0.0.1:8080`,
/// app `127.0.0.1:3000`) replaced by the test's, otherwise verbatim.
fn caddyfile(port: u16, gateway: SocketAddr, app: SocketAddr) -> String {
    common::snippet(
        "docs/forward-auth/Caddyfile",
        &[
            ("http://:8000", format!("http://:{port}")),
            ("127.0.0.1:8080", gateway.to_string()),
            ("127.0.0.1:3000", app.to_string()),
        ],
    )
}

/// What a client forges: identity headers in the gateway's names, oauth2-proxy's and other
/// common ones, and `_` / `.` spellings an app may read as the same.
const FORGED: [(&str, &str); 15] = [
    ("X-Forwarded-User", "mallory"),
    ("X-Forwarded-Email", "mallory@example.com"),
    ("X-Forwarded-Groups", "admins,forged"),
    ("X-Forwarded-Preferred-Username", "mallory"),
    ("X-Forwarded-Access-Token", "forged-token"),
    ("X-Authgate-Assertion", "forged-assertion"),
    ("X-Authgate-Cookie", "authgate_session=forged"),
    ("Remote-User", "mallory"),
    ("X-Remote-User", "mallory"),
    ("X-User", "mallory"),
    ("X-Email", "mallory@example.com"),
    ("X-Auth-Request-User", "mallory"),
    ("X-Auth-Request-Email", "mallory@example.com"),
    ("X_Forwarded_User", "mallory"),
    ("X.Forwarded.Email", "mallory@example.com"),
];

/// No forged value, no `_` / `.` header name, none of the names the gateway never sets here,
/// and no cookie of the gateway's reached the app.
fn assert_clean(seen: &Seen) {
    for (k, v) in &seen.headers {
        assert!(!k.contains(['_', '.']), "the app saw {k}: {v}");
        assert!(
            !v.contains("mallory") && !v.contains("forged"),
            "the app saw {k}: {v}"
        );
        if k.eq_ignore_ascii_case("cookie") {
            assert!(!v.contains("authgate"), "the app saw cookie: {v}");
        }
    }
    for name in [
        "x-authgate-cookie",
        "remote-user",
        "x-remote-user",
        "x-user",
        "x-email",
        "x-auth-request-user",
        "x-auth-request-email",
    ] {
        assert_eq!(seen.header(name), None, "{name}: {:?}", seen.headers);
    }
}

fn forge(mut rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    for (k, v) in FORGED {
        rb = rb.header(k, v);
    }
    rb
}

/// A raw request through Caddy (paths and header names go out exactly as written), off the
/// runtime the echo app runs on.
async fn raw(caddy: SocketAddr, path: &str, headers: &[&str]) -> RawResponse {
    let path = path.to_string();
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let h: Vec<&str> = headers.iter().map(String::as_str).collect();
        raw_get(caddy, &path, &h)
    })
    .await
    .unwrap()
}

/// `marker` (a unique query) was refused and never reached the app.
fn assert_refused(r: &RawResponse, tap: &Tap, marker: &str, caddy: &Caddy) {
    assert_ne!(
        r.status,
        200,
        "{marker} passed:\n{}\n{}",
        r.head,
        caddy.log()
    );
    assert!(!tap.saw(marker), "the app received {marker} ({})", r.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth() {
    // Caddy's port is chosen before its start (its config names it); the gateway binds
    // port 0 and Caddy's config is written after it started.
    let caddy_port = free_port();
    // The browser talks to Caddy, so the provider sends it back to Caddy's callback.
    let idp = Idp::start(true, &[caddy_port]).await;
    let (app, tap) = tapped_echo().await;
    let gw = common::forward_auth_gateway(&idp, app, common::ANY_PORT, "caddy").await;
    let caddy = Caddy::start(caddy_port, &caddyfile(caddy_port, gw.addr, app)).await;
    let c = client();

    // 1. Public path, forged identity and a forged session cookie: the app gets neither.
    let r = forge(c.get(caddy.url("/public/x")))
        .header("cookie", "authgate_session=forged; theme=dark")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", caddy.log());
    let seen: Seen = r.json().await.unwrap();
    assert_clean(&seen);
    for name in common::ANSWERED_IDENTITY {
        assert_eq!(seen.header(name), None, "{name}: {:?}", seen.headers);
    }
    assert_eq!(seen.all("cookie"), ["theme=dark"]);
    // No foreign cookie left: no Cookie at all (not an empty one). The body passes.
    let r = forge(c.post(caddy.url("/public/form")))
        .header("cookie", "authgate_session=forged")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    assert_clean(&seen);
    assert_eq!(seen.header("cookie"), None, "{:?}", seen.headers);
    assert_eq!((seen.method.as_str(), seen.body_bytes), ("POST", 5));

    // 2. Protected path without a session: a browser is sent to sign in, an API client gets
    // 401 with the sign-in address; neither reaches the app.
    let r = c
        .get(caddy.url("/app?anon=1"))
        .header("accept", "text/html")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", caddy.log());
    let location = r.headers()["location"].to_str().unwrap();
    assert!(
        location.ends_with("/.authgate/login?rd=%2Fapp%3Fanon%3D1"),
        "{location}"
    );
    let r = c
        .get(caddy.url("/app?anon=2"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let login = r.headers()["x-authgate-login"].to_str().unwrap();
    assert!(login.starts_with("/.authgate/login?rd="), "{login}");
    assert!(!tap.saw("anon="), "the app received an anonymous request");

    // 3. Sign in through Caddy; then the app gets alice from the gateway, never mallory, and
    // the client's cookies without the session.
    let cookie = http_login_via(&caddy.base(), "/app").await;
    let r = forge(c.get(caddy.url("/app/page")))
        .header("cookie", format!("{cookie}; theme=dark"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", caddy.log());
    let seen: Seen = r.json().await.unwrap();
    assert_clean(&seen);
    assert_eq!(seen.all("x-forwarded-user"), ["alice"]);
    assert_eq!(seen.all("x-forwarded-email"), ["alice@example.com"]);
    assert_eq!(seen.all("cookie"), ["theme=dark"]);
    assert_eq!(seen.target, "/app/page");
    assert!(
        tap.saw("GET /app/page "),
        "the tap records what the app receives"
    );

    // 4. Denied by policy (only bob): 403 from the gateway, the app never sees it.
    let session = format!("Cookie: {cookie}");
    let r = raw(caddy.addr(), "/admin?denied=1", &[&session]).await;
    assert_eq!(r.status, 403, "{}", r.head);
    assert_refused(&r, &tap, "denied=1", &caddy);

    // 5. The client's own description of the request changes nothing: another proxy's
    // header is not read, Caddy overwrites X-Forwarded-Uri and drops the `_` spelling.
    for (i, spoof) in [
        "X-Original-URI: /public/x",
        "X_Forwarded_Uri: /public/x",
        "X-Forwarded-Uri: /public/x",
        "X-Forwarded-Method: OPTIONS",
    ]
    .into_iter()
    .enumerate()
    {
        let marker = format!("spoof={i}");
        let r = raw(
            caddy.addr(),
            &format!("/admin?{marker}"),
            &[&session, spoof],
        )
        .await;
        assert_eq!(r.status, 403, "{spoof}: {}", r.head);
        assert_refused(&r, &tap, &marker, &caddy);
    }

    // 6. The decision is made on the normalised path: these are /admin.
    for (i, path) in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/..%2fadmin",
        "//admin",
        "/.authgate/../admin",
        "/.authgate/%2e%2e/admin",
    ]
    .into_iter()
    .enumerate()
    {
        let marker = format!("dots={i}");
        let target = format!("{path}?{marker}");
        let r = raw(caddy.addr(), &target, &[&session]).await;
        assert_refused(&r, &tap, &marker, &caddy);
        let marker = format!("anon-dots={i}");
        let r = raw(caddy.addr(), &format!("{path}?{marker}"), &[]).await;
        assert_refused(&r, &tap, &marker, &caddy);
    }

    // The check endpoint is Caddy's alone: a client asking it through Caddy gets nothing.
    for path in [
        "/.authgate/auth",
        "/.authgate/auth?redirect=1",
        "/.authgate/%61uth",
    ] {
        let r = raw(
            caddy.addr(),
            path,
            &[&session, "X-Forwarded-Uri: /app", "X-Forwarded-Method: GET"],
        )
        .await;
        assert_ne!(r.status, 200, "{path}");
        assert!(r.header("x-forwarded-user").is_none(), "{path}");
    }
}

/// The app behind Caddy gets Caddy's account of the request, as it gets the gateway's in
/// proxy mode: a client that sends every forwarding header (each name of
/// `FORWARDING_HEADERS`, in other cases, with `_` and `.`, some twice) on a public route and,
/// signed in, on a protected one is allowed on the real host and path, and the app sees one
/// X-Forwarded-For (the client's address), -Proto and -Host (the host the check was made on)
/// and no other forwarding header; the check is told the same client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_gives_the_app_caddy_account_only() {
    let caddy_port = free_port();
    let idp = Idp::start(true, &[caddy_port]).await;
    let (app, _tap) = tapped_echo().await;
    let gw = common::forwarding::gateway(&idp, app, "caddy").await;
    let caddy = Caddy::start(caddy_port, &caddyfile(caddy_port, gw.addr, app)).await;
    let host = caddy.addr().to_string();
    let get = |path: &'static str, lines: Vec<String>| {
        let addr = caddy.addr();
        async move {
            tokio::task::spawn_blocking(move || {
                let h: Vec<&str> = lines.iter().map(String::as_str).collect();
                raw_get(addr, path, &h)
            })
            .await
            .unwrap()
        }
    };

    let r = get("/public/x", forged_lines()).await;
    assert_eq!(r.status, 200, "{}\n{}", r.head, caddy.log());
    assert_proxy_account(&r.seen(), "127.0.0.1", "http", &host);

    let cookie = http_login_via(&caddy.base(), "/app").await;
    let mut lines = forged_lines();
    lines.push(format!("Cookie: {cookie}"));
    let r = get("/app/x", lines).await;
    assert_eq!(r.status, 200, "{}\n{}", r.head, caddy.log());
    let seen = r.seen();
    assert_eq!(seen.all("x-forwarded-user"), ["alice"]);
    assert_proxy_account(&seen, "127.0.0.1", "http", &host);

    // The check is told the same client as the app: 127.0.0.1 (trusted here, as a client
    // inside trusted_proxies is), never the address it claims.
    let r = get("/lan/x", vec![format!("X-Forwarded-For: {EVIL_IP}")]).await;
    assert_eq!(r.status, 403, "{}", r.head);
    let r = get("/lan/x", forged_lines()).await;
    assert_eq!(r.status, 403, "{}", r.head);
}
