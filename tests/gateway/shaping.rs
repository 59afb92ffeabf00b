//! Request shaping per route (issue 16 point 3) through the real binary: `strip_prefix`,
//! `rewrite`, request and response header edits. The route decision is made on the
//! canonical path as the client sent it; only what goes upstream is shaped.

use crate::common::{echo, raw, raw_get, Gateway};

fn config(e: std::net::SocketAddr) -> String {
    format!(
        r#"[upstreams.app]
servers = ["http://{e}"]

# Public, stripped: "/app/x" goes upstream as "/x", with header edits both ways.
[[routes]]
id = "app"
path = "/app"
upstream = "app"
public = true
strip_prefix = "/app"
request_headers = {{ set = {{ "X-Env" = "prod" }}, remove = ["X-Debug"] }}
response_headers = {{ set = {{ "Cache-Control" = "no-store", "Strict-Transport-Security" = "max-age=63072000" }}, remove = ["Content-Type"] }}

[[routes]]
id = "legacy"
path = "/legacy/"
upstream = "app"
public = true
strip_prefix = "/legacy"
rewrite = {{ pattern = "^/old/(.*)$", replace = "/new/$1" }}

# A rewrite that an empty capture makes ambiguous ("/x//y"): refused, never forwarded.
[[routes]]
id = "fragile"
path = "/fragile/"
upstream = "app"
public = true
rewrite = {{ pattern = "^/fragile/(.*)$", replace = "/x/$1/y" }}

# Protected: no provider here, so every request is 401. What reaches it stays protected
# whatever the "/app" route's strip would have made of the path.
[[routes]]
id = "private"
path = "/"
upstream = "app"
"#
    )
}

fn get(gw: &Gateway, target: &str, headers: &[&str]) -> crate::common::RawResponse {
    raw_get(gw.addr, target, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_prefix_and_rewrite_shape_only_what_goes_upstream() {
    let e = echo().await;
    let gw = Gateway::start(&config(e)).await;

    for (target, upstream) in [
        ("/app/x", "/x"),
        ("/app/x/", "/x/"),
        ("/app", "/"),
        ("/app/", "/"),
        // The canonical path is what is stripped, never the raw one; the query goes as sent.
        ("/app//a/./b/../c?q=1&r=%2F", "/a/c?q=1&r=%2F"),
        ("/app/%7euser/caf%c3%a9", "/~user/caf%C3%A9"),
        ("/legacy/old/a/b?x=y", "/new/a/b?x=y"),
        ("/legacy/other", "/other"),
        ("/legacy/old/", "/new/"),
    ] {
        let r = get(&gw, target, &[]);
        assert_eq!(r.status, 200, "{target}: {}", r.head);
        assert_eq!(r.seen().target, upstream, "{target}");
    }

    // Odd spellings never reach the upstream stripped of a prefix they did not route on.
    for target in [
        "/apple",             // not at a segment boundary: the protected route
        "/APP/x",             // routes are case-sensitive: the protected route
        "/app/../x",          // canonical "/x": the protected route
        "/app/%2e%2e/x",      // same, encoded
        "/x/../app/../admin", // canonical "/admin"
    ] {
        let r = get(&gw, target, &[]);
        assert_eq!(r.status, 401, "{target}: {}", r.head);
    }
    let r = get(&gw, "/app%2f..%2fx", &[]);
    assert_eq!(r.status, 400, "{}", r.head);
    let r = get(&gw, "/app/..%2fx", &[]);
    assert_eq!(r.status, 400, "{}", r.head);
    // "/app/x" routes on "/app" (public); the protected route at "/x" is not where it
    // goes, though "/x" is what the upstream receives: the decision was the client's path.
    assert_eq!(get(&gw, "/x", &[]).status, 401);

    // A rewrite whose result is not canonical is refused with 400, and logged.
    let r = get(&gw, "/fragile/", &[]);
    assert_eq!(r.status, 400, "{}", r.head);
    assert!(
        String::from_utf8_lossy(&r.body).contains("path_not_rewritable"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(gw.log().contains("not canonical"), "{}", gw.log());
    let r = get(&gw, "/fragile/a", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.seen().target, "/x/a/y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_edits_on_requests_and_responses() {
    let e = echo().await;
    let gw = Gateway::start(&config(e)).await;
    let r = get(
        &gw,
        "/app/h",
        &[
            "X-Env: dev",
            "X_Env: dev2",
            "X-Debug: 1",
            "x_debug: 2",
            "X-Keep: k",
            "X-Forwarded-User: mallory",
        ],
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = r.seen();
    assert_eq!(seen.all("x-env"), ["prod"], "{:?}", seen.headers);
    assert!(seen.header("x_env").is_none(), "{:?}", seen.headers);
    assert!(seen.header("x-debug").is_none() && seen.header("x_debug").is_none());
    assert_eq!(seen.header("x-keep"), Some("k"));
    // The gateway's own headers are untouched by the route's edits.
    assert!(seen.header("x-forwarded-user").is_none());
    assert!(seen.header("x-request-id").is_some());
    assert!(seen.header("x-forwarded-for").is_some());
    // What was stripped, for the app's own URLs; an untrusted client's value never.
    assert_eq!(seen.all("x-forwarded-prefix"), ["/app"]);
    let r2 = get(&gw, "/app/y", &["X-Forwarded-Prefix: /evil"]);
    assert_eq!(r2.seen().all("x-forwarded-prefix"), ["/app"]);
    let r2 = get(&gw, "/fragile/a", &["X-Forwarded-Prefix: /evil"]);
    assert!(r2.seen().header("x-forwarded-prefix").is_none());

    // Response: set and removed on the upstream's answer; the gateway's own headers stay.
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=63072000")
    );
    assert!(r.header("content-type").is_none(), "{}", r.head);
    assert!(r.header("x-request-id").is_some(), "{}", r.head);

    // The gateway's own answers are not the upstream's: no route edits on them.
    let r = get(&gw, "/apple", &[]);
    assert_eq!(r.status, 401);
    assert!(
        r.header("strict-transport-security").is_none(),
        "{}",
        r.head
    );
    // Another route: no edits.
    let r = get(&gw, "/legacy/x", &["X-Debug: 1"]);
    assert_eq!(r.seen().header("x-debug"), Some("1"));
    assert!(r.header("content-type").is_some());

    // HEAD and POST take the same path.
    let r = raw(
        gw.addr,
        &format!(
            "POST /app/p?z=1 HTTP/1.1\r\nHost: {}\r\nContent-Length: 2\r\nX-Debug: 1\r\nConnection: close\r\n\r\nhi",
            gw.addr
        ),
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = r.seen();
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("POST", "/p?z=1")
    );
    assert!(seen.header("x-debug").is_none());
}

#[test]
fn check_refuses_owned_headers_and_bad_shaping_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[upstreams.app]\nservers = [\"http://127.0.0.1:1\"]\n[[routes]]\npath = \"/app/\"\nupstream = \"app\"\npublic = true\nstrip_prefix = \"/ap\"\nrequest_headers = { set = { \"X_Forwarded_User\" = \"admin\" } }\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::common::BIN)
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("c.toml:7"), "{err}");
    assert!(err.contains("routes[0].strip_prefix"), "{err}");
    assert!(err.contains("c.toml:8"), "{err}");
    assert!(err.contains("identity namespace"), "{err}");
}
