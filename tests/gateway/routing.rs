//! Routing, default deny and path normalisation, with raw requests so no client library
//! tidies the path first.

use crate::common::{echo, raw_get, Gateway};

/// `/public` is public; `/admin` and everything else protected.
fn layout(echo: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"{extra}
[upstreams.app]
servers = ["http://{echo}"]

[[routes]]
id = "public"
path = "/public"
upstream = "app"
public = true

[[routes]]
id = "admin"
path = "/admin"
upstream = "app"

[[routes]]
id = "rest"
path = "/"
upstream = "app"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_never_a_fallback_upstream() {
    let e = echo().await;
    let gw = Gateway::start(&format!(
        "[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\npath = \"/only\"\nupstream = \"app\"\npublic = true\n\n[[routes]]\nhost = \"app.example.com\"\npath = \"/\"\nupstream = \"app\"\npublic = true\n"
    ))
    .await;
    assert_eq!(raw_get(gw.addr, "/", &[]).status, 404);
    assert_eq!(raw_get(gw.addr, "/onlyx", &[]).status, 404);
    assert_eq!(raw_get(gw.addr, "/only/x", &[]).status, 200);
    // A host with its own routes does not fall back to host-less routes.
    let r = crate::common::raw(
        gw.addr,
        "GET /only HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.seen().target, "/only");
    // The gateway's reserved prefix is never proxied.
    assert_eq!(raw_get(gw.addr, "/.authgate/anything", &[]).status, 404);
    let body = String::from_utf8_lossy(&raw_get(gw.addr, "/", &[]).body).to_string();
    assert!(body.contains("no_route"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_exact_and_wildcard() {
    let (a, b, c) = (echo().await, echo().await, echo().await);
    let gw = Gateway::start(&format!(
        r#"
[upstreams.a]
servers = ["http://{a}"]
[upstreams.b]
servers = ["http://{b}"]
[upstreams.c]
servers = ["http://{c}"]

[[routes]]
host = "app.example.com"
upstream = "a"
public = true

[[routes]]
host = "*.example.com"
upstream = "b"
public = true

[[routes]]
upstream = "c"
public = true
"#
    ))
    .await;
    let served_by = |host: &str| {
        let r = crate::common::raw(
            gw.addr,
            &format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(r.status, 200, "{host}: {}", r.head);
        r.seen().server
    };
    assert_eq!(served_by("app.example.com"), a.to_string());
    assert_eq!(served_by("APP.Example.com:8080"), a.to_string());
    assert_eq!(served_by("foo.example.com"), b.to_string());
    assert_eq!(served_by("x.y.example.com"), b.to_string());
    assert_eq!(served_by("example.com"), c.to_string());
    assert_eq!(served_by("evil-example.com"), c.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_routes_never_reach_the_upstream() {
    let e = echo().await;
    let gw = Gateway::start(&layout(e, "")).await;
    let r = raw_get(gw.addr, "/admin/users", &[]);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    // Browsers are sent to sign in, with the way back.
    let r = crate::common::raw(
        gw.addr,
        &format!("GET /admin/x?a=1 HTTP/1.1\r\nHost: {}\r\nAccept: text/html\r\nConnection: close\r\n\r\n", gw.addr),
    );
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location").unwrap(),
        "/.authgate/login?rd=%2Fadmin%2Fx%3Fa%3D1"
    );
    // Not a navigation: POST with HTML accept still gets 401.
    let r = crate::common::raw(
        gw.addr,
        &format!("POST /admin HTTP/1.1\r\nHost: {}\r\nAccept: text/html\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", gw.addr),
    );
    assert_eq!(r.status, 401);
    assert_eq!(raw_get(gw.addr, "/public/ok", &[]).status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalisation_bypass_attempts() {
    let e = echo().await;
    let gw = Gateway::start(&layout(e, "")).await;
    // Each of these must be decided as the protected /admin (401) or refused (400);
    // none may reach the upstream through the public route.
    for (path, want) in [
        ("/public/../admin", 401),
        ("/public/%2e%2e/admin", 401),
        ("/public/%2E%2E/admin", 401),
        ("/public/.%2e/admin", 401),
        ("/public/./../admin", 401),
        ("//admin", 401),
        ("/public//../admin", 401),
        ("/%61dmin", 401),
        ("/public/..%2fadmin", 400),
        ("/public%2f..%2fadmin", 400),
        ("/public/..%5cadmin", 400),
        ("/public\\..\\admin", 400),
        ("/public/..;/admin", 400),
        ("/public;x/../admin", 400),
        ("/public/%00/../admin", 400),
        ("/public/%zz", 400),
        ("/ADMIN", 401),
    ] {
        let r = raw_get(gw.addr, path, &[]);
        assert_eq!(r.status, want, "{path}: {}", r.head);
    }
    // The upstream receives exactly the canonical path that was matched; the query is
    // passed untouched and never used for matching.
    let r = raw_get(gw.addr, "/public/./a//b/%7e/c%3b?x=/../admin&y=%2e%2e", &[]);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.seen().target, "/public/a/b/~/c%3B?x=/../admin&y=%2e%2e");
    assert_eq!(raw_get(gw.addr, "/admin?/public", &[]).status, 401);
    let r = raw_get(gw.addr, "/admin#/public", &[]);
    assert_ne!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_insensitive_routes_for_case_insensitive_upstreams() {
    let e = echo().await;
    let gw = Gateway::start(&layout(e, "[paths]\ncase_insensitive = true\n")).await;
    assert_eq!(raw_get(gw.addr, "/ADMIN/x", &[]).status, 401);
    let r = raw_get(gw.addr, "/PUBLIC/x", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.seen().target, "/PUBLIC/x");
}

/// `public_methods`: those methods pass without sign-in on an otherwise protected route
/// (anonymous: forged identity headers still stripped); every other method must sign in,
/// and a method override, which would run another method upstream, is refused there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_methods_open_only_those_methods() {
    let e = echo().await;
    let extra = "[[routes]]\nid = \"cors\"\npath = \"/cors\"\nupstream = \"app\"\npublic_methods = [\"options\", \"HEAD\"]\n";
    let gw = Gateway::start(&layout(e, extra)).await;
    let c = crate::common::client();
    let preflight = c
        .request(reqwest::Method::OPTIONS, gw.url("/cors/x"))
        .header("x-forwarded-user", "mallory")
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    let seen: crate::common::Seen = preflight.json().await.unwrap();
    assert_eq!(
        seen.header("x-forwarded-user"),
        None,
        "anonymous, never forged"
    );
    let head = c.head(gw.url("/cors/x")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    for method in ["GET", "POST", "DELETE", "OPTIONS2"] {
        let r = c
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                gw.url("/cors/x"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method}");
    }
    // A method in lower case is no method (many frameworks upper-case it): 400.
    for method in ["options", "Options", "get"] {
        let r = c
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                gw.url("/cors/x"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{method}");
    }
    // POST claiming to be OPTIONS (or anything): refused before it could pass as public.
    for (name, value) in [
        ("x-http-method-override", "OPTIONS"),
        ("X_Method_Override", "OPTIONS"),
    ] {
        let r = crate::common::raw(
            gw.addr,
            &format!("OPTIONS /cors/x HTTP/1.1\r\nHost: {}\r\n{name}: {value}\r\nConnection: close\r\n\r\n", gw.addr),
        );
        assert_eq!(r.status, 400, "{name}");
    }
    let r = raw_get(gw.addr, "/cors/x?_method=OPTIONS", &[]);
    assert!(r.status == 400 || r.status == 401, "{}", r.status);
    // Other routes are as they were.
    assert_eq!(raw_get(gw.addr, "/admin/x", &[]).status, 401);
    assert_eq!(raw_get(gw.addr, "/public/x", &[]).status, 200);
}
